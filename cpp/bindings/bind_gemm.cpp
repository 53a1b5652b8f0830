// forgegrad._C.gemm: sgemm on numpy arrays. Shapes are validated here (and, with friendlier
// messages, in python/forgegrad/kernels/gemm.py); the kernel reads strides as leading dimensions.
#include "forgegrad/bindings.h"
#include "forgegrad/gemm.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

// Rank check before f32_arg, with the shape in the message.
void check_rank(const py::array& a, const char* name, int ndim) {
  if (a.ndim() == ndim) return;
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got " +
                        std::to_string(a.ndim()) + "-D with shape " + fg::bind::shape_str(shape));
}

// A 2-D operand whose rows may be strided but whose elements within a row are contiguous.
ArrayArg matrix_arg(const py::array& a, const char* name, bool writable) {
  check_rank(a, name, 2);
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

// A stack of matrices (batch, rows, cols): rows strided like matrix_arg, the batch axis with any
// stride >= 0 (0 broadcasts one matrix). Returns the batch stride in elements.
int64_t batch_arg(const py::array& a, const char* name, bool writable, ArrayArg& r) {
  check_rank(a, name, 3);
  r = fg::bind::f32_arg(a, name, 3, fg::bind::kAnyStrides, writable);
  if (r.shape[1] > 1 && r.shape[2] > 1 && r.strides[2] != 1)
    throw py::value_error(std::string(name) + " must have unit stride along its last axis");
  if (r.shape[1] > 1 && r.strides[1] < r.shape[2])
    throw py::value_error(std::string(name) + " has overlapping or negative row strides");
  if (r.shape[0] > 1 && r.strides[0] < 0)
    throw py::value_error(std::string(name) + " has a negative batch stride");
  return r.shape[0] > 1 ? r.strides[0] : 0;
}

void bmm(const py::array& a, const py::array& b, const py::array& c, bool trans_a, bool trans_b,
         float alpha, float beta) {
  ArrayArg A, B, C;
  int64_t sa = batch_arg(a, "a", false, A), sb = batch_arg(b, "b", false, B), sc = batch_arg(c, "out", true, C);
  int64_t batch = C.shape[0];
  if (A.shape[0] != batch || B.shape[0] != batch)
    throw py::value_error("bmm: batch sizes differ: a has shape " + fg::bind::shape_str(A.shape) +
                          ", b has shape " + fg::bind::shape_str(B.shape) + ", out has shape " +
                          fg::bind::shape_str(C.shape));
  int64_t M = trans_a ? A.shape[2] : A.shape[1];
  int64_t K = trans_a ? A.shape[1] : A.shape[2];
  int64_t Kb = trans_b ? B.shape[2] : B.shape[1];
  int64_t N = trans_b ? B.shape[1] : B.shape[2];
  if (K != Kb)
    throw py::value_error("bmm: inner dimensions differ: op(a) is " + fg::bind::shape_str({batch, M, K}) +
                          ", op(b) is " + fg::bind::shape_str({batch, Kb, N}));
  fg::bind::expect_shape(C, "out", {batch, M, N});
  // Output matrices must not overlap one another (each is written by one sgemm).
  if (batch > 1 && M > 0 && N > 0 && sc < (M - 1) * (M > 1 ? C.strides[1] : 0) + N)
    throw py::value_error("out has overlapping batch entries (batch stride " + std::to_string(sc) + ")");
  auto ld = [](const ArrayArg& r) {
    int64_t v = r.shape[1] > 1 ? r.strides[1] : r.shape[2];
    return v < 1 ? int64_t(1) : v;
  };
  py::gil_scoped_release release;
  fg::sgemm_batched(trans_a, trans_b, batch, M, N, K, alpha, A.f32(), ld(A), sa, B.f32(), ld(B), sb,
                    beta, C.f32(), ld(C), sc);
}

void bind(py::module_& m) {
  m.def("bmm", &bmm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f,
        "out[i] = alpha * op(a[i]) @ op(b[i]) + beta * out[i] on float32 3-D arrays; a batch "
        "stride of 0 broadcasts (rows may be strided).");
  m.def("sgemm", &sgemm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f,
        py::arg("reference") = false,
        "out = alpha * op(a) @ op(b) + beta * out on float32 2-D arrays (rows may be strided).");
}

}  // namespace

FG_REGISTER_BINDINGS(gemm, bind)
