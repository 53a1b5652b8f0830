// SGEMM for skinny shapes (one side <= kSkinnyMax, i.e. matrix-vector-like products), compiled
// per ISA. Packing B (the big operand) would cost as much as the product itself here, so B is read
// in place and only the small operand (m <= 8 rows of A) is copied into a contiguous buffer:
//   B rows contiguous (csb == 1): "axpy" form, vectors along n, acc[i][j] += A[i][k] * B[k][j];
//   B columns contiguous (rsb == 1): "dot" form, vectors along k, then a fixed-order lane sum.
// Each output element has one fixed operation sequence, so threads (split over n) cannot change it.
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "gemm_internal.h"

namespace fg {
namespace FG_ISA_NS {
namespace gemm_detail {

namespace {

// Vectors per column chunk in the axpy form: as many as the accumulator budget allows for M rows
// (wide chunks read long contiguous runs of each B row; M = 1 is a GEMV streaming B once).
constexpr int kAxpyAccs = W == 16 ? 16 : 8;
constexpr int axpy_nv(int M) { return kAxpyAccs / M < 1 ? 1 : kAxpyAccs / M; }

// alpha * acc (+ beta * c) with one explicit rounding sequence. Written as plain `beta * c + r`
// the compiler may contract either product into an FMA, and differently in different template
// instances, which would make results depend on how columns were split over threads.
inline float combine(float acc, float alpha, float beta, const float* c) {
  float r = alpha * acc;
  if (beta == 0.0f) return r;
#if defined(__FMA__)
  return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(beta), _mm_set_ss(*c), _mm_set_ss(r)));
#else
  return beta * *c + r;  // no FMA instructions in this build: nothing to contract
#endif
}

// Axpy form, M rows: C[:, j0:j0+cw] with cw <= axpy_nv(M) * W. ak is A packed k-major (ak[k*M + i]).
template <int M, bool kTail, int kAxpyNV = axpy_nv(M)>
void axpy_chunk(int cw, int64_t K, float alpha, const float* __restrict ak, const float* __restrict b, int64_t rsb,
                float beta, float* c, int64_t rsc, int64_t csc) {
  vf acc[M][kAxpyNV];
#pragma GCC unroll 8
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < kAxpyNV; ++v) acc[i][v] = vzero();
  for (int64_t k = 0; k < K; ++k) {
    const float* bk = b + k * rsb;
    vf bv[kAxpyNV];
#pragma GCC unroll 16
    for (int v = 0; v < kAxpyNV; ++v) {
      if (kTail) {
        int n = cw - v * W;
        bv[v] = n >= W ? vload(bk + v * W) : n > 0 ? vload_n(bk + v * W, n) : vzero();
      } else {
        bv[v] = vload(bk + v * W);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      vf av = vset1(ak[k * M + i]);
#pragma GCC unroll 16
      for (int v = 0; v < kAxpyNV; ++v) acc[i][v] = vfmadd(av, bv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < M; ++i) {
    float tmp[kAxpyNV * W];
    for (int v = 0; v < kAxpyNV; ++v) vstore(tmp + v * W, acc[i][v]);
    float* ci = c + i * rsc;
    for (int j = 0; j < cw; ++j) ci[j * csc] = combine(tmp[j], alpha, beta, ci + j * csc);
  }
}

template <int M>
void axpy_cols(int64_t j0, int64_t j1, int64_t K, float alpha, const float* ak, const float* B, int64_t rsb, float beta,
               float* C, int64_t rsc, int64_t csc) {
  constexpr int CW = axpy_nv(M) * W;
  int64_t j = j0;
  for (; j + CW <= j1; j += CW) axpy_chunk<M, false>(CW, K, alpha, ak, B + j, rsb, beta, C + j * csc, rsc, csc);
  if (j < j1) axpy_chunk<M, true>(static_cast<int>(j1 - j), K, alpha, ak, B + j, rsb, beta, C + j * csc, rsc, csc);
}

// Dot form: RI rows of A (contiguous, length K, row stride K) times RJ columns of B (each
// contiguous along k, column stride csb).
template <int RI, int RJ>
void dot_block(int64_t K, float alpha, const float* __restrict a, const float* __restrict b, int64_t csb, float beta,
               float* c, int64_t rsc, int64_t csc) {
  vf acc[RI][RJ];
  dot_accumulate<RI, RJ>(
      K, a, b, csb, [](const float* p) { return vload(p); }, [](const float* p, int n) { return vload_n(p, n); }, acc);
  for (int i = 0; i < RI; ++i)
    for (int j = 0; j < RJ; ++j) {
      float* cij = c + i * rsc + j * csc;
      *cij = combine(vreduce_add(acc[i][j]), alpha, beta, cij);
    }
}

// Columns [j0, j1) of C for RI rows of A, kDotCols columns of B per dot_block.
// The columns are cut into S (dot_cols_per_block) equal runs and each block takes the i-th column of
// every run, so B (a Linear layer's (out, in) weight at decode, a column of op(B) = a row of it) is
// read as kDotCols long sequential streams (a quarter of the range each) instead of kDotCols
// adjacent rows at a time. With 768-wide rows (3 KB) adjacent blocks start kDotCols new short
// streams every 12 KB, which the hardware prefetchers pick up only after a few misses each.
// Measured at batch 1 on Zen 4 (AVX2, interleaved, one thread, weight streamed from DRAM): 0.65-0.8x
// the time of adjacent blocks for 768- and 1024-wide rows (GPT-2's tied 50257 x 768 head: 12.6 ->
// 8.8 ms), ~0.9x for 2816- and 3072-wide ones. Each element's arithmetic is dot_block's whichever
// block it is in, so the results are the same bits as the adjacent order's, and do not depend on
// the thread count (which columns share a block never changes how a column is computed). The same
// holds with AVX-512 (Zen 4, one thread, weights streamed from memory by rotating through 64 MB of
// them): 0.65-0.9x the time of adjacent blocks from 128 to 4864 outputs, and LM heads of 32k-262k
// rows at 0.65-0.72x (GPT-2's 50257 x 768: 7.4 -> 4.9 ms).
//
template <int RI>
void dot_cols(int64_t j0, int64_t j1, int64_t K, float alpha, const float* a, const float* B, int64_t csb, float beta,
              float* C, int64_t rsc, int64_t csc) {
  constexpr int S = dot_cols_per_block<RI>();
#if defined(__AVX2__)  // AVX-512 builds too
  const int64_t run = (j1 - j0) / S;
  for (int64_t i = 0; i < run; ++i)
    dot_block<RI, S>(K, alpha, a, B + (j0 + i) * csb, run * csb, beta, C + (j0 + i) * csc, rsc, run * csc);
  int64_t j = j0 + S * run;
#else
  int64_t j = j0;
  for (; j + S <= j1; j += S) dot_block<RI, S>(K, alpha, a, B + j * csb, csb, beta, C + j * csc, rsc, csc);
#endif
  for (; j < j1; ++j) dot_block<RI, 1>(K, alpha, a, B + j * csb, csb, beta, C + j * csc, rsc, csc);
}

template <int M>
void axpy_dispatch(int m, int64_t j0, int64_t j1, int64_t K, float alpha, const float* ak, const float* B, int64_t rsb,
                   float beta, float* C, int64_t rsc, int64_t csc) {
  if constexpr (M > 1) {
    if (m < M) return axpy_dispatch<M - 1>(m, j0, j1, K, alpha, ak, B, rsb, beta, C, rsc, csc);
  }
  axpy_cols<M>(j0, j1, K, alpha, ak, B, rsb, beta, C, rsc, csc);
}

}  // namespace

void sgemm_skinny(int64_t m, int64_t n, int64_t K, float alpha, const float* A, int64_t rsa, int64_t csa,
                  const float* B, int64_t rsb, int64_t csb, float beta, float* C, int64_t rsc, int64_t csc) {
  const bool axpy = csb == 1 && !(rsb == 1 && n == 1);
  // The small operand, packed: k-major for the axpy form, row-major (rows of length K) for dots.
  // The dot form reads A in place when it already is that layout (a batch-1 layer's input row):
  // no allocation and no copy on the GEMV path, where each costs a noticeable part of the call.
  AlignedBuffer apack;
  const float* ap = A;
  if (axpy || csa != 1 || (m > 1 && rsa != K)) {
    apack.reset(static_cast<std::size_t>(m * K));
    float* p = apack.data();
    for (int64_t i = 0; i < m; ++i)
      for (int64_t k = 0; k < K; ++k) p[axpy ? k * m + i : i * K + k] = A[i * rsa + k * csa];
    ap = p;
  }
  // Columns per thread chunk: enough work to be worth a fork/join (~512k multiply-adds, as in
  // the packed path; on a busy machine a thread that must be woken can cost far more), less where the
  // workers are awake (split_work: a frozen forward's first Linear after its convs).
  const int64_t kMinWork = split_work(int64_t(1) << 19);
  int64_t grain = (kMinWork + m * K - 1) / (m * K);
  if (axpy) {
    const int64_t cw = axpy_nv(static_cast<int>(m)) * W;  // the chunk width axpy_cols<m> uses
    grain = (grain + cw - 1) / cw * cw;
    int64_t chunks = (n + cw - 1) / cw;
    parallel_for(chunks, (grain + cw - 1) / cw, [&](int64_t c0, int64_t c1) {
      axpy_dispatch<kSkinnyMax>(static_cast<int>(m), c0 * cw, c1 * cw < n ? c1 * cw : n, K, alpha, ap, B, rsb, beta, C,
                                rsc, csc);
    });
  } else {
    parallel_for(n, grain, [&](int64_t j0, int64_t j1) {
      // rows of A in groups of up to 4, so that B streams from memory once per group (a batch of 2
      // or 3 at decode read every weight 2 or 3 times one row at a time); each output's arithmetic is
      // the same whichever rows share a pass
      int64_t i = 0;
      for (; i + 4 <= m; i += 4) dot_cols<4>(j0, j1, K, alpha, ap + i * K, B, csb, beta, C + i * rsc, rsc, csc);
      const float* ai = ap + i * K;
      float* ci = C + i * rsc;
      if (m - i == 3) dot_cols<3>(j0, j1, K, alpha, ai, B, csb, beta, ci, rsc, csc);
      if (m - i == 2) dot_cols<2>(j0, j1, K, alpha, ai, B, csb, beta, ci, rsc, csc);
      if (m - i == 1) dot_cols<1>(j0, j1, K, alpha, ai, B, csb, beta, ci, rsc, csc);
    });
  }
}

}  // namespace gemm_detail
}  // namespace FG_ISA_NS
}  // namespace fg
