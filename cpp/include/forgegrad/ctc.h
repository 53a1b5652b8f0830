// Connectionist temporal classification loss (Graves et al. 2006) on log-probabilities, with the
// semantics of torch.nn.functional.ctc_loss: the forward alpha recursion in log space gives each
// sample's negative log-likelihood, the backward beta recursion its gradient w.r.t. log_probs.
//
// One sample is one task (its recursion is sequential in time and latency-bound); the batch is spread
// over threads, and a sample's operations do not depend on which thread runs it: the same bits at
// any thread count. The recursions run in double whatever the element type F (float or double) of
// log_probs, and alpha is kept in double: float32 inputs lose nothing over hundreds of steps.
#pragma once
#include <cstdint>

namespace fg {

// The shape of one call; the binding checks every field before a kernel runs.
struct CtcProblem {
  int64_t T = 0, N = 0, C = 0;  // log_probs is (T, N, C), C-contiguous
  int64_t blank = 0;            // in [0, C)
  // sample b's labels are targets[target_offset[b] + k], k < target_length[b], each in [0, C) and
  // != blank
  const int64_t* targets = nullptr;
  const int64_t* target_offset = nullptr;  // (N,)
  const int64_t* input_length = nullptr;   // (N,), each in [0, T]
  const int64_t* target_length = nullptr;  // (N,), each >= 0
  // sample b's alpha, (input_length[b], 2 * target_length[b] + 1), starts at alpha_offset[b]; the
  // whole buffer holds alpha_offset[N - 1] + that last size doubles (ctc_alpha_offsets)
  const int64_t* alpha_offset = nullptr;
};

// nll (N,): each sample's negative log-likelihood; +inf where no alignment exists (a target longer
// than its input allows), 0 for an empty input with an empty target. alpha: the log-space forward
// variables backward needs, or nullptr (inference: two rows per sample, nothing kept).
template <class F>
void ctc_forward(const CtcProblem& p, const F* log_probs, double* nll, double* alpha);

// grad (T, N, C) = grad_nll[b] * d nll[b] / d log_probs[t, b, :], torch's formula
//   (exp(lp) - exp(log sum_{s: label(s) = c} alpha_t(s) beta_t(s) + nll - lp)) * grad_nll[b]
// for t < input_length[b] and 0 past it; every t gets 0 where zero_infinity and nll[b] (as F) is +inf.
template <class F>
void ctc_backward(const CtcProblem& p, const F* log_probs, const double* nll, const double* alpha,
                  const double* grad_nll, bool zero_infinity, F* grad);

extern template void ctc_forward<float>(const CtcProblem&, const float*, double*, double*);
extern template void ctc_forward<double>(const CtcProblem&, const double*, double*, double*);
extern template void ctc_backward<float>(const CtcProblem&, const float*, const double*, const double*, const double*,
                                         bool, float*);
extern template void ctc_backward<double>(const CtcProblem&, const double*, const double*, const double*, const double*,
                                          bool, double*);

}  // namespace fg
