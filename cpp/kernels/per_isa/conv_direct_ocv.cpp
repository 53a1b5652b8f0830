// Direct 2-D convolution forward with output channels along the vector lanes (AVX-512), compiled per ISA:
// a register tile of up to 8 output pixels of one row x 48 output channels (24 accumulators; 32 or 16 in
// a group's last block) sums the whole reduction (input channel, kernel row, kernel column) in registers,
// each input value broadcast straight from the NCHW image and each tap's 48 weights three repacked
// vectors. Taps that fall in the
// padding are not multiplied: kernel rows outside the image are left out of the loop for the whole tile,
// and a kernel column outside it for the tile's edge pixels only. The im2col / implicit-GEMM paths
// multiply those zeros (12 % of a k4 s2 padding-1 layer's products on 8x8 outputs, 6 % on 16x16), which
// torch's oneDNN skips the same way. No packing of the image and no C tile reloaded per K slice: each
// output is one fma chain over (ic, kh, kw) in that order, whatever the thread count (threads take whole
// tiles), so the bits do not depend on it. Other ISAs, and geometries the tile does not take (output
// channels per group not a multiple of 16, column strides above 2), run conv2d_forward_implicit.
//
// Measured (1 thread, CPU time, shared 2-vCPU Zen 4, ms, implicit GEMM -> this): DCGAN k4 s2 padding 1,
// batch 16, 128 -> 256 at 16x16 10.6-10.7 -> 9.9-10.5, 64 -> 128 at 32x32 11.0-11.2 -> 10.4-10.7; ResNet
// k3 s2, batch 8, 256 -> 512 at 14x14 10.3-10.4 -> 9.8-10.5, 128 -> 256 at 28x28 9.7 -> 9.4-9.6. The
// prefetch of the channel kOcvAhead on took the first from 11.8 to 10.3 (the broadcasts had stalled on L2).
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "act_vec.h"
#include "conv_tile.h"
#include "forgegrad/conv.h"
#include "forgegrad/conv_implicit.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {

