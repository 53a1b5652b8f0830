// Sparse CSR kernels of forgegrad.sparse (bound as forgegrad._C.sparse, cpp/bindings/bind_sparse.cpp).
//
//   spmm_csr_f32:  C (M, N) = A (M, K, CSR: crow (M+1), col (nnz), val (nnz)) @ B (K, N), all row-major.
//   sddmm_csr_f32: out[p] = dot(G[i, :], B[col[p], :]) for every nonzero p of row i (the sampled dense-dense
//                  product G @ B^T at A's pattern: the gradient of A's values in C = A @ B).
//   csr_transpose_pattern: the pattern of A^T (K rows) by a stable counting sort of A's nonzeros by column:
//                  out_crow (K+1), out_col (nnz: A's row of each), perm (nnz: A's index of each); serial, O(nnz),
//                  no atomics, and the order within each row of A^T is A's row order (deterministic).
//
// Both are parallel over fixed blocks of rows (tasks claimed by the pool's threads); each output element is
// owned by one row, so the work split never changes the arithmetic. The arithmetic is written without fused
// multiply-adds (the per-ISA files build with -ffp-contract=off) and with a fixed association: C[i, j] is
// ((0 + v0*b0[j]) + v1*b1[j]) + ... in the row's nonzero order, and a dot product sums 8 interleaved lanes that
// are then combined in one fixed tree. The scalar, AVX2 and AVX-512 builds vectorise these loops differently
// but compute the same sums in the same order: the same bits on every ISA and at any thread count.
#include <cstdint>
#include <cstring>

#include "forgegrad/parallel.h"

namespace fg {
namespace FG_ISA_NS {

namespace {

constexpr int64_t kRowsPerTask = 16;

// c[0:n] = c + v0*b0 + v1*b1 + v2*b2 + v3*b3, added left to right (four nonzeros per pass over c: a quarter of
// the loads and stores of c that one nonzero at a time would make, the same sums).
inline void axpy4(float* __restrict c, const float* __restrict b0, const float* __restrict b1,
                  const float* __restrict b2, const float* __restrict b3, float v0, float v1, float v2, float v3,
                  int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    float acc = c[j];
    acc = acc + v0 * b0[j];
    acc = acc + v1 * b1[j];
    acc = acc + v2 * b2[j];
    acc = acc + v3 * b3[j];
    c[j] = acc;
  }
}

inline void axpy1(float* __restrict c, const float* __restrict b0, float v0, int64_t n) {
  for (int64_t j = 0; j < n; ++j) c[j] = c[j] + v0 * b0[j];
}

// sum(x[j] * y[j]) over 8 interleaved partial sums, combined as ((s0+s4)+(s2+s6)) + ((s1+s5)+(s3+s7)).
inline float dot8(const float* __restrict x, const float* __restrict y, int64_t n) {
  float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) s[k] = s[k] + x[j + k] * y[j + k];
  for (int k = 0; j < n; ++j, ++k) s[k] = s[k] + x[j] * y[j];
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

}  // namespace

void spmm_csr_f32(const int64_t* crow, const int64_t* col, const float* val, int64_t m, const float* b, int64_t n,
                  float* c) {
  const int64_t ntasks = (m + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t nnz = crow[m];
  const int64_t work = (nnz / (ntasks > 0 ? ntasks : 1) + kRowsPerTask) * (n > 0 ? n : 1);
  parallel_tasks(ntasks, work, [&](int64_t task) {
    const int64_t r0 = task * kRowsPerTask, r1 = r0 + kRowsPerTask < m ? r0 + kRowsPerTask : m;
    for (int64_t i = r0; i < r1; ++i) {
      float* ci = c + i * n;
      std::memset(ci, 0, sizeof(float) * static_cast<size_t>(n));
      int64_t p = crow[i];
      const int64_t e = crow[i + 1];
      for (; p + 4 <= e; p += 4)
        axpy4(ci, b + col[p] * n, b + col[p + 1] * n, b + col[p + 2] * n, b + col[p + 3] * n, val[p], val[p + 1],
              val[p + 2], val[p + 3], n);
      for (; p < e; ++p) axpy1(ci, b + col[p] * n, val[p], n);
    }
  });
}

void sddmm_csr_f32(const int64_t* crow, const int64_t* col, int64_t m, const float* g, const float* b, int64_t n,
                   float* out) {
  const int64_t ntasks = (m + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t nnz = crow[m];
  const int64_t work = (nnz / (ntasks > 0 ? ntasks : 1) + 1) * (n > 0 ? n : 1);
  parallel_tasks(ntasks, work, [&](int64_t task) {
    const int64_t r0 = task * kRowsPerTask, r1 = r0 + kRowsPerTask < m ? r0 + kRowsPerTask : m;
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t p = crow[i]; p < crow[i + 1]; ++p) out[p] = dot8(g + i * n, b + col[p] * n, n);
  });
}

void csr_transpose_pattern(const int64_t* crow, const int64_t* col, int64_t m, int64_t k, int64_t* out_crow,
                           int64_t* out_col, int64_t* perm) {
  const int64_t nnz = crow[m];
  std::memset(out_crow, 0, sizeof(int64_t) * static_cast<size_t>(k + 1));
  for (int64_t p = 0; p < nnz; ++p) ++out_crow[col[p] + 1];
  for (int64_t j = 0; j < k; ++j) out_crow[j + 1] += out_crow[j];
  // next free slot of each row of A^T: out_crow[j] advanced in place, then restored by one shift
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = crow[i]; p < crow[i + 1]; ++p) {
      const int64_t q = out_crow[col[p]]++;
      out_col[q] = i;
      perm[q] = p;
    }
  for (int64_t j = k; j > 0; --j) out_crow[j] = out_crow[j - 1];
  out_crow[0] = 0;
}

}  // namespace FG_ISA_NS
}  // namespace fg
