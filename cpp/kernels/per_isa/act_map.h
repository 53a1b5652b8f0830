// The buffer loops of the elementwise activation kernels (activation.cpp, activation_more.cpp):
// y = f(x) and y = f(a, b) over n floats. Work is split in fixed 1024-element blocks so that thread
// ranges start on cache lines and every element is computed by the same lane operations whoever owns
// it (bits do not depend on the thread count); the last partial vector of a range goes through
// vload_n / vstore_n, which apply the same lane operations.
#pragma once
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace act_map {

// Local min/max: std::min<int64_t> would be a std template shared by the three ISA copies.
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

constexpr int64_t kBlock = 1024;

// Elements per thread below which another thread costs more than it saves (cheap vs. exp-based ops).
constexpr int64_t kGrainCheap = 32768;
constexpr int64_t kGrainTranscendental = 4096;

template <class F>
void map1(const float* x, float* y, int64_t n, int64_t grain, F f) {
  parallel_for((n + kBlock - 1) / kBlock, imax(1, grain / kBlock), [&](int64_t b, int64_t e) {
    int64_t i = b * kBlock, end = imin(e * kBlock, n);
    for (; i + W <= end; i += W) vstore(y + i, f(vload(x + i)));
    if (i < end) {
      int r = static_cast<int>(end - i);
      vstore_n(y + i, f(vload_n(x + i, r)), r);
    }
  });
}

template <class F>
void map2(const float* a, const float* b, float* y, int64_t n, int64_t grain, F f) {
  parallel_for((n + kBlock - 1) / kBlock, imax(1, grain / kBlock), [&](int64_t bb, int64_t e) {
    int64_t i = bb * kBlock, end = imin(e * kBlock, n);
    for (; i + W <= end; i += W) vstore(y + i, f(vload(a + i), vload(b + i)));
    if (i < end) {
      int r = static_cast<int>(end - i);
      vstore_n(y + i, f(vload_n(a + i, r), vload_n(b + i, r)), r);
    }
  });
}

}  // namespace act_map
}  // namespace FG_ISA_NS
}  // namespace fg
