// 2-D pooling, NCHW float32: max (with argmax indices for backward), average, adaptive average.
//   x is (N, C, H, W); y and indices are (N, C, OH, OW). indices[...] is the flat position
//   h * W + w of the maximum inside its (H, W) plane, as torch returns it.
// The bindings (cpp/bindings/bind_pool.cpp) validate the geometry (the one place it is checked,
// for Python too), including sizes small enough that no index computed from them overflows; the
// kernels (cpp/kernels/pool.cpp) work plane by plane, one plane per task, so results do not depend
// on the thread count.
#pragma once
#include <cstdint>

#include "forgegrad/checked.h"
#include "forgegrad/dispatch.h"

namespace fg {

struct Pool2dGeom {
  int64_t N, C, H, W;
  int64_t KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t OH, OW;
};

// torch's pooling_output_shape: floor or ceil mode; in ceil mode the last window must start
// inside the input or its left padding. In checked arithmetic (checked.h): returns nullptr and sets
// *out (0 when the window does not fit), or the name of the argument whose size overflows int64
// (in + 2 * pad + extent + stride, the furthest the kernels' window arithmetic reaches, must fit).
// The caller has checked in >= 0, 0 <= pad <= k / 2, k >= 1, stride >= 1, dil >= 1.
inline const char* pool_out_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil, bool ceil_mode,
                                 int64_t* out) {
  int64_t padded, extent, reach;
  if (!checked_add(in, pad, &padded) || !checked_add(padded, pad, &padded)) return "padding";
  if (!window_extent(k, dil, &extent)) return window_blame(k, dil);
  if (!checked_add(padded, extent, &reach) || !checked_add(reach, stride, &reach))
    return stride > extent ? "stride" : "kernel_size";
  const int64_t num = padded - extent + (ceil_mode ? stride - 1 : 0);
  if (num < 0) {
    *out = 0;
    return nullptr;
  }
  int64_t o = num / stride + 1;
  if (ceil_mode && (o - 1) * stride >= in + pad) --o;
  *out = o;
  return nullptr;
}

// Ties keep the first maximum in window order; NaN propagates (as torch).
// indices may be null (inference: the values alone)
void max_pool2d_forward(const Pool2dGeom& g, const float* x, float* y, int64_t* indices);
// float64: the same general loop (no 2x2 fast path)
void max_pool2d_forward(const Pool2dGeom& g, const double* x, double* y, int64_t* indices);

// One plane of the 2x2 / stride 2 pool whose windows all lie inside the plane (W columns, OH x OW
// outputs), per ISA (cpp/kernels/per_isa/pool_max2x2.cpp).
FG_KERNEL(void, max_pool2x2_plane, (const float* xs, int64_t W, int64_t OH, int64_t OW, float* ys, int64_t* is),
          (xs, W, OH, OW, ys, is))
// 3-D max pooling, NCDHW float32, with int64 indices d * H * W + h * W + w per (D, H, W) volume
// (torch's). The caller sizes OD, OH, OW (torch's formula, floor or ceil mode); every tap outside
// the volume is skipped, so no geometry reads outside it. A window with no tap inside gets -inf and
// the index of its first tap past the padding, as torch's.
struct Pool3dGeom {
  int64_t N, C, D, H, W;
  int64_t KD, KH, KW, sd, sh, sw, pd, ph, pw, dd, dh, dw;
  int64_t OD, OH, OW;
};
void max_pool3d_forward(const Pool3dGeom& g, const float* x, float* y, int64_t* indices);
// One (n, c) volume of it, per ISA (cpp/kernels/per_isa/pool_max3d.cpp).
FG_KERNEL(void, max_pool3d_volume, (const Pool3dGeom& g, const float* xs, float* ys, int64_t* is), (g, xs, ys, is))
// grad_x (overwritten) += grad_y at the saved indices.
void max_pool2d_backward(const Pool2dGeom& g, const float* grad_y, const int64_t* indices, float* grad_x);
void max_pool2d_backward(const Pool2dGeom& g, const double* grad_y, const int64_t* indices, double* grad_x);
// divisor_override <= 0: none. (dilation is unused for average pooling.)
void avg_pool2d_forward(const Pool2dGeom& g, const float* x, float* y, bool count_include_pad,
                        int64_t divisor_override);
void avg_pool2d_backward(const Pool2dGeom& g, const float* grad_y, float* grad_x, bool count_include_pad,
                         int64_t divisor_override);
// Output cell (oh, ow) averages rows [floor(oh*H/OH), ceil((oh+1)*H/OH)) and likewise columns.
void adaptive_avg_pool2d_forward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW, const float* x,
                                 float* y);
void adaptive_avg_pool2d_backward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                  const float* grad_y, float* grad_x);
// Adaptive max pooling: torch's values and int64 indices h * W + w (the first maximum of the window in
// row-major order, or its last NaN).
void adaptive_max_pool2d_forward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW, const float* x,
                                 float* y, int64_t* indices);
// P consecutive planes of them, per ISA (cpp/kernels/per_isa/adaptive_pool.cpp; the order of each sum is
// described there). hb / wb: each output row's / column's window [start, end), 2 * OH / 2 * OW entries.
FG_KERNEL(void, adaptive_avg_pool2d_planes,
          (const float* x, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, const int64_t* hb,
           const int64_t* wb, float* y),
          (x, P, H, W, OH, OW, hb, wb, y))
FG_KERNEL(void, adaptive_avg_pool2d_backward_planes,
          (const float* gy, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, const int64_t* hb,
           const int64_t* wb, float* gx),
          (gy, P, H, W, OH, OW, hb, wb, gx))
FG_KERNEL(void, adaptive_max_pool2d_planes,
          (const float* x, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, const int64_t* hb,
           const int64_t* wb, float* y, int64_t* idx),
          (x, P, H, W, OH, OW, hb, wb, y, idx))

}  // namespace fg
