// forgegrad._C.conv: conv2d forward / backward on numpy arrays, and the conv geometry itself
// (resolve_padding, geometry, weight_shape): padding forms, output sizes and every argument check
// are written here once, and Python (python/forgegrad/kernels/geometry.py: the kernels, the layers,
// the ONNX exporter) asks these functions instead of recomputing. Every shape is checked and all
// size arithmetic is overflow-checked, so no argument can make a kernel read or write out of bounds.
#include <cctype>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <pybind11/stl.h>
#include "forgegrad/activation.h"
#include "forgegrad/bindings.h"
#include "forgegrad/conv.h"
#include "forgegrad/conv_implicit.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/memory.h"
#include "forgegrad/packed_weights.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

using Pair = std::pair<int64_t, int64_t>;
using Quad = std::tuple<int64_t, int64_t, int64_t, int64_t>;

[[noreturn]] void fail(const std::string& op, const std::string& msg) { throw py::value_error(op + ": " + msg); }

std::string str(Pair p) { return fg::bind::shape_str({p.first, p.second}); }
std::string str(const Quad& q) {
  return fg::bind::shape_str({std::get<0>(q), std::get<1>(q), std::get<2>(q), std::get<3>(q)});
}
std::string repr_of(py::handle h) { return py::repr(h).cast<std::string>(); }

// A Python int (or numpy integer; not a bool) as int64. false: not an int; an int outside int64
// raises ValueError naming the argument.
bool int64_of(py::handle h, const std::string& op, const char* name, int64_t* out) {
  if (PyBool_Check(h.ptr()) || !PyIndex_Check(h.ptr())) return false;
  py::object i = py::reinterpret_steal<py::object>(PyNumber_Index(h.ptr()));
  if (!i) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
  if (overflow) fail(op, std::string(name) + " " + repr_of(h) + " is out of the int64 range");
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  *out = v;
  return true;
}

[[noreturn]] void too_large(const std::string& op, const char* arg, const std::string& what) {
  fail(op, std::string(arg) + " is too large: " + what);
}

void check_window_args(const std::string& op, Pair k, Pair s, Pair d) {
  if (k.first < 1 || k.second < 1) fail(op, "kernel_size must be >= 1, got " + str(k));
  if (s.first < 1 || s.second < 1) fail(op, "stride must be >= 1, got " + str(s));
  if (d.first < 1 || d.second < 1) fail(op, "dilation must be >= 1, got " + str(d));
}

void check_groups(const std::string& op, int64_t C, int64_t OC, int64_t groups) {
  if (groups < 1) fail(op, "groups must be >= 1, got " + std::to_string(groups));
  if (C % groups)
    fail(op, "in_channels (" + std::to_string(C) + ") must be divisible by groups (" + std::to_string(groups) + ")");
  if (OC % groups)
    fail(op, "out_channels (" + std::to_string(OC) + ") must be divisible by groups (" + std::to_string(groups) + ")");
}

