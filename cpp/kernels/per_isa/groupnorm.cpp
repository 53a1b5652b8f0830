// Group normalisation of x (N, C, HW) float32, C-contiguous, in G groups of C / G channels
// (torch.nn.functional.group_norm; instance norm is G = C), forward and backward, fused: the
// per-channel affine runs inside the normalising pass, so each direction reads x (and dy) and writes
// its result once.
//   forward:  y = (x - mean) * rstd * w[c] + b[c] over each (n, g), whose C / G * HW elements are
//             contiguous; mean and rstd (N * G) are what torch saves.
//   backward: with xhat = (x - mean) * rstd and gw = dy * w[c], over each (n, g):
//             dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)),
//             dw[c] = sum over n, hw of dy * xhat,  db[c] = sum over n, hw of dy.
// weight / bias may be null (no affine part).
//
// Accuracy as layer_norm (layernorm.cpp): the group mean summed as sum(x - x[0]), kept as a float
// pair hi + lo, the variance summed over ((x - hi) - lo)^2; float vector sums within blocks of 1024,
// block sums in double; a group whose float sums overflow is redone in double (in the backward too).
// The backward measures the saved mean's rounding error on the group (delta = mean(x - m)) and
// removes it.
//
// Threads: each (n, g) is one work item of one thread, reduced in a fixed order. The backward keeps
// the per-(n, c) sums of dy * xhat and dy (in double) and adds them over n in batch order after the
// parallel part, so every result is bit-identical for any thread count.
//
// Only bind_groupnorm.cpp calls these kernels; their FG_KERNEL declarations live there.
#include <cmath>
#include <vector>

#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"
#include "norm_rows.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

using rows::imax;
using rows::imin;
using rows::mean_rstd;
using rows::row_sums;
using rows::tail0;

// (n, g) items per thread below which another thread costs more than it saves.
int64_t group_grain(int64_t D) { return imax(1, 16384 / imax(1, D)); }

// A group whose float sums overflowed (or held an infinity / NaN): statistics and output in double.
void group_double(const float* x, const float* w, const float* b, int64_t cpg, int64_t hw, float eps, float* y,
                  float* mean_out, float* rstd_out) {
  const int64_t n = cpg * hw;
  double mean = 0.0, q = 0.0;
  for (int64_t i = 0; i < n; ++i) mean += static_cast<double>(x[i]);
  mean /= static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    q += d * d;
  }
  const double rstd = 1.0 / std::sqrt(q / static_cast<double>(n) + static_cast<double>(eps));
  for (int64_t c = 0; c < cpg; ++c)
    for (int64_t i = c * hw; i < (c + 1) * hw; ++i) {
      double v = (static_cast<double>(x[i]) - mean) * rstd;
      if (w) v *= static_cast<double>(w[c]);
      if (b) v += static_cast<double>(b[c]);
      y[i] = static_cast<float>(v);
    }
  *mean_out = static_cast<float>(mean);
  *rstd_out = static_cast<float>(rstd);
}

// One (n, g): x, y point at its first element; w, b at its first channel (or null).
void group_forward(const float* x, const float* w, const float* b, int64_t cpg, int64_t hw, float eps, float* y,
                   float* mean_out, float* rstd_out) {
  const int64_t n = cpg * hw;
  float hi, lo;
  double rstd;
  if (!mean_rstd(x, n, eps, &hi, &lo, &rstd)) return group_double(x, w, b, cpg, hw, eps, y, mean_out, rstd_out);
  const vf H = vset1(hi), L = vset1(lo);
  *mean_out = hi;
  *rstd_out = static_cast<float>(rstd);
  // y = fma(((x - hi) - lo) * rstd, w[c], b[c]): the bits of layer_norm's affine pass.
  const vf R = vset1(static_cast<float>(rstd));
  for (int64_t c = 0; c < cpg; ++c) {
    const float* xc = x + c * hw;
    float* yc = y + c * hw;
    const vf Wc = vset1(w ? w[c] : 1.0f), Bc = vset1(b ? b[c] : 0.0f);
    for (int64_t i = 0; i < hw; i += W) {
      const int r = static_cast<int>(imin(W, hw - i));
      vf v = vmul(vsub(vsub(vload_upto(xc + i, r), H), L), R);
      if (w && b)
        v = vfmadd(v, Wc, Bc);
      else if (w)
        v = vmul(v, Wc);
      else if (b)
        v = vadd(v, Bc);
      vstore_upto(yc + i, v, r);
    }
  }
}

