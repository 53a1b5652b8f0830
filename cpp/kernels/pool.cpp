// Pooling kernels (see pool.h). One (n, c) plane per task. The common 2x2 / stride 2 max pool (a
// full pass over the largest activations of a CNN) has per-ISA code in per_isa/pool_max2x2.cpp;
// the general windows are plain loops.
#include "forgegrad/pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "forgegrad/float64.h"
#include "forgegrad/parallel.h"
#include "forgegrad/reduce_rows.h"

namespace fg {
namespace {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// a * b for the per-plane work estimate, saturating: a huge kernel only needs "a lot", not a
// product that overflows.
inline int64_t work(int64_t a, int64_t b) {
  int64_t r;
  return checked_mul(a, b, &r) ? r : INT64_MAX;
}

// The first tap of a dilated window starting at v0 (< 0 in the padding) that lies inside the
// image: v0 + ceil(-v0 / dil) * dil, in one step (a loop would take up to pad / dil iterations).
inline int64_t first_tap(int64_t v0, int64_t dil) { return v0 >= 0 ? v0 : v0 + ceil_div(-v0, dil) * dil; }

template <class F>
void for_planes(int64_t planes, int64_t plane_work, F f) {
  int64_t grain = plane_work >= 4096 ? 1 : 4096 / (plane_work > 0 ? plane_work : 1);
  parallel_for(planes, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) f(p);
  });
}

// Window [h0, h1) x [w0, w1) of an average pool and its divisor, torch's rules.
struct AvgWindow {
  int64_t h0, h1, w0, w1;
  float divisor;
  bool empty;
};

inline AvgWindow avg_window(const Pool2dGeom& g, int64_t oh, int64_t ow, bool count_include_pad,
                            int64_t divisor_override) {
  AvgWindow a{};
  a.h0 = oh * g.stride_h - g.pad_h;
  a.w0 = ow * g.stride_w - g.pad_w;
  a.h1 = std::min(a.h0 + g.KH, g.H + g.pad_h);
  a.w1 = std::min(a.w0 + g.KW, g.W + g.pad_w);
  const int64_t pool_size = (a.h1 - a.h0) * (a.w1 - a.w0);
  a.h0 = std::max<int64_t>(a.h0, 0);
  a.w0 = std::max<int64_t>(a.w0, 0);
  a.h1 = std::min(a.h1, g.H);
  a.w1 = std::min(a.w1, g.W);
  a.empty = a.h0 >= a.h1 || a.w0 >= a.w1;
  if (divisor_override > 0)
    a.divisor = static_cast<float>(divisor_override);
  else
    a.divisor = static_cast<float>(count_include_pad ? pool_size : (a.h1 - a.h0) * (a.w1 - a.w0));
  return a;
}

// The common 2x2 / stride 2 / no padding / no dilation pool with every window inside the image:
// the same candidates in the same order and the same update rule as the general loop below (so the
// same results), without its per-window bounds and dilation stepping. The first candidate is always
// taken: the general rule takes it unless it is -inf, when best stays -inf at the same index.
bool is_plain_2x2(const Pool2dGeom& g) {
  return g.KH == 2 && g.KW == 2 && g.stride_h == 2 && g.stride_w == 2 && g.pad_h == 0 && g.pad_w == 0 && g.dil_h == 1 &&
         g.dil_w == 1 && 2 * g.OH <= g.H && 2 * g.OW <= g.W;
}

void max_pool2d_forward_2x2(const Pool2dGeom& g, const float* x, float* y, int64_t* indices) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  for_planes(g.N * g.C, OHW * 4, [&](int64_t p) {
    max_pool2x2_plane(x + p * HW, g.W, g.OH, g.OW, y + p * OHW, indices ? indices + p * OHW : nullptr);
  });
}

