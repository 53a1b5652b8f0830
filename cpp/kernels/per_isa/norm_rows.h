// Row sums shared by layernorm.cpp and groupnorm.cpp (compiled inside their FG_ISA_NS namespace).
#pragma once
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

}  // namespace rows
}  // namespace FG_ISA_NS
}  // namespace fg
