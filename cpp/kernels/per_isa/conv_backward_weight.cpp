// The 2-D convolution weight and bias gradients, compiled per ISA (the layout and the kernels: conv.cpp's
// opening comment). Batch sums run over fixed chunks of images added in order: the same bits at any thread count.
#include <cstring>

#include "conv_plan.h"
#include "conv_tile.h"
#include "forgegrad/conv.h"
#include "forgegrad/gemm.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

#if defined(__AVX512F__)
constexpr int kConvDotM = 4, kConvDotK = 6;  // dot kernel: 4 x 6 accumulators
#else
constexpr int kConvDotM = 2, kConvDotK = 4;
#endif

// D[m][j] (+)= sum_i sum_v G_i[m][v*W + lane] * B_i[off[j] + pos[v] + lane] for m < kConvDotM, j < kConvDotK
// (only dm x dk stored), over nimg images i whose G rows and B buffers are g_step / b_step floats
// apart. G is zero in invalid lanes. accumulate: add to D's old value, else overwrite. Running
// over several images per call keeps the accumulators in registers longer: fewer horizontal sums.
// Kept out of line: inlined into its callers' lambdas it ran at half speed (register pressure).
__attribute__((noinline)) void dot_kernel(const float* const* g_rows, int64_t g_step, const float* B, int64_t b_step,
                                          int64_t nimg, const int64_t* off, const VecList& vl, float* const* d_rows,
                                          const int64_t* d_cols, int dm, int dk, bool accumulate) {
  vf acc[kConvDotM][kConvDotK];
#pragma GCC unroll 8
  for (int m = 0; m < kConvDotM; ++m)
#pragma GCC unroll 8
    for (int j = 0; j < kConvDotK; ++j) acc[m][j] = vzero();
  const int64_t* pos = vl.pos.p;
  for (int64_t i = 0; i < nimg; ++i) {
    const float* b[kConvDotK];
    const float* gr[kConvDotM];
    for (int j = 0; j < kConvDotK; ++j) b[j] = B + i * b_step + off[j];
    for (int m = 0; m < kConvDotM; ++m) gr[m] = g_rows[m] + i * g_step;
    for (int64_t v = 0; v < vl.n; ++v) {
      const int64_t q = pos[v], gq = v * W;
      vf gv[kConvDotM];
#pragma GCC unroll 8
      for (int m = 0; m < kConvDotM; ++m) gv[m] = vload(gr[m] + gq);
#pragma GCC unroll 8
      for (int j = 0; j < kConvDotK; ++j) {
        vf bv = vload(b[j] + q);
#pragma GCC unroll 8
        for (int m = 0; m < kConvDotM; ++m) acc[m][j] = vfmadd(gv[m], bv, acc[m][j]);
      }
    }
  }
  for (int m = 0; m < dm; ++m)
    for (int j = 0; j < dk; ++j) {
      float s = vreduce_add(acc[m][j]);
      float* d = d_rows[m] + d_cols[j];
      *d = accumulate ? *d + s : s;
    }
}

// Weight gradient by Winograd (use_winograd(g) holds): per group, units of nb images (a function of
// the geometry) accumulate S (16, OCg, Cg) in image order, every thread working inside each unit
// (transforms, then sgemm over all the unit's tiles); then S is transformed back to 3x3 kernels.
void backward_weight_winograd(const Conv2dGeom& g, const float* x, const float* gy, float* gw) {
  const int64_t G = g.groups, Cg = g.C / G, OCg = g.OC / G;
  const Plan pl = make_plan(g);
  // Units whose transformed planes (16 (Cg + OCg) per tile) fill about 2 MiB: long enough GEMM reductions,
  // few passes over S, and scratch that the transforms leave mostly in L2 for sgemm's packing. (8 MiB units,
  // in L3, measured 10-25% slower on Zen 5 at 1 thread: LeNet's 64x32x14x14 -> 64 and 32x64x32x32 -> 64;
  // 8x16x28x28 -> 16, now two units instead of one, 0.19 -> 0.22 ms.)
  const int64_t tiles = ((g.OH + 1) / 2) * ((g.OW + 1) / 2);
  int64_t nb = (int64_t(1) << 19) / (16 * (Cg + OCg) * tiles);
  nb = nb < 1 ? 1 : (nb > g.N ? g.N : nb);
  const Winograd3x3 wp = winograd_plan(Cg, OCg, pl.Hp, pl.Wp, g.OH, g.OW, nb);
  AlignedBuffer S(static_cast<size_t>(16 * OCg * Cg)), B(static_cast<size_t>(nb * pl.bsize)),
      scratch(static_cast<size_t>(winograd_wgrad_scratch_floats(wp)));
  for (int64_t gi = 0; gi < G; ++gi) {
    for (int64_t n0 = 0; n0 < g.N; n0 += nb) {
      Winograd3x3 up = wp;
      up.nimg = min64(nb, g.N - n0);
      for (int64_t i = 0; i < up.nimg; ++i)
        fill_input(g, pl, x + ((n0 + i) * g.C + gi * Cg) * g.H * g.W, B.data() + i * pl.bsize);
      winograd_wgrad_unit(up, B.data(), pl.bsize, gy + (n0 * g.OC + gi * OCg) * g.OH * g.OW, g.OC * g.OH * g.OW,
                          S.data(), n0 != 0, scratch.data());
    }
    winograd_weight_grad(OCg, Cg, S.data(), gw + gi * OCg * Cg * 9);
  }
}

