// forgegrad._C.shape_copy: the transposed copy, diff's forward and backward and Tensor.unfold's overlap-add of
// cpp/kernels/per_isa/shape_copy.cpp (order and thread contract there). Every array is checked here before a
// kernel runs; forgegrad.kernels.shape_copy shapes the arguments.
#include <string>

#include "forgegrad/bindings.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/py_array.h"

namespace fg {

FG_KERNEL(void, transpose_copy_b32,
          (const uint32_t* src, int64_t B, int64_t R, int64_t C, int64_t sb, int64_t sr, int64_t sc, uint32_t* dst),
          (src, B, R, C, sb, sr, sc, dst))
FG_KERNEL(void, transpose_copy_b64,
          (const uint64_t* src, int64_t B, int64_t R, int64_t C, int64_t sb, int64_t sr, int64_t sc, uint64_t* dst),
          (src, B, R, C, sb, sr, sc, dst))
FG_KERNEL(void, diff_forward_f32, (const float* x, int64_t outer, int64_t m, int64_t inner, float* out),
          (x, outer, m, inner, out))
FG_KERNEL(void, diff_forward_f64, (const double* x, int64_t outer, int64_t m, int64_t inner, double* out),
          (x, outer, m, inner, out))
FG_KERNEL(void, diff_backward_f32, (const float* g, int64_t outer, int64_t m, int64_t inner, float* out),
          (g, outer, m, inner, out))
FG_KERNEL(void, diff_backward_f64, (const double* g, int64_t outer, int64_t m, int64_t inner, double* out),
          (g, outer, m, inner, out))
FG_KERNEL(void, unfold_backward_f32,
          (const float* g, int64_t outer, int64_t count, int64_t inner, int64_t size, int64_t step, int64_t n,
           float* out),
          (g, outer, count, inner, size, step, n, out))
FG_KERNEL(void, unfold_backward_f64,
          (const double* g, int64_t outer, int64_t count, int64_t inner, int64_t size, int64_t step, int64_t n,
           double* out),
          (g, outer, count, inner, size, step, n, out))

}  // namespace fg

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

bool same_dtype(const py::array& a, const py::array& b) {
  return py::detail::npy_api::get().PyArray_EquivTypes_(a.dtype().ptr(), b.dtype().ptr());
}

// A float32 or float64 argument (the dtype of `like` when given).
ArrayArg float_arg(const py::array& a, const char* name, int ndim, bool writable, const py::array* like = nullptr) {
  if (like != nullptr && !same_dtype(a, *like))
    throw py::type_error(std::string(name) + " must have the dtype of the gradient, got " +
                         std::string(py::str(a.dtype())));
  if (fg::bind::is_float32(a)) return fg::bind::f32_arg(a, name, ndim, fg::bind::kContiguous, writable);
  return fg::bind::f64_arg(a, name, ndim, fg::bind::kContiguous, writable);
}

void transpose_copy(const py::array& src, const py::array& dst) {
  if (src.ndim() != 3 || dst.ndim() != 3)
    throw py::value_error("transpose_copy: src and dst must be 3-D (batch, rows, cols), got " +
                          std::to_string(src.ndim()) + "-D and " + std::to_string(dst.ndim()) + "-D");
  if (!same_dtype(src, dst))
    throw py::type_error("transpose_copy: dst must have src's dtype, got " + std::string(py::str(dst.dtype())) +
                         " and " + std::string(py::str(src.dtype())));
  const py::ssize_t item = src.itemsize();
  if (item != 4 && item != 8)
    throw py::type_error("transpose_copy: elements of 4 or 8 bytes only, got dtype " +
                         std::string(py::str(src.dtype())));
  if (!dst.writeable()) throw py::value_error("transpose_copy: dst must be writeable");
  if (!(dst.flags() & py::array::c_style)) throw py::value_error("transpose_copy: dst must be C-contiguous");
  int64_t st[3];
  for (int i = 0; i < 3; ++i) {
    if (src.shape(i) != dst.shape(i)) throw py::value_error("transpose_copy: dst must have src's shape");
    if (src.strides(i) % item != 0)
      throw py::value_error("transpose_copy: src has strides that are not a multiple of its item size");
    st[i] = src.strides(i) / item;
  }
  const int64_t B = src.shape(0), R = src.shape(1), C = src.shape(2);
  if (B * R * C == 0) return;
  if (reinterpret_cast<uintptr_t>(src.data()) % item != 0 || reinterpret_cast<uintptr_t>(dst.data()) % item != 0)
    throw py::value_error("transpose_copy: src and dst must be aligned to their item size");
  fg::bind::check_no_overlap("transpose_copy", {{src, "src"}}, {{dst, "dst"}});
  const void* s = src.data();
  void* d = const_cast<void*>(dst.data());  // checked writeable above
  py::gil_scoped_release release;
  if (item == 4) {
    fg::transpose_copy_b32(static_cast<const uint32_t*>(s), B, R, C, st[0], st[1], st[2], static_cast<uint32_t*>(d));
  } else {
    fg::transpose_copy_b64(static_cast<const uint64_t*>(s), B, R, C, st[0], st[1], st[2], static_cast<uint64_t*>(d));
  }
}

