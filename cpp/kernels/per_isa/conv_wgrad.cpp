// conv2d weight gradient as GEMMs over the whole batch, compiled per ISA (see conv.h).
//
// For one group, dW (OCg x K) = sum over images n of dY_n (OCg x P) * col(X_n)^T (P x K), K = Cg*KH*KW,
// P = OH*OW. Per image that is a GEMM with a reduction of only P (64 for an 8x8 output): short dot
// products whose partial sums cost more than the products. Here the batch is one reduction of N*P
// columns instead (column j is pixel j % P of image j / P), cut into fixed blocks of Q columns
// whose grad_y columns (OCg x Q) are copied out. Layers whose window rows are runs of an input row
// (KW 2..4, undilated columns, strided, >= 64 taps: DCGAN's k4 s2) never store the im2col: slices of 256
// pixels build their pixel rows of it (K floats each, fixed-size copies of window rows) into an
// L2-sized scratch that the GEMM microkernel reads in place, accumulated slice after slice
// (wgrad_slices; 64 -> 128 k4 s2 at 32x32, batch 16: ~14 -> ~12 ms). Other layers store the im2col
// of the block (K x Q) and go through sgemm (beta = 1 from the second block). Q and the slices
// depend on the geometry only, and each dW element is one fixed chain of slices and k steps, so
// results do not depend on the thread count.
#include <cstring>

#include "conv_tile.h"
#include "forgegrad/conv.h"
#include "forgegrad/gemm.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "gemm_internal.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// Floats of the two per-block buffers together: ~8 MiB, so a block's columns stay in L3 between
// their fill and the GEMM's packing, while the blocks stay long next to sgemm's K slices.
constexpr int64_t kWgradBlockFloats = int64_t(1) << 21;
// Taps per group from which wgrad_slices is used, and the pixels of one of its slices (the GEMM's
// reduction depth: a function of nothing else, so the sums' order is fixed).
constexpr int64_t kWgradMinTransposedK = 64;
constexpr int64_t kWgradKC = 256;

// dst[p - p0] = the im2col value of tap (kh, kw) at output pixel p, for p in [p0, p1) of one image
// channel s (H, W).
void im2col_segment(const Conv2dGeom& g, const float* s, int64_t kh, int64_t kw, int64_t p0, int64_t p1, float* dst) {
  // Output columns whose input column is inside the image: [ow_lo, ow_hi).
  const int64_t shift = kw * g.dil_w - g.pad_left, sw = g.stride_w;
  int64_t ow_lo = shift >= 0 ? 0 : (-shift + sw - 1) / sw;
  int64_t ow_hi = g.W - 1 - shift < 0 ? 0 : (g.W - 1 - shift) / sw + 1;
  if (ow_hi > g.OW) ow_hi = g.OW;
  if (ow_lo > ow_hi) ow_lo = ow_hi;
  for (int64_t p = p0; p < p1;) {
    const int64_t oh = p / g.OW, a = p % g.OW, b = min64(g.OW, a + (p1 - p));
    float* d = dst + (p - p0) - a;  // d[ow] is pixel (oh, ow)
    const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dil_h;
    if (ih < 0 || ih >= g.H) {
      std::memset(d + a, 0, sizeof(float) * (b - a));
    } else {
      const float* r = s + ih * g.W + shift;  // r[ow * sw] is pixel (oh, ow)'s input
      const int64_t lo = a > ow_lo ? a : ow_lo, hi = b < ow_hi ? b : ow_hi;
      if (lo >= hi) {
        std::memset(d + a, 0, sizeof(float) * (b - a));
      } else {
        std::memset(d + a, 0, sizeof(float) * (lo - a));
        if (sw == 1) {
          std::memcpy(d + lo, r + lo, sizeof(float) * (hi - lo));
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) d[ow] = r[ow * sw];
        }
        std::memset(d + hi, 0, sizeof(float) * (b - hi));
      }
    }
    p += b - a;
  }
}

