// EmbeddingBag on float32 tables (F.embedding_bag; python/forgegrad/ops/embedding_bag.py): bags are runs
// [bag_starts[b], bag_starts[b + 1]) of the positions of `idx`; positions holding padding_idx (>= 0) are left out.
//
// Every output element is computed by one fixed sequence of operations, whichever thread owns it and whichever
// instruction set runs it (element-wise loops, no lane reductions, no fused multiply-add: the build has
// -ffp-contract=off), so the bits are the same at any thread count and on every SIMD path:
// - forward sum / mean: each bag's rows (times per_sample_weights) added in position order in float64, divided
//   by the bag's count (mean) and rounded once; bags split over threads.
// - forward max: the first position holding the maximum, per column, by torch 2.13's CPU rule: a later entry
//   replaces the running maximum only when it compares greater, so a NaN is kept when it is the bag's first kept
//   entry and skipped anywhere else.
// - backward sum / mean: grad_weight[v] sums grad[bag of p] * scale[p] over the positions p of row v in
//   ascending order (the binding groups positions by row with a stable counting sort); rows split over threads.
// - backward max: grad[b, c] goes to grad_weight[rows[b, c], c] (the row of the maximum's position, -1: none),
//   bags in ascending order; columns split.
// - per_sample_weights' gradient: one dot product per position, in float64 with 8 fixed partial sums.
// Only bind_embedding_bag.cpp calls these kernels (its FG_KERNEL declarations); it checks every index first and
// hands over its own copies of the indices it checked (the kernels run without the GIL).
#include <cstdint>
#include <vector>

#include "forgegrad/parallel.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// How many positions ahead a row is prefetched: the table's rows are read in random order.
constexpr int64_t kAhead = 4;

inline void prefetch_row(const float* row, int64_t D) {
  for (int64_t d = 0; d < D; d += 16) __builtin_prefetch(row + d);
}

}  // namespace

void embedding_bag_forward_f32(const float* weight, int64_t D, const int64_t* idx, const int64_t* bag_starts, int64_t B,
                               const float* psw, int mode, int64_t padding_idx, float* out, int64_t* counts,
                               int64_t* arg) {
  const int64_t n = bag_starts[B];
  const int64_t per_bag = D * (1 + (B ? n / B : 0));
  parallel_for_work(B, per_bag, [&](int64_t b0, int64_t b1) {
    std::vector<double> acc(mode == 2 ? 0 : static_cast<size_t>(D));
    std::vector<int32_t> at(mode == 2 ? static_cast<size_t>(D) : 0);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t s = bag_starts[b], e = bag_starts[b + 1];
      float* o = out + b * D;
      int64_t cnt = 0;
      if (mode == 2) {
        for (int64_t p = s; p < e; ++p) {
          if (p + kAhead < e) prefetch_row(weight + idx[p + kAhead] * D, D);
          if (idx[p] == padding_idx) continue;
          const float* w = weight + idx[p] * D;
          const int32_t rel = static_cast<int32_t>(p - s);
          if (cnt++ == 0) {
            for (int64_t d = 0; d < D; ++d) {
              o[d] = w[d];
              at[d] = rel;
            }
            continue;
          }
          for (int64_t d = 0; d < D; ++d) {
            const float v = w[d], m = o[d];
            // (m == m) changes nothing (v > NaN is false) but keeps this loop branch-free and vectorised: with
            // v > m alone the compilers emit a conditional store, twice as slow on random data
            const bool take = (m == m) & (v > m);
            o[d] = take ? v : m;
            at[d] = take ? rel : at[d];
          }
        }
        int64_t* a = arg + b * D;
        if (cnt == 0) {
          for (int64_t d = 0; d < D; ++d) {
            o[d] = 0.0f;
            a[d] = -1;
          }
        } else {
          for (int64_t d = 0; d < D; ++d) a[d] = s + at[d];
        }
      } else {
        double* ac = acc.data();
        for (int64_t d = 0; d < D; ++d) ac[d] = 0.0;
        for (int64_t p = s; p < e; ++p) {
          if (p + kAhead < e) prefetch_row(weight + idx[p + kAhead] * D, D);
          if (idx[p] == padding_idx) continue;
          ++cnt;
          const float* w = weight + idx[p] * D;
          if (psw) {
            const double sc = psw[p];  // float * float is exact in double
            for (int64_t d = 0; d < D; ++d) ac[d] += static_cast<double>(w[d]) * sc;
          } else {
            for (int64_t d = 0; d < D; ++d) ac[d] += static_cast<double>(w[d]);
          }
        }
        if (mode == 1 && cnt > 1) {
          const double c = static_cast<double>(cnt);
          for (int64_t d = 0; d < D; ++d) o[d] = static_cast<float>(ac[d] / c);
        } else {
          for (int64_t d = 0; d < D; ++d) o[d] = static_cast<float>(ac[d]);
        }
      }
      counts[b] = cnt;
    }
  });
}

void embedding_bag_backward_f32(const float* grad, int64_t D, const int64_t* bag_of, const float* scale,
                                const int64_t* row_starts, const int64_t* order, int64_t V, float* grad_weight) {
  const int64_t n = row_starts[V];
  parallel_for_work(V, D + (V ? n * D / V : 0), [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      float* o = grad_weight + v * D;
      for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
      for (int64_t q = row_starts[v]; q < row_starts[v + 1]; ++q) {
        const int64_t p = order[q];
        const float* g = grad + bag_of[p] * D;
        if (scale) {
          const float sc = scale[p];
          for (int64_t d = 0; d < D; ++d) o[d] += g[d] * sc;
        } else {
          for (int64_t d = 0; d < D; ++d) o[d] += g[d];
        }
      }
    }
  });
}

void embedding_bag_max_backward_f32(const float* grad, const int64_t* rows, int64_t B, int64_t D, int64_t V,
                                    float* grad_weight) {
  parallel_for_work(V, D, [&](int64_t v0, int64_t v1) {
    for (int64_t i = v0 * D; i < v1 * D; ++i) grad_weight[i] = 0.0f;
  });
  constexpr int64_t kCols = 16;  // one cache line of a row per part
  const int64_t blocks = (D + kCols - 1) / kCols;
  parallel_for_work(blocks, B * kCols, [&](int64_t c0, int64_t c1) {
    const int64_t lo = c0 * kCols, hi = c1 * kCols < D ? c1 * kCols : D;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t* r = rows + b * D;
      const float* g = grad + b * D;
      for (int64_t c = lo; c < hi; ++c) {
        if (r[c] >= 0) grad_weight[r[c] * D + c] += g[c];
      }
    }
  });
}

void embedding_bag_psw_backward_f32(const float* grad, const float* weight, int64_t D, const int64_t* idx,
                                    const int64_t* bag_of, int64_t n, int64_t padding_idx, float* grad_psw) {
  parallel_for_work(n, D, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      if (idx[p] == padding_idx) {
        grad_psw[p] = 0.0f;
        continue;
      }
      const float* g = grad + bag_of[p] * D;
      const float* w = weight + idx[p] * D;
      double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t d = 0;
      for (; d + 8 <= D; d += 8) {
        for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(g[d + j]) * static_cast<double>(w[d + j]);
      }
      for (int j = 0; d < D; ++d, ++j) acc[j] += static_cast<double>(g[d]) * static_cast<double>(w[d]);
      const double lo = (acc[0] + acc[1]) + (acc[2] + acc[3]), hi = (acc[4] + acc[5]) + (acc[6] + acc[7]);
      grad_psw[p] = static_cast<float>(lo + hi);
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
