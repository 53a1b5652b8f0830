// Row sums shared by layernorm.cpp and groupnorm.cpp (compiled inside their FG_ISA_NS namespace).
#pragma once
#include <cmath>
#include <cstdint>

#include "forgegrad/simd.h"
#include "softmax_rows.h"

namespace fg {
namespace FG_ISA_NS {
namespace rows {

// Sums of K per-element quantities over a row of n elements. f(i, r, acc) adds the quantities of
// elements [i, i + r) into acc[0..K), where r == W or, for the last vector, r < W (f must leave the
// lanes >= r at 0, e.g. with keep_first). Float vector accumulators (four sets, for ILP) within blocks
// of kSumBlock elements (softmax_rows.h); block sums added in double. The order depends on n only.

template <int K, class F>
inline void row_sums(int64_t n, F f, double* out) {
  for (int k = 0; k < K; ++k) out[k] = 0.0;
  for (int64_t b = 0; b < n; b += kSumBlock) {
    const int64_t e = imin(b + kSumBlock, n);
    vf a0[K], a1[K], a2[K], a3[K];
    for (int k = 0; k < K; ++k) a0[k] = a1[k] = a2[k] = a3[k] = vzero();
    int64_t i = b;
    for (; i + 4 * W <= e; i += 4 * W) {
      f(i, W, a0);
      f(i + W, W, a1);
      f(i + 2 * W, W, a2);
      f(i + 3 * W, W, a3);
    }
    for (; i < e; i += W) f(i, static_cast<int>(imin(W, e - i)), a0);
    for (int k = 0; k < K; ++k)
      out[k] += static_cast<double>(vreduce_add(vadd(vadd(a0[k], a1[k]), vadd(a2[k], a3[k]))));
  }
}

// v, or v with the lanes >= r zeroed when r < W (a partial last vector).
inline vf tail0(vf v, int r) { return r == W ? v : keep_first(v, vzero(), r); }

// The mean of a row of n floats, as hi + lo ((x - hi) - lo is the centred value to about an ulp of itself),
// and its reciprocal standard deviation (biased variance + eps), in two passes: the mean summed as
// sum(x - x[0]) (with a large common offset the differences are exact and small, so the float block sums
// lose nothing to it), then the variance of (x - hi) - lo. False when a float sum overflowed: the caller
// redoes the row in double.
inline bool mean_rstd(const float* x, int64_t n, float eps, float* hi, float* lo, double* rstd) {
  const float x0 = x[0];
  const vf K = vset1(x0);
  double s1;
  row_sums<1>(n, [&](int64_t i, int r, vf* a) { a[0] = vadd(a[0], tail0(vsub(vload_upto(x + i, r), K), r)); }, &s1);
  const double mean = static_cast<double>(x0) + s1 / static_cast<double>(n);
  *hi = static_cast<float>(mean);
  *lo = static_cast<float>(mean - static_cast<double>(*hi));
  const vf H = vset1(*hi), L = vset1(*lo);
  double s2;
  row_sums<1>(
      n,
      [&](int64_t i, int r, vf* a) {
        vf d = tail0(vsub(vsub(vload_upto(x + i, r), H), L), r);
        a[0] = vfmadd(d, d, a[0]);
      },
      &s2);
  if (!std::isfinite(s1) || !std::isfinite(s2)) return false;
  *rstd = 1.0 / std::sqrt(s2 / static_cast<double>(n) + static_cast<double>(eps));
  return true;
}

}  // namespace rows
}  // namespace FG_ISA_NS
}  // namespace fg
