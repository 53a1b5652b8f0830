// 2-D convolution kernels, compiled per ISA (see conv.h for the layout and the algorithm).
//
// Every pass multiplies a small packed matrix A with "rows" of a buffer B addressed through an
// offset table: row k of B starts at B + off[k]. With a zero-padded image and flat index
// q = oh * Wp + ow, off[(ic, kh, kw)] = ic*Hp*Wp + kh*dh*Wp + kw*dw makes a stride-1 convolution
// with no im2col copy; with an im2col matrix, off[k] = k * ld. The output plane is cut into
// vectors of W lanes (a VecList: where each vector reads in B, where it goes in the output, how
// many lanes are real), and two register-blocked micro-kernels do the arithmetic:
//   tile_kernel: C[m][vec] = sum_k A[m][k] * B[off[k] + pos[vec]]    (forward, input gradient)
//   dot_kernel:  D[m][k]   = sum_vec G[m][vec] . B[off[k] + pos[vec]] (weight gradient, thin layers)
// 3x3 stride-1 layers with enough channels go to Winograd instead (conv_winograd.cpp); the weight
// gradient of other layers with enough channels is one batch-wide im2col GEMM (conv_wgrad.cpp).
// Each output element is computed by one fixed sequence of operations, whichever thread runs it,
// and the batch sums of the weight gradient run in a fixed order of images (here: fixed chunks of
// images added in order): results are bit-identical for any thread count. The shared layout (Plan,
// fill_input) is conv_plan.h; the weight and bias gradients are conv_backward_weight.cpp.
#include <cmath>
#include <cstring>

