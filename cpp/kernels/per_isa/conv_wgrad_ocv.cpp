// conv2d weight gradient of 4-wide kernels, directly, with output channels along the vector lanes (AVX-512),
// compiled per ISA. dW[oc][ic][kh][kw] = sum over images and output pixels of gy[oc][pixel] * x[ic][ih][iw]:
// a register tile holds 48 output channels (3 vectors; 32 or 16 in a group's last block) x 8 taps (two
// kernel rows of one input channel) and runs the whole batch's reduction in registers: per pixel, three
// vectors of grad_y (repacked once so that a block's channels of a pixel are contiguous) and 8 input values
// broadcast from the NCHW image. Taps that fall in the padding are not multiplied: a kernel row outside the
// image is left out for a whole output row, a kernel column for the edge pixels only (the GEMM path
// multiplies those zeros: 12 % of a k4 s2 padding-1 layer's products on 8x8 outputs, 6 % on 16x16). Each
// dW element is one fma chain over (image, output row, output column) in that order, and threads take
// whole tiles, so the bits do not depend on the thread count.
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "conv_tile.h"
#include "forgegrad/conv.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {

#if defined(__AVX512F__)
namespace {

constexpr int kWoLanes = 48;  // output channels of a block

// acc[(r * 4 + kw) * NV + v] += x0/x1[kw] * g[v] for kernel rows r in [R0, R1) and columns kw in [L, H).
template <int NV, int R0, int R1, int L, int H>
inline void wo_pixel(const float* x0, const float* x1, const float* gp, __m512* acc) {
  __m512 gv[NV];
  for (int v = 0; v < NV; ++v) gv[v] = _mm512_loadu_ps(gp + v * 16);
  for (int r = R0; r < R1; ++r) {
    const float* xr = r == 0 ? x0 : x1;
    for (int kw = L; kw < H; ++kw) {
      const __m512 b = _mm512_set1_ps(xr[kw]);
      for (int v = 0; v < NV; ++v) acc[(r * 4 + kw) * NV + v] = _mm512_fmadd_ps(b, gv[v], acc[(r * 4 + kw) * NV + v]);
    }
  }
}

// Any other columns [lo, hi) (narrow images): a test per tap.
template <int NV, int R0, int R1>
inline void wo_pixel_range(const float* x0, const float* x1, const float* gp, int lo, int hi, __m512* acc) {
  __m512 gv[NV];
  for (int v = 0; v < NV; ++v) gv[v] = _mm512_loadu_ps(gp + v * 16);
  for (int r = R0; r < R1; ++r) {
    const float* xr = r == 0 ? x0 : x1;
    for (int kw = 0; kw < 4; ++kw) {
      if (kw < lo || kw >= hi) continue;
      const __m512 b = _mm512_set1_ps(xr[kw]);
      for (int v = 0; v < NV; ++v) acc[(r * 4 + kw) * NV + v] = _mm512_fmadd_ps(b, gv[v], acc[(r * 4 + kw) * NV + v]);
    }
  }
}

// One output row's pixels for kernel rows [R0, R1): x0 / x1 the input rows (kernel rows kh0, kh0 + 1) at
// input column -pad_left, gp the row's first pixel's grad_y vectors (lanes floats a pixel).
template <int NV, int SW, int R0, int R1>
inline void wo_row(const Conv2dGeom& g, const float* x0, const float* x1, const float* gp, int64_t lanes, __m512* acc) {
  for (int64_t ow = 0; ow < g.OW; ++ow, gp += lanes) {
    const int64_t iw = ow * SW - g.pad_left;
    const float* a = x0 + ow * SW;
    const float* b = x1 + ow * SW;
    if (iw >= 0 && iw + 4 <= g.W) {
      wo_pixel<NV, R0, R1, 0, 4>(a, b, gp, acc);
    } else {
      const int lo = static_cast<int>(iw < 0 ? -iw : 0), hi = static_cast<int>(g.W - iw < 4 ? g.W - iw : 4);
      if (lo == 1 && hi == 4)
        wo_pixel<NV, R0, R1, 1, 4>(a, b, gp, acc);
      else if (lo == 0 && hi == 3)
        wo_pixel<NV, R0, R1, 0, 3>(a, b, gp, acc);
      else if (lo < hi)
        wo_pixel_range<NV, R0, R1>(a, b, gp, lo, hi, acc);
    }
  }
}

// One tile: group gi, channels [oc0, oc0 + 16 * NV) of the group (gyb: their repacked grad_y, N * P pixels of
// lanes floats), input channel ic, kernel rows kh0 and kh0 + 1.
template <int NV, int SW>
void wo_tile(const Conv2dGeom& g, int64_t Cg, int64_t OCg, const float* x, const float* gyb, int64_t lanes, int64_t gi,
             int64_t oc0, int64_t ic, int64_t kh0, float* gw) {
  const int64_t HW = g.H * g.W, P = g.OH * g.OW, K = Cg * g.KH * 4;
  __m512 acc[8 * NV];
  for (int i = 0; i < 8 * NV; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t n = 0; n < g.N; ++n) {
    const float* xc = x + (n * g.C + gi * Cg + ic) * HW;
    // the next image's plane, meanwhile (a tile reads each image's plane once)
    if (n + 1 < g.N)
      for (int64_t i = 0; i < HW; i += 16) _mm_prefetch(reinterpret_cast<const char*>(xc + g.C * HW + i), _MM_HINT_T1);
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const int64_t ih0 = oh * g.stride_h - g.pad_top + kh0 * g.dil_h, ih1 = ih0 + g.dil_h;
      const bool in0 = ih0 >= 0 && ih0 < g.H, in1 = ih1 >= 0 && ih1 < g.H;
      const float* x0 = xc + (in0 ? ih0 : 0) * g.W - g.pad_left;
      const float* x1 = xc + (in1 ? ih1 : 0) * g.W - g.pad_left;
      const float* gp = gyb + (n * P + oh * g.OW) * lanes;
      if (in0 && in1)
        wo_row<NV, SW, 0, 2>(g, x0, x1, gp, lanes, acc);
      else if (in0)
        wo_row<NV, SW, 0, 1>(g, x0, x1, gp, lanes, acc);
      else if (in1)
        wo_row<NV, SW, 1, 2>(g, x0, x1, gp, lanes, acc);
    }
  }
  alignas(64) float t[8][kWoLanes];
  for (int tap = 0; tap < 8; ++tap)
    for (int v = 0; v < NV; ++v) _mm512_store_ps(&t[tap][v * 16], acc[tap * NV + v]);
  for (int64_t m = 0; m < NV * 16; ++m) {
    float* d = gw + (gi * OCg + oc0 + m) * K + (ic * g.KH + kh0) * 4;
    for (int tap = 0; tap < 8; ++tap) d[tap] = t[tap][m];
  }
}

}  // namespace
#endif

