// The recurrent matmul of the RNN kernels (h_{t-1} @ W_hh^T forward, dGates_t @ W_hh backward) on
// weights packed once per call, plus small helpers. Per step the left operand has only B rows, so
// a general GEMM would re-pack W_hh every step; here W_hh is packed into contiguous column panels
// once and each step streams them through a register-blocked kernel (kRnnMR rows x kRnnNR columns).
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "forgegrad/parallel.h"
#include "forgegrad/rnn.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace rnn_detail {

// Register block: kRnnMR rows x kRnnNV vectors. AVX-512: 6 x 4 zmm accumulators (24 of 32 registers);
// AVX2: 6 x 2 ymm (12 of 16); scalar: 4 x 4 floats.
#if defined(__AVX512F__)
constexpr int kRnnNV = 4, kRnnMR = 6;
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kRnnNV = 2, kRnnMR = 6;
#else
constexpr int kRnnNV = 4, kRnnMR = 4;
#endif
constexpr int kRnnNR = kRnnNV * W;

int panel_width() { return kRnnNR; }
int64_t num_panels(int64_t n) { return (n + kRnnNR - 1) / kRnnNR; }

int64_t row_chunks(int64_t panels, int64_t rows, int64_t step_work) {
  // The threads a step's region will get, not the thread count: while the pool backs off (a busy
  // machine), chunks would run one after another on the caller, each a shorter row block.
  const int64_t nt = threads_for(step_work);
  if (panels >= nt || rows <= kRnnMR) return 1;
  const int64_t want = (nt + panels - 1) / panels;
  const int64_t most = (rows + kRnnMR - 1) / kRnnMR;
  return want < most ? want : most;
}

void pack_transposed(const float* W_, int64_t ldw, int64_t K, int64_t N, float* P) {
  int64_t np = num_panels(N);
  parallel_for_work(np, K * kRnnNR, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* dst = P + p * K * kRnnNR;
      for (int c = 0; c < kRnnNR; ++c) {
        int64_t n = p * kRnnNR + c;
        if (n < N) {
          const float* src = W_ + n * ldw;
          for (int64_t k = 0; k < K; ++k) dst[k * kRnnNR + c] = src[k];
        } else {
          for (int64_t k = 0; k < K; ++k) dst[k * kRnnNR + c] = 0.0f;
        }
      }
    }
  });
}

void pack_plain(const float* W_, int64_t ldw, int64_t K, int64_t N, float* P) {
  int64_t np = num_panels(N);
  parallel_for_work(np, K * kRnnNR, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      float* dst = P + p * K * kRnnNR;
      int64_t n0 = p * kRnnNR;
      int64_t nc = N - n0 < kRnnNR ? N - n0 : kRnnNR;
      for (int64_t k = 0; k < K; ++k) {
        const float* src = W_ + k * ldw + n0;
        float* d = dst + k * kRnnNR;
        int c = 0;
        for (; c < nc; ++c) d[c] = src[c];
        for (; c < kRnnNR; ++c) d[c] = 0.0f;
      }
    }
  });
}

namespace {

// The register block shared by the packed and the strided kernels: acc[r][v] = sum over k in order
// 0..K-1 of A[r * lda + k] * b[v], where load(k, b) fills b with the kRnnNV vectors of row k of the
// right operand. Templates on the loader, so each caller compiles to its own loop as if written out.
template <int MR, class Load>
inline void accumulate(const float* A, int64_t lda, int64_t K, Load load, vf (&acc)[MR][kRnnNV]) {
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < kRnnNV; ++v) acc[r][v] = vzero();
  for (int64_t k = 0; k < K; ++k) {
    vf b[kRnnNV];
    load(k, b);
    for (int r = 0; r < MR; ++r) {
      vf a = vset1(A[r * lda + k]);
      for (int v = 0; v < kRnnNV; ++v) acc[r][v] = vfmadd(a, b[v], acc[r][v]);
    }
  }
}

// C[r * ldc + c] = (init ? init[r * ldi + c] : 0) + acc for rows r < MR and columns c < ncols.
template <int MR>
inline void store_block(const vf (&acc)[MR][kRnnNV], int ncols, const float* init, int64_t ldi, float* C, int64_t ldc) {
  for (int r = 0; r < MR; ++r) {
    float* c = C + r * ldc;
    const float* in = init ? init + r * ldi : nullptr;
    for (int v = 0; v < kRnnNV; ++v) {
      int col = v * W;
      int n = ncols - col;
      if (n <= 0) break;
      if (n >= W) {
        vstore(c + col, in ? vadd(vload(in + col), acc[r][v]) : acc[r][v]);
      } else {
        vstore_n(c + col, in ? vadd(vload_n(in + col, n), acc[r][v]) : acc[r][v], n);
      }
    }
  }
}

