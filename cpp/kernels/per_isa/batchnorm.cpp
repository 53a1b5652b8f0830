// Batch normalisation kernels, compiled per ISA (see batchnorm.h).
//
// Statistics: per channel, each (n, c) row of L values is summed with vector accumulators (in
// float within blocks of 1024 values, block sums in double), and the N row sums are added in order
// into a double. For L == 1 ((N, C) input) the channels are contiguous instead, so blocks of
// channels are summed down the batch with double accumulators. Either way a channel's sums have one
// fixed order whichever thread owns it, and are taken about the channel's first value. A channel whose
// float accumulators overflow (values near float's limit) is summed again in double (channel_stats_double).
#include <cmath>

#include "forgegrad/batchnorm.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"
#include "softmax_rows.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

constexpr int64_t kChanBlock = 64;  // channels per block on the L == 1 path

// Row sums (rows::row_sum): float vector accumulators over blocks of 1024 values, block sums in
// double, so a long row (a large H x W) keeps ulp-level error.

// sum (p - shift)
inline double row_sum_about(const float* p, int64_t L, float shift) {
  const vf s = vset1(shift);
  return rows::row_sum(
      L, [&](int64_t i) { return vsub(vload(p + i), s); },
      [&](int64_t i, int r) { return rows::keep_first(vsub(vload_n(p + i, r), s), vzero(), r); });
}

// sum ((p - hi) - lo)^2: the mean as a float pair hi + lo, so the centred values keep their digits
inline double row_sqdiff(const float* p, int64_t L, float hi, float lo) {
  const vf h = vset1(hi), l = vset1(lo);
  return rows::row_sum(
      L,
      [&](int64_t i) {
        const vf d = vsub(vsub(vload(p + i), h), l);
        return vmul(d, d);
      },
      [&](int64_t i, int r) {
        const vf d = rows::keep_first(vsub(vsub(vload_n(p + i, r), h), l), vzero(), r);
        return vmul(d, d);
      });
}

// sum g and sum (x - mean) * g (the lanes of g past a partial vector load as 0)
inline double row_sum_plain(const float* g, int64_t L) {
  return rows::row_sum(L, [&](int64_t i) { return vload(g + i); }, [&](int64_t i, int r) { return vload_n(g + i, r); });
}
inline double row_dot_centered(const float* x, const float* g, int64_t L, float mean) {
  const vf m = vset1(mean);
  return rows::row_sum(
      L, [&](int64_t i) { return vmul(vsub(vload(x + i), m), vload(g + i)); },
      [&](int64_t i, int r) { return vmul(vsub(vload_n(x + i, r), m), vload_n(g + i, r)); });
}

// y = x * alpha + beta over a row of L values
inline void row_affine(const float* x, float* y, int64_t L, float alpha, float beta) {
  const vf a = vset1(alpha), b = vset1(beta);
  int64_t i = 0;
  for (; i + W <= L; i += W) vstore(y + i, vfmadd(vload(x + i), a, b));
  if (i < L) {
    const int n = static_cast<int>(L - i);
    vstore_n(y + i, vfmadd(vload_n(x + i, n), a, b), n);
  }
}

// gx = g * a + x * b + c over a row
inline void row_affine2(const float* g, const float* x, float* y, int64_t L, float a, float b, float c) {
  const vf va = vset1(a), vb = vset1(b), vc = vset1(c);
  int64_t i = 0;
  for (; i + W <= L; i += W) vstore(y + i, vfmadd(vload(g + i), va, vfmadd(vload(x + i), vb, vc)));
  if (i < L) {
    const int n = static_cast<int>(L - i);
    vstore_n(y + i, vfmadd(vload_n(g + i, n), va, vfmadd(vload_n(x + i, n), vb, vc)), n);
  }
}

// y = g * a over a row (eval's gradient: x takes no part, so a NaN / inf x does not reach gx, as in torch)
inline void row_scale(const float* g, float* y, int64_t L, float a) {
  const vf va = vset1(a);
  int64_t i = 0;
  for (; i + W <= L; i += W) vstore(y + i, vmul(vload(g + i), va));
  if (i < L) {
    const int n = static_cast<int>(L - i);
    vstore_n(y + i, vmul(vload_n(g + i, n), va), n);
  }
}

// A channel's statistics all in double, one value at a time: taken when the float accumulators of the
// vector path overflowed (values near float's limit, ~3e38: their sum, or a square of a difference past
// 1.8e19, is inf in float and finite in double). Same fixed order whichever thread runs it.
void channel_stats_double(int64_t N, int64_t C, int64_t L, const float* x, int64_t c, double* mean, double* var) {
  const double cnt = static_cast<double>(N) * static_cast<double>(L), x0 = x[c * L];
  double s = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const float* r = x + (n * C + c) * L;
    for (int64_t i = 0; i < L; ++i) s += static_cast<double>(r[i]) - x0;
  }
  const double m = x0 + s / cnt;
  double q = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const float* r = x + (n * C + c) * L;
    for (int64_t i = 0; i < L; ++i) {
      const double d = static_cast<double>(r[i]) - m;
      q += d * d;
    }
  }
  *mean = m;
  *var = q / cnt;
}

