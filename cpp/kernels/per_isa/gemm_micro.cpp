// SGEMM microkernel and packing, compiled per ISA: the register-blocked inner product of one
// packed A panel (kc x kGemmMR) and one packed B panel (kc x kGemmNR), and the routines that build panels.
#include "gemm_internal.h"

namespace fg {
namespace FG_ISA_NS {
namespace gemm_detail {

namespace {

// C row segment of one vector: alpha * acc (+ beta * old). n < W stores a partial vector.
inline void store_vec(float* c, vf acc, vf valpha, float beta, int n) {
  vf r = vmul(valpha, acc);
  if (n >= W) {
    if (beta != 0.0f) r = vfmadd(vset1(beta), vload(c), r);
    vstore(c, r);
  } else if (n > 0) {
    if (beta != 0.0f) r = vfmadd(vset1(beta), vload_n(c, n), r);
    vstore_n(c, r, n);
  }
}

// Where a tile reads its B panel from (the arithmetic is the same in every mode, so the mode
// never changes a result bit):
//   kPacked:    a packed panel, rows kGemmNR floats apart (a compile-time stride).
//   kInPlace:   op(B)'s own rows, ldb floats apart (full panels only: whole vectors are loaded).
//   kPackAlong: in place, and each row is also stored to a packed panel (b_copy) as it is used:
//               the first A panel of a sweep packs B for the others at no extra pass over B.
//   kInPlaceTail: in place, the last vector loaded masked (cols - (NV - 1) * W lanes): a direct
//               tile's edge panel, read without packing and without touching memory past it.
enum class BRead { kPacked, kInPlace, kPackAlong, kInPlaceTail };

// Where a tile reads its A panel from: packed (kGemmMR floats per step k), or in place from op(A)
// stored column-major (step k's kGemmMR values at a + k * lda) or row-major (row r at a + r * lda),
// storing the packed panel to a_copy as it goes (full panels of kGemmMR rows only) unless !CopyA
// (direct tiles of small products: nothing is packed, every tile reads op(A) in place).
enum class ARead { kPacked, kColMajor, kRowMajor };
typedef uint32_t __attribute__((__may_alias__)) u32_alias;

#if defined(__AVX2__) && !defined(__AVX512F__)
// The AVX2 6 x 16 tile of two packed panels, 4 steps k per pass, as one asm statement: from
// intrinsics GCC 12 keeps the k loop rolled with its pointer and counter updates between the
// FMAs, and the tile ran at ~85 % of the FMA peak; unrolled here at ~92 % (85 of 92 GFLOP/s on a
// 2.9 GHz AVX2-only Zen VM, B panel in L1, A streaming from L2). Each accumulator still sums its
// products in k order, one FMA per step: the same bits as the intrinsics loop, which does the
// remaining kc % 4 steps. (B rows in ymm12-13, broadcasts in ymm14-15: named temporaries would
// exceed asm's 30 operands.)
// clang-format off
#define FG_SGEMM_AVX2_STEP(S)                                                  \
  "vmovups " #S "*64(%[b]), %%ymm12\n\t"                                     \
  "vmovups " #S "*64+32(%[b]), %%ymm13\n\t"                                  \
  "vbroadcastss " #S "*24(%[a]), %%ymm14\n\t"                                \
  "vfmadd231ps %%ymm12, %%ymm14, %[c00]\n\t"                                 \
  "vfmadd231ps %%ymm13, %%ymm14, %[c01]\n\t"                                 \
  "vbroadcastss " #S "*24+4(%[a]), %%ymm15\n\t"                              \
  "vfmadd231ps %%ymm12, %%ymm15, %[c10]\n\t"                                 \
  "vfmadd231ps %%ymm13, %%ymm15, %[c11]\n\t"                                 \
  "vbroadcastss " #S "*24+8(%[a]), %%ymm14\n\t"                              \
  "vfmadd231ps %%ymm12, %%ymm14, %[c20]\n\t"                                 \
  "vfmadd231ps %%ymm13, %%ymm14, %[c21]\n\t"                                 \
  "vbroadcastss " #S "*24+12(%[a]), %%ymm15\n\t"                             \
  "vfmadd231ps %%ymm12, %%ymm15, %[c30]\n\t"                                 \
  "vfmadd231ps %%ymm13, %%ymm15, %[c31]\n\t"                                 \
  "vbroadcastss " #S "*24+16(%[a]), %%ymm14\n\t"                             \
  "vfmadd231ps %%ymm12, %%ymm14, %[c40]\n\t"                                 \
  "vfmadd231ps %%ymm13, %%ymm14, %[c41]\n\t"                                 \
  "vbroadcastss " #S "*24+20(%[a]), %%ymm15\n\t"                             \
  "vfmadd231ps %%ymm12, %%ymm15, %[c50]\n\t"                                 \
  "vfmadd231ps %%ymm13, %%ymm15, %[c51]\n\t"
// clang-format on

// acc += a_panel . b_panel over the first 4 * k4 steps (k4 >= 1).
inline void packed_6x16_avx2(int64_t k4, const float* a, const float* b, vf (&acc)[6][2]) {
  vf c00 = acc[0][0], c01 = acc[0][1], c10 = acc[1][0], c11 = acc[1][1], c20 = acc[2][0], c21 = acc[2][1];
  vf c30 = acc[3][0], c31 = acc[3][1], c40 = acc[4][0], c41 = acc[4][1], c50 = acc[5][0], c51 = acc[5][1];
  __asm__(
      "1:\n\t" FG_SGEMM_AVX2_STEP(0) FG_SGEMM_AVX2_STEP(1) FG_SGEMM_AVX2_STEP(2) FG_SGEMM_AVX2_STEP(3)
      "add $96, %[a]\n\t"
      "add $256, %[b]\n\t"
      "dec %[k]\n\t"
      "jnz 1b"
      : [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10), [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21),
        [c30] "+x"(c30), [c31] "+x"(c31), [c40] "+x"(c40), [c41] "+x"(c41), [c50] "+x"(c50), [c51] "+x"(c51),
        [a] "+r"(a), [b] "+r"(b), [k] "+r"(k4)
      :
      : "xmm12", "xmm13", "xmm14", "xmm15", "cc", "memory");
  acc[0][0] = c00, acc[0][1] = c01, acc[1][0] = c10, acc[1][1] = c11, acc[2][0] = c20, acc[2][1] = c21;
  acc[3][0] = c30, acc[3][1] = c31, acc[4][0] = c40, acc[4][1] = c41, acc[5][0] = c50, acc[5][1] = c51;
}
#undef FG_SGEMM_AVX2_STEP
#endif

// R rows (R <= kGemmMR) x NV vectors (NV <= kGemmNV) of the tile: R x NV accumulators stay in registers
// for the whole k loop. NV < kGemmNV for edge panels of at most NV * W columns (no FMAs on lanes that
// are never stored).
// Pf: the fused reads prefetch ahead (kGemmFusedPrefetch > 0; see the k loop).
// NextB: one line per step k of the next B panel's source (see NextPanel) is prefetched into L2.
template <int R, int NV, BRead S, ARead SA = ARead::kPacked, bool CopyA = true, bool Pf = true, bool NextB = false>
void tile(int cols, int64_t kc, const float* __restrict a, const float* __restrict b, int64_t ldb_,
          float* __restrict b_copy, float* __restrict c, int64_t ldc, float alpha, float beta, int64_t lda_ = kGemmMR,
          float* __restrict a_copy = nullptr, const NextPanel* next = nullptr) {
  const int64_t ldb = S == BRead::kPacked ? int64_t(kGemmNR) : ldb_;
  const int64_t lda = SA == ARead::kPacked ? int64_t(kGemmMR) : lda_;
#if defined(__AVX2__) && !defined(__AVX512F__)
  constexpr bool kPackedAsm = R == 6 && NV == 2 && S == BRead::kPacked && SA == ARead::kPacked;
#else
  constexpr bool kPackedAsm = false;
#endif
  vf acc[R][NV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = vzero();
  // Warm the C tile while the k loop runs (it is read or written once at the end). Not in direct
  // tiles: their k loops are short, and there the prefetches measured 3-4% slower (bmm of 32 x 64
  // x 32 products). The AVX2 asm tile fetches both lines of each row (numpy rows are 16-byte
  // aligned) into L2 here and into L1 near the end of its k loop (below).
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    if constexpr (kPackedAsm) {
      __builtin_prefetch(c + r * ldc, 0, 2);
      __builtin_prefetch(c + r * ldc + kGemmNR - 1, 0, 2);
    } else if constexpr (CopyA) {
      __builtin_prefetch(c + r * ldc, 1);
      // a row of 32 floats spans two lines (three when unaligned): in a large C (rows >= 1024 floats
      // apart, from DRAM each slice at 2048^3 on Zen 5: ~+2 %, rough) fetch the last one too
      if constexpr (NV * W > 16)
        if (ldc >= 1024) __builtin_prefetch(c + r * ldc + NV * W - 1, 1);
    }
  }

  const float* const a_start = a;
  int64_t k = 0;
#if defined(__AVX2__) && !defined(__AVX512F__)
  if constexpr (kPackedAsm) {
    if (kc >= 4) {
      // C rows ldc apart (often a multiple of 4 KiB) share one L1 set with a quarter of the B
      // panel's lines: the C tile is fetched to L2 (above) and into L1 only for the last 32 steps.
      constexpr int64_t kTail = 8;
      const int64_t k4 = kc / 4;
      if (k4 > kTail) {
        packed_6x16_avx2(k4 - kTail, a, b, acc);
#pragma GCC unroll 6
        for (int r = 0; r < R; ++r) {
          __builtin_prefetch(c + r * ldc, 1);
          __builtin_prefetch(c + r * ldc + kGemmNR - 1, 1);
        }
        packed_6x16_avx2(kTail, a + (k4 - kTail) * 4 * kGemmMR, b + (k4 - kTail) * 4 * kGemmNR, acc);
      } else {
        packed_6x16_avx2(k4, a, b, acc);
      }
      k = kc / 4 * 4;
      a += k * kGemmMR;
      b += k * kGemmNR;
    }
  }
#endif
  for (; k < kc; ++k) {
    if constexpr (NextB) {
      // line l: row l % kGemmNR of the source, its 16-float segment l / kGemmNR (the order the pack reads)
      const int64_t l = next->first + k;
      if (k < next->count) __builtin_prefetch(next->src + (l % kGemmNR) * next->rs + (l / kGemmNR) * 16, 0, 2);
    }
    if constexpr (kGemmFusedPrefetch > 0 && Pf) {
      // Operands read in place with one row (B) or one column (op(A) column-major) per step k
      // lie a page apart when the leading dimension is large, where the hardware prefetchers
      // stop: fetch both cache lines (rows of numpy arrays are not 64-byte aligned) of the step
      // kGemmFusedPrefetch ahead.
      constexpr int D = kGemmFusedPrefetch;
      if constexpr (S == BRead::kPackAlong) {
        __builtin_prefetch(b + D * ldb);
        __builtin_prefetch(b + D * ldb + kGemmNR - 1);
      }
      if constexpr (SA == ARead::kColMajor && CopyA) {
        __builtin_prefetch(a + D * lda);
        __builtin_prefetch(a + D * lda + kGemmMR - 1);
      }
      // The first tiles of a sweep are the only ones that read an operand from memory (L3 or
      // DRAM), one tile after the other, each stalled on its own reads: each also fetches the
      // next one's panel (adjacent columns of B; the next kGemmMR rows of a row-major op(A))
      // into L2, so that the next waits on L2 latency only.
      if constexpr (S == BRead::kPackAlong) {
        __builtin_prefetch(b + kGemmNR, 0, 2);
        __builtin_prefetch(b + 2 * kGemmNR - 1, 0, 2);
      }
      if constexpr (SA == ARead::kRowMajor && CopyA) {
        // One line per even step: row (l % kGemmMR), 16-float segment (l / kGemmMR) of the next panel.
        const int64_t l = k >> 1;
        if (!(k & 1) && l < kGemmMR * (kc / 16 + 1))
          __builtin_prefetch(a_start + (kGemmMR + l % kGemmMR) * lda + (l / kGemmMR) * 16, 0, 2);
      }
    }
    vf bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = S == BRead::kInPlaceTail && v == NV - 1 ? vload_n(b + v * W, cols - v * W) : vload(b + v * W);
    // (No software prefetch of packed b: one sequential stream, which the hardware prefetcher
    // follows; explicit prefetches measured no better.)
    if constexpr (S == BRead::kPackAlong) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) vstore(b_copy + v * W, bv[v]);
      b_copy += kGemmNR;
    }
    if constexpr (SA == ARead::kColMajor && CopyA) {
      // Step k's kGemmMR values are contiguous: copy them as one block, broadcast from the source.
#if defined(__AVX2__)
      if constexpr (R == 8) {
        _mm256_storeu_ps(a_copy, _mm256_loadu_ps(a));
      } else
#endif
      {
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) a_copy[r] = a[r];
      }
      a_copy += kGemmMR;
    } else if constexpr (SA == ARead::kRowMajor && CopyA) {
      // One value per source row. Copied as integers so that the compiler does not merge the
      // copy's load with the broadcast: the broadcasts stay memory operands (a load each), not
      // a scalar load plus a register broadcast (a shuffle on the vector pipes).
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r)
        reinterpret_cast<u32_alias*>(a_copy)[r] = reinterpret_cast<const u32_alias*>(a + r * lda)[0];
      a_copy += kGemmMR;
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      vf av = vset1(SA == ARead::kRowMajor ? a[r * lda] : a[r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = vfmadd(av, bv[v], acc[r][v]);
    }
    a += SA == ARead::kRowMajor ? 1 : lda;
    b += ldb;
  }

