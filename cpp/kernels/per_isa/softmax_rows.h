// Row helpers shared by softmax.cpp and loss.cpp (compiled inside their FG_ISA_NS namespace).
#pragma once
#include <cmath>
#include <cstdint>

#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace rows {

// Local min/max: std::min<int64_t> would be a std template shared by the three ISA copies.
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// v with the lanes at index >= r replaced by pad (r in [1, W]): masks a partial last vector.
inline vf keep_first(vf v, vf pad, int r) {
  alignas(64) static const float kIota[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  return vselect_gt(vset1(static_cast<float>(r)), vload(kIota), v, pad);
}

// max over x[0, n); -inf for n == 0. A NaN may or may not win; callers rely on exp(NaN - m) = NaN.
inline float row_max(const float* x, int64_t n) {
  const vf ninf = vset1(-INFINITY);
  vf m0 = ninf, m1 = ninf;
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    m0 = vmax(m0, vload(x + i));
    m1 = vmax(m1, vload(x + i + W));
  }
  for (; i + W <= n; i += W) m0 = vmax(m0, vload(x + i));
  if (i < n) {
    int r = static_cast<int>(n - i);
    m1 = vmax(m1, keep_first(vload_n(x + i, r), ninf, r));
  }
  return vreduce_max(vmax(m0, m1));
}

// Sum over a row of n elements of full(i) (the vector at i) and tail(i, r) (the last r < W
// elements, other lanes 0): blocks of kSumBlock elements summed in float with four accumulators,
// block sums added in double, so long rows keep ulp-level error on every path (W = 1 included).
// full/tail may also store (the pass that writes exp(x - max) sums as it goes).
constexpr int64_t kSumBlock = 1024;

template <class Full, class Tail>
inline double row_sum(int64_t n, Full full, Tail tail) {
  double total = 0.0;
  for (int64_t b = 0; b < n; b += kSumBlock) {
    const int64_t e = imin(b + kSumBlock, n);
    vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
    int64_t i = b;
    for (; i + 4 * W <= e; i += 4 * W) {
      a0 = vadd(a0, full(i));
      a1 = vadd(a1, full(i + W));
      a2 = vadd(a2, full(i + 2 * W));
      a3 = vadd(a3, full(i + 3 * W));
    }
    for (; i + W <= e; i += W) a0 = vadd(a0, full(i));
    if (i < e) a1 = vadd(a1, tail(i, static_cast<int>(e - i)));
    total += static_cast<double>(vreduce_add(vadd(vadd(a0, a1), vadd(a2, a3))));
  }
  return total;
}

// p[0, n) = softmax(x[0, n)) given m = the row max in every lane: exp(x - m) is stored and summed
// in one pass, then scaled by 1 / sum. Returns that sum (cross-entropy also needs its log).
// static: each kernel file keeps its own copy, so the row_sum below inlines into it as it did there.
static inline double softmax_into(const float* x, vf m, float* p, int64_t n) {
  const double s = row_sum(
      n,
      [&](int64_t i) {
        vf e = vexp(vsub(vload(x + i), m));
        vstore(p + i, e);
        return e;
      },
      [&](int64_t i, int r) {
        vf e = keep_first(vexp(vsub(vload_n(x + i, r), m)), vzero(), r);
        vstore_n(p + i, e, r);
        return e;
      });
  const vf inv = vset1(static_cast<float>(1.0 / s));
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore(p + i, vmul(vload(p + i), inv));
  if (i < n) {
    int r = static_cast<int>(n - i);
    vstore_n(p + i, vmul(vload_n(p + i, r), inv), r);
  }
  return s;
}

}  // namespace rows
}  // namespace FG_ISA_NS
}  // namespace fg
