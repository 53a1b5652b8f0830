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
    if (is) is[ow] = best_i;
  }
}

#if defined(__AVX512F__)
// v wins over best where v > best or v is NaN.
inline __mmask16 wins(__m512 v, __m512 best) {
  return _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
}
#elif defined(__AVX2__)
// v wins over best where v > best or v is NaN (all-ones lanes).
inline __m256 wins(__m256 v, __m256 best) {
  return _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

// best after candidate v under the rule above: v where v > best or v is NaN, else best.
inline __m256 take_over(__m256 v, __m256 best) {
  return _mm256_blendv_ps(_mm256_max_ps(v, best), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

// Columns {0, 2, .., 14} (even) or {1, 3, .., 15} (odd) of the 16 floats a:b, in order: shuffle_ps
// picks them per 128-bit lane as (a0 a2 b0 b2 | a4 a6 b4 b6), the 64-bit permute restores the order.
inline __m256 even_cols(__m256 a, __m256 b) {
  const __m256 v = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
}
inline __m256 odd_cols(__m256 a, __m256 b) {
  const __m256 v = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
}

inline __m256i blend_i32(__m256i a, __m256i b, __m256 mask) {
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), mask));
}

// Output row oh, 8 outputs at a time from 16 columns of each of the two rows; the row's last
// block (or a row of fewer than 8 outputs) is masked, so no load reaches past column 2 * OW <= W.
// Without indices, a short last block is loaded and stored whole where that stays inside the plane
// (the loads within its first 2 * OH rows, the extra stored lanes on outputs of later rows, which this
// loop writes afterwards): masked loads and stores are slow on Zen, and LeNet's 14 x 14 pool has only
// short blocks (7 outputs a row).
inline void row_avx2(const float* xs, int64_t W, int64_t oh, int64_t OH, int64_t OW, float* yr, int64_t* ir) {
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i odd = _mm256_add_epi32(even, _mm256_set1_epi32(1));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i w32 = _mm256_set1_epi32(static_cast<int32_t>(W));
  const int64_t top = 2 * oh * W;
  for (int64_t ow = 0; ow < OW; ow += 8) {
    const int64_t n = OW - ow < 8 ? OW - ow : 8;
    const float* t = xs + top + 2 * ow;
    const float* b = t + W;
    __m256 t0, t1, b0, b1;
    const bool whole = n == 8 || (!ir && top + W + 2 * ow + 16 <= 2 * OH * W && oh * OW + ow + 8 <= OH * OW);
    if (whole) {
      t0 = _mm256_loadu_ps(t), t1 = _mm256_loadu_ps(t + 8);
      b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    } else {  // 2n columns: lanes [0, 2n) of t0 and [0, 2n - 8) of t1 (masked-off lanes read 0)
      const __m256i in0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(2 * n)), lane);
      const __m256i in1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(2 * n - 8)), lane);
      t0 = _mm256_maskload_ps(t, in0), t1 = _mm256_maskload_ps(t + 8, in1);
      b0 = _mm256_maskload_ps(b, in0), b1 = _mm256_maskload_ps(b + 8, in1);
    }
    if (!ir) {
      // Values only: the winner tree runs lane by lane, so it can run on the columns in shuffle_ps's
      // order (0 2 8 10 | 4 6 12 14 and the odd ones alike) and put the 8 results back in column
      // order once, not each of the four inputs; a candidate v takes over from best as
      // max(v, best) (v where v > best, best on ties and where best is NaN) or v where v is NaN.
      const __m256 te = _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(2, 0, 2, 0));
      const __m256 to = _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 1, 3, 1));
      const __m256 be = _mm256_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0));
      const __m256 bo = _mm256_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1));
      const __m256 top = take_over(to, te), low = take_over(bo, be);
      const __m256 y =
          _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(take_over(low, top)), _MM_SHUFFLE(3, 1, 2, 0)));
      if (whole)
        _mm256_storeu_ps(yr + ow, y);
      else
        _mm256_maskstore_ps(yr + ow, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(n)), lane), y);
      continue;
    }
    __m256 best = even_cols(t0, t1), low = even_cols(b0, b1);
    const __m256 tr = odd_cols(t0, t1), br = odd_cols(b0, b1);
    const __m256 m_top = wins(tr, best);
    best = _mm256_blendv_ps(best, tr, m_top);
    const __m256 m_low = wins(br, low);
    low = _mm256_blendv_ps(low, br, m_low);
    const __m256 m = wins(low, best);
    const __m256 y = _mm256_blendv_ps(best, low, m);
    const __m256i out = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(n)), lane);
    if (whole)
      _mm256_storeu_ps(yr + ow, y);
    else
      _mm256_maskstore_ps(yr + ow, out, y);
    if (!ir) continue;
    const __m256i top_pos = blend_i32(even, odd, m_top);
    const __m256i low_pos = _mm256_add_epi32(blend_i32(even, odd, m_low), w32);
    const __m256i pos = blend_i32(top_pos, low_pos, m);
    const __m256i base = _mm256_set1_epi64x(top + 2 * ow);
    const __m256i i0 = _mm256_add_epi64(base, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(pos)));
    const __m256i i1 = _mm256_add_epi64(base, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(pos, 1)));
    if (n == 8) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ir + ow), i0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ir + ow + 4), i1);
    } else {
      // int64 lanes 0-3 / 4-7 take the 32-bit mask of outputs 0-3 / 4-7, each widened to 64 bits
      _mm256_maskstore_epi64(reinterpret_cast<long long*>(ir + ow), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(out)),
                             i0);
      _mm256_maskstore_epi64(reinterpret_cast<long long*>(ir + ow + 4),
                             _mm256_cvtepi32_epi64(_mm256_extracti128_si256(out, 1)), i1);
    }
  }
}
#endif

}  // namespace

void max_pool2x2_plane(const float* xs, int64_t W, int64_t OH, int64_t OW, float* ys, int64_t* is) {
  for (int64_t oh = 0; oh < OH; ++oh) {
    float* yr = ys + oh * OW;
    int64_t* ir = is ? is + oh * OW : nullptr;  // null: values only
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
        if (!ir) continue;
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
#elif defined(__AVX2__)
    // positions relative to the window column are 2 * lane + {0, 1, W, W + 1}: int32 while they fit
    if (W < (int64_t{1} << 30)) {
      row_avx2(xs, W, oh, OH, OW, yr, ir);
      continue;
    }
#endif
    row_scalar(xs, W, oh, ow, OW, yr, ir);
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
