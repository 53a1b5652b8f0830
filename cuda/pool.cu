// 2-D max and average pooling (NCHW) on the GPU: the CPU kernels' rules (cpp/kernels/pool.cpp), one
// thread per output (forward) or per input element (backward). Ran on an H200: tests/test_cuda_gemm.py passes.
//
// The backward passes are gathers, not scatters: each input element sums, over the output windows
// that can contain it, in output order (oh, then ow), the gradient that output sends it -- for max
// pooling when the saved argmax index is this element. That is the order in which the CPU kernels'
// scatter adds to it, so the results equal the CPU's bit for bit, with no atomics.
#include <cmath>

#include "common.cuh"
#include "forgegrad/cuda_gemm.h"
#include "forgegrad/pool.h"
#include "launch.cuh"

namespace fg::cuda {
namespace {

__device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}
__device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }
__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// The output rows [lo, hi] whose window (start o*stride - pad, taps reaching `reach` past it) can
// contain input row v, clipped to [0, out).
__device__ __forceinline__ void covering(int64_t v, int64_t pad, int64_t stride, int64_t reach, int64_t out,
                                         int64_t* lo, int64_t* hi) {
  *lo = imax(ceil_div(v + pad - reach, stride), 0);
  *hi = imin(floor_div(v + pad, stride), out - 1);
}

#define FG_GRID_LOOP(i, total)                                                               \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (total); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void max_pool_fwd(Pool2dGeom g, const float* __restrict__ x, float* __restrict__ y,
                             int64_t* __restrict__ indices) {
  const int64_t OHW = g.OH * g.OW;
  FG_GRID_LOOP(i, g.N * g.C * OHW) {
    const int64_t plane = i / OHW, o = i % OHW, oh = o / g.OW, ow = o % g.OW;
    const float* xs = x + plane * g.H * g.W;
    const int64_t hs = oh * g.stride_h - g.pad_h, ws = ow * g.stride_w - g.pad_w;
    const int64_t h1 = imin(hs + (g.KH - 1) * g.dil_h + 1, g.H), w1 = imin(ws + (g.KW - 1) * g.dil_w + 1, g.W);
    // the first tap inside the image (pool.cpp's first_tap)
    const int64_t h0 = hs >= 0 ? hs : hs + ((-hs + g.dil_h - 1) / g.dil_h) * g.dil_h;
    const int64_t w0 = ws >= 0 ? ws : ws + ((-ws + g.dil_w - 1) / g.dil_w) * g.dil_w;
    int64_t best_i = h0 * g.W + w0;
    float best = -INFINITY;
    for (int64_t h = h0; h < h1; h += g.dil_h)
      for (int64_t w = w0; w < w1; w += g.dil_w) {
        const int64_t k = h * g.W + w;
        const float v = __ldg(xs + k);
        if (v > best || isnan(v)) best = v, best_i = k;  // ties keep the first; NaN propagates
      }
    y[i] = best;
    indices[i] = best_i;
  }
}

__global__ void max_pool_bwd(Pool2dGeom g, const float* __restrict__ gy, const int64_t* __restrict__ indices,
                             float* __restrict__ gx) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  FG_GRID_LOOP(i, g.N * g.C * HW) {
    const int64_t plane = i / HW, k = i % HW, h = k / g.W, w = k % g.W;
    int64_t oh0, oh1, ow0, ow1;
    covering(h, g.pad_h, g.stride_h, (g.KH - 1) * g.dil_h, g.OH, &oh0, &oh1);
    covering(w, g.pad_w, g.stride_w, (g.KW - 1) * g.dil_w, g.OW, &ow0, &ow1);
    const float* gs = gy + plane * OHW;
    const int64_t* is = indices + plane * OHW;
    float s = 0.f;
    for (int64_t oh = oh0; oh <= oh1; ++oh)
      for (int64_t ow = ow0; ow <= ow1; ++ow)
        if (__ldg(is + oh * g.OW + ow) == k) s += __ldg(gs + oh * g.OW + ow);
    gx[i] = s;
  }
}

// pool.cpp's avg_window: the clipped window [h0, h1) x [w0, w1) of output (oh, ow) and its divisor.
struct Window {
  int64_t h0, h1, w0, w1;
  float divisor;
};

__device__ __forceinline__ Window avg_window(const Pool2dGeom& g, int64_t oh, int64_t ow, bool count_include_pad,
                                             int64_t divisor_override) {
  Window a;
  a.h0 = oh * g.stride_h - g.pad_h;
  a.w0 = ow * g.stride_w - g.pad_w;
  a.h1 = imin(a.h0 + g.KH, g.H + g.pad_h);
  a.w1 = imin(a.w0 + g.KW, g.W + g.pad_w);
  const int64_t pool_size = (a.h1 - a.h0) * (a.w1 - a.w0);
  a.h0 = imax(a.h0, 0);
  a.w0 = imax(a.w0, 0);
  a.h1 = imin(a.h1, g.H);
  a.w1 = imin(a.w1, g.W);
  if (divisor_override > 0)
    a.divisor = static_cast<float>(divisor_override);
  else
    a.divisor = static_cast<float>(count_include_pad ? pool_size : (a.h1 - a.h0) * (a.w1 - a.w0));
  return a;
}

