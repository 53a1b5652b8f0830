// Int8 GEMM (u8 x s8 -> s32) with fused epilogues, compiled per ISA; the packed weight layout and
// the argument contract are in forgegrad/qgemm.h.
//
// Microkernels, all exact (no instruction here saturates; the AVX2 ones are in qgemm_avx2.h):
//   scalar  plain integer loops (the reference the others are tested against);
//   avx_vnni  vpdpbusd on 256-bit registers (qgemm_dpbusd256.h), VEX-encoded (AVX-VNNI) or
//           EVEX-encoded (AVX-512 VNNI + VL), compiled in the AVX2 build;
//   avx2    weights sign-extended and activations zero-extended to int16 (once per task, into
//           thread-local panels), then vpmaddwd: each pair product sum fits int32. With 7-bit
//           activations (reduce_range) vpmaddubsw + vpmaddwd straight from the packed bytes, whose
//           int16 pair sums cannot saturate then (for 8-bit activations they can, so it is not used).
//   avx512  vpdpbusd (AVX-512 VNNI: four u8 x s8 products summed into int32, no saturation), or
//           AMX-INT8 tiles (tdpbusd on 16 x 64-byte tiles). Each is a function compiled for its own
//           target, so the AVX-512 build runs on CPUs without VNNI as long as the dispatcher
//           (cpp/kernels/qgemm_dispatch.cpp) never calls it there.
//
// Threads: the output is cut into tasks of kQPanelRows rows x 32 columns; every element's sum is
// computed by one microkernel call over the whole K, so thread count changes nothing. The
// epilogue is the same scalar code on every path (no FMA contraction: -ffp-contract=off), so the
// float and u8 outputs are identical on every path too.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/qgemm.h"
#include "forgegrad/simd.h"
#include "qgemm_avx2.h"
#include "qgemm_dpbusd256.h"
#include "qgemm_epilogue.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

constexpr int64_t kQPanelRows = 64;  // rows of one task

// ---- portable ------------------------------------------------------------------------------------
[[maybe_unused]] void micro_scalar(const QGemmArgs& p, int64_t m0, int rows, int64_t nb, int32_t* acc) {
  const int64_t K4 = (p.K + 3) / 4;  // groups past K hold zeros on both sides
  for (int half = 0; half < 2; ++half) {
    const int8_t* bb = weight_block(p, 2 * nb + half);
    for (int r = 0; r < rows; ++r) {
      const uint8_t* a = p.a + (m0 + r) * p.lda;
      int32_t s[16] = {0};
      for (int64_t k4 = 0; k4 < K4; ++k4) {
        const int8_t* b = bb + k4 * 64;
        const uint8_t* ak = a + 4 * k4;
        for (int c = 0; c < 16; ++c)
          s[c] += int32_t(ak[0]) * b[4 * c] + int32_t(ak[1]) * b[4 * c + 1] + int32_t(ak[2]) * b[4 * c + 2] +
                  int32_t(ak[3]) * b[4 * c + 3];
      }
      std::memcpy(acc + r * kAccLd + 16 * half, s, sizeof(s));
    }
  }
}

// ---- AVX-512 VNNI and AMX ------------------------------------------------------------------------
#if defined(__AVX512F__)
constexpr int kVnniMR = 8;
// Row blocks shorter than this run on the VNNI microkernel in the AMX path: a tile multiply costs
// about the same for 1 row as for 16, and below ~8 rows vpdpbusd was faster (measured, SPR).
constexpr int kAmxMinRows = 8;
constexpr int64_t kAmxCols = 32;  // 32-column weight blocks per AMX task

// The sums of `rows` rows (s[r][0]: columns n0..n0+15, s[r][1]: the next 16) of the 32-column
// block nb through the epilogue: straight from the registers for a full block, else via `acc`.
template <int R>
__attribute__((always_inline)) inline void write_rows(const QGemmArgs& p, int64_t m0, int rows, int64_t nb,
                                                      const __m512i (&s)[R][2], int32_t* acc) {
  const int64_t n0 = nb * kQPackN;
  const int cols = static_cast<int>(std::min<int64_t>(kQPackN, p.N - n0));
  if (cols == kQPackN) {
    const Block32Terms t = block32_terms(p, n0);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      if (r < rows) epilogue_row32(p, t, s[r][0], s[r][1], (m0 + r) * p.ldc + n0);
    return;
  }
  for (int r = 0; r < rows; ++r) {
    _mm512_storeu_si512(acc + r * kAccLd, s[r][0]);
    _mm512_storeu_si512(acc + r * kAccLd + 16, s[r][1]);
  }
  epilogue(p, acc, m0, rows, n0, cols);
}

