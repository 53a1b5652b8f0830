// Scaled dot-product attention, flash style: the forward streams K/V tiles through shared memory
// with an online softmax (running max and sum per query row) and saves only the log-sum-exp of each
// row; the backward recomputes the probabilities from it. Deterministic gradients without atomics:
// dQ is one pass over query blocks (each owns its rows), dK/dV a separate pass over key blocks (each
// owns its keys), both accumulating over the other axis in a fixed order.
//
// Thread layout (all three kernels): 4 warps; a warp owns four rows (queries or keys) and works on
// them together, lane j taking the j-th column of the current 32-wide tile for the dot products, and
// lane d the output dimensions d, d + 32, ... (DT of them, DT * 32 >= head dim) for the
// accumulations: each streamed element is read from shared memory once for the four rows (on an H200
// the GPT step's attention took 1.05 ms instead of 1.79 with one row at a time). Shared memory rows
// are padded to D + 1 floats so lanes reading different rows hit different banks.
#include <cmath>

#include "common.cuh"
#include "forgegrad/cuda_nn.h"

namespace fg::cuda::nn {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kBlockRows = kWarps * kRowsPerWarp;  // rows owned by a block (16)
constexpr int kTile = 32;                          // streamed rows per tile (one per lane)
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// Copy rows [r0, r0 + count) of a [rows, D] array into shared memory rows of pitch D + 1 (zeros past
// the end so every lane can read a full tile).
__device__ __forceinline__ void load_tile(float* dst, const float* src, int64_t r0, int count, int64_t rows, int D) {
  int pitch = D + 1;
  for (int e = threadIdx.x; e < count * D; e += blockDim.x) {
    int r = e / D, d = e % D;
    dst[r * pitch + d] = (r0 + r < rows) ? src[(r0 + r) * D + d] : 0.f;
  }
}

__device__ __forceinline__ float dot(const float* a, const float* b, int D) {
  float s = 0.f;
  for (int d = 0; d < D; ++d) s += a[d] * b[d];
  return s;
}

// Dot products of the warp's kRowsPerWarp rows (row r at a + r * pitch) with one vector b, each summed
// in d order as dot() does: every element of b is read once for all the rows.
__device__ __forceinline__ void rows_dot(float (&out)[kRowsPerWarp], const float* a, int pitch, const float* b, int D) {
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) out[r] = 0.f;
  for (int d = 0; d < D; ++d) {
    const float bd = b[d];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) out[r] += a[r * pitch + d] * bd;
  }
}

// Scaled, masked score of query i and key j (-inf when masked out or past the end).
__device__ __forceinline__ float score(float qk, int64_t i, int64_t j, int64_t L, int64_t S, const float* mask,
                                       float scale, bool causal) {
  if (i >= L || j >= S || (causal && j > i)) return -INFINITY;
  float s = qk * scale;
  if (mask) s += mask[i * S + j];
  return s;
}

template <int DT>
__global__ void __launch_bounds__(kWarps * 32)
    attn_fwd(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
             const float* __restrict__ mask, int64_t mask_bstride, float* __restrict__ out, float* __restrict__ lse,
             int64_t L, int64_t S, int D, int Dv, float scale, bool causal) {
  extern __shared__ float smem[];
  float* Qs = smem;                       // [kBlockRows][D + 1]
  float* Ks = Qs + kBlockRows * (D + 1);  // [kTile][D + 1]
  float* Vs = Ks + kTile * (D + 1);       // [kTile][Dv + 1]
  int64_t b = blockIdx.y, row0 = static_cast<int64_t>(blockIdx.x) * kBlockRows;
  q += b * L * D;
  k += b * S * D;
  v += b * S * Dv;
  if (mask) mask += b * mask_bstride;
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_tile(Qs, q, row0, kBlockRows, L, D);
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][DT];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int t = 0; t < DT; ++t) acc[r][t] = 0.f;
  }
  int64_t end = causal ? min(S, row0 + kBlockRows) : S;  // causal: keys past the block's last row never count
  for (int64_t j0 = 0; j0 < end; j0 += kTile) {
    __syncthreads();
    load_tile(Ks, k, j0, kTile, S, D);
    load_tile(Vs, v, j0, kTile, S, Dv);
    __syncthreads();
    // the warp's rows against the lane's key, then P V with each value element read once for the rows
    // (every accumulator sees the same operations in the same order as row by row)
    float qk[kRowsPerWarp], p[kRowsPerWarp];
    bool live[kRowsPerWarp];  // the same on every lane of the warp
    rows_dot(qk, Qs + warp * kRowsPerWarp * (D + 1), D + 1, Ks + lane * (D + 1), D);
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      int64_t i = row0 + warp * kRowsPerWarp + r;
      live[r] = false;
      p[r] = 0.f;
      if (i >= L) continue;
      float s = score(qk[r], i, j0 + lane, L, S, mask, scale, causal);
      float m_new = fmaxf(m[r], warp_max(s));
      if (m_new == -INFINITY) continue;  // everything so far masked out
      float alpha = expf(m[r] - m_new);  // 0 on the first unmasked tile
      p[r] = expf(s - m_new);
      l[r] = l[r] * alpha + warp_sum(p[r]);
      m[r] = m_new;
      live[r] = true;
#pragma unroll
      for (int t = 0; t < DT; ++t) acc[r][t] *= alpha;
    }
