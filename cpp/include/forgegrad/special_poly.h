// The three-term recurrences of torch.special's orthogonal polynomials (Chebyshev T/U/V/W and their
// shifted forms, Hermite H / He, Laguerre L, Legendre P), element by element in float64.
//
// python/forgegrad/ops/_special_poly.py chooses per element between closed forms, end-point values and
// the recurrence; this runs the recurrence part, whose cost is the degree n per element: torch runs it
// in C++, so a numpy loop over k (one Python iteration per degree, ~15 us each) took minutes where
// torch takes milliseconds at degrees of 10^6-10^7. Each step is the same float64 expression, in the
// same order, as the numpy loop's (no FMA: this file is built for baseline x86-64), so the bits are
// those of the numpy recurrence; elements are independent, so any thread count gives the same bits.
#pragma once
#include <cstdint>

namespace fg {

enum PolyRecurrence : int {
  kPolyChebyshev = 0,  // q_k = c q_{k-1} - q_{k-2}, c = 2y per element
  kPolyHermiteH = 1,   // q_k = (x + x) q_{k-1} - 2 (k - 1) q_{k-2}
  kPolyHermiteHe = 2,  // q_k = x q_{k-1} - (k - 1) q_{k-2}
  kPolyLaguerre = 3,   // q_k = ((2 (k - 1) + (1 - x)) q_{k-1} - (k - 1) q_{k-2}) / k
  kPolyLegendre = 4,   // q_k = ((2 (k - 1) + 1) x q_{k-1} - (k - 1) q_{k-2}) / k
  kPolyKinds = 5,
};

// For each i < count: from q_{start-2} = q0[i], q_{start-1} = q1[i], runs the step for k = start .. n[i]
// (n[i] an integer-valued double; none where n[i] < start), stopping early where q turns NaN when
// stop_nan; out[i] = the last q. coef[i] is the per-element value the step reads (c for Chebyshev, x
// otherwise).
void poly_recurrence(int kind, const double* coef, const double* n, const double* q0, const double* q1, int64_t count,
                     int64_t start, bool stop_nan, double* out);

}  // namespace fg