#include "act_vec.h"
#include "conv_plan.h"
#include "conv_tile.h"
#include "forgegrad/conv.h"
#include "forgegrad/conv_implicit.h"
#include "forgegrad/gemm.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/pool.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// One pass "out planes (M, OHo, OWo) = A (M x R) * B-rows" per (image, group) unit, parallel over
// units and, inside a unit, over kConvMR-row blocks. fill(n, gi, B) builds B; A holds every group's
// panels ((gi * M) * R onwards); out(n, gi) is the first output plane of the unit.
// act / alpha: the activation applied to each block of output planes once written (-1: none).
// pool2x2: out(n, gi) takes the 2x2 / stride 2 max pools (OHo/2, OWo/2) of the planes instead, each
// block computed into scratch and pooled while in cache.
// dense_rows: B is an im2col matrix of R rows dense_rows floats apart (0: another layout). Where that
// is larger than L2 the planes are computed in column slabs, every row block of a slab while its
// R x slab columns of B stay in L2, instead of every row block streaming the whole matrix from L3
// (k4 s2 layers at 16x16 and up). Same arithmetic per output, so the same bits.
template <class Fill, class Out>
void run_units(int64_t N, int64_t G, int64_t M, int64_t R, const float* A, int64_t bsize, const int64_t* off,
               const VecList& vl, int64_t OHo, int64_t OWo, int64_t Wb, const float* bias, Fill fill, Out out,
               int act = -1, float alpha = 0.0f, bool pool2x2 = false, int64_t dense_rows = 0) {
  const int64_t plane = OHo * OWo, nblocks = (M + kConvMR - 1) / kConvMR;
  const int64_t POH = OHo / 2, POW = OWo / 2, pplane = POH * POW;
  const bool relu = act == kActRelu;  // in the tile kernel's registers; others in a pass over the block
  const int later = relu ? -1 : act;
  constexpr int64_t kSlabFloats = int64_t(1) << 16;  // 256 KiB of B per slab
  int64_t slab = 0;                                  // vectors per slab (0: no slabs)
  if (dense_rows > 0 && !vl.flat && !pool2x2 && later < 0 && R * dense_rows > 2 * kSlabFloats && vl.n > kConvNR) {
    slab = kSlabFloats / (R * W) / kConvNR * kConvNR;
    slab = slab < kConvNR ? kConvNR : slab;
    if (slab >= vl.n) slab = 0;
  }
  parallel_for(N * G, 1, [&](int64_t u0, int64_t u1) {
    AlignedBuffer B(static_cast<size_t>(bsize));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t n = u / G, gi = u % G;
      fill(n, gi, B.data());
      float* o = out(n, gi);
      if (slab > 0) {
        for (int64_t v0 = 0; v0 < vl.n; v0 += slab) {
          parallel_for(nblocks, 1, [&](int64_t b0, int64_t b1) {
            for (int64_t blk = b0; blk < b1; ++blk) {
              const int64_t m0 = blk * kConvMR, mr = min64(M - m0, kConvMR);
              run_rows(mr, R, A + (gi * M + m0) * R, B.data(), off, vl, bias ? bias + gi * M + m0 : nullptr,
                       o + m0 * plane, plane, relu, v0, min64(v0 + slab, vl.n));
            }
          });
        }
        continue;
      }
      parallel_for(nblocks, 1, [&](int64_t b0, int64_t b1) {
        AlignedBuffer S(vl.flat ? static_cast<size_t>(kConvMR * vl.scratch_ld) : 0);
        AlignedBuffer P(pool2x2 && !vl.flat ? static_cast<size_t>(kConvMR * plane) : 0);
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t m0 = blk * kConvMR, mr = min64(M - m0, kConvMR);
          const float* a = A + (gi * M + m0) * R;
          const float* init = bias ? bias + gi * M + m0 : nullptr;
          if (!vl.flat) {
            float* dst = pool2x2 ? P.data() : o + m0 * plane;
            run_rows(mr, R, a, B.data(), off, vl, init, dst, plane, relu);
            act_forward_serial(later, alpha, dst, mr * plane);  // while the block is in cache
            if (pool2x2)
              for (int64_t m = 0; m < mr; ++m)
                max_pool2x2_plane(dst + m * plane, OWo, POH, POW, o + (m0 + m) * pplane, nullptr);
            continue;
          }
          run_rows(mr, R, a, B.data(), off, vl, init, S.data(), vl.scratch_ld, relu);
          for (int64_t m = 0; m < mr; ++m) {
            float* s = S.data() + m * vl.scratch_ld;
            for (int64_t r = 0; r < OHo; ++r) {
              if (pool2x2) {
                act_forward_serial(later, alpha, s + r * Wb, OWo);
              } else {
                float* d = o + (m0 + m) * plane + r * OWo;
                std::memcpy(d, s + r * Wb, sizeof(float) * OWo);
                act_forward_serial(later, alpha, d, OWo);
              }
            }
            if (pool2x2) max_pool2x2_plane(s, Wb, POH, POW, o + (m0 + m) * pplane, nullptr);
          }
        }
      });
    }
  });
}

// col2im of a column stride of 2: gx (Cg, H, W) = the sum of every tap's gcol row (rows ld apart) at its input
// pixels. Per channel the sums go to the even and odd input columns as two planes of Wh = ceil(W / 2) columns,
// where each tap's row is one contiguous (vectorised) add, and the planes are then interleaved into gx. Each
// element gets the same additions in the same (kh, kw) order as the general loop: the same bits.
void col2im_stride2(const Conv2dGeom& g, int64_t Cg, const float* gcol, int64_t ld, float* gxs) {
  const int64_t HW = g.H * g.W, Wh = (g.W + 1) / 2;
  parallel_for(Cg, 1, [&](int64_t c0, int64_t c1) {
    AlignedBuffer ph(static_cast<size_t>(2 * g.H * Wh));
    for (int64_t ic = c0; ic < c1; ++ic) {
      float* planes = ph.data();
      for (int64_t i = 0; i < 2 * g.H * Wh; ++i) planes[i] = 0.0f;
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const float* s = gcol + ((ic * g.KH + kh) * g.KW + kw) * ld;
          const int64_t shift = kw * g.dil_w - g.pad_left;  // iw = 2 * ow + shift
          const int64_t par = shift & 1, half = (shift - par) / 2;  // iw = 2 * (ow + half) + par
          // ow with 0 <= iw < W
          int64_t lo = shift >= 0 ? 0 : (-shift + 1) / 2;
          int64_t hi = g.W - 1 - shift < 0 ? 0 : (g.W - 1 - shift) / 2 + 1;
          if (hi > g.OW) hi = g.OW;
          if (lo >= hi) continue;
          float* pp = planes + par * g.H * Wh + half;
          for (int64_t oh = 0; oh < g.OH; ++oh) {
            const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dil_h;
            if (ih < 0 || ih >= g.H) continue;
            float* dr = pp + ih * Wh;
            const float* sr = s + oh * g.OW;
            for (int64_t ow = lo; ow < hi; ++ow) dr[ow] += sr[ow];
          }
        }
      float* d = gxs + ic * HW;
      const float* e = planes;
      const float* o = planes + g.H * Wh;
      for (int64_t h = 0; h < g.H; ++h) {
        float* dr = d + h * g.W;
        const float* er = e + h * Wh;
        const float* orow = o + h * Wh;
        for (int64_t j = 0; j < g.W / 2; ++j) {
          dr[2 * j] = er[j];
          dr[2 * j + 1] = orow[j];
        }
        if (g.W & 1) dr[g.W - 1] = er[Wh - 1];
      }
    }
  });
}

