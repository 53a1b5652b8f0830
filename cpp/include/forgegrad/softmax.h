// Softmax and log-softmax over the last axis of a row-major (rows, cols) float32 buffer.
// Numerically stable (the row maximum is subtracted before exp). Rows are split across threads;
// each row is computed by one thread with a fixed operation order, so results are bit-identical
// for any thread count. A NaN anywhere in a row makes the whole output row NaN (as torch).
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

// y = softmax(x) or, with log_softmax, y = x - max - log(sum(exp(x - max))). y may alias x.
FG_KERNEL(void, softmax_forward, (const float* x, float* y, int64_t rows, int64_t cols, bool log_softmax),
          (x, y, rows, cols, log_softmax))

// From the saved output y and the incoming gradient g (both (rows, cols)):
//   softmax:     dx = y * (g - sum(g * y))
//   log_softmax: dx = g - exp(y) * sum(g)
// dx may alias g.
FG_KERNEL(void, softmax_backward,
          (const float* g, const float* y, float* dx, int64_t rows, int64_t cols, bool log_softmax),
          (g, y, dx, rows, cols, log_softmax))

}  // namespace fg