// R rows (1..8) x 32 columns, written through the epilogue; instantiated for every R, so a short
// row block (batch 1) does only its own rows.
template <int R>
__attribute__((target("avx512vnni"))) void micro_vnni_r(const QGemmArgs& p, int64_t m0, int rows, int64_t nb,
                                                        int32_t* acc) {
  const int64_t K4 = (p.K + 3) / 4;
  const int8_t* b0 = weight_block(p, 2 * nb);
  const int8_t* b1 = weight_block(p, 2 * nb + 1);
  const uint8_t* arow[kVnniMR];
  for (int r = 0; r < kVnniMR; ++r) arow[r] = p.a + (m0 + (r < rows ? r : 0)) * p.lda;
  // Named accumulators, not arrays: with arrays of __m512i GCC 12 copies every accumulator twice per
  // step around the (destructive) vpdpbusd, tripling the instruction count.
  __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
          c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    const __m512i w0 = _mm512_loadu_si512(b0 + k4 * 64);
    const __m512i w1 = _mm512_loadu_si512(b1 + k4 * 64);
#define FG_VNNI_ROW(r)                                               \
  if constexpr (R > r) {                                             \
    const __m512i a = _mm512_set1_epi32(load_u32(arow[r] + 4 * k4)); \
    c##r##0 = _mm512_dpbusd_epi32(c##r##0, a, w0);                   \
    c##r##1 = _mm512_dpbusd_epi32(c##r##1, a, w1);                   \
  }
    FG_VNNI_ROW(0)
    FG_VNNI_ROW(1)
    FG_VNNI_ROW(2)
    FG_VNNI_ROW(3)
    FG_VNNI_ROW(4)
    FG_VNNI_ROW(5)
    FG_VNNI_ROW(6)
    FG_VNNI_ROW(7)
#undef FG_VNNI_ROW
  }
  const __m512i out[kVnniMR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                                   {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
  write_rows<kVnniMR>(p, m0, rows, nb, out, acc);
}

// micro_vnni_r for one or two rows (a GEMV: the int8 LSTM's recurrent step, batch-1 layers). There
// micro_vnni_r has only 2 or 4 accumulators, each vpdpbusd waits for the one before on the same
// register (~5 cycles on Zen 4), and the 1024 x 256 LSTM product took ~2.9 us per step against ~1.1
// us of vpdpbusd issue. Here interleaved sets of accumulators take the k4 steps in turn (8 chains in
// all) and are added at the end: integer sums, so the same results in any order.
template <int R>
__attribute__((target("avx512vnni"))) void micro_vnni_few(const QGemmArgs& p, int64_t m0, int rows, int64_t nb,
                                                          int32_t* acc) {
  static_assert(R == 1 || R == 2, "micro_vnni_few: one or two rows");
  const int64_t K4 = (p.K + 3) / 4;
  const int8_t* b0 = weight_block(p, 2 * nb);
  const int8_t* b1 = weight_block(p, 2 * nb + 1);
  const uint8_t* a0 = p.a + m0 * p.lda;
  const uint8_t* a1 = p.a + (m0 + (rows > 1 ? 1 : 0)) * p.lda;
  // Named accumulators (see micro_vnni_r). One row: sets s0..s3 of k4 % 4; two rows: sets s0, s1.
  const __m512i z = _mm512_setzero_si512();
  __m512i h0s0 = z, h0s1 = z, h0s2 = z, h0s3 = z, h1s0 = z, h1s1 = z, h1s2 = z, h1s3 = z;
#define FG_VNNI_FEW_STEP(k, x, c0, c1)                                   \
  {                                                                      \
    const __m512i xa = _mm512_set1_epi32(load_u32((x) + 4 * (k)));       \
    c0 = _mm512_dpbusd_epi32(c0, xa, _mm512_loadu_si512(b0 + (k) * 64)); \
    c1 = _mm512_dpbusd_epi32(c1, xa, _mm512_loadu_si512(b1 + (k) * 64)); \
  }
  int64_t k4 = 0;
  if constexpr (R == 1) {
    for (; k4 + 4 <= K4; k4 += 4) {
      FG_VNNI_FEW_STEP(k4, a0, h0s0, h1s0)
      FG_VNNI_FEW_STEP(k4 + 1, a0, h0s1, h1s1)
      FG_VNNI_FEW_STEP(k4 + 2, a0, h0s2, h1s2)
      FG_VNNI_FEW_STEP(k4 + 3, a0, h0s3, h1s3)
    }
    for (; k4 < K4; ++k4) FG_VNNI_FEW_STEP(k4, a0, h0s0, h1s0)
    const __m512i out[1][2] = {{_mm512_add_epi32(_mm512_add_epi32(h0s0, h0s1), _mm512_add_epi32(h0s2, h0s3)),
                                _mm512_add_epi32(_mm512_add_epi32(h1s0, h1s1), _mm512_add_epi32(h1s2, h1s3))}};
    write_rows<1>(p, m0, 1, nb, out, acc);
  } else {  // row 0 in h*s0 / h*s1, row 1 in h*s2 / h*s3
    for (; k4 + 2 <= K4; k4 += 2) {
      FG_VNNI_FEW_STEP(k4, a0, h0s0, h1s0)
      FG_VNNI_FEW_STEP(k4, a1, h0s2, h1s2)
      FG_VNNI_FEW_STEP(k4 + 1, a0, h0s1, h1s1)
      FG_VNNI_FEW_STEP(k4 + 1, a1, h0s3, h1s3)
    }
    for (; k4 < K4; ++k4) {
      FG_VNNI_FEW_STEP(k4, a0, h0s0, h1s0)
      FG_VNNI_FEW_STEP(k4, a1, h0s2, h1s2)
    }
    const __m512i out[2][2] = {{_mm512_add_epi32(h0s0, h0s1), _mm512_add_epi32(h1s0, h1s1)},
                               {_mm512_add_epi32(h0s2, h0s3), _mm512_add_epi32(h1s2, h1s3)}};
    write_rows<2>(p, m0, rows, nb, out, acc);
  }
#undef FG_VNNI_FEW_STEP
}

__attribute__((target("avx512vnni"))) void micro_vnni(const QGemmArgs& p, int64_t m0, int rows, int64_t nb,
                                                      int32_t* acc) {
  switch (rows) {
    case 1: return micro_vnni_few<1>(p, m0, rows, nb, acc);
    case 2: return micro_vnni_few<2>(p, m0, rows, nb, acc);
    case 3: return micro_vnni_r<3>(p, m0, rows, nb, acc);
    case 4: return micro_vnni_r<4>(p, m0, rows, nb, acc);
    case 5: return micro_vnni_r<5>(p, m0, rows, nb, acc);
    case 6: return micro_vnni_r<6>(p, m0, rows, nb, acc);
    case 7: return micro_vnni_r<7>(p, m0, rows, nb, acc);
    default: return micro_vnni_r<8>(p, m0, rows, nb, acc);
  }
}

// AMX tile configuration (palette 1): tiles 0-3 accumulate the 2 x 2 blocks of 16 x 16 sums,
// 4-5 hold 16 rows x 64 k of activations, 6-7 hold 64 k x 16 columns of weights.
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {0};
  uint16_t colsb[16] = {0};
  uint8_t rows[16] = {0};
};