// The forward pass also needs enough tiles in the batch to amortise the kernels' transform (done
// per call, unless packed beforehand) and its tile transforms. Measured on an AVX2 core (direct vs
// Winograd, us, one image): 32 -> 64 channels on 14x14 (49 tiles) 101 vs 83, 64 -> 64 196 vs 146,
// 32 -> 32 56 vs 50; on 10x10 (25 tiles) 36 vs 35; two 8x8 images 37 vs 37. Small images and
// 16-channel layers gain nothing before ~256 tiles (16 -> 16 on 7x7, 4 images: 21 vs 31; on 14x14,
// 4 images: 57 vs 64), as their transforms weigh more against the GEMMs.
bool use_winograd_forward(const Conv2dGeom& g) {
  if (!use_winograd(g)) return false;
  const int64_t per_image = ((g.OH + 1) / 2) * ((g.OW + 1) / 2), tiles = g.N * per_image;
  const bool wide = per_image >= 25 && g.C / g.groups >= 32 && g.OC / g.groups >= 32;
  return tiles >= (wide ? 49 : 256);
}

// Winograd over units of (up to nb images, group): fill(n, gi, B) builds the padded (Cin, Hb, Wb)
// buffer of bsize floats; kernels holds every group's (M, Cin, 3, 3) kernels; out(n, gi) the first
// output plane of (n, gi), out_step floats between images. Small images are batched so that a
// unit has at least ~256 tiles (per-column results do not depend on the batching).
template <class Fill, class Out>
void run_winograd_units(int64_t N, int64_t G, int64_t Cin, int64_t M, int64_t Hb, int64_t Wb, int64_t OHo, int64_t OWo,
                        const float* kernels, int64_t bsize, const float* bias, int64_t out_step, Fill fill, Out out,
                        int act = -1, float alpha = 0.0f, bool pool2x2 = false, const float* packed = nullptr) {
  const int64_t tiles = ((OHo + 1) / 2) * ((OWo + 1) / 2);
  int64_t nb = 256 / tiles;
  nb = nb < 1 ? 1 : (nb > N ? N : nb);
  const Winograd3x3 wp = winograd_plan(Cin, M, Hb, Wb, OHo, OWo, nb);
  const int64_t usize = 16 * M * Cin, nunits = (N + nb - 1) / nb;
  AlignedBuffer U(packed ? 0 : static_cast<size_t>(G * usize));
  if (!packed)
    for (int64_t gi = 0; gi < G; ++gi) winograd_weights(wp, kernels + gi * M * Cin * 9, U.data() + gi * usize);
  const float* Ua = packed ? packed : U.data();
  parallel_for(nunits * G, 1, [&](int64_t u0, int64_t u1) {
    AlignedBuffer B(static_cast<size_t>(nb * bsize)), S(static_cast<size_t>(winograd_scratch_floats(wp)));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t n0 = (u / G) * nb, gi = u % G;
      Winograd3x3 up = wp;
      up.nimg = N - n0 < nb ? N - n0 : nb;
      for (int64_t i = 0; i < up.nimg; ++i) fill(n0 + i, gi, B.data() + i * bsize);
      winograd_unit(up, B.data(), bsize, Ua + gi * usize, bias ? bias + gi * M : nullptr, out(n0, gi), out_step,
                    S.data(), act, alpha, pool2x2);
    }
  });
}

