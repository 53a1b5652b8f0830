// SGEMM driver, compiled per ISA (BLIS-style). Each thread owns a block of C and, within it:
//   for each NC-wide block of columns (jc) and KC-deep slice of K (pc):
//     for each MC-high block of rows (ic):
//       pack op(A)[ic:ic+mc, pc:pc+kc] into MR-high panels       (thread-local, L2-resident)
//       for each A panel (ir; L1-resident, it is the broadcast operand):
//         for each NR-wide B panel (jr; packed during the first sweep, L2-resident):
//           microkernel -> MR x NR tile of C
// AVX2 (kGemmBPanelInL1) swaps the two inner loops (BLIS's order: each B panel in L1 against the
// L2-resident A panels of a taller MC block, the B block in L3), since the 512 KiB L2 of the Zen 3
// it is tuned on cannot hold the B block of the order above. On AVX-512, a product of several column
// blocks runs the slices outside the column blocks instead, so that each A panel is packed once per
// slice and kept (keep_a in sgemm_packed). Loop order never changes a result.
// Full panels are not packed beforehand: the first tile to use a panel reads it in place and
// writes the packed copy (see fuse_b below); a transposed op(A) is packed a row block at a time, and
// a weight's B panels may come prepacked (sgemm_prepacked_b).
// Threads never split K: every element of C is the same fma chain over each KC slice, the slices
// added in order (C = alpha*acc + beta*C, then C = alpha*acc + C), whatever thread computes it.
// KC depends on K only, so results are bit-identical for any thread count.
// Skinny shapes (M <= 8 or N <= 16) go to gemm_skinny.cpp, which reads B in place.
#include <algorithm>

#include "act_vec.h"
#include "forgegrad/gemm.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "gemm_internal.h"

namespace fg {
namespace FG_ISA_NS {

using namespace gemm_detail;

namespace {

// C = beta * C (beta == 0 writes zeros, ignoring NaNs in C).
void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  if (beta == 1.0f) return;
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      for (int64_t j = 0; j < N; ++j) c[j] = 0.0f;
    } else {
      for (int64_t j = 0; j < N; ++j) c[j] = beta * c[j];
    }
  }
}

// KC: K split into equal slices of at most kGemmKCMax (a function of K alone). (Deeper slices for
// small M, e.g. 64x784x256 as one slice of 784, measured no faster once packing was fused.)
int64_t choose_kc(int64_t K) {
  const int64_t slices = (K + kGemmKCMax - 1) / kGemmKCMax;
  const int64_t kc = (K + slices - 1) / slices;
  return (kc + 7) / 8 * 8 < kGemmKCMax ? (kc + 7) / 8 * 8 : kGemmKCMax;
}

// The A panels [0, npanels) of one row block for a KC slice of op(A) = A^T, A's row k at a + k * lda
// (panel p: rows first_row[p] .. first_row[p + 1] - 1 of op(A), of M): each row of A is read once,
// left to right, each panel's floats going to its k slot; slots past a panel's rows get zeros.
// Whole vectors where they fit (AVX2's masked stores are slow on Zen).
// sums (null: none): each of the block's rows of op(A) gets its k values added in order, while the
// slice is at hand (the epilogue's a_sums).
void pack_a_by_rows(const float* a, int64_t lda, const int64_t* first_row, int64_t npanels, int64_t kc, int64_t M,
                    float* dst, float* sums) {
  // The block's segment of each row of A (a few lines) is a short piece of a long row, lda floats
  // after the previous one: a sequence the hardware prefetchers do not follow, so each row stalled on
  // its own misses. Rows kPackAhead steps ahead are fetched while this one is copied (measured at
  // 512-2048^3 TN on AVX2: +2-8 %). A block that spans whole rows is one contiguous stream: left alone.
  constexpr int64_t kPackAhead = 8;
  const int64_t seg0 = first_row[0], seg1 = first_row[npanels];
  const bool fetch_ahead = seg1 - seg0 < lda;
  for (int64_t k = 0; k < kc; ++k) {
    const float* src = a + k * lda;
    if (fetch_ahead && k + kPackAhead < kc) {
      const float* ahead = src + kPackAhead * lda;
      for (int64_t r = seg0; r < seg1; r += 16) __builtin_prefetch(ahead + r);
      __builtin_prefetch(ahead + seg1 - 1);  // the segment's last line (rows are not 64-byte aligned)
    }
    if (sums) {
      int64_t r = seg0;
      for (; r + W <= seg1; r += W) vstore(sums + r, vadd(vload(sums + r), vload(src + r)));
      if (r < seg1) {
        const int n = static_cast<int>(seg1 - r);
        vstore_n(sums + r, vadd(vload_n(sums + r, n), vload_n(src + r, n)), n);
      }
    }
    for (int64_t p = 0; p < npanels; ++p) {
      const int64_t r0 = first_row[p];
      const int rows = static_cast<int>(first_row[p + 1] - r0);
      float* d = dst + p * kGemmMR * kc + k * kGemmMR;
      if (kGemmMR <= W && k + 1 < kc && r0 + W <= M) {
        // whole-vector load and store: the lanes past kGemmMR land in the next k's slot, written after
        vstore(d, rows < kGemmMR ? vload_n(src + r0, rows) : vload(src + r0));
      } else {
        for (int r = 0; r < kGemmMR; ++r) d[r] = r < rows ? src[r0 + r] : 0.0f;
      }
    }
  }
}

