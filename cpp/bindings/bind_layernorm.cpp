// forgegrad._C.layernorm: LayerNorm and RMSNorm forward / backward on numpy float32 arrays. The
// last `normalized_ndim` axes of x are normalised (torch's normalized_shape); the leading axes are
// the batch, and mean / rstd have the batch shape. Every array is checked here before a kernel runs.
#include <cmath>
#include <string>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/py_array.h"

// The kernels of cpp/kernels/per_isa/layernorm.cpp (formulas, accuracy and thread contract there):
// FG_KERNEL declares each per-ISA variant and defines the dispatcher fg::<name>.
namespace fg {

// y (rows, D); mean, rstd (rows). y may alias x.
FG_KERNEL(void, layer_norm_forward,
          (const float* x, const float* weight, const float* bias, int64_t rows, int64_t D, float eps, float* y,
           float* mean, float* rstd),
          (x, weight, bias, rows, D, eps, y, mean, rstd))

// From grad_y, x and the saved mean / rstd: grad_x (rows, D), grad_weight and grad_bias (D); each
// output may be null (not needed). The gradient uses the exact row mean of x: the saved float mean
// is only a starting point (its rounding error is measured on the row and removed), so gradients
// stay accurate at large offsets. grad_x may alias grad_y.
FG_KERNEL(void, layer_norm_backward,
          (const float* grad_y, const float* x, const float* mean, const float* rstd, const float* weight, int64_t rows,
           int64_t D, float* grad_x, float* grad_weight, float* grad_bias),
          (grad_y, x, mean, rstd, weight, rows, D, grad_x, grad_weight, grad_bias))

// y (rows, D); rstd (rows). y may alias x.
FG_KERNEL(void, rms_norm_forward,
          (const float* x, const float* weight, int64_t rows, int64_t D, float eps, float* y, float* rstd),
          (x, weight, rows, D, eps, y, rstd))

// grad_x (rows, D) and grad_weight (D), either may be null. grad_x may alias grad_y.
FG_KERNEL(void, rms_norm_backward,
          (const float* grad_y, const float* x, const float* rstd, const float* weight, int64_t rows, int64_t D,
           float* grad_x, float* grad_weight),
          (grad_y, x, rstd, weight, rows, D, grad_x, grad_weight))

}  // namespace fg

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

// x viewed as (rows, D): the batch shape (leading axes) and the normalised shape (trailing axes).
struct RowsView {
  std::vector<int64_t> batch, normalized;
  int64_t rows = 1, D = 1;
};

RowsView split(const ArrayArg& x, int64_t normalized_ndim, const char* name) {
  if (normalized_ndim < 1 || normalized_ndim > x.ndim)
    throw py::value_error(std::string(name) +
                          " must have at least normalized_ndim = " + std::to_string(normalized_ndim) +
                          " axes (and normalized_ndim >= 1), got shape " + fg::bind::shape_str(x.shape));
  RowsView v;
  const int64_t k = x.ndim - normalized_ndim;
  v.batch.assign(x.shape.begin(), x.shape.begin() + k);
  v.normalized.assign(x.shape.begin() + k, x.shape.end());
  for (int64_t s : v.batch) v.rows *= s;
  for (int64_t s : v.normalized) v.D *= s;
  if (v.D < 1)
    throw py::value_error("the normalized shape " + fg::bind::shape_str(v.normalized) + " of " + name +
                          " must not be empty (a zero-size axis)");
  return v;
}

