// float64 kernels of a training step (forgegrad/float64.h), compiled per ISA. Plain loops the compiler
// vectorises where it can (Adam's sqrt and divide, im2col's copies); -ffp-contract=off keeps every
// a * b + c two roundings, so each ISA gives the same bits. Work is split over threads only where each
// output element belongs to one range.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "forgegrad/float64.h"
#include "forgegrad/parallel.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// Restrict pointers and scalar arguments (no references into structs the stores could alias): the loop vectorises.
template <bool kAmsgrad>
void adam_range(double* __restrict P, const double* __restrict G, double* __restrict M, double* __restrict V,
                double* __restrict X, int64_t n, double w1, double b2, double w2, double eps, double wd, double ps,
                double ss, double bc2, double sign, bool coupled, bool decoupled) {
  for (int64_t i = 0; i < n; ++i) {
    double g = sign * G[i];
    double p = P[i];
    if (coupled) g = g + wd * p;
    if (decoupled) p = p * ps;
    double m = M[i];
    m = m + (g - m) * w1;
    const double v = V[i] * b2 + w2 * g * g;
    double s = v;
    if (kAmsgrad) {
      const double x = X[i];
      s = (x > v || x != x) ? x : v;  // np.maximum: NaN propagates
      X[i] = s;
    }
    const double denom = std::sqrt(s) / bc2 + eps;
    P[i] = p - ss * (m / denom);
    M[i] = m;
    V[i] = v;
  }
}

}  // namespace

void adam_step_f64(const Adam64Tensor* tensors, int64_t count, const Adam64Hyper& h) {
  for (int64_t ti = 0; ti < count; ++ti) {
    const Adam64Tensor& t = tensors[ti];
    const double sign = h.maximize ? -1.0 : 1.0;  // exact: a sign flip
    const bool coupled = !h.decoupled && h.weight_decay != 0.0;
    parallel_for_work(t.n, 16, [&](int64_t i0, int64_t i1) {
      double* X = t.max_exp_avg_sq ? t.max_exp_avg_sq + i0 : nullptr;
      auto run = h.amsgrad ? adam_range<true> : adam_range<false>;
      run(t.param + i0, t.grad + i0, t.exp_avg + i0, t.exp_avg_sq + i0, X, i1 - i0, h.one_minus_beta1, h.beta2,
          h.one_minus_beta2, h.eps, h.weight_decay, h.param_scale, t.step_size, t.bias_correction2_sqrt, sign, coupled,
          h.decoupled);
    });
  }
}

void im2col_f64(const Im2colGeom& g, const double* x, double* cols) {
  const int64_t P = g.OH * g.OW, NP = g.N * P, KK = g.KH * g.KW, HW = g.H * g.W;
  // one task per cols row (c, kh, kw): N * OH * OW copies
  parallel_for_work(g.C * KK, NP, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / KK, kh = (r / g.KW) % g.KH, kw = r % g.KW;
      double* row = cols + r * NP;
      for (int64_t n = 0; n < g.N; ++n) {
        const double* xs = x + (n * g.C + c) * HW;
        for (int64_t oh = 0; oh < g.OH; ++oh) {
          double* out = row + n * P + oh * g.OW;
          const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dil_h;
          if (ih < 0 || ih >= g.H) {
            std::memset(out, 0, sizeof(double) * g.OW);
            continue;
          }
          const double* xr = xs + ih * g.W;
          const int64_t w0 = kw * g.dil_w - g.pad_w;
          if (g.stride_w == 1 && w0 >= 0 && w0 + g.OW <= g.W) {
            std::memcpy(out, xr + w0, sizeof(double) * g.OW);
            continue;
          }
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            const int64_t iw = ow * g.stride_w + w0;
            out[ow] = (iw >= 0 && iw < g.W) ? xr[iw] : 0.0;
          }
        }
      }
    }
  });
}