// The B panels [0, npanels) of a block (cols columns of op(B), row k at b + k * ldb) packed as
// pack_panel does (slots past cols: zeros), each row's segment read once, left to right: one stream
// per row, fetched kAhead rows ahead (rows far apart restart the hardware prefetchers).
void pack_b_by_rows(const float* b, int64_t ldb, int64_t kc, int64_t cols, int64_t npanels, float* dst) {
  constexpr int64_t kAhead = 8;
  for (int64_t k = 0; k < kc; ++k) {
    const float* src = b + k * ldb;
    if (k + kAhead < kc) {
      const float* ahead = src + kAhead * ldb;
      for (int64_t j = 0; j < cols; j += 16) __builtin_prefetch(ahead + j);
      __builtin_prefetch(ahead + cols - 1);  // the segment's last line (rows are not 64-byte aligned)
    }
    for (int64_t q = 0; q < npanels; ++q) {
      const int64_t j0 = q * kGemmNR;
      float* d = dst + q * kGemmNR * kc + k * kGemmNR;
      for (int v = 0; v < kGemmNV; ++v) {
        const int64_t left = cols - j0 - v * W;
        vstore(d + v * W, left >= W ? vload(src + j0 + v * W) : vload_n(src + j0 + v * W, left > 0 ? int(left) : 0));
      }
    }
  }
}

// Direct (unpacked) path up to this many multiply-adds: 64 x 64 x 64, operands of at most
// 16 KiB each when square.
constexpr int64_t kDirectMaxMNK = int64_t(64) * 64 * 64;

// Scratch that lives as long as the thread: packing buffers are reused across calls.
float* scratch(AlignedBuffer& buf, std::size_t floats) {
  if (buf.size() < floats) buf.reset(floats);
  return buf.data();
}

// Threads: C is cut into a tr x tc grid of blocks, one per thread, and each thread packs exactly
// the A rows and B columns its block needs (its own buffers), so a call is one fork/join with no
// barrier in between: on a busy machine a barrier costs a scheduler time slice whenever one
// thread is descheduled. The grid minimises the packing volume K * (M * tc + N * tr).
struct Grid {
  int64_t tr = 1, tc = 1;
};

Grid choose_grid(int64_t M, int64_t N, int64_t K, int64_t m_panels, int64_t n_panels) {
  // Threads only for at least ~1 MFLOP each (a fork/join costs a few microseconds).
  const double flop = 2.0 * static_cast<double>(M) * N * K;
  int64_t nt = threads_for(static_cast<int64_t>(flop < 1e18 ? flop / 2 : 1e18));
  const int64_t by_work = static_cast<int64_t>(flop / 1.0e6);
  if (nt > by_work) nt = by_work < 1 ? 1 : by_work;
  Grid best;
  double best_cost = -1.0;
  for (int64_t tr = 1; tr <= nt; ++tr) {
    if (nt % tr) continue;
    const int64_t tc = nt / tr;
    if (tr > m_panels || tc > n_panels) continue;
    const double cost = static_cast<double>(M) * tc + static_cast<double>(N) * tr;
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best.tr = tr;
      best.tc = tc;
    }
  }
  return best;
}

