// Tile helpers of the fused attention kernels (attention.cpp, the tiled flash kernel for any length, and
// attention_small.cpp, the whole-row kernel for short sequences), compiled inside their FG_ISA_NS namespace:
// the register-blocked microkernel every product runs on, the copies and transposes that feed it, and the
// row operations of the softmax.
#pragma once
#include <cmath>
#include <cstdint>

#include "forgegrad/attention.h"
#include "forgegrad/simd.h"
#include "forgegrad/transpose_f32.h"
#include "softmax_rows.h"

namespace fg {
namespace FG_ISA_NS {
namespace attn {

using rows::imin;

constexpr int kMR = 6;  // microkernel rows
// Vectors per microkernel row: 6 x 4 accumulators of 32 zmm registers, 6 x 2 of 16 ymm.
constexpr int kNV = W == 16 ? 4 : (W == 8 ? 2 : 8);

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// C[r][0 .. NV*W) (+)= sum_k A[r*sai + k*sak] * B[k*ldb + 0 .. NV*W), r < MR.
// With ACC the K products are summed from zero and then added to C, not chained onto C: dK and dV gather
// a tile's sum per query tile, and a chain through C would make them one running sum over every query row
// (4x torch's float32 error at T = 4096); a sum per tile plus one add per tile is a blocked sum.
template <int MR, int NV, bool ACC>
void micro(int64_t K, const float* A, int64_t sai, int64_t sak, const float* B, int64_t ldb, float* C, int64_t ldc) {
  vf acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = vzero();
  for (int64_t k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
    vf bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = vload(b + v * W);
    const float* a = A + k * sak;
    for (int r = 0; r < MR; ++r) {
      const vf ar = vset1(a[r * sai]);
      for (int v = 0; v < NV; ++v) acc[r][v] = vfmadd(ar, bv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      vstore(C + r * ldc + v * W, ACC ? vadd(vload(C + r * ldc + v * W), acc[r][v]) : acc[r][v]);
}

using MicroFn = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t);

template <bool ACC, int MR, int NV>
MicroFn pick_nv(int nv) {
  if constexpr (NV == 0) {
    return nullptr;
  } else {
    return nv == NV ? &micro<MR, NV, ACC> : pick_nv<ACC, MR, NV - 1>(nv);
  }
}

template <bool ACC, int MR>
MicroFn pick(int mr, int nv) {
  if constexpr (MR == 0) {
    return nullptr;
  } else {
    return mr == MR ? pick_nv<ACC, MR, kNV>(nv) : pick<ACC, MR - 1>(mr, nv);
  }
}

// C (M x N) (+)= A (M x K, element (i, k) at A[i*sai + k*sak]) B (K x N, row stride ldb); N % W == 0.
template <bool ACC>
void tile_gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t sai, int64_t sak, const float* B, int64_t ldb,
               float* C, int64_t ldc) {
  for (int64_t n0 = 0; n0 < N; n0 += kNV * W) {
    const int nv = static_cast<int>(imin(kNV, (N - n0) / W));
    for (int64_t i = 0; i < M; i += kMR) {
      const int mr = static_cast<int>(imin(kMR, M - i));
      pick<ACC, kMR>(mr, nv)(K, A + i * sai, sai, sak, B + n0, ldb, C + i * ldc + n0, ldc);
    }
  }
}

// dst (rows x ldd) = src (rows x cols, row stride lds), columns [cols, ldd) zeroed.
inline void copy_padded(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst, int64_t ldd) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[r * ldd + c] = src[r * lds + c];
    for (int64_t c = cols; c < ldd; ++c) dst[r * ldd + c] = 0.0f;
  }
}

// dst (cols x ldd) = transpose of src rows [0, rows) (row stride lds, cols columns), zero padded
// to ldd columns (ldd >= rows).
inline void transpose_padded(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst, int64_t ldd) {
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = rows; r < ldd; ++r) dst[c * ldd + r] = 0.0f;
  int64_t r0 = 0;
#if defined(__AVX2__)
  // 8 x 8 blocks in registers (the element loop wrote every value to another cache line)
  for (; r0 + 8 <= rows; r0 += 8) {
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
      __m256 in[8], out[8];
      for (int i = 0; i < 8; ++i) in[i] = _mm256_loadu_ps(src + (r0 + i) * lds + c);
      tile_f32::transpose8(in, out);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (c + i) * ldd + r0, out[i]);
    }
    for (; c < cols; ++c)
      for (int i = 0; i < 8; ++i) dst[c * ldd + r0 + i] = src[(r0 + i) * lds + c];
  }
