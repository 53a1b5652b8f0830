// The 256-bit vpdpbusd microkernels of the int8 GEMM: the `avx_vnni` int8 path, compiled in the AVX2
// build (cpp/kernels/per_isa/qgemm.cpp drives them: tasks, threads, the epilogue). Included by
// qgemm.cpp only (inside its FG_ISA_NS namespace; empty outside the AVX2 build).
//
// vpdpbusd adds four u8 x s8 products into each int32 lane with no intermediate saturation: exact
// 8-bit sums straight from the packed bytes, one instruction per 32 products, where plain AVX2 needs
// four (two vpmaddwd + two vpaddd on int16-widened panels) or, for 7-bit activations only, three.
// The instruction has two encodings: VEX (AVX-VNNI: Intel's Alder Lake and later client cores,
// Sierra Forest, AMD Zen 5) and EVEX (AVX-512 VNNI with VL, on every AVX-512 VNNI CPU). The kernels
// are written once in inline assembly and instantiated for both encodings ({vex} / {evex} tell the
// assembler which); the dispatcher runs the VEX one where the CPU has AVX-VNNI and the EVEX one
// otherwise. Inline assembly also keeps GCC 12 from spilling accumulators (see qgemm_avx2.h).
#pragma once
#include <algorithm>
#include <cstdint>

#include "forgegrad/qgemm.h"
#include "forgegrad/simd.h"
#include "qgemm_epilogue.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

#if defined(__AVX2__) && !defined(__AVX512F__)
enum class DpEncoding { vex, evex };

// The instruction with its encoding pseudo-prefix (%{ %}: braces in an extended-asm template).
#define FG_DPBUSD_VEX "%{vex%} vpdpbusd "
#define FG_DPBUSD_EVEX "%{evex%} vpdpbusd "

// R rows (1..6) x 16 columns per pass over K (each half of the 32-column block in turn): 12
// accumulators, 2 weight registers, 1 broadcast. Instantiated for every R, so a short row block
// computes only its own rows.
constexpr int kDp256MR = 6;
template <int R, DpEncoding E>
void micro_dp256_r(const QGemmArgs& p, int64_t m0, int64_t nb, int32_t* acc) {
  const int64_t K4 = (p.K + 3) / 4;
  const int cols = static_cast<int>(std::min<int64_t>(kQPackN, p.N - nb * kQPackN));
  const uint8_t* arow[kDp256MR];
  for (int r = 0; r < kDp256MR; ++r) arow[r] = p.a + (m0 + (r < R ? r : 0)) * p.lda;
  for (int half = 0; 16 * half < cols; ++half) {  // a 16-column half past N is not computed
    const int8_t* bb = weight_block(p, 2 * nb + half);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
            c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k4 = 0; k4 < K4; ++k4) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bb + k4 * 64));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bb + k4 * 64 + 32));
// One row's step: t = the row's 4 bytes of k4 broadcast; c += t (u8) . w (s8), AT&T operand order.
#define FG_DP256_ROW(r, OP)                                                                              \
  if constexpr (R > r) {                                                                                 \
    __m256i t;                                                                                           \
    __asm__("vpbroadcastd %[a], %[t]\n\t" OP "%[w0], %[t], %[c0]\n\t" OP "%[w1], %[t], %[c1]"            \
            : [c0] "+x"(c##r##0), [c1] "+x"(c##r##1), [t] "=&x"(t)                                       \
            : [a] "m"(*reinterpret_cast<const int32_t*>(arow[r] + 4 * k4)), [w0] "x"(w0), [w1] "x"(w1)); \
  }
#define FG_DP256_ROWS(OP) \
  FG_DP256_ROW(0, OP)     \
  FG_DP256_ROW(1, OP)     \
  FG_DP256_ROW(2, OP)     \
  FG_DP256_ROW(3, OP)     \
  FG_DP256_ROW(4, OP)     \
  FG_DP256_ROW(5, OP)
      if constexpr (E == DpEncoding::vex) {
        FG_DP256_ROWS(FG_DPBUSD_VEX)
      } else {
        FG_DP256_ROWS(FG_DPBUSD_EVEX)
      }
#undef FG_DP256_ROWS
#undef FG_DP256_ROW
    }
    const __m256i out[kDp256MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kAccLd + 16 * half), out[r][0]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kAccLd + 16 * half + 8), out[r][1]);
    }
  }
}

