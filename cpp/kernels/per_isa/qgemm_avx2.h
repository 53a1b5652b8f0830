// The AVX2 microkernels of the int8 GEMM (cpp/kernels/per_isa/qgemm.cpp drives them: tasks, threads,
// the epilogue). Exact: int16 products with vpmaddwd, or vpmaddubsw for 7-bit activations. Included by
// qgemm.cpp only (compiled inside its FG_ISA_NS namespace; empty below AVX2).
#pragma once
#include <cstdint>
#include <cstring>

#include "forgegrad/qgemm.h"
#include "forgegrad/simd.h"
#include "qgemm_epilogue.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// ---- AVX2: int16 products with vpmaddwd --------------------------------------------------------
#if defined(__AVX2__)
// Exact path. vpmaddwd multiplies 16 int16 pairs and adds each pair into int32 (u8 x s8 products and
// their pair sums fit easily): one multiply-pipe instruction per 16 products, the same throughput as
// vpmaddubsw + vpmaddwd(ones) per 32. What made the old kernel slow was the widening inside the
// loop (a vpmovzxbw per row and two vpmovsxbw per 8 columns for every 4 k's, on the shuffle pipes the
// adds also need). Here a task widens its activation panel (u8 -> int16) and its 32-column weight
// block (s8 -> int16) once into thread-local buffers, and the microkernel is loads, vpmaddwd and
// vpaddd only: 6 rows x 8 columns, 12 accumulators + 2 weight registers + 1 broadcast + 1 product.
constexpr int kAvx2MR = 6;
// Row blocks shorter than this (batch 1) sign-extend the weights inside the microkernel instead:
// widening a block costs about as much as one row's products with it.
constexpr int kAvx2WidenRows = 4;

// rows x kp activations (u8, p.lda apart) -> int16 rows kp apart (kp = qpad_k(K)). Only the bytes
// the microkernel reads are widened: the 4-byte groups below K, 16 at a time, i.e.
// qrow_bytes(K, avx2) bytes of each row (bytes past K are 0).
[[maybe_unused]] void widen_a(const QGemmArgs& p, int64_t m0, int rows, int64_t kp, int16_t* dst) {
  const int64_t kw = qrow_bytes(p.K, QPath::avx2);
  for (int r = 0; r < rows; ++r) {
    const uint8_t* src = p.a + (m0 + r) * p.lda;
    int16_t* d = dst + r * kp;
    for (int64_t k = 0; k < kw; k += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k),
                          _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k))));
  }
}

// The 32-column block nb as 4 groups of 8 columns, each K4 x 32 int16: per k4, columns 0-3 then 4-7
// of the group, 4 k's each (the packed bytes sign-extended, in their order).
[[maybe_unused]] void widen_b(const QGemmArgs& p, int64_t nb, int64_t K4, int16_t* dst) {
  for (int g = 0; g < 4; ++g) {
    const int8_t* bb = weight_block(p, 2 * nb + g / 2) + 32 * (g % 2);
    int16_t* d = dst + g * K4 * 32;
    for (int64_t k4 = 0; k4 < K4; ++k4) {
      const __m128i* bp = reinterpret_cast<const __m128i*>(bb + k4 * 64);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k4 * 32), _mm256_cvtepi8_epi16(_mm_loadu_si128(bp)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k4 * 32 + 16), _mm256_cvtepi8_epi16(_mm_loadu_si128(bp + 1)));
    }
  }
}

// R rows (1..6) x 8 columns. a16: the first row's int16 activations, rows lda16 apart. kWideB: b
// points at widen_b's int16 group; otherwise at the packed s8 bytes of the group (64 bytes per k4),
// sign-extended here. Each accumulator lane holds one column's sum over the k's 0-1 or 2-3 of every
// k4 (the activation broadcast is 4 int16); an hadd at the end adds the two.
template <int R, bool kWideB>
void micro_avx2_r(const int16_t* a16, int64_t lda16, const void* b, int64_t K4, int32_t* acc) {
  const int16_t* ar[kAvx2MR];
  for (int r = 0; r < kAvx2MR; ++r) ar[r] = a16 + (r < R ? r : 0) * lda16;
  // named accumulators (see micro_vnni_r: arrays of vectors make GCC copy them around)
  __m256i l0 = _mm256_setzero_si256(), h0 = l0, l1 = l0, h1 = l0, l2 = l0, h2 = l0, l3 = l0, h3 = l0, l4 = l0, h4 = l0,
          l5 = l0, h5 = l0;
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    __m256i b0, b1;
    if constexpr (kWideB) {
      const __m256i* bp = reinterpret_cast<const __m256i*>(static_cast<const int16_t*>(b) + k4 * 32);
      b0 = _mm256_loadu_si256(bp);
      b1 = _mm256_loadu_si256(bp + 1);
    } else {
      const __m128i* bp = reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(b) + k4 * 64);
      b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp));
      b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp + 1));
    }
