// The 2x2 / stride 2 max pool of one (H, W) plane with every window inside it (pool.cpp decides
// when that holds), compiled per ISA. Every path takes the same candidates in the same order with
// the same rule as the general loop in pool.cpp -- a candidate wins when it is greater than the best
// so far or NaN -- so results and indices are identical on every path:
//   best = top-left; top-right competes with it; bottom-left vs bottom-right likewise; then the
//   bottom winner competes with the top winner (a tree with the sequential rule's outcome).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "forgegrad/pool.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// Branch-free select: on real data the comparison is close to a coin flip, and as a branch it
// mispredicts often enough to cost ~40 cycles per output.
inline void take_if_greater(float v, int64_t i, float& best, int64_t& best_i) {
  const int64_t take = -static_cast<int64_t>((v > best) | std::isnan(v));  // all ones or zero
  const uint32_t mask = static_cast<uint32_t>(take);
  uint32_t vb, bb;
  std::memcpy(&vb, &v, sizeof vb);
  std::memcpy(&bb, &best, sizeof bb);
  bb = (vb & mask) | (bb & ~mask);
  std::memcpy(&best, &bb, sizeof bb);
  best_i = (i & take) | (best_i & ~take);
}

// Outputs [ow0, OW) of output row oh.
inline void row_scalar(const float* xs, int64_t W, int64_t oh, int64_t ow0, int64_t OW, float* ys, int64_t* is) {
  const int64_t top = 2 * oh * W, bottom = top + W;
  for (int64_t ow = ow0; ow < OW; ++ow) {
    const int64_t i = top + 2 * ow, j = bottom + 2 * ow;
    float best = xs[i], low = xs[j];
    int64_t best_i = i, low_i = j;
    take_if_greater(xs[i + 1], i + 1, best, best_i);
    take_if_greater(xs[j + 1], j + 1, low, low_i);
    take_if_greater(low, low_i, best, best_i);
    ys[ow] = best;
    is[ow] = best_i;
  }
}

#if defined(__AVX512F__)
// v wins over best where v > best or v is NaN.
inline __mmask16 wins(__m512 v, __m512 best) {
  return _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
}
#endif

}  // namespace

void max_pool2x2_plane(const float* xs, int64_t W, int64_t OH, int64_t OW, float* ys, int64_t* is) {
  for (int64_t oh = 0; oh < OH; ++oh) {
    float* yr = ys + oh * OW;
    int64_t* ir = is + oh * OW;
    int64_t ow = 0;
#if defined(__AVX512F__)
    // 16 outputs from 32 columns of each of the two rows; a row's last block (or a row shorter than
    // 16 outputs) is masked, so no load reaches past column 2 * OW <= W. The candidates' positions
    // relative to the window column 2 * ow are 2 * lane + {0, 1, W, W + 1} (int32 while they fit).
    if (W < (int64_t{1} << 30)) {
      const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
      const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
      const __m512i w32 = _mm512_set1_epi32(static_cast<int32_t>(W));
      const int64_t top = 2 * oh * W;
      for (; ow < OW; ow += 16) {
        const int64_t n = OW - ow < 16 ? OW - ow : 16;
        const __mmask32 in = n == 16 ? ~__mmask32{0} : static_cast<__mmask32>((uint64_t{1} << (2 * n)) - 1);
        const __mmask16 in0 = static_cast<__mmask16>(in), in1 = static_cast<__mmask16>(in >> 16);
        const __mmask16 out = n == 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
        const float* t = xs + top + 2 * ow;
        const float* b = t + W;
        const __m512 t0 = _mm512_maskz_loadu_ps(in0, t), t1 = _mm512_maskz_loadu_ps(in1, t + 16);
        const __m512 b0 = _mm512_maskz_loadu_ps(in0, b), b1 = _mm512_maskz_loadu_ps(in1, b + 16);
        __m512 best = _mm512_permutex2var_ps(t0, even, t1);
        const __m512 tr = _mm512_permutex2var_ps(t0, odd, t1);
        __m512 low = _mm512_permutex2var_ps(b0, even, b1);
        const __m512 br = _mm512_permutex2var_ps(b0, odd, b1);
        const __mmask16 m_top = wins(tr, best);
        best = _mm512_mask_blend_ps(m_top, best, tr);
        const __mmask16 m_low = wins(br, low);
        low = _mm512_mask_blend_ps(m_low, low, br);
        const __mmask16 m = wins(low, best);
        _mm512_mask_storeu_ps(yr + ow, out, _mm512_mask_blend_ps(m, best, low));
        const __m512i top_pos = _mm512_mask_blend_epi32(m_top, even, odd);
        const __m512i low_pos = _mm512_add_epi32(_mm512_mask_blend_epi32(m_low, even, odd), w32);
        const __m512i pos = _mm512_mask_blend_epi32(m, top_pos, low_pos);
        const __m512i base = _mm512_set1_epi64(top + 2 * ow);
        _mm512_mask_storeu_epi64(ir + ow, static_cast<__mmask8>(out),
                                 _mm512_add_epi64(base, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(pos))));
        _mm512_mask_storeu_epi64(ir + ow + 8, static_cast<__mmask8>(out >> 8),
                                 _mm512_add_epi64(base, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(pos, 1))));
      }
    }
#endif
    row_scalar(xs, W, oh, ow, OW, yr, ir);
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