// The strided (im2col) forward through sgemm: whole output planes of >= 64 pixels (a register tile's row
// of vectors or more), >= 32 output channels and a reduction of >= 256 taps per group, where the tile
// kernel's full-length reductions stream its packed weight from L3 (measured on k4 s2 layers: 128 -> 256
// at 16x16 and 64 -> 128 at 32x32, batch 16). With the fused 2x2 max pool too (the pool of the same
// planes: the same bits as the pool after).
bool use_sgemm_forward(const Conv2dGeom& g, const Plan& pl) {
  const int64_t K = (g.C / g.groups) * g.KH * g.KW;
  return !pl.direct && g.OH * g.OW >= 64 && g.OC / g.groups >= 32 && K >= 256;
}

// The implicit-GEMM forward (conv_implicit.cpp) on AVX-512, where its B panels are packed from runs of
// the image with masked loads and permutes: strided layers with >= 16 input channels per group and
// kernels of >= 9 taps, stride <= 2, and of the layers the im2col + sgemm path takes, those with a
// reduction of >= 1024. Measured (1 thread, CPU time, Zen 4, ms, old -> new): DCGAN k4 s2
// 16x128->256@16 12.1 -> 10.5, 16x64->128@32 11.9 -> 11.0, 16x32->64@64 12.7 -> 12.3, 16x128->3@16
// 1.85 -> 0.79; ResNet k3 s2 8x128->256@28 (K 1152) 9.7 -> 9.3, 8x256->512@14 12.0 -> 10.0;
// 16x16->32@32 0.61 -> 0.57, 4x64->24@15 0.19 -> 0.12. Level or slower there, so left on the old paths:
// 8x64->128@56 k3 s2 (K 576: 9.6-9.9 vs 9.7-10.0), depthwise (7.7 vs 0.64), 3 or 8 input channels (0.38
// vs 0.13), 1x1 s2 (1.5 vs 1.1), the 7x7 s2 stem (8.7 vs 6.3), and the AVX2 build (16-lane runs need
// AVX-512's two-register permute; its gathers lose on most shapes).
bool use_implicit_forward(const Conv2dGeom& g, const Plan& pl, bool pool2x2) {
#if defined(__AVX512F__)
  const int64_t K = (g.C / g.groups) * g.KH * g.KW;
  return !pool2x2 && !pl.direct && g.C / g.groups >= 16 && g.KH * g.KW >= 9 && g.stride_h <= 2 && g.stride_w <= 2 &&
         (K >= 1024 || !use_sgemm_forward(g, pl)) && conv2d_implicit_supported(g);
#else
  (void)g;
  (void)pl;
  (void)pool2x2;
  return false;
#endif
}

}  // namespace

int64_t conv2d_winograd_pack(int64_t OC, int64_t Cg, int64_t KH, int64_t KW, int64_t groups, const float* w, float* U) {
  const int64_t OCg = OC / groups, usize = 16 * OCg * Cg;
  if (!winograd_kernels(KH, KW, Cg, OCg)) return 0;
  if (U) {
    const Winograd3x3 wp = winograd_plan(Cg, OCg, 3, 3, 1, 1, 1);  // the transform reads M and Cin only
    for (int64_t gi = 0; gi < groups; ++gi) winograd_weights(wp, w + gi * OCg * Cg * 9, U + gi * usize);
  }
  return groups * usize;
}

