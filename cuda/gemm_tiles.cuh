// The tiled GEMM main loop that SGEMM (gemm.cu) and the implicit-GEMM convolutions (conv.cu)
// share, and the fetcher of plain strided matrices. Ran on an H200: tests/test_cuda_gemm.py passes.
//
// C[M, N] = sum_k A[m, k] * B[k, n] per output tile of BM x BN, 256 threads in a 16 x 16 grid, each
// thread a (BM/16) x (BN/16) register tile. K advances in steps of BK through two shared-memory
// buffers: while the block multiplies the slice in one buffer, each thread's global loads of the
// next slice are in flight into registers and are written to the other buffer afterwards (one
// barrier per step). Both operands sit in shared memory as [k][m] and [k][n] rows so that the
// inner product reads float4s of a and b.
//
// Where the data comes from and where results go are template parameters:
//   * an operand (PA, PB, a kernel parameter) makes per batch entry a fetcher, whose call
//     fetch(operand, k0, k_limit, regs) loads the thread's share of a BMN x BK slice into registers,
//     zero beyond the operand's edges and beyond the k range of the block (split-K). The operand is
//     passed again at each call (not kept as a pointer) so its fields are read from kernel parameter
//     space, never copied to local memory;
//   * an epilogue (PE) makes, per batch entry and k-split, a sink that receives V (4 or 2)
//     consecutive outputs of one row: sink.template put<V>(epilogue, m, n, N, values).
// Every output is one fmaf chain over k = k_begin, k_begin + 1, ... (zeros beyond the edges add
// exactly nothing), so the result does not depend on the tile configuration: deterministic, and
// the same for the 128 x 128 and 64 x 64 configurations.
#pragma once
#include <cstdint>

#include "common.cuh"
#include "forgegrad/cuda_gemm.h"

namespace fg::cuda::tiles {

constexpr int kThreads = 256;
constexpr int kMaxBatchDims = kGemmMaxBatchDims;

template <int BM_, int BN_, int BK_, int MIN_BLOCKS>
struct Config {
  static constexpr int BM = BM_, BN = BN_, BK = BK_;
  static constexpr int TM = BM / 16, TN = BN / 16;  // register tile of a thread
  // +4 floats per shared row: the transposing store of a k-contiguous operand (4 k values of one
  // row per thread) then falls on distinct banks, and rows stay 16-byte aligned for float4 reads.
  static constexpr int LDM = BM + 4, LDN = BN + 4;
  // blocks per SM the register budget must allow (__launch_bounds__): 2 caps registers at 128
  static constexpr int kMinBlocks = MIN_BLOCKS;
  static_assert(TM % 4 == 0 && TN % 4 == 0, "register tiles are built from float4 rows");
  static_assert(BM * BK == 4 * kThreads * (BM * BK / (4 * kThreads)), "slices split into whole float4s");
};
// 8 x 8 per thread: 64 FMAs per 4 float4 shared loads. Capped at 128 registers (2 blocks per SM)
// ptxas spills 80-124 bytes, so it gets one block (8 warps) per SM and ~180 registers, no spills.
using Big = Config<128, 128, 8, 1>;
// 4 x 4 per thread (~115 registers, 2 blocks per SM), for problems with too few 128 x 128 tiles
using Small = Config<64, 64, 16, 2>;

// How a thread's share of a BMN x BK slice is split into float4 groups. A k-contiguous operand is
// read as 4 consecutive k of one row (group g: mn = g / (BK/4), k = 4 * (g % (BK/4))); an
// mn-contiguous one as 4 consecutive rows at one k (k = g / (BMN/4), mn = 4 * (g % (BMN/4))).
template <int BMN, int BK, bool KCONTIG>
struct Groups {
  static constexpr int kLoads = BMN * BK / (4 * kThreads);
  static __device__ __forceinline__ int mn(int l) {
    const int g = threadIdx.x + l * kThreads;
    return KCONTIG ? g / (BK / 4) : 4 * (g % (BMN / 4));
  }
  static __device__ __forceinline__ int k(int l) {
    const int g = threadIdx.x + l * kThreads;
    return KCONTIG ? 4 * (g % (BK / 4)) : g / (BMN / 4);
  }
};

__device__ __forceinline__ float to_tf32(float v) {
#ifdef FG_CUDA_EMULATION
  return ::fg_emu::to_tf32(v);
#else
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return __uint_as_float(r);
#endif
}

// Write the registers r (as fetched by a fetcher with the same Groups) into a [BK][LD] slice.
template <int BMN, int BK, bool KCONTIG, int LD, bool TF32 = false>
__device__ __forceinline__ void store_slice(float* s, const float (&r)[Groups<BMN, BK, KCONTIG>::kLoads][4]) {
  using G = Groups<BMN, BK, KCONTIG>;
#pragma unroll
  for (int l = 0; l < G::kLoads; ++l) {
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = TF32 ? to_tf32(r[l][i]) : r[l][i];
    const int mn = G::mn(l), k = G::k(l);
    if (KCONTIG) {
#pragma unroll
      for (int i = 0; i < 4; ++i) s[(k + i) * LD + mn] = v[i];
    } else {
      *reinterpret_cast<float4*>(s + k * LD + mn) = make_float4(v[0], v[1], v[2], v[3]);
    }
  }
}

// Offsets of batch entry z, row-major over size[0..ndim) (the last index fastest).
struct BatchStrides {
  int ndim = 0;
  int64_t size[kMaxBatchDims] = {};
  int64_t stride[kMaxBatchDims] = {};
  __device__ __forceinline__ int64_t offset(int64_t z) const {
    int64_t off = 0;
#pragma unroll
    for (int d = kMaxBatchDims - 1; d >= 0; --d) {
      if (d >= ndim) continue;
      off += (z % size[d]) * stride[d];
      z /= size[d];
    }
    return off;
  }
};

// A plain strided matrix operand, element (mn, k) at p[mn * ld + k] (KCONTIG) or p[k * ld + mn].
// vec: every float4 group that lies inside the operand is 16-byte aligned (ld, the batch strides
// and p are multiples of 4 floats), so it is read with one 128-bit load; groups that cross an
// edge take the bounds-checked scalar path.
template <bool KCONTIG>
struct MatrixOperand {
  static constexpr bool kKContig = KCONTIG;
  const float* p;
  int64_t ld, rows;  // rows: the operand's extent along mn (M for A, N for B)
  BatchStrides batch;
  bool vec;

