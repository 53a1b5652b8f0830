// forgegrad._C.sparse: the CSR float32 kernels of cpp/kernels/per_isa/spmm.cpp (forgegrad.sparse's SpMM and its
// backward). Every argument is checked here, the index arrays included (crow starts at 0, never decreases and
// ends at nnz; every column index is in [0, K)): a bad CSR raises a Python error instead of reading out of bounds.
#include <string>

#include "forgegrad/bindings.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/py_array.h"
#include "forgegrad/spgemm.h"

namespace fg {

FG_KERNEL(void, spmm_csr_f32,
          (const int64_t* crow, const int64_t* col, const float* val, int64_t m, const float* b, int64_t n, float* c),
          (crow, col, val, m, b, n, c))
FG_KERNEL(void, sddmm_csr_f32,
          (const int64_t* crow, const int64_t* col, int64_t m, const float* g, const float* b, int64_t n, float* out),
          (crow, col, m, g, b, n, out))

FG_KERNEL(void, csr_transpose_pattern,
          (const int64_t* crow, const int64_t* col, int64_t m, int64_t k, int64_t* out_crow, int64_t* out_col,
           int64_t* perm),
          (crow, col, m, k, out_crow, out_col, perm))

}  // namespace fg

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

std::string str(int64_t v) { return std::to_string(v); }

// Checks a CSR pattern of m rows and ncols columns: crow (m + 1) int64 from 0, non-decreasing, to nnz = len(col);
// every col in [0, ncols). Returns nnz. prefix names the matrix in the messages ("a_" for a_crow_indices).
int64_t check_csr(const char* op, const ArrayArg& crow, const ArrayArg& col, int64_t m, int64_t ncols,
                  const std::string& prefix = "") {
  const std::string cr_name = prefix + "crow_indices", col_name = prefix + "col_indices",
                    where = std::string(op) + ": ";
  if (crow.dim(0) != m + 1)
    throw py::value_error(where + cr_name + " must have length rows + 1 = " + str(m + 1) + ", got " + str(crow.dim(0)));
  const int64_t* cr = crow.i64();
  const int64_t nnz = col.dim(0);
  if (cr[0] != 0) throw py::value_error(where + cr_name + "[0] must be 0, got " + str(cr[0]));
  for (int64_t i = 0; i < m; ++i)
    if (cr[i + 1] < cr[i])
      throw py::value_error(where + cr_name + " must be non-decreasing, got " + cr_name + "[" + str(i + 1) +
                            "] = " + str(cr[i + 1]) + " < " + cr_name + "[" + str(i) + "] = " + str(cr[i]));
  if (cr[m] != nnz)
    throw py::value_error(where + cr_name + "[-1] must equal the number of " + col_name + " " + str(nnz) + ", got " +
                          str(cr[m]));
  const int64_t* c = col.i64();
  for (int64_t p = 0; p < nnz; ++p)
    if (c[p] < 0 || c[p] >= ncols)
      throw py::index_error(where + col_name + "[" + str(p) + "] = " + str(c[p]) + " is out of range for " +
                            str(ncols) + " columns");
  return nnz;
}

// out (m, n) = A (m, k; crow, col, values) @ dense (k, n).
void spmm(const py::array& crow, const py::array& col, const py::array& values, const py::array& dense,
          const py::array& out) {
  ArrayArg R = fg::bind::i64_arg(crow, "crow_indices", 1), C = fg::bind::i64_arg(col, "col_indices", 1);
  ArrayArg V = fg::bind::f32_arg(values, "values", 1), B = fg::bind::f32_arg(dense, "dense", 2);
  ArrayArg O = fg::bind::f32_arg(out, "out", 2, fg::bind::kContiguous, true);
  const int64_t m = O.dim(0), n = O.dim(1), k = B.dim(0);
  fg::bind::expect_shape(B, "dense", {k, n});
  const int64_t nnz = check_csr("spmm", R, C, m, k);
  fg::bind::expect_shape(V, "values", {nnz});
  fg::bind::check_no_overlap(
      "spmm", {{crow, "crow_indices"}, {col, "col_indices"}, {values, "values"}, {dense, "dense"}}, {{out, "out"}});
  if (m == 0 || n == 0) return;
  py::gil_scoped_release release;
  fg::spmm_csr_f32(R.i64(), C.i64(), V.f32(), m, B.f32(), n, O.f32());
}