void col2im_f64(const Im2colGeom& g, const double* cols, double* gx) {
  const int64_t P = g.OH * g.OW, NP = g.N * P, KK = g.KH * g.KW, HW = g.H * g.W;
  // one task per (n, c) plane, which owns its outputs: the taps' order is the same at any thread count
  parallel_for_work(g.N * g.C, KK * P + HW, [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; ++pl) {
      const int64_t n = pl / g.C, c = pl % g.C;
      double* d = gx + pl * HW;
      std::memset(d, 0, sizeof(double) * HW);
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const double* row = cols + ((c * g.KH + kh) * g.KW + kw) * NP + n * P;
          const int64_t w0 = kw * g.dil_w - g.pad_w;
          // the outputs whose tap lands inside the row: ow in [ow0, ow1)
          const int64_t ow0 = w0 >= 0 ? 0 : (-w0 + g.stride_w - 1) / g.stride_w;
          const int64_t ow1 = w0 >= g.W ? 0 : std::min<int64_t>(g.OW, (g.W - 1 - w0) / g.stride_w + 1);
          for (int64_t oh = 0; oh < g.OH; ++oh) {
            const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dil_h;
            if (ih < 0 || ih >= g.H) continue;
            double* dr = d + ih * g.W;
            const double* s = row + oh * g.OW;
            if (g.stride_w == 1) {
              for (int64_t ow = ow0; ow < ow1; ++ow) dr[ow + w0] += s[ow];
            } else {
              for (int64_t ow = ow0; ow < ow1; ++ow) dr[ow * g.stride_w + w0] += s[ow];
            }
          }
        }
    }
  });
}

namespace {

// tanh and sigmoid in straight-line double arithmetic, so that the cell loops vectorise (std::tanh is a scalar
// libm call: ~30 ns an element, most of an LSTM step). Both from y = k ln2 + r, y <= 0 (Cody-Waite, |r| <= ln2 / 2)
// and expm1(r) by its Taylor series to r^13 (remainder < 1e-17 relative): exp(y) = 2^k (1 + expm1(r)),
// expm1(y) = 2^k expm1(r) + (2^k - 1), each within a few ulp, expm1 also near 0.
struct ExpParts {
  double scale, em;  // 2^k, expm1(r)
};

inline ExpParts exp_parts(double y) {  // y in [-708, 0]
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const double kd = (y * 1.4426950408889634 + shifter) - shifter;
  const double r = (y - kd * 6.93147180369123816490e-01) - kd * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  const int64_t bits = (static_cast<int64_t>(kd) + 1023) << 52;
  ExpParts e;
  std::memcpy(&e.scale, &bits, sizeof e.scale);
  e.em = r + (r * r) * p;
  return e;
}

// tanh(|x|) = -e / (e + 2), e = expm1(-2|x|): tanh's relative accuracy near 0 too. Below y = -40, e rounds to -1.
inline double tanh_d(double x) {
  double y = -2.0 * (x < 0.0 ? -x : x);
  y = y >= -40.0 ? y : -40.0;  // (NaN too: exp_parts converts k to an integer; NaN is returned below)
  const ExpParts p = exp_parts(y);
  const double e = p.scale * p.em + (p.scale - 1.0);
  const double t = -e / (e + 2.0);
  return x != x ? x : std::copysign(t, x);  // t >= 0 (or -0.0); tanh(+-0) = +-0
}

// sigmoid(a) = 1 / (1 + E) for a >= 0, E / (1 + E) below, E = exp(-|a|): relative accuracy on both tails (the
// numpy path's 0.5 (1 + tanh(a / 2)) lost it below a ~ -20, torch's does not). exp(-|a|) underflows past 708.
inline double sigmoid_d(double a) {
  const double y = -(a < 0.0 ? -a : a);
  const ExpParts p = exp_parts(y >= -708.0 ? y : -708.0);  // (NaN too, as in tanh_d)
  const double E = y < -708.0 ? 0.0 : p.scale * (1.0 + p.em);
  const double s = a >= 0.0 ? 1.0 / (1.0 + E) : E / (1.0 + E);
  return a != a ? a : s;
}

// One batch row of the cell; restrict pointers and plain locals, so that the loop vectorises (through the lambda's
// captures GCC cannot prove the stores leave H and the row pointers alone).
void lstm_forward_row(int64_t H, const double* __restrict a, const double* __restrict c_prev, double* __restrict act,
                      double* __restrict c, double* __restrict tc, double* __restrict h) {
  for (int64_t j = 0; j < H; ++j) {
    const double i = sigmoid_d(a[j]), f = sigmoid_d(a[H + j]), z = tanh_d(a[2 * H + j]), o = sigmoid_d(a[3 * H + j]);
    act[j] = i;
    act[H + j] = f;
    act[2 * H + j] = z;
    act[3 * H + j] = o;
    const double cn = f * c_prev[j] + i * z;
    const double t = tanh_d(cn);
    c[j] = cn;
    tc[j] = t;
    h[j] = o * t;
  }
}

void lstm_backward_row(int64_t H, const double* __restrict act, const double* __restrict c_prev,
                       const double* __restrict tc, const double* __restrict dh, double* __restrict dc,
                       double* __restrict d) {
  for (int64_t j = 0; j < H; ++j) {
    const double i = act[j], f = act[H + j], z = act[2 * H + j], o = act[3 * H + j], t = tc[j], g = dh[j];
    const double dcn = dc[j] + g * o * (1.0 - t * t);
    d[j] = dcn * z * i * (1.0 - i);
    d[H + j] = dcn * c_prev[j] * f * (1.0 - f);
    d[2 * H + j] = dcn * i * (1.0 - z * z);
    d[3 * H + j] = g * t * o * (1.0 - o);
    dc[j] = dcn * f;
  }
}

// One output row of the 2x2 / stride 2 max pool: pool.cpp's general rule and order (the first of the four, then a
// candidate wins when greater or NaN) as selects on restrict pointers, so that it vectorises: as a branch the
// comparison mispredicts about half the time on real data (11 ns an output).
void max_pool2x2_row(const double* __restrict r0, const double* __restrict r1, int64_t base, int64_t W, int64_t OW,
                     double* __restrict y, int64_t* __restrict idx) {
  for (int64_t ow = 0; ow < OW; ++ow) {
    const int64_t i0 = base + 2 * ow;
    double best = r0[2 * ow];
    int64_t bi = i0;
    const double c1 = r0[2 * ow + 1], c2 = r1[2 * ow], c3 = r1[2 * ow + 1];
    const bool t1 = (c1 > best) | (c1 != c1);
    best = t1 ? c1 : best;
    bi = t1 ? i0 + 1 : bi;
    const bool t2 = (c2 > best) | (c2 != c2);
    best = t2 ? c2 : best;
    bi = t2 ? i0 + W : bi;
    const bool t3 = (c3 > best) | (c3 != c3);
    best = t3 ? c3 : best;
    bi = t3 ? i0 + W + 1 : bi;
    y[ow] = best;
    if (idx) idx[ow] = bi;
  }
}

}  // namespace

