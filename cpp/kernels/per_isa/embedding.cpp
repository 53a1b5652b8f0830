// Embedding backward: grad_weight[v] = sum of grad rows p with indices[p] == v, in ascending p.
// The binding groups the positions by row first (a stable counting sort: `starts` (V + 1) and
// `order` (n), compiled once outside per_isa/); here rows are split over threads and each row sums
// its positions in that fixed order, so the result is bit-identical for any thread count (unlike a
// scatter-add with atomics). Rows with no position, and padding_idx (>= 0), get 0.
#include <cstdint>

#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {

void embedding_backward(const float* grad, const int64_t* starts, const int64_t* order, int64_t V, int64_t D,
                        int64_t padding_idx, float* grad_weight) {
  const int64_t n = starts[V];
  parallel_for_work(V, D + (V ? n * D / V : 0), [&](int64_t b, int64_t e) {
    for (int64_t v = b; v < e; ++v) {
      float* out = grad_weight + v * D;
      for (int64_t d = 0; d < D; ++d) out[d] = 0.0f;
      if (v == padding_idx) continue;
      for (int64_t p = starts[v]; p < starts[v + 1]; ++p) {
        const float* g = grad + order[p] * D;
        int64_t d = 0;
        for (; d + W <= D; d += W) vstore(out + d, vadd(vload(out + d), vload(g + d)));
        if (d < D) {
          const int r = static_cast<int>(D - d);
          vstore_n(out + d, vadd(vload_n(out + d, r), vload_n(g + d, r)), r);
        }
      }
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
