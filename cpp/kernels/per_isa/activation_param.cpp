// prelu, glu and rrelu's training forward (forgegrad/activation_param.h), written once against simd.h.
//
// prelu views x as (outer, C, inner). When a channel's run is long (inner >= kRowMin) the work items are fixed
// kChunk-element pieces of each (outer, channel) row, with the slope broadcast; when it is short (x of shape (N, C),
// or small spatial sizes) the slope pattern repeats with period P = C inner along the flat buffer, and a copy of it
// P + W long lets every vector load its W slopes at offset i mod P. The weight gradient is summed per work item:
// products rounded to float (torch's g x), kFold vectors added in float lanes (the periodic path: kFold rows per
// position), each lane sum folded into a float64 accumulator; the items' float64 sums are then added per channel in
// (outer, chunk) order. Both cuts depend on the sizes only, so the bits do not depend on the thread count, and the
// error is that of a float sum of at most kFold terms per lane plus float64 rounding (torch sums in float32, cascaded).

#include <cmath>
#include <vector>

#include "act_map.h"
#include "forgegrad/activation_param.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

using act_map::imax;
using act_map::imin;
using act_map::kBlock;
using act_map::kGrainCheap;
using act_map::kGrainTranscendental;

constexpr int64_t kRowMin = 64;  // channel runs at least this long take the row path
constexpr int64_t kChunk = 4096;  // elements per work item of the row path (and per row chunk of the periodic one)
constexpr int kFold = 16;  // vectors summed in float lanes before a fold into float64

// torch's prelu: x > 0 ? x : w x (NaN: w NaN = NaN); gradient x > 0 ? g : w g; weight term x > 0 ? 0 : g x.
inline vf prelu_y(vf x, vf w) { return vselect_gt(x, vzero(), x, vmul(w, x)); }
inline vf prelu_dx(vf g, vf x, vf w) { return vselect_gt(x, vzero(), g, vmul(w, g)); }
inline vf prelu_dw(vf g, vf x) { return vselect_gt(x, vzero(), vzero(), vmul(g, x)); }

// Blocked sum of prelu_dw over n elements (masked-off tail lanes load 0 and add 0).
inline double dw_sum(const float* g, const float* x, int64_t n) {
  double s = 0.0;
  int64_t i = 0;
  while (i < n) {
    vf acc = vzero();
    for (int k = 0; k < kFold && i < n; ++k, i += W) {
      if (i + W <= n) {
        acc = vadd(acc, prelu_dw(vload(g + i), vload(x + i)));
      } else {
        int r = static_cast<int>(n - i);
        acc = vadd(acc, prelu_dw(vload_n(g + i, r), vload_n(x + i, r)));
      }
    }
    s += static_cast<double>(vreduce_add(acc));
  }
  return s;
}

// The slope pattern of the periodic path: wrep[k] = w[(k / inner) % C] for k < P + W.
std::vector<float> slope_pattern(const float* w, int64_t C, int64_t inner) {
  const int64_t P = C * inner;
  std::vector<float> wrep(static_cast<size_t>(P + W));
  for (int64_t k = 0; k < P + W; ++k) wrep[k] = w[(k / inner) % C];
  return wrep;
}

// Calls f(i, slopes, r) for the vectors of [0, n) in fixed kBlock blocks (r < W: a masked tail), slopes loaded
// from the pattern at i mod P.
template <class F>
void periodic(int64_t n, int64_t P, const float* wrep, int64_t grain, F f) {
  parallel_for((n + kBlock - 1) / kBlock, imax(1, grain / kBlock), [&](int64_t b, int64_t e) {
    int64_t i = b * kBlock, end = imin(e * kBlock, n), j = i % P;
    for (; i < end; i += W) {
      int r = static_cast<int>(imin(W, end - i));
      f(i, r == W ? vload(wrep + j) : vload_n(wrep + j, r), r);
      j += W;
      if (j >= P) j %= P;
    }
  });
}

