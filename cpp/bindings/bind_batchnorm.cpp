// forgegrad._C.batchnorm: batch normalisation forward / backward on numpy arrays viewed as
// (N, C, L). Every array is checked against N, C, L here.
#include <string>

#include "forgegrad/batchnorm.h"
#include "forgegrad/bindings.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

struct NCL {
  int64_t N, C, L;
};

NCL ncl_of(const ArrayArg& x, const char* name) {
  if (x.ndim < 2 || x.ndim > 4)
    throw py::value_error(std::string(name) + " must be 2-D, 3-D or 4-D (N, C, ...), got shape " +
                          fg::bind::shape_str(x.shape));
  NCL r{x.shape[0], x.shape[1], 1};
  for (int i = 2; i < x.ndim; ++i) r.L *= x.shape[i];
  if (r.C < 1) throw py::value_error(std::string(name) + " must have at least one channel");
  return r;
}

// An optional per-channel (C,) float32 array; returns its data or null for None.
float* channel_arg(const py::object& o, const char* name, int64_t C, bool writable) {
  if (o.is_none()) return nullptr;
  ArrayArg a = fg::bind::f32_arg(o.cast<py::array>(), name, 1, fg::bind::kContiguous, writable);
  fg::bind::expect_shape(a, name, {C});
  return a.f32();
}

void forward(const py::array& x, const py::object& weight, const py::object& bias, const py::object& running_mean,
             const py::object& running_var, bool training, float momentum, float eps, const py::array& y,
             const py::array& save_mean, const py::array& save_invstd) {
  ArrayArg X = fg::bind::f32_arg(x, "input");
  NCL s = ncl_of(X, "input");
  ArrayArg Y = fg::bind::f32_arg(y, "out", -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(Y, "out", X.shape);
  float* w = channel_arg(weight, "weight", s.C, false);
  float* b = channel_arg(bias, "bias", s.C, false);
  float* rm = channel_arg(running_mean, "running_mean", s.C, true);
  float* rv = channel_arg(running_var, "running_var", s.C, true);
  float* sm = channel_arg(save_mean, "save_mean", s.C, true);
  float* si = channel_arg(save_invstd, "save_invstd", s.C, true);
  if (training && s.N * s.L < 2)
    throw py::value_error("batch_norm: expected more than 1 value per channel when training, got input of shape " +
                          fg::bind::shape_str(X.shape));
  if (!training && (!rm || !rv)) throw py::value_error("batch_norm: evaluation needs running_mean and running_var");
  if ((rm == nullptr) != (rv == nullptr))
    throw py::value_error("batch_norm: give both running_mean and running_var, or neither");
  if (!(eps >= 0.0f)) throw py::value_error("batch_norm: eps must be >= 0");
  fg::bind::check_no_overlap("batch_norm_forward", {{x, "input"}, {weight, "weight"}, {bias, "bias"}},
                             {{running_mean, "running_mean", training},
                              {running_var, "running_var", training},
                              {y, "out"},
                              {save_mean, "save_mean"},
                              {save_invstd, "save_invstd"}});
  py::gil_scoped_release release;
  fg::batch_norm_forward(s.N, s.C, s.L, X.f32(), w, b, rm, rv, training, momentum, eps, Y.f32(), sm, si);
}

void backward(const py::array& x, const py::array& gy, const py::object& weight, const py::array& save_mean,
              const py::array& save_invstd, bool training, const py::object& gx, const py::object& gw,
              const py::object& gb) {
  ArrayArg X = fg::bind::f32_arg(x, "input");
  NCL s = ncl_of(X, "input");
  ArrayArg GY = fg::bind::f32_arg(gy, "grad_output");
  fg::bind::expect_shape(GY, "grad_output", X.shape);
  float* w = channel_arg(weight, "weight", s.C, false);
  float* sm = channel_arg(save_mean, "save_mean", s.C, false);
  float* si = channel_arg(save_invstd, "save_invstd", s.C, false);
  float* gxp = nullptr;
  if (!gx.is_none()) {
    ArrayArg GX = fg::bind::f32_arg(gx.cast<py::array>(), "grad_input", -1, fg::bind::kContiguous, true);
    fg::bind::expect_shape(GX, "grad_input", X.shape);
    gxp = GX.f32();
  }
  float* gwp = channel_arg(gw, "grad_weight", s.C, true);
  float* gbp = channel_arg(gb, "grad_bias", s.C, true);
  fg::bind::check_no_overlap(
      "batch_norm_backward",
      {{x, "input"}, {gy, "grad_output"}, {weight, "weight"}, {save_mean, "save_mean"}, {save_invstd, "save_invstd"}},
      {{gx, "grad_input"}, {gw, "grad_weight"}, {gb, "grad_bias"}});
  py::gil_scoped_release release;
  fg::batch_norm_backward(s.N, s.C, s.L, X.f32(), GY.f32(), w, sm, si, training, gxp, gwp, gbp);
}

void bind(py::module_& m) {
  m.def("batch_norm_forward", &forward, py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("running_mean"),
        py::arg("running_var"), py::arg("training"), py::arg("momentum"), py::arg("eps"), py::arg("out"),
        py::arg("save_mean"), py::arg("save_invstd"));
  m.def("batch_norm_backward", &backward, py::arg("input"), py::arg("grad_output"), py::arg("weight"),
        py::arg("save_mean"), py::arg("save_invstd"), py::arg("training"), py::arg("grad_input"),
        py::arg("grad_weight"), py::arg("grad_bias"));
}

}  // namespace

FG_REGISTER_BINDINGS(batchnorm, bind)
