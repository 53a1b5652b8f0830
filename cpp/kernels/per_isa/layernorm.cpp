// Layer normalisation and RMS normalisation over the last D elements of each row of a row-major
// (rows, D) float32 buffer (torch's normalized_shape, flattened), forward and backward:
//   layer_norm: y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps), var biased
//               (torch.nn.functional.layer_norm; mean and rstd are what torch.native_layer_norm saves)
//   rms_norm:   y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps)   (torch.nn.functional.rms_norm)
// weight / bias may be null (no affine part). D >= 1.
//
// Accuracy: the row mean is summed as sum(x - x[0]) and kept as a float pair (hi + lo) while the
// variance is summed over ((x - hi) - lo)^2, so a large common offset (1e4 + noise) costs no
// precision (torch's float Welford loses ~1e-3 absolute there). Sums run in float vector
// accumulators over blocks of 1024 elements, block sums added in double.
//
// Threads: rows are split across threads, each row reduced by one thread in a fixed order. The
// backward's column sums (grad_weight, grad_bias) are accumulated per fixed chunk of rows (the
// chunking depends on rows only) and the chunk partials added in chunk order, so every result is
// bit-identical for any thread count.
//
// The kernels are written once against simd.h. Only bind_layernorm.cpp calls them, so their
// FG_KERNEL declarations (the per-ISA dispatchers) live there, with no header of their own.
//
// Forward: one thread owns a row and takes three passes over it (mean, variance, output), which
// stay in L1/L2 for the usual widths. Backward: rows are grouped into fixed chunks; a chunk's rows
// are processed in order by one thread, which writes grad_x and adds the row's grad_weight /
// grad_bias terms into the chunk's partial sums; the partials are then summed in chunk order.
#include <cmath>

#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"
#include "norm_rows.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

using rows::imax;
using rows::imin;
using rows::keep_first;
using rows::mean_rstd;
using rows::row_sums;
using rows::tail0;

// Rows per thread below which another thread costs more than it saves.
int64_t row_grain(int64_t D) { return imax(1, 16384 / imax(1, D)); }

// ---- LayerNorm forward --------------------------------------------------------------------
// A row whose float sums overflowed (deviations beyond ~1e19, whose squares exceed float; or an
// infinite or NaN value): mean, variance and output in double, one element at a time, so values
// near float's limit still normalise as they do in double (torch's float32 gives NaN there).
void norm_row_double(const float* x, const float* w, const float* b, int64_t n, float eps, bool center, float* y,
                     float* mean_out, float* rstd_out) {
  double mean = 0.0;
  if (center) {
    for (int64_t i = 0; i < n; ++i) mean += static_cast<double>(x[i]);
    mean /= static_cast<double>(n);
  }
  double q = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    q += d * d;
  }
  const double rstd = 1.0 / std::sqrt(q / static_cast<double>(n) + static_cast<double>(eps));
  for (int64_t i = 0; i < n; ++i) {
    double v = (static_cast<double>(x[i]) - mean) * rstd;
    if (w) v *= static_cast<double>(w[i]);
    if (b) v += static_cast<double>(b[i]);
    y[i] = static_cast<float>(v);
  }
  if (mean_out) *mean_out = static_cast<float>(mean);
  *rstd_out = static_cast<float>(rstd);
}

void layer_norm_row(const float* x, const float* w, const float* b, int64_t n, float eps, float* y, float* mean_out,
                    float* rstd_out) {
  // Passes 1 and 2: the mean and the biased variance (rows::mean_rstd).
  float hi, lo;
  double rstd;
  if (!mean_rstd(x, n, eps, &hi, &lo, &rstd)) return norm_row_double(x, w, b, n, eps, true, y, mean_out, rstd_out);
  const vf H = vset1(hi), L = vset1(lo);
  *mean_out = hi;
  *rstd_out = static_cast<float>(rstd);
  // Pass 3: y = (x - mean) * rstd * w + b.
  const vf R = vset1(static_cast<float>(rstd));
  for (int64_t i = 0; i < n; i += W) {
    const int r = static_cast<int>(imin(W, n - i));
    vf v = vmul(vsub(vsub(vload_upto(x + i, r), H), L), R);
    if (w && b)
      v = vfmadd(v, vload_upto(w + i, r), vload_upto(b + i, r));
    else if (w)
      v = vmul(v, vload_upto(w + i, r));
    else if (b)
      v = vadd(v, vload_upto(b + i, r));
    vstore_upto(y + i, v, r);
  }
}

// ---- RMSNorm forward ----------------------------------------------------------------------
void rms_norm_row(const float* x, const float* w, int64_t n, float eps, float* y, float* rstd_out) {
  double s;
  row_sums<1>(
      n,
      [&](int64_t i, int r, vf* a) {
        vf v = vload_upto(x + i, r);  // lanes >= r load as 0
        a[0] = vfmadd(v, v, a[0]);
      },
      &s);
  if (!std::isfinite(s)) return norm_row_double(x, w, nullptr, n, eps, false, y, nullptr, rstd_out);
  const double rstd = 1.0 / std::sqrt(s / static_cast<double>(n) + static_cast<double>(eps));
  *rstd_out = static_cast<float>(rstd);
  const vf R = vset1(static_cast<float>(rstd));
  for (int64_t i = 0; i < n; i += W) {
    const int r = static_cast<int>(imin(W, n - i));
    vf v = vmul(vload_upto(x + i, r), R);
    if (w) v = vmul(v, vload_upto(w + i, r));
    vstore_upto(y + i, v, r);
  }
}