// Per-channel mean and biased variance (double) of x viewed as (N, C, L), channels [c0, c1). The
// sums are taken about each channel's first value: a channel of equal values (a broadcast input)
// has mean exactly that value and variance 0, and a large common offset costs no precision.
void channel_stats(int64_t N, int64_t C, int64_t L, const float* x, int64_t c0, int64_t c1, double* mean, double* var) {
  const double cnt = static_cast<double>(N) * static_cast<double>(L);
  if (N == 0 || L == 0) {
    for (int64_t c = c0; c < c1; ++c) mean[c - c0] = 0.0 / cnt, var[c - c0] = 0.0 / cnt;  // NaN, as torch
    return;
  }
  if (L == 1) {
    for (int64_t c = c0; c < c1; ++c) mean[c - c0] = 0.0, var[c - c0] = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) mean[c - c0] += static_cast<double>(x[n * C + c]) - x[c];
    for (int64_t c = c0; c < c1; ++c) mean[c - c0] = x[c] + mean[c - c0] / cnt;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) {
        const double d = x[n * C + c] - mean[c - c0];
        var[c - c0] += d * d;
      }
    for (int64_t c = c0; c < c1; ++c) var[c - c0] /= cnt;
    return;
  }
  for (int64_t c = c0; c < c1; ++c) {
    const float x0 = x[c * L];
    double s = 0.0;
    for (int64_t n = 0; n < N; ++n) s += row_sum_about(x + (n * C + c) * L, L, x0);
    const double m = static_cast<double>(x0) + s / cnt;
    const float hi = static_cast<float>(m), lo = static_cast<float>(m - static_cast<double>(hi));
    double q = 0.0;
    for (int64_t n = 0; n < N; ++n) q += row_sqdiff(x + (n * C + c) * L, L, hi, lo);
    mean[c - c0] = m;
    var[c - c0] = q / cnt;
    // float overflow (or a non-finite input, which the double pass gives as NaN / inf again)
    if (!std::isfinite(m) || !std::isfinite(q)) channel_stats_double(N, C, L, x, c, &mean[c - c0], &var[c - c0]);
  }
}

// sum_g and sum (x - mean) * g per channel, channels [c0, c1).
void channel_grad_sums(int64_t N, int64_t C, int64_t L, const float* x, const float* g, const float* mean, int64_t c0,
                       int64_t c1, double* sum_g, double* dot) {
  if (L == 1) {
    for (int64_t c = c0; c < c1; ++c) sum_g[c - c0] = 0.0, dot[c - c0] = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) {
        const float gv = g[n * C + c];
        sum_g[c - c0] += gv;
        dot[c - c0] += (static_cast<double>(x[n * C + c]) - mean[c]) * gv;  // no float overflow near 3e38
      }
    return;
  }
  for (int64_t c = c0; c < c1; ++c) {
    double s = 0.0, d = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + (n * C + c) * L;
      const float* gr = g + (n * C + c) * L;
      s += row_sum_plain(gr, L);
      d += row_dot_centered(xr, gr, L, mean[c]);
    }
    if (!std::isfinite(s) || !std::isfinite(d)) {
      // the float row accumulators overflowed ((x - mean) * g past float's limit): again in double
      s = d = 0.0;
      for (int64_t n = 0; n < N; ++n) {
        const float* xr = x + (n * C + c) * L;
        const float* gr = g + (n * C + c) * L;
        for (int64_t i = 0; i < L; ++i) {
          s += gr[i];
          d += (static_cast<double>(xr[i]) - mean[c]) * gr[i];
        }
      }
    }
    sum_g[c - c0] = s;
    dot[c - c0] = d;
  }
}

}  // namespace