// One window row at an image edge: d[kw] = r[kw * dil_w] for kw in [lo, hi), 0 elsewhere in [0, KW).
inline void window_row(const Conv2dGeom& g, const float* r, int64_t lo, int64_t hi, float* d) {
  for (int64_t kw = 0; kw < lo; ++kw) d[kw] = 0.0f;
  for (int64_t kw = lo; kw < hi; ++kw) d[kw] = r[kw * g.dil_w];
  for (int64_t kw = hi; kw < g.KW; ++kw) d[kw] = 0.0f;
}

// d[i * ld + j] = src[i * sw + j] for i < n, j < KWc.
template <int KWc>
inline void copy_windows(const float* src, int64_t sw, float* d, int64_t ld, int64_t n) {
  for (int64_t i = 0; i < n; ++i, src += sw, d += ld) std::memcpy(d, src, sizeof(float) * KWc);
}

// Rows of the transposed im2col for output pixels (oh, ow), ow in [a, b), of image channels s (Cg, H, W):
// row ow - a at dst + (ow - a) * ldt holds, at (c * KH + kh) * KW + kw, the input value tap (kh, kw) of
// channel c reads (0 in the padding). Channels and window rows outer, pixels inner: each input row is read
// once and the pixel rows fill side by side (pixel-major reads stepped H * W floats from channel to channel,
// which for 32x32 planes is 4 KiB: every channel's line in the same L1 set).
void im2col_t_rows(const Conv2dGeom& g, int64_t Cg, const float* s, int64_t oh, int64_t a, int64_t b, float* dst,
                   int64_t ldt) {
  const int64_t HW = g.H * g.W, KW = g.KW, step = g.KH * KW, sw = g.stride_w;
  // Pixels [ia, ib) whose whole window row lies inside the image: fixed-size copies, no bounds per pixel.
  int64_t ia = a, ib = b;
  while (ia < ib && ia * sw - g.pad_left < 0) ++ia;
  while (ib > ia && (ib - 1) * sw - g.pad_left + (KW - 1) * g.dil_w >= g.W) --ib;
  const auto edge = [&](const float* r, int64_t ow, float* d) {
    const int64_t iw0 = ow * sw - g.pad_left;
    int64_t lo = 0, hi = KW;  // kw in [lo, hi) reads inside the image
    while (lo < KW && iw0 + lo * g.dil_w < 0) ++lo;
    while (hi > lo && iw0 + (hi - 1) * g.dil_w >= g.W) --hi;
    window_row(g, r + iw0, lo, hi, d);
  };
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dil_h;
      float* d = dst + c * step + kh * KW;
      if (ih < 0 || ih >= g.H) {
        for (int64_t ow = a; ow < b; ++ow)
          for (int64_t kw = 0; kw < KW; ++kw) d[(ow - a) * ldt + kw] = 0.0f;
        continue;
      }
      const float* r = s + c * HW + ih * g.W;
      for (int64_t ow = a; ow < ia; ++ow) edge(r, ow, d + (ow - a) * ldt);
      if (ib > ia) {
        const float* src = r + ia * sw - g.pad_left;
        float* dd = d + (ia - a) * ldt;
        switch (KW) {
          case 4: copy_windows<4>(src, sw, dd, ldt, ib - ia); break;
          case 3: copy_windows<3>(src, sw, dd, ldt, ib - ia); break;
          default: copy_windows<2>(src, sw, dd, ldt, ib - ia); break;
        }
      }
      for (int64_t ow = ib > ia ? ib : ia; ow < b; ++ow) edge(r, ow, d + (ow - a) * ldt);
    }
}

