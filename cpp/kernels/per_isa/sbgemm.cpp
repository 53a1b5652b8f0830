// The bfloat16 GEMM's vdpbf16ps path (contract: forgegrad/sbgemm.h). Only the AVX-512 compilation defines it;
// the instruction (AVX512_BF16) is outside the base AVX-512 flags, so its functions carry their own target and
// run only after sbgemm_dispatch.cpp's run-time CPU check.
//
// Layouts (BLIS order, as gemm.cpp): vdpbf16ps multiplies the two bfloat16 of each 32-bit lane of A's vector by
// those of B's and adds both products to the lane's float32, so K is walked in pairs:
//   packed A panel: kp x MR 32-bit words, word (p, i) = (op(A)(i, 2p), op(A)(i, 2p + 1)), broadcast one row at a time
//   packed B panel: kp x NR 32-bit words, word (p, j) = (op(B)(2p, j), op(B)(2p + 1, j)), two zmm per pair
// An odd K's last pair has a zero high half (0 x 0 adds nothing); rows and columns past the matrix are zero.
#include <cstring>

#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/sbgemm.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
#if defined(__AVX512F__)
namespace {

#define FG_BF16_TARGET __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))

// Register tile 8 x 32: 16 zmm accumulators, one vdpbf16ps each per k-pair (Zen 5 issues two a cycle; 16
// independent chains cover their latency), one broadcast per row and two B loads per pair.
constexpr int kMR = 8;
constexpr int kNR = 32;
// K block: the A panel (8 x 512 bfloat16 = 8 KiB) stays in L1 while the B block (512 x 512 bfloat16 = 512 KiB)
// streams from L2. A function of K alone: it fixes each output's summation order.
constexpr int64_t kKCMax = 512;
constexpr int64_t kNCMax = 512;

inline __mmask32 mask32(int n) { return n >= 32 ? ~__mmask32(0) : (__mmask32(1) << n) - 1; }
inline __mmask16 mask16(int n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << n) - 1u);
}

inline uint32_t pair_word(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | static_cast<uint32_t>(hi) << 16;
}

// Strides past this many elements would overflow the gathers' 32-bit indices (32 rows apart): packed by scalars.
constexpr int64_t kGatherStrideMax = int64_t(1) << 25;

