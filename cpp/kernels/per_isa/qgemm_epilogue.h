// The epilogue of the int8 GEMM (cpp/kernels/per_isa/qgemm.cpp): s32 sums -> s32, float32 or u8,
// the same operations in the same order on every ISA, so the outputs are identical on every path;
// and the packed-weight helpers every microkernel uses. Included by the qgemm per-ISA sources only
// (compiled inside their FG_ISA_NS namespace).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "forgegrad/qgemm.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

constexpr int kAccLd = 32;           // row stride of the s32 scratch block

inline int32_t load_u32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The packed 16-column block `blk` of the weights (K4 groups of 64 bytes).
inline const int8_t* weight_block(const QGemmArgs& p, int64_t blk) { return p.b + blk * (qpad_k(p.K) / 4) * 64; }

#if defined(__AVX512F__)
// The epilogue of a full 32-column block, 16 lanes at a time: the same operations in the same order
// as the scalar code below (exact int32 subtraction, one conversion, one multiply, one add; max/min
// operand order as the scalar comparisons, so NaN and -0 give the same results).
// Its per-column terms, computed once per block (not per row): a_zp * colsum, scale, bias.
struct Block32Terms {
  __m512i zc[2];
  __m512 scale[2], bias[2];
};

inline Block32Terms block32_terms(const QGemmArgs& p, int64_t n0) {
  Block32Terms t{};
  if (p.out == QOut::s32) return t;  // plain sums: no per-column terms (colsum and scale may be null)
  const __m512i azp = _mm512_set1_epi32(p.a_zp);
  for (int h = 0; h < 2; ++h) {
    const int64_t n = n0 + 16 * h;
    t.zc[h] = _mm512_mullo_epi32(azp, _mm512_loadu_si512(p.colsum + n));
    t.scale[h] = _mm512_loadu_ps(p.scale + n);
    t.bias[h] = p.bias ? _mm512_loadu_ps(p.bias + n) : _mm512_setzero_ps();
  }
  return t;
}

// One row of a full block: the sums of columns n0..n0+15 (s0) and n0+16..n0+31 (s1) to the output
// element offset `at` = row * ldc + n0. The VNNI microkernels call it straight from their
// accumulators: a round trip through a scratch block cost ~3 % of the 512^3 GEMM.
__attribute__((always_inline)) inline void epilogue_row32(const QGemmArgs& p, const Block32Terms& t, __m512i s0,
                                                          __m512i s1, int64_t at) {
  if (p.out == QOut::s32) {
    int32_t* c = static_cast<int32_t*>(p.c) + at;
    _mm512_storeu_si512(c, s0);
    _mm512_storeu_si512(c + 16, s1);
    return;
  }
  const __m512i sums[2] = {s0, s1};
  for (int h = 0; h < 2; ++h) {
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sums[h], t.zc[h])), t.scale[h]);
    if (p.bias) v = _mm512_add_ps(v, t.bias[h]);
    if (p.relu) v = _mm512_max_ps(v, _mm512_setzero_ps());  // v > 0 ? v : 0 (NaN, -0 -> 0)
    if (p.out == QOut::f32) {
      _mm512_storeu_ps(static_cast<float*>(p.c) + at + 16 * h, v);
    } else {
      __m512 q = _mm512_add_ps(_mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(p.out_inv_scale)),
                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                               _mm512_set1_ps(static_cast<float>(p.out_zp)));
      q = _mm512_min_ps(q, _mm512_set1_ps(255.0f));  // NaN -> 255, as the scalar code
      q = _mm512_max_ps(q, _mm512_setzero_ps());
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(p.c) + at + 16 * h),
                       _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q)));
    }
  }
}