// dW (OCg x K, rows K apart) (+)= dy (OCg x q, rows ld apart) . colT (q x K) for the q columns of one block:
// images from xs (each x image C * H * W floats after the last; Cg channels of one group), pixels
// [p0, p0 + pn) of each. In slices of kWgradKC columns: the slice's colT rows (im2col_t_rows) go to tcol
// (rows ldt apart), its dy columns are packed into A panels, and each column panel of tcol, read in place
// by the GEMM microkernel, meets every A panel while it is in L1. Threads take column panels: each dW
// element is the same chain of slices and k steps at any thread count. first: overwrite dW.
void wgrad_slices(const Conv2dGeom& g, int64_t Cg, int64_t OCg, const float* xs, int64_t p0, int64_t pn, int64_t q,
                  const float* dy, int64_t ld, float* tcol, int64_t ldt, float* apack, bool first, float* dw) {
  using gemm_detail::kGemmMR;
  using gemm_detail::kGemmNR;
  const int64_t K = Cg * g.KH * g.KW, img = g.C * g.H * g.W;
  const int64_t m_panels = (OCg + kGemmMR - 1) / kGemmMR, n_panels = (K + kGemmNR - 1) / kGemmNR;
  int64_t piece[3 * kWgradKC];  // (image, output row, first column) of each row piece of a slice
  for (int64_t s0 = 0; s0 < q; s0 += kWgradKC) {
    const int64_t kc = min64(kWgradKC, q - s0);
    int64_t npieces = 0;
    for (int64_t j = s0; j < s0 + kc; ++npieces) {
      const int64_t i = j / pn, p = p0 + j % pn, ow = p % g.OW;
      const int64_t len = min64(min64(g.OW - ow, s0 + kc - j), (i + 1) * pn - j);
      piece[3 * npieces] = j;
      piece[3 * npieces + 1] = len;
      piece[3 * npieces + 2] = i;
      j += len;
    }
    parallel_for_work(npieces, g.OW * K, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t j = piece[3 * t], len = piece[3 * t + 1], i = piece[3 * t + 2];
        const int64_t p = p0 + j % pn, oh = p / g.OW, ow = p % g.OW;
        im2col_t_rows(g, Cg, xs + i * img, oh, ow, ow + len, tcol + (j - s0) * ldt, ldt);
      }
    });
    for (int64_t mp = 0; mp < m_panels; ++mp) {
      const int64_t m0 = mp * kGemmMR;
      gemm_detail::pack_panel(dy + m0 * ld + s0, ld, 1, static_cast<int>(min64(kGemmMR, OCg - m0)), kc, kGemmMR,
                              apack + mp * kGemmMR * kc);
    }
    const float beta = first && s0 == 0 ? 0.0f : 1.0f;
    parallel_for_work(n_panels, OCg * kc * kGemmNR, [&](int64_t j0, int64_t j1) {
      for (int64_t jp = j0; jp < j1; ++jp) {
        const int cols = static_cast<int>(min64(kGemmNR, K - jp * kGemmNR));
        for (int64_t mp = 0; mp < m_panels; ++mp) {
          const int64_t m0 = mp * kGemmMR;
          gemm_detail::micro_tile(static_cast<int>(min64(kGemmMR, OCg - m0)), cols, kc, apack + mp * kGemmMR * kc,
                                  tcol + jp * kGemmNR, ldt, dw + m0 * K + jp * kGemmNR, K, 1.0f, beta);
        }
      }
    });
  }
}

}  // namespace

// grad_bias (OC,) of grad_y (N, OC, OH, OW): per channel, fixed chunks of per_chunk images summed
// in image order, chunk sums added in chunk order.
void conv_bias_grad(const Conv2dGeom& g, const float* gy, int64_t per_chunk, float* gb) {
  const int64_t OHW = g.OH * g.OW;
  parallel_for(g.OC, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t oc = o0; oc < o1; ++oc) {
      float total = 0.0f;
      for (int64_t n0 = 0; n0 < g.N; n0 += per_chunk) {
        float chunk = 0.0f;
        for (int64_t n = n0; n < min64(n0 + per_chunk, g.N); ++n) {
          const float* src = gy + (n * g.OC + oc) * OHW;
          vf s = vzero();
          int64_t p = 0;
          for (; p + W <= OHW; p += W) s = vadd(s, vload(src + p));
          if (p < OHW) s = vadd(s, vload_n(src + p, static_cast<int>(OHW - p)));
          const float t = vreduce_add(s);
          chunk = n == n0 ? t : chunk + t;
        }
        total = n0 == 0 ? chunk : total + chunk;
      }
      gb[oc] = total;
    }
  });
}