__global__ void avg_pool_fwd(Pool2dGeom g, const float* __restrict__ x, float* __restrict__ y, bool cip,
                             int64_t divisor_override) {
  const int64_t OHW = g.OH * g.OW;
  FG_GRID_LOOP(i, g.N * g.C * OHW) {
    const int64_t plane = i / OHW, o = i % OHW;
    const Window a = avg_window(g, o / g.OW, o % g.OW, cip, divisor_override);
    const float* xs = x + plane * g.H * g.W;
    float s = 0.f;
    for (int64_t h = a.h0; h < a.h1; ++h)
      for (int64_t w = a.w0; w < a.w1; ++w) s += __ldg(xs + h * g.W + w);
    y[i] = (a.h0 >= a.h1 || a.w0 >= a.w1) ? 0.f : s / a.divisor;
  }
}

__global__ void avg_pool_bwd(Pool2dGeom g, const float* __restrict__ gy, float* __restrict__ gx, bool cip,
                             int64_t divisor_override) {
  const int64_t HW = g.H * g.W, OHW = g.OH * g.OW;
  FG_GRID_LOOP(i, g.N * g.C * HW) {
    const int64_t plane = i / HW, k = i % HW, h = k / g.W, w = k % g.W;
    int64_t oh0, oh1, ow0, ow1;
    covering(h, g.pad_h, g.stride_h, g.KH - 1, g.OH, &oh0, &oh1);
    covering(w, g.pad_w, g.stride_w, g.KW - 1, g.OW, &ow0, &ow1);
    const float* gs = gy + plane * OHW;
    float s = 0.f;
    for (int64_t oh = oh0; oh <= oh1; ++oh)
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const Window a = avg_window(g, oh, ow, cip, divisor_override);
        if (h >= a.h0 && h < a.h1 && w >= a.w0 && w < a.w1) s += __ldg(gs + oh * g.OW + ow) / a.divisor;
      }
    gx[i] = s;
  }
}

// Adaptive average pooling: output (oh, ow) averages rows [oh*H/OH, ceil((oh+1)*H/OH)) x the like columns.
__device__ __forceinline__ int64_t window_lo(int64_t o, int64_t in, int64_t out) { return o * in / out; }
__device__ __forceinline__ int64_t window_hi(int64_t o, int64_t in, int64_t out) {
  return ((o + 1) * in + out - 1) / out;
}

// The sum of a whole plane (the global pool, OH = OW = 1) in the order of forgegrad/reduce_rows.h, the CPU's
// sum_rows_f32, so the two agree bit for bit: the plane zero-padded to blocks of 32, per block and chain j
// (x[j] + x[8 + j]) + (x[16 + j] + x[24 + j]) in float, added in double to 8 chains, then the halving tree.
__device__ double plane_sum_rows_order(const float* __restrict__ p, int64_t L) {
  double c[8];
  for (int j = 0; j < 8; ++j) {
    double s = 0.0;
    for (int64_t b = 0; b < L; b += 32) {
      float t[4];
      for (int i = 0; i < 4; ++i) {
        const int64_t k = b + 8 * i + j;
        t[i] = k < L ? __ldg(p + k) : 0.f;
      }
      s += static_cast<double>((t[0] + t[1]) + (t[2] + t[3]));
    }
    c[j] = s;
  }
  const double h0 = c[0] + c[4], h1 = c[1] + c[5], h2 = c[2] + c[6], h3 = c[3] + c[7];
  return (h0 + h2) + (h1 + h3);
}

__global__ void adaptive_avg_global(int64_t planes, int64_t HW, const float* __restrict__ x, float* __restrict__ y) {
  FG_GRID_LOOP(i, planes) { y[i] = static_cast<float>(plane_sum_rows_order(x + i * HW, HW) / static_cast<double>(HW)); }
}

__global__ void adaptive_avg_fwd(int64_t planes, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                 const float* __restrict__ x, float* __restrict__ y) {
  const int64_t OHW = OH * OW;
  FG_GRID_LOOP(i, planes * OHW) {
    const int64_t plane = i / OHW, oh = (i % OHW) / OW, ow = i % OW;
    const int64_t h0 = window_lo(oh, H, OH), h1 = window_hi(oh, H, OH);
    const int64_t w0 = window_lo(ow, W, OW), w1 = window_hi(ow, W, OW);
    const float* xs = x + plane * H * W;
    // the CPU kernel's sum (cpp/kernels/per_isa/adaptive_pool.cpp), same order, so the two agree bit for bit:
    // each column of the window summed down its rows in float64, then the columns left to right
    double s = 0.0;
    for (int64_t w = w0; w < w1; ++w) {
      double c = __ldg(xs + h0 * W + w);
      for (int64_t h = h0 + 1; h < h1; ++h) c += __ldg(xs + h * W + w);
      s = w == w0 ? c : s + c;
    }
    s += 0.0;  // an all -0 window sums to +0, as the CPU's
    y[i] = static_cast<float>(s / static_cast<double>((h1 - h0) * (w1 - w0)));
  }
}