__attribute__((target("amx-tile"))) void amx_configure(int r0, int r1) {
  TileConfig cfg;
  const int rows[8] = {r0, r0, r1, r1, r0, r1, 16, 16};
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = static_cast<uint8_t>(rows[t]);
    cfg.colsb[t] = rows[t] ? 64 : 0;
  }
  // GCC 12 does not tell the optimiser that ldtilecfg reads the 64 bytes: without this barrier the
  // stores above are removed as dead and the tiles stay unconfigured (tilezero then faults).
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

__attribute__((target("amx-tile"))) void amx_release() { _tile_release(); }

// Sums for rows m0..m0+r0+r1 (r0 <= 16 rows in tiles 0/1, r1 <= 16 more in tiles 2/3) of the
// 32-column block nb; the configuration must match (amx_configure(r0, r1)).
// a0: the block's first activation row, lda its row stride (both 64-byte aligned: a tile load of
// rows that straddle cache lines runs at half speed).
__attribute__((target("amx-tile,amx-int8"))) void micro_amx(const QGemmArgs& p, const uint8_t* a0, int64_t lda, int r1,
                                                            int64_t nb, int32_t* acc) {
  const int64_t KB = qpad_k(p.K) / 64;
  const int8_t* b0 = weight_block(p, 2 * nb);
  const int8_t* b1 = weight_block(p, 2 * nb + 1);
  const uint8_t* a1 = a0 + 16 * lda;
  _tile_zero(0);
  _tile_zero(1);
  if (r1) {
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t kb = 0; kb < KB; ++kb) {
    _tile_loadd(4, a0 + 64 * kb, lda);
    _tile_loadd(6, b0 + kb * 1024, 64);
    _tile_loadd(7, b1 + kb * 1024, 64);
    _tile_dpbusd(0, 4, 6);
    _tile_dpbusd(1, 4, 7);
    if (r1) {
      _tile_loadd(5, a1 + 64 * kb, lda);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    }
  }
  _tile_stored(0, acc, kAccLd * 4);
  _tile_stored(1, acc + 16, kAccLd * 4);
  if (r1) {
    _tile_stored(2, acc + 16 * kAccLd, kAccLd * 4);
    _tile_stored(3, acc + 16 * kAccLd + 16, kAccLd * 4);
  }
}
#endif

