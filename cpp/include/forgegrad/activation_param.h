// The activations with a parameter tensor or a second input half: prelu (a slope per channel), glu (one half of
// the input gates the other) and rrelu in training (a random slope per element, drawn by the caller), forward
// and backward on contiguous float32 buffers. Elementwise results do not depend on the thread count; prelu's
// weight gradient is a reduction in a fixed order (see per_isa/activation_param.cpp), so it does not either.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

// x viewed as (outer, C, inner), w of C floats (C = 1: one slope for every element):
// y = x > 0 ? x : w[c] x. y may alias x.
FG_KERNEL(void, prelu_forward, (const float* x, const float* w, float* y, int64_t outer, int64_t C, int64_t inner),
          (x, w, y, outer, C, inner))

// dx = x > 0 ? g : w[c] g (dx may be null, or alias g);
// dw[c] = sum over (outer, inner) of (x > 0 ? 0 : g x), the products rounded to float and summed in float64 over a
// fixed blocking (dw may be null).
FG_KERNEL(void, prelu_backward,
          (const float* g, const float* x, const float* w, float* dx, float* dw, int64_t outer, int64_t C,
           int64_t inner),
          (g, x, w, dx, dw, outer, C, inner))

// x viewed as (outer, 2, n), a = x[:, 0], b = x[:, 1]: y (outer, n) = a sigmoid(b).
FG_KERNEL(void, glu_forward, (const float* x, float* y, int64_t outer, int64_t n), (x, y, outer, n))

// g (outer, n); dx (outer, 2, n): dx[:, 0] = s g, dx[:, 1] = (1 - s) s a g, s = sigmoid(b) (torch's association).
FG_KERNEL(void, glu_backward, (const float* g, const float* x, float* dx, int64_t outer, int64_t n),
          (g, x, dx, outer, n))

// rrelu in training: noise holds a uniform draw on entry and the slope actually used on return (x <= 0 ? draw : 1,
// NaN x: 1); y = x noise. y may alias x.
FG_KERNEL(void, rrelu_train_forward, (const float* x, float* noise, float* y, int64_t n), (x, noise, y, n))

}  // namespace fg
