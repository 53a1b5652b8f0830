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

#if defined(__AVX512F__)
// Layers with at most kSmallWgradMaxK taps (C * KH * KW, one group: LeNet's first 3x3 conv on one channel, a
// 3x3 stem on RGB). Their weight gradient is OC x K dot products of P-pixel planes, a reduction far longer than
// either side: the GEMM path's packing and the dot kernel's padded grad_y copies and 6-wide tap blocks cost more
// than the products. Here grad_y is read in place, and each image's im2col (K rows of P floats) meets pairs of
// output channels, blocks of up to 9 taps at a time: 2 x 9 vector accumulators plus the two channels' bias
// sums, FMA-bound on a 512-bit datapath (AVX2's 16 registers would be load-bound: it keeps the dot kernel).
constexpr int64_t kSmallWgradMaxK = 27, kSmallWgradBlock = 9;

// Two accumulator rows lda floats apart: accv[r * lda + k * W] (W lanes) += gy_r[p] * col[k * ldc + p] for
// k < KR, and bacc[r * W] += gy_r[p], over pixels p < P, for the channel rows gy_0, gy_1; col's rows are zero
// from P to round_up(P, W).
template <int KR>
__attribute__((noinline)) void small_wgrad_pair(const float* gy0, const float* gy1, int64_t P, const float* col,
                                                int64_t ldc, float* accv, int64_t lda, float* bacc) {
  vf a0[KR], a1[KR];
#pragma GCC unroll 16
  for (int k = 0; k < KR; ++k) {
    a0[k] = vload(accv + k * W);
    a1[k] = vload(accv + lda + k * W);
  }
  vf b0 = vload(bacc), b1 = vload(bacc + W);
  const auto step = [&](vf g0, vf g1, int64_t p) {
#pragma GCC unroll 16
    for (int k = 0; k < KR; ++k) {
      const vf c = vload(col + k * ldc + p);
      a0[k] = vfmadd(g0, c, a0[k]);
      a1[k] = vfmadd(g1, c, a1[k]);
    }
    b0 = vadd(b0, g0);
    b1 = vadd(b1, g1);
  };
  int64_t p = 0;
  for (; p + W <= P; p += W) step(vload(gy0 + p), vload(gy1 + p), p);
  if (p < P) step(vload_n(gy0 + p, static_cast<int>(P - p)), vload_n(gy1 + p, static_cast<int>(P - p)), p);
#pragma GCC unroll 16
  for (int k = 0; k < KR; ++k) {
    vstore(accv + k * W, a0[k]);
    vstore(accv + lda + k * W, a1[k]);
  }
  vstore(bacc, b0);
  vstore(bacc + W, b1);
}

using SmallWgradPair = void (*)(const float*, const float*, int64_t, const float*, int64_t, float*, int64_t, float*);

SmallWgradPair small_wgrad_pair_for(int64_t kr) {
  switch (kr) {
    case 1: return &small_wgrad_pair<1>;
    case 2: return &small_wgrad_pair<2>;
    case 3: return &small_wgrad_pair<3>;
    case 4: return &small_wgrad_pair<4>;
    case 5: return &small_wgrad_pair<5>;
    case 6: return &small_wgrad_pair<6>;
    case 7: return &small_wgrad_pair<7>;
    case 8: return &small_wgrad_pair<8>;
    default: return &small_wgrad_pair<9>;
  }
}

