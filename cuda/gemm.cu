// SGEMM on the GPU, row-major, op() = N or T, alpha/beta: the contract of the CPU fg::sgemm, with
// batches (strided, broadcast) and an optional TF32 tensor-core path. Ran on an H200 (tests/test_cuda_gemm.py
// passes); not tuned yet: 0.73x cuBLAS at 4096^3 FP32, 0.17x with TF32 (mma.sync, no wgmma/TMA).
//
// FP32 path: gemm_tiles.cuh's SIMT kernel, 128 x 128 tiles of 8 x 8 per thread (64 x 64 tiles of
// 4 x 4 when the big tiles would leave most SMs idle), double-buffered shared memory, 128-bit
// loads of aligned operands. Every output is one fmaf chain in k order, whichever tile size runs,
// except that a single product with few output tiles and a long K is split over k (launch_split_k;
// the chunks' sums added in a fixed order).
//
// TF32 path (forgegrad.cuda.matmul_allow_tf32): 128 x 128 x 16 block tiles, 8 warps of 64 x 32,
// mma.sync m16n8k8 with TF32 operands rounded (cvt.rna) on their way into shared memory, FP32
// accumulators. Deterministic too: fixed instruction order, no split-K.
#include "common.cuh"
#include "forgegrad/cuda_api.h"
#include "forgegrad/cuda_gemm.h"
#include "gemm_tiles.cuh"
#include "launch.cuh"

namespace fg::cuda {
namespace {

using tiles::BatchStrides;
using tiles::MatrixOperand;

// C = alpha * acc + beta * C (+ bias[n]); beta == 0: C's old contents are not read.
struct GemmEpilogue {
  float* c;
  int64_t ldc;
  BatchStrides batch;
  float alpha, beta;
  const float* bias;  // per output column, or null
  bool vec;

  struct Sink {
    float* c;
    __device__ Sink(const GemmEpilogue& e, int64_t z, int) : c(e.c + e.batch.offset(z)) {}
    template <int V>
    __device__ __forceinline__ void put(const GemmEpilogue& e, int64_t m, int64_t n, int64_t N, float4 v) const {
      float* q = c + m * e.ldc + n;
      float a[4] = {v.x, v.y, v.z, v.w};
      const bool full = n + V - 1 < N;
      if (V == 4 && e.vec && full) {
        float4 old = make_float4(0.f, 0.f, 0.f, 0.f), b = old;
        if (e.beta != 0.f) old = *reinterpret_cast<const float4*>(q);
        if (e.bias)
          b = make_float4(__ldg(e.bias + n), __ldg(e.bias + n + 1), __ldg(e.bias + n + 2), __ldg(e.bias + n + 3));
        const float o[4] = {old.x, old.y, old.z, old.w}, bb[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int j = 0; j < 4; ++j)
          a[j] = (e.beta != 0.f ? fmaf(e.alpha, a[j], e.beta * o[j]) : e.alpha * a[j]) + bb[j];
        *reinterpret_cast<float4*>(q) = make_float4(a[0], a[1], a[2], a[3]);
        return;
      }
#pragma unroll
      for (int j = 0; j < V; ++j) {
        if (n + j >= N) break;
        const float r = e.beta != 0.f ? fmaf(e.alpha, a[j], e.beta * q[j]) : e.alpha * a[j];
        q[j] = e.bias ? r + __ldg(e.bias + n + j) : r;
      }
    }
  };
};

// ---- TF32 tensor cores ---------------------------------------------------------------------
namespace tc {
constexpr int BM = 128, BN = 128, BK = 16, LD = 128 + 8;  // +8: fragment reads hit 32 distinct banks

__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(FG_CUDA_EMULATION)
  ::fg_emu::mma_m16n8k8(d, a, b);
#endif
}

// 8 warps as 2 (rows) x 4 (columns), each a 64 x 32 tile: 4 x 4 mma tiles of 16 x 8.
// One block per SM (~205 registers): capped at 128 for two, ptxas spills 60-92 bytes.
template <class PA, class PB>
__global__ void __launch_bounds__(tiles::kThreads, 1)
    sgemm_tf32(int64_t M, int64_t N, int64_t K, int64_t tiles_n, int64_t batch, PA pa, PB pb, GemmEpilogue pe) {
  using FA = typename PA::template Fetch<BM, BK>;
  using FB = typename PB::template Fetch<BN, BK>;
  __shared__ __align__(16) float As[2][BK * LD];
  __shared__ __align__(16) float Bs[2][BK * LD];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32, gid = lane / 4, tig = lane % 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x / tiles_n) * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x % tiles_n) * BN;
  for (int64_t z = blockIdx.z; z < batch; z += gridDim.z) {
    const FA fa(pa, z, m0);
    const FB fb(pb, z, n0);
    float ra[FA::G::kLoads][4], rb[FB::G::kLoads][4];
    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;
    fa(pa, 0, K, ra);
    fb(pb, 0, K, rb);
    tiles::store_slice<BM, BK, PA::kKContig, LD, true>(As[0], ra);
    tiles::store_slice<BN, BK, PB::kKContig, LD, true>(Bs[0], rb);
    __syncthreads();
    int buf = 0;
    for (int64_t k0 = 0; k0 < K; k0 += BK) {
      const bool more = k0 + BK < K;
      if (more) {
        fa(pa, k0 + BK, K, ra);
        fb(pb, k0 + BK, K, rb);
      }
      const float* as = As[buf];
      const float* bs = Bs[buf];
#pragma unroll
      for (int kk = 0; kk < BK; kk += 8) {
        uint32_t af[4][4], bf[4][2];
        const float* a0 = as + (kk + tig) * LD + wm + gid;
        const float* b0 = bs + (kk + tig) * LD + wn + gid;
#pragma unroll
        for (int i = 0; i < 4; ++i) {  // rows gid, gid + 8; columns (k) tig, tig + 4
          af[i][0] = __float_as_uint(a0[i * 16]);
          af[i][1] = __float_as_uint(a0[i * 16 + 8]);
          af[i][2] = __float_as_uint(a0[4 * LD + i * 16]);
          af[i][3] = __float_as_uint(a0[4 * LD + i * 16 + 8]);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {  // rows (k) tig, tig + 4; column gid
          bf[j][0] = __float_as_uint(b0[j * 8]);
          bf[j][1] = __float_as_uint(b0[4 * LD + j * 8]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) mma_tf32(acc[i][j], af[i], bf[j]);
      }
      if (more) {
        tiles::store_slice<BM, BK, PA::kKContig, LD, true>(As[buf ^ 1], ra);
        tiles::store_slice<BN, BK, PB::kKContig, LD, true>(Bs[buf ^ 1], rb);
      }
      __syncthreads();
      buf ^= 1;
    }
    // accumulator r of tile (i, j): row gid (+8 for r >= 2), column 2 * tig (+1 for odd r)
    const GemmEpilogue::Sink sink(pe, z, 0);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t m = m0 + wm + i * 16 + gid, n = n0 + wn + j * 8 + 2 * tig;
        if (n >= N) continue;
        if (m < M) sink.put<2>(pe, m, n, N, make_float4(acc[i][j][0], acc[i][j][1], 0.f, 0.f));
        if (m + 8 < M) sink.put<2>(pe, m + 8, n, N, make_float4(acc[i][j][2], acc[i][j][3], 0.f, 0.f));
      }
  }
}
}  // namespace tc

