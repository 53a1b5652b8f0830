// Shared host/device math: the per-element updates of the fused optimizers (torch.optim's
// formulas, operation for operation as torch's fused CPU Adam and single-tensor SGD). The CPU
// kernels (cpp/kernels/per_isa/optim.cpp) call these in their portable build and compute the same
// on vectors in their AVX paths; cuda/optim.cu calls them per thread.
#pragma once
#include "forgegrad/hd/common.h"

FG_HD_BEGIN

// ---- Adam / AdamW -------------------------------------------------------------------------------
// The step-independent constants, in float (as the kernels take them).
struct AdamParams {
  float lerp_coef;      // exp_avg.lerp_(grad, w): the weight w, or w - 1 (see lerp_from_start)
  float beta2;
  float sq_weight;      // 1 - beta2
  float eps;
  float weight_decay;   // coupled (Adam): grad += weight_decay * param
  float param_scale;    // decoupled (AdamW): param *= 1 - lr * weight_decay
  bool lerp_from_start; // torch's lerp: |w| < 0.5 ? start + w (end - start) : end + (w - 1)(end - start)
  bool maximize, coupled_wd, decoupled_wd;
};

// From the values of fg::AdamHyper: exp_avg_weight = 1 - beta1, exp_avg_sq_weight = 1 - beta2,
// weight_decay (0 when decoupled), param_scale = 1 - lr wd (1 when not decoupled).
FG_HD AdamParams adam_params(float exp_avg_weight, float beta2, float exp_avg_sq_weight, float eps, float weight_decay,
                             float param_scale, bool decoupled, bool maximize) {
  AdamParams c;
  c.lerp_from_start = fabs_(exp_avg_weight) < 0.5f;
  c.lerp_coef = c.lerp_from_start ? exp_avg_weight : exp_avg_weight - 1.0f;
  c.beta2 = beta2;
  c.sq_weight = exp_avg_sq_weight;
  c.eps = eps;
  c.weight_decay = weight_decay;
  c.param_scale = param_scale;
  c.maximize = maximize;
  c.coupled_wd = !decoupled && weight_decay != 0.0f;
  c.decoupled_wd = decoupled && param_scale != 1.0f;
  return c;
}

// One element (torch's fused CPU Adam):
//   g = maximize ? -g : g;  Adam: g += wd p;  AdamW: p *= 1 - lr wd
//   m = lerp(m, g, 1 - beta1);  v = v beta2 + (1 - beta2) g g;  [vmax = max(vmax, v)]
//   p = p - step_size m / (sqrt(v or vmax) / bias_correction2_sqrt + eps)
// step_size = lr / (1 - beta1^step) and bias_correction2_sqrt = sqrt(1 - beta2^step) are computed
// by the caller in double, as torch does. vmax is read and written only when amsgrad.
FG_HD void adam_update(float& p, float g, float& m, float& v, float& vmax, bool amsgrad, const AdamParams& c,
                       float step_size, float bias_correction2_sqrt) {
  if (c.maximize) g = -g;
  if (c.coupled_wd) g = fmadd(p, c.weight_decay, g);
  if (c.decoupled_wd) p = p * c.param_scale;
  float diff = g - m;
  m = fmadd(c.lerp_coef, diff, c.lerp_from_start ? m : g);
  v = v * c.beta2 + (c.sq_weight * g) * g;
  float s = v;
  if (amsgrad) {
    vmax = vmax1(vmax, v);
    s = vmax;
  }
  float denom = sqrt_(s) / bias_correction2_sqrt + c.eps;
  p = p - (step_size * m) / denom;
}

// ---- SGD ----------------------------------------------------------------------------------------
struct SgdParams {
  float neg_lr;               // param += neg_lr * grad
  float momentum;
  float one_minus_dampening;  // buf = buf momentum + (1 - dampening) grad
  float weight_decay;
  bool maximize, use_wd, use_momentum, nesterov;
};

FG_HD SgdParams sgd_params(float neg_lr, float momentum, float one_minus_dampening, float weight_decay, bool nesterov,
                           bool maximize) {
  SgdParams c;
  c.neg_lr = neg_lr;
  c.momentum = momentum;
  c.one_minus_dampening = one_minus_dampening;
  c.weight_decay = weight_decay;
  c.maximize = maximize;
  c.use_wd = weight_decay != 0.0f;
  c.use_momentum = momentum != 0.0f;
  c.nesterov = nesterov;
  return c;
}

// torch's single-tensor SGD:  g = maximize ? -g : g;  g = g + wd p;
//   buf = first ? g : buf momentum + (1 - dampening) g;  g = nesterov ? g + momentum buf : buf
//   p = p + (-lr) g
// buf is read only when momentum is on and init is false; written when momentum is on.
FG_HD void sgd_update(float& p, float g, float& buf, bool init, const SgdParams& c) {
  if (c.maximize) g = -g;
  if (c.use_wd) g = fmadd(p, c.weight_decay, g);
  if (c.use_momentum) {
    buf = init ? g : fmadd(g, c.one_minus_dampening, buf * c.momentum);
    g = c.nesterov ? fmadd(buf, c.momentum, g) : buf;
  }
  p = fmadd(g, c.neg_lr, p);
}

FG_HD_END