// One row (batch 1: a matrix-vector product, the int8 LSTM's recurrent step) against the whole
// 32-column block in one pass over K. micro_dp256_r<1> would have two accumulators, each vpdpbusd
// waiting for the one before on its register (~5 cycles); here two sets of four take alternate k4
// steps (8 chains) and are added at the end: integer sums, the same in any order.
template <DpEncoding E>
void micro_dp256_row(const QGemmArgs& p, int64_t m0, int64_t nb, int32_t* acc) {
  if (p.N - nb * kQPackN <= 16) return micro_dp256_r<1, E>(p, m0, nb, acc);  // the second half is padding
  const int64_t K4 = (p.K + 3) / 4;
  const uint8_t* a = p.a + m0 * p.lda;
  const int8_t* b0 = weight_block(p, 2 * nb);
  const int8_t* b1 = weight_block(p, 2 * nb + 1);
  const __m256i z = _mm256_setzero_si256();
  __m256i s00 = z, s01 = z, s02 = z, s03 = z, s10 = z, s11 = z, s12 = z, s13 = z;
// k4 step into set S: columns 0-7 and 8-15 from block b0, 16-23 and 24-31 from b1
#define FG_DP256_STEP(k, S, OP)                                                                            \
  {                                                                                                        \
    __m256i t;                                                                                             \
    const __m256i* w0 = reinterpret_cast<const __m256i*>(b0 + (k) * 64);                                   \
    const __m256i* w1 = reinterpret_cast<const __m256i*>(b1 + (k) * 64);                                   \
    __asm__("vpbroadcastd %[a], %[t]\n\t" OP "%[w00], %[t], %[c0]\n\t" OP "%[w01], %[t], %[c1]\n\t" OP     \
            "%[w10], %[t], %[c2]\n\t" OP "%[w11], %[t], %[c3]"                                             \
            : [c0] "+x"(S##0), [c1] "+x"(S##1), [c2] "+x"(S##2), [c3] "+x"(S##3), [t] "=&x"(t)             \
            : [a] "m"(*reinterpret_cast<const int32_t*>(a + 4 * (k))), [w00] "m"(w0[0]), [w01] "m"(w0[1]), \
              [w10] "m"(w1[0]), [w11] "m"(w1[1]));                                                         \
  }
#define FG_DP256_LOOP(OP)         \
  int64_t k4 = 0;                 \
  for (; k4 + 2 <= K4; k4 += 2) { \
    FG_DP256_STEP(k4, s0, OP)     \
    FG_DP256_STEP(k4 + 1, s1, OP) \
  }                               \
  if (k4 < K4) FG_DP256_STEP(k4, s0, OP)
  if constexpr (E == DpEncoding::vex) {
    FG_DP256_LOOP(FG_DPBUSD_VEX)
  } else {
    FG_DP256_LOOP(FG_DPBUSD_EVEX)
  }
#undef FG_DP256_LOOP
#undef FG_DP256_STEP
  const __m256i out[4] = {_mm256_add_epi32(s00, s10), _mm256_add_epi32(s01, s11), _mm256_add_epi32(s02, s12),
                          _mm256_add_epi32(s03, s13)};
  for (int c = 0; c < 4; ++c) _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + 8 * c), out[c]);
}

template <DpEncoding E>
void micro_dp256(const QGemmArgs& p, int64_t m0, int rows, int64_t nb, int32_t* acc) {
  switch (rows) {
    case 1: return micro_dp256_row<E>(p, m0, nb, acc);
    case 2: return micro_dp256_r<2, E>(p, m0, nb, acc);
    case 3: return micro_dp256_r<3, E>(p, m0, nb, acc);
    case 4: return micro_dp256_r<4, E>(p, m0, nb, acc);
    case 5: return micro_dp256_r<5, E>(p, m0, nb, acc);
    default: return micro_dp256_r<6, E>(p, m0, nb, acc);
  }
}
#undef FG_DPBUSD_VEX
#undef FG_DPBUSD_EVEX
#endif

}  // namespace
}  // namespace FG_ISA_NS
}  // namespace fg
