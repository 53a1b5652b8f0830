// Pieces of the SGEMM driver shared by the gemm*.cpp files of one ISA (each compiled per ISA, see
// simd.h). Layout vocabulary:
//   packed A panel: kc x MR floats, element (i, k) at [k * MR + i]  (MR rows of op(A), k-major)
//   packed B panel: kc x NR floats, element (k, j) at [k * NR + j]  (NR columns of op(B))
// The microkernel multiplies one A panel by one B panel into an MR x NR tile of C.
#pragma once
#include <cstdint>

#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace gemm_detail {

// Register tile: kGemmMR rows x kGemmNV vectors. AVX-512: 8 x 32 (16 zmm accumulators: Zen 4 retires one
// 512-bit FMA per cycle, so 16 independent chains hide the 4-cycle latency; 8 divides M of every
// network shape, so no rows are wasted; 12 x 32 and 6 x 64 measured 0-4% slower);
// AVX2: 6 x 16 (12 of 16 ymm); portable: 4 x 4 scalars.
#if defined(__AVX512F__)
constexpr int kGemmMR = 8;
constexpr int kGemmNV = 2;
#elif defined(__AVX2__)
constexpr int kGemmMR = 6;
constexpr int kGemmNV = 2;
#else
constexpr int kGemmMR = 4;
constexpr int kGemmNV = 4;
#endif
constexpr int kGemmNR = kGemmNV * W;

// The skinny dot form's accumulation, shared by sgemm_skinny (float32 B) and the bfloat16 weight-only
// Linear (linear_bf16.cpp, whose loaders widen bfloat16 to float32 exactly): acc[i][j] = the sum over k of
// a[i * K + k] * b[j * ldb + k] in vector lanes, k in order, the tail masked. One fixed operation sequence
// per output whichever loader reads B, which is what makes the two kernels give the same bits.
template <int RI, int RJ, class T, class Load, class LoadN>
inline void dot_accumulate(int64_t K, const float* __restrict a, const T* __restrict b, int64_t ldb, Load load,
                           LoadN load_n, vf (&acc)[RI][RJ]) {
  for (int i = 0; i < RI; ++i)
    for (int j = 0; j < RJ; ++j) acc[i][j] = vzero();
  int64_t k = 0;
  for (; k + W <= K; k += W) {
    vf av[RI], bv[RJ];
    for (int i = 0; i < RI; ++i) av[i] = vload(a + i * K + k);
    for (int j = 0; j < RJ; ++j) bv[j] = load(b + j * ldb + k);
    for (int i = 0; i < RI; ++i)
      for (int j = 0; j < RJ; ++j) acc[i][j] = vfmadd(av[i], bv[j], acc[i][j]);
  }
  if (k < K) {
    const int n = static_cast<int>(K - k);
    vf av[RI], bv[RJ];
    for (int i = 0; i < RI; ++i) av[i] = vload_n(a + i * K + k, n);
    for (int j = 0; j < RJ; ++j) bv[j] = load_n(b + j * ldb + k, n);
    for (int i = 0; i < RI; ++i)
      for (int j = 0; j < RJ; ++j) acc[i][j] = vfmadd(av[i], bv[j], acc[i][j]);
  }
}

// Columns of B per block of the dot form: 8 for one or two rows of A with AVX-512 (more of B in flight at
// once: memory-level parallelism at decode; 16 accumulators at most, of 32 zmm registers), else 4 (the AVX2
// build's 16 ymm registers).
template <int RI>
constexpr int dot_cols_per_block() {
#if defined(__AVX512F__)
  return RI <= 2 ? 8 : 4;
#else
  return 4;
#endif
}

// Cache blocking. KC is a function of K alone (it fixes the summation order); MC and NC only
// decide which tiles are computed together, so they may depend on the thread count.
#if defined(__AVX2__) && !defined(__AVX512F__)
// AVX2 (BLIS order, sized for Zen 3's 32 KiB L1d and 512 KiB L2 per core): one packed B panel
// (KC x 16 floats = 16 KiB) stays in L1 while the A panels of an MC block (144 x 256 floats =
// 144 KiB, L2) stream past it, 24 bytes per k step; the B block (KC x NC) sits in L3. The old
// A-in-L1 / B-in-L2 order needed a 512-640 KiB B block in L2, which this L2 cannot hold.
// (kGemmKCMax also bounds the unpacked direct path, which runs K as one slice: on AVX2, K in
// 257..320 now takes the packed path; KC 256..384 measured alike within this VM's noise.)
constexpr int64_t kGemmKCMax = 256;
constexpr int64_t kGemmMCMax = 24 * kGemmMR;  // 144 rows
constexpr int64_t kGemmNCMax = 4096;          // columns of B packed per block (L3)
constexpr bool kGemmBPanelInL1 = true;
// Tiles that pack an operand as they go (the first use of a panel) prefetch its rows this many k
// steps ahead: measured +3-5% on 1024^3 NN and TN (the fused reads were latency-bound).
constexpr int kGemmFusedPrefetch = 12;
constexpr int64_t kGemmFusedPrefetchMinLd = 0;  // at any leading dimension
constexpr int64_t kGemmKeepARows = 0;  // unused: the BLIS order packs op(A) once per KC slice already
#else
constexpr int64_t kGemmKCMax = 320;  // A panel 8 x 320 floats = 10 KiB (L1); KC 128..320 measured alike
constexpr int64_t kGemmMCMax = 8 * kGemmMR;  // rows of A packed at once per thread
constexpr int64_t kGemmNCMax = 512;  // columns of B packed per block: 320 x 512 floats = 640 KiB (L2);
                                     // the driver widens it for thinner KC (same 640 KiB)