// The activation over the rows x cols block of C at (i, j) just finished, while it is in cache: the
// activation pass after the GEMM, done tile by tile (same bits).
void finish_block(const GemmEpilogue& ep, float* C, int64_t ldc, int64_t i, int64_t j, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) act_forward_serial(ep.act, ep.act_alpha, C + (i + r) * ldc + j, cols);
}

inline bool has_finish(const GemmEpilogue& ep) { return ep.act >= 0; }

// a_sums of op(A) (element (i, k) at A[i * rsa + k * csa]) as a pass: k in order, from 0.
void a_sums_pass(int64_t M, int64_t K, const float* A, int64_t rsa, int64_t csa, float* sums) {
  for (int64_t i = 0; i < M; ++i) sums[i] = 0.0f;
  if (rsa == 1) {  // op(A)'s columns are A's rows: whole vectors
    for (int64_t k = 0; k < K; ++k) {
      const float* src = A + k * csa;
      int64_t i = 0;
      for (; i + W <= M; i += W) vstore(sums + i, vadd(vload(sums + i), vload(src + i)));
      if (i < M) {
        const int n = static_cast<int>(M - i);
        vstore_n(sums + i, vadd(vload_n(sums + i, n), vload_n(src + i, n)), n);
      }
    }
    return;
  }
  for (int64_t i = 0; i < M; ++i) {
    float s = 0.0f;
    for (int64_t k = 0; k < K; ++k) s += A[i * rsa + k * csa];
    sums[i] = s;
  }
}