void conv_weight_grad_gemm(const Conv2dGeom& g, const float* x, const float* gy, float* gw) {
  const int64_t G = g.groups, Cg = g.C / G, OCg = g.OC / G, KK = g.KH * g.KW, K = Cg * KK;
  const int64_t P = g.OH * g.OW, HW = g.H * g.W;
  // Blocks of at most qmax columns: nb whole images when an image fits (equal counts), else equal
  // pixel ranges of one image at a time.
  int64_t qmax = kWgradBlockFloats / (K + OCg);
  qmax = qmax < 64 ? 64 : qmax;
  int64_t nb = 1, pparts = 1;
  if (P <= qmax) {
    const int64_t per = qmax / P, nblk = (g.N + per - 1) / per;
    nb = (g.N + nblk - 1) / nblk;
  } else {
    pparts = (P + qmax - 1) / qmax;
  }
  const int64_t pq = (P + pparts - 1) / pparts, Q = nb * pq;
  int64_t ld = round_up(Q, W);
  if (ld % 128 == 0) ld += W;  // rows a multiple of 512 bytes apart would share L1 sets
  // Strided layers whose window rows are short runs of an input row (KW 2..4, undilated columns) with
  // enough taps skip the stored im2col (wgrad_slices; measured on k4 s2 layers only).
  const bool transposed = g.KW >= 2 && g.KW <= 4 && g.dil_w == 1 && g.stride_w >= 2 && K >= kWgradMinTransposedK;
  int64_t ldt = round_up(K, W);
  if (ldt % 128 == 0) ldt += W;
  const int64_t a_floats = round_up(OCg, gemm_detail::kGemmMR) * kWgradKC;
  // Groups in parallel when there are several (each group's work then runs on one thread: the same bits).
  const auto group = [&](int64_t gi) {
    AlignedBuffer col(static_cast<size_t>(transposed ? kWgradKC * ldt + gemm_detail::kGemmNR : K * ld)),
        dy(static_cast<size_t>(OCg * ld)), apack(static_cast<size_t>(transposed ? a_floats : 0));
    if (transposed) std::memset(col.data(), 0, sizeof(float) * (kWgradKC * ldt + gemm_detail::kGemmNR));
    float* dw = gw + gi * OCg * K;
    bool first = true;
    for (int64_t n0 = 0; n0 < g.N; n0 += nb) {
      const int64_t ni = min64(nb, g.N - n0);
      for (int64_t p0 = 0; p0 < P; p0 += pq) {
        const int64_t pn = min64(pq, P - p0), q = ni * pn;  // columns: images n0 .. n0 + ni, pixels p0 .. p0 + pn
        parallel_for_work(OCg, q, [&](int64_t o0, int64_t o1) {
          for (int64_t oc = o0; oc < o1; ++oc)
            for (int64_t i = 0; i < ni; ++i)
              std::memcpy(dy.data() + oc * ld + i * pn, gy + ((n0 + i) * g.OC + gi * OCg + oc) * P + p0,
                          sizeof(float) * pn);
        });
        if (transposed) {
          const float* xs = x + (n0 * g.C + gi * Cg) * HW;
          wgrad_slices(g, Cg, OCg, xs, p0, pn, q, dy.data(), ld, col.data(), ldt, apack.data(), first, dw);
          first = false;
          continue;
        }
        parallel_for_work(K, q, [&](int64_t k0, int64_t k1) {
          for (int64_t k = k0; k < k1; ++k) {
            const int64_t c = k / KK, kh = (k / g.KW) % g.KH, kw = k % g.KW;
            for (int64_t i = 0; i < ni; ++i) {
              const float* s = x + ((n0 + i) * g.C + gi * Cg + c) * HW;
              float* d = col.data() + k * ld + i * pn;
              if (pn == P)
                im2col_plane(g, s, kh, kw, d);
              else
                im2col_segment(g, s, kh, kw, p0, p0 + pn, d);
            }
          }
        });
        FG_ISA_NS::sgemm(false, true, OCg, K, q, 1.0f, dy.data(), ld, col.data(), ld, first ? 0.0f : 1.0f, dw, K);
        first = false;
      }
    }
  };
  if (G == 1) {
    group(0);
  } else {
    parallel_tasks(G, region_work(g.N * P, OCg * K), group);
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
