// The float64 lanes of reduce_rows.h's order, shared by reduce_rows.cpp and reduce_axes.cpp (compiled inside their
// FG_ISA_NS namespace): 8 float and 8 float64 lanes per ISA, a row's 8 chains (row_lanes), a sum's final rounding.
//
// Each ISA holds the 8 float64 chains in its own registers: AVX-512 one zmm, AVX2 a pair of ymm (lanes 0-3
// and 4-7), the portable build an array; the float sums of a block run on 8 float lanes. A row's last
// partial block is read with masked loads whose lanes past the row are +0.0 (the order's zero padding).
#pragma once
#include <cstdint>

#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

constexpr int64_t kChains = 8, kBlock = 4 * kChains;

// Eight float lanes (F8) and eight float64 lanes (D8) per ISA.
#if defined(__AVX512F__) || defined(__AVX2__)
using F8 = __m256;
inline F8 f8_add(F8 a, F8 b) { return _mm256_add_ps(a, b); }
#if defined(__AVX512F__)
// The first n (1..8) floats at p, the other lanes +0.0.
inline F8 f8_load(const float* p, int n) {
  return n == 8 ? _mm256_loadu_ps(p) : _mm256_maskz_loadu_ps(static_cast<__mmask8>((1u << n) - 1u), p);
}
struct D8 {
  __m512d v;
};
inline D8 d8_zero() { return {_mm512_setzero_pd()}; }
inline D8 d8_add(D8 a, D8 b) { return {_mm512_add_pd(a.v, b.v)}; }
inline D8 d8_from(F8 f) { return {_mm512_cvtps_pd(f)}; }
inline double d8_tree(D8 a) {
  const __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(a.v), _mm512_extractf64x4_pd(a.v, 1));
  const __m128d q = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
  return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}
#else
inline F8 f8_load(const float* p, int n) { return n == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail_mask8(n)); }
struct D8 {
  __m256d lo, hi;  // lanes 0-3, 4-7
};
inline D8 d8_zero() { return {_mm256_setzero_pd(), _mm256_setzero_pd()}; }
inline D8 d8_add(D8 a, D8 b) { return {_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)}; }
inline D8 d8_from(F8 f) {
  return {_mm256_cvtps_pd(_mm256_castps256_ps128(f)), _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1))};
}
inline double d8_tree(D8 a) {
  const __m256d h = _mm256_add_pd(a.lo, a.hi);
  const __m128d q = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
  return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}
#endif
#else
struct F8 {
  float v[8];
};
inline F8 f8_add(F8 a, F8 b) {
  for (int l = 0; l < 8; ++l) a.v[l] += b.v[l];
  return a;
}
inline F8 f8_load(const float* p, int n) {
  F8 r{};
  for (int l = 0; l < n; ++l) r.v[l] = p[l];
  return r;
}
struct D8 {
  double v[8];
};
inline D8 d8_zero() { return D8{}; }
inline D8 d8_add(D8 a, D8 b) {
  for (int l = 0; l < 8; ++l) a.v[l] += b.v[l];
  return a;
}
inline D8 d8_from(F8 f) {
  D8 r;
  for (int l = 0; l < 8; ++l) r.v[l] = static_cast<double>(f.v[l]);
  return r;
}
inline double d8_tree(D8 a) {
  const double h0 = a.v[0] + a.v[4], h1 = a.v[1] + a.v[5], h2 = a.v[2] + a.v[6], h3 = a.v[3] + a.v[7];
  return (h0 + h2) + (h1 + h3);
}
#endif

inline int lanes_left(int64_t n) { return n >= 8 ? 8 : n <= 0 ? 0 : static_cast<int>(n); }

// A whole block's float sums: (x[j] + x[8 + j]) + (x[16 + j] + x[24 + j]) for the 8 chains j.
inline F8 quad(const float* p) {
  return f8_add(f8_add(f8_load(p, 8), f8_load(p + kChains, 8)),
                f8_add(f8_load(p + 2 * kChains, 8), f8_load(p + 3 * kChains, 8)));
}

// The same over a last block of r (1..31) elements, zero-padded. A quarter with no element is skipped: the
// pad's +0.0 changes a float sum at most from -0 to +0, which its float64 chain (never -0) does not see.
inline F8 quad_part(const float* p, int64_t r) {
  const int n0 = lanes_left(r), n1 = lanes_left(r - kChains), n2 = lanes_left(r - 2 * kChains),
            n3 = lanes_left(r - 3 * kChains);
  F8 t = f8_load(p, n0);
  if (n1 > 0) t = f8_add(t, f8_load(p + kChains, n1));
  if (n2 > 0)
    t = f8_add(
        t, n3 > 0 ? f8_add(f8_load(p + 2 * kChains, n2), f8_load(p + 3 * kChains, n3)) : f8_load(p + 2 * kChains, n2));
  return t;
}

