// The elementwise activations beyond activation.h's fused set (elu / selu / celu, softplus, mish,
// logsigmoid, hardsigmoid, hardswish, softsign, tanhshrink, hardtanh / relu6, softshrink, hardshrink,
// threshold), forward and backward, on contiguous
// float32 buffers of n elements. They are not conv / linear epilogues (activation.h's codes are),
// hence their own codes. Multithreaded over fixed 1024-element blocks: bit-identical for any thread
// count. Edge values (NaN, +-inf, +-0) and the gradients at kinks are torch's (see
// python/forgegrad/ops/activation_more.py, activation_smooth.py, activation_hard.py).
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

// `p` holds up to three float parameters per op (unused ones ignored).
enum PwOp : int {
  // forward x < 0 ? negcoef expm1(input_scale x) : scale x, p = scale, negcoef, input_scale; backward from x
  // g (x <= 0 ? exp(input_scale x) coef : scale), p = scale, coef, input_scale
  kPwElu = 0,
  kPwEluFromOutput,  // backward only, from y (elu, alpha >= 0): g (y <= 0 ? y + alpha : 1), p = alpha
  kPwSoftplus,       // beta x > threshold ? x : log1p(exp(beta x)) / beta, p = beta, threshold
  kPwMish,           // x tanh(softplus(x))
  kPwLogsigmoid,     // min(x, 0) - log1p(exp(-|x|))
  kPwHardsigmoid,    // clip(x + 3, 0, 6) / 6
  kPwHardswish,      // x clip(x + 3, 0, 6) / 6
  kPwSoftsign,       // x / (1 + |x|)
  kPwTanhshrink,     // x - tanh(x)
  kPwHardtanh,       // min(max(x, lo), hi); gradient g strictly inside (lo, hi); p = lo, hi
  kPwSoftshrink,     // x - l above l, x + l below -l, else 0; gradient g outside [-l, l]; p = l
  kPwHardshrink,     // x outside [-l, l], else 0; gradient g outside [-l, l]; p = l
  kPwThreshold,      // x <= threshold ? value : x; gradient 0 where x <= threshold; p = threshold, value
  kPwCount
};

inline constexpr const char* kPwNames[kPwCount] = {
    "ELU",      "ELU_FROM_OUTPUT", "SOFTPLUS", "MISH",       "LOGSIGMOID", "HARDSIGMOID", "HARDSWISH",
    "SOFTSIGN", "TANHSHRINK",      "HARDTANH", "SOFTSHRINK", "HARDSHRINK", "THRESHOLD"};

// Codes without a forward (their backward reads the output another code's forward wrote).
inline bool pw_forward_exists(int op) { return op >= 0 && op < kPwCount && op != kPwEluFromOutput; }

// y[i] = f(x[i]); y may alias x.
FG_KERNEL(void, pw_forward, (int op, const float* x, float* y, int64_t n, float p0, float p1, float p2),
          (op, x, y, n, p0, p1, p2))

// dx[i] = g[i] f'(.) from saved[i]: the forward input x (the forward output y for kPwEluFromOutput).
// dx may alias g or saved.
FG_KERNEL(void, pw_backward,
          (int op, const float* g, const float* saved, float* dx, int64_t n, float p0, float p1, float p2),
          (op, g, saved, dx, n, p0, p1, p2))

}  // namespace fg