#pragma unroll 4
    for (int jj = 0; jj < kTile; ++jj) {
      float vt[DT];
#pragma unroll
      for (int t = 0; t < DT; ++t) {
        int d = lane + 32 * t;
        vt[t] = d < Dv ? Vs[jj * (Dv + 1) + d] : 0.f;
      }
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        if (!live[r]) continue;
        float pj = __shfl_sync(kFull, p[r], jj);
#pragma unroll
        for (int t = 0; t < DT; ++t)
          if (lane + 32 * t < Dv) acc[r][t] += pj * vt[t];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    int64_t i = row0 + warp * kRowsPerWarp + r;
    if (i >= L) break;
    float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;  // a row with no key left: 0, as torch
#pragma unroll
    for (int t = 0; t < DT; ++t) {
      int d = lane + 32 * t;
      if (d < Dv) out[(b * L + i) * Dv + d] = acc[r][t] * inv;
    }
    if (lane == 0) lse[b * L + i] = m[r] + logf(l[r]);
  }
}

// delta[b, i] = sum_d dO[b, i, d] * O[b, i, d], one warp per row.
__global__ void attn_delta(const float* __restrict__ out, const float* __restrict__ gout, float* __restrict__ delta,
                           int64_t rows, int Dv) {
  int lane = threadIdx.x % 32;
  for (int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.x / 32) {
    float s = 0.f;
    for (int d = lane; d < Dv; d += 32) s += out[row * Dv + d] * gout[row * Dv + d];
    s = warp_sum(s);
    if (lane == 0) delta[row] = s;
  }
}

// Probability of (i, j) recomputed from the saved log-sum-exp (0 when masked).
__device__ __forceinline__ float prob(float s, float lse_i) { return s == -INFINITY ? 0.f : expf(s - lse_i); }

template <int DT>
__global__ void __launch_bounds__(kWarps * 32)
    attn_bwd_dq(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                const float* __restrict__ mask, int64_t mask_bstride, const float* __restrict__ lse,
                const float* __restrict__ delta, const float* __restrict__ gout, float* __restrict__ gq, int64_t L,
                int64_t S, int D, int Dv, float scale, bool causal) {
  extern __shared__ float smem[];
  float* Qs = smem;                         // [kBlockRows][D + 1]
  float* Gs = Qs + kBlockRows * (D + 1);    // [kBlockRows][Dv + 1]  dO rows
  float* Ks = Gs + kBlockRows * (Dv + 1);   // [kTile][D + 1]
  float* Vs = Ks + kTile * (D + 1);         // [kTile][Dv + 1]
  int64_t b = blockIdx.y, row0 = static_cast<int64_t>(blockIdx.x) * kBlockRows;
  q += b * L * D;
  k += b * S * D;
  v += b * S * Dv;
  gout += b * L * Dv;
  lse += b * L;
  delta += b * L;
  if (mask) mask += b * mask_bstride;
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_tile(Qs, q, row0, kBlockRows, L, D);
  load_tile(Gs, gout, row0, kBlockRows, L, Dv);
  float acc[kRowsPerWarp][DT];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int t = 0; t < DT; ++t) acc[r][t] = 0.f;
  int64_t end = causal ? min(S, row0 + kBlockRows) : S;
  for (int64_t j0 = 0; j0 < end; j0 += kTile) {
    __syncthreads();
    load_tile(Ks, k, j0, kTile, S, D);
    load_tile(Vs, v, j0, kTile, S, Dv);
    __syncthreads();
    float qk[kRowsPerWarp], gv[kRowsPerWarp], ds[kRowsPerWarp];
    bool live[kRowsPerWarp];
    rows_dot(qk, Qs + warp * kRowsPerWarp * (D + 1), D + 1, Ks + lane * (D + 1), D);
    rows_dot(gv, Gs + warp * kRowsPerWarp * (Dv + 1), Dv + 1, Vs + lane * (Dv + 1), Dv);
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      int64_t i = row0 + warp * kRowsPerWarp + r;
      live[r] = i < L;
      ds[r] = 0.f;
      if (!live[r]) continue;
      float s = score(qk[r], i, j0 + lane, L, S, mask, scale, causal);
      ds[r] = prob(s, lse[i]) * (gv[r] - delta[i]);
    }