  if (alpha == 1.0f && beta == 0.0f && cols == NV * W) {
    // The common case, C = acc: plain stores (1 * acc would give the same bits).
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) vstore(c + r * ldc + v * W, acc[r][v]);
    return;
  }
  vf valpha = vset1(alpha);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) store_vec(c + r * ldc + v * W, acc[r][v], valpha, beta, cols - v * W);
  }
}

// Picks R = rows (compile-time) by recursion from kGemmMR down.
template <int R, int NV, BRead S, bool Pf = true, bool NextB = false>
void tile_rows(int rows, int cols, int64_t kc, const float* a, const float* b, int64_t ldb, float* b_copy, float* c,
               int64_t ldc, float alpha, float beta, const NextPanel* next = nullptr) {
  if constexpr (R > 1) {
    if (rows < R)
      return tile_rows<R - 1, NV, S, Pf, NextB>(rows, cols, kc, a, b, ldb, b_copy, c, ldc, alpha, beta, next);
  }
  tile<R, NV, S, ARead::kPacked, true, Pf, NextB>(cols, kc, a, b, ldb, b_copy, c, ldc, alpha, beta, kGemmMR, nullptr,
                                                  next);
}

// Picks NV = ceil(cols / W) by recursion from kGemmNV down (packed panels only).
template <int NV>
void tile_cols(int rows, int cols, int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
               float beta) {
  if constexpr (NV > 1) {
    if (cols <= (NV - 1) * W) return tile_cols<NV - 1>(rows, cols, kc, a, b, c, ldc, alpha, beta);
  }
  if (rows == kGemmMR) return tile<kGemmMR, NV, BRead::kPacked>(cols, kc, a, b, kGemmNR, nullptr, c, ldc, alpha, beta);
  tile_rows<kGemmMR - 1, NV, BRead::kPacked>(rows, cols, kc, a, b, kGemmNR, nullptr, c, ldc, alpha, beta);
}