// One row's step as one asm statement: written with intrinsics, GCC 12 hoists all six broadcasts
// above the multiplies and, short of registers, keeps 8 of the 12 accumulators on the stack (half
// the speed). Here each row needs only its two temporaries.
#define FG_AVX2_ROW(r)                                                                             \
  if constexpr (R > r) {                                                                           \
    __m256i t, u;                                                                                  \
    __asm__(                                                                                       \
        "vpbroadcastq %[a], %[t]\n\t"                                                              \
        "vpmaddwd %[b0], %[t], %[u]\n\t"                                                           \
        "vpmaddwd %[b1], %[t], %[t]\n\t"                                                           \
        "vpaddd %[u], %[l], %[l]\n\t"                                                              \
        "vpaddd %[t], %[h], %[h]"                                                                  \
        : [l] "+x"(l##r), [h] "+x"(h##r), [t] "=&x"(t), [u] "=&x"(u)                               \
        : [a] "m"(*reinterpret_cast<const int64_t*>(ar[r] + 4 * k4)), [b0] "x"(b0), [b1] "x"(b1)); \
  }
    FG_AVX2_ROW(0)
    FG_AVX2_ROW(1)
    FG_AVX2_ROW(2)
    FG_AVX2_ROW(3)
    FG_AVX2_ROW(4)
    FG_AVX2_ROW(5)
#undef FG_AVX2_ROW
  }
  const __m256i lo[kAvx2MR] = {l0, l1, l2, l3, l4, l5}, hi[kAvx2MR] = {h0, h1, h2, h3, h4, h5};
  for (int r = 0; r < R; ++r) {
    // hadd: [c0 c1 c4 c5 | c2 c3 c6 c7]; the 64-bit permute puts the columns in order
    const __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo[r], hi[r]), _MM_SHUFFLE(3, 1, 2, 0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kAccLd), s);
  }
}

template <bool kWideB>
void micro_avx2_rows(int rows, const int16_t* a16, int64_t lda16, const void* b, int64_t K4, int32_t* acc) {
  switch (rows) {
    case 1: return micro_avx2_r<1, kWideB>(a16, lda16, b, K4, acc);
    case 2: return micro_avx2_r<2, kWideB>(a16, lda16, b, K4, acc);
    case 3: return micro_avx2_r<3, kWideB>(a16, lda16, b, K4, acc);
    case 4: return micro_avx2_r<4, kWideB>(a16, lda16, b, K4, acc);
    case 5: return micro_avx2_r<5, kWideB>(a16, lda16, b, K4, acc);
    default: return micro_avx2_r<6, kWideB>(a16, lda16, b, K4, acc);
  }
}

// 7-bit activations (QGemmArgs::a_7bit): vpmaddubsw multiplies u8 x s8 pairs into int16 sums that
// cannot saturate (|sum| <= 2 * 127 * 128 < 32767), vpmaddwd with ones adds the pairs into int32:
// two multiply-pipe instructions per 32 products and no widening, straight from the packed bytes.
// R rows (1..6) x 16 columns per pass, 12 accumulators; instantiated for every R, so a short row
// block (batch 1) computes only its own rows.
constexpr int kAvx2MR7 = 6;
template <int R>
void micro_avx2_7bit_r(const QGemmArgs& p, int64_t m0, int64_t nb, int32_t* acc) {
  const int64_t K4 = (p.K + 3) / 4;
  const int cols = static_cast<int>(std::min<int64_t>(kQPackN, p.N - nb * kQPackN));
  const uint8_t* arow[kAvx2MR7];
  for (int r = 0; r < kAvx2MR7; ++r) arow[r] = p.a + (m0 + (r < R ? r : 0)) * p.lda;
  alignas(32) static const int16_t ones[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  for (int half = 0; 16 * half < cols; ++half) {  // a 16-column half past N is not computed
    const int8_t* bb = weight_block(p, 2 * nb + half);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
            c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k4 = 0; k4 < K4; ++k4) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bb + k4 * 64));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bb + k4 * 64 + 32));