// b_prepacked: null, or every B panel packed beforehand by sgemm_prepack_b (then nothing of B is
// packed here: tile (p, q) of slice pc reads its panel at b_prepacked + pc * N_pad + q * NR * kc).
// col_bias: null, or the bias row each tile's C block is filled with before its first slice (beta = 1).
// ep.a_sums: taken while packing op(A) by rows (trans_a), by the thread blocks of the first column
// panel on their first column block (each row once, k in order); zeroed by the caller.
void sgemm_packed(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, const float* b_prepacked, float beta, float* C, int64_t ldc,
                  const GemmEpilogue& ep) {
  const float* col_bias = ep.col_bias;
  const bool finish = has_finish(ep);
  // op(A)(i, k) = A[i * rsa + k * csa]; op(B)(k, j) = B[k * rsb + j * csb].
  const int64_t rsa = trans_a ? 1 : lda, csa = trans_a ? lda : 1;
  const int64_t rsb = trans_b ? 1 : ldb, csb = trans_b ? ldb : 1;
  const int64_t KC = choose_kc(K);
  // Packing fused into a panel's first use: that tile reads the operand in place and stores the
  // packed copy as it goes, which saves a separate pass over the operand (up to 10% of the time
  // of the network shapes). A panels when op(A) is row-major (a transposed one: a_by_rows), B
  // panels when op(B) rows are contiguous (csb == 1: a transposed B is gathered by pack_panel's 8x8
  // transposes).
  // Full panels only (whole vectors are loaded from the source); edge panels use pack_panel.
  const bool fuse_b = csb == 1;
  // A transposed op(A) (each row of A holds one k of every panel) is packed a row block at a time,
  // sweeping A's rows: read panel by panel (pack_panel, the fused tiles) it steps lda floats per k;
  // measured +2-16 % on 64x784x256, 64x256x128 and 256x64x784 TN products (AVX2), none slower.
  const bool a_by_rows = rsa == 1 && csa != 1;
  const bool prefetch_b = fused_prefetch(rsb);  // for the fused tiles: how far apart their in-place reads are
  const bool far_b = N * K >= kGemmFarFloats;  // op(B) read from L3 or DRAM: its panels' packing prefetches ahead
#if defined(__AVX2__) && !defined(__AVX512F__)
  constexpr bool kTilesFetch = false;  // the AVX2 packed tile's k loop is asm (no prefetch stream in it)
#else
  constexpr bool kTilesFetch = true;
#endif
  const bool prefetch_ab = fused_prefetch(std::max(std::max(rsa, csa), rsb));
  const int64_t m_panels = (M + kGemmMR - 1) / kGemmMR;
  const int64_t n_panels = (N + kGemmNR - 1) / kGemmNR;
  // NC: the packed B block holds at most kGemmKCMax x kGemmNCMax floats (L2, or L3 in the BLIS
  // order), so short K (a thin KC) packs wider blocks and op(A) is packed fewer times.
  const int64_t nc_max_panels = kGemmKCMax * kGemmNCMax / KC / kGemmNR;
  constexpr int64_t kGemmMCPanels = kGemmMCMax / kGemmMR;
  // Row panels of balanced height (M = 20 is 3 panels of 6-7 rows, not 8 + 8 + 4): panel p
  // holds rows [row0(p), row0(p + 1)), at most kGemmMR.
  auto row0 = [&](int64_t p) { return p * M / m_panels; };
  const Grid grid = choose_grid(M, N, K, m_panels, n_panels);

  // One thread's block of C: row panels [p0, p1) x column panels [q0, q1).
  auto block = [&](int64_t p0, int64_t p1, int64_t q0, int64_t q1) {
    // small-M order (each B panel packed, then used by the block's few row panels) on a far, transposed op(B)
    const bool tiles_fetch_next = kTilesFetch && far_b && !fuse_b && !b_prepacked && p1 - p0 <= kGemmMCPanels;
    static thread_local AlignedBuffer a_buf, b_buf;
    // Column blocks of equal width (2048 columns: 4 x 512, not 3 x 640 + 128).
    const int64_t ncb = (q1 - q0 + nc_max_panels - 1) / nc_max_panels;
    const int64_t ncp = (q1 - q0 + ncb - 1) / ncb;
    float* bpack = b_prepacked ? nullptr : scratch(b_buf, static_cast<std::size_t>(KC * kGemmNR * ncp));
    // Wide products (several column blocks, A-in-L1 order): the thread's packed A panels of a KC slice
    // are kept (up to kGemmKeepARows rows, L3) for every column block of the slice, instead of being
    // packed again per column block (2048^3: A was packed 4 times, ~7 % of the time on Zen 5). The
    // loops then run row super-block, slice, column block; each C element still gets its slices in
    // order, so the bits are those of the column-block-outer order.
    // Super-blocks of equal height (B is packed again for each: 2049 rows are 2 x 1032, not 2048 + 1).
    const bool keep_a = !kGemmBPanelInL1 && ncb > 1;
    const int64_t sb_max = std::max<int64_t>(1, kGemmKeepARows / kGemmMR / kGemmMCPanels) * kGemmMCPanels;
    const int64_t nsb = (p1 - p0 + sb_max - 1) / sb_max;
    const int64_t sb_panels =
        keep_a ? ((p1 - p0 + nsb - 1) / nsb + kGemmMCPanels - 1) / kGemmMCPanels * kGemmMCPanels : p1 - p0;
    const int64_t a_panels = keep_a ? std::min(sb_panels, p1 - p0) : kGemmMCPanels;
    float* apack = scratch(a_buf, static_cast<std::size_t>(KC * kGemmMR * a_panels));
    // Slice pc of column block qc over the row panels [s0, s1). a_fresh: pack the A panels (else
    // apack holds them, panel p at (p - s0) panels on, from the slice's first column block).
    auto slice = [&](int64_t qc, int64_t pc, int64_t s0, int64_t s1, bool a_fresh) {
      const int64_t qe = q1 - qc < ncp ? q1 : qc + ncp;
      const int64_t kc = K - pc < KC ? K - pc : KC;
      const float beta_k = pc == 0 ? beta : 1.0f;
      // A-in-L1 order with op(B) rows far apart (ld >= 1024: B from L3 or DRAM): the B block is packed
      // up front, row by row of op(B), instead of by the first sweep's fused tiles, whose reads step
      // a row (a page or more) per k and waited on memory (2048^3 NN: ~5x a tile's time each).
      const bool b_rows = !kGemmBPanelInL1 && !b_prepacked && fuse_b && prefetch_b && p1 - p0 > kGemmMCPanels;
      if (b_rows)
        pack_b_by_rows(B + pc * rsb + qc * kGemmNR, rsb, kc, std::min(N, qe * kGemmNR) - qc * kGemmNR, qe - qc, bpack);
      for (int64_t pb = s0; pb < s1; pb += kGemmMCPanels) {  // MC-high row blocks
        const int64_t pe = s1 - pb < kGemmMCPanels ? s1 : pb + kGemmMCPanels;
        int64_t first_row[kGemmMCPanels + 1];  // row0 of this block's panels (divisions: once)
        for (int64_t p = pb; p <= pe; ++p) first_row[p - pb] = row0(p);
        float* ablock = apack + (keep_a ? (pb - s0) * kGemmMR * kc : 0);
        auto fused_a = [&](int64_t p) {
          return a_fresh && !a_by_rows && first_row[p - pb + 1] - first_row[p - pb] == kGemmMR;
        };
        if (!a_fresh) {
          // packed by the slice's first column block
        } else if (a_by_rows) {
          pack_a_by_rows(A + pc * csa, csa, first_row, pe - pb, kc, M, ablock,
                         ep.a_sums && q0 == 0 && qc == q0 ? ep.a_sums : nullptr);
        } else {
          for (int64_t p = pb; p < pe; ++p) {  // A panels not packed by their first tile
            const int64_t i = first_row[p - pb];
            if (!fused_a(p))
              pack_panel(A + i * rsa + pc * csa, rsa, csa, static_cast<int>(first_row[p - pb + 1] - i), kc, kGemmMR,
                         ablock + (p - pb) * kGemmMR * kc);
          }
        }
        // Tile (p, q) with B panel slot `slot` of bpack; b_first: the first tile using that B panel (the
        // first tile using an A panel is always the one with q == qc).
        auto run_tile = [&](int64_t p, int64_t q, int64_t slot, bool b_first) __attribute__((always_inline)) {
          float* bp;
          if (b_prepacked) {
            bp = const_cast<float*>(b_prepacked) + pc * n_panels * kGemmNR + q * kGemmNR * kc;  // only read
            b_first = false;
          } else {
            bp = bpack + slot * kGemmNR * kc;
          }
          // BLIS order: the next B panel comes from L3 (the packed block of a later row block) or
          // DRAM (a prepacked weight), and its 4 pages (kc = 256) restart the hardware prefetchers
          // at every page boundary: each tile of panel q brings its share of panel q + 1 into L2.
          // (In the first row block the next panel is not packed yet.)
          if (kGemmBPanelInL1 && q + 1 < qe && (b_prepacked || pb != s0)) {
            const int64_t lines = kc * kGemmNR / 16, share = (lines + (pe - pb) - 1) / (pe - pb);
            const float* next = bp + kGemmNR * kc;
            const int64_t l0 = (p - pb) * share, le = lines - l0 < share ? lines : l0 + share;
            for (int64_t l = l0; l < le; ++l) __builtin_prefetch(next + l * 16, 0, 2);
          }
          const int64_t i = first_row[p - pb], j = q * kGemmNR;
          const int rows = static_cast<int>(first_row[p - pb + 1] - i);
          const int cols = static_cast<int>(N - j < kGemmNR ? N - j : kGemmNR);
          float* ap = ablock + (p - pb) * kGemmMR * kc;
          float* c = C + i * ldc + j;
          if (col_bias && pc == 0)
            for (int r = 0; r < rows; ++r) std::copy(col_bias + j, col_bias + j + cols, c + r * ldc);
          const bool a_first = q == qc && fused_a(p);
          const bool b_fused = b_first && fuse_b && cols == kGemmNR;
          // A far op(B) packed panel by panel on the small-M order: the tiles of panel q prefetch panel q + 1's
          // source, one line per step k, so that its reads overlap their arithmetic; the first panel's packing
          // (whose tiles pack op(A) and prefetch nothing) fetches the second's
          const bool next_in_tiles = tiles_fetch_next && q + 1 < qe && cols == kGemmNR && !a_first;
          if (b_first && !b_fused)
            pack_panel(B + pc * rsb + j * csb, csb, rsb, cols, kc, kGemmNR, bp,
                       far_b && (q == qc || !tiles_fetch_next));
          if (next_in_tiles) {
            const int64_t lines = kGemmNR * ((kc + 15) / 16), tiles = pe - pb;
            const int64_t share = std::min<int64_t>((lines + tiles - 1) / tiles, kc), first = (p - pb) * share;
            const NextPanel next{B + pc * rsb + (j + kGemmNR) * csb, csb, first,
                                 std::max<int64_t>(0, std::min(share, lines - first))};
            micro_tile_next(rows, kc, ap, bp, c, ldc, alpha, beta_k, next);
          } else if (a_first && cols == kGemmNR) {
            micro_tile_pack_ab(kc, A + i * rsa + pc * csa, rsa, csa, ap, b_fused ? B + pc * rsb + j : bp, rsb,
                               b_fused ? bp : nullptr, c, ldc, alpha, beta_k, prefetch_ab);
          } else {
            if (a_first) pack_panel(A + i * rsa + pc * csa, rsa, csa, rows, kc, kGemmMR, ap);
            if (b_fused) {
              micro_tile_pack_b(rows, kc, ap, B + pc * rsb + j, rsb, bp, c, ldc, alpha, beta_k, prefetch_b);
            } else {
              micro_tile(rows, cols, kc, ap, bp, kGemmNR, c, ldc, alpha, beta_k);
            }
          }
          if (finish && pc + kc == K) finish_block(ep, C, ldc, i, j, rows, cols);  // the tile's last slice
        };
        if (p1 - p0 <= kGemmMCPanels) {
          // The thread's rows fit one row block (small M): each B panel is used by every A
          // panel right after packing, so one panel slot suffices and the footprint stays small
          // (more of the source B survives in L2 from call to call).
          for (int64_t q = qc; q < qe; ++q)
            for (int64_t p = pb; p < pe; ++p) run_tile(p, q, 0, p == pb);
        } else if constexpr (kGemmBPanelInL1) {
          // BLIS order: one B panel (L1-resident) against every A panel of the row block
          // (L2-resident); the B block (L3) is packed, panel by panel, during the first row
          // block's sweep and reused by the later row blocks.
          for (int64_t q = qc; q < qe; ++q)
            for (int64_t p = pb; p < pe; ++p) run_tile(p, q, q - qc, pb == s0 && p == pb);
        } else {
          // One A panel (L1-resident) against every B panel of the block (L2-resident, packed
          // during the first A panel's sweep, or up front: b_rows).
          if (a_fresh) {
            for (int64_t p = pb; p < pe; ++p)
              for (int64_t q = qc; q < qe; ++q) run_tile(p, q, q - qc, p == s0 && !b_rows);
          } else {
            // Kept A panels (a later column block of the slice): the tiles of this panel bring the
            // next one from L3 into L1, a share each (read by its own first tile, a panel change
            // cost up to ~10 % on Zen 5). (Loops kept apart: the plain one above is the common one.)
            const int64_t lines = kc * kGemmMR / 16, share = (lines + (qe - qc) - 1) / (qe - qc);
            for (int64_t p = pb; p < pe; ++p) {
              const bool next_packed = p + 1 < pe || pe < s1;
              const float* next = ablock + (p + 1 - pb) * kGemmMR * kc;
              for (int64_t q = qc; q < qe; ++q) {
                if (next_packed) {
                  const int64_t l0 = (q - qc) * share, le = lines - l0 < share ? lines : l0 + share;
                  for (int64_t l = l0; l < le; ++l) __builtin_prefetch(next + l * 16, 0, 3);
                }
                run_tile(p, q, q - qc, p == s0 && !b_rows);
              }
            }
          }
        }
      }
    };
    if (keep_a) {
      for (int64_t s0 = p0; s0 < p1; s0 += sb_panels) {  // row super-blocks
        const int64_t s1 = p1 - s0 < sb_panels ? p1 : s0 + sb_panels;
        for (int64_t pc = 0; pc < K; pc += KC)  // KC-deep slices, in order
          for (int64_t qc = q0; qc < q1; qc += ncp) slice(qc, pc, s0, s1, qc == q0);  // NC-wide column blocks
      }
    } else {
      for (int64_t qc = q0; qc < q1; qc += ncp)  // NC-wide column blocks
        for (int64_t pc = 0; pc < K; pc += KC) slice(qc, pc, p0, p1, true);  // KC-deep slices, in order
    }
  };
  const int64_t nthreads = grid.tr * grid.tc;
  parallel_for(nthreads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r = t / grid.tc, c = t % grid.tc;
      block(m_panels * r / grid.tr, m_panels * (r + 1) / grid.tr, n_panels * c / grid.tc, n_panels * (c + 1) / grid.tc);
    }
  });
}

