// float64 kernels of a training step whose float32 kernels are written against the float SIMD
// vocabulary (simd.h), so that they cannot simply be instantiated for double: the Adam update, conv2d's
// im2col / col2im (the GEMMs stay numpy's dgemm), the LSTM cell's pointwise math and relu. Plain loops,
// compiled per ISA (cpp/kernels/per_isa/float64.cpp) with -ffp-contract=off: every element goes through
// the same IEEE operations on every ISA, and no output element is summed across threads (col2im sums a
// plane's taps in one fixed order inside one task), so results are identical at any thread count.
// Max pooling in float64 is pool.cpp's general loop, a template over the element type (pool.h).
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

// One float64 parameter of an Adam/AdamW step (torch.optim.Adam's single-tensor float64 math, operation
// for operation, as forgegrad.optim.adam's numpy path):
//   g = maximize ? -g : g;  Adam: g = g + wd * p;  AdamW: p = p * (1 - lr * wd)
//   m = m + (g - m) * (1 - beta1);  v = v * beta2 + (1 - beta2) * g * g;  [vmax = max(vmax, v)]
//   p = p - step_size * (m / (sqrt(v or vmax) / bc2_sqrt + eps))
struct Adam64Tensor {
  double* param;
  const double* grad;
  double* exp_avg;
  double* exp_avg_sq;
  double* max_exp_avg_sq;  // amsgrad only, else nullptr
  int64_t n;
  double step_size;        // lr / (1 - beta1^step)
  double bias_correction2_sqrt;
};

struct Adam64Hyper {
  double one_minus_beta1, beta2, one_minus_beta2, eps;
  double weight_decay;  // coupled (Adam): 0 = off
  double param_scale;   // decoupled (AdamW): 1 - lr * wd
  bool decoupled, maximize, amsgrad;
};

FG_KERNEL(void, adam_step_f64, (const Adam64Tensor* tensors, int64_t count, const Adam64Hyper& h), (tensors, count, h))

// conv2d geometry of one group-less im2col: x (N, C, H, W) -> cols (C*KH*KW, N*OH*OW), row (c, kh, kw),
// column (n, oh, ow); taps in the zero padding read 0.
struct Im2colGeom {
  int64_t N, C, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, OH, OW;
};

FG_KERNEL(void, im2col_f64, (const Im2colGeom& g, const double* x, double* cols), (g, x, cols))
// The adjoint: gx (N, C, H, W) = the sum of cols' entries at the positions im2col read them from (padding
// taps dropped); per (n, c) plane the taps are added in (kh, kw, oh, ow) order.
FG_KERNEL(void, col2im_f64, (const Im2colGeom& g, const double* cols, double* gx), (g, cols, gx))

// One LSTM time step's pointwise part, B rows of H, torch's gate order i, f, g, o:
//   a (B, 4H) pre-activations (x W_ih^T + b_ih + h W_hh^T + b_hh) -> act (B, 4H) = sigmoid(i, f, o), tanh(g),
//   c (B, H) = f * c_prev + i * g, tc (B, H) = tanh(c), h (B, H) = o * tc.
// tanh and sigmoid are the kernel's own vectorisable double versions, a few ulp from libm's (float64.cpp).
FG_KERNEL(void, lstm_cell_forward_f64,
          (int64_t B, int64_t H, const double* a, const double* c_prev, double* act, double* c, double* tc, double* h),
          (B, H, a, c_prev, act, c, tc, h))
// Its backward: dh (B, H) and dc (B, H, in/out: the cell gradient from step t + 1, replaced by the one
// flowing to step t - 1) -> d (B, 4H) the pre-activation gradients.
FG_KERNEL(void, lstm_cell_backward_f64,
          (int64_t B, int64_t H, const double* act, const double* c_prev, const double* tc, const double* dh,
           double* dc, double* d),
          (B, H, act, c_prev, tc, dh, dc, d))

// The 2x2 / stride 2 max pool of one (H, W) plane with every window inside it (pool.cpp's float64 fast path): the
// general loop's candidates, order and rule (greater or NaN wins), the same values and indices h * W + w.
FG_KERNEL(void, max_pool2x2_plane_f64, (const double* xs, int64_t W, int64_t OH, int64_t OW, double* ys, int64_t* is),
          (xs, W, OH, OW, ys, is))

// relu: y = max(x, 0) with NaN kept; its backward gx = y <= 0 ? 0 : g (torch's threshold_backward: g passes at NaN).
FG_KERNEL(void, relu_forward_f64, (const double* x, double* y, int64_t n), (x, y, n))
FG_KERNEL(void, relu_backward_f64, (const double* g, const double* y, double* gx, int64_t n), (g, y, gx, n))

}  // namespace fg