// Direct tiles: R = rows picked by recursion from kGemmMR down, then the B and A read modes.
template <int R, int NV>
void direct_rows(int rows, int cols, int64_t kc, const float* a, int64_t rsa, int64_t csa, const float* b, int64_t ldb,
                 float* c, int64_t ldc, float alpha, float beta) {
  if constexpr (R > 1) {
    if (rows < R) return direct_rows<R - 1, NV>(rows, cols, kc, a, rsa, csa, b, ldb, c, ldc, alpha, beta);
  }
  const bool full = cols == NV * W;
  if (rsa == 1) {
    if (full)
      return tile<R, NV, BRead::kInPlace, ARead::kColMajor, false>(cols, kc, a, b, ldb, nullptr, c, ldc, alpha, beta,
                                                                   csa);
    return tile<R, NV, BRead::kInPlaceTail, ARead::kColMajor, false>(cols, kc, a, b, ldb, nullptr, c, ldc, alpha, beta,
                                                                     csa);
  }
  if (full)
    return tile<R, NV, BRead::kInPlace, ARead::kRowMajor, false>(cols, kc, a, b, ldb, nullptr, c, ldc, alpha, beta,
                                                                 rsa);
  tile<R, NV, BRead::kInPlaceTail, ARead::kRowMajor, false>(cols, kc, a, b, ldb, nullptr, c, ldc, alpha, beta, rsa);
}