#pragma unroll 4
    for (int jj = 0; jj < kTile; ++jj) {
      float kt[DT];
#pragma unroll
      for (int t = 0; t < DT; ++t) {
        int d = lane + 32 * t;
        kt[t] = d < D ? Ks[jj * (D + 1) + d] : 0.f;
      }
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        if (!live[r]) continue;
        float dsj = __shfl_sync(kFull, ds[r], jj);
#pragma unroll
        for (int t = 0; t < DT; ++t)
          if (lane + 32 * t < D) acc[r][t] += dsj * kt[t];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    int64_t i = row0 + warp * kRowsPerWarp + r;
    if (i >= L) break;
#pragma unroll
    for (int t = 0; t < DT; ++t) {
      int d = lane + 32 * t;
      if (d < D) gq[(b * L + i) * D + d] = acc[r][t] * scale;
    }
  }
}

template <int DT>
__global__ void __launch_bounds__(kWarps * 32)
    attn_bwd_dkv(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                 const float* __restrict__ mask, int64_t mask_bstride, const float* __restrict__ lse,
                 const float* __restrict__ delta, const float* __restrict__ gout, float* __restrict__ gk,
                 float* __restrict__ gv, int64_t L, int64_t S, int D, int Dv, float scale, bool causal) {
  extern __shared__ float smem[];
  float* Ks = smem;                        // [kBlockRows][D + 1]   keys owned by the block
  float* Vs = Ks + kBlockRows * (D + 1);   // [kBlockRows][Dv + 1]
  float* Qs = Vs + kBlockRows * (Dv + 1);  // [kTile][D + 1]        streamed queries
  float* Gs = Qs + kTile * (D + 1);        // [kTile][Dv + 1]
  int64_t b = blockIdx.y, key0 = static_cast<int64_t>(blockIdx.x) * kBlockRows;
  q += b * L * D;
  k += b * S * D;
  v += b * S * Dv;
  gout += b * L * Dv;
  lse += b * L;
  delta += b * L;
  if (mask) mask += b * mask_bstride;
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_tile(Ks, k, key0, kBlockRows, S, D);
  load_tile(Vs, v, key0, kBlockRows, S, Dv);
  float dk[kRowsPerWarp][DT], dv[kRowsPerWarp][DT];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int t = 0; t < DT; ++t) dk[r][t] = dv[r][t] = 0.f;
  int64_t start = causal ? (key0 / kTile) * kTile : 0;  // causal: queries before the first key see none
  for (int64_t i0 = start; i0 < L; i0 += kTile) {
    __syncthreads();
    load_tile(Qs, q, i0, kTile, L, D);
    load_tile(Gs, gout, i0, kTile, L, Dv);
    __syncthreads();
    int64_t i = i0 + lane;
    float lse_i = i < L ? lse[i] : 0.f, delta_i = i < L ? delta[i] : 0.f;
    // the warp's keys against the lane's query (products commute: the same sums as dot(q, k))
    float qk[kRowsPerWarp], gv[kRowsPerWarp], p[kRowsPerWarp], ds[kRowsPerWarp];
    bool live[kRowsPerWarp];
    rows_dot(qk, Ks + warp * kRowsPerWarp * (D + 1), D + 1, Qs + lane * (D + 1), D);
    rows_dot(gv, Vs + warp * kRowsPerWarp * (Dv + 1), Dv + 1, Gs + lane * (Dv + 1), Dv);
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      int64_t j = key0 + warp * kRowsPerWarp + r;
      live[r] = j < S;
      p[r] = ds[r] = 0.f;
      if (!live[r]) continue;
      float s = score(qk[r], i, j, L, S, mask, scale, causal);
      p[r] = prob(s, lse_i);
      ds[r] = p[r] * (gv[r] - delta_i);
    }
