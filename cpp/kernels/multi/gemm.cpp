// SGEMM, compiled per ISA. Placeholder-quality driver: rows of C are split across threads and
// each row is accumulated k by k with vector FMAs over j. (The packed, cache-blocked BLIS-style
// driver replaces this.)
#include "forgegrad/gemm.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  parallel_for(M, 4, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* c = C + i * ldc;
      for (int64_t j = 0; j < N; ++j) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
      for (int64_t k = 0; k < K; ++k) {
        float a = alpha * (trans_a ? A[k * lda + i] : A[i * lda + k]);
        if (!trans_b) {
          const float* b = B + k * ldb;
          vf va = vset1(a);
          int64_t j = 0;
          for (; j + W <= N; j += W) vstore(c + j, vfmadd(va, vload(b + j), vload(c + j)));
          for (; j < N; ++j) c[j] += a * b[j];
        } else {
          for (int64_t j = 0; j < N; ++j) c[j] += a * B[j * ldb + k];
        }
      }
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
