// forgegrad._C.groupnorm: fused GroupNorm forward / backward on numpy float32 arrays x (N, C, *),
// normalised over each (n, group of C / groups channels); mean and rstd are (N, groups). Every
// array is checked here before a kernel runs.
#include <cmath>
#include <string>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/py_array.h"

// The kernels of cpp/kernels/per_isa/groupnorm.cpp (formulas, accuracy and thread contract there).
namespace fg {

// x, y (N, C, HW); weight, bias (C) or null; mean, rstd (N * G). G divides C.
FG_KERNEL(void, group_norm_forward,
          (const float* x, const float* weight, const float* bias, int64_t N, int64_t C, int64_t HW, int64_t G,
           float eps, float* y, float* mean, float* rstd),
          (x, weight, bias, N, C, HW, G, eps, y, mean, rstd))

// grad_x (N, C, HW), grad_weight and grad_bias (C); each output may be null (not needed).
FG_KERNEL(void, group_norm_backward,
          (const float* grad_y, const float* x, const float* mean, const float* rstd, const float* weight, int64_t N,
           int64_t C, int64_t HW, int64_t G, float* grad_x, float* grad_weight, float* grad_bias),
          (grad_y, x, mean, rstd, weight, N, C, HW, G, grad_x, grad_weight, grad_bias))

}  // namespace fg

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

struct Dims {
  int64_t N = 0, C = 0, HW = 1;
};

Dims dims_of(const ArrayArg& x) {
  if (x.ndim < 2)
    throw py::value_error("x must have at least 2 axes (N, C, *), got shape " + fg::bind::shape_str(x.shape));
  Dims d;
  d.N = x.shape[0];
  d.C = x.shape[1];
  for (int i = 2; i < x.ndim; ++i) d.HW *= x.shape[i];
  return d;
}

void check_groups(int64_t groups, int64_t C) {
  if (groups < 1 || C % groups != 0)
    throw py::value_error("groups must be >= 1 and divide the number of channels of x (" + std::to_string(C) +
                          "), got " + std::to_string(groups));
}

// An optional argument must already be a numpy array: a cast from anything else would build a
// temporary array whose buffer is gone when the kernel runs.
py::array existing_array(const py::object& o, const char* name) {
  if (!py::isinstance<py::array>(o))
    throw py::type_error(std::string(name) + " must be None or a numpy.ndarray of float32, got " +
                         std::string(py::str(py::type::of(o).attr("__name__"))));
  return o.cast<py::array>();
}

const float* optional_in(const py::object& o, const char* name, const std::vector<int64_t>& shape) {
  if (o.is_none()) return nullptr;
  ArrayArg a = fg::bind::f32_arg(existing_array(o, name), name);
  fg::bind::expect_shape(a, name, shape);
  return a.f32();
}

float* optional_out(const py::object& o, const char* name, const std::vector<int64_t>& shape) {
  if (o.is_none()) return nullptr;
  ArrayArg a = fg::bind::f32_arg(existing_array(o, name), name, -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(a, name, shape);
  return a.f32();
}

float* out_arg(const py::array& o, const char* name, const std::vector<int64_t>& shape) {
  ArrayArg a = fg::bind::f32_arg(o, name, -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(a, name, shape);
  return a.f32();
}

void gn_forward(const py::array& x, int64_t groups, const py::object& weight, const py::object& bias, float eps,
                const py::array& out, const py::array& mean, const py::array& rstd) {
  ArrayArg X = fg::bind::f32_arg(x, "x");
  const Dims d = dims_of(X);
  check_groups(groups, d.C);
  const float* w = optional_in(weight, "weight", {d.C});
  const float* b = optional_in(bias, "bias", {d.C});
  float* y = out_arg(out, "out", X.shape);
  float* m = out_arg(mean, "mean", {d.N, groups});
  float* r = out_arg(rstd, "rstd", {d.N, groups});
  if (!(eps >= 0.0f) || !std::isfinite(eps))
    throw py::value_error("eps must be a finite number >= 0, got " + std::to_string(eps));
  fg::bind::check_no_overlap("group_norm_forward", {{x, "x"}, {weight, "weight"}, {bias, "bias"}},
                             {{out, "out"}, {mean, "mean"}, {rstd, "rstd"}});
  py::gil_scoped_release release;
  fg::group_norm_forward(X.f32(), w, b, d.N, d.C, d.HW, groups, eps, y, m, r);
}

void gn_backward(const py::array& grad, const py::array& x, const py::array& mean, const py::array& rstd,
                 const py::object& weight, const py::object& grad_x, const py::object& grad_weight,
                 const py::object& grad_bias) {
  ArrayArg X = fg::bind::f32_arg(x, "x"), G = fg::bind::f32_arg(grad, "grad");
  const Dims d = dims_of(X);
  fg::bind::expect_shape(G, "grad", X.shape);
  ArrayArg M = fg::bind::f32_arg(mean, "mean"), R = fg::bind::f32_arg(rstd, "rstd");
  if (M.ndim != 2 || M.shape[0] != d.N)
    throw py::value_error("mean must have shape (N, groups) with N = " + std::to_string(d.N) +
                          " (x's first axis), got " + fg::bind::shape_str(M.shape));
  const int64_t groups = M.shape[1];
  check_groups(groups, d.C);
  fg::bind::expect_shape(R, "rstd", M.shape);
  const float* w = optional_in(weight, "weight", {d.C});
  float* gx = optional_out(grad_x, "grad_x", X.shape);
  float* gw = optional_out(grad_weight, "grad_weight", {d.C});
  float* gb = optional_out(grad_bias, "grad_bias", {d.C});
  fg::bind::check_no_overlap("group_norm_backward",
                             {{grad, "grad"}, {x, "x"}, {mean, "mean"}, {rstd, "rstd"}, {weight, "weight"}},
                             {{grad_x, "grad_x"}, {grad_weight, "grad_weight"}, {grad_bias, "grad_bias"}});
  py::gil_scoped_release release;
  fg::group_norm_backward(G.f32(), X.f32(), M.f32(), R.f32(), w, d.N, d.C, d.HW, groups, gx, gw, gb);
}

void bind(py::module_& m) {
  m.def("group_norm_forward", &gn_forward, py::arg("x"), py::arg("groups"), py::arg("weight"), py::arg("bias"),
        py::arg("eps"), py::arg("out"), py::arg("mean"), py::arg("rstd"),
        "out = (x - mean) * rstd * weight[c] + bias[c] over each (n, group) of x (N, C, *), groups dividing C; "
        "mean and rstd (1 / sqrt(biased var + eps)) are (N, groups). weight / bias: None or (C,).");
  m.def("group_norm_backward", &gn_backward, py::arg("grad"), py::arg("x"), py::arg("mean"), py::arg("rstd"),
        py::arg("weight"), py::arg("grad_x"), py::arg("grad_weight"), py::arg("grad_bias"),
        "Fills grad_x, grad_weight, grad_bias (each None when not needed) of group_norm_forward; the groups are "
        "mean's second axis.");
}

}  // namespace

FG_REGISTER_BINDINGS(groupnorm, bind)
