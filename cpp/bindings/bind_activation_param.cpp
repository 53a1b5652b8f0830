// forgegrad._C.activation: prelu_forward / prelu_backward, glu_forward / glu_backward and rrelu_train_forward
// (forgegrad/activation_param.h) on numpy float32 arrays. The channel layout (prelu), the halves (glu) and every
// array (dtype, contiguity, shapes, overlap) are checked here before a kernel runs.
#include <string>
#include <vector>

#include "forgegrad/activation_param.h"
#include "forgegrad/bindings.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

struct PreluView {
  int64_t outer, C, inner;
};

// torch's rule: the channel dim is dim 1 (a 0-d or 1-d input has one channel); weight holds 1 or C slopes.
PreluView prelu_view(const ArrayArg& X, const ArrayArg& Wt) {
  if (Wt.ndim > 1)
    throw py::value_error("prelu: weight must be 0-d or 1-d, got shape " + fg::bind::shape_str(Wt.shape));
  const int64_t channels = X.ndim >= 2 ? X.shape[1] : 1;
  if (Wt.size == 1) return {1, 1, X.size};
  if (Wt.size != channels)
    throw py::value_error(
        "prelu: weight must have 1 element or one per channel of x (x.shape[1] = " + std::to_string(channels) +
        (X.ndim < 2 ? ", x has no channel dim" : "") + "), got " + std::to_string(Wt.size));
  int64_t inner = 1;
  for (int i = 2; i < X.ndim; ++i) inner *= X.shape[i];
  return {X.shape[0], channels, inner};
}

void prelu_forward(const py::array& x, const py::array& weight, const py::array& out) {
  ArrayArg X = fg::bind::f32_arg(x, "x"), Wt = fg::bind::f32_arg(weight, "weight");
  ArrayArg Y = fg::bind::f32_arg(out, "out", -1, fg::bind::kContiguous, true);
  PreluView v = prelu_view(X, Wt);
  fg::bind::expect_shape(Y, "out", X.shape);
  fg::bind::check_no_overlap("prelu_forward", {{x, "x", false}, {weight, "weight", false}, {out, "out", true}},
                             {{"out", "x"}});
  py::gil_scoped_release release;
  fg::prelu_forward(X.f32(), Wt.f32(), Y.f32(), v.outer, v.C, v.inner);
}

void prelu_backward(const py::array& grad, const py::array& x, const py::array& weight, const py::object& grad_input,
                    const py::object& grad_weight) {
  ArrayArg G = fg::bind::f32_arg(grad, "grad"), X = fg::bind::f32_arg(x, "x");
  ArrayArg Wt = fg::bind::f32_arg(weight, "weight");
  fg::bind::expect_shape(G, "grad", X.shape);
  PreluView v = prelu_view(X, Wt);
  float* gx = nullptr;
  float* gw = nullptr;
  if (!grad_input.is_none()) {
    ArrayArg D = fg::bind::f32_arg(grad_input.cast<py::array>(), "grad_input", -1, fg::bind::kContiguous, true);
    fg::bind::expect_shape(D, "grad_input", X.shape);
    gx = D.f32();
  }
  if (!grad_weight.is_none()) {
    ArrayArg D = fg::bind::f32_arg(grad_weight.cast<py::array>(), "grad_weight", -1, fg::bind::kContiguous, true);
    fg::bind::expect_shape(D, "grad_weight", Wt.shape);
    gw = D.f32();
  }
  fg::bind::check_no_overlap("prelu_backward",
                             {{grad, "grad", false},
                              {x, "x", false},
                              {weight, "weight", false},
                              {grad_input, "grad_input", true},
                              {grad_weight, "grad_weight", true}},
                             {{"grad_input", "grad"}});
  py::gil_scoped_release release;
  fg::prelu_backward(G.f32(), X.f32(), Wt.f32(), gx, gw, v.outer, v.C, v.inner);
}

struct GluView {
  int64_t outer, n;
  std::vector<int64_t> half_shape;
};