template <int MR>
inline void micro(const float* A, int64_t lda, const float* P, int64_t K, int ncols, const float* init, int64_t ldi,
                  float* C, int64_t ldc) {
  vf acc[MR][kRnnNV];
  accumulate<MR>(
      A, lda, K,
      [&](int64_t k, vf* b) {
        const float* p = P + k * kRnnNR;
        for (int v = 0; v < kRnnNV; ++v) b[v] = vload(p + v * W);
      },
      acc);
  store_block<MR>(acc, ncols, init, ldi, C, ldc);
}

// micro<m> for a run-time m in [1, M].
template <int M>
inline void micro_dispatch(int m, const float* A, int64_t lda, const float* P, int64_t K, int ncols, const float* init,
                           int64_t ldi, float* C, int64_t ldc) {
  if constexpr (M >= 1) {
    if (m == M)
      micro<M>(A, lda, P, K, ncols, init, ldi, C, ldc);
    else
      micro_dispatch<M - 1>(m, A, lda, P, K, ncols, init, ldi, C, ldc);
  }
}

}  // namespace

void panel_matmul(const float* A, int64_t lda, int64_t M, const float* P, int64_t K, int ncols, const float* init,
                  int64_t ldi, float* C, int64_t ldc) {
  // Rows are split into ceil(M / kRnnMR) blocks of nearly equal size (32 rows: 6,6,5,5,5,5 rather
  // than 6,6,6,6,6,2): a thin last block would stream the whole panel for a few FMAs per load.
  // Blocking does not change any output's arithmetic (each is init + its k-ordered sum).
  const int64_t nblocks = (M + kRnnMR - 1) / kRnnMR;
  int64_t r = 0;
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int m = static_cast<int>(M / nblocks + (blk < M % nblocks ? 1 : 0));
    const float* A_ = A + r * lda;
    const float* in = init ? init + r * ldi : nullptr;
    float* C_ = C + r * ldc;
    micro_dispatch<kRnnMR>(m, A_, lda, P, K, ncols, in, ldi, C_, ldc);
    r += m;
  }
}