// Small products (every operand L1/L2-resident, one KC slice): the tiles read op(A) and op(B) in
// place and nothing is packed (no scratch, no packing pass, no copy stores), since at this size
// packing costs as much as it saves; partial column panels load B masked. Column panels outer, so
// a B panel stays in L1 while the row panels sweep it. One slice of K as in sgemm_packed, and the
// same tile arithmetic, so the results equal the packed path's bit for bit.
void sgemm_direct(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rsa, int64_t csa,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const GemmEpilogue& ep) {
  const bool finish = has_finish(ep);
  // Row panels split over threads only for large thin products (N <= kSkinnyMax can have any M):
  // at least ~1 MFLOP per task. Each tile is computed the same whichever thread runs it.
  const int64_t m_panels = (M + kGemmMR - 1) / kGemmMR;
  const int64_t panel_flop = 2 * kGemmMR * N * K;
  const int64_t grain = panel_flop >= 1000000 ? 1 : 1000000 / panel_flop;
  parallel_for(m_panels, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t j = 0; j < N; j += kGemmNR) {
      const int cols = static_cast<int>(N - j < kGemmNR ? N - j : kGemmNR);
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t i = p * kGemmMR;
        const int rows = static_cast<int>(M - i < kGemmMR ? M - i : kGemmMR);
        micro_tile_direct(rows, cols, K, A + i * rsa, rsa, csa, B + j, ldb, C + i * ldc + j, ldc, alpha, beta);
        if (finish) finish_block(ep, C, ldc, i, j, rows, cols);
      }
    }
  });
}

}  // namespace