// out (nnz,) = (grad @ dense^T) at A's nonzeros: out[p] = dot(grad[i], dense[col[p]]) for p in row i.
void sddmm(const py::array& crow, const py::array& col, const py::array& grad, const py::array& dense,
           const py::array& out) {
  ArrayArg R = fg::bind::i64_arg(crow, "crow_indices", 1), C = fg::bind::i64_arg(col, "col_indices", 1);
  ArrayArg G = fg::bind::f32_arg(grad, "grad", 2), B = fg::bind::f32_arg(dense, "dense", 2);
  ArrayArg O = fg::bind::f32_arg(out, "out", 1, fg::bind::kContiguous, true);
  const int64_t m = G.dim(0), n = G.dim(1), k = B.dim(0);
  fg::bind::expect_shape(B, "dense", {k, n});
  const int64_t nnz = check_csr("sddmm", R, C, m, k);
  fg::bind::expect_shape(O, "out", {nnz});
  fg::bind::check_no_overlap("sddmm", {{crow, "crow_indices"}, {col, "col_indices"}, {grad, "grad"}, {dense, "dense"}},
                             {{out, "out"}});
  if (nnz == 0) return;
  py::gil_scoped_release release;
  fg::sddmm_csr_f32(R.i64(), C.i64(), m, G.f32(), B.f32(), n, O.f32());
}

// The pattern of A^T for A (m rows, ncols columns): out_crow (ncols + 1), out_col (nnz), perm (nnz) with
// A^T's values = values[perm].
void transpose(const py::array& crow, const py::array& col, int64_t ncols, const py::array& out_crow,
               const py::array& out_col, const py::array& perm) {
  ArrayArg R = fg::bind::i64_arg(crow, "crow_indices", 1), C = fg::bind::i64_arg(col, "col_indices", 1);
  ArrayArg OR = fg::bind::i64_arg(out_crow, "out_crow_indices", 1, fg::bind::kContiguous, true);
  ArrayArg OC = fg::bind::i64_arg(out_col, "out_col_indices", 1, fg::bind::kContiguous, true);
  ArrayArg P = fg::bind::i64_arg(perm, "perm", 1, fg::bind::kContiguous, true);
  if (ncols < 0) throw py::value_error("csr_transpose: ncols must be >= 0, got " + str(ncols));
  const int64_t m = R.dim(0) - 1;
  if (m < 0) throw py::value_error("csr_transpose: crow_indices must have at least one entry");
  const int64_t nnz = check_csr("csr_transpose", R, C, m, ncols);
  fg::bind::expect_shape(OR, "out_crow_indices", {ncols + 1});
  fg::bind::expect_shape(OC, "out_col_indices", {nnz});
  fg::bind::expect_shape(P, "perm", {nnz});
  fg::bind::check_no_overlap("csr_transpose", {{crow, "crow_indices"}, {col, "col_indices"}},
                             {{out_crow, "out_crow_indices"}, {out_col, "out_col_indices"}, {perm, "perm"}});
  py::gil_scoped_release release;
  fg::csr_transpose_pattern(R.i64(), C.i64(), m, ncols, OR.i64(), OC.i64(), P.i64());
}