namespace {

// At B = 1 a step streams all of W_hh (1 MiB for an LSTM at H = 256) and does 1 FMA per loaded
// vector, so it is bound by cache bandwidth, not arithmetic: on the Zen 4 test machine this loop runs
// ~85-100 GB/s against ~117 GB/s for a pure read of L2-resident data and ~100 GB/s at 1 MiB. Tried
// and measured no faster (A/B in one process): 16-row groups reduced by one transposed shuffle tree
// (0.97-0.99x at B = 1, 0.72-0.85x at B = 4) and software prefetch of the rows ahead (0.95-0.98x).
// The AVX2 build runs B = 1 through rowdot_pass8 below (8 rows per pass); prefetching the next
// pass's rows into L1 there was slower too (0.89-0.92x, T50 H128-H256).
template <int MR>
void rowdot_rows(const float* A, int64_t lda, const float* W_, int64_t ldw, int64_t K, int64_t ncols, const float* init,
                 int64_t ldi, float* C, int64_t ldc) {
  constexpr int Q = 4;  // W rows per pass: MR x Q vector accumulators
  for (int64_t c0 = 0; c0 < ncols; c0 += Q) {
    const int q_n = ncols - c0 < Q ? static_cast<int>(ncols - c0) : Q;
    vf acc[MR][Q];
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < Q; ++q) acc[r][q] = vzero();
    const float* w[Q];
    for (int q = 0; q < Q; ++q) w[q] = W_ + (c0 + (q < q_n ? q : 0)) * ldw;
    int64_t k = 0;
    for (; k + W <= K; k += W) {
      vf wv[Q];
      for (int q = 0; q < Q; ++q) wv[q] = vload(w[q] + k);
      for (int r = 0; r < MR; ++r) {
        vf a = vload(A + r * lda + k);
        for (int q = 0; q < Q; ++q) acc[r][q] = vfmadd(a, wv[q], acc[r][q]);
      }
    }
    if (k < K) {
      const int n = static_cast<int>(K - k);
      vf wv[Q];
      for (int q = 0; q < Q; ++q) wv[q] = vload_n(w[q] + k, n);
      for (int r = 0; r < MR; ++r) {
        vf a = vload_n(A + r * lda + k, n);
        for (int q = 0; q < Q; ++q) acc[r][q] = vfmadd(a, wv[q], acc[r][q]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < q_n; ++q) {
        float v = vreduce_add(acc[r][q]);
        C[r * ldc + c0 + q] = init ? init[r * ldi + c0 + q] + v : v;
      }
  }
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// Lanes r of the result: vreduce_add(a[r]) for r < 8, each with exactly vreduce_add's order
// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), so an output does not depend on which reduction
// produced it. One transposed tree (14 shuffles, 7 adds) instead of 8 separate lane sums (~48 ops).
inline vf reduce8(const vf (&a)[8]) {
  // Stage 1: p_r = lo(a_r) + hi(a_r); rows paired (0,4) (1,5) (2,6) (3,7) so that stage 3's lane
  // order comes out as 0..7.
  vf u[4];
  for (int j = 0; j < 4; ++j)
    u[j] = _mm256_add_ps(_mm256_permute2f128_ps(a[j], a[j + 4], 0x20), _mm256_permute2f128_ps(a[j], a[j + 4], 0x31));
  // Stage 2: (p0 + p2, p1 + p3) of each row. x01 = [r0 r0 r1 r1 | r4 r4 r5 r5], x23 likewise.
  vf x01 = _mm256_add_ps(_mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
  vf x23 = _mm256_add_ps(_mm256_shuffle_ps(u[2], u[3], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(u[2], u[3], _MM_SHUFFLE(3, 2, 3, 2)));
  // Stage 3: first + second half of each row: [r0 r1 r2 r3 | r4 r5 r6 r7].
  return _mm256_add_ps(_mm256_shuffle_ps(x01, x23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm256_shuffle_ps(x01, x23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// rowdot_rows<1> for the AVX2 build, one pass: C[c0 + q] = (init ? init[c0 + q] : 0) + dot(A, W row
// c0 + q) for q < q_n <= 8. 8 W rows per pass (8 independent accumulators cover the FMA latency x
// throughput of two pipes; 4 leave one pipe idle at batch 1, where there is one A row to share them)
// and one transposed reduction per 8 outputs. Each output's arithmetic (k-ordered lane FMAs, the
// lane sum in vreduce_add's order, then init + sum) is rowdot_rows<1>'s, so the results are the
// same bits.
inline void rowdot_pass8(const float* A, const float* W_, int64_t ldw, int64_t K, int64_t c0, int q_n,
                         const float* init, float* C) {
  // Eight named row pointers and accumulators rather than arrays: with arrays GCC built the pointers
  // on the stack (a `rep stos` per pass that cost more than the pass's loads at H = 64). Rows past
  // q_n repeat row c0 (their sums are computed and not stored).
  const float* w0 = W_ + c0 * ldw;
  const float* w1 = q_n > 1 ? w0 + ldw : w0;
  const float* w2 = q_n > 2 ? w0 + 2 * ldw : w0;
  const float* w3 = q_n > 3 ? w0 + 3 * ldw : w0;
  const float* w4 = q_n > 4 ? w0 + 4 * ldw : w0;
  const float* w5 = q_n > 5 ? w0 + 5 * ldw : w0;
  const float* w6 = q_n > 6 ? w0 + 6 * ldw : w0;
  const float* w7 = q_n > 7 ? w0 + 7 * ldw : w0;
  vf s0 = vzero(), s1 = vzero(), s2 = vzero(), s3 = vzero(), s4 = vzero(), s5 = vzero(), s6 = vzero(), s7 = vzero();
  int64_t k = 0;
  for (; k + W <= K; k += W) {
    const vf a = vload(A + k);
    s0 = vfmadd(a, vload(w0 + k), s0);
    s1 = vfmadd(a, vload(w1 + k), s1);
    s2 = vfmadd(a, vload(w2 + k), s2);
    s3 = vfmadd(a, vload(w3 + k), s3);
    s4 = vfmadd(a, vload(w4 + k), s4);
    s5 = vfmadd(a, vload(w5 + k), s5);
    s6 = vfmadd(a, vload(w6 + k), s6);
    s7 = vfmadd(a, vload(w7 + k), s7);
  }
  if (k < K) {
    const int n = static_cast<int>(K - k);
    const vf a = vload_n(A + k, n);
    s0 = vfmadd(a, vload_n(w0 + k, n), s0);
    s1 = vfmadd(a, vload_n(w1 + k, n), s1);
    s2 = vfmadd(a, vload_n(w2 + k, n), s2);
    s3 = vfmadd(a, vload_n(w3 + k, n), s3);
    s4 = vfmadd(a, vload_n(w4 + k, n), s4);
    s5 = vfmadd(a, vload_n(w5 + k, n), s5);
    s6 = vfmadd(a, vload_n(w6 + k, n), s6);
    s7 = vfmadd(a, vload_n(w7 + k, n), s7);
  }
  const vf acc[8] = {s0, s1, s2, s3, s4, s5, s6, s7};
  const vf v = reduce8(acc);
  if (q_n == 8) {
    vstore(C + c0, init ? vadd(vload(init + c0), v) : v);
  } else {
    vstore_n(C + c0, init ? vadd(vload_n(init + c0, q_n), v) : v, q_n);
  }
}

void rowdot_row_avx2(const float* A, const float* W_, int64_t ldw, int64_t K, int64_t ncols, const float* init,
                     float* C) {
  for (int64_t c0 = 0; c0 < ncols; c0 += 8)
    rowdot_pass8(A, W_, ldw, K, c0, ncols - c0 < 8 ? static_cast<int>(ncols - c0) : 8, init, C);
}
#endif

#if defined(__AVX512F__)
// Transposes a 16 x 16 tile: out[k * 16 + c] = row c's element k, for rows c < 16 (src + c * ld,
// the first `kn` elements of each; rows >= nrows and elements >= kn read as zero) and k < kn.
inline void transpose16(const float* src, int64_t ld, int nrows, int kn, float* out) {
  const __mmask16 m = static_cast<__mmask16>(kn >= 16 ? 0xffffu : (1u << kn) - 1u);
  __m512 r[16];
  for (int c = 0; c < 16; ++c) r[c] = c < nrows ? _mm512_maskz_loadu_ps(m, src + c * ld) : _mm512_setzero_ps();
  // Within each 128-bit lane L: t[4q + j] holds rows 4q..4q+3 of column 4L + j.
  __m512 t[16];
  for (int q = 0; q < 4; ++q) {
    const __m512 lo01 = _mm512_unpacklo_ps(r[4 * q], r[4 * q + 1]), hi01 = _mm512_unpackhi_ps(r[4 * q], r[4 * q + 1]);
    const __m512 lo23 = _mm512_unpacklo_ps(r[4 * q + 2], r[4 * q + 3]),
                 hi23 = _mm512_unpackhi_ps(r[4 * q + 2], r[4 * q + 3]);
    t[4 * q] = _mm512_shuffle_ps(lo01, lo23, 0x44);
    t[4 * q + 1] = _mm512_shuffle_ps(lo01, lo23, 0xEE);
    t[4 * q + 2] = _mm512_shuffle_ps(hi01, hi23, 0x44);
    t[4 * q + 3] = _mm512_shuffle_ps(hi01, hi23, 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    // Lanes of v02: [rows 0-3 | 4-7] of columns j and 8 + j; v13 likewise for rows 8-15.
    const __m512 a = _mm512_shuffle_f32x4(t[j], t[4 + j], 0x88), b = _mm512_shuffle_f32x4(t[8 + j], t[12 + j], 0x88);
    const __m512 c = _mm512_shuffle_f32x4(t[j], t[4 + j], 0xDD), d = _mm512_shuffle_f32x4(t[8 + j], t[12 + j], 0xDD);
    const __m512 col[4] = {_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(c, d, 0x88),
                           _mm512_shuffle_f32x4(a, b, 0xDD), _mm512_shuffle_f32x4(c, d, 0xDD)};
    for (int i = 0; i < 4; ++i) {  // col[i] is column 4 * i + j
      const int k = 4 * i + j;
      if (k < kn) _mm512_store_ps(out + k * 16, col[i]);
    }
  }
}
#endif

template <int MR>
void strided_rows(const float* A, int64_t lda, const float* W_, int64_t ldw, int64_t K, int ncols, const float* init,
                  int64_t ldi, float* C, int64_t ldc) {
  vf acc[MR][kRnnNV];
  int nv = (ncols + W - 1) / W;
  const int tail = ncols - (nv - 1) * W;  // lanes of the last vector
  if (nv == kRnnNV && tail == W) {
    accumulate<MR>(
        A, lda, K,
        [&](int64_t k, vf* b) {
          const float* p = W_ + k * ldw;
          for (int v = 0; v < kRnnNV; ++v) b[v] = vload(p + v * W);
        },
        acc);
  } else {
    accumulate<MR>(
        A, lda, K,
        [&](int64_t k, vf* b) {
          const float* p = W_ + k * ldw;
          for (int v = 0; v < kRnnNV; ++v)
            b[v] = v < nv - 1 ? vload(p + v * W) : v == nv - 1 ? vload_n(p + v * W, tail) : vzero();
        },
        acc);
  }
  // Vector v holds min(W, ncols - v * W) columns, as store_block stores them.
  store_block<MR>(acc, ncols, init, ldi, C, ldc);
}

// f(std::integral_constant<int, M>{}) for a run-time M in [1, kSmallBatch]; nothing otherwise.
template <class F>
inline void with_small_rows(int64_t M, F f) {
  static_assert(kSmallBatch == 4, "one case per small-batch row count");
  switch (M) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: break;
  }
}

}  // namespace

void rowdot_matmul(const float* A, int64_t lda, int64_t M, const float* W_, int64_t ldw, int64_t K, int64_t ncols,
                   const float* init, int64_t ldi, float* C, int64_t ldc) {
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
  if (M == 1) return rowdot_row_avx2(A, W_, ldw, K, ncols, init, C);
#endif
  with_small_rows(M, [&](auto mr) { rowdot_rows<decltype(mr)::value>(A, lda, W_, ldw, K, ncols, init, ldi, C, ldc); });
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
void rowdot_sweep(const float* A, const float* W_, int64_t ldw, int64_t K, int64_t rows, const float* init, float* C,
                  bool reverse) {
  // Groups of kBlock rows are taken in reverse order when reverse, each group's rows front to back:
  // the hardware prefetchers follow ascending streams, and reversing at this granularity keeps what
  // the zig-zag is for (the rows the previous step read last, still in L2, are read first). Measured
  // (T50 H256 B1, interleaved): reversing pass by pass cost ~5 %; no reversal at all ~6 %.
  constexpr int64_t kBlock = 64;
  const int64_t nblk = (rows + kBlock - 1) / kBlock;
  for (int64_t i = 0; i < nblk; ++i) {
    const int64_t b0 = (reverse ? nblk - 1 - i : i) * kBlock;
    const int64_t b1 = b0 + kBlock < rows ? b0 + kBlock : rows;
    for (int64_t c0 = b0; c0 < b1; c0 += 8)
      rowdot_pass8(A, W_, ldw, K, c0, b1 - c0 < 8 ? static_cast<int>(b1 - c0) : 8, init, C);
  }
}
#endif

#if defined(__AVX512F__)
void pack_rows16(const float* W_, int64_t ldw, int64_t K, int64_t N, float* P) {
  for (int64_t b = 0; b * 16 < N; ++b) {
    const int nrows = static_cast<int>(N - b * 16 < 16 ? N - b * 16 : 16);
    for (int64_t k = 0; k < K; k += 16)
      transpose16(W_ + b * 16 * ldw + k, ldw, nrows, static_cast<int>(K - k < 16 ? K - k : 16),
                  P + b * 16 * K + k * 16);
  }
}

namespace {

// One block of 16 W rows: lane c of the result = dot(A, W row c) in rowdot_rows<1>'s order. Lane c of
// accumulator s sums k = s, s + 16, ... in order (rowdot's lane s of row c), and the 16 accumulators
// are added in vreduce_add's tree (lane l with l ^ 8, then ^ 4, ^ 2, ^ 1), which is the same
// arithmetic on vertical adds: no horizontal reduction, and one vector of 16 outputs per block.
inline vf rowdot16_block(const float* A, const float* P, int64_t K) {
  vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero(), a4 = vzero(), a5 = vzero(), a6 = vzero(), a7 = vzero();
  vf a8 = vzero(), a9 = vzero(), a10 = vzero(), a11 = vzero(), a12 = vzero(), a13 = vzero(), a14 = vzero(),
     a15 = vzero();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const float* p = P + k * 16;
    const float* x = A + k;
    a0 = vfmadd(vset1(x[0]), vload(p), a0);
    a1 = vfmadd(vset1(x[1]), vload(p + 16), a1);
    a2 = vfmadd(vset1(x[2]), vload(p + 32), a2);
    a3 = vfmadd(vset1(x[3]), vload(p + 48), a3);
    a4 = vfmadd(vset1(x[4]), vload(p + 64), a4);
    a5 = vfmadd(vset1(x[5]), vload(p + 80), a5);
    a6 = vfmadd(vset1(x[6]), vload(p + 96), a6);
    a7 = vfmadd(vset1(x[7]), vload(p + 112), a7);
    a8 = vfmadd(vset1(x[8]), vload(p + 128), a8);
    a9 = vfmadd(vset1(x[9]), vload(p + 144), a9);
    a10 = vfmadd(vset1(x[10]), vload(p + 160), a10);
    a11 = vfmadd(vset1(x[11]), vload(p + 176), a11);
    a12 = vfmadd(vset1(x[12]), vload(p + 192), a12);
    a13 = vfmadd(vset1(x[13]), vload(p + 208), a13);
    a14 = vfmadd(vset1(x[14]), vload(p + 224), a14);
    a15 = vfmadd(vset1(x[15]), vload(p + 240), a15);
  }
  if (k < K) {  // the tail: phases s < K - k get one more term (rowdot's masked last load)
    const int n = static_cast<int>(K - k);
    const float* p = P + k * 16;
    const float* x = A + k;
    a0 = vfmadd(vset1(x[0]), vload(p), a0);
    if (n > 1) a1 = vfmadd(vset1(x[1]), vload(p + 16), a1);
    if (n > 2) a2 = vfmadd(vset1(x[2]), vload(p + 32), a2);
    if (n > 3) a3 = vfmadd(vset1(x[3]), vload(p + 48), a3);
    if (n > 4) a4 = vfmadd(vset1(x[4]), vload(p + 64), a4);
    if (n > 5) a5 = vfmadd(vset1(x[5]), vload(p + 80), a5);
    if (n > 6) a6 = vfmadd(vset1(x[6]), vload(p + 96), a6);
    if (n > 7) a7 = vfmadd(vset1(x[7]), vload(p + 112), a7);
    if (n > 8) a8 = vfmadd(vset1(x[8]), vload(p + 128), a8);
    if (n > 9) a9 = vfmadd(vset1(x[9]), vload(p + 144), a9);
    if (n > 10) a10 = vfmadd(vset1(x[10]), vload(p + 160), a10);
    if (n > 11) a11 = vfmadd(vset1(x[11]), vload(p + 176), a11);
    if (n > 12) a12 = vfmadd(vset1(x[12]), vload(p + 192), a12);
    if (n > 13) a13 = vfmadd(vset1(x[13]), vload(p + 208), a13);
    if (n > 14) a14 = vfmadd(vset1(x[14]), vload(p + 224), a14);
  }
  a0 = vadd(a0, a8), a1 = vadd(a1, a9), a2 = vadd(a2, a10), a3 = vadd(a3, a11);
  a4 = vadd(a4, a12), a5 = vadd(a5, a13), a6 = vadd(a6, a14), a7 = vadd(a7, a15);
  a0 = vadd(a0, a4), a1 = vadd(a1, a5), a2 = vadd(a2, a6), a3 = vadd(a3, a7);
  a0 = vadd(a0, a2), a1 = vadd(a1, a3);
  return vadd(a0, a1);
}

}  // namespace

void rowdot_packed(const float* A, const float* P, int64_t K, int64_t ncols, const float* init, float* C,
                   bool reverse) {
  const int64_t nb = (ncols + 15) / 16;
  for (int64_t i = 0; i < nb; ++i) {
    const int64_t b = reverse ? nb - 1 - i : i;
    const vf v = rowdot16_block(A, P + b * 16 * K, K);
    const int n = static_cast<int>(ncols - b * 16 < 16 ? ncols - b * 16 : 16);
    float* c = C + b * 16;
    if (n == 16)
      vstore(c, init ? vadd(vload(init + b * 16), v) : v);
    else
      vstore_n(c, init ? vadd(vload_n(init + b * 16, n), v) : v, n);
  }
}
#endif

void strided_matmul(const float* A, int64_t lda, int64_t M, const float* W_, int64_t ldw, int64_t K, int ncols,
                    const float* init, int64_t ldi, float* C, int64_t ldc) {
  with_small_rows(M, [&](auto mr) { strided_rows<decltype(mr)::value>(A, lda, W_, ldw, K, ncols, init, ldi, C, ldc); });
}

const float* aligned_rows(const float* W_, int64_t rows, int64_t cols, int64_t ld, int64_t steps, AlignedBuffer& buf,
                          int64_t& ld_out) {
  ld_out = ld;
  const bool aligned = reinterpret_cast<std::uintptr_t>(W_) % 64 == 0 && (ld * sizeof(float)) % 64 == 0;
  // The copy reads and writes W once: worth it from a few steps on (each step reads W once).
  if (aligned || steps < 4) return W_;
  const int64_t lda = (cols + 15) / 16 * 16;
  buf.reset(static_cast<size_t>(rows * lda));
  float* dst = buf.data();
  parallel_for_work(rows, cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      std::memcpy(dst + r * lda, W_ + r * ld, sizeof(float) * cols);
      for (int64_t c = cols; c < lda; ++c) dst[r * lda + c] = 0.0f;
    }
  });
  ld_out = lda;
  return dst;
}

void column_sums(const float* X, int64_t R, int64_t N, float* out) {
  constexpr int64_t kCols = 4 * W;
  int64_t nchunks = (N + kCols - 1) / kCols;
  parallel_for_work(nchunks, R * kCols, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      int64_t n0 = q * kCols;
      int nc = static_cast<int>(N - n0 < kCols ? N - n0 : kCols);
      vf acc[4] = {vzero(), vzero(), vzero(), vzero()};
      for (int64_t r = 0; r < R; ++r) {
        const float* x = X + r * N + n0;
        for (int v = 0; v < 4; ++v) {
          int n = nc - v * W;
          if (n <= 0) break;
          acc[v] = vadd(acc[v], n >= W ? vload(x + v * W) : vload_n(x + v * W, n));
        }
      }
      for (int v = 0; v < 4; ++v) {
        int n = nc - v * W;
        if (n <= 0) break;
        if (n >= W)
          vstore(out + n0 + v * W, acc[v]);
        else
          vstore_n(out + n0 + v * W, acc[v], n);
      }
    }
  });
}

}  // namespace rnn_detail

void rnn_activation(int kind, const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i < n; i += W) {
    int m = n - i < W ? static_cast<int>(n - i) : W;
    vf v = m == W ? vload(x + i) : vload_n(x + i, m);
    vf r = kind == 0 ? vsigmoid(v) : kind == 1 ? vtanh(v) : vexp(v);
    if (m == W)
      vstore(y + i, r);
    else
      vstore_n(y + i, r, m);
  }
}

void rnn_dynamic_cell(int mode, int64_t H, const float* a, const float* r, float* c, float* h) {
  for (int64_t j = 0; j < H; j += W) {
    const int m = H - j < W ? static_cast<int>(H - j) : W;
    auto ld = [m](const float* p) { return m == W ? vload(p) : vload_n(p, m); };
    vf hn;
    if (mode == 0) {
      const vf i = vsigmoid(vadd(ld(a + j), ld(r + j)));
      const vf f = vsigmoid(vadd(ld(a + H + j), ld(r + H + j)));
      const vf z = vtanh(vadd(ld(a + 2 * H + j), ld(r + 2 * H + j)));
      const vf o = vsigmoid(vadd(ld(a + 3 * H + j), ld(r + 3 * H + j)));
      const vf cn = vadd(vmul(f, ld(c + j)), vmul(i, z));
      if (m == W)
        vstore(c + j, cn);
      else
        vstore_n(c + j, cn, m);
      hn = vmul(o, vtanh(cn));
    } else {
      const vf rg = vsigmoid(vadd(ld(a + j), ld(r + j)));
      const vf u = vsigmoid(vadd(ld(a + H + j), ld(r + H + j)));
      const vf n = vtanh(vadd(ld(a + 2 * H + j), vmul(rg, ld(r + 2 * H + j))));
      hn = vadd(vmul(vsub(vset1(1.0f), u), n), vmul(u, ld(h + j)));
    }
    if (m == W)
      vstore(h + j, hn);
    else
      vstore_n(h + j, hn, m);
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
