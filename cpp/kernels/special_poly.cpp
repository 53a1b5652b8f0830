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

// q_k from q_{k-1} = q and q_{k-2} = p: the numpy loop's expression, in its order.
template <int Kind>
inline double step(double c, double k, double q, double p) {
  if constexpr (Kind == kPolyChebyshev) {
    return c * q - p;
  } else if constexpr (Kind == kPolyHermiteH) {
    return (c + c) * q - (2.0 * (k - 1.0)) * p;
  } else if constexpr (Kind == kPolyHermiteHe) {
    return c * q - (k - 1.0) * p;
  } else if constexpr (Kind == kPolyLaguerre) {
    return ((2.0 * (k - 1.0) + (1.0 - c)) * q - (k - 1.0) * p) / k;
  } else {
    return ((2.0 * (k - 1.0) + 1.0) * c * q - (k - 1.0) * p) / k;
  }
}

template <int Kind>
double run_one(double c, double n, double p, double q, int64_t start, bool stop_nan) {
  const int64_t last = last_step(n);
  for (int64_t j = start; j <= last; ++j) {
    if (stop_nan && std::isnan(q)) break;
    const double r = step<Kind>(c, static_cast<double>(j), q, p);
    p = q;
    q = r;
  }
  return q;
}

// kLanes elements of one degree at once: one step's latency (a chain of a multiply, a subtract and, for Laguerre
// and Legendre, a division) is the cost of one element's step, so independent chains side by side take about
// the time of one. Each lane runs run_one's operations in its order; a lane whose q turned NaN keeps its p and q
// (run_one's stop), so every lane ends with run_one's bits. The lanes stop together once all are NaN.
constexpr int kLanes = 8;

template <int Kind>
void run_lanes(const double* c, int64_t last, const double* p0, const double* q0, int64_t start, bool stop_nan,
               double* out) {
  double cl[kLanes], p[kLanes], q[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    cl[l] = c[l];
    p[l] = p0[l];
    q[l] = q0[l];
  }
  for (int64_t j = start; j <= last; ++j) {
    const double k = static_cast<double>(j);
    for (int l = 0; l < kLanes; ++l) {
      const double r = step<Kind>(cl[l], k, q[l], p[l]);
      const bool stopped = stop_nan && std::isnan(q[l]);
      p[l] = stopped ? p[l] : q[l];
      q[l] = stopped ? q[l] : r;
    }
    if (stop_nan && (j & 63) == 0) {
      bool all = true;
      for (int l = 0; l < kLanes; ++l) all = all && std::isnan(q[l]);
      if (all) break;
    }
  }
  for (int l = 0; l < kLanes; ++l) out[l] = q[l];
}

template <int Kind>
void run_all(const double* coef, const double* n, const double* q0, const double* q1, int64_t count, int64_t start,
             bool stop_nan, double* out) {
  int64_t most = 1;  // the longest element's steps: what a range may cost
  for (int64_t i = 0; i < count; ++i) most = std::max(most, last_step(n[i]));
  parallel_for_work(count, most, [&](int64_t lo, int64_t hi) {
    int64_t i = lo;
    while (i < hi) {
      // kLanes neighbours of one degree (a Python degree, or a tensor's equal entries) run side by side
      const int64_t last = last_step(n[i]);
      bool same = i + kLanes <= hi && last >= start;
      for (int l = 1; same && l < kLanes; ++l) same = last_step(n[i + l]) == last;
      if (same) {
        run_lanes<Kind>(coef + i, last, q0 + i, q1 + i, start, stop_nan, out + i);
        i += kLanes;
      } else {
        out[i] = run_one<Kind>(coef[i], n[i], q0[i], q1[i], start, stop_nan);
        ++i;
      }
    }
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