// 8 rows (rows < 8: the others read as zero) of 16 k-pairs each (32 bfloat16 from src + i * ld) transposed: pair w's
// 8 words (rows 0..7) to dst + w * dst_stride. The 32-bit transpose by unpacks and lane shuffles (three rounds of
// 8 shuffles for 128 words), several times cheaper than gathering each pair's words.
FG_BF16_TARGET inline void transpose_8x16_words(const uint16_t* src, int64_t ld, int rows, uint32_t* dst,
                                                int64_t dst_stride) {
  __m512i r[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm512_loadu_si512(src + i * ld) : _mm512_setzero_si512();
  __m512i t[8], u[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // t[2i]: rows 2i, 2i+1 of words 4L, 4L+1 per 128-bit lane L; t[2i+1]: 4L+2, 4L+3
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {  // u[4h + c]: rows 4h..4h+3 of word 4L + c in lane L
    u[4 * h + 0] = _mm512_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 1] = _mm512_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 2] = _mm512_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
    u[4 * h + 3] = _mm512_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
  }
#pragma GCC unroll 2
  for (int c = 0; c < 4; c += 2) {  // words 4L + c and 4L + c + 1: [u[c] | u[4+c] | u[c+1] | u[4+c+1]] lane L each
    const __m512i w0 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i w1 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i x0 = _mm512_shuffle_i32x4(u[c + 1], u[5 + c], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i x1 = _mm512_shuffle_i32x4(u[c + 1], u[5 + c], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i z[4] = {
        _mm512_shuffle_i32x4(w0, x0, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_i32x4(w0, x0, _MM_SHUFFLE(3, 1, 3, 1)),
        _mm512_shuffle_i32x4(w1, x1, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_i32x4(w1, x1, _MM_SHUFFLE(3, 1, 3, 1))};
#pragma GCC unroll 4
    for (int L = 0; L < 4; ++L) {  // z[L] holds words 4L + c (low half) and 4L + c + 1 (high half)
      const int w = 4 * L + c;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + w * dst_stride), _mm512_castsi512_si256(z[L]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (w + 1) * dst_stride), _mm512_extracti64x4_epi64(z[L], 1));
    }
  }
}

// One B panel: columns n0..n0+cols (cols <= kNR) of op(B), k in [k0, k0 + kc), into dst (kp x kNR words).
FG_BF16_TARGET void pack_b_panel(bool trans_b, const uint16_t* B, int64_t ldb, int64_t k0, int64_t kc, int64_t n0,
                                 int cols, uint32_t* dst) {
  const int64_t kp = (kc + 1) / 2, full = kc / 2;
  if (!trans_b) {
    // op(B) row k is B's row k: interleave rows 2p and 2p + 1 lane by lane
    alignas(64) static const uint16_t lo_idx[32] = {0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                                    8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    const __m512i ilo = _mm512_load_si512(lo_idx);
    const __m512i ihi = _mm512_add_epi16(ilo, _mm512_set1_epi16(16));
    const __mmask32 m = mask32(cols);
    for (int64_t p = 0; p < kp; ++p) {
      const uint16_t* r = B + (k0 + 2 * p) * ldb + n0;
      const __m512i r0 = _mm512_maskz_loadu_epi16(m, r);
      const __m512i r1 = p < full ? _mm512_maskz_loadu_epi16(m, r + ldb) : _mm512_setzero_si512();
      _mm512_store_si512(dst + p * kNR, _mm512_permutex2var_epi16(r0, ilo, r1));
      _mm512_store_si512(dst + p * kNR + 16, _mm512_permutex2var_epi16(r0, ihi, r1));
    }
    return;
  }
  // op(B)(k, j) = B[j * ldb + k]: each word is two adjacent elements of one B row; a 32 x kp transpose of words
  const uint16_t* base = B + n0 * ldb + k0;
  int64_t p0 = 0;
  for (; p0 + 16 <= full; p0 += 16)
    for (int g = 0; g < kNR / 8 && 8 * g < cols; ++g)
      transpose_8x16_words(base + 8 * g * ldb + 2 * p0, ldb, cols - 8 * g, dst + p0 * kNR + 8 * g, kNR);
  for (int g = 0; g < kNR / 8; ++g)  // groups of absent columns: zeros
    if (8 * g >= cols)
      for (int64_t p = 0; p < p0; ++p)
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + p * kNR + 8 * g), _mm256_setzero_si256());
  if (ldb <= kGatherStrideMax) {
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(static_cast<int>(ldb)));
    const __mmask16 m0 = mask16(cols), m1 = mask16(cols - 16);
    const uint16_t* base1 = base + 16 * ldb;
    for (int64_t p = p0; p < full; ++p) {
      _mm512_store_si512(dst + p * kNR, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m0, idx, base + 2 * p, 2));
      _mm512_store_si512(
          dst + p * kNR + 16,
          m1 ? _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m1, idx, base1 + 2 * p, 2) : _mm512_setzero_si512());
    }
  } else {
    for (int64_t p = p0; p < full; ++p)
      for (int j = 0; j < kNR; ++j)
        dst[p * kNR + j] = j < cols ? pair_word(base[j * ldb + 2 * p], base[j * ldb + 2 * p + 1]) : 0u;
  }
  if (full < kp)  // an odd block's last pair: (op(B)(k0 + kc - 1, j), 0); the element after it is not read
    for (int j = 0; j < kNR; ++j) dst[full * kNR + j] = j < cols ? pair_word(base[j * ldb + 2 * full], 0) : 0u;
}

// One A panel: rows m0..m0+rows (rows <= kMR) of op(A), k in [k0, k0 + kc), into dst (kp x kMR words).
FG_BF16_TARGET void pack_a_panel(bool trans_a, const uint16_t* A, int64_t lda, int64_t k0, int64_t kc, int64_t m0,
                                 int rows, uint32_t* dst) {
  const int64_t kp = (kc + 1) / 2, full = kc / 2;
  if (trans_a) {
    // op(A)(i, k) = A[k * lda + i]: interleave A's rows 2p and 2p + 1 (8 elements each)
    const __mmask8 m = static_cast<__mmask8>((1u << rows) - 1u);
    for (int64_t p = 0; p < kp; ++p) {
      const uint16_t* r = A + (k0 + 2 * p) * lda + m0;
      const __m128i r0 = _mm_maskz_loadu_epi16(m, r);
      const __m128i r1 = p < full ? _mm_maskz_loadu_epi16(m, r + lda) : _mm_setzero_si128();
      _mm_store_si128(reinterpret_cast<__m128i*>(dst + p * kMR), _mm_unpacklo_epi16(r0, r1));
      _mm_store_si128(reinterpret_cast<__m128i*>(dst + p * kMR + 4), _mm_unpackhi_epi16(r0, r1));
    }
    return;
  }
  // op(A) row i is A's row m0 + i: each word is two adjacent elements of it; an 8 x kp transpose of words
  const uint16_t* base = A + m0 * lda + k0;
  int64_t p0 = 0;
  for (; p0 + 16 <= full; p0 += 16) transpose_8x16_words(base + 2 * p0, lda, rows, dst + p0 * kMR, kMR);
  if (lda <= kGatherStrideMax) {
    const __m256i idx =
        _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int>(lda)));
    const __mmask8 m = static_cast<__mmask8>((1u << rows) - 1u);
    for (int64_t p = p0; p < full; ++p)
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + p * kMR),
                         _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), m, idx, base + 2 * p, 2));
  } else {
    for (int64_t p = p0; p < full; ++p)
      for (int i = 0; i < kMR; ++i)
        dst[p * kMR + i] = i < rows ? pair_word(base[i * lda + 2 * p], base[i * lda + 2 * p + 1]) : 0u;
  }
  if (full < kp)
    for (int i = 0; i < kMR; ++i) dst[full * kMR + i] = i < rows ? pair_word(base[i * lda + 2 * full], 0) : 0u;
}

