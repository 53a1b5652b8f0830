// float32 <-> bfloat16 conversions (forgegrad._C.bf16; declared in forgegrad/bf16_convert.h). A bfloat16 is the
// upper half of a float32, so widening is a 16-bit shift (exact: NaN payloads, infinities, denormals and -0 keep
// their bits). Rounding is round to nearest even on the bit pattern: (u + 0x7FFF + ((u >> 16) & 1)) >> 16, which
// carries into the exponent where it should (the largest finite floats round to inf) and treats denormals like
// any other pattern, as torch's c10::BFloat16 and ml_dtypes do. A NaN becomes the quiet NaN with the input's sign,
// 0x7FC0 / 0xFFC0, as ml_dtypes gives (what forgegrad's bfloat16 arrays held before these kernels; torch's
// vectorized CPU cast gives 0xFFFF, its scalar one 0x7FC0: quiet NaNs all).
//
// AVX-512 and AVX2 run the same integer arithmetic on 16 / 8 lanes. AVX512_BF16's vcvtneps2bf16 is not used: it
// treats denormal inputs as zero and flushes denormal results (whatever MXCSR says), so its bits differ from the
// rounding above on those inputs. Elements are independent: the same bits on every ISA and at any thread count.
#include <cstdint>
#include <cstring>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "forgegrad/bf16_convert.h"
#include "forgegrad/parallel.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

inline uint16_t round_one(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7FC0u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline float widen_one(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Elements per thread range: the work is a few instructions per element, bound by memory; below this a range
// costs more to hand out than to convert.
constexpr int64_t kGrain = int64_t(1) << 16;

void round_range(const float* __restrict in, uint16_t* __restrict out, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
  const __m512i bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1), abs_mask = _mm512_set1_epi32(0x7FFFFFFF),
                inf = _mm512_set1_epi32(0x7F800000), qnan = _mm512_set1_epi32(0x7FC0), sign = _mm512_set1_epi32(0x8000);
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_loadu_si512(in + i);
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(hi, one))), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
    const __m512i q = _mm512_or_si512(_mm512_and_si512(hi, sign), qnan);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, r, q)));
  }
#elif defined(__AVX2__)
  const __m256i bias = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1), abs_mask = _mm256_set1_epi32(0x7FFFFFFF),
                inf = _mm256_set1_epi32(0x7F800000), qnan = _mm256_set1_epi32(0x7FC0), sign = _mm256_set1_epi32(0x8000);
  // 8 lanes rounded to 16-bit values held in 32-bit lanes (0 .. 0xFFFF)
  const auto round8 = [&](const float* p) {
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i hi = _mm256_srli_epi32(u, 16);
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(hi, one))), 16);
    // |u| <= 0x7FFFFFFF: the signed compare is the unsigned one
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    const __m256i q = _mm256_or_si256(_mm256_and_si256(hi, sign), qnan);
    return _mm256_blendv_epi8(r, q, nan);
  };
  for (; i + 16 <= n; i += 16) {
    // packus works within 128-bit halves: a0-3 b0-3 a4-7 b4-7, put back in order by the 64-bit permute
    const __m256i packed = _mm256_packus_epi32(round8(in + i), round8(in + i + 8));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_permute4x64_epi64(packed, 0xD8));
  }
#endif
  for (; i < n; ++i) out[i] = round_one(in[i]);
}

void widen_range(const uint16_t* __restrict in, float* __restrict out, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i)));
    _mm512_storeu_si512(out + i, _mm512_slli_epi32(w, 16));
  }
#elif defined(__AVX2__)
  for (; i + 8 <= n; i += 8) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_slli_epi32(w, 16));
  }
#endif
  for (; i < n; ++i) out[i] = widen_one(in[i]);
}

}  // namespace

void f32_to_bf16(const float* in, uint16_t* out, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) { round_range(in + b, out + b, e - b); });
}

void bf16_to_f32(const uint16_t* in, float* out, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) { widen_range(in + b, out + b, e - b); });
}

}  // namespace FG_ISA_NS
}  // namespace fg
