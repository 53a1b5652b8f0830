// One (D, H, W) volume of a 3-D max pool, compiled per ISA (pool.cpp runs one volume per task).
// torch's rule per output: best = -inf at the first tap inside the volume, then every tap inside it
// in (d, h, w) order replaces best when greater or NaN (the first maximum, or the last NaN). Both
// paths apply that rule per output in that order, so values and indices are the rule's on every ISA:
// - AVX-512: 16 outputs of a row at a time in registers, one masked gather per tap (row16);
// - otherwise: taps outer, a row of outputs inner, a branch-free select the compiler vectorizes
//   (a branch per tap mispredicts on real data).
#include <algorithm>
#include <cstdint>
#include <limits>

#include "forgegrad/pool.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t first_tap(int64_t v0, int64_t dil) { return v0 >= 0 ? v0 : v0 + ceil_div(-v0, dil) * dil; }

// Outputs [lo, hi) of a row take input column ow * S + off of row `row` (flat start base) under the rule.
template <int64_t S>
inline void take_row(const float* row, int64_t base, int64_t off, int64_t stride, int64_t lo, int64_t hi,
                     float* __restrict best, int64_t* __restrict best_i) {
  const int64_t s = S > 0 ? S : stride;
  for (int64_t ow = lo; ow < hi; ++ow) {
    const int64_t i = ow * s + off;
    const float v = row[i];
    const bool take = v > best[ow] || v != v;
    best[ow] = take ? v : best[ow];
    best_i[ow] = take ? base + i : best_i[ow];
  }
}

#if defined(__AVX512F__)
constexpr int64_t kMaxKw16 = 32;  // kernel widths the 16-lane path keeps per-tap masks for

// Outputs ow0 .. ow0 + 15 (fewer at the row's end) of output row (od, oh), whose window rows are
// d0 .. d1, h0 .. h1: best value and int32 index held in registers over all the window's taps, each
// tap's inputs one masked gather (lanes whose tap lies outside the row are off). The caller checks
// that every index formed fits int32.
void row16(const Pool3dGeom& g, const float* xs, int64_t d0, int64_t d1, int64_t h0, int64_t h1, int64_t ow0, float* ys,
           int64_t* is) {
  const int64_t HW = g.H * g.W, n = std::min<int64_t>(16, g.OW - ow0);
  const __mmask16 lanes = static_cast<__mmask16>((1u << n) - 1);
  alignas(64) int32_t first[16] = {};
  for (int64_t l = 0; l < n; ++l)
    first[l] = static_cast<int32_t>(d0 * HW + h0 * g.W + first_tap((ow0 + l) * g.sw - g.pw, g.dw));
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i col0 = _mm512_mullo_epi32(_mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(ow0)), lane),
                                          _mm512_set1_epi32(static_cast<int32_t>(g.sw)));
  __m512i cols[kMaxKw16];
  __mmask16 ins[kMaxKw16];
  for (int64_t kw = 0; kw < g.KW; ++kw) {  // lanes whose tap kw lies inside the row: 0 <= col < W
    cols[kw] = _mm512_add_epi32(col0, _mm512_set1_epi32(static_cast<int32_t>(kw * g.dw - g.pw)));
    ins[kw] = lanes & _mm512_cmpge_epi32_mask(cols[kw], _mm512_setzero_si512()) &
              _mm512_cmplt_epi32_mask(cols[kw], _mm512_set1_epi32(static_cast<int32_t>(g.W)));
  }
  __m512 best = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512i idx = _mm512_load_si512(first);
  for (int64_t d = d0; d < d1; d += g.dd)
    for (int64_t h = h0; h < h1; h += g.dh) {
      const __m512i base = _mm512_set1_epi32(static_cast<int32_t>(d * HW + h * g.W));
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const __m512i at = _mm512_add_epi32(base, cols[kw]);
        const __m512 v = _mm512_mask_i32gather_ps(best, ins[kw], at, xs, 4);
        const __mmask16 take =
            ins[kw] & (_mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q));
        best = _mm512_mask_mov_ps(best, take, v);
        idx = _mm512_mask_mov_epi32(idx, take, at);
      }
    }
  _mm512_mask_storeu_ps(ys + ow0, lanes, best);
  _mm512_mask_storeu_epi64(is + ow0, static_cast<__mmask8>(lanes), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(idx)));
  if (n > 8)
    _mm512_mask_storeu_epi64(is + ow0 + 8, static_cast<__mmask8>(lanes >> 8),
                             _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(idx, 1)));
}