  template <int BMN, int BK>
  struct Fetch {
    using G = Groups<BMN, BK, KCONTIG>;
    // per float4 group: its address at k = 0, and how many of its rows (mn) lie inside (0..4;
    // for a k-contiguous group 0 or 4: the group is one row)
    const float* q[G::kLoads];
    int live[G::kLoads];
    int64_t ld;
    bool vec;
    __device__ Fetch(const MatrixOperand& o, int64_t z, int64_t mn0) : ld(o.ld), vec(o.vec) {
      const float* base = o.p + o.batch.offset(z);
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l) {
        const int64_t mn = mn0 + G::mn(l), left = o.rows - mn;
        q[l] = KCONTIG ? base + mn * o.ld + G::k(l) : base + G::k(l) * o.ld + mn;
        live[l] = left <= 0 ? 0 : (KCONTIG || left >= 4) ? 4 : static_cast<int>(left);
      }
    }
    __device__ __forceinline__ void operator()(const MatrixOperand&, int64_t k0, int64_t klim,
                                               float (&r)[G::kLoads][4]) const {
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l) {
        const int64_t k = k0 + G::k(l);
        const float* p = q[l] + (KCONTIG ? k0 : k0 * ld);
        // inside: all 4 elements exist (k contiguous: k..k+3 < klim; else 4 live rows and k < klim)
        const bool full = live[l] == 4 && (KCONTIG ? k + 3 < klim : k < klim);
        if (vec && full) {
          const float4 v = __ldg(reinterpret_cast<const float4*>(p));
          r[l][0] = v.x, r[l][1] = v.y, r[l][2] = v.z, r[l][3] = v.w;
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const bool in = KCONTIG ? (live[l] > 0 && k + i < klim) : (i < live[l] && k < klim);
            r[l][i] = in ? __ldg(p + i) : 0.f;
          }
        }
      }
    }
  };
};