// The padding argument in torch's forms: an int, a pair (ph, pw), (top, bottom, left, right),
// "valid" or "same" (stride 1 only; an odd total puts the extra pixel on the bottom/right), or with
// keras=True Keras' "valid" / "same" (any case; "same" for any stride, from the input size). Returns
// (top, bottom, left, right); std::nullopt only for Keras "same" without input_size.
std::optional<Quad> resolve_padding(const std::string& op, py::handle padding, Pair k, Pair s, Pair d,
                                    const std::optional<Pair>& input_size, bool keras) {
  check_window_args(op, k, s, d);
  if (keras) {
    std::string mode = py::isinstance<py::str>(padding) ? padding.cast<std::string>() : "";
    for (char& c : mode) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (mode == "valid") return Quad{0, 0, 0, 0};
    if (mode != "same") fail(op, "padding must be 'valid' or 'same', got " + repr_of(padding));
    if (!input_size) return std::nullopt;
    const auto [h, w] = *input_size;
    if (h < 1 || w < 1) fail(op, "input_size must be >= 1, got " + str(*input_size));
    Quad q;
    const char* bad = fg::keras_same_padding(h, k.first, s.first, d.first, &std::get<0>(q), &std::get<1>(q));
    if (!bad) bad = fg::keras_same_padding(w, k.second, s.second, d.second, &std::get<2>(q), &std::get<3>(q));
    if (bad)
      too_large(op, bad,
                "the 'same' padding of kernel_size " + str(k) + " with dilation " + str(d) + " overflows int64");
    return q;
  }
  if (py::isinstance<py::str>(padding)) {
    const std::string mode = padding.cast<std::string>();
    if (mode == "valid") return Quad{0, 0, 0, 0};
    if (mode != "same") fail(op, "padding must be an int, a pair, 'same' or 'valid', got " + repr_of(padding));
    if (s != Pair{1, 1})
      fail(op, "padding='same' is not supported for strided convolutions (stride must be 1), got stride " + str(s));
    Quad q;
    const char* bad = fg::conv_same_padding(k.first, d.first, &std::get<0>(q), &std::get<1>(q));
    if (!bad) bad = fg::conv_same_padding(k.second, d.second, &std::get<2>(q), &std::get<3>(q));
    if (bad)
      too_large(op, bad,
                "the 'same' padding of kernel_size " + str(k) + " with dilation " + str(d) + " overflows int64");
    return q;
  }
  std::vector<int64_t> v;
  int64_t one;
  if (int64_of(padding, op, "padding", &one)) {
    v = {one};
  } else if (PyTuple_Check(padding.ptr()) || PyList_Check(padding.ptr())) {
    for (py::handle e : padding) {
      if (!int64_of(e, op, "padding", &one)) {
        v.clear();  // not all ints: rejected below
        break;
      }
      v.push_back(one);
    }
  }
  if (v.size() != 1 && v.size() != 2 && v.size() != 4)
    throw py::type_error(op +
                         ": padding must be an int, a pair of ints, (top, bottom, left, right), 'same' or "
                         "'valid', got " +
                         repr_of(padding));
  for (int64_t e : v)
    if (e < 0) fail(op, "padding must be >= 0, got " + repr_of(padding));
  if (v.size() == 1) return Quad{v[0], v[0], v[0], v[0]};
  if (v.size() == 2) return Quad{v[0], v[0], v[1], v[1]};
  return Quad{v[0], v[1], v[2], v[3]};
}

