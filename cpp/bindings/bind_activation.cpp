// forgegrad._C.activation: elementwise activations (forward/backward) and column sums on numpy
// float32 arrays. Every array is checked here (dtype, contiguity, shapes) before a kernel runs.
#include <string>

#include "forgegrad/activation.h"
#include "forgegrad/bindings.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

void check_op(int op) {
  if (op < 0 || op >= fg::kActCount)
    throw py::value_error("op must be in [0, " + std::to_string(int(fg::kActCount)) + "), got " + std::to_string(op));
}

void act_forward(int op, const py::array& x, const py::array& out, float alpha) {
  check_op(op);
  ArrayArg X = fg::bind::f32_arg(x, "x"), Y = fg::bind::f32_arg(out, "out", -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(Y, "out", X.shape);
  fg::bind::check_no_overlap("act_forward", {{x, "x"}}, {{out, "out"}}, {{"out", "x"}});
  py::gil_scoped_release release;
  fg::act_forward(op, X.f32(), Y.f32(), X.size, alpha);
}

void act_backward(int op, const py::array& grad, const py::array& saved, const py::array& out, float alpha) {
  check_op(op);
  ArrayArg G = fg::bind::f32_arg(grad, "grad"), S = fg::bind::f32_arg(saved, "saved");
  ArrayArg D = fg::bind::f32_arg(out, "out", -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(S, "saved", G.shape);
  fg::bind::expect_shape(D, "out", G.shape);
  fg::bind::check_no_overlap("act_backward", {{grad, "grad"}, {saved, "saved"}}, {{out, "out"}},
                             {{"out", "grad"}, {"out", "saved"}});
  py::gil_scoped_release release;
  fg::act_backward(op, G.f32(), S.f32(), D.f32(), G.size, alpha);
}

void column_sums(const py::array& x, const py::array& out) {
  ArrayArg X = fg::bind::f32_arg(x, "x", 2), O = fg::bind::f32_arg(out, "out", 1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(O, "out", {X.shape[1]});
  fg::bind::check_no_overlap("column_sums", {{x, "x"}}, {{out, "out"}});
  py::gil_scoped_release release;
  fg::column_sums(X.f32(), X.shape[0], X.shape[1], O.f32());
}

void bind(py::module_& m) {
  for (int op = 0; op < fg::kActCount; ++op) m.attr(fg::kActNames[op]) = op;
  m.def("act_forward", &act_forward, py::arg("op"), py::arg("x"), py::arg("out"), py::arg("alpha") = 0.0f,
        "out = act(x) elementwise on C-contiguous float32 arrays of the same shape (out may be x).");
  m.def("act_backward", &act_backward, py::arg("op"), py::arg("grad"), py::arg("saved"), py::arg("out"),
        py::arg("alpha") = 0.0f,
        "out = grad * act'(.) from saved = the forward output (relu, sigmoid, tanh) or input (others: "
        "leaky_relu, gelu, gelu_tanh, silu).");
  m.def("column_sums", &column_sums, py::arg("x"), py::arg("out"),
        "out[c] = sum over rows of x[:, c] for a C-contiguous (rows, cols) float32 array, in row order.");
}

}  // namespace

FG_REGISTER_BINDINGS(activation, bind)