#pragma unroll 4
    for (int ii = 0; ii < kTile; ++ii) {
      float gt[DT], qt[DT];
#pragma unroll
      for (int t = 0; t < DT; ++t) {
        int d = lane + 32 * t;
        gt[t] = d < Dv ? Gs[ii * (Dv + 1) + d] : 0.f;
        qt[t] = d < D ? Qs[ii * (D + 1) + d] : 0.f;
      }
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        if (!live[r]) continue;
        float pi = __shfl_sync(kFull, p[r], ii), dsi = __shfl_sync(kFull, ds[r], ii);
#pragma unroll
        for (int t = 0; t < DT; ++t) {
          int d = lane + 32 * t;
          if (d < Dv) dv[r][t] += pi * gt[t];
          if (d < D) dk[r][t] += dsi * qt[t];
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    int64_t j = key0 + warp * kRowsPerWarp + r;
    if (j >= S) break;
#pragma unroll
    for (int t = 0; t < DT; ++t) {
      int d = lane + 32 * t;
      if (d < D) gk[(b * S + j) * D + d] = dk[r][t] * scale;
      if (d < Dv) gv[(b * S + j) * Dv + d] = dv[r][t];
    }
  }
}

// The score gradient ds = p * (dO . v - dO . O) of every (b, i, j), written out: the gradient of an
// additive float mask (it materialises [B, L, S], as the CPU does; only run when the mask needs it).
__global__ void attn_score_grad(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                const float* __restrict__ mask, int64_t mask_bstride, const float* __restrict__ out,
                                const float* __restrict__ lse, const float* __restrict__ gout, float* __restrict__ ds,
                                int64_t B, int64_t L, int64_t S, int D, int Dv, float scale, bool causal) {
  int64_t total = B * L * S;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t j = e % S, i = (e / S) % L, b = e / (L * S);
    const float* gi = gout + (b * L + i) * Dv;
    float s = score(dot(q + (b * L + i) * D, k + (b * S + j) * D, D), i, j, L, S,
                    mask ? mask + b * mask_bstride : nullptr, scale, causal);
    float p = prob(s, lse[b * L + i]);
    ds[e] = p == 0.f ? 0.f : p * (dot(gi, v + (b * S + j) * Dv, Dv) - dot(gi, out + (b * L + i) * Dv, Dv));
  }
}

size_t fwd_smem(int D, int Dv) { return sizeof(float) * (kBlockRows * (D + 1) + kTile * (D + 1) + kTile * (Dv + 1)); }
size_t bwd_smem(int D, int Dv) {
  return sizeof(float) * ((kBlockRows + kTile) * (D + 1) + (kBlockRows + kTile) * (Dv + 1));
}

// Launch kernel with `bytes` of dynamic shared memory, opting in above the 48 KiB default.
template <class Kernel, class... Args>
std::string launch(Kernel kernel, dim3 grid, size_t bytes, Args... args) {
  if (bytes > 48 * 1024) {
    std::string err =
        status(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    if (!err.empty()) return err;
  }
  kernel<<<grid, kWarps * 32, bytes, current_stream()>>>(args...);
  return launch_status();
}

std::string check(int64_t B, int64_t L, int64_t S, int64_t D, int64_t Dv) {
  if (D < 1 || D > 128 || Dv < 1 || Dv > 128) return "attention: head dimensions must be in [1, 128]";
  if ((L + kBlockRows - 1) / kBlockRows > 0x7fffffff || (S + kBlockRows - 1) / kBlockRows > 0x7fffffff || B > 65535)
    return "attention: too many rows or batches for one launch";
  return std::string();
}

int tiles_of(int64_t n) { return static_cast<int>((n + kBlockRows - 1) / kBlockRows); }

template <int DT>
std::string forward_dt(const float* q, const float* k, const float* v, const float* mask, int64_t mbs, float* out,
                       float* lse, int64_t B, int64_t L, int64_t S, int D, int Dv, float scale, bool causal) {
  dim3 grid(tiles_of(L), static_cast<unsigned>(B));
  return launch(attn_fwd<DT>, grid, fwd_smem(D, Dv), q, k, v, mask, mbs, out, lse, L, S, D, Dv, scale, causal);
}

template <int DT>
std::string backward_dt(const float* q, const float* k, const float* v, const float* mask, int64_t mbs,
                        const float* lse, const float* delta, const float* gout, float* gq, float* gk, float* gv,
                        int64_t B, int64_t L, int64_t S, int D, int Dv, float scale, bool causal) {
  std::string err;
  if (L > 0)  // (a grid of zero blocks is a launch error)
    err = launch(attn_bwd_dq<DT>, dim3(tiles_of(L), static_cast<unsigned>(B)), bwd_smem(D, Dv), q, k, v, mask, mbs, lse,
                 delta, gout, gq, L, S, D, Dv, scale, causal);
  if (!err.empty() || S == 0) return err;
  return launch(attn_bwd_dkv<DT>, dim3(tiles_of(S), static_cast<unsigned>(B)), bwd_smem(D, Dv), q, k, v, mask, mbs, lse,
                delta, gout, gk, gv, L, S, D, Dv, scale, causal);
}

}  // namespace