// Whether every index row16 forms fits int32: the furthest tap of each axis, and the flat index of it.
bool fits_int32(const Pool3dGeom& g) {
  const int64_t lim = int64_t{1} << 30;
  const int64_t rd = (g.OD - 1) * g.sd + (g.KD - 1) * g.dd + 1, rh = (g.OH - 1) * g.sh + (g.KH - 1) * g.dh + 1,
                rw = (g.OW - 1 + 16) * g.sw + (g.KW - 1) * g.dw + 1;
  if (rd > lim || rh > lim || rw > lim || g.D > lim || g.H > lim || g.W > lim) return false;
  return (std::max(rd, g.D) + 1) * std::max(rh, g.H) < lim / std::max(rw, g.W) && g.KW <= kMaxKw16;
}
#endif

// row(d0, d1, h0, h1, o) for each output row (od, oh): the depth and height taps inside the input, [d0, d1) and
// [h0, h1) by the dilations, and the row's first output o.
template <class Row>
void for_each_row(const Pool3dGeom& g, Row row) {
  for (int64_t od = 0; od < g.OD; ++od) {
    const int64_t ds = od * g.sd - g.pd;
    const int64_t d0 = first_tap(ds, g.dd), d1 = std::min(ds + (g.KD - 1) * g.dd + 1, g.D);
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const int64_t hs = oh * g.sh - g.ph;
      const int64_t h0 = first_tap(hs, g.dh), h1 = std::min(hs + (g.KH - 1) * g.dh + 1, g.H);
      row(d0, d1, h0, h1, (od * g.OH + oh) * g.OW);
    }
  }
}

}  // namespace

void max_pool3d_volume(const Pool3dGeom& g, const float* xs, float* ys, int64_t* is) {
  const int64_t HW = g.H * g.W;
#if defined(__AVX512F__)
  if (fits_int32(g)) {
    for_each_row(g, [&](int64_t d0, int64_t d1, int64_t h0, int64_t h1, int64_t o) {
      for (int64_t ow0 = 0; ow0 < g.OW; ow0 += 16) row16(g, xs, d0, d1, h0, h1, ow0, ys + o, is + o);
    });
    return;
  }
#endif
  // The kernel columns kw whose tap lies inside the row for some output (off = kw * dw - pw in
  // [-(OW - 1) * sw, W - 1]). A kernel far wider than the row (torch allows padding up to half of it, so any
  // width) looped over every kw, ~2**31 per row for kernel_size 2**31 - 1: where the range is much wider than
  // the row, each output walks its own taps instead.
  const int64_t kw0 = g.pw - (g.OW - 1) * g.sw > 0 ? ceil_div(g.pw - (g.OW - 1) * g.sw, g.dw) : 0;
  const int64_t kw1 = std::min(g.KW, (g.W - 1 + g.pw) / g.dw + 1);
  const bool sparse = kw1 - kw0 > 2 * (g.W + g.OW);
  for_each_row(g, [&](int64_t d0, int64_t d1, int64_t h0, int64_t h1, int64_t o) {
    float* best = ys + o;
    int64_t* best_i = is + o;
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      best[ow] = -std::numeric_limits<float>::infinity();
      best_i[ow] = d0 * HW + h0 * g.W + first_tap(ow * g.sw - g.pw, g.dw);
    }
    for (int64_t d = d0; d < d1; d += g.dd)
      for (int64_t h = h0; h < h1; h += g.dh) {
        const int64_t base = d * HW + h * g.W;
        if (sparse) {  // per output, its taps inside the row, in kw order (the same rule, so the same bits)
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            const int64_t c0 = ow * g.sw - g.pw;
            const int64_t a = c0 >= 0 ? 0 : ceil_div(-c0, g.dw);
            const int64_t b = c0 > g.W - 1 ? 0 : std::min(g.KW, (g.W - 1 - c0) / g.dw + 1);
            for (int64_t kw = a; kw < b; ++kw) {
              const int64_t i = c0 + kw * g.dw;
              const float v = xs[base + i];
              if (v > best[ow] || v != v) best[ow] = v, best_i[ow] = base + i;
            }
          }
          continue;
        }
        for (int64_t kw = kw0; kw < kw1; ++kw) {
          // outputs whose tap kw lies inside the row: 0 <= ow * sw + off < W
          const int64_t off = kw * g.dw - g.pw;
          const int64_t lo = off >= 0 ? 0 : ceil_div(-off, g.sw);
          const int64_t hi = off <= g.W - 1 ? std::min(g.OW, (g.W - 1 - off) / g.sw + 1) : 0;
          if (g.sw == 1)
            take_row<1>(xs + base, base, off, 1, lo, hi, best, best_i);
          else if (g.sw == 2)
            take_row<2>(xs + base, base, off, 2, lo, hi, best, best_i);
          else
            take_row<0>(xs + base, base, off, g.sw, lo, hi, best, best_i);
        }
      }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