void batch_norm_forward(int64_t N, int64_t C, int64_t L, const float* x, const float* weight, const float* bias,
                        float* running_mean, float* running_var, bool training, float momentum, float eps, float* y,
                        float* save_mean, float* save_invstd) {
  const double cnt = static_cast<double>(N) * static_cast<double>(L);
  if (training) {
    parallel_for((C + kChanBlock - 1) / kChanBlock, 1, [&](int64_t b0, int64_t b1) {
      double mean[kChanBlock], var[kChanBlock];
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t c0 = b * kChanBlock, c1 = c0 + kChanBlock < C ? c0 + kChanBlock : C;
        channel_stats(N, C, L, x, c0, c1, mean, var);
        for (int64_t c = c0; c < c1; ++c) {
          const double m = mean[c - c0], v = var[c - c0];
          save_mean[c] = static_cast<float>(m);
          save_invstd[c] = static_cast<float>(1.0 / std::sqrt(v + static_cast<double>(eps)));
          if (running_mean) running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * m);
          if (running_var && cnt > 1)
            running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * v * cnt / (cnt - 1));
        }
      }
    });
  } else {
    for (int64_t c = 0; c < C; ++c) {
      save_mean[c] = running_mean[c];
      save_invstd[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps));
    }
  }
  AlignedBuffer alpha(static_cast<size_t>(C)), beta(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const float a = save_invstd[c] * (weight ? weight[c] : 1.0f);
    alpha.data()[c] = a;
    beta.data()[c] = (bias ? bias[c] : 0.0f) - save_mean[c] * a;
  }
  const float* al = alpha.data();
  const float* be = beta.data();
  if (L == 1) {
    parallel_for(N, 64, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const float* xr = x + n * C;
        float* yr = y + n * C;
        int64_t c = 0;
        for (; c + W <= C; c += W) vstore(yr + c, vfmadd(vload(xr + c), vload(al + c), vload(be + c)));
        for (; c < C; ++c) yr[c] = xr[c] * al[c] + be[c];
      }
    });
    return;
  }
  if (L == 0) return;  // an empty spatial axis: nothing to write (and 4096 / L would trap)
  parallel_for(N * C, L >= 4096 ? 1 : 4096 / L, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r % C;
      row_affine(x + r * L, y + r * L, L, al[c], be[c]);
    }
  });
}

void batch_norm_backward(int64_t N, int64_t C, int64_t L, const float* x, const float* gy, const float* weight,
                         const float* save_mean, const float* save_invstd, bool training, float* gx, float* gw,
                         float* gb) {
  const double cnt = static_cast<double>(N) * static_cast<double>(L);
  const bool need_sums = gw || gb || (training && gx);
  // Per channel: gx = gy * ga + x * gbx + gc (the training formula expanded; eval: gbx = gc = 0).
  AlignedBuffer ga(static_cast<size_t>(C)), gbx(static_cast<size_t>(C)), gc(static_cast<size_t>(C));
  parallel_for((C + kChanBlock - 1) / kChanBlock, 1, [&](int64_t b0, int64_t b1) {
    double sum_g[kChanBlock], dot[kChanBlock];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c0 = b * kChanBlock, c1 = c0 + kChanBlock < C ? c0 + kChanBlock : C;
      if (need_sums) channel_grad_sums(N, C, L, x, gy, save_mean, c0, c1, sum_g, dot);
      for (int64_t c = c0; c < c1; ++c) {
        const double inv = save_invstd[c], w = weight ? weight[c] : 1.0;
        if (gw) gw[c] = static_cast<float>(dot[c - c0] * inv);
        if (gb) gb[c] = static_cast<float>(sum_g[c - c0]);
        if (!gx) continue;
        if (training) {
          // gx = (gy - mean(gy) - (x - mean) * k) * invstd * w, k = dot * invstd^2 / cnt
          const double k = dot[c - c0] * inv * inv / cnt, gm = sum_g[c - c0] / cnt, s = inv * w;
          ga.data()[c] = static_cast<float>(s);
          gbx.data()[c] = static_cast<float>(-k * s);
          gc.data()[c] = static_cast<float>((save_mean[c] * k - gm) * s);
        } else {
          ga.data()[c] = static_cast<float>(inv * w);
          gbx.data()[c] = 0.0f;
          gc.data()[c] = 0.0f;
        }
      }
    }
  });
  if (!gx) return;
  const float* a = ga.data();
  const float* bx = gbx.data();
  const float* cc = gc.data();
  if (L == 1) {
    parallel_for(N, 64, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const float* g = gy + n * C;
        const float* xr = x + n * C;
        float* o = gx + n * C;
        int64_t c = 0;
        if (!training) {
          for (; c + W <= C; c += W) vstore(o + c, vmul(vload(g + c), vload(a + c)));
          for (; c < C; ++c) o[c] = g[c] * a[c];
          continue;
        }
        for (; c + W <= C; c += W)
          vstore(o + c, vfmadd(vload(g + c), vload(a + c), vfmadd(vload(xr + c), vload(bx + c), vload(cc + c))));
        for (; c < C; ++c) o[c] = g[c] * a[c] + (xr[c] * bx[c] + cc[c]);
      }
    });
    return;
  }
  if (L == 0) return;  // an empty spatial axis: nothing to write (and 4096 / L would trap)
  parallel_for(N * C, L >= 4096 ? 1 : 4096 / L, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r % C;
      if (training)
        row_affine2(gy + r * L, x + r * L, gx + r * L, L, a[c], bx[c], cc[c]);
      else
        row_scale(gy + r * L, gx + r * L, L, a[c]);
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