struct NoRangeEnd {
  void operator()() const {}
};

// Runs `task(m0, rows, nb)` for every panel of kQPanelRows rows x 32 columns, spread over threads;
// each thread calls range_end() after its last panel of a range.
template <class Task, class RangeEnd = NoRangeEnd>
void for_each_panel(const QGemmArgs& p, Task&& task, RangeEnd range_end = RangeEnd()) {
  const int64_t mp = (p.M + kQPanelRows - 1) / kQPanelRows, np = qpad_n(p.N) / kQPackN;
  // ~8 int8 multiply-adds cost what one float multiply-add does in the fp32 kernels
  const int64_t work = std::min(kQPanelRows, p.M) * kQPackN * qpad_k(p.K) / 8;
  parallel_for_work(mp * np, work, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t nb = t / mp, pm = t % mp;
      const int64_t m0 = pm * kQPanelRows;
      task(m0, static_cast<int>(std::min<int64_t>(kQPanelRows, p.M - m0)), nb);
    }
    range_end();
  });
}

#if defined(__AVX512F__)
// The VNNI microkernels write their rows through the epilogue themselves.
void run_vnni(const QGemmArgs& p) {
  for_each_panel(p, [&](int64_t m0, int rows, int64_t nb) {
    alignas(64) int32_t acc[kVnniMR * kAccLd];
    for (int r = 0; r < rows; r += kVnniMR) micro_vnni(p, m0 + r, std::min(kVnniMR, rows - r), nb, acc);
  });
}
#endif

template <int MR, class Micro>
void run_micro(const QGemmArgs& p, Micro micro) {
  for_each_panel(p, [&](int64_t m0, int rows, int64_t nb) {
    alignas(64) int32_t acc[MR * kAccLd];
    const int cols = static_cast<int>(std::min<int64_t>(kQPackN, p.N - nb * kQPackN));
    for (int r = 0; r < rows; r += MR) {
      const int n = std::min(MR, rows - r);
      micro(p, m0 + r, n, nb, acc);
      epilogue(p, acc, m0 + r, n, nb * kQPackN, cols);
    }
  });
}