// The batch / normalised split of x from the saved statistic `stat` (shape = x's leading axes).
RowsView split_by_stat(const ArrayArg& x, const ArrayArg& stat, const char* stat_name) {
  const bool prefix =
      stat.ndim < x.ndim && std::vector<int64_t>(x.shape.begin(), x.shape.begin() + stat.ndim) == stat.shape;
  if (!prefix)
    throw py::value_error(std::string(stat_name) +
                          " must have the batch shape of x (its leading axes, before the "
                          "normalized axes), got " +
                          fg::bind::shape_str(stat.shape) + " for x of shape " + fg::bind::shape_str(x.shape));
  return split(x, x.ndim - stat.ndim, "x");
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

void check_eps(float eps) {
  if (!(eps >= 0.0f) || !std::isfinite(eps))
    throw py::value_error("eps must be a finite number >= 0, got " + std::to_string(eps));
}

void ln_forward(const py::array& x, int64_t normalized_ndim, const py::object& weight, const py::object& bias,
                float eps, const py::array& out, const py::array& mean, const py::array& rstd) {
  ArrayArg X = fg::bind::f32_arg(x, "x");
  RowsView v = split(X, normalized_ndim, "x");
  const float* w = optional_in(weight, "weight", v.normalized);
  const float* b = optional_in(bias, "bias", v.normalized);
  float* y = out_arg(out, "out", X.shape);
  float* m = out_arg(mean, "mean", v.batch);
  float* r = out_arg(rstd, "rstd", v.batch);
  check_eps(eps);
  fg::bind::check_no_overlap("layer_norm_forward", {{x, "x"}, {weight, "weight"}, {bias, "bias"}},
                             {{out, "out"}, {mean, "mean"}, {rstd, "rstd"}});
  py::gil_scoped_release release;
  fg::layer_norm_forward(X.f32(), w, b, v.rows, v.D, eps, y, m, r);
}

void ln_backward(const py::array& grad, const py::array& x, const py::array& mean, const py::array& rstd,
                 const py::object& weight, const py::object& grad_x, const py::object& grad_weight,
                 const py::object& grad_bias) {
  ArrayArg X = fg::bind::f32_arg(x, "x"), G = fg::bind::f32_arg(grad, "grad");
  ArrayArg M = fg::bind::f32_arg(mean, "mean"), R = fg::bind::f32_arg(rstd, "rstd");
  fg::bind::expect_shape(G, "grad", X.shape);
  RowsView v = split_by_stat(X, M, "mean");
  fg::bind::expect_shape(R, "rstd", v.batch);
  const float* w = optional_in(weight, "weight", v.normalized);
  float* gx = optional_out(grad_x, "grad_x", X.shape);
  float* gw = optional_out(grad_weight, "grad_weight", v.normalized);
  float* gb = optional_out(grad_bias, "grad_bias", v.normalized);
  fg::bind::check_no_overlap("layer_norm_backward",
                             {{grad, "grad"}, {x, "x"}, {mean, "mean"}, {rstd, "rstd"}, {weight, "weight"}},
                             {{grad_x, "grad_x"}, {grad_weight, "grad_weight"}, {grad_bias, "grad_bias"}});
  py::gil_scoped_release release;
  fg::layer_norm_backward(G.f32(), X.f32(), M.f32(), R.f32(), w, v.rows, v.D, gx, gw, gb);
}

void rms_forward(const py::array& x, int64_t normalized_ndim, const py::object& weight, float eps, const py::array& out,
                 const py::array& rstd) {
  ArrayArg X = fg::bind::f32_arg(x, "x");
  RowsView v = split(X, normalized_ndim, "x");
  const float* w = optional_in(weight, "weight", v.normalized);
  float* y = out_arg(out, "out", X.shape);
  float* r = out_arg(rstd, "rstd", v.batch);
  check_eps(eps);
  fg::bind::check_no_overlap("rms_norm_forward", {{x, "x"}, {weight, "weight"}}, {{out, "out"}, {rstd, "rstd"}});
  py::gil_scoped_release release;
  fg::rms_norm_forward(X.f32(), w, v.rows, v.D, eps, y, r);
}

void rms_backward(const py::array& grad, const py::array& x, const py::array& rstd, const py::object& weight,
                  const py::object& grad_x, const py::object& grad_weight) {
  ArrayArg X = fg::bind::f32_arg(x, "x"), G = fg::bind::f32_arg(grad, "grad");
  ArrayArg R = fg::bind::f32_arg(rstd, "rstd");
  fg::bind::expect_shape(G, "grad", X.shape);
  RowsView v = split_by_stat(X, R, "rstd");
  const float* w = optional_in(weight, "weight", v.normalized);
  float* gx = optional_out(grad_x, "grad_x", X.shape);
  float* gw = optional_out(grad_weight, "grad_weight", v.normalized);
  fg::bind::check_no_overlap("rms_norm_backward", {{grad, "grad"}, {x, "x"}, {rstd, "rstd"}, {weight, "weight"}},
                             {{grad_x, "grad_x"}, {grad_weight, "grad_weight"}});
  py::gil_scoped_release release;
  fg::rms_norm_backward(G.f32(), X.f32(), R.f32(), w, v.rows, v.D, gx, gw);
}

void bind(py::module_& m) {
  m.def("layer_norm_forward", &ln_forward, py::arg("x"), py::arg("normalized_ndim"), py::arg("weight"), py::arg("bias"),
        py::arg("eps"), py::arg("out"), py::arg("mean"), py::arg("rstd"),
        "out = (x - mean) * rstd * weight + bias over the last normalized_ndim axes of x; mean and rstd "
        "(1 / sqrt(biased var + eps)) get the batch shape (x's leading axes). weight / bias: None or the "
        "normalized shape.");
  m.def("layer_norm_backward", &ln_backward, py::arg("grad"), py::arg("x"), py::arg("mean"), py::arg("rstd"),
        py::arg("weight"), py::arg("grad_x"), py::arg("grad_weight"), py::arg("grad_bias"),
        "Fills grad_x, grad_weight, grad_bias (each None when not needed) of layer_norm_forward; the "
        "normalized axes are those of x after mean's shape.");
  m.def("rms_norm_forward", &rms_forward, py::arg("x"), py::arg("normalized_ndim"), py::arg("weight"), py::arg("eps"),
        py::arg("out"), py::arg("rstd"),
        "out = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps) over the last normalized_ndim axes.");
  m.def("rms_norm_backward", &rms_backward, py::arg("grad"), py::arg("x"), py::arg("rstd"), py::arg("weight"),
        py::arg("grad_x"), py::arg("grad_weight"),
        "Fills grad_x and grad_weight (each None when not needed) of rms_norm_forward.");
}

}  // namespace

FG_REGISTER_BINDINGS(layernorm, bind)