// The row's 8 chains in the order of reduce_rows.h, but each starting at its first term rather than at
// 0.0 + it: that differs only where a chain is -0 instead of +0, which the tree carries at most to a -0
// sum, and the callers add 0.0 to the sum (the same bits as the order's, an add fewer per row). One
// float64 add per 32 elements: a long row runs at the float adds' throughput, not the chain's latency.
__attribute__((always_inline)) inline D8 row_lanes(const float* p, int64_t L) {
  if (L < kBlock) return d8_from(quad_part(p, L));
  D8 a = d8_from(quad(p));
  int64_t k = kBlock;
  for (; k + kBlock <= L; k += kBlock) a = d8_add(a, d8_from(quad(p + k)));
  if (k < L) a = d8_add(a, d8_from(quad_part(p + k, L - k)));
  return a;
}

inline float row_result(double s, bool mean, double n) {
  s += 0.0;  // a -0 sum as the order's +0 (row_lanes)
  return static_cast<float>(mean ? s / n : s);
}

// A strip's float64 column sums held in registers while it runs down the rows: AVX-512 8 zmm (64 columns),
// AVX2 and the portable build 4 D8 (32 columns: 8 ymm, the most AVX2's 16 registers leave room for). Enough
// independent chains to keep the float64 adds at their throughput, not their latency.
#if defined(__AVX512F__)
constexpr int kMidGroups = 8;
#else
constexpr int kMidGroups = 4;
#endif

inline void d8_spill(D8 a, double* out) {
#if defined(__AVX512F__)
  _mm512_storeu_pd(out, a.v);
#elif defined(__AVX2__)
  _mm256_storeu_pd(out, a.lo);
  _mm256_storeu_pd(out + 4, a.hi);
#else
  for (int l = 0; l < 8; ++l) out[l] = a.v[l];
#endif
}

// Column chains: per column a float64 chain down a set of rows in row order, for sums over leading or middle axes
// (sum_mid_f32's (M, I) rows: StridedRows) and the kept innermost block of sum_axes_f32 (any strided rows: its
// Axes). ``rows.each(f)`` calls f(offset) for every row in order. The chains start at 0.0, which differs from
// starting at the first row's value only in a -0 sum, and row_result makes that +0 either way.
struct StridedRows {
  int64_t count, stride;
  template <class F>
  void each(F&& f) const {
    for (int64_t m = 0; m < count; ++m) f(m * stride);
  }
};

// Columns [c, c + 8G) (the last group's first `last` of 8) of the outputs at x: each column's chain down the rows
// in registers.
template <int G, class Rows>
inline void column_strip(const float* x, const Rows& rows, int64_t c, int last, bool mean, double n, float* y) {
  D8 acc[G];
  for (int g = 0; g < G; ++g) acc[g] = d8_zero();
  rows.each([&](int64_t off) {
    const float* p = x + off + c;
    for (int g = 0; g < G; ++g) acc[g] = d8_add(acc[g], d8_from(f8_load(p + 8 * g, g == G - 1 ? last : 8)));
  });
  for (int g = 0; g < G; ++g) {
    double s[8];
    d8_spill(acc[g], s);
    const int w = g == G - 1 ? last : 8;
    for (int l = 0; l < w; ++l) y[c + 8 * g + l] = row_result(s[l], mean, n);
  }
}

// The same for columns [c0, c1) (at most kPassCols), too many for registers: one pass per row over the columns,
// their float64 sums in s (L1) between rows. Rows of up to kPassCols floats are then read as one stream, which
// DRAM-bound sizes need: strips stride by the row length and ran up to 1.5x slower there, passes of 2 to 8 rows
// 1.3-2x (rough, Zen 5, a loaded machine). Wider rows are cut into blocks of kPassCols columns (the sums of all the
// columns in L2 measured no faster).
constexpr int64_t kPassCols = 4096;
template <class Rows>
void column_passes(const float* x, const Rows& rows, int64_t c0, int64_t c1, bool mean, double n, float* y) {
  D8 s[kPassCols / 8];
  const int64_t ng = (c1 - c0 + 7) / 8;
  const int last = lanes_left(c1 - c0 - 8 * (ng - 1));
  for (int64_t g = 0; g < ng; ++g) s[g] = d8_zero();
  x += c0;
  rows.each([&](int64_t off) {
    const float* p = x + off;
    for (int64_t g = 0; g + 1 < ng; ++g) s[g] = d8_add(s[g], d8_from(f8_load(p + 8 * g, 8)));
    s[ng - 1] = d8_add(s[ng - 1], d8_from(f8_load(p + 8 * (ng - 1), last)));
  });
  for (int64_t g = 0; g < ng; ++g) {
    double t[8];
    d8_spill(s[g], t);
    const int w = g == ng - 1 ? last : 8;
    for (int l = 0; l < w; ++l) y[c0 + 8 * g + l] = row_result(t[l], mean, n);
  }
}

}  // namespace
}  // namespace FG_ISA_NS
}  // namespace fg
