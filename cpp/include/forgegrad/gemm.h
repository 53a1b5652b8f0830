// SGEMM: C = alpha * op(A) * op(B) + beta * C, row-major, float32.
//   op(A) is M x K (A is M x K, or K x M when trans_a), op(B) is K x N (B is K x N, or N x K when
//   trans_b); lda/ldb/ldc are row strides in elements. beta == 0 ignores C's old contents (NaNs
//   included); alpha == 0 or K == 0 only scales C by beta. Multithreaded; bit-identical results for
//   any thread count. May be called from inside another kernel's parallel region (it then runs on
//   the calling thread).
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

FG_KERNEL(void, sgemm,
          (bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc),
          (trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))

// Weight-stationary products (a layer's weight reused call after call): op(B) (K x N) packed once
// into the layout sgemm's packed path uses, so calls skip packing it. The layout belongs to the
// ISA that packed it (use the buffer only while active_isa() is the same). sgemm_prepacked_b
// computes exactly what sgemm computes with B (shapes sgemm runs without packing read B itself).
FG_KERNEL(int64_t, sgemm_prepacked_b_floats, (int64_t N, int64_t K), (N, K))
FG_KERNEL(void, sgemm_prepack_b, (bool trans_b, int64_t N, int64_t K, const float* B, int64_t ldb, float* dst),
          (trans_b, N, K, B, ldb, dst))
// act (an fg::ActOp, -1: none; act_alpha: leaky_relu's slope) is applied to C at the end, tile by
// tile as each is finished where the path allows: the same bits as act_forward over C afterwards.
// col_bias (null, or N floats): C = alpha * op(A) op(B) + col_bias[j], C's old contents and beta
// ignored; the same bits as C filled with the bias rows and beta = 1, but the packed path writes
// each tile's bias rows just before the tile (in L1) instead of a pass over all of C first.
FG_KERNEL(void, sgemm_prepacked_b,
          (bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, const float* b_prepacked, float beta, float* C, int64_t ldc, int act,
           float act_alpha, const float* col_bias),
          (trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, b_prepacked, beta, C, ldc, act, act_alpha, col_bias))

// What a Linear's products need around them, done by the GEMM as it goes instead of as passes over
// its operands afterwards. Every field is optional; the same bits as those passes (sgemm, then the
// bias, activation and column sums kernels) on every path.
struct GemmEpilogue {
  int act = -1;  // an fg::ActOp applied to C as each tile is finished (-1: none); act_alpha: leaky_relu's slope
  float act_alpha = 0.0f;
  const float* col_bias = nullptr;  // N floats: C = op(A) op(B) + col_bias[j]
  float* a_sums = nullptr;          // M floats: a_sums[i] = the sum of op(A)'s row i, k in order, from 0
                            // (the bias gradient of dY^T X: column_sums of dY, the same bits)
};

// C = op(A) op(B) with the epilogue ep (alpha 1, beta 0); b_prepacked as in sgemm_prepacked_b.
FG_KERNEL(void, sgemm_epilogue,
          (bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
           int64_t ldb, const float* b_prepacked, float* C, int64_t ldc, const GemmEpilogue& ep),
          (trans_a, trans_b, M, N, K, A, lda, B, ldb, b_prepacked, C, ldc, ep))

// `batch` independent SGEMMs of one shape: matrix b of A starts at A + b * stride_a (likewise B,
// C). A stride of 0 broadcasts one matrix to every batch entry (A or B only; C entries must not
// overlap). Small matrices are spread over threads by batch entry, large ones split inside each
// SGEMM; either way the result is the same as `batch` calls of sgemm.
FG_KERNEL(void, sgemm_batched,
          (bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
           int64_t ldc, int64_t stride_c),
          (trans_a, trans_b, batch, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c))

// Weight-only bfloat16 Linear (cpp/kernels/per_isa/linear_bf16.cpp): y (M, N) = x (M, K) float32
// times W^T, W (N, K) bfloat16 bit patterns (uint16), plus bias[n] (bias may be null). The same bits
// as sgemm_prepacked_b over the widened weight with col_bias = bias (what a float32 Linear runs).
FG_KERNEL(void, linear_bf16w,
          (const float* x, int64_t M, int64_t K, const uint16_t* w, const float* bias, float* y, int64_t N),
          (x, M, K, w, bias, y, N))

// The oracle: plain loops with a double accumulator. For tests and odd cases; never fast.
void sgemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace fg