constexpr bool kGemmBPanelInL1 = false;  // one A panel (L1) against every B panel of the block (L2)
// The fused tiles prefetch as on AVX2, but only for an operand whose rows are at least a page apart
// (ld >= 1024 floats: large, and read from L3 or DRAM): 2048^3 NN +4-6 % on Zen 5 (its first-sweep
// tiles were stalled on their reads); at small ld (64x784x256, 64x256x128: operands in L2) the
// prefetches measured 2-3 % slower.
constexpr int kGemmFusedPrefetch = 12;
constexpr int64_t kGemmFusedPrefetchMinLd = 1024;
// Rows of op(A) whose packed panels a thread keeps for every column block of a KC slice (2048 x 320
// floats = 2.5 MiB, L3) instead of packing them again per column block (gemm.cpp, keep_a).
constexpr int64_t kGemmKeepARows = 2048;
#endif

// Whether a fused tile prefetches ahead of its in-place reads, the operand's rows (or columns) ld
// floats apart.
constexpr bool fused_prefetch(int64_t ld) { return kGemmFusedPrefetch > 0 && ld >= kGemmFusedPrefetchMinLd; }

// Packs a panel: dst[k * P + r] = src[r * rs + k * cs] for r < rows, k < kc; rows <= P. Slots
// rows..P-1 are filled too (zeros or copies of the last row): the microkernel loads full vectors
// of a B panel but only stores the lanes of real columns, and lanes never mix.
// far: the source is too large to be cache-resident (see kGemmFarFloats), so a transposing pack
// prefetches the next panel's rows whatever their stride.
void pack_panel(const float* src, int64_t rs, int64_t cs, int rows, int64_t kc, int P, float* dst, bool far = false);

// An operand of at least this many floats (1 MiB: a whole L2 of Zen 4 / Zen 5) is taken to come from L3 or
// DRAM: packing it prefetches ahead even when its rows are near each other. x @ W^T with a 512 x 512 W from
// DRAM (a mixture of experts' expert on its routed rows; Zen 5, one thread): 9 rows 90 -> 70 us, 16 rows
// 104 -> 82, 32 rows 137 -> 115 (bench/bench_moe_experts.py).
constexpr int64_t kGemmFarFloats = int64_t(1) << 18;

// C tile (rows x cols, rows <= kGemmMR, cols <= kGemmNR) = alpha * a_panel . b_panel + beta * C, where
// b_panel rows are ldb floats apart (kGemmNR when packed; B's own row stride when read in place)
// (beta == 0: C is not read). Every element goes through the same operations whatever the tile
// size: acc = fma chain over k; C = fma(beta, C, alpha * acc) or alpha * acc.
void micro_tile(int rows, int cols, int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                float alpha, float beta);

// Lines [first, first + count) of a B panel's source about to be packed (kGemmNR rows of op(B)^T, rs floats apart,
// 16-float segments), which a tile prefetches one per step k while it computes.
struct NextPanel {
  const float* src;
  int64_t rs, first, count;
};

// micro_tile on a packed B panel of kGemmNR columns that also prefetches ``next``'s lines (next.count <= kc).
void micro_tile_next(int rows, int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                     float beta, const NextPanel& next);

// micro_tile for a full panel (kGemmNR columns) read in place from op(B) rows ldb floats apart, which
// also stores the panel, packed (kc x kGemmNR), to b_copy as it goes: packing fused into the first use.
// prefetch: the in-place reads fetch ahead (kGemmFusedPrefetch steps; see fused_prefetch).
void micro_tile_pack_b(int rows, int64_t kc, const float* a, const float* b, int64_t ldb, float* b_copy, float* c,
                       int64_t ldc, float alpha, float beta, bool prefetch);

// A full tile (kGemmMR x kGemmNR) whose A panel is read in place from op(A) (element (r, k) at
// a[r * rsa + k * csa]; rsa == 1 or csa == 1) and stored, packed, to a_copy as it goes. B: packed
// when b_copy is null, else read in place (rows ldb apart) and packed to b_copy as well.
void micro_tile_pack_ab(int64_t kc, const float* a, int64_t rsa, int64_t csa, float* a_copy, const float* b,
                        int64_t ldb, float* b_copy, float* c, int64_t ldc, float alpha, float beta, bool prefetch);

// A tile (rows <= kGemmMR, cols <= kGemmNR) with nothing packed: A read in place from op(A) as in
// micro_tile_pack_ab (rsa == 1 or csa == 1), B from op(B) rows ldb apart (a partial last vector is
// loaded masked, so no memory past column cols is read). Same arithmetic as micro_tile.
void micro_tile_direct(int rows, int cols, int64_t kc, const float* a, int64_t rsa, int64_t csa, const float* b,
                       int64_t ldb, float* c, int64_t ldc, float alpha, float beta);

// Skinny product, m <= kSkinnyMax (16): C (m x n) = alpha * A (m x K) . B (K x n) + beta * C, every
// operand with general strides (rs: row stride, cs: column stride, in elements). B must have
// rsb == 1 or csb == 1. Splits columns over threads.
constexpr int64_t kSkinnyMax = 16;  // templates cover m <= 16; the driver decides when to use them
void sgemm_skinny(int64_t m, int64_t n, int64_t K, float alpha, const float* A, int64_t rsa, int64_t csa,
                  const float* B, int64_t rsb, int64_t csb, float beta, float* C, int64_t rsc, int64_t csc);

}  // namespace gemm_detail
}  // namespace FG_ISA_NS
}  // namespace fg
