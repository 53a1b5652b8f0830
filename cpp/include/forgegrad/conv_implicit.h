// The 2-D conv forward as an implicit GEMM (cpp/kernels/per_isa/conv_implicit.cpp): sgemm's tiles with B
// panels built straight from the image (stride, padding, dilation in the packing), no im2col buffer.
// conv2d_forward routes the strided shapes where it measured faster; the binding calls it directly.
#pragma once
#include <cstdint>

#include "forgegrad/conv.h"
#include "forgegrad/dispatch.h"

namespace fg {

// Whether the batch fits the kernel's int32 gather offsets (N * C * H * W < 2^31).
inline bool conv2d_implicit_supported(const Conv2dGeom& g) { return g.N * g.C * g.H * g.W < (int64_t(1) << 31); }

// y (N, OC, OH, OW) = act(conv(x, weight) + bias), bias may be null, act -1 for none (alpha: leaky_relu's
// slope), with sgemm's packed-path arithmetic: the same bits at any thread count. Needs
// conv2d_implicit_supported(g).
FG_KERNEL(void, conv2d_forward_implicit,
          (const Conv2dGeom& g, const float* x, const float* weight, const float* bias, float* y, int act, float alpha),
          (g, x, weight, bias, y, act, alpha))

// The same y by a direct kernel with output channels along the vector lanes (conv_direct_ocv.cpp): each output
// one fma chain over (input channel, kernel row, kernel column), padding taps skipped, the same bits at any
// thread count. AVX-512 with output channels per group a multiple of 16 and column stride <= 2; elsewhere it
// runs conv2d_forward_implicit. Needs conv2d_implicit_supported(g).
FG_KERNEL(void, conv2d_forward_ocv,
          (const Conv2dGeom& g, const float* x, const float* weight, const float* bias, float* y, int act, float alpha),
          (g, x, weight, bias, y, act, alpha))

}  // namespace fg
