// Layer normalisation and RMS normalisation over the last D elements of each row of a row-major
// (rows, D) float32 buffer (torch's normalized_shape, flattened), forward and backward:
//   layer_norm: y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps), var biased
//               (torch.nn.functional.layer_norm; mean and rstd are what torch.native_layer_norm saves)
//   rms_norm:   y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps)   (torch.nn.functional.rms_norm)
// weight / bias may be null (no affine part). D >= 1.
//
// Accuracy: the row mean is summed as sum(x - x[0]) and kept as a float pair (hi + lo) while the
// variance is summed over ((x - hi) - lo)^2, so a large common offset (1e4 + noise) costs no
// precision (torch's float Welford loses ~1e-3 absolute there). Sums run in float vector
// accumulators over blocks of 1024 elements, block sums added in double.
//
// Threads: rows are split across threads, each row reduced by one thread in a fixed order. The
// backward's column sums (grad_weight, grad_bias) are accumulated per fixed chunk of rows (the
// chunking depends on rows only) and the chunk partials added in chunk order, so every result is
// bit-identical for any thread count.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

// y (rows, D); mean, rstd (rows). y may alias x.
FG_KERNEL(void, layer_norm_forward,
          (const float* x, const float* weight, const float* bias, int64_t rows, int64_t D, float eps, float* y,
           float* mean, float* rstd),
          (x, weight, bias, rows, D, eps, y, mean, rstd))

// From grad_y, x and the saved mean / rstd: grad_x (rows, D), grad_weight and grad_bias (D); each
// output may be null (not needed). The gradient uses the exact row mean of x: the saved float mean
// is only a starting point (its rounding error is measured on the row and removed), so gradients
// stay accurate at large offsets. grad_x may alias grad_y.
FG_KERNEL(void, layer_norm_backward,
          (const float* grad_y, const float* x, const float* mean, const float* rstd, const float* weight,
           int64_t rows, int64_t D, float* grad_x, float* grad_weight, float* grad_bias),
          (grad_y, x, mean, rstd, weight, rows, D, grad_x, grad_weight, grad_bias))

// y (rows, D); rstd (rows). y may alias x.
FG_KERNEL(void, rms_norm_forward,
          (const float* x, const float* weight, int64_t rows, int64_t D, float eps, float* y, float* rstd),
          (x, weight, rows, D, eps, y, rstd))

// grad_x (rows, D) and grad_weight (D), either may be null. grad_x may alias grad_y.
FG_KERNEL(void, rms_norm_backward,
          (const float* grad_y, const float* x, const float* rstd, const float* weight, int64_t rows, int64_t D,
           float* grad_x, float* grad_weight),
          (grad_y, x, rstd, weight, rows, D, grad_x, grad_weight))

}  // namespace fg
