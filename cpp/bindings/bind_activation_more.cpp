// forgegrad._C.activation: pw_forward / pw_backward, the activations of forgegrad/activation_more.h
// (elu / selu / celu, softplus, mish, logsigmoid, hardsigmoid, hardswish, softsign, tanhshrink, hardtanh,
// softshrink, hardshrink, threshold) on numpy
// float32 arrays, and their codes (PW_ELU, ...). Every array is checked here (dtype, contiguity,
// shapes, overlap) before a kernel runs.
#include <string>

#include "forgegrad/activation_more.h"
#include "forgegrad/bindings.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

void check_pw_op(int op, bool forward) {
  if (op < 0 || op >= fg::kPwCount)
    throw py::value_error("op must be in [0, " + std::to_string(int(fg::kPwCount)) + "), got " + std::to_string(op));
  if (forward && !fg::pw_forward_exists(op))
    throw py::value_error("op " + std::string(fg::kPwNames[op]) + " has a backward only");
}

void pw_forward(int op, const py::array& x, const py::array& out, float p0, float p1, float p2) {
  check_pw_op(op, true);
  ArrayArg X = fg::bind::f32_arg(x, "x"), Y = fg::bind::f32_arg(out, "out", -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(Y, "out", X.shape);
  fg::bind::check_no_overlap("pw_forward", {{x, "x"}}, {{out, "out"}}, {{"out", "x"}});
  py::gil_scoped_release release;
  fg::pw_forward(op, X.f32(), Y.f32(), X.size, p0, p1, p2);
}

void pw_backward(int op, const py::array& grad, const py::array& saved, const py::array& out, float p0, float p1,
                 float p2) {
  check_pw_op(op, false);
  ArrayArg G = fg::bind::f32_arg(grad, "grad"), S = fg::bind::f32_arg(saved, "saved");
  ArrayArg D = fg::bind::f32_arg(out, "out", -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(S, "saved", G.shape);
  fg::bind::expect_shape(D, "out", G.shape);
  fg::bind::check_no_overlap("pw_backward", {{grad, "grad"}, {saved, "saved"}}, {{out, "out"}},
                             {{"out", "grad"}, {"out", "saved"}});
  py::gil_scoped_release release;
  fg::pw_backward(op, G.f32(), S.f32(), D.f32(), G.size, p0, p1, p2);
}

void bind(py::module_& m) {
  for (int op = 0; op < fg::kPwCount; ++op) m.attr((std::string("PW_") + fg::kPwNames[op]).c_str()) = op;
  m.def("pw_forward", &pw_forward, py::arg("op"), py::arg("x"), py::arg("out"), py::arg("p0") = 0.0f,
        py::arg("p1") = 0.0f, py::arg("p2") = 0.0f,
        "out = f(x) elementwise on C-contiguous float32 arrays of the same shape (out may be x); op a PW_ code "
        "(not PW_ELU_FROM_OUTPUT), p0..p2 its parameters: PW_ELU scale, negcoef, input_scale; PW_SOFTPLUS beta, "
        "threshold; PW_HARDTANH lo, hi; PW_SOFTSHRINK, PW_HARDSHRINK lambd; PW_THRESHOLD threshold, value; the "
        "others none.");
  m.def("pw_backward", &pw_backward, py::arg("op"), py::arg("grad"), py::arg("saved"), py::arg("out"),
        py::arg("p0") = 0.0f, py::arg("p1") = 0.0f, py::arg("p2") = 0.0f,
        "out = grad * f'(.) from saved = the forward input x (PW_ELU_FROM_OUTPUT: the output y of elu, p0 = "
        "alpha); PW_ELU's p0..p2: scale, input_scale * negcoef, input_scale; PW_SOFTPLUS's: beta, threshold; "
        "PW_HARDTANH's lo, hi; the shrinks' lambd; PW_THRESHOLD's threshold.");
}

}  // namespace

FG_REGISTER_BINDINGS(activation, bind)