// x (N, C, H, W), weight (OC, Cg, KH, KW), bias (OC,) or null -> y (N, OC, OH, OW)
void conv2d_forward(const Conv2dGeom& g, const float* x, const float* w, const float* bias, float* y, int act,
                    float alpha, bool pool2x2, const float* packed) {
  const int64_t yplane = pool2x2 ? (g.OH / 2) * (g.OW / 2) : g.OH * g.OW;
  if (g.N <= 0 || yplane == 0) return;
  const int64_t G = g.groups, Cg = g.C / G, OCg = g.OC / G, K = Cg * g.KH * g.KW;
  const Plan pl = make_plan(g);
  const auto out = [&](int64_t n, int64_t gi) { return y + (n * g.OC + gi * OCg) * yplane; };
  if (use_winograd_forward(g)) {
    run_winograd_units(
        g.N, G, Cg, OCg, pl.Hp, pl.Wp, g.OH, g.OW, w, pl.bsize, bias, g.OC * yplane,
        [&](int64_t n, int64_t gi, float* B) { fill_input(g, pl, x + (n * g.C + gi * Cg) * g.H * g.W, B); }, out, act,
        alpha, pool2x2, packed);
    return;
  }
  if (use_implicit_forward(g, pl, pool2x2)) {
    // >= 64 input channels per group: the direct kernel with output channels along the lanes (measured on
    // the DCGAN k4 s2 and ResNet k3 s2 layers in conv_direct_ocv.cpp; thinner layers not measured)
    if (g.C / g.groups >= 64 && conv2d_forward_ocv_supported(g)) {
      conv2d_forward_ocv(g, x, w, bias, y, act, alpha);
      return;
    }
    conv2d_forward_implicit(g, x, w, bias, y, act, alpha);
    return;
  }
  if (use_sgemm_forward(g, pl)) {
    // Per (image, group): its im2col (K x P), then sgemm with the weight read as it is, then bias and
    // activation over the planes. sgemm blocks the long reduction (K = 2048 at DCGAN's 128 -> 256 k4 s2)
    // in slices that stay in L1 / L2: 103-107 GFLOP/s on these shapes against the tile kernel's 81-92,
    // which streams the whole packed weight for every image. sgemm's sums do not depend on the thread
    // count, so neither do these.
    const int64_t P = g.OH * g.OW, POH = g.OH / 2, POW = g.OW / 2;
    AlignedBuffer B(static_cast<size_t>(pl.bsize)), S(static_cast<size_t>(pool2x2 ? OCg * P : 0));
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t gi = 0; gi < G; ++gi) {
        fill_input(g, pl, x + (n * g.C + gi * Cg) * g.H * g.W, B.data());
        float* yo = pool2x2 ? S.data() : out(n, gi);  // with the pool: full planes in scratch, pooled below
        FG_ISA_NS::sgemm(false, false, OCg, P, K, 1.0f, w + gi * OCg * K, K, B.data(), pl.ld, 0.0f, yo, P);
        if (!bias && act < 0 && !pool2x2) continue;
        float* po = out(n, gi);
        parallel_for(OCg, 4, [&](int64_t o0, int64_t o1) {
          for (int64_t oc = o0; oc < o1; ++oc) {
            float* plane = yo + oc * P;
            if (bias) {
              const vf b = vset1(bias[gi * OCg + oc]);
              int64_t i = 0;
              for (; i + W <= P; i += W) vstore(plane + i, vadd(vload(plane + i), b));
              for (; i < P; ++i) plane[i] += bias[gi * OCg + oc];
            }
            act_forward_serial(act, alpha, plane, P);
            if (pool2x2) max_pool2x2_plane(plane, g.OW, POH, POW, po + oc * POH * POW, nullptr);
          }
        });
      }
    return;
  }
  AlignedBuffer A(static_cast<size_t>(g.OC * K));
  for (int64_t gi = 0; gi < G; ++gi) {
    const float* wg = w + gi * OCg * K;
    pack_panels(OCg, K, A.data() + gi * OCg * K, [&](int64_t m, int64_t r) { return wg[m * K + r]; });
  }
  I64Buf off(K);
  fill_offsets(g, pl, off.p);
  VecList vl(veclist_capacity(g.OH, g.OW, pl.Wp));
  build_plan_vectors(g, pl, vl);
  run_units(
      g.N, G, OCg, K, A.data(), pl.bsize, off.p, vl, g.OH, g.OW, pl.Wp, bias,
      [&](int64_t n, int64_t gi, float* B) { fill_input(g, pl, x + (n * g.C + gi * Cg) * g.H * g.W, B); }, out, act,
      alpha, pool2x2, pl.direct ? 0 : pl.ld);
}