// ---- Backward: fixed row chunks with per-chunk column partials ----------------------------
// Rows per chunk: at least kMinChunkRows, and at most kMaxChunks chunks (bounds the partial
// buffers to kMaxChunks * D floats per column sum). Depends on `rows` only, never on threads.
constexpr int64_t kMinChunkRows = 16;
constexpr int64_t kMaxChunks = 256;

struct Chunks {
  int64_t size, count;
};
Chunks chunks_of(int64_t rows) {
  const int64_t size = imax(kMinChunkRows, (rows + kMaxChunks - 1) / kMaxChunks);
  return {size, (rows + size - 1) / size};
}

// Column sums for the backward: while chunk c runs, cols[k] points at its partial row for output
// k (zeroed first). With one chunk the partials are the outputs themselves; otherwise finish()
// adds the chunk partials of each column in chunk order (in double).
class ColumnSums {
 public:
  ColumnSums(int64_t D, int64_t nchunks, float* out0, float* out1) : D_(D), n_(nchunks), out_{out0, out1} {
    const int64_t k = (out0 ? 1 : 0) + (out1 ? 1 : 0);
    if (k && n_ > 1) buf_.reset(static_cast<size_t>(k * n_ * D_));
  }
  // The partial rows of chunk c for outputs 0 and 1 (null where that output is not wanted), zeroed.
  void partials(int64_t c, float** p0, float** p1) const {
    float* base = buf_.data();
    float* ps[2];
    int used = 0;
    for (int k = 0; k < 2; ++k) {
      ps[k] = nullptr;
      if (!out_[k]) continue;
      ps[k] = n_ > 1 ? base + (used * n_ + c) * D_ : out_[k];
      ++used;
      for (int64_t j = 0; j < D_; ++j) ps[k][j] = 0.0f;
    }
    *p0 = ps[0];
    *p1 = ps[1];
  }
  void finish() const {
    if (n_ <= 1) return;
    int used = 0;
    for (int k = 0; k < 2; ++k) {
      if (!out_[k]) continue;
      const float* part = buf_.data() + used * n_ * D_;
      float* out = out_[k];
      // Blocks of columns, the chunks walked row by row (contiguous reads); each column's chunk
      // partials are still added in chunk order.
      constexpr int64_t kCols = 256;
      parallel_for((D_ + kCols - 1) / kCols, imax(1, 65536 / (n_ * kCols)), [&](int64_t b0, int64_t b1) {
        double acc[kCols];
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t j0 = blk * kCols, nj = imin(kCols, D_ - j0);
          for (int64_t j = 0; j < nj; ++j) acc[j] = 0.0;
          for (int64_t c = 0; c < n_; ++c) {
            const float* p = part + c * D_ + j0;
            for (int64_t j = 0; j < nj; ++j) acc[j] += static_cast<double>(p[j]);
          }
          for (int64_t j = 0; j < nj; ++j) out[j0 + j] = static_cast<float>(acc[j]);
        }
      });
      ++used;
    }
  }

 private:
  int64_t D_, n_;
  float* out_[2];
  AlignedBuffer buf_;
};

// One LayerNorm backward row. With xhat = (x - mean) * rstd and gw = g * w:
//   grad_x = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)),  pw += g * xhat,  pb += g.
// The saved mean m is a rounded float; delta = mean(x - m) is its residual, measured here, so xhat
// uses the exact mean: xhat = ((x - m) - delta) * rstd.
void layer_norm_backward_row(const float* g, const float* x, float m, float rs, const float* w, int64_t n, float* gx,
                             float* pw, float* pb) {
  const vf M = vset1(m);
  double s[3];  // sum(x - m), sum(gw), sum(gw * (x - m))
  row_sums<3>(
      n,
      [&](int64_t i, int r, vf* a) {
        vf d = tail0(vsub(vload_upto(x + i, r), M), r);
        vf gv = vload_upto(g + i, r);  // lanes >= r load as 0
        if (w) gv = vmul(gv, vload_upto(w + i, r));
        a[0] = vadd(a[0], d);
        a[1] = vadd(a[1], gv);
        a[2] = vfmadd(gv, d, a[2]);
      },
      s);
  const double dn = static_cast<double>(n), r64 = static_cast<double>(rs);
  const double delta = s[0] / dn;
  const double mean_gw = s[1] / dn;
  const double mean_gwx = r64 * (s[2] - delta * s[1]) / dn;  // mean(gw * xhat)
  const vf Dl = vset1(static_cast<float>(delta)), R = vset1(rs);
  const vf C1 = vset1(static_cast<float>(r64 * mean_gw)), C2 = vset1(static_cast<float>(r64 * mean_gwx));
  for (int64_t i = 0; i < n; i += W) {
    const int r = static_cast<int>(imin(W, n - i));
    const vf gv = vload_upto(g + i, r);
    const vf xh = vmul(vsub(vsub(vload_upto(x + i, r), M), Dl), R);
    if (pw) vstore_upto(pw + i, vfmadd(gv, xh, vload_upto(pw + i, r)), r);
    if (pb) vstore_upto(pb + i, vadd(vload_upto(pb + i, r), gv), r);
    if (gx) {
      const vf gwv = w ? vmul(gv, vload_upto(w + i, r)) : gv;
      vstore_upto(gx + i, vfnmadd(xh, C2, vsub(vmul(R, gwv), C1)), r);
    }
  }
}

