// The int8 conv's max-pool before requantization (forgegrad/qconv.h: qpool_requant). The requantizing
// epilogue is non-decreasing in the s32 sum wherever every scale is positive (the caller checks), so the
// window's largest sum, requantized, gives the bytes requantizing each sum and then pooling gives: a
// quarter of the epilogue's work for a 2x2 pool. The epilogue is the GEMM's own (qgemm_epilogue.h), so the
// operations are the same on every path.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "forgegrad/qconv.h"
#include "qgemm_epilogue.h"

namespace fg {
namespace FG_ISA_NS {

void qpool_requant(const QGemmArgs& ep, const int32_t* acc, int64_t OW, int64_t ph, int64_t pw, int64_t PH, int64_t PW,
                   uint8_t* out) {
  const int64_t N = ep.N, ld = ep.N;
  QGemmArgs p = ep;
  p.out = QOut::u8;
  p.c = out;
  p.ldc = N;
#if defined(__AVX512F__)
  if (N % 32 == 0) {  // whole 32-column blocks: the window's max in registers, straight into the epilogue
    for (int64_t n0 = 0; n0 < N; n0 += 32) {
      const Block32Terms t = block32_terms(p, n0);
      for (int64_t pr = 0; pr < PH; ++pr)
        for (int64_t pc = 0; pc < PW; ++pc) {
          const int32_t* s = acc + (pr * ph * OW + pc * pw) * ld + n0;
          __m512i m0 = _mm512_loadu_si512(s), m1 = _mm512_loadu_si512(s + 16);
          for (int64_t i = 0; i < ph; ++i)
            for (int64_t j = i == 0 ? 1 : 0; j < pw; ++j) {
              const int32_t* w = s + (i * OW + j) * ld;
              m0 = _mm512_max_epi32(m0, _mm512_loadu_si512(w));
              m1 = _mm512_max_epi32(m1, _mm512_loadu_si512(w + 16));
            }
          epilogue_row32(p, t, m0, m1, (pr * PW + pc) * N + n0);
        }
    }
    return;
  }
#endif
  constexpr int kRows = 8;
  alignas(64) int32_t blk[kRows * kAccLd];
  for (int64_t n0 = 0; n0 < N; n0 += kAccLd) {
    const int cols = static_cast<int>(std::min<int64_t>(kAccLd, N - n0));
    for (int64_t pr = 0; pr < PH; ++pr)
      for (int64_t pc0 = 0; pc0 < PW; pc0 += kRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kRows, PW - pc0));
        for (int r = 0; r < rows; ++r) {
          int32_t* __restrict b = blk + r * kAccLd;
          for (int c = 0; c < cols; ++c) b[c] = std::numeric_limits<int32_t>::min();
          for (int64_t i = 0; i < ph; ++i)
            for (int64_t j = 0; j < pw; ++j) {
              const int32_t* __restrict s = acc + ((pr * ph + i) * OW + (pc0 + r) * pw + j) * ld + n0;
              for (int c = 0; c < cols; ++c) b[c] = std::max(b[c], s[c]);
            }
        }
        epilogue(p, blk, pr * PW + pc0, rows, n0, cols);
      }
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