void diff_forward(const py::array& x, const py::array& out) {
  ArrayArg X = float_arg(x, "x", 3, false), O = float_arg(out, "out", 3, true, &x);
  const int64_t outer = X.dim(0), m = X.dim(1), inner = X.dim(2);
  if (m < 1) throw py::value_error("diff_forward: x must have at least one element along axis 1");
  fg::bind::expect_shape(O, "out", {outer, m - 1, inner});
  fg::bind::check_no_overlap("diff_forward", {{x, "x"}}, {{out, "out"}});
  if (O.size == 0) return;
  const bool f32 = fg::bind::is_float32(x);
  py::gil_scoped_release release;
  if (f32) {
    fg::diff_forward_f32(X.f32(), outer, m, inner, O.f32());
  } else {
    fg::diff_forward_f64(X.f64(), outer, m, inner, O.f64());
  }
}

void diff_backward(const py::array& g, const py::array& out) {
  ArrayArg G = float_arg(g, "g", 3, false), O = float_arg(out, "out", 3, true, &g);
  const int64_t outer = G.dim(0), m = G.dim(1), inner = G.dim(2);
  fg::bind::expect_shape(O, "out", {outer, m + 1, inner});
  fg::bind::check_no_overlap("diff_backward", {{g, "g"}}, {{out, "out"}});
  if (O.size == 0) return;
  const bool f32 = fg::bind::is_float32(g);
  py::gil_scoped_release release;
  if (f32) {
    fg::diff_backward_f32(G.f32(), outer, m, inner, O.f32());
  } else {
    fg::diff_backward_f64(G.f64(), outer, m, inner, O.f64());
  }
}

void unfold_backward(const py::array& g, int64_t step, const py::array& out) {
  ArrayArg G = float_arg(g, "g", 4, false), O = float_arg(out, "out", 3, true, &g);
  const int64_t outer = G.dim(0), count = G.dim(1), inner = G.dim(2), size = G.dim(3), n = O.dim(1);
  fg::bind::expect_shape(O, "out", {outer, n, inner});
  if (step < 1) throw py::value_error("unfold_backward: step must be >= 1, got " + std::to_string(step));
  if (count > 0 && (count - 1) * step + size > n)
    throw py::value_error("unfold_backward: " + std::to_string(count) + " windows of " + std::to_string(size) +
                          " every " + std::to_string(step) + " do not fit in out's " + std::to_string(n) +
                          " elements along its middle axis");
  fg::bind::check_no_overlap("unfold_backward", {{g, "g"}}, {{out, "out"}});
  if (O.size == 0) return;
  const bool f32 = fg::bind::is_float32(g);
  py::gil_scoped_release release;
  if (f32) {
    fg::unfold_backward_f32(G.f32(), outer, count, inner, size, step, n, O.f32());
  } else {
    fg::unfold_backward_f64(G.f64(), outer, count, inner, size, step, n, O.f64());
  }
}

void bind(py::module_& m) {
  m.def("transpose_copy", &transpose_copy, py::arg("src"), py::arg("dst"),
        "dst[b, r, c] = src[b, r, c]: a copy of a 3-D view with any strides (a transposed or flipped one) into a "
        "C-contiguous dst of its dtype; elements of 4 or 8 bytes, moved as bits.");
  m.def("diff_forward", &diff_forward, py::arg("x"), py::arg("out"),
        "One forward difference along axis 1: x (outer, m, inner) float32 / float64, m >= 1 -> out (outer, m - 1, "
        "inner), out[:, k] = x[:, k + 1] - x[:, k].");
  m.def("diff_backward", &diff_backward, py::arg("g"), py::arg("out"),
        "The adjoint of one forward difference along axis 1: g (outer, m, inner) float32 / float64 -> out (outer, "
        "m + 1, inner), out[:, k] = (0 + g[:, k - 1]) - g[:, k] (numpy's zeros / += / -= bits, one pass).");
  m.def("unfold_backward", &unfold_backward, py::arg("g"), py::arg("step"), py::arg("out"),
        "Tensor.unfold's overlap-add: g (outer, count, inner, size) -> out (outer, n, inner), out[:, w * step + j] "
        "= sum over windows w (ascending, from 0) of g[:, w, :, j]; float32 / float64.");
}

}  // namespace

FG_REGISTER_BINDINGS(shape_copy, bind)
