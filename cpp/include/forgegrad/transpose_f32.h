// An 8 x 8 float transpose in AVX (the per-ISA kernels built for AVX2 and AVX-512), shared by the
// Winograd convolution's transforms and attention's key / value block transposes.
#pragma once

#if defined(__AVX2__)
#include <immintrin.h>

namespace fg {
namespace tile_f32 {

// out[t] lane i = in[i] lane t.
inline void transpose8(const __m256* r, __m256* out) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  // per 128-bit half, columns (t | t + 4) of rows 0-3 (a) and rows 4-7 (b)
  const __m256 a0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 a1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 a2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 a3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 b0 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 b1 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 b2 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 b3 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  out[0] = _mm256_permute2f128_ps(a0, b0, 0x20), out[4] = _mm256_permute2f128_ps(a0, b0, 0x31);
  out[1] = _mm256_permute2f128_ps(a1, b1, 0x20), out[5] = _mm256_permute2f128_ps(a1, b1, 0x31);
  out[2] = _mm256_permute2f128_ps(a2, b2, 0x20), out[6] = _mm256_permute2f128_ps(a2, b2, 0x31);
  out[3] = _mm256_permute2f128_ps(a3, b3, 0x20), out[7] = _mm256_permute2f128_ps(a3, b3, 0x31);
}

}  // namespace tile_f32
}  // namespace fg
#endif
