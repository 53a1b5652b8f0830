// Helpers shared by the Winograd forward / input-gradient pass (conv_winograd.cpp) and its weight gradient
// (conv_winograd_wgrad.cpp), compiled per ISA with them.
#pragma once

#include "conv_tile.h"

namespace fg {
namespace FG_ISA_NS {

// Strides of the 16 transformed planes (V: (Cin, ldT), M / Z: (M, ldT)). One extra cache line per
// plane keeps the 16 streams that the transforms read or write in step out of the same L1 sets.
inline int64_t v_plane(const Winograd3x3& p) { return p.Cin * p.ldT + 16; }
inline int64_t m_plane(const Winograd3x3& p) { return p.M * p.ldT + 16; }

// even = p[0], p[2], ..., odd = p[1], p[3], ... over 2W floats.
inline void deinterleave(const float* p, vf& even, vf& odd) {
#if defined(__AVX512F__)
  const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
  even = _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), b);
  odd = _mm512_permutex2var_ps(a, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), b);
#elif defined(__AVX2__)
  const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
  // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6]
  even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
  odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
#else
  even = p[0];
  odd = p[1];
#endif
}

#if defined(__AVX512F__)
// Index vectors of two-source permutes over two tile rows of tw tiles side by side in one vector (lanes
// [0, tw) the first row, [tw, 2 tw) the second): pair_columns(tw, k) gives lane l < tw the first row's
// column 2 l + k and lane tw + l the second row's (held in the second source, lane W + 2 l + k).
inline __m512i pair_columns(int64_t tw, int k) {
  alignas(64) int32_t ix[W];
  for (int l = 0; l < W; ++l) ix[l] = l < tw ? 2 * l + k : (l < 2 * tw ? W + 2 * (l - tw) + k : 0);
  return _mm512_load_si512(ix);
}
#endif

// V from the padded input B (images b_step apart): every (image, channel) plane, in parallel.
void input_transforms(const Winograd3x3& p, const float* B, int64_t b_step, float* V);

}  // namespace FG_ISA_NS
}  // namespace fg