template <int NV>
void direct_cols(int rows, int cols, int64_t kc, const float* a, int64_t rsa, int64_t csa, const float* b, int64_t ldb,
                 float* c, int64_t ldc, float alpha, float beta) {
  if constexpr (NV > 1) {
    if (cols <= (NV - 1) * W) return direct_cols<NV - 1>(rows, cols, kc, a, rsa, csa, b, ldb, c, ldc, alpha, beta);
  }
  direct_rows<kGemmMR, NV>(rows, cols, kc, a, rsa, csa, b, ldb, c, ldc, alpha, beta);
}

}  // namespace

void micro_tile_direct(int rows, int cols, int64_t kc, const float* a, int64_t rsa, int64_t csa, const float* b,
                       int64_t ldb, float* c, int64_t ldc, float alpha, float beta) {
  direct_cols<kGemmNV>(rows, cols, kc, a, rsa, csa, b, ldb, c, ldc, alpha, beta);
}

void micro_tile(int rows, int cols, int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                float alpha, float beta) {
  if (ldb == kGemmNR) return tile_cols<kGemmNV>(rows, cols, kc, a, b, c, ldc, alpha, beta);
  tile_rows<kGemmMR, kGemmNV, BRead::kInPlace>(rows, cols, kc, a, b, ldb, nullptr, c, ldc, alpha, beta);
}