// weight (OC, Cg, KH, KW), grad_y (N, OC, OH, OW) -> grad_x (N, C, H, W)
void conv2d_backward_input(const Conv2dGeom& g, const float* w, const float* gy, float* gx) {
  if (g.N <= 0) return;
  const int64_t G = g.groups, Cg = g.C / G, OCg = g.OC / G, KK = g.KH * g.KW, K = Cg * KK;
  const int64_t OHW = g.OH * g.OW, HW = g.H * g.W;
  // A non-finite weight takes the col2im path: the correlation below also multiplies the zeros padded around
  // grad_y, which would spread 0 * NaN over the whole plane where the sum has NaN only where that tap lands.
  bool finite = true;
  for (int64_t i = 0, n = g.OC * K; i < n; ++i) finite &= std::isfinite(w[i]);
  if (g.stride_h == 1 && g.stride_w == 1 && finite) {
    // grad_x is a stride-1 correlation of grad_y, zero-padded into (OCg, Hq, Wq), with the
    // flipped, transposed kernel: gx[ic][ih][iw] = sum_{oc,kh,kw} w[oc][ic][kh][kw] *
    // gyp[oc][ih + (KH-1-kh)*dh][iw + (KW-1-kw)*dw], where gyp[r][c] = gy[r - T][c - L].
    const int64_t Hq = g.H + (g.KH - 1) * g.dil_h, Wq = g.W + (g.KW - 1) * g.dil_w;
    const int64_t T = (g.KH - 1) * g.dil_h - g.pad_top, L = (g.KW - 1) * g.dil_w - g.pad_left;
    const int64_t R = OCg * KK;  // reduction length
    const int64_t plane = Hq * Wq, bsize = OCg * plane + Wq + 2 * W;
    AlignedBuffer A(static_cast<size_t>(g.C * R));
    for (int64_t gi = 0; gi < G; ++gi) {
      const float* wg = w + gi * OCg * K;
      pack_panels(Cg, R, A.data() + gi * Cg * R, [&](int64_t ic, int64_t r) {
        const int64_t oc = r / KK, kk = r % KK;
        return wg[(oc * Cg + ic) * KK + kk];
      });
    }
    I64Buf off(R);
    for (int64_t oc = 0, r = 0; oc < OCg; ++oc)
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw, ++r)
          off.p[r] = oc * plane + (g.KH - 1 - kh) * g.dil_h * Wq + (g.KW - 1 - kw) * g.dil_w;
    VecList vl(veclist_capacity(g.H, g.W, Wq));
    build_direct(vl, g.H, g.W, Wq);
    auto fill = [&](int64_t n, int64_t gi, float* B) {
      const float* gys = gy + (n * g.OC + gi * OCg) * OHW;
      parallel_for(OCg, 4, [&](int64_t c0, int64_t c1) {
        // rows [r0, r1) hold grad_y's rows oh = r - T (columns ow = c - L), zeros around them
        const int64_t r0 = T < 0 ? 0 : (T > Hq ? Hq : T);
        const int64_t r1 = T + g.OH < r0 ? r0 : (T + g.OH > Hq ? Hq : T + g.OH);
        for (int64_t oc = c0; oc < c1; ++oc) {
          float* d = B + oc * plane;
          std::memset(d, 0, sizeof(float) * r0 * Wq);
          pad_plane_rows(d + r0 * Wq, Wq, gys + oc * OHW + (r0 - T) * g.OW, g.OW, r1 - r0, L, g.OW);
          std::memset(d + r1 * Wq, 0, sizeof(float) * (Hq - r1) * Wq);
        }
      });
      std::memset(B + OCg * plane, 0, sizeof(float) * (bsize - OCg * plane));
    };
    auto out = [&](int64_t n, int64_t gi) { return gx + (n * g.C + gi * Cg) * HW; };
    if (use_winograd(g)) {
      // kernels (Cg, OCg, 3, 3) of the correlation: w transposed and flipped
      AlignedBuffer kern(static_cast<size_t>(G * Cg * OCg * 9));
      for (int64_t gi = 0; gi < G; ++gi)
        for (int64_t ic = 0; ic < Cg; ++ic)
          for (int64_t oc = 0; oc < OCg; ++oc)
            for (int64_t kk = 0; kk < 9; ++kk)
              kern.data()[((gi * Cg + ic) * OCg + oc) * 9 + kk] = w[((gi * OCg + oc) * Cg + ic) * 9 + 8 - kk];
      run_winograd_units(g.N, G, OCg, Cg, Hq, Wq, g.H, g.W, kern.data(), bsize, nullptr, g.C * HW, fill, out);
      return;
    }
    run_units(g.N, G, Cg, R, A.data(), bsize, off.p, vl, g.H, g.W, Wq, nullptr, fill, out);
    return;
  }
  // Strided: gcol (K, OH*OW) = W^T grad_y per image, then col2im, one input channel per task.
  const int64_t P = OHW, ld = round_up(P, W) + (round_up(P, W) % 128 == 0 ? W : 0);  // (see make_plan)
  AlignedBuffer A(static_cast<size_t>(G * K * OCg));
  for (int64_t gi = 0; gi < G; ++gi) {
    const float* wg = w + gi * OCg * K;
    pack_panels(K, OCg, A.data() + gi * K * OCg, [&](int64_t k, int64_t oc) { return wg[oc * K + k]; });
  }
  I64Buf off(OCg);
  for (int64_t oc = 0; oc < OCg; ++oc) off.p[oc] = oc * ld;
  VecList vl((P + W - 1) / W);
  build_dense(vl, P);
  const int64_t nblocks = (K + kConvMR - 1) / kConvMR;
  parallel_for(g.N * G, 1, [&](int64_t u0, int64_t u1) {
    AlignedBuffer B(static_cast<size_t>(OCg * ld)), gcol(static_cast<size_t>(K * ld));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t n = u / G, gi = u % G;
      const float* gys = gy + (n * g.OC + gi * OCg) * OHW;
      for (int64_t oc = 0; oc < OCg; ++oc) {
        std::memcpy(B.data() + oc * ld, gys + oc * OHW, sizeof(float) * P);
        std::memset(B.data() + oc * ld + P, 0, sizeof(float) * (ld - P));
      }
      parallel_for(nblocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t m0 = blk * kConvMR, mr = min64(K - m0, kConvMR);
          run_rows(mr, OCg, A.data() + gi * K * OCg + m0 * OCg, B.data(), off.p, vl, nullptr, gcol.data() + m0 * ld,
                   ld);
        }
      });
      float* gxs = gx + (n * g.C + gi * Cg) * HW;
      if (g.stride_w == 2) {
        col2im_stride2(g, Cg, gcol.data(), ld, gxs);
        continue;
      }
      parallel_for(Cg, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t ic = c0; ic < c1; ++ic) {
          float* d = gxs + ic * HW;
          std::memset(d, 0, sizeof(float) * HW);
          for (int64_t kh = 0; kh < g.KH; ++kh)
            for (int64_t kw = 0; kw < g.KW; ++kw) {
              const float* s = gcol.data() + ((ic * g.KH + kh) * g.KW + kw) * ld;
              for (int64_t oh = 0; oh < g.OH; ++oh) {
                const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dil_h;
                if (ih < 0 || ih >= g.H) continue;
                for (int64_t ow = 0; ow < g.OW; ++ow) {
                  const int64_t iw = ow * g.stride_w - g.pad_left + kw * g.dil_w;
                  if (iw >= 0 && iw < g.W) d[ih * g.W + iw] += s[oh * g.OW + ow];
                }
              }
            }
        }
      });
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