// Geometry from x's and weight's shapes and the resolved hyper-parameters; throws ValueError (naming
// the argument) if invalid, including any size whose arithmetic would overflow int64 here or in
// the kernels (every workspace the kernels may allocate is bounded by fg::kMaxElements).
fg::Conv2dGeom make_geom(const std::string& op, const std::vector<int64_t>& xs, const std::vector<int64_t>& ws,
                         Pair stride, Quad padding, Pair dilation, int64_t groups) {
  fg::Conv2dGeom g{};
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3];
  g.OC = ws[0], g.KH = ws[2], g.KW = ws[3];
  g.groups = groups;
  g.stride_h = stride.first, g.stride_w = stride.second;
  g.dil_h = dilation.first, g.dil_w = dilation.second;
  std::tie(g.pad_top, g.pad_bottom, g.pad_left, g.pad_right) = padding;
  if (g.stride_h < 1 || g.stride_w < 1) fail(op, "stride must be >= 1, got " + str(stride));
  if (g.dil_h < 1 || g.dil_w < 1) fail(op, "dilation must be >= 1, got " + str(dilation));
  if (g.pad_top < 0 || g.pad_bottom < 0 || g.pad_left < 0 || g.pad_right < 0)
    fail(op, "padding must be >= 0, got (top, bottom, left, right) = " + str(padding));
  if (groups < 1) fail(op, "groups must be >= 1, got " + std::to_string(groups));
  if (g.N < 0 || g.C < 1 || g.H < 1 || g.W < 1)
    fail(op, "input must have shape (N, C>=1, H>=1, W>=1), got " + fg::bind::shape_str(xs));
  if (g.OC < 1 || ws[1] < 1 || g.KH < 1 || g.KW < 1)
    fail(op, "weight must have nonzero sizes, got " + fg::bind::shape_str(ws));
  check_groups(op, g.C, g.OC, groups);
  if (ws[1] != g.C / groups)
    fail(op, "weight must have shape (out_channels, in_channels / groups, kH, kW) = " +
                 fg::bind::shape_str({g.OC, g.C / groups, g.KH, g.KW}) + " for input of shape " +
                 fg::bind::shape_str(xs) + " and groups=" + std::to_string(groups) + ", got " +
                 fg::bind::shape_str(ws));
  const auto describe = [&](const char* why) {
    return "input " + fg::bind::shape_str(xs) + ", weight " + fg::bind::shape_str(ws) + ", stride " + str(stride) +
           ", padding (top, bottom, left, right) " + str(padding) + ", dilation " + str(dilation) + " " + why;
  };
  const char* bad = fg::conv_out_size(g.H, g.pad_top, g.pad_bottom, g.KH, g.stride_h, g.dil_h, &g.OH);
  if (!bad) bad = fg::conv_out_size(g.W, g.pad_left, g.pad_right, g.KW, g.stride_w, g.dil_w, &g.OW);
  if (bad) too_large(op, bad, describe("overflow int64"));
  const int64_t Hp = g.H + g.pad_top + g.pad_bottom, Wp = g.W + g.pad_left + g.pad_right;  // checked above
  const int64_t EH = g.dil_h * (g.KH - 1) + 1, EW = g.dil_w * (g.KW - 1) + 1;
  if (g.OH < 1 || g.OW < 1)
    fail(op, "kernel size " + str(Pair{g.KH, g.KW}) + " with dilation " + str(dilation) + " spans " +
                 str(Pair{EH, EW}) + ", larger than the padded input " + str(Pair{Hp, Wp}));
  // Every array and workspace the kernels index: input, weight, output, the zero-padded image of
  // the direct path, the padded grad_output of backward_input, the im2col panel.
  const int64_t Cg = g.C / groups, OCg = g.OC / groups;
  const char* big = "need an array or workspace of more than 2^58 elements";
  int64_t n;
  if (!fg::checked_elements({g.N, g.C, g.H, g.W}, &n)) too_large(op, "input", describe(big));
  if (!fg::checked_elements({g.OC, Cg, g.KH, g.KW}, &n)) too_large(op, "kernel_size", describe(big));
  if (!fg::checked_elements({g.N, g.OC, g.OH, g.OW}, &n) || !fg::checked_elements({Cg, Hp + 1, Wp + 1}, &n))
    too_large(op, "padding", describe(big));
  if (!fg::checked_elements({OCg, g.H + EH, g.W + EW}, &n) || !fg::checked_elements({Cg, g.KH, g.KW, g.OH, g.OW}, &n))
    too_large(op, "kernel_size", describe(big));
  return g;
}

fg::Conv2dGeom make_geom(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws, Pair stride, Quad padding,
                         Pair dilation, int64_t groups) {
  return make_geom("conv2d", xs, ws, stride, padding, dilation, groups);
}

using fg::bind::PackedConvWeight;  // forgegrad/packed_weights.h (shared with _C.plan)

std::unique_ptr<PackedConvWeight> pack_conv_weight(const py::array& w, int64_t groups) {
  ArrayArg Wt = fg::bind::f32_arg(w, "weight", 4);
  if (groups < 1 || Wt.shape[0] % groups != 0)
    throw py::value_error("PackedConvWeight: groups must be >= 1 and divide out_channels " +
                          std::to_string(Wt.shape[0]) + ", got " + std::to_string(groups));
  auto p = std::make_unique<PackedConvWeight>();
  p->source = w;
  p->groups = groups;
  p->isa = fg::active_isa();
  const auto& s = Wt.shape;
  const int64_t floats = fg::conv2d_winograd_pack(s[0], s[1], s[2], s[3], groups, Wt.f32(), nullptr);
  if (floats > 0) {
    p->buf.reset(static_cast<std::size_t>(floats));
    py::gil_scoped_release release;
    fg::conv2d_winograd_pack(s[0], s[1], s[2], s[3], groups, Wt.f32(), p->buf.data());
  }
  return p;
}

