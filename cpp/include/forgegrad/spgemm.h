// Sparse @ sparse (SpGEMM) on CSR matrices: C (M, N) = A (M, K) @ B (K, N), int64 indices, float32 or float64
// values (cpp/kernels/spgemm.cpp, bound as forgegrad._C.sparse.spgemm).
//
// Gustavson's row-by-row product in two passes over the same plan: spgemm_symbolic counts each output row's
// distinct columns (C's crow), the caller allocates C's col and values once, and spgemm_numeric fills them. Each
// row of C has sorted, distinct columns; every structural product is kept (a sum that cancels to 0 stays as an
// explicit 0). The products are rounded to the values' type (a_ik * b_kj in T), then summed in double in a fixed
// order: the order of A's nonzeros in the row, and for each, the order of B's nonzeros in row k, starting from
// +0.0. Rows are independent, so the bits do not depend on how rows are split over threads, nor on which
// accumulator (dense array or hash) a block of rows uses. The inputs are trusted: the binding checks every index.
#pragma once
#include <cstdint>
#include <vector>

namespace fg {

struct CsrPattern {
  const int64_t* crow;  // (rows + 1), crow[0] == 0, non-decreasing
  const int64_t* col;   // (crow[rows]), each in [0, cols)
  int64_t rows, cols;
};

// How C's rows are cut into tasks (contiguous row blocks of about equal numbers of products), and each row's
// number of products (an upper bound of its nonzeros). Made once, used by both passes.
struct SpgemmPlan {
  std::vector<int64_t> products;    // (M + 1): products[i] = the products of rows < i (a prefix sum)
  std::vector<int64_t> task_start;  // (ntasks + 1): first row of each task
};

// Throws std::overflow_error when the number of products does not fit in int64.
SpgemmPlan spgemm_plan(const CsrPattern& a, const CsrPattern& b);

// Fills out_crow (M + 1) with C's row offsets; returns C's nnz.
int64_t spgemm_symbolic(const SpgemmPlan& plan, const CsrPattern& a, const CsrPattern& b, int64_t* out_crow);

// Fills out_col and out_val (out_crow[M] each) given spgemm_symbolic's out_crow. T: float or double.
template <class T>
void spgemm_numeric(const SpgemmPlan& plan, const CsrPattern& a, const T* a_val, const CsrPattern& b, const T* b_val,
                    const int64_t* out_crow, int64_t* out_col, T* out_val);

}  // namespace fg
