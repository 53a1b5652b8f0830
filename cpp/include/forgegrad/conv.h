// 2-D convolution, NCHW float32: forward and the three gradients.
//   x is (N, C, H, W), weight is (OC, C / groups, KH, KW), bias is (OC,), y is (N, OC, OH, OW).
// Padding may differ on each side (padding="same" with an even kernel extent pads one more on the
// bottom/right, as torch does). The caller (cpp/bindings/bind_conv.cpp, the one place the geometry
// is resolved and validated, for Python too) guarantees: every size >= 1 (N may be 0),
// strides/dilations >= 1, paddings >= 0, C and OC divisible by groups, OH, OW >= 1, and sizes
// small enough that no index or workspace size computed from them overflows int64.
//
// Algorithm (cpp/kernels/per_isa/conv*.cpp): 3x3 stride-1 undilated layers with >= 16 channels in and
// out per group use Winograd F(2x2, 3x3) for all three passes (conv_winograd.cpp). Other stride-1
// layers run as a direct convolution over a zero-padded copy of each image, where output pixel
// (oh, ow) lives at flat index oh * Wp + ow so that every (ic, kh, kw) tap is one contiguous row of
// the padded image; larger strides go through im2col. All feed the register-blocked micro-kernels
// of conv_tile.h. The weight gradient of non-Winograd layers with >= 32 output channels and >= 32
// taps (Cg * KH * KW) per group is instead one GEMM over the whole batch (im2col of every image,
// in fixed blocks of columns, through sgemm; strided KW 2..4 layers build the im2col's pixel rows slice by
// slice into a scratch the GEMM microkernel reads in place: conv_wgrad.cpp). Results are bit-identical
// for any thread count.
#pragma once
#include <cstdint>

#include "forgegrad/checked.h"
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

// Geometry along one axis, in checked arithmetic (checked.h). Each returns nullptr on success, or
// the name of the argument whose size made a step overflow, for the caller's error message. The
// caller has checked in >= 0, pads >= 0, k >= 1, stride >= 1, dil >= 1.

// The argument to blame when in + pads + (dilated kernel) + stride overflows: the largest term.
inline const char* conv_blame(int64_t in, int64_t pads, int64_t extent, int64_t stride) {
  if (pads >= in && pads >= extent && pads >= stride) return "padding";
  if (extent >= in && extent >= stride) return "kernel_size";
  return stride >= in ? "stride" : "input";
}

// *out = the output extent, or 0 when the dilated kernel does not fit the padded input. Also
// checks in + pads + extent + stride, the furthest any kernel's index arithmetic reaches.
inline const char* conv_out_size(int64_t in, int64_t pad_lo, int64_t pad_hi, int64_t k, int64_t stride, int64_t dil,
                                 int64_t* out) {
  int64_t pads, padded, extent, reach;
  if (!checked_add(pad_lo, pad_hi, &pads) || !checked_add(in, pads, &padded)) return "padding";
  if (!window_extent(k, dil, &extent)) return window_blame(k, dil);
  if (!checked_add(padded, extent, &reach) || !checked_add(reach, stride, &reach))
    return conv_blame(in, pads, extent, stride);
  *out = padded < extent ? 0 : (padded - extent) / stride + 1;
  return nullptr;
}

// torch's padding="same" (stride 1): total dil * (k - 1), the odd pixel on the bottom/right.
inline const char* conv_same_padding(int64_t k, int64_t dil, int64_t* lo, int64_t* hi) {
  int64_t total;
  if (!checked_mul(dil, k - 1, &total)) return window_blame(k, dil);
  *lo = total / 2;
  *hi = total - *lo;
  return nullptr;
}

// Keras' padding="same" for any stride: the output has ceil(in / stride) positions, and the total
// padding that needs, max((out - 1) * stride + extent - in, 0), is split as torch splits it.
inline const char* keras_same_padding(int64_t in, int64_t k, int64_t stride, int64_t dil, int64_t* lo, int64_t* hi) {
  const int64_t out = in / stride + (in % stride != 0);
  int64_t extent, total;
  if (!window_extent(k, dil, &extent)) return window_blame(k, dil);
  // (out - 1) * stride < in cannot overflow; its sum with the extent can
  if (!checked_add(out > 0 ? (out - 1) * stride : 0, extent, &total)) return window_blame(k, dil);
  total = total > in ? total - in : 0;
  *lo = total / 2;
  *hi = total - *lo;
  return nullptr;
}

// y = act(conv(x, weight) + bias); bias may be null; act an fg::ActOp (alpha: leaky_relu's slope), -1
// for none: applied to each block of y as it is written, the same bits as act_forward over y after.
// pool2x2: y is instead the 2x2 / stride 2 max pool (floor) of that, (N, OC, OH / 2, OW / 2), each
// block pooled while in cache, the same bits as max_pool2d_forward after (the full-size output is
// never written).
// packed: the kernels' Winograd transform from conv2d_winograd_pack under the same ISA (a frozen
// model's), or null: used where the Winograd path runs, which it does not choose (same bits).
FG_KERNEL(void, conv2d_forward,
          (const Conv2dGeom& g, const float* x, const float* weight, const float* bias, float* y, int act, float alpha,
           bool pool2x2, const float* packed),
          (g, x, weight, bias, y, act, alpha, pool2x2, packed))
// The Winograd transform of kernels (OC, Cg, KH, KW) in groups, in the layout the active ISA's
// forward reads: returns its size in floats (0: such kernels never run Winograd), written to U
// unless U is null.
FG_KERNEL(int64_t, conv2d_winograd_pack,
          (int64_t OC, int64_t Cg, int64_t KH, int64_t KW, int64_t groups, const float* weight, float* U),
          (OC, Cg, KH, KW, groups, weight, U))
// grad_x (N, C, H, W) from weight and grad_y (N, OC, OH, OW); grad_x is overwritten.
FG_KERNEL(void, conv2d_backward_input, (const Conv2dGeom& g, const float* weight, const float* grad_y, float* grad_x),
          (g, weight, grad_y, grad_x))
// grad_weight (OC, C / groups, KH, KW) and grad_bias (OC,) summed over the batch; either may be
// null (not computed). Both are overwritten.
FG_KERNEL(void, conv2d_backward_weight,
          (const Conv2dGeom& g, const float* x, const float* grad_y, float* grad_weight, float* grad_bias),
          (g, x, grad_y, grad_weight, grad_bias))

// Transposed convolution with kernel == stride (windows that do not overlap): cols (B, KD, KH, KW, D, H, W)
// (one sgemm's rows per tap) <-> out (B, D * KD, H * KH, W * KW), out[b, d * KD + a, h * KH + e, w * KW + c] =
// cols[b, a, e, c, d, h, w]. gather: the reverse copy (out read, cols written). A portable copy (conv_taps.cpp),
// the same bits at any thread count.
void conv_taps_interleave(const float* src, float* dst, int64_t B, const int64_t* spatial, const int64_t* kernel,
                          bool gather);

}  // namespace fg
