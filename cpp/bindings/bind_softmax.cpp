// forgegrad._C.softmax: softmax / log-softmax over the last axis, forward and backward.
#include "forgegrad/bindings.h"
#include "forgegrad/py_array.h"
#include "forgegrad/softmax.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

// rows x cols view of an array whose last axis is cols (a 0-d array is one row of one element).
void rows_cols(const ArrayArg& a, int64_t& rows, int64_t& cols) {
  cols = a.ndim == 0 ? 1 : a.dim(-1);
  rows = cols == 0 ? 0 : a.size / cols;
}

void forward(const py::array& x, const py::array& out, bool log_softmax) {
  ArrayArg X = fg::bind::f32_arg(x, "x"), Y = fg::bind::f32_arg(out, "out", -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(Y, "out", X.shape);
  int64_t rows, cols;
  rows_cols(X, rows, cols);
  fg::bind::check_no_overlap("softmax_forward", {{x, "x"}}, {{out, "out"}}, {{"out", "x"}});
  py::gil_scoped_release release;
  fg::softmax_forward(X.f32(), Y.f32(), rows, cols, log_softmax);
}

void backward(const py::array& grad, const py::array& y, const py::array& out, bool log_softmax) {
  ArrayArg G = fg::bind::f32_arg(grad, "grad"), Y = fg::bind::f32_arg(y, "y");
  ArrayArg D = fg::bind::f32_arg(out, "out", -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(Y, "y", G.shape);
  fg::bind::expect_shape(D, "out", G.shape);
  int64_t rows, cols;
  rows_cols(G, rows, cols);
  fg::bind::check_no_overlap("softmax_backward", {{grad, "grad"}, {y, "y"}}, {{out, "out"}},
                             {{"out", "grad"}, {"out", "y"}});
  py::gil_scoped_release release;
  fg::softmax_backward(G.f32(), Y.f32(), D.f32(), rows, cols, log_softmax);
}

void bind(py::module_& m) {
  m.def("softmax_forward", &forward, py::arg("x"), py::arg("out"), py::arg("log_softmax") = false,
        "out = softmax(x) (or log_softmax) over the last axis; C-contiguous float32, out may be x.");
  m.def("softmax_backward", &backward, py::arg("grad"), py::arg("y"), py::arg("out"), py::arg("log_softmax") = false,
        "out = d softmax (or log_softmax) from the saved output y.");
}

}  // namespace

FG_REGISTER_BINDINGS(softmax, bind)
