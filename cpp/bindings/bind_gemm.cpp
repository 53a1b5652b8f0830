// forgegrad._C.gemm: sgemm on numpy arrays. Shapes are validated here (and, with friendlier
// messages, in python/forgegrad/kernels/gemm.py); the kernel reads strides as leading dimensions.
#include "forgegrad/bindings.h"
#include "forgegrad/gemm.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

// A 2-D operand whose rows may be strided but whose elements within a row are contiguous.
ArrayArg matrix_arg(const py::array& a, const char* name, bool writable) {
  ArrayArg r = fg::bind::f32_arg(a, name, 2, fg::bind::kAnyStrides, writable);
  if (r.shape[0] > 1 && r.shape[1] > 1 && r.strides[1] != 1)
    throw py::value_error(std::string(name) + " must have unit stride along its last axis");
  if (r.shape[0] > 1 && r.strides[0] < r.shape[1])
    throw py::value_error(std::string(name) + " has overlapping or negative row strides");
  return r;
}

int64_t leading_dim(const ArrayArg& r) {
  // A single row (or an empty matrix) may carry any row stride; the kernel needs ld >= cols.
  int64_t ld = r.shape[0] > 1 ? r.strides[0] : r.shape[1];
  return ld < 1 ? 1 : ld;
}

void sgemm(const py::array& a, const py::array& b, const py::array& c, bool trans_a, bool trans_b,
           float alpha, float beta, bool reference) {
  ArrayArg A = matrix_arg(a, "a", false), B = matrix_arg(b, "b", false), C = matrix_arg(c, "out", true);
  int64_t M = trans_a ? A.shape[1] : A.shape[0];
  int64_t K = trans_a ? A.shape[0] : A.shape[1];
  int64_t Kb = trans_b ? B.shape[1] : B.shape[0];
  int64_t N = trans_b ? B.shape[0] : B.shape[1];
  if (K != Kb)
    throw py::value_error("matmul: inner dimensions differ: op(a) is " + fg::bind::shape_str({M, K}) +
                          ", op(b) is " + fg::bind::shape_str({Kb, N}));
  fg::bind::expect_shape(C, "out", {M, N});
  py::gil_scoped_release release;
  auto fn = reference ? &fg::sgemm_reference : &fg::sgemm;
  fn(trans_a, trans_b, M, N, K, alpha, A.f32(), leading_dim(A), B.f32(), leading_dim(B), beta, C.f32(),
     leading_dim(C));
}

void bind(py::module_& m) {
  m.def("sgemm", &sgemm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f,
        py::arg("reference") = false,
        "out = alpha * op(a) @ op(b) + beta * out on float32 2-D arrays (rows may be strided).");
}

}  // namespace

FG_REGISTER_BINDINGS(gemm, bind)
