// A stand-in for <cuda_runtime.h> that lets g++ compile the GEMM-family kernels (cuda/gemm.cu,
// conv.cu, pool.cu, built with -DFG_CUDA_EMULATION -x c++) into host code: every CUDA thread of a
// block is a fiber on the host thread, __syncthreads a switch back to their round-robin scheduler,
// __shared__ arrays are statics (the blocks of a launch run one after another), device pointers are
// host pointers. tests/
// test_cuda_emulation.py builds the kernels this way and compares them with the CPU kernels.
//
// This checks the kernels' index arithmetic, tiling, edge and split-K handling and their results on
// real shapes; it is no GPU run: it says nothing about speed, memory-model races or the hardware.
#pragma once
#include <ucontext.h>
#include <algorithm>
#include <cmath>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
using cudaStream_t = void*;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

namespace fg_emu {

// The CUDA threads of a block are fibers (ucontext) on the calling host thread, run round-robin:
// each runs until its next __syncthreads (or its end), then the next one; a round of all of them is
// one barrier phase. Deterministic, and far cheaper than one OS thread per CUDA thread.
struct Ctx {
  dim3 threadIdx, blockIdx, blockDim, gridDim;
};
inline Ctx ctx;

struct Fibers {
  ucontext_t scheduler;
  std::vector<ucontext_t> ctx;
  std::vector<char*> stacks;
  std::vector<bool> done;
  const std::function<void()>* body = nullptr;
  unsigned current = 0;
  static constexpr size_t kStack = 256 * 1024;
  ~Fibers() {
    for (char* p : stacks) std::free(p);
  }
};
inline Fibers fibers;

inline void fiber_entry() {
  (*fibers.body)();
  fibers.done[fibers.current] = true;
  swapcontext(&fibers.ctx[fibers.current], &fibers.scheduler);
}

// __syncthreads: back to the scheduler, which resumes this fiber in the next round.
inline void barrier() { swapcontext(&fibers.ctx[fibers.current], &fibers.scheduler); }

// Every block of the grid, in order (1-D blocks only).
inline void launch(dim3 grid, dim3 block, const std::function<void()>& body) {
  const unsigned n = block.x * block.y * block.z;
  Fibers& f = fibers;
  f.body = &body;
  f.ctx.resize(n);
  f.done.assign(n, false);
  while (f.stacks.size() < n) f.stacks.push_back(static_cast<char*>(std::malloc(Fibers::kStack)));
  ctx.blockDim = block;
  ctx.gridDim = grid;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        ctx.blockIdx = dim3(x, y, z);
        for (unsigned t = 0; t < n; ++t) {
          getcontext(&f.ctx[t]);
          f.ctx[t].uc_stack.ss_sp = f.stacks[t];
          f.ctx[t].uc_stack.ss_size = Fibers::kStack;
          f.ctx[t].uc_link = nullptr;
          makecontext(&f.ctx[t], fiber_entry, 0);
          f.done[t] = false;
        }
        for (unsigned left = n; left > 0;) {
          left = 0;
          for (unsigned t = 0; t < n; ++t) {
            if (f.done[t]) continue;
            f.current = t;
            ctx.threadIdx = dim3(t);
            swapcontext(&f.scheduler, &f.ctx[t]);
            if (!f.done[t]) ++left;
          }
        }
      }
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 for the 32 threads of a warp: each lane posts its
// fragments, then computes its own four accumulators from the whole warp's (PTX ISA fragment layout:
// a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4); b0 (k t, n g), b1 (k t + 4, n g);
// d0 (g, 2t), d1 (g, 2t + 1), d2 (g + 8, 2t), d3 (g + 8, 2t + 1); g = lane / 4, t = lane % 4).
// Every thread of the block must call it the same number of times (it waits at block barriers).
inline void mma_m16n8k8(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static float A[64][16][8], B[64][8][8];  // per warp (up to 64 warps)
  const unsigned tid = ctx.threadIdx.x, w = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  float fa[4], fb[2];
  std::memcpy(fa, a, sizeof fa);
  std::memcpy(fb, b, sizeof fb);
  A[w][g][t] = fa[0], A[w][g + 8][t] = fa[1], A[w][g][t + 4] = fa[2], A[w][g + 8][t + 4] = fa[3];
  B[w][t][g] = fb[0], B[w][t + 4][g] = fb[1];
  barrier();
  for (int r = 0; r < 4; ++r) {
    const unsigned row = g + (r >= 2 ? 8 : 0), col = 2 * t + (r & 1);
    float s = d[r];
    for (int k = 0; k < 8; ++k) s = std::fmaf(A[w][row][k], B[w][k][col], s);
    d[r] = s;
  }
  barrier();  // before the next call overwrites the fragments
}

// cvt.rna.tf32.f32: round to nearest, ties away from zero, keeping 10 mantissa bits.
inline float to_tf32(float v) {
  if (!std::isfinite(v)) return v;
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u + 0x1000u) & ~0x1fffu;
  std::memcpy(&v, &u, 4);
  return v;
}

}  // namespace fg_emu

#define threadIdx (::fg_emu::ctx.threadIdx)
#define blockIdx (::fg_emu::ctx.blockIdx)
#define blockDim (::fg_emu::ctx.blockDim)
#define gridDim (::fg_emu::ctx.gridDim)

inline void __syncthreads() { fg_emu::barrier(); }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
using std::fmaf;
using std::isnan;