// Calls f(row, begin, end) for the row path's items: row = o C + c, [begin, end) a kChunk piece of the row.
template <class F>
void row_items(int64_t rows, int64_t inner, F f) {
  const int64_t per_row = (inner + kChunk - 1) / kChunk;
  parallel_for(rows * per_row, imax(1, kGrainCheap / imin(inner, kChunk)), [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      int64_t row = it / per_row, k0 = (it % per_row) * kChunk;
      f(it, row, k0, imin(k0 + kChunk, inner));
    }
  });
}

inline void load2(const float* a, const float* b, int r, vf& va, vf& vb) {
  va = r == W ? vload(a) : vload_n(a, r);
  vb = r == W ? vload(b) : vload_n(b, r);
}

inline void store(float* p, vf v, int r) {
  if (r == W)
    vstore(p, v);
  else
    vstore_n(p, v, r);
}

}  // namespace

void prelu_forward(const float* x, const float* w, float* y, int64_t outer, int64_t C, int64_t inner) {
  const int64_t n = outer * C * inner;
  if (n == 0) return;
  if (inner >= kRowMin) {
    row_items(outer * C, inner, [&](int64_t, int64_t row, int64_t k0, int64_t k1) {
      const vf wv = vset1(w[row % C]);
      const float* xr = x + row * inner;
      float* yr = y + row * inner;
      for (int64_t k = k0; k < k1; k += W) {
        int r = static_cast<int>(imin(W, k1 - k));
        store(yr + k, prelu_y(r == W ? vload(xr + k) : vload_n(xr + k, r), wv), r);
      }
    });
    return;
  }
  std::vector<float> wrep = slope_pattern(w, C, inner);
  periodic(n, C * inner, wrep.data(), kGrainCheap,
           [&](int64_t i, vf wv, int r) { store(y + i, prelu_y(r == W ? vload(x + i) : vload_n(x + i, r), wv), r); });
}

void prelu_backward(const float* g, const float* x, const float* w, float* dx, float* dw, int64_t outer, int64_t C,
                    int64_t inner) {
  const int64_t n = outer * C * inner;
  if (dw)
    for (int64_t c = 0; c < C; ++c) dw[c] = 0.0f;
  if (n == 0) return;
  if (inner >= kRowMin) {
    const int64_t per_row = (inner + kChunk - 1) / kChunk;
    std::vector<double> part(dw ? static_cast<size_t>(outer * C * per_row) : 0);
    row_items(outer * C, inner, [&](int64_t it, int64_t row, int64_t k0, int64_t k1) {
      const float* gr = g + row * inner;
      const float* xr = x + row * inner;
      if (dw) part[it] = dw_sum(gr + k0, xr + k0, k1 - k0);  // before dx: dx may alias g
      if (dx) {
        const vf wv = vset1(w[row % C]);
        float* dr = dx + row * inner;
        for (int64_t k = k0; k < k1; k += W) {
          int r = static_cast<int>(imin(W, k1 - k));
          vf gv, xv;
          load2(gr + k, xr + k, r, gv, xv);
          store(dr + k, prelu_dx(gv, xv, wv), r);
        }
      }
    });
    if (dw) {
      for (int64_t c = 0; c < C; ++c) {
        double s = 0.0;
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t k = 0; k < per_row; ++k) s += part[(o * C + c) * per_row + k];
        dw[c] = static_cast<float>(s);
      }
    }
    return;
  }
  const int64_t P = C * inner;
  if (dw) {  // chunks of whole rows of P; per position of a row, kFold rows summed in float lanes, then float64
    const int64_t rows_per = imax(1, kChunk / P), chunks = (outer + rows_per - 1) / rows_per;
    std::vector<double> part(static_cast<size_t>(chunks * C));
    parallel_for(chunks, imax(1, kGrainCheap / (rows_per * P)), [&](int64_t b, int64_t e) {
      std::vector<double> pos(static_cast<size_t>(P));
      float lanes[W];
      for (int64_t ch = b; ch < e; ++ch) {
        const int64_t o0 = ch * rows_per, o1 = imin(outer, o0 + rows_per);
        for (int64_t p = 0; p < P; p += W) {
          const int r = static_cast<int>(imin(W, P - p));
          for (int k = 0; k < r; ++k) pos[p + k] = 0.0;
          for (int64_t o = o0; o < o1;) {
            vf acc = vzero();
            for (int f = 0; f < kFold && o < o1; ++f, ++o) {
              vf gv, xv;
              load2(g + o * P + p, x + o * P + p, r, gv, xv);
              acc = vadd(acc, prelu_dw(gv, xv));
            }
            vstore(lanes, acc);
            for (int k = 0; k < r; ++k) pos[p + k] += static_cast<double>(lanes[k]);
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          double s = 0.0;
          for (int64_t k = 0; k < inner; ++k) s += pos[c * inner + k];
          part[ch * C + c] = s;
        }
      }
    });
    for (int64_t c = 0; c < C; ++c) {
      double s = 0.0;
      for (int64_t ch = 0; ch < chunks; ++ch) s += part[ch * C + c];
      dw[c] = static_cast<float>(s);
    }
  }
  if (dx) {
    std::vector<float> wrep = slope_pattern(w, C, inner);
    periodic(n, P, wrep.data(), kGrainCheap, [&](int64_t i, vf wv, int r) {
      vf gv, xv;
      load2(g + i, x + i, r, gv, xv);
      store(dx + i, prelu_dx(gv, xv, wv), r);
    });
  }
}

