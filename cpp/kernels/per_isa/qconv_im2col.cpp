// The int8 conv's im2col for short rows (forgegrad/qconv.h: qim2col_short_rows). With SSSE3 (the AVX2 and
// AVX-512 builds) each row is put together from one 8-byte load per kernel row, each placed by a byte
// shuffle: LeNet's conv1 (3 runs of 3 bytes, 50176 rows at batch 64) had spent more time in the
// portable 128-bit shifts here than in its GEMM. A pure copy: every path writes the same bytes.
#include <cstdint>
#include <cstring>

#include "forgegrad/qconv.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace fg {
namespace FG_ISA_NS {

void qim2col_short_rows(const uint8_t* in, int64_t in_ld, int64_t kh, int64_t run, int64_t sw_bytes, int64_t OW,
                        int64_t lda, uint8_t* dst) {
#if defined(__AVX2__) || defined(__AVX512F__)
  // place[i]: byte p of the row takes byte p - run * i of kernel row i's load, for p in [run i, run (i + 1));
  // 0x80 (zero) elsewhere, so the ORed shuffles leave zeros past K = kh * run.
  __m128i place[16];
  for (int64_t i = 0; i < kh; ++i) {
    alignas(16) int8_t ix[16];
    for (int64_t p = 0; p < 16; ++p)
      ix[p] = p >= run * i && p < run * (i + 1) ? static_cast<int8_t>(p - run * i) : static_cast<int8_t>(-128);
    place[i] = _mm_load_si128(reinterpret_cast<const __m128i*>(ix));
  }
  for (int64_t ow = 0; ow < OW; ++ow, dst += lda) {
    const uint8_t* s = in + ow * sw_bytes;
    __m128i row = _mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s)), place[0]);
    for (int64_t i = 1; i < kh; ++i)
      row = _mm_or_si128(row,
                         _mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i * in_ld)), place[i]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), row);
    if (lda > 16) std::memset(dst + 16, 0, static_cast<size_t>(lda - 16));
  }
#else
  const uint64_t mask = run >= 8 ? ~uint64_t(0) : (uint64_t(1) << (8 * run)) - 1;
  for (int64_t ow = 0; ow < OW; ++ow, dst += lda) {
    unsigned __int128 row = 0;
    for (int64_t i = 0; i < kh; ++i) {
      uint64_t v;
      std::memcpy(&v, in + i * in_ld + ow * sw_bytes, sizeof v);
      row |= static_cast<unsigned __int128>(v & mask) << (8 * run * i);
    }
    std::memcpy(dst, &row, 16);
    if (lda > 16) std::memset(dst + 16, 0, static_cast<size_t>(lda - 16));
  }
#endif
}

}  // namespace FG_ISA_NS
}  // namespace fg
