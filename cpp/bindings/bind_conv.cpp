// forgegrad._C.conv: conv2d forward / backward on numpy arrays. Every shape and the geometry are
// checked here (python/forgegrad/kernels/conv.py checks them first with friendlier messages), so
// no argument can make a kernel read or write out of bounds.
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/conv.h"
#include "forgegrad/py_array.h"
#include <pybind11/stl.h>

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

using Pair = std::pair<int64_t, int64_t>;
using Quad = std::tuple<int64_t, int64_t, int64_t, int64_t>;

// Geometry from x's and weight's shapes and the hyper-parameters; throws ValueError if invalid.
fg::Conv2dGeom make_geom(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws, Pair stride,
                         Quad padding, Pair dilation, int64_t groups) {
  fg::Conv2dGeom g{};
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3];
  g.OC = ws[0], g.KH = ws[2], g.KW = ws[3];
  g.groups = groups;
  g.stride_h = stride.first, g.stride_w = stride.second;
  g.dil_h = dilation.first, g.dil_w = dilation.second;
  std::tie(g.pad_top, g.pad_bottom, g.pad_left, g.pad_right) = padding;
  if (g.stride_h < 1 || g.stride_w < 1) throw py::value_error("conv2d: stride must be >= 1");
  if (g.dil_h < 1 || g.dil_w < 1) throw py::value_error("conv2d: dilation must be >= 1");
  if (g.pad_top < 0 || g.pad_bottom < 0 || g.pad_left < 0 || g.pad_right < 0)
    throw py::value_error("conv2d: padding must be >= 0");
  if (groups < 1) throw py::value_error("conv2d: groups must be >= 1");
  if (g.N < 0 || g.C < 1 || g.H < 1 || g.W < 1)
    throw py::value_error("conv2d: input must have shape (N, C>=1, H>=1, W>=1), got " + fg::bind::shape_str(xs));
  if (g.OC < 1 || g.KH < 1 || g.KW < 1)
    throw py::value_error("conv2d: weight must have nonzero sizes, got " + fg::bind::shape_str(ws));
  if (g.C % groups || g.OC % groups)
    throw py::value_error("conv2d: in_channels (" + std::to_string(g.C) + ") and out_channels (" +
                          std::to_string(g.OC) + ") must be divisible by groups (" + std::to_string(groups) + ")");
  if (ws[1] != g.C / groups)
    throw py::value_error("conv2d: weight must have shape (out_channels, in_channels / groups, kH, kW) = " +
                          fg::bind::shape_str({g.OC, g.C / groups, g.KH, g.KW}) + ", got " + fg::bind::shape_str(ws));
  g.OH = fg::conv_out_size(g.H, g.pad_top, g.pad_bottom, g.KH, g.stride_h, g.dil_h);
  g.OW = fg::conv_out_size(g.W, g.pad_left, g.pad_right, g.KW, g.stride_w, g.dil_w);
  if (g.OH < 1 || g.OW < 1)
    throw py::value_error("conv2d: kernel size (dilated) is larger than the padded input");
  return g;
}

void conv2d_forward(const py::array& x, const py::array& w, const py::object& b, const py::array& y,
                    Pair stride, Quad padding, Pair dilation, int64_t groups) {
  ArrayArg X = fg::bind::f32_arg(x, "input", 4), Wt = fg::bind::f32_arg(w, "weight", 4);
  ArrayArg Y = fg::bind::f32_arg(y, "out", 4, fg::bind::kContiguous, true);
  fg::Conv2dGeom g = make_geom(X.shape, Wt.shape, stride, padding, dilation, groups);
  const float* bias = nullptr;
  if (!b.is_none()) {
    ArrayArg B = fg::bind::f32_arg(b.cast<py::array>(), "bias", 1);
    fg::bind::expect_shape(B, "bias", {g.OC});
    bias = B.f32();
  }
  fg::bind::expect_shape(Y, "out", {g.N, g.OC, g.OH, g.OW});
  py::gil_scoped_release release;
  fg::conv2d_forward(g, X.f32(), Wt.f32(), bias, Y.f32());
}

void conv2d_backward_input(const py::array& gy, const py::array& w, const py::array& gx, Pair stride,
                           Quad padding, Pair dilation, int64_t groups) {
  ArrayArg GY = fg::bind::f32_arg(gy, "grad_output", 4), Wt = fg::bind::f32_arg(w, "weight", 4);
  ArrayArg GX = fg::bind::f32_arg(gx, "grad_input", 4, fg::bind::kContiguous, true);
  fg::Conv2dGeom g = make_geom(GX.shape, Wt.shape, stride, padding, dilation, groups);
  fg::bind::expect_shape(GY, "grad_output", {g.N, g.OC, g.OH, g.OW});
  py::gil_scoped_release release;
  fg::conv2d_backward_input(g, Wt.f32(), GY.f32(), GX.f32());
}

void conv2d_backward_weight(const py::array& x, const py::array& gy, const py::object& gw,
                            const py::object& gb, std::vector<int64_t> weight_shape, Pair stride,
                            Quad padding, Pair dilation, int64_t groups) {
  ArrayArg X = fg::bind::f32_arg(x, "input", 4), GY = fg::bind::f32_arg(gy, "grad_output", 4);
  if (weight_shape.size() != 4) throw py::value_error("conv2d: weight_shape must have 4 entries");
  fg::Conv2dGeom g = make_geom(X.shape, weight_shape, stride, padding, dilation, groups);
  fg::bind::expect_shape(GY, "grad_output", {g.N, g.OC, g.OH, g.OW});
  float* gwp = nullptr;
  float* gbp = nullptr;
  if (!gw.is_none()) {
    ArrayArg GW = fg::bind::f32_arg(gw.cast<py::array>(), "grad_weight", 4, fg::bind::kContiguous, true);
    fg::bind::expect_shape(GW, "grad_weight", weight_shape);
    gwp = GW.f32();
  }
  if (!gb.is_none()) {
    ArrayArg GB = fg::bind::f32_arg(gb.cast<py::array>(), "grad_bias", 1, fg::bind::kContiguous, true);
    fg::bind::expect_shape(GB, "grad_bias", {g.OC});
    gbp = GB.f32();
  }
  if (!gwp && !gbp) return;
  py::gil_scoped_release release;
  fg::conv2d_backward_weight(g, X.f32(), GY.f32(), gwp, gbp);
}

void bind(py::module_& m) {
  m.def("conv2d_forward", &conv2d_forward, py::arg("input"), py::arg("weight"), py::arg("bias"),
        py::arg("out"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        "out = conv2d(input, weight) + bias; padding is (top, bottom, left, right).");
  m.def("conv2d_backward_input", &conv2d_backward_input, py::arg("grad_output"), py::arg("weight"),
        py::arg("grad_input"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
        py::arg("groups"), "grad_input (overwritten) of conv2d.");
  m.def("conv2d_backward_weight", &conv2d_backward_weight, py::arg("input"), py::arg("grad_output"),
        py::arg("grad_weight"), py::arg("grad_bias"), py::arg("weight_shape"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        "grad_weight and grad_bias (either may be None; overwritten) of conv2d.");
}

}  // namespace

FG_REGISTER_BINDINGS(conv, bind)