void micro_tile_next(int rows, int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                     float beta, const NextPanel& next) {
  tile_rows<kGemmMR, kGemmNV, BRead::kPacked, true, true>(rows, kGemmNR, kc, a, b, kGemmNR, nullptr, c, ldc, alpha,
                                                          beta, &next);
}

void micro_tile_pack_b(int rows, int64_t kc, const float* a, const float* b, int64_t ldb, float* b_copy, float* c,
                       int64_t ldc, float alpha, float beta, bool prefetch) {
  if (prefetch)
    return tile_rows<kGemmMR, kGemmNV, BRead::kPackAlong>(rows, kGemmNR, kc, a, b, ldb, b_copy, c, ldc, alpha, beta);
  tile_rows<kGemmMR, kGemmNV, BRead::kPackAlong, false>(rows, kGemmNR, kc, a, b, ldb, b_copy, c, ldc, alpha, beta);
}

namespace {

template <bool Pf>
void tile_pack_ab(int64_t kc, const float* a, int64_t rsa, int64_t csa, float* a_copy, const float* b, int64_t ldb,
                  float* b_copy, float* c, int64_t ldc, float alpha, float beta) {
  constexpr int MR = kGemmMR, NV = kGemmNV, NR = kGemmNR;
  if (rsa == 1) {
    if (b_copy)
      return tile<MR, NV, BRead::kPackAlong, ARead::kColMajor, true, Pf>(NR, kc, a, b, ldb, b_copy, c, ldc, alpha, beta,
                                                                         csa, a_copy);
    return tile<MR, NV, BRead::kPacked, ARead::kColMajor, true, Pf>(NR, kc, a, b, NR, nullptr, c, ldc, alpha, beta, csa,
                                                                    a_copy);
  }
  if (b_copy)
    return tile<MR, NV, BRead::kPackAlong, ARead::kRowMajor, true, Pf>(NR, kc, a, b, ldb, b_copy, c, ldc, alpha, beta,
                                                                       rsa, a_copy);
  tile<MR, NV, BRead::kPacked, ARead::kRowMajor, true, Pf>(NR, kc, a, b, NR, nullptr, c, ldc, alpha, beta, rsa, a_copy);
}

}  // namespace