// The weight gradient as batch-wide GEMMs (conv_weight_grad_gemm) needs enough output channels and
// taps per group for sgemm's register tiles; thinner layers (depthwise, grouped with few channels,
// single-channel inputs) stay on the dot kernel below, which measured faster there.
bool use_gemm_weight_grad(const Conv2dGeom& g) { return g.OC / g.groups >= 32 && (g.C / g.groups) * g.KH * g.KW >= 32; }

}  // namespace

// x (N, C, H, W), grad_y (N, OC, OH, OW) -> grad_weight (OC, Cg, KH, KW), grad_bias (OC,)
void conv2d_backward_weight(const Conv2dGeom& g, const float* x, const float* gy, float* gw, float* gb) {
  const int64_t G = g.groups, Cg = g.C / G, OCg = g.OC / G, K = Cg * g.KH * g.KW;
  const int64_t OHW = g.OH * g.OW;
  if (g.N <= 0) {
    if (gw) std::memset(gw, 0, sizeof(float) * g.OC * K);
    if (gb) std::memset(gb, 0, sizeof(float) * g.OC);
    return;
  }
  const bool winograd = use_winograd(g);
  if (winograd || use_gemm_weight_grad(g)) {
    if (gw && winograd) backward_weight_winograd(g, x, gy, gw);
    if (gw && !winograd) conv_weight_grad_gemm(g, x, gy, gw);
    if (gb) conv_bias_grad(g, gy, (g.N + kMaxWeightChunks - 1) / kMaxWeightChunks, gb);
    return;
  }
  const Plan pl = make_plan(g);
  I64Buf off(K);
  fill_offsets(g, pl, off.p);
  VecList vl(veclist_capacity(g.OH, g.OW, pl.Wp));
  build_plan_vectors(g, pl, vl);
  // G rows: grad_y cut into the same vectors (v-th vector at v * W), zero in invalid lanes.
  const int64_t ldg = vl.n * W, gsize = OCg * ldg;
  // The batch sum runs over fixed chunks of images (at most kMaxWeightChunks, a function of N only)
  // whose partial sums are added in chunk order. Inside a chunk, "bursts" of up to `burst` images
  // (a function of the geometry only: about 4 MiB of B and G) go through the dot kernel together.
  const int64_t per_chunk = (g.N + kMaxWeightChunks - 1) / kMaxWeightChunks;
  const int64_t nch = (g.N + per_chunk - 1) / per_chunk;
  const int64_t img_floats = (gw ? pl.bsize : 0) + gsize;
  int64_t burst = (int64_t(1) << 20) / (img_floats > 0 ? img_floats : 1);
  burst = burst < 1 ? 1 : (burst > per_chunk ? per_chunk : burst);
  AlignedBuffer part_w(gw && nch > 1 ? static_cast<size_t>(nch * g.OC * K) : 0);
  AlignedBuffer part_b(static_cast<size_t>(nch * g.OC));
  const int64_t mblocks = (OCg + kConvDotM - 1) / kConvDotM, kblocks = (K + kConvDotK - 1) / kConvDotK;
  parallel_for(nch, 1, [&](int64_t c0, int64_t c1) {
    AlignedBuffer B(gw ? static_cast<size_t>(burst * pl.bsize) : 0);
    AlignedBuffer Gb(static_cast<size_t>(burst * gsize));
    for (int64_t ch = c0; ch < c1; ++ch) {
      float* dw = gw ? (nch > 1 ? part_w.data() + ch * g.OC * K : gw) : nullptr;
      float* db = part_b.data() + ch * g.OC;
      const int64_t n_begin = ch * per_chunk, n_end = min64(n_begin + per_chunk, g.N);
      for (int64_t gi = 0; gi < G; ++gi) {
        for (int64_t n0 = n_begin; n0 < n_end; n0 += burst) {
          const int64_t nimg = min64(burst, n_end - n0);
          for (int64_t i = 0; i < nimg; ++i) {
            const int64_t n = n0 + i;
            const float* gys = gy + (n * g.OC + gi * OCg) * OHW;
            float* Gd = Gb.data() + i * gsize;
            parallel_for(OCg, 4, [&](int64_t o0, int64_t o1) {
              for (int64_t oc = o0; oc < o1; ++oc) {
                float* row = Gd + oc * ldg;
                const float* src = gys + oc * OHW;
                if (pl.direct && vl.flat) {  // flat columns: row r of grad_y at r * Wp
                  std::memset(row, 0, sizeof(float) * ldg);
                  for (int64_t oh = 0; oh < g.OH; ++oh)
                    std::memcpy(row + oh * pl.Wp, src + oh * g.OW, sizeof(float) * g.OW);
                } else {
                  for (int64_t v = 0; v < vl.n; ++v) {
                    const int64_t nv = vl.valid.p[v];
                    std::memcpy(row + v * W, src + vl.dst.p[v], sizeof(float) * nv);
                    std::memset(row + v * W + nv, 0, sizeof(float) * (W - nv));
                  }
                }
                // bias gradient: this image's channel sum, added to the chunk's running sum
                vf s = vzero();
                for (int64_t p = 0; p < ldg; p += W) s = vadd(s, vload(row + p));
                const float t = vreduce_add(s);
                db[gi * OCg + oc] = n == n_begin ? t : db[gi * OCg + oc] + t;
              }
            });
            if (gw) fill_input(g, pl, x + (n * g.C + gi * Cg) * g.H * g.W, B.data() + i * pl.bsize);
          }
          if (!gw) continue;
          const bool accumulate = n0 != n_begin;
          parallel_for(mblocks * kblocks, 4, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
              const int64_t mb = t / kblocks, kb = t % kblocks;
              const int64_t m0 = mb * kConvDotM, k0 = kb * kConvDotK;
              const int dm = static_cast<int>(min64(OCg - m0, kConvDotM));
              const int dk = static_cast<int>(min64(K - k0, kConvDotK));
              const float* g_rows[kConvDotM];
              float* d_rows[kConvDotM];
              int64_t offs[kConvDotK], cols[kConvDotK];
              for (int i = 0; i < kConvDotM; ++i) {
                const int64_t m = m0 + (i < dm ? i : dm - 1);  // spare lanes repeat the last row
                g_rows[i] = Gb.data() + m * ldg;
                d_rows[i] = dw + (gi * OCg + m) * K;
              }
              for (int j = 0; j < kConvDotK; ++j) {
                const int64_t k = k0 + (j < dk ? j : dk - 1);
                offs[j] = off.p[k];
                cols[j] = k;
              }
              dot_kernel(g_rows, gsize, B.data(), pl.bsize, nimg, offs, vl, d_rows, cols, dm, dk, accumulate);
            }
          });
        }
      }
    }
  });
  if (gw && nch > 1) {
    const int64_t total = g.OC * K;
    parallel_for(total, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        float s = part_w.data()[i];
        for (int64_t c = 1; c < nch; ++c) s += part_w.data()[c * total + i];
        gw[i] = s;
      }
    });
  }
  if (gb) {
    for (int64_t oc = 0; oc < g.OC; ++oc) {
      float s = part_b.data()[oc];
      for (int64_t c = 1; c < nch; ++c) s += part_b.data()[c * g.OC + oc];
      gb[oc] = s;
    }
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