// One block: a BM x BN tile of the output of batch entries z = blockIdx.z, blockIdx.z + gridDim.z,
// ...; blockIdx.x numbers the tiles (row-major over tiles_n columns of tiles), blockIdx.y the
// k-split: the block sums k in [blockIdx.y * k_chunk, min(K, (blockIdx.y + 1) * k_chunk)).
template <class C, class PA, class PB, class PE>
__global__ void __launch_bounds__(kThreads, C::kMinBlocks)
    gemm_simt(int64_t M, int64_t N, int64_t K, int64_t k_chunk, int64_t tiles_n, int64_t batch, PA pa, PB pb, PE pe) {
  using FA = typename PA::template Fetch<C::BM, C::BK>;
  using FB = typename PB::template Fetch<C::BN, C::BK>;
  constexpr bool kKA = PA::kKContig, kKB = PB::kKContig;
  __shared__ __align__(16) float As[2][C::BK * C::LDM];
  __shared__ __align__(16) float Bs[2][C::BK * C::LDN];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x / tiles_n) * C::BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x % tiles_n) * C::BN;
  const int64_t kb = static_cast<int64_t>(blockIdx.y) * k_chunk;
  const int64_t ke = K < kb + k_chunk ? K : kb + k_chunk;
  for (int64_t z = blockIdx.z; z < batch; z += gridDim.z) {
    const FA fa(pa, z, m0);
    const FB fb(pb, z, n0);
    float ra[FA::G::kLoads][4], rb[FB::G::kLoads][4];
    float acc[C::TM][C::TN];
#pragma unroll
    for (int i = 0; i < C::TM; ++i)
#pragma unroll
      for (int j = 0; j < C::TN; ++j) acc[i][j] = 0.f;
    fa(pa, kb, ke, ra);
    fb(pb, kb, ke, rb);
    store_slice<C::BM, C::BK, kKA, C::LDM>(As[0], ra);
    store_slice<C::BN, C::BK, kKB, C::LDN>(Bs[0], rb);
    __syncthreads();
    int buf = 0;
    for (int64_t k0 = kb; k0 < ke; k0 += C::BK) {
      const bool more = k0 + C::BK < ke;
      if (more) {  // the next slice's loads overlap the arithmetic below
        fa(pa, k0 + C::BK, ke, ra);
        fb(pb, k0 + C::BK, ke, rb);
      }
      const float* as = As[buf];
      const float* bs = Bs[buf];
#pragma unroll
      for (int k = 0; k < C::BK; ++k) {
        float a[C::TM], b[C::TN];
#pragma unroll
        for (int g = 0; g < C::TM / 4; ++g) {
          const float4 v = *reinterpret_cast<const float4*>(as + k * C::LDM + g * 64 + ty * 4);
          a[4 * g] = v.x, a[4 * g + 1] = v.y, a[4 * g + 2] = v.z, a[4 * g + 3] = v.w;
        }
#pragma unroll
        for (int g = 0; g < C::TN / 4; ++g) {
          const float4 v = *reinterpret_cast<const float4*>(bs + k * C::LDN + g * 64 + tx * 4);
          b[4 * g] = v.x, b[4 * g + 1] = v.y, b[4 * g + 2] = v.z, b[4 * g + 3] = v.w;
        }
#pragma unroll
        for (int i = 0; i < C::TM; ++i)
#pragma unroll
          for (int j = 0; j < C::TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      if (more) {
        store_slice<C::BM, C::BK, kKA, C::LDM>(As[buf ^ 1], ra);
        store_slice<C::BN, C::BK, kKB, C::LDN>(Bs[buf ^ 1], rb);
      }
      __syncthreads();
      buf ^= 1;
    }
    // thread rows g * 64 + ty * 4 + i, columns g * 64 + tx * 4 + j (the float4 groups read above);
    // the sink is made only now so its registers are free during the main loop
    const typename PE::Sink sink(pe, z, blockIdx.y);
#pragma unroll
    for (int i = 0; i < C::TM; ++i) {
      const int64_t m = m0 + (i / 4) * 64 + ty * 4 + i % 4;
      if (m >= M) continue;
#pragma unroll
      for (int g = 0; g < C::TN / 4; ++g) {
        const int64_t n = n0 + g * 64 + tx * 4;
        if (n < N)
          sink.template put<4>(pe, m, n, N,
                               make_float4(acc[i][4 * g], acc[i][4 * g + 1], acc[i][4 * g + 2], acc[i][4 * g + 3]));
      }
    }
  }
}

// Split-K plan for a grid of `blocks` output tiles summing over K: chunks of k (a multiple of 16, the
// larger BK) so that the grid has about 256 blocks, each chunk at least 256 long; {K, 1} (no split)
// when the grid is full enough or K is short. A function of the shapes only: the same bits every run.
struct KSplit {
  int64_t chunk, splits;
};

inline KSplit k_split(int64_t blocks, int64_t K) {
  KSplit p{K, 1};
  if (blocks >= 256 || K <= 512) return p;
  const int64_t want = (256 + blocks - 1) / blocks, most = K / 256;
  const int64_t splits = want < most ? want : most;
  if (splits <= 1) return p;
  p.chunk = ((K + splits - 1) / splits + 15) / 16 * 16;
  p.splits = (K + p.chunk - 1) / p.chunk;
  return p;
}

// A sink of raw sums: row-major rows of `cols` floats, entry z's rows after rows_per_group * cols
// floats, k-split s's after split_stride floats: out[s * split_stride + (z * rows_per_group + m) * cols
// + n] = acc. The split-K partial sums of the conv weight gradient and of a GEMM with few tiles.
struct RowsOut {
  float* out;
  int64_t cols, rows_per_group, split_stride;
  struct Sink {
    float* base;
    __device__ Sink(const RowsOut& e, int64_t z, int split)
        : base(e.out + split * e.split_stride + z * e.rows_per_group * e.cols) {}
    template <int V>
    __device__ __forceinline__ void put(const RowsOut& e, int64_t m, int64_t n, int64_t N, float4 v) const {
      const float a[4] = {v.x, v.y, v.z, v.w};
      float* q = base + m * e.cols + n;
#pragma unroll
      for (int j = 0; j < V; ++j)
        if (n + j < N) q[j] = a[j];
    }
  };
};

// Launch geometry of gemm_simt: tiles in x, k-splits in y, batch entries in z (the kernel loops
// over z beyond the grid's limit).
template <class C>
inline dim3 grid_for(int64_t M, int64_t N, int64_t splits, int64_t batch) {
  const int64_t tiles = ((M + C::BM - 1) / C::BM) * ((N + C::BN - 1) / C::BN);
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(splits),
              static_cast<unsigned>(batch < 65535 ? (batch < 1 ? 1 : batch) : 65535));
}

}  // namespace fg::cuda::tiles