// The general loop, for any element type (float32 and float64 share it: the same windows, order and rule).
template <class T>
void max_pool2d_general(const Pool2dGeom& g, const T* x, T* y, int64_t* indices) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  for_planes(g.N * g.C, work(OHW, work(g.KH, g.KW)), [&](int64_t p) {
    const T* xs = x + p * HW;
    T* ys = y + p * OHW;
    int64_t* is = indices ? indices + p * OHW : nullptr;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const int64_t hs = oh * g.stride_h - g.pad_h;
      const int64_t h1 = std::min(hs + (g.KH - 1) * g.dil_h + 1, g.H), h0 = first_tap(hs, g.dil_h);
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const int64_t ws = ow * g.stride_w - g.pad_w;
        const int64_t w1 = std::min(ws + (g.KW - 1) * g.dil_w + 1, g.W), w0 = first_tap(ws, g.dil_w);
        int64_t best_i = h0 * g.W + w0;
        T best = -std::numeric_limits<T>::infinity();
        for (int64_t h = h0; h < h1; h += g.dil_h)
          for (int64_t w = w0; w < w1; w += g.dil_w) {
            const int64_t i = h * g.W + w;
            const T v = xs[i];
            if (v > best || std::isnan(v)) {
              best = v;
              best_i = i;
            }
          }
        ys[oh * g.OW + ow] = best;
        if (is) is[oh * g.OW + ow] = best_i;
      }
    }
  });
}

template <class T>
void max_pool2d_scatter(const Pool2dGeom& g, const T* gy, const int64_t* indices, T* gx) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  for_planes(g.N * g.C, OHW + HW, [&](int64_t p) {
    T* d = gx + p * HW;
    std::memset(d, 0, sizeof(T) * HW);
    const T* s = gy + p * OHW;
    const int64_t* is = indices + p * OHW;
    for (int64_t o = 0; o < OHW; ++o) d[is[o]] += s[o];  // indices were range-checked by the binding
  });
}

}  // namespace

void max_pool2d_forward(const Pool2dGeom& g, const float* x, float* y, int64_t* indices) {
  if (is_plain_2x2(g)) return max_pool2d_forward_2x2(g, x, y, indices);
  max_pool2d_general(g, x, y, indices);
}

void max_pool2d_forward(const Pool2dGeom& g, const double* x, double* y, int64_t* indices) {
  if (!is_plain_2x2(g)) return max_pool2d_general(g, x, y, indices);
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;  // the 2x2 planes: per ISA, float64.cpp
  for_planes(g.N * g.C, OHW * 4, [&](int64_t p) {
    max_pool2x2_plane_f64(x + p * HW, g.W, g.OH, g.OW, y + p * OHW, indices ? indices + p * OHW : nullptr);
  });
}

void max_pool3d_forward(const Pool3dGeom& g, const float* x, float* y, int64_t* indices) {
  const int64_t vol = g.D * g.H * g.W, out = g.OD * g.OH * g.OW;
  for_planes(g.N * g.C, work(out, work(g.KD, work(g.KH, g.KW))),
             [&](int64_t p) { max_pool3d_volume(g, x + p * vol, y + p * out, indices + p * out); });
}

void max_pool2d_backward(const Pool2dGeom& g, const float* gy, const int64_t* indices, float* gx) {
  max_pool2d_scatter(g, gy, indices, gx);
}

void max_pool2d_backward(const Pool2dGeom& g, const double* gy, const int64_t* indices, double* gx) {
  max_pool2d_scatter(g, gy, indices, gx);
}

void avg_pool2d_forward(const Pool2dGeom& g, const float* x, float* y, bool count_include_pad,
                        int64_t divisor_override) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  for_planes(g.N * g.C, work(OHW, work(g.KH, g.KW)), [&](int64_t p) {
    const float* xs = x + p * HW;
    float* ys = y + p * OHW;
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const AvgWindow a = avg_window(g, oh, ow, count_include_pad, divisor_override);
        float s = 0.0f;
        if (!a.empty)
          for (int64_t h = a.h0; h < a.h1; ++h)
            for (int64_t w = a.w0; w < a.w1; ++w) s += xs[h * g.W + w];
        ys[oh * g.OW + ow] = a.empty ? 0.0f : s / a.divisor;
      }
  });
}

