// Softmax / log-softmax over rows of a (rows, cols) row-major buffer, forward and backward.
// One thread owns a row; each row takes three passes over cols (max, exp and sum, scale), which
// stay in L1/L2 for the usual class counts.
#include <cmath>

#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"
#include "forgegrad/softmax.h"
#include "softmax_rows.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

using rows::imax;
using rows::imin;

int64_t row_grain(int64_t cols) { return imax(1, 16384 / imax(1, cols)); }

void softmax_row(const float* x, float* y, int64_t n) { rows::softmax_into(x, vset1(rows::row_max(x, n)), y, n); }

void log_softmax_row(const float* x, float* y, int64_t n) {
  const vf m = vset1(rows::row_max(x, n));
  const double s = rows::row_sum(
      n, [&](int64_t i) { return vexp(vsub(vload(x + i), m)); },
      [&](int64_t i, int r) { return rows::keep_first(vexp(vsub(vload_n(x + i, r), m)), vzero(), r); });
  const vf ls = vset1(static_cast<float>(std::log(s)));
  // (x - max) - log(sum): the same association as torch's _vec_log_softmax_lastdim
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore(y + i, vsub(vsub(vload(x + i), m), ls));
  if (i < n) {
    int r = static_cast<int>(n - i);
    vstore_n(y + i, vsub(vsub(vload_n(x + i, r), m), ls), r);
  }
}

// dx = y * (g - sum(g * y))
void softmax_backward_row(const float* g, const float* y, float* dx, int64_t n) {
  const vf dot = vset1(static_cast<float>(rows::row_sum(
      n, [&](int64_t i) { return vmul(vload(g + i), vload(y + i)); },
      [&](int64_t i, int r) { return vmul(vload_n(g + i, r), vload_n(y + i, r)); })));  // zero lanes add 0
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore(dx + i, vmul(vload(y + i), vsub(vload(g + i), dot)));
  if (i < n) {
    int r = static_cast<int>(n - i);
    vstore_n(dx + i, vmul(vload_n(y + i, r), vsub(vload_n(g + i, r), dot)), r);
  }
}

// dx = g - exp(y) * sum(g)
void log_softmax_backward_row(const float* g, const float* y, float* dx, int64_t n) {
  const vf s = vset1(static_cast<float>(
      rows::row_sum(n, [&](int64_t i) { return vload(g + i); }, [&](int64_t i, int r) { return vload_n(g + i, r); })));
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore(dx + i, vfnmadd(vexp(vload(y + i)), s, vload(g + i)));
  if (i < n) {
    int r = static_cast<int>(n - i);
    vstore_n(dx + i, vfnmadd(vexp(vload_n(y + i, r)), s, vload_n(g + i, r)), r);
  }
}

}  // namespace

void softmax_forward(const float* x, float* y, int64_t nrows, int64_t cols, bool log_softmax) {
  if (cols <= 0) return;
  parallel_for(nrows, row_grain(cols), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      if (log_softmax)
        log_softmax_row(x + r * cols, y + r * cols, cols);
      else
        softmax_row(x + r * cols, y + r * cols, cols);
    }
  });
}

void softmax_backward(const float* g, const float* y, float* dx, int64_t nrows, int64_t cols, bool log_softmax) {
  if (cols <= 0) return;
  parallel_for(nrows, row_grain(cols), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      if (log_softmax)
        log_softmax_backward_row(g + r * cols, y + r * cols, dx + r * cols, cols);
      else
        softmax_backward_row(g + r * cols, y + r * cols, dx + r * cols, cols);
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
