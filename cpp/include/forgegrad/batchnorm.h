// Batch normalisation over the channel axis, float32. x is viewed as (N, C, L): L = 1 for
// (N, C) input, L for (N, C, L), H * W for (N, C, H, W).
//   training: normalise with the batch mean and biased variance; save_mean / save_invstd get them
//     (invstd = 1 / sqrt(var + eps)); running stats (when given) become
//     (1 - momentum) * running + momentum * batch, with the UNBIASED variance (as torch).
//   evaluation: normalise with running_mean / running_var; save_mean / save_invstd get those
//     (so the backward pass takes the same arguments in both modes).
// weight / bias may be null (affine=False). Per-channel sums run in a fixed order with double
// accumulators: bit-identical for any thread count.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

FG_KERNEL(void, batch_norm_forward,
          (int64_t N, int64_t C, int64_t L, const float* x, const float* weight, const float* bias, float* running_mean,
           float* running_var, bool training, float momentum, float eps, float* y, float* save_mean,
           float* save_invstd),
          (N, C, L, x, weight, bias, running_mean, running_var, training, momentum, eps, y, save_mean, save_invstd))

// grad_x (may be null), grad_weight and grad_bias (may be null) from grad_y, x and the saved
// statistics. training selects the batch-statistics formula (the mean and variance depend on x).
FG_KERNEL(void, batch_norm_backward,
          (int64_t N, int64_t C, int64_t L, const float* x, const float* grad_y, const float* weight,
           const float* save_mean, const float* save_invstd, bool training, float* grad_x, float* grad_weight,
           float* grad_bias),
          (N, C, L, x, grad_y, weight, save_mean, save_invstd, training, grad_x, grad_weight, grad_bias))

}  // namespace fg