__global__ void adaptive_avg_bwd(int64_t planes, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                 const float* __restrict__ gy, float* __restrict__ gx) {
  const int64_t HW = H * W;
  FG_GRID_LOOP(i, planes * HW) {
    const int64_t plane = i / HW, h = (i % HW) / W, w = i % W;
    // the outputs whose window contains (h, w): oh from floor(h*OH/H) to ((h+1)*OH - 1) / H
    const int64_t oh0 = h * OH / H, oh1 = imin(((h + 1) * OH - 1) / H, OH - 1);
    const int64_t ow0 = w * OW / W, ow1 = imin(((w + 1) * OW - 1) / W, OW - 1);
    const float* gs = gy + plane * OH * OW;
    if (OH == 1 && OW == 1) {  // the global pool: the CPU's fill_rows
      gx[i] = __ldg(gs) / static_cast<float>(HW);
      continue;
    }
    // the CPU kernel's order: per output row, 0 + the shares g / kh / kw of the windows ow containing w,
    // then those rows' sums added in oh order (the first one taken as it is)
    float s = 0.f;
    bool first = true;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      const int64_t h0 = window_lo(oh, H, OH), h1 = window_hi(oh, H, OH);
      if (h < h0 || h >= h1) continue;
      const float kh = static_cast<float>(h1 - h0);
      float r = 0.f;
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const int64_t w0 = window_lo(ow, W, OW), w1 = window_hi(ow, W, OW);
        if (w >= w0 && w < w1) r += __ldg(gs + oh * OW + ow) / kh / static_cast<float>(w1 - w0);
      }
      s = first ? r : s + r;
      first = false;
    }
    gx[i] = s;
  }
}

#undef FG_GRID_LOOP

}  // namespace

std::string max_pool2d_forward(const Pool2dGeom& g, const float* x, float* y, int64_t* indices) {
  const int64_t n = g.N * g.C * g.OH * g.OW;
  if (n == 0) return std::string();
  FG_LAUNCH(max_pool_fwd, blocks_for(n, 256), 256, g, x, y, indices);
  return launch_status();
}

std::string max_pool2d_backward(const Pool2dGeom& g, const float* grad_y, const int64_t* indices, float* grad_x) {
  const int64_t n = g.N * g.C * g.H * g.W;
  if (n == 0) return std::string();
  FG_LAUNCH(max_pool_bwd, blocks_for(n, 256), 256, g, grad_y, indices, grad_x);
  return launch_status();
}

std::string avg_pool2d_forward(const Pool2dGeom& g, const float* x, float* y, bool count_include_pad,
                               int64_t divisor_override) {
  const int64_t n = g.N * g.C * g.OH * g.OW;
  if (n == 0) return std::string();
  FG_LAUNCH(avg_pool_fwd, blocks_for(n, 256), 256, g, x, y, count_include_pad, divisor_override);
  return launch_status();
}

std::string avg_pool2d_backward(const Pool2dGeom& g, const float* grad_y, float* grad_x, bool count_include_pad,
                                int64_t divisor_override) {
  const int64_t n = g.N * g.C * g.H * g.W;
  if (n == 0) return std::string();
  FG_LAUNCH(avg_pool_bwd, blocks_for(n, 256), 256, g, grad_y, grad_x, count_include_pad, divisor_override);
  return launch_status();
}

std::string adaptive_avg_pool2d_forward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                        const float* x, float* y) {
  const int64_t n = N * C * OH * OW;
  if (n == 0) return std::string();
  if (OH == 1 && OW == 1) {
    FG_LAUNCH(adaptive_avg_global, blocks_for(n, 256), 256, N * C, H * W, x, y);
    return launch_status();
  }
  FG_LAUNCH(adaptive_avg_fwd, blocks_for(n, 256), 256, N * C, H, W, OH, OW, x, y);
  return launch_status();
}

std::string adaptive_avg_pool2d_backward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                         const float* grad_y, float* grad_x) {
  const int64_t n = N * C * H * W;
  if (n == 0) return std::string();
  FG_LAUNCH(adaptive_avg_bwd, blocks_for(n, 256), 256, N * C, H, W, OH, OW, grad_y, grad_x);
  return launch_status();
}

}  // namespace fg::cuda