#if defined(__AVX2__) && !defined(__AVX512F__)
// The exact AVX2 GEMM: tasks of kQPanelRows rows x 32 columns as for_each_panel's, but row panels
// outermost, so a thread widens each activation panel once for all its column blocks, and each
// weight block once per panel (1/64 of the products' work).
void run_avx2_exact(const QGemmArgs& p) {
  const int64_t kp = qpad_k(p.K), K4 = (p.K + 3) / 4;
  const int64_t mp = (p.M + kQPanelRows - 1) / kQPanelRows, np = qpad_n(p.N) / kQPackN;
  const int64_t work = std::min(kQPanelRows, p.M) * kQPackN * kp / 8;
  parallel_for_work(mp * np, work, [&](int64_t b, int64_t e) {
    static thread_local AlignedBuffer abuf, bbuf;  // int16 panels (sizes in floats: 2 int16 each)
    const size_t a_floats = static_cast<size_t>(kQPanelRows * kp / 2), b_floats = static_cast<size_t>(kQPackN * kp / 2);
    if (abuf.size() < a_floats) abuf.reset(a_floats);
    if (bbuf.size() < b_floats) bbuf.reset(b_floats);
    int16_t* a16 = reinterpret_cast<int16_t*>(abuf.data());
    int16_t* b16 = reinterpret_cast<int16_t*>(bbuf.data());
    int64_t a_panel = -1, b_block = -1;  // what the buffers hold now (valid within this range only)
    alignas(64) int32_t acc[kQPanelRows * kAccLd];
    for (int64_t t = b; t < e; ++t) {
      const int64_t pm = t / np, nb = t % np, m0 = pm * kQPanelRows;
      const int rows = static_cast<int>(std::min<int64_t>(kQPanelRows, p.M - m0));
      const int cols = static_cast<int>(std::min<int64_t>(kQPackN, p.N - nb * kQPackN));
      if (pm != a_panel) {
        widen_a(p, m0, rows, kp, a16);
        a_panel = pm;
      }
      const bool wide = rows >= kAvx2WidenRows;
      if (wide && nb != b_block) {
        widen_b(p, nb, K4, b16);
        b_block = nb;
      }
      for (int g = 0; 8 * g < cols; ++g) {  // groups of 8 columns past N are not computed
        const void* bg = wide ? static_cast<const void*>(b16 + g * K4 * 32)
                              : static_cast<const void*>(weight_block(p, 2 * nb + g / 2) + 32 * (g % 2));
        for (int r = 0; r < rows; r += kAvx2MR) {
          const int n = std::min(kAvx2MR, rows - r);
          if (wide)
            micro_avx2_rows<true>(n, a16 + r * kp, kp, bg, K4, acc + r * kAccLd + 8 * g);
          else
            micro_avx2_rows<false>(n, a16 + r * kp, kp, bg, K4, acc + r * kAccLd + 8 * g);
        }
      }
      epilogue(p, acc, m0, rows, nb * kQPackN, cols);
    }
  });
}
#endif

}  // namespace

