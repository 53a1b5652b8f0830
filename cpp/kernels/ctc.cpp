// CTC loss forward (alpha) and backward (beta, gradient); see ctc.h. Portable C++: each step of the
// recursion depends on the previous one, so the time is in exp/log latency, not in arithmetic width.
//
// The formulas are torch's CPU kernel's (aten/src/ATen/native/LossCTC.cpp) term for term, evaluated in
// double: the same log-sum-exp (maximum subtracted, 0 when every term is -inf), the same states, the
// same order of the per-class sums, so that infinities and NaN in log_probs come out as torch's do.
// The only shortcut is skipping exp of an argument that is -inf, which is exactly 0.
#include "forgegrad/ctc.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "forgegrad/parallel.h"

namespace fg {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kInf = std::numeric_limits<double>::infinity();

// exp(x - m) in a log-sum-exp whose maximum is m, without the call where the result is known: 0 for
// x = -inf (for every m but NaN, and m is NaN only when the first term is, which makes the sum NaN
// anyway), 1 for the maximum itself (but for m = +inf: inf - inf is NaN, as in torch).
inline double exp_from(double x, double m) {
  if (x == kNegInf) return 0.0;
  if (x == m && m != kInf) return 1.0;
  return std::exp(x - m);
}

// log(sum) with log(0) = -inf without the call.
inline double log_of(double sum) { return sum == 0.0 ? kNegInf : std::log(sum); }

// log(exp(a) + exp(b) + exp(c)) with torch's maximum: the first, replaced by a later one only if
// greater, 0 if it is -inf.
inline double log_add3(double a, double b, double c) {
  double m = a;
  if (b > m) m = b;
  if (c > m) m = c;
  if (m == kNegInf) m = 0.0;
  return log_of(exp_from(a, m) + exp_from(b, m) + exp_from(c, m)) + m;
}

// The extended label sequence of one sample: blank, l1, blank, l2, ..., blank (L = 2 S + 1 states),
// and per state whether a path may enter it from two states back (a label different from the one
// before it: between equal labels the blank cannot be skipped).
struct Extended {
  std::vector<int64_t> label;
  std::vector<unsigned char> skip;
  int64_t S = 0, L = 1;