#endif
  for (int64_t r = r0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * ldd + r] = src[r * lds + c];
}

// dst (rows x ldd) = src * a (rows x cols, row stride lds), columns [cols, ldd) zeroed.
inline void copy_scaled(const float* src, int64_t rows, int64_t cols, int64_t lds, float a, float* dst, int64_t ldd) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[r * ldd + c] = src[r * lds + c] * a;
    for (int64_t c = cols; c < ldd; ++c) dst[r * ldd + c] = 0.0f;
  }
}

// x[c] += m[c] for c < n, in place (nothing when m is null).
inline void add_mask(float* s, const float* m, int64_t n) {
  if (!m) return;
  for (int64_t c = 0; c < n; c += W) {
    const int r = static_cast<int>(imin(W, n - c));
    vstore_upto(s + c, vadd(vload_upto(s + c, r), vload_upto(m + c, r)), r);
  }
}

inline float vec_max(const float* x, int64_t n) { return rows::row_max(x, n); }

// x[c] = exp(x[c] - sub) for c < n, returning their sum (fixed order: one vector accumulator).
inline float exp_sub_sum(float* x, int64_t n, float sub) {
  const vf s = vset1(sub);
  vf acc = vzero();
  for (int64_t c = 0; c < n; c += W) {
    const int r = static_cast<int>(imin(W, n - c));
    vf e = vexp(vsub(vload_upto(x + c, r), s));
    if (r < W) e = rows::keep_first(e, vzero(), r);
    vstore_upto(x + c, e, r);
    acc = vadd(acc, e);
  }
  return vreduce_add(acc);
}

inline void scale_row(float* x, int64_t n, float a) {
  const vf av = vset1(a);
  for (int64_t c = 0; c < n; c += W) vstore(x + c, vmul(vload(x + c), av));  // n % W == 0
}

inline bool has_nan(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (std::isnan(x[i])) return true;
  return false;
}

inline void zero(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 0.0f;
}

// Keys a query row sees in the key block [c0, c0 + bc): [0, lim).
inline int64_t visible(bool causal, int64_t row, int64_t c0, int64_t bc) {
  if (!causal) return bc;
  const int64_t lim = row - c0 + 1;
  return lim < 0 ? 0 : imin(lim, bc);
}

// D[r] = sum_e a[r * ld + e] * b[r * ld + e] for r < rows (the backward's rowsum(dO * out)): one vector
// accumulator per row, a fixed order.
inline void row_dots(const float* a, const float* b, int64_t ld, int64_t rows, int64_t cols, float* D) {
  for (int64_t r = 0; r < rows; ++r) {
    vf s = vzero();
    for (int64_t e = 0; e < cols; e += W) {
      const int c = static_cast<int>(imin(W, cols - e));
      s = vfmadd(vload_upto(a + r * ld + e, c), vload_upto(b + r * ld + e, c), s);
    }
    D[r] = vreduce_add(s);
  }
}

}  // namespace attn

// The whole-row kernels (attention_small.cpp) behind attention_forward / attention_backward when
// attention_small_path(L, S, softcap) holds; their arguments, less the soft cap.
void attention_forward_small(const float* q, AttnLayout lq, const float* k, AttnLayout lk, const float* v,
                             AttnLayout lv, int64_t N, int64_t L, int64_t S, int64_t E, int64_t Ev, float scale,
                             bool causal, const float* mask, const int64_t* moff, int64_t mrs, float* out,
                             AttnLayout lo, float* lse);
void attention_backward_small(const float* q, AttnLayout lq, const float* k, AttnLayout lk, const float* v,
                              AttnLayout lv, const float* out, const float* grad_out, AttnLayout lo, const float* lse,
                              int64_t N, int64_t L, int64_t S, int64_t E, int64_t Ev, float scale, bool causal,
                              const float* mask, const int64_t* moff, int64_t mrs, float* dq, AttnLayout wq, float* dk,
                              AttnLayout wk, float* dv, AttnLayout wv);
}  // namespace FG_ISA_NS
}  // namespace fg