void avg_pool2d_backward(const Pool2dGeom& g, const float* gy, float* gx, bool count_include_pad,
                         int64_t divisor_override) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  for_planes(g.N * g.C, work(OHW, work(g.KH, g.KW)), [&](int64_t p) {
    float* d = gx + p * HW;
    std::memset(d, 0, sizeof(float) * HW);
    const float* s = gy + p * OHW;
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const AvgWindow a = avg_window(g, oh, ow, count_include_pad, divisor_override);
        if (a.empty) continue;
        const float v = s[oh * g.OW + ow] / a.divisor;
        for (int64_t h = a.h0; h < a.h1; ++h)
          for (int64_t w = a.w0; w < a.w1; ++w) d[h * g.W + w] += v;
      }
  });
}

namespace {

// Each output row's / column's window [floor(o * n / out), ceil((o + 1) * n / out)) (torch's), as
// [start, end) pairs; the binding checked that (o + 1) * n fits.
std::vector<int64_t> adaptive_bounds(int64_t n, int64_t out) {
  std::vector<int64_t> b(static_cast<size_t>(2 * out));
  for (int64_t o = 0; o < out; ++o) {
    b[2 * o] = o * n / out;
    b[2 * o + 1] = ceil_div((o + 1) * n, out);
  }
  return b;
}

// f(first plane, count) over ranges of whole planes; a plane's work is about its input plus output.
template <class F>
void adaptive_planes(int64_t planes, int64_t H, int64_t W, int64_t OH, int64_t OW, F f) {
  parallel_for_work(planes, work(H, W) + work(OH, OW), [&](int64_t p0, int64_t p1) { f(p0, p1 - p0); });
}

}  // namespace

void adaptive_avg_pool2d_forward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW, const float* x,
                                 float* y) {
  const int64_t HW = H * W, OHW = OH * OW;
  // the global pool (a CNN's head): each plane is one contiguous row, summed many rows a vector pass in
  // the order of reduce_rows.h (cuda/pool.cu has the same)
  if (OHW == 1) return sum_rows_f32(x, N * C, HW, true, y);
  const std::vector<int64_t> hb = adaptive_bounds(H, OH), wb = adaptive_bounds(W, OW);
  adaptive_planes(N * C, H, W, OH, OW, [&](int64_t p, int64_t n) {
    adaptive_avg_pool2d_planes(x + p * HW, n, H, W, OH, OW, hb.data(), wb.data(), y + p * OHW);
  });
}

void adaptive_avg_pool2d_backward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW, const float* gy,
                                  float* gx) {
  const int64_t HW = H * W, OHW = OH * OW;
  if (OHW == 1) return fill_rows_f32(gy, N * C, HW, static_cast<float>(HW), gx);
  const std::vector<int64_t> hb = adaptive_bounds(H, OH), wb = adaptive_bounds(W, OW);
  adaptive_planes(N * C, H, W, OH, OW, [&](int64_t p, int64_t n) {
    adaptive_avg_pool2d_backward_planes(gy + p * OHW, n, H, W, OH, OW, hb.data(), wb.data(), gx + p * HW);
  });
}

void adaptive_max_pool2d_forward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW, const float* x,
                                 float* y, int64_t* indices) {
  const int64_t HW = H * W, OHW = OH * OW;
  const std::vector<int64_t> hb = adaptive_bounds(H, OH), wb = adaptive_bounds(W, OW);
  adaptive_planes(N * C, H, W, OH, OW, [&](int64_t p, int64_t n) {
    adaptive_max_pool2d_planes(x + p * HW, n, H, W, OH, OW, hb.data(), wb.data(), y + p * OHW, indices + p * OHW);
  });
}

}  // namespace fg