#if defined(__AVX512F__)
namespace {

constexpr int kOcvPix = 8;  // output pixels of a tile (one row)
constexpr int64_t kOcvAhead = 4;  // input channels ahead that a tile prefetches

// acc[j * NV + v] += rk[j * SW] * wv[v] for pixels j in [J, END) (compile-time: unrolled, broadcasts at fixed
// offsets).
template <int J, int END, int NV, int SW>
inline void ocv_pixels(const float* rk, const __m512* wv, __m512* acc) {
  if constexpr (J < END) {
    const __m512 b = _mm512_set1_ps(rk[J * SW]);
    for (int v = 0; v < NV; ++v) acc[J * NV + v] = _mm512_fmadd_ps(b, wv[v], acc[J * NV + v]);
    ocv_pixels<J + 1, END, NV, SW>(rk, wv, acc);
  }
}

// One tap of one input channel for the tile's pixels [L0, CNT - H0) (the others read padding under this
// kernel column): wk its NV vectors of weights. (acc: CNT x NV accumulators, flat.)
template <int CNT, int NV, int SW, int L0, int H0>
inline void ocv_tap(const float* rk, const float* wk, __m512* acc) {
  __m512 wv[NV];
  for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(wk + v * 16);
  ocv_pixels<L0, CNT - H0, NV, SW>(rk, wv, acc);
}

// Any other pixel range [lo, hi) (wide padding or dilation): a test per pixel.
template <int CNT, int NV, int SW>
inline void ocv_tap_range(const float* rk, const float* wk, int lo, int hi, __m512* acc) {
  __m512 wv[NV];
  for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(wk + v * 16);
  for (int j = 0; j < CNT; ++j) {
    if (j < lo || j >= hi) continue;
    const __m512 b = _mm512_set1_ps(rk[j * SW]);
    for (int v = 0; v < NV; ++v) acc[j * NV + v] = _mm512_fmadd_ps(b, wv[v], acc[j * NV + v]);
  }
}

struct OcvGeom {
  const Conv2dGeom* g;
  int64_t Cg, OCg, KK, K;
};

// One tile: image n, group gi, output channels [oc0, oc0 + 16 * NV) of the group, output row oh, pixels
// [ow0, ow0 + CNT). wr: the block's repacked weight (Cg x KK taps x NV * 16 lanes).
template <int CNT, int NV, int SW>
void ocv_tile(const OcvGeom& s, const float* x, const float* wr, const float* bias, float* y, int act, float alpha,
              int64_t n, int64_t gi, int64_t oc0, int64_t oh, int64_t ow0) {
  const Conv2dGeom& g = *s.g;
  const int64_t HW = g.H * g.W, sw = SW, dw = g.dil_w;
  // kernel rows inside the image
  int64_t kh0 = 0, kh1 = g.KH;
  const int64_t ih0 = oh * g.stride_h - g.pad_top;
  while (kh0 < kh1 && ih0 + kh0 * g.dil_h < 0) ++kh0;
  while (kh1 > kh0 && ih0 + (kh1 - 1) * g.dil_h >= g.H) --kh1;
  // per kernel column, the pixels whose input column is inside
  int lo[64], hi[64];
  const int64_t iw0 = ow0 * sw - g.pad_left;
  for (int64_t kw = 0; kw < g.KW; ++kw) {
    int l = 0, h = CNT;
    while (l < h && iw0 + l * sw + kw * dw < 0) ++l;
    while (h > l && iw0 + (h - 1) * sw + kw * dw >= g.W) --h;
    lo[kw] = l;
    hi[kw] = h;
  }
  __m512 acc[CNT * NV];
  for (int i = 0; i < CNT * NV; ++i) acc[i] = _mm512_setzero_ps();
  // kind[kw]: 0 every pixel, 1 all but the first, 2 all but the last, 3 all but both, 4 another range
  int kind[64];
  for (int64_t kw = 0; kw < g.KW; ++kw) {
    const bool l1 = lo[kw] == 1, h1 = hi[kw] == CNT - 1;
    kind[kw] = lo[kw] == 0 && hi[kw] == CNT ? 0 : l1 && hi[kw] == CNT ? 1 : lo[kw] == 0 && h1 ? 2 : l1 && h1 ? 3 : 4;
  }
  constexpr int L = NV * 16;
  const float* rows[64];
  const float* xc = x + (n * g.C + gi * s.Cg) * HW;
  for (int64_t kh = kh0; kh < kh1; ++kh) rows[kh] = xc + (ih0 + kh * g.dil_h) * g.W + iw0;
  for (int64_t ic = 0; ic < s.Cg; ++ic) {
    const float* wc = wr + ic * s.KK * L;
    for (int64_t kh = kh0; kh < kh1; ++kh) {
      const float* r = rows[kh] + ic * HW;
      // the tile's lines of the channel kOcvAhead on (from L2: the broadcasts stalled on them); a prefetch
      // past the image does not fault
      _mm_prefetch(reinterpret_cast<const char*>(r + kOcvAhead * HW), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(r + kOcvAhead * HW + 16), _MM_HINT_T0);
      const float* wk = wc + kh * g.KW * L;
      for (int64_t kw = 0; kw < g.KW; ++kw, wk += L) {
        const float* rk = r + kw * dw;
        switch (kind[kw]) {
          case 0: ocv_tap<CNT, NV, SW, 0, 0>(rk, wk, acc); break;
          case 1: ocv_tap<CNT, NV, SW, 1, 0>(rk, wk, acc); break;
          case 2: ocv_tap<CNT, NV, SW, 0, 1>(rk, wk, acc); break;
          case 3: ocv_tap<CNT, NV, SW, 1, 1>(rk, wk, acc); break;
          default: ocv_tap_range<CNT, NV, SW>(rk, wk, lo[kw], hi[kw], acc); break;
        }
      }
    }
  }
  // lanes are output channels: transposed through a small buffer into the NCHW rows
  alignas(64) float t[CNT][NV * 16];
  for (int j = 0; j < CNT; ++j)
    for (int v = 0; v < NV; ++v) _mm512_store_ps(&t[j][v * 16], acc[j * NV + v]);
  for (int64_t m = 0; m < NV * 16; ++m) {
    const int64_t oc = gi * s.OCg + oc0 + m;
    float* d = y + ((n * g.OC + oc) * g.OH + oh) * g.OW + ow0;
    if (bias) {
      const float b = bias[oc];
      for (int j = 0; j < CNT; ++j) d[j] = t[j][m] + b;
    } else {
      for (int j = 0; j < CNT; ++j) d[j] = t[j][m];
    }
    act_forward_serial(act, alpha, d, CNT);
  }
}

template <int NV, int SW>
void ocv_tile_any(int cnt, const OcvGeom& s, const float* x, const float* wr, const float* bias, float* y, int act,
                  float alpha, int64_t n, int64_t gi, int64_t oc0, int64_t oh, int64_t ow0) {
  switch (cnt) {
    case 8: return ocv_tile<8, NV, SW>(s, x, wr, bias, y, act, alpha, n, gi, oc0, oh, ow0);
    case 7: return ocv_tile<7, NV, SW>(s, x, wr, bias, y, act, alpha, n, gi, oc0, oh, ow0);
    case 6: return ocv_tile<6, NV, SW>(s, x, wr, bias, y, act, alpha, n, gi, oc0, oh, ow0);
    case 5: return ocv_tile<5, NV, SW>(s, x, wr, bias, y, act, alpha, n, gi, oc0, oh, ow0);
    case 4: return ocv_tile<4, NV, SW>(s, x, wr, bias, y, act, alpha, n, gi, oc0, oh, ow0);
    case 3: return ocv_tile<3, NV, SW>(s, x, wr, bias, y, act, alpha, n, gi, oc0, oh, ow0);
    case 2: return ocv_tile<2, NV, SW>(s, x, wr, bias, y, act, alpha, n, gi, oc0, oh, ow0);
    default: return ocv_tile<1, NV, SW>(s, x, wr, bias, y, act, alpha, n, gi, oc0, oh, ow0);
  }
}

}  // namespace
#endif