void conv2d_forward(const py::array& x, const py::array& w, const py::object& b, const py::array& y, Pair stride,
                    Quad padding, Pair dilation, int64_t groups, int activation, float alpha, bool max_pool2x2,
                    const PackedConvWeight* packed) {
  if (activation < -1 || activation >= fg::kActCount)
    throw py::value_error("conv2d: activation must be -1 (none) or an activation code, got " +
                          std::to_string(activation));
  ArrayArg X = fg::bind::f32_arg(x, "input", 4), Wt = fg::bind::f32_arg(w, "weight", 4);
  ArrayArg Y = fg::bind::f32_arg(y, "out", 4, fg::bind::kContiguous, true);
  fg::Conv2dGeom g = make_geom(X.shape, Wt.shape, stride, padding, dilation, groups);
  const float* bias = nullptr;
  if (!b.is_none()) {
    ArrayArg B = fg::bind::f32_arg(b.cast<py::array>(), "bias", 1);
    fg::bind::expect_shape(B, "bias", {g.OC});
    bias = B.f32();
  }
  if (max_pool2x2 && (g.OH < 2 || g.OW < 2))
    fail("conv2d",
         "max_pool2x2 needs a conv output of at least 2 x 2 for its 2 x 2 window, got " + str(Pair{g.OH, g.OW}));
  if (max_pool2x2)
    fg::bind::expect_shape(Y, "out", {g.N, g.OC, g.OH / 2, g.OW / 2});
  else
    fg::bind::expect_shape(Y, "out", {g.N, g.OC, g.OH, g.OW});
  fg::bind::check_no_overlap("conv2d", {{x, "input"}, {w, "weight"}, {b, "bias"}}, {{y, "out"}});
  if (packed && !packed->source.is(w))
    throw py::value_error("conv2d: packed was made from another array than weight (pack the weight passed)");
  if (packed && packed->groups != groups)
    throw py::value_error("conv2d: packed was made for groups=" + std::to_string(packed->groups) +
                          ", got groups=" + std::to_string(groups));
  // made under another SIMD path (fg.set_simd since): its layout differs, so the weight is read as it is
  const float* U = packed && packed->isa == fg::active_isa() && packed->buf.size() > 0 ? packed->buf.data() : nullptr;
  py::gil_scoped_release release;
  fg::conv2d_forward(g, X.f32(), Wt.f32(), bias, Y.f32(), activation, alpha, max_pool2x2, U);
}

// A forward path called directly (conv2d_forward routes only the shapes where it is faster): its tests run it on
// any geometry. `kernel`: fg::conv2d_forward_implicit or fg::conv2d_forward_ocv (which runs the implicit GEMM where
// its tile does not apply).
using DirectForward = void (*)(const fg::Conv2dGeom&, const float*, const float*, const float*, float*, int, float);
void direct_forward(const char* name, DirectForward kernel, const py::array& x, const py::array& w, const py::object& b,
                    const py::array& y, Pair stride, Quad padding, Pair dilation, int64_t groups, int activation,
                    float alpha) {
  if (activation < -1 || activation >= fg::kActCount)
    throw py::value_error(std::string(name) + ": activation must be -1 (none) or an activation code, got " +
                          std::to_string(activation));
  ArrayArg X = fg::bind::f32_arg(x, "input", 4), Wt = fg::bind::f32_arg(w, "weight", 4);
  ArrayArg Y = fg::bind::f32_arg(y, "out", 4, fg::bind::kContiguous, true);
  fg::Conv2dGeom g = make_geom(name, X.shape, Wt.shape, stride, padding, dilation, groups);
  const float* bias = nullptr;
  if (!b.is_none()) {
    ArrayArg B = fg::bind::f32_arg(b.cast<py::array>(), "bias", 1);
    fg::bind::expect_shape(B, "bias", {g.OC});
    bias = B.f32();
  }
  fg::bind::expect_shape(Y, "out", {g.N, g.OC, g.OH, g.OW});
  fg::bind::check_no_overlap(name, {{x, "input"}, {w, "weight"}, {b, "bias"}}, {{y, "out"}});
  if (!fg::conv2d_implicit_supported(g))
    fail(name, "input must have fewer than 2**31 elements, got " + std::to_string(g.N) + " x " +
                   std::to_string(g.C * g.H * g.W));
  py::gil_scoped_release release;
  kernel(g, X.f32(), Wt.f32(), bias, Y.f32(), activation, alpha);
}

