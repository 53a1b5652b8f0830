// SGEMM: C = alpha * op(A) * op(B) + beta * C, row-major, float32.
//   op(A) is M x K (A is M x K, or K x M when trans_a), op(B) is K x N (B is K x N, or N x K when
//   trans_b); lda/ldb/ldc are row strides in elements. beta == 0 ignores C's old contents (NaNs
//   included). Multithreaded; bit-identical results for any thread count.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

FG_KERNEL(void, sgemm,
          (bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc),
          (trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))

// The oracle: plain loops with a double accumulator. For tests and odd cases; never fast.
void sgemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                     int64_t ldc);

}  // namespace fg