#if defined(__AVX512F__)
void qgemm(const QGemmArgs& p, bool amx) {
  if (p.M <= 0 || p.N <= 0) return;
  if (!amx && p.M <= 2) {
    // One or two rows (the int8 LSTM's recurrent step, batch-1 layers) on one thread: the column
    // blocks in a plain loop, micro-kernel and epilogue called directly (no panel tasks, no kernel
    // pointer): ~2-5 % off the int8 LSTM's batch-1 call. Same integers, same epilogue.
    const int64_t np = qpad_n(p.N) / kQPackN;
    if (threads_for(region_work(np, qpad_k(p.K) * kQPackN / 8 * p.M)) == 1) {
      alignas(64) int32_t acc[2 * kAccLd];
      for (int64_t nb = 0; nb < np; ++nb) {
        if (p.M == 1)
          micro_vnni_few<1>(p, 0, 1, nb, acc);
        else
          micro_vnni_few<2>(p, 0, 2, nb, acc);
      }
      return;
    }
  }
  if (!amx) {
    run_vnni(p);
    return;
  }
  // Tile state is per thread (and other libraries in the process may use AMX too): each thread
  // configures at its first AMX block of a range, again only when the block height changes, and
  // releases the tiles at the end of its range.
  static thread_local int configured = -1;
  // Tasks are kQPanelRows rows x (kAmxCols x 32) columns, column groups outermost: consecutive tasks
  // share their weight blocks (L1/L2-resident), and inside a task each 32-row slice of activations is
  // loaded from L2 once and reused from L1 for every 32-column block of the group.
  const int64_t mp = (p.M + kQPanelRows - 1) / kQPanelRows, nbs = qpad_n(p.N) / kQPackN;
  const int64_t ng = (nbs + kAmxCols - 1) / kAmxCols;
  const int64_t work = std::min(kQPanelRows, p.M) * kQPackN * kAmxCols * qpad_k(p.K) / 8;
  parallel_for_work(mp * ng, work, [&](int64_t b, int64_t e) {
    alignas(64) int32_t acc[32 * kAccLd];
    // Activation rows that are not on 64-byte boundaries are copied, 32 rows at a time, to an
    // aligned slice that every column block of the task then reads.
    const int64_t kp = qpad_k(p.K);
    const bool aligned = reinterpret_cast<uintptr_t>(p.a) % 64 == 0 && p.lda % 64 == 0;
    static thread_local AlignedBuffer slice;
    if (!aligned && slice.size() * sizeof(float) < static_cast<size_t>(32 * kp))
      slice.reset(static_cast<size_t>(8 * kp));
    for (int64_t t = b; t < e; ++t) {
      const int64_t g = t / mp, pm = t % mp;
      const int64_t m0 = pm * kQPanelRows;
      const int rows = static_cast<int>(std::min<int64_t>(kQPanelRows, p.M - m0));
      for (int r = 0; r < rows; r += 32) {
        const int n = std::min(32, rows - r);
        const uint8_t* a_rows = p.a + (m0 + r) * p.lda;
        int64_t a_ld = p.lda;
        if (!aligned && n >= kAmxMinRows) {
          uint8_t* dst = reinterpret_cast<uint8_t*>(slice.data());
          for (int i = 0; i < n; ++i) std::memcpy(dst + i * kp, a_rows + i * p.lda, static_cast<size_t>(kp));
          a_rows = dst;
          a_ld = kp;
        }
        for (int64_t nb = g * kAmxCols; nb < std::min(nbs, (g + 1) * kAmxCols); ++nb) {
          if (n < kAmxMinRows) {  // a short block (batch 1): the VNNI kernel is faster, same integers
            micro_vnni(p, m0 + r, n, nb, acc);
            continue;
          }
          if (n != configured) {
            amx_configure(std::min(n, 16), std::max(n - 16, 0));
            configured = n;
          }
          micro_amx(p, a_rows, a_ld, std::max(n - 16, 0), nb, acc);
          epilogue(p, acc, m0 + r, n, nb * kQPackN, static_cast<int>(std::min<int64_t>(kQPackN, p.N - nb * kQPackN)));
        }
      }
    }
    if (configured >= 0) amx_release();
    configured = -1;
  });
}
#elif defined(__AVX2__)
void qgemm(const QGemmArgs& p) {
  if (p.M <= 0 || p.N <= 0) return;
  if (p.a_7bit)
    run_micro<kAvx2MR7>(p, micro_avx2_7bit);
  else
    run_avx2_exact(p);
}

void qgemm_dpbusd256(const QGemmArgs& p, bool vex) {
  if (p.M <= 0 || p.N <= 0) return;
  if (vex)
    run_micro<kDp256MR>(p, micro_dp256<DpEncoding::vex>);
  else
    run_micro<kDp256MR>(p, micro_dp256<DpEncoding::evex>);
}
#else
void qgemm(const QGemmArgs& p) {
  if (p.M > 0 && p.N > 0) run_micro<4>(p, micro_scalar);
}

// A build without x86 (where fg::avx2 holds the portable code too) links the dispatcher's avx_vnni call
// here; the dispatcher never chooses that path there (no CPU without x86 reports VNNI).
void qgemm_dpbusd256(const QGemmArgs& p, bool) { qgemm(p); }
#endif

}  // namespace FG_ISA_NS
}  // namespace fg