// One RMSNorm backward row. With xhat = x * rstd and gw = g * w:
//   grad_x = rstd * (gw - xhat * mean(gw * xhat)) = rstd * gw - x * rstd^3 * mean(gw * x),  pw += g * xhat.
void rms_norm_backward_row(const float* g, const float* x, float rs, const float* w, int64_t n, float* gx, float* pw) {
  double s = 0.0;  // sum(gw * x)
  if (gx)
    row_sums<1>(
        n,
        [&](int64_t i, int r, vf* a) {
          vf gv = vload_upto(g + i, r);
          if (w) gv = vmul(gv, vload_upto(w + i, r));
          a[0] = vfmadd(gv, vload_upto(x + i, r), a[0]);
        },
        &s);
  const double r64 = static_cast<double>(rs);
  const vf R = vset1(rs), C = vset1(static_cast<float>(r64 * r64 * r64 * s / static_cast<double>(n)));
  for (int64_t i = 0; i < n; i += W) {
    const int r = static_cast<int>(imin(W, n - i));
    const vf gv = vload_upto(g + i, r), xv = vload_upto(x + i, r);
    if (pw) vstore_upto(pw + i, vfmadd(gv, vmul(xv, R), vload_upto(pw + i, r)), r);
    if (gx) {
      const vf gwv = w ? vmul(gv, vload_upto(w + i, r)) : gv;
      vstore_upto(gx + i, vfnmadd(xv, C, vmul(R, gwv)), r);
    }
  }
}

}  // namespace

void layer_norm_forward(const float* x, const float* weight, const float* bias, int64_t nrows, int64_t D, float eps,
                        float* y, float* mean, float* rstd) {
  if (D <= 0) return;
  parallel_for(nrows, row_grain(D), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) layer_norm_row(x + r * D, weight, bias, D, eps, y + r * D, mean + r, rstd + r);
  });
}

void layer_norm_backward(const float* gy, const float* x, const float* mean, const float* rstd, const float* weight,
                         int64_t nrows, int64_t D, float* gx, float* gw, float* gb) {
  if (D <= 0 || nrows < 0) return;
  const Chunks ch = chunks_of(nrows);
  ColumnSums sums(D, ch.count, gw, gb);
  if (nrows == 0) {  // column sums over no rows are 0
    float *p0, *p1;
    sums.partials(0, &p0, &p1);
    return;
  }
  parallel_for(ch.count, imax(1, 16384 / imax(1, ch.size * D)), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float *pw, *pb;
      sums.partials(c, &pw, &pb);
      const int64_t r1 = imin(nrows, (c + 1) * ch.size);
      for (int64_t r = c * ch.size; r < r1; ++r)
        layer_norm_backward_row(gy + r * D, x + r * D, mean[r], rstd[r], weight, D, gx ? gx + r * D : nullptr, pw, pb);
    }
  });
  sums.finish();
}

void rms_norm_forward(const float* x, const float* weight, int64_t nrows, int64_t D, float eps, float* y, float* rstd) {
  if (D <= 0) return;
  parallel_for(nrows, row_grain(D), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) rms_norm_row(x + r * D, weight, D, eps, y + r * D, rstd + r);
  });
}

void rms_norm_backward(const float* gy, const float* x, const float* rstd, const float* weight, int64_t nrows,
                       int64_t D, float* gx, float* gw) {
  if (D <= 0 || nrows < 0) return;
  const Chunks ch = chunks_of(nrows);
  ColumnSums sums(D, ch.count, gw, nullptr);
  if (nrows == 0) {
    float *p0, *p1;
    sums.partials(0, &p0, &p1);
    return;
  }
  parallel_for(ch.count, imax(1, 16384 / imax(1, ch.size * D)), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float *pw, *unused;
      sums.partials(c, &pw, &unused);
      const int64_t r1 = imin(nrows, (c + 1) * ch.size);
      for (int64_t r = c * ch.size; r < r1; ++r)
        rms_norm_backward_row(gy + r * D, x + r * D, rstd[r], weight, D, gx ? gx + r * D : nullptr, pw);
    }
  });
  sums.finish();
}

}  // namespace FG_ISA_NS
}  // namespace fg