// The backward of a group whose float sums overflowed (|x| near float's limit, where the forward ran
// group_double too): the formulas of group_backward below, every sum and product in double.
void group_backward_double(const float* g, const float* x, float m, float rs, const float* w, int64_t cpg, int64_t hw,
                           float* gx, double* pw, double* pb) {
  const double dn = static_cast<double>(cpg * hw), md = static_cast<double>(m), r64 = static_cast<double>(rs);
  double sx = 0.0;
  for (int64_t i = 0; i < cpg * hw; ++i) sx += static_cast<double>(x[i]) - md;
  const double delta = sx / dn;
  double sum_gw = 0.0, sum_gwx = 0.0;
  for (int64_t c = 0; c < cpg; ++c) {
    double sg = 0.0, sgd = 0.0;
    for (int64_t i = c * hw; i < (c + 1) * hw; ++i) {
      sg += static_cast<double>(g[i]);
      sgd += static_cast<double>(g[i]) * (static_cast<double>(x[i]) - md - delta);
    }
    const double sgx = r64 * sgd;
    if (pw) pw[c] = sgx;
    if (pb) pb[c] = sg;
    const double wc = w ? static_cast<double>(w[c]) : 1.0;
    sum_gw += wc * sg;
    sum_gwx += wc * sgx;
  }
  if (!gx) return;
  for (int64_t c = 0; c < cpg; ++c) {
    const double rw = r64 * (w ? static_cast<double>(w[c]) : 1.0);
    for (int64_t i = c * hw; i < (c + 1) * hw; ++i) {
      const double xh = (static_cast<double>(x[i]) - md - delta) * r64;
      gx[i] = static_cast<float>(rw * static_cast<double>(g[i]) - r64 * sum_gw / dn - xh * r64 * sum_gwx / dn);
    }
  }
}

// One (n, g) of the backward. Pass 1, per channel: sum(x - m), sum(dy), sum(dy * (x - m)); from
// them the channel's sum(dy * xhat) and sum(dy) (stored in pw / pb, per (n, c)) and the group's
// mean(gw), mean(gw * xhat). Pass 2 (only when gx is wanted): dx. s is scratch of 3 * cpg doubles.
void group_backward(const float* g, const float* x, float m, float rs, const float* w, int64_t cpg, int64_t hw,
                    float* gx, double* pw, double* pb, double* s) {
  const vf M = vset1(m);
  double sx = 0.0;
  for (int64_t c = 0; c < cpg; ++c) {
    const float* xc = x + c * hw;
    const float* gc = g + c * hw;
    row_sums<3>(
        hw,
        [&](int64_t i, int r, vf* a) {
          const vf d = tail0(vsub(vload_upto(xc + i, r), M), r);
          const vf gv = vload_upto(gc + i, r);  // lanes >= r load as 0
          a[0] = vadd(a[0], d);
          a[1] = vadd(a[1], gv);
          a[2] = vfmadd(gv, d, a[2]);
        },
        s + 3 * c);
    sx += s[3 * c];
  }
  double all = sx;
  for (int64_t c = 0; c < cpg; ++c) all += s[3 * c + 1] + s[3 * c + 2];
  if (!std::isfinite(all)) return group_backward_double(g, x, m, rs, w, cpg, hw, gx, pw, pb);
  const double dn = static_cast<double>(cpg * hw), r64 = static_cast<double>(rs);
  const double delta = sx / dn;
  double sum_gw = 0.0, sum_gwx = 0.0;
  for (int64_t c = 0; c < cpg; ++c) {
    const double sg = s[3 * c + 1], sgx = r64 * (s[3 * c + 2] - delta * sg);  // sum(dy), sum(dy * xhat)
    if (pw) pw[c] = sgx;
    if (pb) pb[c] = sg;
    const double wc = w ? static_cast<double>(w[c]) : 1.0;
    sum_gw += wc * sg;
    sum_gwx += wc * sgx;
  }
  if (!gx) return;
  const vf Dl = vset1(static_cast<float>(delta)), R = vset1(rs);
  const vf C1 = vset1(static_cast<float>(r64 * sum_gw / dn)), C2 = vset1(static_cast<float>(r64 * sum_gwx / dn));
  for (int64_t c = 0; c < cpg; ++c) {
    const float* xc = x + c * hw;
    const float* gc = g + c * hw;
    float* oc = gx + c * hw;
    const vf RW = vset1(static_cast<float>(r64 * (w ? static_cast<double>(w[c]) : 1.0)));
    for (int64_t i = 0; i < hw; i += W) {
      const int r = static_cast<int>(imin(W, hw - i));
      const vf xh = vmul(vsub(vsub(vload_upto(xc + i, r), M), Dl), R);
      vstore_upto(oc + i, vfnmadd(xh, C2, vsub(vmul(RW, vload_upto(gc + i, r)), C1)), r);
    }
  }
}

}  // namespace