void conv2d_forward_implicit(const py::array& x, const py::array& w, const py::object& b, const py::array& y,
                             Pair stride, Quad padding, Pair dilation, int64_t groups, int activation, float alpha) {
  direct_forward("conv2d_forward_implicit", &fg::conv2d_forward_implicit, x, w, b, y, stride, padding, dilation, groups,
                 activation, alpha);
}

void conv2d_forward_ocv(const py::array& x, const py::array& w, const py::object& b, const py::array& y, Pair stride,
                        Quad padding, Pair dilation, int64_t groups, int activation, float alpha) {
  direct_forward("conv2d_forward_ocv", &fg::conv2d_forward_ocv, x, w, b, y, stride, padding, dilation, groups,
                 activation, alpha);
}

void conv2d_backward_input(const py::array& gy, const py::array& w, const py::array& gx, Pair stride, Quad padding,
                           Pair dilation, int64_t groups) {
  ArrayArg GY = fg::bind::f32_arg(gy, "grad_output", 4), Wt = fg::bind::f32_arg(w, "weight", 4);
  ArrayArg GX = fg::bind::f32_arg(gx, "grad_input", 4, fg::bind::kContiguous, true);
  fg::Conv2dGeom g = make_geom(GX.shape, Wt.shape, stride, padding, dilation, groups);
  fg::bind::expect_shape(GY, "grad_output", {g.N, g.OC, g.OH, g.OW});
  fg::bind::check_no_overlap("conv2d_backward_input", {{gy, "grad_output"}, {w, "weight"}}, {{gx, "grad_input"}});
  py::gil_scoped_release release;
  fg::conv2d_backward_input(g, Wt.f32(), GY.f32(), GX.f32());
}

void conv2d_backward_weight(const py::array& x, const py::array& gy, const py::object& gw, const py::object& gb,
                            std::vector<int64_t> weight_shape, Pair stride, Quad padding, Pair dilation,
                            int64_t groups) {
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
  fg::bind::check_no_overlap(
      "conv2d_backward_weight",
      {{x, "input", false}, {gy, "grad_output", false}, {gw, "grad_weight", true}, {gb, "grad_bias", true}});
  py::gil_scoped_release release;
  fg::conv2d_backward_weight(g, X.f32(), GY.f32(), gwp, gbp);
}

// cols (B, KD, KH, KW, D, H, W) <-> out (B, D * KD, H * KH, W * KW) (conv_taps_interleave); gather reads out.
void conv_taps(const py::array& cols, const py::array& out, bool gather) {
  const char* op = gather ? "conv_taps_gather" : "conv_taps_scatter";
  ArrayArg C = fg::bind::f32_arg(cols, "cols", 7, fg::bind::kContiguous, gather);
  ArrayArg O = fg::bind::f32_arg(out, "out", 4, fg::bind::kContiguous, !gather);
  const int64_t sp[3] = {C.shape[4], C.shape[5], C.shape[6]}, k[3] = {C.shape[1], C.shape[2], C.shape[3]};
  fg::bind::expect_shape(O, "out", {C.shape[0], sp[0] * k[0], sp[1] * k[1], sp[2] * k[2]});
  if (gather)
    fg::bind::check_no_overlap(op, {{out, "out"}}, {{cols, "cols"}});
  else
    fg::bind::check_no_overlap(op, {{cols, "cols"}}, {{out, "out"}});
  if (C.size == 0) return;
  py::gil_scoped_release release;
  fg::conv_taps_interleave(gather ? O.f32() : C.f32(), gather ? C.f32() : O.f32(), C.shape[0], sp, k, gather);
}

// ---- the geometry for Python ---------------------------------------------------------------------