void micro_tile_pack_ab(int64_t kc, const float* a, int64_t rsa, int64_t csa, float* a_copy, const float* b,
                        int64_t ldb, float* b_copy, float* c, int64_t ldc, float alpha, float beta, bool prefetch) {
  if (prefetch) return tile_pack_ab<true>(kc, a, rsa, csa, a_copy, b, ldb, b_copy, c, ldc, alpha, beta);
  tile_pack_ab<false>(kc, a, rsa, csa, a_copy, b, ldb, b_copy, c, ldc, alpha, beta);
}

// ---- packing ----------------------------------------------------------------------------------

namespace {

// dst[k * P + r] = src[r * rs + k] (rows of src contiguous along k): a transpose, in 8x8 and 4x4
// register blocks. All P slots are written: slots r >= rows repeat the last row (the microkernel
// never uses them, and no scalar loop over single rows is needed).
void pack_transpose(const float* src, int64_t rs, int rows, int64_t kc, int P, float* dst, bool far) {
  (void)far;  // read by the vector form only
  auto row = [&](int r) { return src + static_cast<int64_t>(r < rows ? r : rows - 1) * rs; };
#if defined(__AVX2__)
  int r0 = 0;
  for (; r0 + 8 <= P; r0 += 8) {
    const float* s0 = row(r0 + 0);
    const float* s1 = row(r0 + 1);
    const float* s2 = row(r0 + 2);
    const float* s3 = row(r0 + 3);
    const float* s4 = row(r0 + 4);
    const float* s5 = row(r0 + 5);
    const float* s6 = row(r0 + 6);
    const float* s7 = row(r0 + 7);
    // Rows far apart (rs >= 1024 floats: the source is large, in L3 or DRAM): the same rows of the
    // next panel (P rows on), one line each per 16 steps k; the panels of a block are packed one
    // after another, and each row's short segment restarts a prefetch stream (2048^3 NT on Zen 5).
    // Not for nearer rows (64x784x256 NT: the source in L2, the prefetches measured 4-6 % slower)
    // unless the caller knows the source is large (far: a 512 x 512 weight from DRAM).
    const float* next = src + static_cast<int64_t>(r0 + P) * rs;
    const bool fetch_next = rows == P && (rs >= 1024 || far);
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
      if (fetch_next && !(k & 15))
        for (int r = 0; r < 8; ++r) __builtin_prefetch(next + r * rs + k, 0, 2);
      __m256 x0 = _mm256_loadu_ps(s0 + k), x1 = _mm256_loadu_ps(s1 + k);
      __m256 x2 = _mm256_loadu_ps(s2 + k), x3 = _mm256_loadu_ps(s3 + k);
      __m256 x4 = _mm256_loadu_ps(s4 + k), x5 = _mm256_loadu_ps(s5 + k);
      __m256 x6 = _mm256_loadu_ps(s6 + k), x7 = _mm256_loadu_ps(s7 + k);
      __m256 t0 = _mm256_unpacklo_ps(x0, x1), t1 = _mm256_unpackhi_ps(x0, x1);
      __m256 t2 = _mm256_unpacklo_ps(x2, x3), t3 = _mm256_unpackhi_ps(x2, x3);
      __m256 t4 = _mm256_unpacklo_ps(x4, x5), t5 = _mm256_unpackhi_ps(x4, x5);
      __m256 t6 = _mm256_unpacklo_ps(x6, x7), t7 = _mm256_unpackhi_ps(x6, x7);
      __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      float* d = dst + k * P + r0;
      _mm256_storeu_ps(d + 0 * P, _mm256_permute2f128_ps(u0, u4, 0x20));
      _mm256_storeu_ps(d + 1 * P, _mm256_permute2f128_ps(u1, u5, 0x20));
      _mm256_storeu_ps(d + 2 * P, _mm256_permute2f128_ps(u2, u6, 0x20));
      _mm256_storeu_ps(d + 3 * P, _mm256_permute2f128_ps(u3, u7, 0x20));
      _mm256_storeu_ps(d + 4 * P, _mm256_permute2f128_ps(u0, u4, 0x31));
      _mm256_storeu_ps(d + 5 * P, _mm256_permute2f128_ps(u1, u5, 0x31));
      _mm256_storeu_ps(d + 6 * P, _mm256_permute2f128_ps(u2, u6, 0x31));
      _mm256_storeu_ps(d + 7 * P, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (; k < kc; ++k) {
      float* d = dst + k * P + r0;
      d[0] = s0[k];
      d[1] = s1[k];
      d[2] = s2[k];
      d[3] = s3[k];
      d[4] = s4[k];
      d[5] = s5[k];
      d[6] = s6[k];
      d[7] = s7[k];
    }
  }
  // Blocks of 4 rows (the last one may store only P - r0 < 4 of them).
  for (; r0 < P; r0 += 4) {
    const int n = P - r0 < 4 ? P - r0 : 4;
    const float* s0 = row(r0 + 0);
    const float* s1 = row(r0 + 1);
    const float* s2 = row(r0 + 2);
    const float* s3 = row(r0 + 3);
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      __m128 x0 = _mm_loadu_ps(s0 + k), x1 = _mm_loadu_ps(s1 + k);
      __m128 x2 = _mm_loadu_ps(s2 + k), x3 = _mm_loadu_ps(s3 + k);
      _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
      float* d = dst + k * P + r0;
      if (n == 4) {
        _mm_storeu_ps(d, x0);
        _mm_storeu_ps(d + P, x1);
        _mm_storeu_ps(d + 2 * P, x2);
        _mm_storeu_ps(d + 3 * P, x3);
      } else {
        const __m128 xs[4] = {x0, x1, x2, x3};
        for (int q = 0; q < 4; ++q) {
          if (n >= 2) _mm_storel_pi(reinterpret_cast<__m64*>(d + q * P), xs[q]);
          if (n == 3) _mm_store_ss(d + q * P + 2, _mm_movehl_ps(xs[q], xs[q]));
          if (n == 1) _mm_store_ss(d + q * P, xs[q]);
        }
      }
    }
    for (; k < kc; ++k) {
      float* d = dst + k * P + r0;
      const float v[4] = {s0[k], s1[k], s2[k], s3[k]};
      for (int q = 0; q < n; ++q) d[q] = v[q];
    }
  }
#else
  for (int64_t k = 0; k < kc; ++k)
    for (int r = 0; r < P; ++r) dst[k * P + r] = row(r)[k];
#endif
}

// dst[k * P + r] = src[k * cs + r] (columns of src contiguous along r): row copies.
// Slots r >= rows are zero-filled. Full panels (the common case) copy 4 rows per step with all
// loads issued before the stores (stores right before loads of a strided source stall on address
// aliasing); partial panels go one vector-wide strip at a time, masks computed once per strip.
void pack_copy(const float* src, int64_t cs, int rows, int64_t kc, int P, float* dst) {
  if (rows == P && P % W == 0 && P <= 4 * W) {
    const int nv = P / W;
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      vf x[4][4];
      for (int u = 0; u < 4; ++u) {
        __builtin_prefetch(src + (k + u + 8) * cs);
        for (int v = 0; v < nv; ++v) x[u][v] = vload(src + (k + u) * cs + v * W);
      }
      for (int u = 0; u < 4; ++u)
        for (int v = 0; v < nv; ++v) vstore(dst + (k + u) * P + v * W, x[u][v]);
    }
    for (; k < kc; ++k)
      for (int v = 0; v < nv; ++v) vstore(dst + k * P + v * W, vload(src + k * cs + v * W));
    return;
  }
  for (int r = 0; r < P; r += W) {
    const int n = rows - r <= 0 ? 0 : rows - r < W ? rows - r : W;  // lanes read (rest: zeros)
    const int m = P - r < W ? P - r : W;                              // lanes written
    const float* s = src + r;
    float* d = dst + r;
    for (int64_t k = 0; k < kc; ++k) vstore_n(d + k * P, vload_n(s + k * cs, n), m);
  }
}

}  // namespace

void pack_panel(const float* src, int64_t rs, int64_t cs, int rows, int64_t kc, int P, float* dst, bool far) {
  if (rows == 1 || rs == 1) {
    pack_copy(src, cs, rows, kc, P, dst);
  } else if (cs == 1) {
    pack_transpose(src, rs, rows, kc, P, dst, far);
  } else {
    for (int64_t k = 0; k < kc; ++k)
      for (int r = 0; r < P; ++r) dst[k * P + r] = r < rows ? src[r * rs + k * cs] : 0.0f;
  }
}

}  // namespace gemm_detail
}  // namespace FG_ISA_NS
}  // namespace fg