// glu's items: (o, block of kBlock elements of the n), the same cut at any thread count.
template <class F>
void glu_items(int64_t outer, int64_t n, F f) {
  const int64_t per_row = (n + kBlock - 1) / kBlock;
  parallel_for(outer * per_row, imax(1, kGrainTranscendental / imin(n, kBlock)), [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      int64_t o = it / per_row, k0 = (it % per_row) * kBlock;
      f(o, k0, imin(k0 + kBlock, n));
    }
  });
}

void glu_forward(const float* x, float* y, int64_t outer, int64_t n) {
  if (outer * n == 0) return;
  glu_items(outer, n, [&](int64_t o, int64_t k0, int64_t k1) {
    const float* a = x + o * 2 * n;
    const float* b = a + n;
    float* yr = y + o * n;
    for (int64_t k = k0; k < k1; k += W) {
      int r = static_cast<int>(imin(W, k1 - k));
      vf av, bv;
      load2(a + k, b + k, r, av, bv);
      store(yr + k, vmul(av, vsigmoid(bv)), r);  // torch's a * (1 / (1 + exp(-b)))
    }
  });
}

void glu_backward(const float* g, const float* x, float* dx, int64_t outer, int64_t n) {
  if (outer * n == 0) return;
  const vf one = vset1(1.0f);
  glu_items(outer, n, [&](int64_t o, int64_t k0, int64_t k1) {
    const float* a = x + o * 2 * n;
    const float* b = a + n;
    const float* gr = g + o * n;
    float* da = dx + o * 2 * n;
    float* db = da + n;
    for (int64_t k = k0; k < k1; k += W) {
      int r = static_cast<int>(imin(W, k1 - k));
      vf av, bv;
      load2(a + k, b + k, r, av, bv);
      vf gv = r == W ? vload(gr + k) : vload_n(gr + k, r);
      vf s = vsigmoid(bv);
      store(da + k, vmul(s, gv), r);
      store(db + k, vmul(vmul(vmul(vsub(one, s), s), av), gv), r);  // torch's ((1 - s) s) a g
    }
  });
}

void rrelu_train_forward(const float* x, float* noise, float* y, int64_t n) {
  if (n == 0) return;
  const vf zero = vzero(), one = vset1(1.0f);
  parallel_for((n + kBlock - 1) / kBlock, imax(1, kGrainCheap / kBlock), [&](int64_t b, int64_t e) {
    for (int64_t i = b * kBlock, end = imin(e * kBlock, n); i < end; i += W) {
      int r = static_cast<int>(imin(W, end - i));
      vf xv, rv;
      load2(x + i, noise + i, r, xv, rv);
      vf nv = vselect_le(xv, zero, rv, one);
      store(noise + i, nv, r);
      store(y + i, vmul(xv, nv), r);
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
