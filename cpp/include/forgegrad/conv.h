// 2-D convolution, NCHW float32: forward and the three gradients.
//   x is (N, C, H, W), weight is (OC, C / groups, KH, KW), bias is (OC,), y is (N, OC, OH, OW).
// Padding may differ on each side (padding="same" with an even kernel extent pads one more on the
// bottom/right, as torch does). The caller (cpp/bindings/bind_conv.cpp) validates the geometry:
// every size >= 1 (N may be 0), strides/dilations >= 1, paddings >= 0, C and OC divisible by
// groups, and OH, OW >= 1.
//
// Algorithm (cpp/kernels/multi/conv*.cpp): 3x3 stride-1 undilated layers with >= 16 channels in and
// out per group use Winograd F(2x2, 3x3) for all three passes (conv_winograd.cpp). Other stride-1
// layers run as a direct convolution over a zero-padded copy of each image, where output pixel
// (oh, ow) lives at flat index oh * Wp + ow so that every (ic, kh, kw) tap is one contiguous row of
// the padded image; larger strides go through im2col. All feed the register-blocked micro-kernels
// of conv_tile.h. Results are bit-identical for any thread count.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

struct Conv2dGeom {
  int64_t N, C, H, W;  // input
  int64_t OC, KH, KW;  // weight (OC, C / groups, KH, KW)
  int64_t groups;
  int64_t stride_h, stride_w, dil_h, dil_w;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  int64_t OH, OW;  // output
};

// Output extent along one axis, or a value < 1 when the kernel does not fit the padded input.
inline int64_t conv_out_size(int64_t in, int64_t pad_lo, int64_t pad_hi, int64_t k, int64_t stride,
                             int64_t dil) {
  int64_t span = in + pad_lo + pad_hi - dil * (k - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

// y = conv(x, weight) + bias; bias may be null.
FG_KERNEL(void, conv2d_forward,
          (const Conv2dGeom& g, const float* x, const float* weight, const float* bias, float* y),
          (g, x, weight, bias, y))
// grad_x (N, C, H, W) from weight and grad_y (N, OC, OH, OW); grad_x is overwritten.
FG_KERNEL(void, conv2d_backward_input,
          (const Conv2dGeom& g, const float* weight, const float* grad_y, float* grad_x),
          (g, weight, grad_y, grad_x))
// grad_weight (OC, C / groups, KH, KW) and grad_bias (OC,) summed over the batch; either may be
// null (not computed). Both are overwritten.
FG_KERNEL(void, conv2d_backward_weight,
          (const Conv2dGeom& g, const float* x, const float* grad_y, float* grad_weight,
           float* grad_bias),
          (g, x, grad_y, grad_weight, grad_bias))

}  // namespace fg