// C = beta * C (beta == 0: zeros) for alpha == 0 or K == 0.
__global__ void scale_c(int64_t M, int64_t N, int64_t batch, float* c, int64_t ldc, BatchStrides bs, float beta) {
  const int64_t total = batch * M * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t z = i / (M * N), r = i % (M * N);
    float* q = c + bs.offset(z) + (r / N) * ldc + r % N;
    *q = beta == 0.f ? 0.f : beta * *q;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

bool strides_vec(int64_t ld, const int64_t* strides, int ndim) {
  if (ld % 4) return false;
  for (int d = 0; d < ndim; ++d)
    if (strides[d] % 4) return false;
  return true;
}

BatchStrides batch_strides(const GemmBatch& b, const int64_t* strides) {
  BatchStrides s;
  s.ndim = b.ndim;
  for (int d = 0; d < b.ndim; ++d) s.size[d] = b.size[d], s.stride[d] = strides[d];
  return s;
}

// Split-K for a product whose output tiles would leave most SMs idle while K is long (a Linear
// layer's weight gradient: out x in outputs summed over the tokens), planned as the conv weight
// gradient's (tiles::k_split over its 64 x 64 tiles). The chunks' partial sums go to a workspace and a
// second kernel adds them in chunk order, applying alpha, beta and the bias.

// C = alpha * (sum of the partials in split order) (+ beta * C) (+ bias[n]): GemmEpilogue's arithmetic.
__global__ void finish_split_k(const float* __restrict__ partial, int64_t splits, int64_t M, int64_t N, float* c,
                               int64_t ldc, float alpha, float beta, const float* __restrict__ bias) {
  const int64_t total = M * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int64_t k = 0; k < splits; ++k) s += partial[k * total + i];
    float* q = c + (i / N) * ldc + i % N;
    const float r = beta != 0.f ? fmaf(alpha, s, beta * *q) : alpha * s;
    *q = bias ? r + __ldg(bias + i % N) : r;
  }
}