namespace {

// sgemm_prepacked_b with any epilogue (see GemmEpilogue; alpha and beta apply as in sgemm, col_bias
// overriding beta).
void sgemm_any(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, const float* b_prepacked, float beta, float* C, int64_t ldc,
               const GemmEpilogue& ep) {
  if (M <= 0 || N <= 0) {
    if (ep.a_sums)
      for (int64_t i = 0; i < M; ++i) ep.a_sums[i] = 0.0f;
    return;
  }
  const float* col_bias = ep.col_bias;
  if (col_bias) beta = 1.0f;
  // C filled with the bias rows up front, for the paths whose tiles do not write them themselves
  const auto fill_bias = [&]() {
    if (col_bias)
      for (int64_t i = 0; i < M; ++i) std::copy(col_bias, col_bias + N, C + i * ldc);
  };
  // paths without a tile epilogue: it runs as a pass over C afterwards
  const auto finish_after = [&]() {
    if (has_finish(ep)) finish_block(ep, C, ldc, 0, 0, M, N);
  };
  const int64_t rsa = trans_a ? 1 : lda, csa = trans_a ? lda : 1;
  const int64_t rsb = trans_b ? 1 : ldb, csb = trans_b ? ldb : 1;
  if (K <= 0 || alpha == 0.0f) {
    fill_bias();
    scale_c(M, N, beta, C, ldc);
    finish_after();
    if (ep.a_sums) a_sums_pass(M, K > 0 ? K : 0, A, rsa, csa, ep.a_sums);
    return;
  }
  // Skinny shapes skip packing (measured: the packed path wins from M = 9 on, but a B panel
  // of 32 columns holding N <= 16 wastes half the tile, so the transposed skinny form wins there).
  const bool direct = M > 8 && csb == 1 && K <= kGemmKCMax && (M * N * K <= kDirectMaxMNK || N <= kSkinnyMax);
  const bool direct_thin_b = !direct && M > 8 && N <= kSkinnyMax && K <= kGemmKCMax;
  const bool packed = !direct && !direct_thin_b && M > 8 && N > kSkinnyMax;
  // op(A) packed by rows takes a_sums as it goes; every other path sums in a pass
  if (ep.a_sums && !(packed && trans_a && lda != 1)) a_sums_pass(M, K, A, rsa, csa, ep.a_sums);
  if (!packed) fill_bias();
  if (direct) {
    sgemm_direct(M, N, K, alpha, A, rsa, csa, B, rsb, beta, C, ldc, ep);
  } else if (direct_thin_b) {
    // A thin op(B) with contiguous columns (x @ W^T of a layer with <= 16 outputs): its transpose
    // is at most K x 16 floats, copied once into L1-sized scratch, and the direct tiles read A once
    // (one column panel). The dot-product form would spend its time on horizontal reductions.
    alignas(64) float bt[kGemmKCMax * kSkinnyMax];
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < N; ++j) bt[k * N + j] = B[k * rsb + j * csb];
    sgemm_direct(M, N, K, alpha, A, rsa, csa, bt, N, beta, C, ldc, ep);
  } else if (M <= 8) {
    sgemm_skinny(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, ldc, 1);
    finish_after();
  } else if (N <= kSkinnyMax) {
    // C^T (N x M) = op(B)^T . op(A)^T, with C^T read through swapped strides.
    sgemm_skinny(N, M, K, alpha, B, csb, rsb, A, csa, rsa, beta, C, 1, ldc);
    finish_after();
  } else {
    if (ep.a_sums && trans_a && lda != 1)
      for (int64_t i = 0; i < M; ++i) ep.a_sums[i] = 0.0f;
    sgemm_packed(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, b_prepacked, beta, C, ldc, ep);
  }
}

}  // namespace

