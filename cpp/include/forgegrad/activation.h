// Elementwise activations, forward and backward, on contiguous float32 buffers of n elements.
// Multithreaded over fixed 1024-element blocks; every element is computed by the same lane
// operations whoever owns it, so results are bit-identical for any thread count. NaN inputs give
// NaN outputs where torch's do (relu, leaky_relu, gelu, sigmoid, tanh, silu forward).
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

// Which activation (the `op` argument below). `alpha` is leaky_relu's negative_slope, else unused.
enum ActOp : int {
  kActRelu = 0,       // max(x, 0)
  kActLeakyRelu = 1,  // x > 0 ? x : alpha * x
  kActGelu = 2,       // x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))        (torch approximate='none')
  kActGeluTanh = 3,   // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (torch approximate='tanh')
  kActSigmoid = 4,    // 1 / (1 + exp(-x))
  kActTanh = 5,
  kActSilu = 6,       // x * sigmoid(x) = x / (1 + exp(-x))                (torch silu / swish)
  kActCount = 7
};

// The Python names of the codes (forgegrad._C.activation.RELU, ...), in code order: the binding
// exports every entry, so a new activation is added here and in the kernel file only.
inline constexpr const char* kActNames[kActCount] = {"RELU",    "LEAKY_RELU", "GELU", "GELU_TANH",
                                                     "SIGMOID", "TANH",       "SILU"};

// What backward reads besides the incoming gradient: the forward output y, or the input x.
inline bool act_backward_uses_output(int op) { return op == kActRelu || op == kActSigmoid || op == kActTanh; }

// y[i] = act(x[i]); y may alias x.
FG_KERNEL(void, act_forward, (int op, const float* x, float* y, int64_t n, float alpha), (op, x, y, n, alpha))

// dx[i] = g[i] * act'(.) computed from saved[i], which is y (relu, sigmoid, tanh) or x (leaky_relu,
// gelu, gelu_tanh, silu); see act_backward_uses_output. dx may alias g.
FG_KERNEL(void, act_backward, (int op, const float* g, const float* saved, float* dx, int64_t n, float alpha),
          (op, g, saved, dx, n, alpha))

// out[c] = sum_r x[r, c] for x (rows, cols) row-major (a bias gradient). Summed in row order,
// columns split across threads: bit-identical for any thread count.
FG_KERNEL(void, column_sums, (const float* x, int64_t rows, int64_t cols, float* out), (x, rows, cols, out))

}  // namespace fg