// As in micro_avx2_r, one asm statement per row (with intrinsics GCC 12 keeps an accumulator on
// the stack); the ones come from memory, which leaves 16 registers: 12 sums, 2 weights, 2 temporaries.
#define FG_AVX2_ROW(r)                                                                                                \
  if constexpr (R > r) {                                                                                              \
    __m256i t, u;                                                                                                     \
    __asm__(                                                                                                          \
        "vpbroadcastd %[a], %[t]\n\t"                                                                                 \
        "vpmaddubsw %[w0], %[t], %[u]\n\t"                                                                            \
        "vpmaddubsw %[w1], %[t], %[t]\n\t"                                                                            \
        "vpmaddwd %[one], %[u], %[u]\n\t"                                                                             \
        "vpmaddwd %[one], %[t], %[t]\n\t"                                                                             \
        "vpaddd %[u], %[c0], %[c0]\n\t"                                                                               \
        "vpaddd %[t], %[c1], %[c1]"                                                                                   \
        : [c0] "+x"(c##r##0), [c1] "+x"(c##r##1), [t] "=&x"(t), [u] "=&x"(u)                                          \
        : [a] "m"(*reinterpret_cast<const int32_t*>(arow[r] + 4 * k4)), [w0] "x"(w0), [w1] "x"(w1), [one] "m"(ones)); \
  }
      FG_AVX2_ROW(0)
      FG_AVX2_ROW(1)
      FG_AVX2_ROW(2)
      FG_AVX2_ROW(3)
      FG_AVX2_ROW(4)
      FG_AVX2_ROW(5)
#undef FG_AVX2_ROW
    }
    const __m256i out[kAvx2MR7][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kAccLd + 16 * half), out[r][0]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kAccLd + 16 * half + 8), out[r][1]);
    }
  }
}

// One row (batch 1: a matrix-vector product) against both 16-column halves of a panel in one pass over
// K: two weight streams in flight instead of one after the other, and half the loop overhead. Same
// instructions per element as micro_avx2_7bit_r, so the same integers.
void micro_avx2_7bit_row(const QGemmArgs& p, int64_t m0, int64_t nb, int32_t* acc) {
  if (p.N - nb * kQPackN <= 16) return micro_avx2_7bit_r<1>(p, m0, nb, acc);  // the second half is padding
  const int64_t K4 = (p.K + 3) / 4;
  const uint8_t* a = p.a + m0 * p.lda;
  const int8_t* b0 = weight_block(p, 2 * nb);
  const int8_t* b1 = weight_block(p, 2 * nb + 1);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    const __m256i x = _mm256_set1_epi32(load_u32(a + 4 * k4));
    const __m256i* w0 = reinterpret_cast<const __m256i*>(b0 + k4 * 64);
    const __m256i* w1 = reinterpret_cast<const __m256i*>(b1 + k4 * 64);
    c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(_mm256_maddubs_epi16(x, _mm256_loadu_si256(w0)), ones));
    c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(_mm256_maddubs_epi16(x, _mm256_loadu_si256(w0 + 1)), ones));
    c2 = _mm256_add_epi32(c2, _mm256_madd_epi16(_mm256_maddubs_epi16(x, _mm256_loadu_si256(w1)), ones));
    c3 = _mm256_add_epi32(c3, _mm256_madd_epi16(_mm256_maddubs_epi16(x, _mm256_loadu_si256(w1 + 1)), ones));
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc), c0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + 8), c1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + 16), c2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + 24), c3);
}

[[maybe_unused]] void micro_avx2_7bit(const QGemmArgs& p, int64_t m0, int rows, int64_t nb, int32_t* acc) {
  switch (rows) {
    case 1: return micro_avx2_7bit_row(p, m0, nb, acc);
    case 2: return micro_avx2_7bit_r<2>(p, m0, nb, acc);
    case 3: return micro_avx2_7bit_r<3>(p, m0, nb, acc);
    case 4: return micro_avx2_7bit_r<4>(p, m0, nb, acc);
    case 5: return micro_avx2_7bit_r<5>(p, m0, nb, acc);
    default: return micro_avx2_7bit_r<6>(p, m0, nb, acc);
  }
}
#endif

}  // namespace
}  // namespace FG_ISA_NS
}  // namespace fg