bool conv2d_forward_ocv_supported(const Conv2dGeom& g) {
#if defined(__AVX512F__)
  return (g.stride_w == 1 || g.stride_w == 2) && (g.OC / g.groups) % 16 == 0 && g.KH <= 64 && g.KW <= 64;
#else
  (void)g;
  return false;
#endif
}

void conv2d_forward_ocv(const Conv2dGeom& g, const float* x, const float* w, const float* bias, float* y, int act,
                        float alpha) {
  if (!conv2d_forward_ocv_supported(g)) {
    conv2d_forward_implicit(g, x, w, bias, y, act, alpha);
    return;
  }
#if defined(__AVX512F__)
  OcvGeom s{&g, g.C / g.groups, g.OC / g.groups, g.KH * g.KW, 0};
  s.K = s.Cg * s.KK;
  const int64_t G = g.groups, nb = (s.OCg + 47) / 48;  // blocks of 48 channels, the last of 16 or 32
  if (g.N <= 0 || g.OH <= 0 || g.OW <= 0) return;
  // Weight repacked per block of up to 48 channels: wr[(gi * nb + b) * 48 * K + (ic * KK + t) * lanes + lane].
  AlignedBuffer wr(static_cast<size_t>(G * nb * 48 * s.K));
  parallel_for(G * nb, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t gi = u / nb, b = u % nb, oc0 = b * 48, lanes = s.OCg - oc0 < 48 ? s.OCg - oc0 : 48;
      float* d = wr.data() + u * 48 * s.K;
      const float* src = w + (gi * s.OCg + oc0) * s.K;
      // 16 taps of every channel's weight row at a time (whole lines read), written out lane-contiguous
      alignas(64) float tmp[48][16];
      for (int64_t k0 = 0; k0 < s.K; k0 += 16) {
        const int64_t kn = s.K - k0 < 16 ? s.K - k0 : 16;
        const __mmask16 km = static_cast<__mmask16>((1u << kn) - 1u);
        for (int64_t m = 0; m < lanes; ++m) {
          _mm_prefetch(reinterpret_cast<const char*>(src + m * s.K + k0 + 64), _MM_HINT_T0);  // 4 lines on
          _mm512_store_ps(tmp[m], _mm512_maskz_loadu_ps(km, src + m * s.K + k0));
        }
        for (int64_t k = 0; k < kn; ++k)
          for (int64_t m = 0; m < lanes; ++m) d[(k0 + k) * lanes + m] = tmp[m][k];
      }
    }
  });
  const int64_t owb = (g.OW + kOcvPix - 1) / kOcvPix;
  // Units: (group, channel block, image, output row); a unit's tiles reuse its weight block from L2.
  const int64_t rows_total = g.N * g.OH;
  parallel_for(G * nb * rows_total, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t gb = u / rows_total, r = u % rows_total, gi = gb / nb, b = gb % nb;
      const int64_t n = r / g.OH, oh = r % g.OH, oc0 = b * 48;
      const float* wb = wr.data() + gb * 48 * s.K;
      for (int64_t t = 0; t < owb; ++t) {
        const int64_t ow0 = t * kOcvPix;
        const int cnt = static_cast<int>(g.OW - ow0 < kOcvPix ? g.OW - ow0 : kOcvPix);
        const int64_t left = s.OCg - oc0;
        const auto run = [&](auto nv) {
          constexpr int NV = decltype(nv)::value;
          if (g.stride_w == 2)
            ocv_tile_any<NV, 2>(cnt, s, x, wb, bias, y, act, alpha, n, gi, oc0, oh, ow0);
          else
            ocv_tile_any<NV, 1>(cnt, s, x, wb, bias, y, act, alpha, n, gi, oc0, oh, ow0);
        };
        if (left >= 48)
          run(std::integral_constant<int, 3>());
        else if (left >= 32)
          run(std::integral_constant<int, 2>());
        else
          run(std::integral_constant<int, 1>());
      }
    }
  });
#endif
}

}  // namespace FG_ISA_NS
}  // namespace fg