  Extended(const CtcProblem& p, int64_t b) : S(p.target_length[b]), L(2 * p.target_length[b] + 1) {
    label.assign(static_cast<size_t>(L), p.blank);
    skip.assign(static_cast<size_t>(L), 0);
    const int64_t* tg = p.targets + p.target_offset[b];
    for (int64_t k = 0; k < S; ++k) {
      label[2 * k + 1] = tg[k];
      skip[2 * k + 1] = k > 0 && tg[k] != tg[k - 1];
    }
  }
};

// About the cost of one sample (exp/log calls), for threads_for.
int64_t work_per_sample(const CtcProblem& p) {
  int64_t s_max = 0;
  for (int64_t b = 0; b < p.N; ++b) s_max = std::max(s_max, p.target_length[b]);
  return region_work(p.T, 8 * (2 * s_max + 1) + 2 * p.C);
}

// fn(b) for every sample: one task each (their lengths differ), or all on this thread when the whole
// batch is too little work to pay for waking the pool.
template <class Fn>
void over_samples(const CtcProblem& p, Fn&& fn) {
  const int64_t each = work_per_sample(p);
  if (region_work(p.N, each) < kMinParallelWork) {
    for (int64_t b = 0; b < p.N; ++b) fn(b);
    return;
  }
  parallel_tasks(p.N, each, fn);
}

// One sample's negative log-likelihood; alpha (input_length, L) is written when not null, else the
// recursion keeps two rows in `rows`.
template <class F>
double forward_sample(const CtcProblem& p, const F* log_probs, int64_t b, double* alpha) {
  const int64_t Tb = p.input_length[b];
  const Extended e(p, b);
  const int64_t L = e.L;
  if (Tb == 0) return e.S == 0 ? -0.0 : kInf;  // torch: -(log-likelihood 0) for an empty input and target
  std::vector<double> rows(alpha ? 0 : static_cast<size_t>(2 * L));
  auto row = [&](int64_t t) { return alpha ? alpha + t * L : rows.data() + (t & 1) * L; };
  const int64_t step = p.N * p.C;  // from one time step of log_probs to the next
  const F* x = log_probs + b * p.C;
  double* a0 = row(0);
  std::fill(a0, a0 + L, kNegInf);
  a0[0] = static_cast<double>(x[p.blank]);
  if (e.S > 0) a0[1] = static_cast<double>(x[e.label[1]]);
  for (int64_t t = 1; t < Tb; ++t) {
    const double* a = row(t - 1);
    double* n = row(t);
    const F* xt = x + t * step;
    for (int64_t s = 0; s < L; ++s) {
      const double la2 = s > 0 ? a[s - 1] : kNegInf;
      const double la3 = e.skip[s] ? a[s - 2] : kNegInf;
      n[s] = log_add3(a[s], la2, la3) + static_cast<double>(xt[e.label[s]]);
    }
  }
  const double* last = row(Tb - 1);
  if (e.S == 0) return -last[0];  // no label: the path ends in the only state
  const double l1 = last[L - 1], l2 = last[L - 2];
  double m = std::max(l1, l2);
  if (m == kNegInf) m = 0.0;
  return -(log_of(exp_from(l1, m) + exp_from(l2, m)) + m);
}

// lcab = log(exp(lcab) + exp(ab)) as torch accumulates it (lcab starts at -inf). Skipping ab = -inf
// changes nothing unless lcab is +inf (torch: NaN).
inline void log_accumulate(double& lcab, double ab) {
  if (lcab == kNegInf) {
    lcab = ab;
  } else if (ab != kNegInf || lcab == kInf) {
    const double m = std::max(lcab, ab);
    lcab = std::log(exp_from(lcab, m) + exp_from(ab, m)) + m;
  }
}

// grad row of time t: (exp(lp) - exp(lcab + nll - lp)) * gr, per class.
template <class F>
void finish_row(const F* x, const double* lcab, int64_t C, double nll, double gr, F* g) {
  for (int64_t c = 0; c < C; ++c) {
    const double lp = static_cast<double>(x[c]);
    const double z = lcab[c] + nll - lp;
    g[c] = static_cast<F>((std::exp(lp) - (z == kNegInf ? 0.0 : std::exp(z))) * gr);
  }
}

template <class F>
void backward_sample(const CtcProblem& p, const F* log_probs, int64_t b, double nll, const double* alpha, double gr,
                     bool zero_infinity, F* grad) {
  if (p.T == 0) return;  // nothing to write
  const int64_t step = p.N * p.C;
  const int64_t C = p.C;
  const F* x = log_probs + b * C;
  F* g = grad + b * C;
  const int64_t Tb = p.input_length[b];
  const bool zeroed = zero_infinity && static_cast<F>(nll) == std::numeric_limits<F>::infinity();
  for (int64_t t = zeroed ? 0 : Tb; t < p.T; ++t) std::fill(g + t * step, g + t * step + C, F(0));
  if (zeroed || Tb == 0) return;
  const Extended e(p, b);
  const int64_t L = e.L;
  std::vector<double> rows(static_cast<size_t>(2 * L)), lcab(static_cast<size_t>(C));
  auto row = [&](int64_t t) { return rows.data() + (t & 1) * L; };
  // the last step: beta is the log-probability of the two final states, -inf elsewhere
  {
    const int64_t t = Tb - 1;
    const F* xt = x + t * step;
    const double* at = alpha + t * L;
    double* bt = row(t);
    std::fill(bt, bt + L, kNegInf);
    std::fill(lcab.begin(), lcab.end(), kNegInf);
    bt[L - 1] = static_cast<double>(xt[p.blank]);
    lcab[p.blank] = at[L - 1] + bt[L - 1];
    if (e.S > 0) {  // a label, never the blank: no sum with the state above
      bt[L - 2] = static_cast<double>(xt[e.label[L - 2]]);
      lcab[e.label[L - 2]] = at[L - 2] + bt[L - 2];
    }
    finish_row(xt, lcab.data(), C, nll, gr, g + t * step);
  }
  for (int64_t t = Tb - 2; t >= 0; --t) {
    const F* xt = x + t * step;
    const double* at = alpha + t * L;
    const double* ob = row(t + 1);
    double* bt = row(t);
    std::fill(lcab.begin(), lcab.end(), kNegInf);
    for (int64_t s = L - 1; s >= 0; --s) {
      const double lb2 = s < L - 1 ? ob[s + 1] : kNegInf;
      const double lb3 = s < L - 2 && e.skip[s + 2] ? ob[s + 2] : kNegInf;
      bt[s] = log_add3(ob[s], lb2, lb3) + static_cast<double>(xt[e.label[s]]);
      log_accumulate(lcab[e.label[s]], at[s] + bt[s]);
    }
    finish_row(xt, lcab.data(), C, nll, gr, g + t * step);
  }
}

}  // namespace

template <class F>
void ctc_forward(const CtcProblem& p, const F* log_probs, double* nll, double* alpha) {
  over_samples(
      p, [&](int64_t b) { nll[b] = forward_sample(p, log_probs, b, alpha ? alpha + p.alpha_offset[b] : nullptr); });
}

template <class F>
void ctc_backward(const CtcProblem& p, const F* log_probs, const double* nll, const double* alpha,
                  const double* grad_nll, bool zero_infinity, F* grad) {
  over_samples(p, [&](int64_t b) {
    backward_sample(p, log_probs, b, nll[b], alpha + p.alpha_offset[b], grad_nll[b], zero_infinity, grad);
  });
}

template void ctc_forward<float>(const CtcProblem&, const float*, double*, double*);
template void ctc_forward<double>(const CtcProblem&, const double*, double*, double*);
template void ctc_backward<float>(const CtcProblem&, const float*, const double*, const double*, const double*, bool,
                                  float*);
template void ctc_backward<double>(const CtcProblem&, const double*, const double*, const double*, const double*, bool,
                                   double*);

}  // namespace fg