void group_norm_forward(const float* x, const float* weight, const float* bias, int64_t N, int64_t C, int64_t HW,
                        int64_t G, float eps, float* y, float* mean, float* rstd) {
  if (N <= 0 || G <= 0) return;
  const int64_t cpg = C / G, D = cpg * HW;
  if (D <= 0) {  // no elements: the statistics of an empty group (mean 0, variance 0)
    for (int64_t i = 0; i < N * G; ++i) {
      mean[i] = 0.0f;
      rstd[i] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(eps)));
    }
    return;
  }
  parallel_for(N * G, group_grain(D), [&](int64_t b, int64_t e) {
    for (int64_t ng = b; ng < e; ++ng) {
      const int64_t c0 = (ng % G) * cpg;
      group_forward(x + ng * D, weight ? weight + c0 : nullptr, bias ? bias + c0 : nullptr, cpg, HW, eps, y + ng * D,
                    mean + ng, rstd + ng);
    }
  });
}

void group_norm_backward(const float* gy, const float* x, const float* mean, const float* rstd, const float* weight,
                         int64_t N, int64_t C, int64_t HW, int64_t G, float* gx, float* gw, float* gb) {
  if (G <= 0) return;
  const int64_t cpg = C / G, D = cpg * HW;
  if (N <= 0 || D <= 0) {  // sums over no elements are 0
    for (int64_t c = 0; c < C; ++c) {
      if (gw) gw[c] = 0.0f;
      if (gb) gb[c] = 0.0f;
    }
    return;
  }
  // Per-(n, c) sums of dy * xhat and dy, added over n below in batch order.
  std::vector<double> part_w(gw ? static_cast<size_t>(N * C) : 0), part_b(gb ? static_cast<size_t>(N * C) : 0);
  parallel_for(N * G, group_grain(D), [&](int64_t b, int64_t e) {
    std::vector<double> scratch(static_cast<size_t>(3 * cpg));
    for (int64_t ng = b; ng < e; ++ng) {
      const int64_t nc0 = ng * cpg;  // (n, first channel of g) in the (N, C) layout
      const int64_t c0 = (ng % G) * cpg;
      group_backward(gy + ng * D, x + ng * D, mean[ng], rstd[ng], weight ? weight + c0 : nullptr, cpg, HW,
                     gx ? gx + ng * D : nullptr, gw ? part_w.data() + nc0 : nullptr, gb ? part_b.data() + nc0 : nullptr,
                     scratch.data());
    }
  });
  for (int k = 0; k < 2; ++k) {
    float* out = k == 0 ? gw : gb;
    if (!out) continue;
    const double* part = k == 0 ? part_w.data() : part_b.data();
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0.0;
      for (int64_t n = 0; n < N; ++n) acc += part[n * C + c];
      out[c] = static_cast<float>(acc);
    }
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