py::object py_resolve_padding(const py::object& padding, Pair kernel_size, Pair stride, Pair dilation,
                              std::optional<Pair> input_size, bool keras, const std::string& op) {
  std::optional<Quad> q = resolve_padding(op, padding, kernel_size, stride, dilation, input_size, keras);
  if (!q) return py::none();
  return py::cast(*q);
}

std::vector<int64_t> shape_arg(const std::string& op, const char* name, const std::vector<int64_t>& v) {
  if (v.size() != 4) fail(op, std::string(name) + " must have 4 entries, got " + fg::bind::shape_str(v));
  return v;
}

// (padding as (top, bottom, left, right), output shape (N, OC, OH, OW)).
std::pair<Quad, std::vector<int64_t>> py_geometry(const std::vector<int64_t>& input_shape,
                                                  const std::vector<int64_t>& weight_shape, Pair stride,
                                                  const py::object& padding, Pair dilation, int64_t groups,
                                                  const std::string& op) {
  const auto xs = shape_arg(op, "input_shape", input_shape), ws = shape_arg(op, "weight_shape", weight_shape);
  if (ws[0] < 1 || ws[1] < 1 || ws[2] < 1 || ws[3] < 1)
    fail(op, "weight must have nonzero sizes, got " + fg::bind::shape_str(ws));
  const Quad pads = *resolve_padding(op, padding, {ws[2], ws[3]}, stride, dilation, std::nullopt, false);
  const fg::Conv2dGeom g = make_geom(op, xs, ws, stride, pads, dilation, groups);
  return {pads, {g.N, g.OC, g.OH, g.OW}};
}

// (out_channels, in_channels / groups, kH, kW) for a layer, with the layer's argument checks.
std::vector<int64_t> py_weight_shape(int64_t in_channels, int64_t out_channels, Pair kernel_size, int64_t groups,
                                     const std::string& op) {
  if (in_channels < 1) fail(op, "in_channels must be >= 1, got " + std::to_string(in_channels));
  if (out_channels < 1) fail(op, "out_channels must be >= 1, got " + std::to_string(out_channels));
  if (kernel_size.first < 1 || kernel_size.second < 1) fail(op, "kernel_size must be >= 1, got " + str(kernel_size));
  check_groups(op, in_channels, out_channels, groups);
  int64_t n;
  if (!fg::checked_elements({out_channels, in_channels / groups, kernel_size.first, kernel_size.second}, &n))
    too_large(op, "kernel_size",
              "the weight " +
                  fg::bind::shape_str({out_channels, in_channels / groups, kernel_size.first, kernel_size.second}) +
                  " would hold more than 2^58 elements");
  return {out_channels, in_channels / groups, kernel_size.first, kernel_size.second};
}

