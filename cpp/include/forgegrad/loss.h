// Fused softmax cross-entropy over (N, C) logits with int64 class-index targets, torch's
// semantics (weight, ignore_index, label_smoothing). Rows split across threads, one thread per
// row: bit-identical for any thread count.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

// logits (N, C); target (N,) with values in [0, C) or == ignore_index (the caller checks);
// weight (C,) class weights or nullptr (all ones); weight_total = sum of weight (C if nullptr).
// Writes prob (N, C) = softmax(logits) (saved for backward) and loss (N,):
//   loss[i] = (1 - eps) * -w[t_i] * logp[i, t_i] + eps / C * -sum_c w[c] * logp[i, c]
// and loss[i] = 0 where t_i == ignore_index.
FG_KERNEL(void, cross_entropy_forward,
          (const float* logits, const int64_t* target, const float* weight, float weight_total, int64_t N, int64_t C,
           int64_t ignore_index, float label_smoothing, float* prob, float* loss),
          (logits, target, weight, weight_total, N, C, ignore_index, label_smoothing, prob, loss))

// dlogits (N, C) = a_i * d loss[i] / d logits[i, :], where a_i = grad_scale * grad_loss[i]
// (grad_loss may be nullptr: a_i = grad_scale). From the saved prob:
//   d loss[i]/d z[i, c] = prob[i, c] * ((1 - eps) w[t_i] + eps / C * weight_total)
//                         - (1 - eps) w[t_i] [c == t_i] - eps / C * w[c]
// Rows with t_i == ignore_index get 0. dlogits may alias prob.
FG_KERNEL(void, cross_entropy_backward,
          (const float* prob, const int64_t* target, const float* weight, float weight_total, int64_t N, int64_t C,
           int64_t ignore_index, float label_smoothing, const float* grad_loss, float grad_scale, float* dlogits),
          (prob, target, weight, weight_total, N, C, ignore_index, label_smoothing, grad_loss, grad_scale, dlogits))

}  // namespace fg