template <class PA, class PB>
std::string launch_split_k(int64_t M, int64_t N, int64_t K, const tiles::KSplit& sk, const PA& pa, const PB& pb,
                           const GemmEpilogue& pe) {
  int device = 0;
  std::string err = get_device(&device);
  if (!err.empty()) return err;
  const int64_t total = M * N;
  // From the device's cache; handed back while the kernels below may still run: its next owner's
  // work is queued on the same stream, so after them.
  float* ws = static_cast<float*>(device_alloc(device, sizeof(float) * static_cast<size_t>(total * sk.splits)));
  using C = tiles::Small;
  const tiles::RowsOut po{ws, N, M, total};  // the chunks' partial sums: ws[split][m][n]
  FG_LAUNCH(tiles::gemm_simt<C>, tiles::grid_for<C>(M, N, sk.splits, 1), tiles::kThreads, M, N, K, sk.chunk,
            (N + C::BN - 1) / C::BN, int64_t{1}, pa, pb, po);
  err = launch_status();
  if (err.empty()) {
    FG_LAUNCH(finish_split_k, blocks_for(total, 256), 256, ws, sk.splits, M, N, pe.c, pe.ldc, pe.alpha, pe.beta,
              pe.bias);
    err = launch_status();
  }
  device_free(device, ws);
  return err;
}

template <bool KA, bool KB>
std::string launch(int64_t M, int64_t N, int64_t K, int64_t batch, const float* A, int64_t lda, const float* B,
                   int64_t ldb, const GemmBatch& gb, GemmEpilogue pe, bool tf32) {
  MatrixOperand<KA> pa{A, lda, M, batch_strides(gb, gb.stride_a),
                       aligned16(A) && strides_vec(lda, gb.stride_a, gb.ndim)};
  MatrixOperand<KB> pb{B, ldb, N, batch_strides(gb, gb.stride_b),
                       aligned16(B) && strides_vec(ldb, gb.stride_b, gb.ndim)};
  if (tf32) {
    const int64_t tiles_n = (N + tc::BN - 1) / tc::BN;
    FG_LAUNCH(tc::sgemm_tf32, tiles::grid_for<tiles::Big>(M, N, 1, batch), tiles::kThreads, M, N, K, tiles_n, batch, pa,
              pb, pe);
    return launch_status();
  }
  if (batch == 1) {
    const tiles::KSplit sk = tiles::k_split(((M + 63) / 64) * ((N + 63) / 64), K);
    if (sk.splits > 1) return launch_split_k(M, N, K, sk, pa, pb, pe);
  }
  // The big tiles once they fill the GPU about twice over (an H100 has 132 SMs); the results are the
  // same either way.
  const int64_t big_tiles = ((M + 127) / 128) * ((N + 127) / 128) * batch;
  if (big_tiles >= 256) {
    using C = tiles::Big;
    FG_LAUNCH(tiles::gemm_simt<C>, tiles::grid_for<C>(M, N, 1, batch), tiles::kThreads, M, N, K, K,
              (N + C::BN - 1) / C::BN, batch, pa, pb, pe);
  } else {
    using C = tiles::Small;
    FG_LAUNCH(tiles::gemm_simt<C>, tiles::grid_for<C>(M, N, 1, batch), tiles::kThreads, M, N, K, K,
              (N + C::BN - 1) / C::BN, batch, pa, pb, pe);
  }
  return launch_status();
}

// dst[target x inner] = src[full x inner] summed over the broadcast dimensions, one thread per
// output element, the reduced indices in row-major order.
struct ReduceLayout {
  int ndim;
  int64_t full[kGemmMaxBatchDims], target[kGemmMaxBatchDims];
};

__global__ void sum_to_batch_kernel(const float* __restrict__ src, float* __restrict__ dst, ReduceLayout L,
                                    int64_t inner, int64_t total, int64_t reduced) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t ob = i / inner, base = 0, fstride = 1;
    const int64_t e = i % inner;
    for (int d = L.ndim - 1; d >= 0; --d) {  // the kept indices, as an offset in full entries
      base += (ob % L.target[d]) * fstride;
      ob /= L.target[d];
      fstride *= L.full[d];
    }
    float s = 0.f;
    for (int64_t r = 0; r < reduced; ++r) {
      int64_t rr = r, off = 0;
      fstride = 1;
      for (int d = L.ndim - 1; d >= 0; --d) {
        if (L.target[d] == 1 && L.full[d] > 1) {
          off += (rr % L.full[d]) * fstride;
          rr /= L.full[d];
        }
        fstride *= L.full[d];
      }
      s += src[(base + off) * inner + e];
    }
    dst[i] = s;
  }
}