// sgemm with an optional prepacked op(B) (null: none; used only when the shape takes the packed path).
void sgemm_prepacked_b(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                       int64_t lda, const float* B, int64_t ldb, const float* b_prepacked, float beta, float* C,
                       int64_t ldc, int act, float act_alpha, const float* col_bias) {
  GemmEpilogue ep;
  ep.act = act;
  ep.act_alpha = act_alpha;
  ep.col_bias = col_bias;
  sgemm_any(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, b_prepacked, beta, C, ldc, ep);
}

void sgemm_epilogue(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                    const float* B, int64_t ldb, const float* b_prepacked, float* C, int64_t ldc,
                    const GemmEpilogue& ep) {
  sgemm_any(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, b_prepacked, 0.0f, C, ldc, ep);
}

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  sgemm_prepacked_b(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, nullptr, beta, C, ldc, -1, 0.0f, nullptr);
}

int64_t sgemm_prepacked_b_floats(int64_t N, int64_t K) {
  if (N <= 0 || K <= 0) return 0;
  return (N + kGemmNR - 1) / kGemmNR * kGemmNR * K;
}

void sgemm_prepack_b(bool trans_b, int64_t N, int64_t K, const float* B, int64_t ldb, float* dst) {
  if (N <= 0 || K <= 0) return;
  const int64_t rsb = trans_b ? 1 : ldb, csb = trans_b ? ldb : 1;
  const int64_t KC = choose_kc(K);
  const int64_t n_panels = (N + kGemmNR - 1) / kGemmNR;
  // Panels are independent: spread over threads (the layout, not the thread count, fixes where each goes).
  parallel_for(n_panels, 8, [&](int64_t q0, int64_t q1) {
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = K - pc < KC ? K - pc : KC;
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t j = q * kGemmNR;
        const int cols = static_cast<int>(N - j < kGemmNR ? N - j : kGemmNR);
        pack_panel(B + pc * rsb + j * csb, csb, rsb, cols, kc, kGemmNR,
                   dst + pc * n_panels * kGemmNR + q * kGemmNR * kc);
      }
    }
  });
}

void sgemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  auto one = [&](int64_t b) {
    sgemm(trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b, ldb, beta, C + b * stride_c, ldc);
  };
  // Small products: one batch entry per task (each sgemm then runs on its thread). Large ones:
  // entries in order, each split over threads inside sgemm. Same results either way.
  const double flops = 2.0 * static_cast<double>(M) * N * (K > 0 ? K : 1);
  if (get_num_threads() > 1 && batch > 1 && flops < 4.0e6) {
    parallel_tasks(batch, static_cast<int64_t>(flops / 2), one);
  } else {
    for (int64_t b = 0; b < batch; ++b) one(b);
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
