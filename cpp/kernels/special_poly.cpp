// The orthogonal polynomials' recurrences (forgegrad/special_poly.h).
#include "forgegrad/special_poly.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "forgegrad/parallel.h"

namespace fg {

namespace {

// One element: the loop of _special_poly._recurrence with its step. The degree is counted in an int64
// (a double counter would stop advancing at 2^53 and never end); a degree that is not an integer below
// 2^63 runs no step, as _special_poly._degrees makes it negative.
int64_t last_step(double n) {
  if (!(n >= 0.0 && n < 9223372036854775808.0)) return -1;
  const int64_t k = static_cast<int64_t>(n);
  return k == INT64_MAX ? INT64_MAX - 1 : k;
}

template <int Kind>
double run_one(double c, double n, double p, double q, int64_t start, bool stop_nan) {
  const int64_t last = last_step(n);
  for (int64_t j = start; j <= last; ++j) {
    if (stop_nan && std::isnan(q)) break;
    const double k = static_cast<double>(j);
    double r;
    if constexpr (Kind == kPolyChebyshev) {
      r = c * q - p;
    } else if constexpr (Kind == kPolyHermiteH) {
      r = (c + c) * q - (2.0 * (k - 1.0)) * p;
    } else if constexpr (Kind == kPolyHermiteHe) {
      r = c * q - (k - 1.0) * p;
    } else if constexpr (Kind == kPolyLaguerre) {
      r = ((2.0 * (k - 1.0) + (1.0 - c)) * q - (k - 1.0) * p) / k;
    } else {
      r = ((2.0 * (k - 1.0) + 1.0) * c * q - (k - 1.0) * p) / k;
    }
    p = q;
    q = r;
  }
  return q;
}

template <int Kind>
void run_all(const double* coef, const double* n, const double* q0, const double* q1, int64_t count, int64_t start,
             bool stop_nan, double* out) {
  int64_t most = 1;  // the longest element's steps: what a range may cost
  for (int64_t i = 0; i < count; ++i) most = std::max(most, last_step(n[i]));
  parallel_for_work(count, most, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) out[i] = run_one<Kind>(coef[i], n[i], q0[i], q1[i], start, stop_nan);
  });
}

}  // namespace

void poly_recurrence(int kind, const double* coef, const double* n, const double* q0, const double* q1, int64_t count,
                     int64_t start, bool stop_nan, double* out) {
  switch (kind) {
    case kPolyChebyshev: return run_all<kPolyChebyshev>(coef, n, q0, q1, count, start, stop_nan, out);
    case kPolyHermiteH: return run_all<kPolyHermiteH>(coef, n, q0, q1, count, start, stop_nan, out);
    case kPolyHermiteHe: return run_all<kPolyHermiteHe>(coef, n, q0, q1, count, start, stop_nan, out);
    case kPolyLaguerre: return run_all<kPolyLaguerre>(coef, n, q0, q1, count, start, stop_nan, out);
    default: return run_all<kPolyLegendre>(coef, n, q0, q1, count, start, stop_nan, out);
  }
}

}  // namespace fg