void epilogue_32(const QGemmArgs& p, const int32_t* acc, int64_t m0, int rows, int64_t n0) {
  const Block32Terms t = block32_terms(p, n0);
  for (int r = 0; r < rows; ++r) {
    const int32_t* s = acc + r * kAccLd;
    epilogue_row32(p, t, _mm512_loadu_si512(s), _mm512_loadu_si512(s + 16), (m0 + r) * p.ldc + n0);
  }
}
#elif defined(__AVX2__)
// The same for AVX2, 8 lanes at a time (the scalar code's operations and operand order, as above).
void epilogue_32(const QGemmArgs& p, const int32_t* acc, int64_t m0, int rows, int64_t n0) {
  const __m256i azp = _mm256_set1_epi32(p.a_zp);
  for (int r = 0; r < rows; ++r) {
    const int32_t* s = acc + r * kAccLd;
    const int64_t row = (m0 + r) * p.ldc + n0;
    if (p.out == QOut::s32) {
      std::memcpy(static_cast<int32_t*>(p.c) + row, s, sizeof(int32_t) * 32);
      continue;
    }
    __m256i q[4] = {};  // the u8 lanes (f32 rows are stored in the loop)
    for (int h = 0; h < 4; ++h) {
      const int64_t n = n0 + 8 * h;
      const __m256i sum = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 8 * h));
      const __m256i zc = _mm256_mullo_epi32(azp, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.colsum + n)));
      __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sum, zc)), _mm256_loadu_ps(p.scale + n));
      if (p.bias) v = _mm256_add_ps(v, _mm256_loadu_ps(p.bias + n));
      if (p.relu) v = _mm256_max_ps(v, _mm256_setzero_ps());  // v > 0 ? v : 0 (NaN, -0 -> 0)
      if (p.out == QOut::f32) {
        _mm256_storeu_ps(static_cast<float*>(p.c) + row + 8 * h, v);
        continue;
      }
      __m256 t = _mm256_add_ps(_mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(p.out_inv_scale)),
                                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                               _mm256_set1_ps(static_cast<float>(p.out_zp)));
      t = _mm256_min_ps(t, _mm256_set1_ps(255.0f));  // NaN -> 255, as the scalar code
      t = _mm256_max_ps(t, _mm256_setzero_ps());
      q[h] = _mm256_cvtps_epi32(t);
    }
    if (p.out == QOut::u8) {  // 0..255: the packs do not saturate; the permute undoes their lane order
      const __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint8_t*>(p.c) + row),
                          _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
  }
}
#endif

// Writes rows x cols (cols <= 32) sums `acc` to the output at (m0, n0), through the epilogue.
void epilogue(const QGemmArgs& p, const int32_t* acc, int64_t m0, int rows, int64_t n0, int cols) {
#if defined(__AVX2__)
  if (cols == 32) return epilogue_32(p, acc, m0, rows, n0);
#endif
  for (int r = 0; r < rows; ++r) {
    const int32_t* s = acc + r * kAccLd;
    const int64_t row = (m0 + r) * p.ldc + n0;
    if (p.out == QOut::s32) {
      std::memcpy(static_cast<int32_t*>(p.c) + row, s, sizeof(int32_t) * cols);
      continue;
    }
    float v[kAccLd];
    for (int c = 0; c < cols; ++c) {
      const int64_t n = n0 + c;
      // exact in int32: |acc| and |a_zp * colsum| are each below K * 255 * 128 (K <= kQMaxK)
      v[c] = static_cast<float>(s[c] - p.a_zp * p.colsum[n]) * p.scale[n];
    }
    if (p.bias)
      for (int c = 0; c < cols; ++c) v[c] = v[c] + p.bias[n0 + c];
    if (p.relu)
      for (int c = 0; c < cols; ++c) v[c] = v[c] > 0.0f ? v[c] : 0.0f;
    if (p.out == QOut::f32) {
      std::memcpy(static_cast<float*>(p.c) + row, v, sizeof(float) * cols);
    } else {
      uint8_t* o = static_cast<uint8_t*>(p.c) + row;
      const float zp = static_cast<float>(p.out_zp);
      for (int c = 0; c < cols; ++c) {
        float t = std::nearbyint(v[c] * p.out_inv_scale) + zp;
        t = t < 255.0f ? t : 255.0f;  // (NaN -> 255, as the vector min/max order gives)
        t = t > 0.0f ? t : 0.0f;
        o[c] = static_cast<uint8_t>(static_cast<int>(t));
      }
    }
  }
}

}  // namespace
}  // namespace FG_ISA_NS
}  // namespace fg