void bind(py::module_& m) {
  py::class_<PackedConvWeight>(m, "PackedConvWeight",
                               "A conv weight's Winograd transform made once (a snapshot); pass it to conv2d_forward "
                               "with that weight.")
      .def(py::init(&pack_conv_weight), py::arg("weight"), py::arg("groups") = 1)
      // a deep copy of a frozen model holds new, writeable weights, which a snapshot would not follow
      .def(
          "__deepcopy__", [](const PackedConvWeight&, py::dict) { return py::none(); }, py::arg("memo"))
      .def_property_readonly("source", [](const PackedConvWeight& p) { return p.source; })
      .def_property_readonly("groups", [](const PackedConvWeight& p) { return p.groups; })
      .def_property_readonly("nbytes", [](const PackedConvWeight& p) { return p.buf.size() * sizeof(float); });
  m.def("conv2d_forward", &conv2d_forward, py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("activation") = -1,
        py::arg("alpha") = 0.0f, py::arg("max_pool2x2").noconvert() = false, py::arg("packed") = py::none(),
        "out = act(conv2d(input, weight) + bias); padding is (top, bottom, left, right); activation an "
        "activation code (-1: none), applied to each block of out as it is written; alpha: leaky_relu's slope. "
        "max_pool2x2: out is the 2x2 / stride 2 max pool (floor) of that, (N, OC, OH // 2, OW // 2), pooled "
        "block by block (the full-size output is never stored). packed: a PackedConvWeight of weight (the "
        "Winograd path then skips the kernels' transform).");
  m.def("conv2d_forward_implicit", &conv2d_forward_implicit, py::arg("input"), py::arg("weight"), py::arg("bias"),
        py::arg("out"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        py::arg("activation") = -1, py::arg("alpha") = 0.0f,
        "conv2d_forward's implicit-GEMM path on any geometry (B panels gathered from the image, no im2col): out = "
        "act(conv2d(input, weight) + bias), the bits conv2d_forward gives where it routes a shape there.");
  m.def("conv2d_forward_ocv", &conv2d_forward_ocv, py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("activation") = -1,
        py::arg("alpha") = 0.0f,
        "conv2d_forward's direct path with output channels along the vector lanes (AVX-512; output channels per "
        "group a multiple of 16, column stride <= 2; the implicit-GEMM path otherwise), on any geometry: out = "
        "act(conv2d(input, weight) + bias), the bits conv2d_forward gives where it routes a shape there.");
  m.def("conv2d_backward_input", &conv2d_backward_input, py::arg("grad_output"), py::arg("weight"),
        py::arg("grad_input"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        "grad_input (overwritten) of conv2d.");
  m.def("conv2d_backward_weight", &conv2d_backward_weight, py::arg("input"), py::arg("grad_output"),
        py::arg("grad_weight"), py::arg("grad_bias"), py::arg("weight_shape"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("groups"),
        "grad_weight and grad_bias (either may be None; overwritten) of conv2d.");
  m.def(
      "conv_taps_scatter", [](const py::array& cols, const py::array& out) { conv_taps(cols, out, false); },
      py::arg("cols"), py::arg("out"),
      "out (B, D * KD, H * KH, W * KW) (overwritten) = cols (B, KD, KH, KW, D, H, W) with each tap's plane "
      "interleaved: out[b, d * KD + a, h * KH + e, w * KW + c] = cols[b, a, e, c, d, h, w] (a transposed conv "
      "whose kernel equals its stride).");
  m.def(
      "conv_taps_gather", [](const py::array& out, const py::array& cols) { conv_taps(cols, out, true); },
      py::arg("out"), py::arg("cols"), "cols (overwritten) from out: conv_taps_scatter's reverse copy.");
  m.def("resolve_padding", &py_resolve_padding, py::arg("padding"), py::arg("kernel_size"),
        py::arg("stride") = Pair{1, 1}, py::arg("dilation") = Pair{1, 1}, py::arg("input_size") = py::none(),
        py::arg("keras") = false, py::arg("op") = "conv2d",
        "padding (int, pair, (top, bottom, left, right), 'valid', 'same'; keras=True: Keras' 'valid' / "
        "'same', which needs input_size (H, W) and otherwise only validates, returning None) -> (top, "
        "bottom, left, right). Raises ValueError / TypeError naming the argument, prefixed by op.");
  m.def("geometry", &py_geometry, py::arg("input_shape"), py::arg("weight_shape"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("op") = "conv2d",
        "Validated conv2d geometry: ((top, bottom, left, right), (N, OC, OH, OW)).");
  m.def("weight_shape", &py_weight_shape, py::arg("in_channels"), py::arg("out_channels"), py::arg("kernel_size"),
        py::arg("groups"), py::arg("op") = "Conv2d",
        "(out_channels, in_channels / groups, kH, kW), checking the channels against groups.");
}

}  // namespace

namespace fg::bind {
fg::Conv2dGeom conv2d_geom(const std::vector<int64_t>& input_shape, const std::vector<int64_t>& weight_shape,
                           std::pair<int64_t, int64_t> stride, std::tuple<int64_t, int64_t, int64_t, int64_t> padding,
                           std::pair<int64_t, int64_t> dilation, int64_t groups) {
  return make_geom(input_shape, weight_shape, stride, padding, dilation, groups);
}
}  // namespace fg::bind

FG_REGISTER_BINDINGS(conv, bind)