void lstm_cell_forward_f64(int64_t B, int64_t H, const double* a, const double* c_prev, double* act, double* c,
                           double* tc, double* h) {
  parallel_for_work(B, 40 * H, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      lstm_forward_row(H, a + b * 4 * H, c_prev + b * H, act + b * 4 * H, c + b * H, tc + b * H, h + b * H);
  });
}

void lstm_cell_backward_f64(int64_t B, int64_t H, const double* act, const double* c_prev, const double* tc,
                            const double* dh, double* dc, double* d) {
  parallel_for_work(B, 20 * H, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      lstm_backward_row(H, act + b * 4 * H, c_prev + b * H, tc + b * H, dh + b * H, dc + b * H, d + b * 4 * H);
  });
}

void max_pool2x2_plane_f64(const double* xs, int64_t W, int64_t OH, int64_t OW, double* ys, int64_t* is) {
  for (int64_t oh = 0; oh < OH; ++oh)
    max_pool2x2_row(xs + 2 * oh * W, xs + 2 * oh * W + W, 2 * oh * W, W, OW, ys + oh * OW, is ? is + oh * OW : nullptr);
}

void relu_forward_f64(const double* x, double* y, int64_t n) {
  parallel_for_work(n, 2, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = (x[i] > 0.0 || x[i] != x[i]) ? x[i] : 0.0;
  });
}

void relu_backward_f64(const double* g, const double* y, double* gx, int64_t n) {
  parallel_for_work(n, 2, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) gx[i] = y[i] <= 0.0 ? 0.0 : g[i];
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
