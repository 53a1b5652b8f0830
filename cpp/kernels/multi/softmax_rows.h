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

}  // namespace rows
}  // namespace FG_ISA_NS
}  // namespace fg
