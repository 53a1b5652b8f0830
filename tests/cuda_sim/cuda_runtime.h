// A CPU stand-in for the parts of the CUDA runtime and device language that cuda/*.cu use, so the
// kernels' own source can execute on the CPU (tests/test_cuda_sim.py). Each simulated thread of a
// block is a std::thread: __syncthreads is a barrier over the block, the warp shuffles exchange
// through a per-warp buffer between two barriers of the warp's 32 threads (so a shuffle that not all
// lanes reach deadlocks the test instead of passing), __shared__ arrays are function statics (blocks
// run one after another). This checks the kernels' logic -- indexing, tiling, reductions, the online
// softmax -- not the GPU's memory model, timing or performance: it is no substitute for running on a GPU.
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

namespace fg_sim {

struct Block {
  explicit Block(unsigned threads, std::size_t smem)
      : bar(static_cast<std::ptrdiff_t>(threads)), exchange(threads), dyn(smem + kCanary, char(0x5a)), smem(smem) {
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) {
      unsigned n = std::min(32u, threads - 32 * w);
      warps.emplace_back(std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(n)));
    }
  }
  std::barrier<> bar;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<uint64_t> exchange;
  std::vector<char> dyn;  // dynamic shared memory, then kCanary bytes that must stay untouched
  std::size_t smem;
  static constexpr std::size_t kCanary = 64;
  bool canary_intact() const {
    for (std::size_t i = smem; i < dyn.size(); ++i)
      if (dyn[i] != char(0x5a)) return false;
    return true;
  }
};

// The first problem a launch found (a dynamic shared memory overflow); sim_api.cpp reports it.
inline std::string failure;

inline thread_local dim3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline Block* block = nullptr;

inline unsigned flat_thread() { return thread_idx.x + block_dim.x * (thread_idx.y + block_dim.y * thread_idx.z); }

template <class T>
T exchange(T v, unsigned src_lane) {
  static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
  unsigned t = flat_thread(), warp = t / 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  block->exchange[t] = bits;
  block->warps[warp]->arrive_and_wait();
  uint64_t got = block->exchange[warp * 32 + src_lane];
  block->warps[warp]->arrive_and_wait();
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}

// Runs grid x block simulated threads, one block at a time.
inline void launch(dim3 grid, dim3 blk, std::size_t smem, const std::function<void()>& kernel) {
  grid_dim = grid;
  block_dim = blk;
  unsigned threads = blk.x * blk.y * blk.z;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block b(threads, smem);
        block = &b;
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned t = 0; t < threads; ++t)
          pool.emplace_back([&, t] {
            thread_idx = dim3(t % blk.x, (t / blk.x) % blk.y, t / (blk.x * blk.y));
            block_idx = dim3(bx, by, bz);
            kernel();
          });
        for (auto& th : pool) th.join();
        if (!b.canary_intact() && failure.empty()) failure = "kernel wrote past its dynamic shared memory";
        block = nullptr;
      }
}

}  // namespace fg_sim

#define threadIdx fg_sim::thread_idx
#define blockIdx fg_sim::block_idx
#define blockDim fg_sim::block_dim
#define gridDim fg_sim::grid_dim
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(x)

inline void __syncthreads() { fg_sim::block->bar.arrive_and_wait(); }
template <class T>
T __shfl_sync(unsigned, T v, int src) {
  return fg_sim::exchange(v, static_cast<unsigned>(src) & 31u);
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  return fg_sim::exchange(v, (fg_sim::flat_thread() % 32) ^ static_cast<unsigned>(mask));
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

using std::max;
using std::min;

// CUDA's erfinvf (libm has none): Newton's method on erf in double from a rough start, to float precision
inline float erfinvf(float y) {
  if (!(y > -1.f && y < 1.f)) return y == 1.f ? INFINITY : (y == -1.f ? -INFINITY : NAN);
  double w = -std::log((1.0 - y) * (1.0 + y)), x = std::copysign(std::sqrt(w), y) * 0.8;
  for (int i = 0; i < 60; ++i) {
    double step = (std::erf(x) - y) / (1.1283791670955126 * std::exp(-x * x));
    x -= step;
    if (std::fabs(step) <= 1e-16 * std::fabs(x)) break;
  }
  return static_cast<float>(x);
}

// ---- runtime API -----------------------------------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
using cudaStream_t = void*;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "simulated error"; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, std::size_t n, cudaStream_t) {
  std::memset(p, v, n);
  return cudaSuccess;
}
template <class F>
cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}
