// The int8 conv's last copy (forgegrad/qconv.h: qdequant_transpose): channels-last bytes to float planes.
// 16 x 16 byte tiles are transposed in SSE2, then each tile row (one channel, 16 positions) is widened,
// dequantized and stored with a mask for a partial tile: pooled LeNet rows are 14 and 7 positions long.
#include <cstdint>

#include "forgegrad/qconv.h"
#include "forgegrad/transpose_u8.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace fg {
namespace FG_ISA_NS {

void qdequant_transpose(const uint8_t* src, int64_t ld, int64_t rows, int64_t cols, float zp, float s, int64_t plane,
                        float* y) {
#if defined(__AVX512F__) || defined(__AVX2__)
#if defined(__AVX512F__)
  const __m512 zpv = _mm512_set1_ps(zp), sv = _mm512_set1_ps(s);
#else
  const __m256 zpv = _mm256_set1_ps(zp), sv = _mm256_set1_ps(s);
#endif
  for (int64_t c0 = 0; c0 < cols; c0 += 16) {
    const int64_t cn = cols - c0 < 16 ? cols - c0 : 16;
    for (int64_t r0 = 0; r0 < rows; r0 += 16) {
      const int64_t rn = rows - r0 < 16 ? rows - r0 : 16;
      __m128i chans[16];
      tile_u8::load_transposed(src + r0 * ld + c0, ld, rn, chans);
#if defined(__AVX512F__)
      const __mmask16 m = static_cast<__mmask16>((1u << rn) - 1);
      for (int64_t j = 0; j < cn; ++j) {
        const __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(chans[j]));
        _mm512_mask_storeu_ps(y + (c0 + j) * plane + r0, m, _mm512_mul_ps(_mm512_sub_ps(f, zpv), sv));
      }
#else
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rn)), lane);
      const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rn) - 8), lane);
      for (int64_t j = 0; j < cn; ++j) {
        float* d = y + (c0 + j) * plane + r0;
        const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(chans[j]));
        const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(chans[j], 8)));
        _mm256_maskstore_ps(d, m0, _mm256_mul_ps(_mm256_sub_ps(lo, zpv), sv));
        if (rn > 8) _mm256_maskstore_ps(d + 8, m1, _mm256_mul_ps(_mm256_sub_ps(hi, zpv), sv));
      }
#endif
    }
  }
#else
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) y[c * plane + r] = (static_cast<float>(src[r * ld + c]) - zp) * s;
#endif
}

}  // namespace FG_ISA_NS
}  // namespace fg