bool conv_weight_grad_ocv_supported(const Conv2dGeom& g) {
#if defined(__AVX512F__)
  return g.KW == 4 && g.KH % 2 == 0 && g.dil_w == 1 && (g.stride_w == 1 || g.stride_w == 2) &&
         (g.OC / g.groups) % 16 == 0;
#else
  (void)g;
  return false;
#endif
}

void conv_weight_grad_ocv(const Conv2dGeom& g, const float* x, const float* gy, float* gw) {
#if defined(__AVX512F__)
  const int64_t G = g.groups, Cg = g.C / G, OCg = g.OC / G, P = g.OH * g.OW, NP = g.N * P, khp = g.KH / 2;
  // Blocks of 48 channels (32-channel blocks, whose repacked grad_y would stay in L2 at 16x16 outputs, batch 16,
  // measured 4 % slower there: 16 accumulators against 24)
  const int64_t blk = kWoLanes, nb = (OCg + blk - 1) / blk;
  // One (group, block) at a time: its grad_y repacked [n * P + pixel][lane] (lanes = the block's channels; one
  // block's copy, not the whole grad_y's), then its tiles (input channel, kernel row pair) in parallel, which
  // all read that copy (L2 at DCGAN sizes).
  AlignedBuffer gyr(static_cast<size_t>(kWoLanes * NP));
  const int64_t per_block = Cg * khp;
  for (int64_t gb = 0; gb < G * nb; ++gb) {
    const int64_t gi = gb / nb, oc0 = (gb % nb) * blk, lanes = OCg - oc0 < blk ? OCg - oc0 : blk;
    parallel_for(g.N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t m = 0; m < lanes; ++m) {
          const float* src = gy + (n * g.OC + gi * OCg + oc0 + m) * P;
          float* dn = gyr.data() + n * P * lanes + m;
          for (int64_t p = 0; p < P; ++p) dn[p * lanes] = src[p];
        }
    });
    parallel_for(per_block, 1, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t ic = u / khp, kh0 = (u % khp) * 2;
        const auto run = [&](auto nv) {
          constexpr int NV = decltype(nv)::value;
          if (g.stride_w == 2)
            wo_tile<NV, 2>(g, Cg, OCg, x, gyr.data(), lanes, gi, oc0, ic, kh0, gw);
          else
            wo_tile<NV, 1>(g, Cg, OCg, x, gyr.data(), lanes, gi, oc0, ic, kh0, gw);
        };
        if (lanes == 48)
          run(std::integral_constant<int, 3>());
        else if (lanes == 32)
          run(std::integral_constant<int, 2>());
        else
          run(std::integral_constant<int, 1>());
      }
    });
  }
#else
  conv_weight_grad_gemm(g, x, gy, gw);
#endif
}

}  // namespace FG_ISA_NS
}  // namespace fg
