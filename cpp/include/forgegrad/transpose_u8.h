// A 16 x 16 byte tile transpose in SSE2 (every x86-64), shared by the int8 conv's copies
// (cpp/kernels/qconv.cpp, cpp/kernels/per_isa/qconv_dequant.cpp).
#pragma once
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>

namespace fg {
namespace tile_u8 {

// in[r] holds row r of a 16 x 16 byte tile; out[c] gets column c (byte r = in[r][c]). Four rounds of
// unpacks, each doubling the run of one column's bytes (1, 2, 4, 8, then 16).
inline void transpose_16x16(const __m128i in[16], __m128i out[16]) {
  __m128i t[16], u[16], v[16];
  for (int k = 0; k < 8; ++k) {  // t[k]: columns 0-7, rows 2k, 2k+1; t[8 + k]: columns 8-15
    t[k] = _mm_unpacklo_epi8(in[2 * k], in[2 * k + 1]);
    t[8 + k] = _mm_unpackhi_epi8(in[2 * k], in[2 * k + 1]);
  }
  for (int h = 0; h < 2; ++h)  // u[4q + k]: columns 4q..4q+3, rows 4k..4k+3
    for (int k = 0; k < 4; ++k) {
      u[8 * h + k] = _mm_unpacklo_epi16(t[8 * h + 2 * k], t[8 * h + 2 * k + 1]);
      u[8 * h + 4 + k] = _mm_unpackhi_epi16(t[8 * h + 2 * k], t[8 * h + 2 * k + 1]);
    }
  for (int q = 0; q < 4; ++q)  // v[4q + 2k]: columns 4q, 4q+1, rows 8k..8k+7; v[4q + 2k + 1]: columns 4q+2, 4q+3
    for (int k = 0; k < 2; ++k) {
      v[4 * q + 2 * k] = _mm_unpacklo_epi32(u[4 * q + 2 * k], u[4 * q + 2 * k + 1]);
      v[4 * q + 2 * k + 1] = _mm_unpackhi_epi32(u[4 * q + 2 * k], u[4 * q + 2 * k + 1]);
    }
  for (int q = 0; q < 4; ++q) {
    out[4 * q + 0] = _mm_unpacklo_epi64(v[4 * q + 0], v[4 * q + 2]);
    out[4 * q + 1] = _mm_unpackhi_epi64(v[4 * q + 0], v[4 * q + 2]);
    out[4 * q + 2] = _mm_unpacklo_epi64(v[4 * q + 1], v[4 * q + 3]);
    out[4 * q + 3] = _mm_unpackhi_epi64(v[4 * q + 1], v[4 * q + 3]);
  }
}

// A rows x 16 tile from src (rows ld apart, 16 bytes read per row: the caller's buffer has the
// slack), transposed; rows past `rows` read as zero.
inline void load_transposed(const uint8_t* src, int64_t ld, int64_t rows, __m128i out[16]) {
  __m128i in[16];
  for (int64_t r = 0; r < 16; ++r)
    in[r] = r < rows ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + r * ld)) : _mm_setzero_si128();
  transpose_16x16(in, out);
}

}  // namespace tile_u8
}  // namespace fg
#endif
