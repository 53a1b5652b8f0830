// Optimizer updates (SGD, Adam, AdamW) and the reduction behind clip_grad_norm_.
//
// Every update is one fused, elementwise pass over parameter, gradient and optimizer state,
// following PyTorch's formulas (torch.optim single-tensor and CPU-fused paths) operation for
// operation. Each kernel takes a list of tensors ("multi-tensor"), splits all of them into
// fixed-size blocks and spreads the blocks over threads. An element's result never depends on
// which thread or which block holds it (full vectors and the masked tail run the same math), so
// results are bit-identical for any thread count.
//
// Scalars that depend on the step count (bias corrections) are computed by the caller in double,
// as torch does, and passed per tensor.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

// One parameter of an Adam/AdamW step; every array holds n floats, none overlaps another.
struct AdamTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  float* max_exp_avg_sq;        // amsgrad only, else nullptr
  int64_t n;
  float step_size;              // lr / (1 - beta1^step)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
};

struct AdamHyper {
  float exp_avg_weight;     // 1 - beta1: exp_avg.lerp_(grad, 1 - beta1)
  float beta2;              // exp_avg_sq * beta2 + (1 - beta2) * grad * grad
  float exp_avg_sq_weight;  // 1 - beta2
  float eps;
  float weight_decay;       // Adam (coupled): grad += weight_decay * param; 0 = off
  float param_scale;        // AdamW (decoupled): param *= 1 - lr * weight_decay; 1 = off
  bool decoupled;           // which of the two weight decays applies
  bool maximize;
  bool amsgrad;
};

// In place: param, exp_avg, exp_avg_sq (and max_exp_avg_sq) of tensors[0..count).
FG_KERNEL(void, adam_step, (const AdamTensor* tensors, int64_t count, const AdamHyper& h), (tensors, count, h))

// One parameter of an SGD step.
struct SgdTensor {
  float* param;
  const float* grad;
  float* momentum_buffer;  // nullptr when momentum == 0
  int64_t n;
  bool init_buffer;        // first step: momentum_buffer = grad (torch's clone), no decay
};

struct SgdHyper {
  float neg_lr;               // param += neg_lr * grad
  float momentum;
  float one_minus_dampening;  // buf = buf * momentum + (1 - dampening) * grad
  float weight_decay;         // grad += weight_decay * param; 0 = off
  bool nesterov;
  bool maximize;
};

FG_KERNEL(void, sgd_step, (const SgdTensor* tensors, int64_t count, const SgdHyper& h), (tensors, count, h))

// Partial reductions for vector norms over several tensors (clip_grad_norm_).
//   kind 0: sum |x|     kind 1: sum x*x     kind 2: max |x| (NaN if any element is NaN)
// Tensor i is cut into fg::reduce_chunks(ns[i]) chunks of fg::kReduceChunk elements; chunk
// results go to out[] in order (tensor 0's chunks first), each accumulated in a fixed order.
// The caller combines them in order (in double), which makes the total thread-count independent.
enum NormKind : int { kNormL1 = 0, kNormL2 = 1, kNormInf = 2 };
FG_KERNEL(void, norm_partials, (const float* const* xs, const int64_t* ns, int64_t count, int kind, double* out),
          (xs, ns, count, kind, out))

}  // namespace fg