// C tile (rows x cols of it) = its start + the kp pairs of a (packed A panel) . b (packed B panel); the start is
// bias[j] (or 0) on the first K block (first), else C's value so far.
FG_BF16_TARGET void micro_tile(int64_t kp, const uint32_t* __restrict a, const uint32_t* __restrict b, float* c,
                               int64_t ldc, int rows, int cols, const float* bias, bool first) {
  const __mmask16 m0 = mask16(cols), m1 = mask16(cols - 16);
  __m512 acc[kMR][2];
  if (first) {
    const __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    const __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
      acc[i][0] = b0;
      acc[i][1] = b1;
    }
  } else {
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
      acc[i][0] = i < rows ? _mm512_maskz_loadu_ps(m0, c + i * ldc) : _mm512_setzero_ps();
      acc[i][1] = i < rows ? _mm512_maskz_loadu_ps(m1, c + i * ldc + 16) : _mm512_setzero_ps();
    }
  }
  for (int64_t p = 0; p < kp; ++p) {
    const __m512bh v0 = (__m512bh)_mm512_load_si512(b + p * kNR);
    const __m512bh v1 = (__m512bh)_mm512_load_si512(b + p * kNR + 16);
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
      const __m512bh w = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[p * kMR + i]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], w, v0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], w, v1);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) {
    if (i >= rows) break;
    _mm512_mask_storeu_ps(c + i * ldc, m0, acc[i][0]);
    if (m1) _mm512_mask_storeu_ps(c + i * ldc + 16, m1, acc[i][1]);
  }
}

}  // namespace

void sbgemm_avx512bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
                       const uint16_t* B, int64_t ldb, const float* bias, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = bias ? bias[j] : 0.0f;
    return;
  }
  const int64_t nk = (K + kKCMax - 1) / kKCMax;
  int64_t kc = (K + nk - 1) / nk;
  kc += kc & 1;  // every block starts at an even k
  const int64_t kp_max = kc / 2;
  const int64_t mp = (M + kMR - 1) / kMR;
  const int64_t nc_max = N < kNCMax ? N : kNCMax;
  const int64_t np_max = (nc_max + kNR - 1) / kNR;
  // (AlignedBuffer counts floats: one per 32-bit word)
  AlignedBuffer a_pack(static_cast<size_t>(mp * kMR * kp_max)), b_pack(static_cast<size_t>(np_max * kNR * kp_max));
  uint32_t* ap = reinterpret_cast<uint32_t*>(a_pack.data());
  uint32_t* bp = reinterpret_cast<uint32_t*>(b_pack.data());
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int64_t klen = K - k0 < kc ? K - k0 : kc, kp = (klen + 1) / 2;
    const bool first = k0 == 0;
    parallel_for_work(mp, kMR * klen, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int rows = static_cast<int>(M - r * kMR < kMR ? M - r * kMR : kMR);
        pack_a_panel(trans_a, A, lda, k0, klen, r * kMR, rows, ap + r * kMR * kp);
      }
    });
    for (int64_t n0 = 0; n0 < N; n0 += kNCMax) {
      const int64_t nlen = N - n0 < kNCMax ? N - n0 : kNCMax, np = (nlen + kNR - 1) / kNR;
      parallel_for_work(np, kNR * klen, [&](int64_t c0, int64_t c1) {
        for (int64_t q = c0; q < c1; ++q) {
          const int cols = static_cast<int>(nlen - q * kNR < kNR ? nlen - q * kNR : kNR);
          pack_b_panel(trans_b, B, ldb, k0, klen, n0 + q * kNR, cols, bp + q * kNR * kp);
        }
      });
      // tiles row panel by row panel: one A panel (L1) against the block's B panels (L2)
      parallel_for_work(mp * np, kMR * kNR * klen, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t r = t / np, q = t % np;
          const int rows = static_cast<int>(M - r * kMR < kMR ? M - r * kMR : kMR);
          const int cols = static_cast<int>(nlen - q * kNR < kNR ? nlen - q * kNR : kNR);
          const int64_t j0 = n0 + q * kNR;
          micro_tile(kp, ap + r * kMR * kp, bp + q * kNR * kp, C + r * kMR * ldc + j0, ldc, rows, cols,
                     bias ? bias + j0 : nullptr, first);
        }
      });
    }
  }
}

#endif  // __AVX512F__
}  // namespace FG_ISA_NS
}  // namespace fg