std::string attention_forward(const float* q, const float* k, const float* v, const float* mask, int64_t mask_bstride,
                              float* out, float* lse, int64_t B, int64_t L, int64_t S, int64_t D, int64_t Dv,
                              float scale, bool causal) {
  std::string err = check(B, L, S, D, Dv);
  if (!err.empty() || B * L == 0) return err;
  int dmax = static_cast<int>(D > Dv ? D : Dv);
  int d = static_cast<int>(D), dv = static_cast<int>(Dv);
  if (dmax <= 32) return forward_dt<1>(q, k, v, mask, mask_bstride, out, lse, B, L, S, d, dv, scale, causal);
  if (dmax <= 64) return forward_dt<2>(q, k, v, mask, mask_bstride, out, lse, B, L, S, d, dv, scale, causal);
  return forward_dt<4>(q, k, v, mask, mask_bstride, out, lse, B, L, S, d, dv, scale, causal);
}

std::string attention_mask_grad(const float* q, const float* k, const float* v, const float* mask, int64_t mask_bstride,
                                const float* out, const float* lse, const float* grad_out, float* grad_scores,
                                int64_t B, int64_t L, int64_t S, int64_t D, int64_t Dv, float scale, bool causal) {
  std::string err = check(B, L, S, D, Dv);
  if (!err.empty() || B * L * S == 0) return err;
  attn_score_grad<<<blocks_for(B * L * S, 256), 256, 0, current_stream()>>>(
      q, k, v, mask, mask_bstride, out, lse, grad_out, grad_scores, B, L, S, static_cast<int>(D), static_cast<int>(Dv),
      scale, causal);
  return launch_status();
}

std::string attention_backward(const float* q, const float* k, const float* v, const float* mask, int64_t mask_bstride,
                               const float* out, const float* lse, const float* grad_out, float* grad_q, float* grad_k,
                               float* grad_v, int64_t B, int64_t L, int64_t S, int64_t D, int64_t Dv, float scale,
                               bool causal, float* workspace) {
  std::string err = check(B, L, S, D, Dv);
  if (!err.empty() || B * (L + S) == 0) return err;
  if (B * L > 0) {
    attn_delta<<<blocks_for(B * L * 32, 256), 256, 0, current_stream()>>>(out, grad_out, workspace, B * L,
                                                                          static_cast<int>(Dv));
    err = launch_status();
    if (!err.empty()) return err;
  }
  int dmax = static_cast<int>(D > Dv ? D : Dv);
  int d = static_cast<int>(D), dv = static_cast<int>(Dv);
  if (dmax <= 32)
    return backward_dt<1>(q, k, v, mask, mask_bstride, lse, workspace, grad_out, grad_q, grad_k, grad_v, B, L, S, d, dv,
                          scale, causal);
  if (dmax <= 64)
    return backward_dt<2>(q, k, v, mask, mask_bstride, lse, workspace, grad_out, grad_q, grad_k, grad_v, B, L, S, d, dv,
                          scale, causal);
  return backward_dt<4>(q, k, v, mask, mask_bstride, lse, workspace, grad_out, grad_q, grad_k, grad_v, B, L, S, d, dv,
                        scale, causal);
}

}  // namespace fg::cuda::nn