void small_wgrad(const Conv2dGeom& g, const float* x, const float* gy, float* gw, float* gb) {
  const int64_t K = g.C * g.KH * g.KW, P = g.OH * g.OW, HW = g.H * g.W, KK = g.KH * g.KW, ldc = round_up(P, W);
  const int64_t pairs = (g.OC + 1) / 2, kblocks = (K + kSmallWgradBlock - 1) / kSmallWgradBlock;
  // Fixed chunks of images (a function of N only), each with its own vector accumulators; the chunks'
  // sums are added in chunk order. Tasks are (chunk, channel pair): every accumulator is the same chain
  // of image-ordered FMAs whichever thread runs it, so the bits do not depend on the thread count.
  const int64_t per_chunk = (g.N + kMaxWeightChunks - 1) / kMaxWeightChunks;
  const int64_t nch = (g.N + per_chunk - 1) / per_chunk;
  const int64_t acc_floats = 2 * (K + 1) * W;  // one pair: each channel's K tap vectors, then 2 bias vectors
  AlignedBuffer acc(static_cast<size_t>(nch * pairs * acc_floats));
  std::memset(acc.data(), 0, sizeof(float) * nch * pairs * acc_floats);
  parallel_for_work(nch * pairs, per_chunk * P * 2 * K, [&](int64_t t0, int64_t t1) {
    AlignedBuffer col(static_cast<size_t>(K * ldc)), spare(static_cast<size_t>(2 * W));
    for (int64_t k = 0; k < K; ++k) std::memset(col.data() + k * ldc + P, 0, sizeof(float) * (ldc - P));
    for (int64_t t = t0; t < t1;) {
      const int64_t ch = t / pairs, m0 = t % pairs, m1 = min64(pairs, m0 + (t1 - t));
      for (int64_t n = ch * per_chunk; n < min64(g.N, (ch + 1) * per_chunk); ++n) {
        for (int64_t k = 0; k < K; ++k)
          im2col_plane(g, x + (n * g.C + k / KK) * HW, (k / g.KW) % g.KH, k % g.KW, col.data() + k * ldc);
        // Tap blocks outer: a block's im2col rows stay in L1 while the channel pairs stream past them.
        for (int64_t kb = 0; kb < kblocks; ++kb) {
          const int64_t k0 = kb * kSmallWgradBlock, kr = min64(kSmallWgradBlock, K - k0);
          const SmallWgradPair pair_fn = small_wgrad_pair_for(kr);
          for (int64_t m = m0; m < m1; ++m) {
            const float* gy0 = gy + (n * g.OC + 2 * m) * P;
            const float* gy1 = 2 * m + 1 < g.OC ? gy0 + P : gy0;  // an odd last channel pairs with itself
            float* a = acc.data() + (ch * pairs + m) * acc_floats;
            pair_fn(gy0, gy1, P, col.data() + k0 * ldc, ldc, a + k0 * W, K * W, kb == 0 ? a + 2 * K * W : spare.data());
          }
        }
      }
      t += m1 - m0;
    }
  });
  for (int64_t oc = 0; oc < g.OC; ++oc) {
    const int64_t pair = oc / 2, r = oc % 2;
    for (int64_t k = 0; k <= K; ++k) {  // k == K: the bias
      float s = 0.0f;
      for (int64_t ch = 0; ch < nch; ++ch) {
        const float* a = acc.data() + (ch * pairs + pair) * acc_floats;
        const float v = vreduce_add(vload(k < K ? a + (r * K + k) * W : a + (2 * K + r) * W));
        s = ch == 0 ? v : s + v;
      }
      if (k < K && gw) gw[oc * K + k] = s;
      if (k == K && gb) gb[oc] = s;
    }
  }
}

// Runs the small-K kernel when the layer qualifies; false: use the other paths. Fewer output channels than
// taps leave the per-image im2col (K planes) costlier than the dot kernel's copies (LeNet-5's 5x5 1 -> 6:
// 0.17 -> 0.19 ms on Zen 5; 4x4 s2 1 -> 64 0.42 -> 0.25, 3x3 1 -> 16 at 256x256 0.34 -> 0.23).
bool small_weight_grad(const Conv2dGeom& g, const float* x, const float* gy, float* gw, float* gb) {
  const int64_t K = g.C * g.KH * g.KW;
  if (g.groups != 1 || K > kSmallWgradMaxK || g.OC < K || !gw) return false;
  small_wgrad(g, x, gy, gw, gb);
  return true;
}
#else
bool small_weight_grad(const Conv2dGeom&, const float*, const float*, float*, float*) { return false; }
#endif

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
  if (small_weight_grad(g, x, gy, gw, gb)) return;
  const bool winograd = use_winograd(g);
  if (winograd || use_gemm_weight_grad(g)) {
    if (gw && winograd) backward_weight_winograd(g, x, gy, gw);
    // k4 layers with >= 64 input channels per group: the direct tile (conv_wgrad_ocv.cpp; measured on the
    // DCGAN k4 s2 layers)
    if (gw && !winograd && Cg >= 64 && conv_weight_grad_ocv_supported(g)) {
      conv_weight_grad_ocv(g, x, gy, gw);
    } else if (gw && !winograd) {
      conv_weight_grad_gemm(g, x, gy, gw);
    }
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