GluView glu_view(const ArrayArg& X, int64_t dim) {
  if (X.ndim == 0) throw py::value_error("glu: x must have at least one dim, got a 0-d array");
  if (dim < -X.ndim || dim >= X.ndim)
    throw py::index_error("glu: dim must be in [" + std::to_string(-X.ndim) + ", " + std::to_string(X.ndim) +
                          "), got " + std::to_string(dim));
  const int d = static_cast<int>(dim < 0 ? dim + X.ndim : dim);
  if (X.shape[d] % 2 != 0)
    throw py::value_error("glu: x.shape[dim] must be even (two halves), got shape " + fg::bind::shape_str(X.shape) +
                          " and dim " + std::to_string(dim));
  GluView v{1, 1, X.shape};
  for (int i = 0; i < d; ++i) v.outer *= X.shape[i];
  v.n = X.shape[d] / 2;
  for (int i = d + 1; i < X.ndim; ++i) v.n *= X.shape[i];
  v.half_shape[d] /= 2;
  return v;
}

void glu_forward(const py::array& x, int64_t dim, const py::array& out) {
  ArrayArg X = fg::bind::f32_arg(x, "x");
  ArrayArg Y = fg::bind::f32_arg(out, "out", -1, fg::bind::kContiguous, true);
  GluView v = glu_view(X, dim);
  fg::bind::expect_shape(Y, "out", v.half_shape);
  fg::bind::check_no_overlap("glu_forward", {{x, "x", false}, {out, "out", true}});
  py::gil_scoped_release release;
  fg::glu_forward(X.f32(), Y.f32(), v.outer, v.n);
}

void glu_backward(const py::array& grad, const py::array& x, int64_t dim, const py::array& out) {
  ArrayArg G = fg::bind::f32_arg(grad, "grad"), X = fg::bind::f32_arg(x, "x");
  ArrayArg D = fg::bind::f32_arg(out, "out", -1, fg::bind::kContiguous, true);
  GluView v = glu_view(X, dim);
  fg::bind::expect_shape(G, "grad", v.half_shape);
  fg::bind::expect_shape(D, "out", X.shape);
  fg::bind::check_no_overlap("glu_backward", {{grad, "grad", false}, {x, "x", false}, {out, "out", true}});
  py::gil_scoped_release release;
  fg::glu_backward(G.f32(), X.f32(), D.f32(), v.outer, v.n);
}

void rrelu_train_forward(const py::array& x, const py::array& noise, const py::array& out) {
  ArrayArg X = fg::bind::f32_arg(x, "x");
  ArrayArg R = fg::bind::f32_arg(noise, "noise", -1, fg::bind::kContiguous, true);
  ArrayArg Y = fg::bind::f32_arg(out, "out", -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(R, "noise", X.shape);
  fg::bind::expect_shape(Y, "out", X.shape);
  fg::bind::check_no_overlap("rrelu_train_forward", {{x, "x", false}, {noise, "noise", true}, {out, "out", true}},
                             {{"out", "x"}});
  py::gil_scoped_release release;
  fg::rrelu_train_forward(X.f32(), R.f32(), Y.f32(), X.size);
}

void bind(py::module_& m) {
  m.def("prelu_forward", &prelu_forward, py::arg("x"), py::arg("weight"), py::arg("out"),
        "out = x > 0 ? x : weight[c] * x on C-contiguous float32 arrays, c the index along dim 1 (weight of one "
        "element: one slope for all; a 0-d or 1-d x has one channel); out may be x.");
  m.def("prelu_backward", &prelu_backward, py::arg("grad"), py::arg("x"), py::arg("weight"), py::arg("grad_input"),
        py::arg("grad_weight"),
        "grad_input = x > 0 ? grad : weight[c] * grad (may be grad itself); grad_weight (weight's shape) = the sum "
        "of (x > 0 ? 0 : grad * x) over all but dim 1, in float64 over a fixed blocking; either output may be None.");
  m.def("glu_forward", &glu_forward, py::arg("x"), py::arg("dim"), py::arg("out"),
        "out = a * sigmoid(b), a and b the first and second halves of x along dim; out has x's shape with "
        "shape[dim] halved.");
  m.def("glu_backward", &glu_backward, py::arg("grad"), py::arg("x"), py::arg("dim"), py::arg("out"),
        "out (x's shape) = the gradients of both halves: s * grad for a, (1 - s) * s * a * grad for b, s = "
        "sigmoid(b).");
  m.def("rrelu_train_forward", &rrelu_train_forward, py::arg("x"), py::arg("noise"), py::arg("out"),
        "rrelu in training: noise (x's shape) holds uniform slopes on entry and the slopes used on return (x <= 0 ? "
        "slope : 1); out = x * noise (out may be x).");
}

}  // namespace

FG_REGISTER_BINDINGS(activation, bind)