// C = A @ B for A (len(a_crow) - 1, len(b_crow) - 1) and B (len(b_crow) - 1, ncols), both CSR with float32 or
// float64 values of one dtype: (crow (M + 1), col (nnz), values (nnz)), each row's columns sorted and distinct.
py::tuple spgemm(const py::array& a_crow, const py::array& a_col, const py::array& a_values, const py::array& b_crow,
                 const py::array& b_col, const py::array& b_values, int64_t ncols) {
  ArrayArg AR = fg::bind::i64_arg(a_crow, "a_crow_indices", 1), AC = fg::bind::i64_arg(a_col, "a_col_indices", 1);
  ArrayArg BR = fg::bind::i64_arg(b_crow, "b_crow_indices", 1), BC = fg::bind::i64_arg(b_col, "b_col_indices", 1);
  const bool f32 = fg::bind::is_float32(a_values);
  if (!f32 && !py::detail::npy_api::get().PyArray_EquivTypes_(a_values.dtype().ptr(), py::dtype::of<double>().ptr()))
    throw py::type_error("spgemm: a_values must be a float32 or float64 array, got dtype " +
                         std::string(py::str(a_values.dtype())));
  if (!py::detail::npy_api::get().PyArray_EquivTypes_(b_values.dtype().ptr(), a_values.dtype().ptr()))
    throw py::type_error("spgemm: b_values must have a_values' dtype " + std::string(py::str(a_values.dtype())) +
                         ", got " + std::string(py::str(b_values.dtype())));
  ArrayArg AV = f32 ? fg::bind::f32_arg(a_values, "a_values", 1) : fg::bind::f64_arg(a_values, "a_values", 1);
  ArrayArg BV = f32 ? fg::bind::f32_arg(b_values, "b_values", 1) : fg::bind::f64_arg(b_values, "b_values", 1);
  if (AR.dim(0) < 1) throw py::value_error("spgemm: a_crow_indices must have at least one entry (rows + 1)");
  if (BR.dim(0) < 1) throw py::value_error("spgemm: b_crow_indices must have at least one entry (rows + 1)");
  if (ncols < 0) throw py::value_error("spgemm: ncols must be >= 0, got " + str(ncols));
  const int64_t m = AR.dim(0) - 1, k = BR.dim(0) - 1;
  const int64_t a_nnz = check_csr("spgemm", AR, AC, m, k, "a_");
  const int64_t b_nnz = check_csr("spgemm", BR, BC, k, ncols, "b_");
  fg::bind::expect_shape(AV, "a_values", {a_nnz});
  fg::bind::expect_shape(BV, "b_values", {b_nnz});
  const fg::CsrPattern a{AR.i64(), AC.i64(), m, k}, b{BR.i64(), BC.i64(), k, ncols};
  py::array_t<int64_t> crow(m + 1);
  int64_t nnz = 0;
  fg::SpgemmPlan plan;
  {
    py::gil_scoped_release release;
    plan = fg::spgemm_plan(a, b);
    nnz = fg::spgemm_symbolic(plan, a, b, crow.mutable_data());
  }
  py::array_t<int64_t> col(nnz);
  py::array values = f32 ? py::array(py::array_t<float>(nnz)) : py::array(py::array_t<double>(nnz));
  {
    py::gil_scoped_release release;
    if (f32)
      fg::spgemm_numeric<float>(plan, a, AV.f32(), b, BV.f32(), crow.data(), col.mutable_data(),
                                static_cast<float*>(values.mutable_data()));
    else
      fg::spgemm_numeric<double>(plan, a, AV.f64(), b, BV.f64(), crow.data(), col.mutable_data(),
                                 static_cast<double*>(values.mutable_data()));
  }
  return py::make_tuple(crow, col, values);
}

void bind(py::module_& m) {
  m.def("spgemm", &spgemm, py::arg("a_crow_indices"), py::arg("a_col_indices"), py::arg("a_values"),
        py::arg("b_crow_indices"), py::arg("b_col_indices"), py::arg("b_values"), py::arg("ncols"),
        "C = A @ B for CSR matrices A (len(a_crow_indices) - 1, len(b_crow_indices) - 1) and B "
        "(len(b_crow_indices) - 1, ncols), int64 indices, float32 or float64 values of one dtype. Returns C's "
        "(crow_indices (M+1,), col_indices (nnz,), values (nnz,)): each row's columns sorted and distinct, every "
        "structural product kept (a cancelling sum stays as an explicit 0). Products are rounded to the values' "
        "dtype and summed in float64 in A's then B's nonzero order: the same bits at any thread count.");
  m.def("csr_transpose", &transpose, py::arg("crow_indices"), py::arg("col_indices"), py::arg("ncols"),
        py::arg("out_crow_indices"), py::arg("out_col_indices"), py::arg("perm"),
        "The CSR pattern of A^T (ncols rows) by a stable counting sort of A's nonzeros by column: "
        "out_crow_indices (ncols+1,), out_col_indices (nnz,) and perm (nnz,), A^T's values being values[perm]; "
        "int64 arrays, serial O(nnz), deterministic.");
  m.def("spmm", &spmm, py::arg("crow_indices"), py::arg("col_indices"), py::arg("values"), py::arg("dense"),
        py::arg("out"),
        "out (M, N) = A @ dense for A a float32 CSR matrix of M rows (crow_indices (M+1,), col_indices (nnz,), "
        "values (nnz,), int64 indices) and dense (K, N) float32 C-contiguous; the same bits at any thread count "
        "and on every ISA.");
  m.def("sddmm", &sddmm, py::arg("crow_indices"), py::arg("col_indices"), py::arg("grad"), py::arg("dense"),
        py::arg("out"),
        "out (nnz,) = (grad @ dense.T) sampled at the CSR pattern: out[p] = dot(grad[i], dense[col_indices[p]]) for "
        "each nonzero p of row i (the gradient of A's values in A @ dense).");
}

}  // namespace

FG_REGISTER_BINDINGS(sparse, bind)