// One block per output (grid-stride): thread t sums elements t, t + 256, ... in order, then a
// fixed tree in shared memory. The same order on every run and every GPU.
__global__ void __launch_bounds__(256)
    strided_sum_kernel(const float* __restrict__ src, float* __restrict__ dst, int64_t n_out, int64_t outer, int64_t so,
                       int64_t sm, int64_t inner) {
  __shared__ float part[256];
  const int64_t count = outer * inner;
  for (int64_t o = blockIdx.x; o < n_out; o += gridDim.x) {
    float s = 0.f;
    // element t = i * inner + j, stepped by 256 without a 64-bit division per element
    int64_t i = threadIdx.x / inner, j = threadIdx.x % inner;
    const int64_t di = 256 / inner, dj = 256 % inner;
    for (int64_t t = threadIdx.x; t < count; t += 256) {
      s += src[i * so + o * sm + j];
      i += di, j += dj;
      if (j >= inner) j -= inner, ++i;
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = 128; w > 0; w >>= 1) {
      if (static_cast<int>(threadIdx.x) < w) part[threadIdx.x] += part[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) dst[o] = part[0];
    __syncthreads();
  }
}

}  // namespace

std::string sgemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                          const GemmBatch& gb, bool allow_tf32, const float* col_bias) {
  if (gb.ndim < 0 || gb.ndim > kGemmMaxBatchDims) return "sgemm: at most 8 batch dimensions";
  int64_t batch = 1;
  for (int d = 0; d < gb.ndim; ++d) batch *= gb.size[d];
  if (M <= 0 || N <= 0 || batch <= 0) return std::string();
  if (((M + 63) / 64) * ((N + 63) / 64) > 0x7fffffff) return "sgemm: too many output tiles for one launch";
  const BatchStrides cs = batch_strides(gb, gb.stride_c);
  if (col_bias && alpha == 0.f) return "sgemm: a column bias needs alpha != 0";
  if (!col_bias && (alpha == 0.f || K <= 0)) {  // with a bias and K == 0 the main kernel adds it to zeros
    FG_LAUNCH(scale_c, blocks_for(batch * M * N, 256), 256, M, N, batch, C, ldc, cs, beta);
    return launch_status();
  }
  GemmEpilogue pe{C, ldc, cs, alpha, beta, col_bias, aligned16(C) && strides_vec(ldc, gb.stride_c, gb.ndim)};
  // A is k-contiguous unless transposed; B (read as rows n) is k-contiguous when transposed.
  if (!trans_a && !trans_b) return launch<true, false>(M, N, K, batch, A, lda, B, ldb, gb, pe, allow_tf32);
  if (!trans_a && trans_b) return launch<true, true>(M, N, K, batch, A, lda, B, ldb, gb, pe, allow_tf32);
  if (trans_a && !trans_b) return launch<false, false>(M, N, K, batch, A, lda, B, ldb, gb, pe, allow_tf32);
  return launch<false, true>(M, N, K, batch, A, lda, B, ldb, gb, pe, allow_tf32);
}

std::string sgemm_strided_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                                  float alpha, const float* A, int64_t lda, int64_t stride_a, const float* B,
                                  int64_t ldb, int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c,
                                  bool allow_tf32) {
  GemmBatch gb;
  gb.ndim = 1;
  gb.size[0] = batch;
  gb.stride_a[0] = stride_a, gb.stride_b[0] = stride_b, gb.stride_c[0] = stride_c;
  return sgemm_batched(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, gb, allow_tf32, nullptr);
}

std::string sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  return sgemm_batched(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, GemmBatch{}, false, nullptr);
}

std::string sum_to_batch(const float* src, float* dst, int ndim, const int64_t* full, const int64_t* target,
                         int64_t inner) {
  if (ndim < 0 || ndim > kGemmMaxBatchDims) return "sum_to_batch: at most 8 batch dimensions";
  ReduceLayout L{};
  L.ndim = ndim;
  int64_t kept = 1, reduced = 1;
  for (int d = 0; d < ndim; ++d) {
    L.full[d] = full[d], L.target[d] = target[d];
    if (target[d] != full[d] && target[d] != 1) return "sum_to_batch: target sizes must equal the full ones or be 1";
    kept *= target[d];
    if (target[d] == 1) reduced *= full[d];
  }
  const int64_t total = kept * inner;
  if (total <= 0) return std::string();
  FG_LAUNCH(sum_to_batch_kernel, blocks_for(total, 256), 256, src, dst, L, inner, total, reduced);
  return launch_status();
}

std::string strided_sum(const float* src, float* dst, int64_t n_out, int64_t outer, int64_t stride_outer,
                        int64_t stride_o, int64_t inner) {
  if (n_out <= 0) return std::string();
  const unsigned blocks = static_cast<unsigned>(n_out < 65535 ? n_out : 65535);
  FG_LAUNCH(strided_sum_kernel, blocks, 256, src, dst, n_out, outer, stride_outer, stride_o, inner);
  return launch_status();
}

}  // namespace fg::cuda
