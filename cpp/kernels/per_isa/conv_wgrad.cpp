// conv2d weight gradient as GEMMs over the whole batch, compiled per ISA (see conv.h).
//
// For one group, dW (OCg x K) = sum over images n of dY_n (OCg x P) * col(X_n)^T (P x K), K = Cg*KH*KW,
// P = OH*OW. Per image that is a GEMM with a reduction of only P (64 for an 8x8 output): short dot
// products whose partial sums cost more than the products. Here the batch is one reduction of N*P
// columns instead (column j is pixel j % P of image j / P), cut into fixed blocks of Q columns:
// per block, the im2col of those columns (K x Q) and the matching grad_y columns (OCg x Q) go
// through sgemm, accumulated into dW block after block (beta = 1). Q depends on the geometry only,
// and sgemm's results do not depend on the thread count, so neither do these.
#include <cstring>

#include "conv_tile.h"
#include "forgegrad/conv.h"
#include "forgegrad/gemm.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// Floats of the two per-block buffers together: ~8 MiB, so a block's columns stay in L3 between
// their fill and the GEMM's packing, while the blocks stay long next to sgemm's K slices.
constexpr int64_t kWgradBlockFloats = int64_t(1) << 21;

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

// The whole plane of tap (kh, kw): dst[p] for every output pixel p of image channel s. Plain loops
// (no memset calls: rows are often 8-16 floats) that the compiler vectorises.
void im2col_plane(const Conv2dGeom& g, const float* s, int64_t kh, int64_t kw, float* dst) {
  const int64_t shift = kw * g.dil_w - g.pad_left, sw = g.stride_w, OW = g.OW;
  int64_t ow_lo = shift >= 0 ? 0 : (-shift + sw - 1) / sw;
  int64_t ow_hi = g.W - 1 - shift < 0 ? 0 : (g.W - 1 - shift) / sw + 1;
  if (ow_hi > OW) ow_hi = OW;
  if (ow_lo > ow_hi) ow_lo = ow_hi;
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    float* d = dst + oh * OW;
    const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dil_h;
    if (ih < 0 || ih >= g.H) {
      for (int64_t ow = 0; ow < OW; ++ow) d[ow] = 0.0f;
      continue;
    }
    const float* r = s + ih * g.W + shift;  // r[ow * sw] is pixel (oh, ow)'s input
    for (int64_t ow = 0; ow < ow_lo; ++ow) d[ow] = 0.0f;
    if (sw == 1) {
      for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = r[ow];
    } else if (sw == 2) {
      for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = r[2 * ow];
    } else {
      for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = r[ow * sw];
    }
    for (int64_t ow = ow_hi; ow < OW; ++ow) d[ow] = 0.0f;
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
  // Groups in parallel when there are several (each group's work then runs on one thread: the same bits).
  const auto group = [&](int64_t gi) {
    AlignedBuffer col(static_cast<size_t>(K * ld)), dy(static_cast<size_t>(OCg * ld));
    float* dw = gw + gi * OCg * K;
    bool first = true;
    for (int64_t n0 = 0; n0 < g.N; n0 += nb) {
      const int64_t ni = min64(nb, g.N - n0);
      for (int64_t p0 = 0; p0 < P; p0 += pq) {
        const int64_t pn = min64(pq, P - p0), q = ni * pn;  // columns: images n0 .. n0 + ni, pixels p0 .. p0 + pn
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
        parallel_for_work(OCg, q, [&](int64_t o0, int64_t o1) {
          for (int64_t oc = o0; oc < o1; ++oc)
            for (int64_t i = 0; i < ni; ++i)
              std::memcpy(dy.data() + oc * ld + i * pn, gy + ((n0 + i) * g.OC + gi * OCg + oc) * P + p0,
                          sizeof(float) * pn);
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
