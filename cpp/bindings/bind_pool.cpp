// forgegrad._C.pool: max / average / adaptive average pooling on numpy arrays, and the pooling
// geometry (output_shape) that Python asks instead of recomputing it. The geometry and every shape
// are checked here, in overflow-checked arithmetic; max_pool2d_backward also range-checks the
// indices it scatters to.
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <pybind11/stl.h>
#include "forgegrad/bindings.h"
#include "forgegrad/pool.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

using Pair = std::pair<int64_t, int64_t>;

[[noreturn]] void fail(const std::string& op, const std::string& msg) { throw py::value_error(op + ": " + msg); }
std::string str(Pair p) { return fg::bind::shape_str({p.first, p.second}); }

// Pooling geometry (torch's rules), the one place it is computed and checked: Python asks it through
// output_shape below. Throws ValueError naming the argument, including for sizes whose arithmetic
// would overflow int64 here or in the kernels.
fg::Pool2dGeom make_geom(const std::string& op, const std::vector<int64_t>& xs, Pair k, Pair s, Pair p, Pair d,
                         bool ceil_mode) {
  fg::Pool2dGeom g{};
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3];
  std::tie(g.KH, g.KW) = k;
  std::tie(g.stride_h, g.stride_w) = s;
  std::tie(g.pad_h, g.pad_w) = p;
  std::tie(g.dil_h, g.dil_w) = d;
  if (g.KH < 1 || g.KW < 1) fail(op, "kernel_size must be >= 1, got " + str(k));
  if (g.stride_h < 1 || g.stride_w < 1) fail(op, "stride must be >= 1, got " + str(s));
  if (g.dil_h < 1 || g.dil_w < 1) fail(op, "dilation must be >= 1, got " + str(d));
  if (g.pad_h < 0 || g.pad_w < 0 || g.pad_h > g.KH / 2 || g.pad_w > g.KW / 2)  // 2 * pad could overflow
    fail(op, "padding must be >= 0 and at most half of kernel_size, got padding=" + str(p) + ", kernel_size=" + str(k));
  if (g.N < 0 || g.C < 1 || g.H < 1 || g.W < 1)
    fail(op, "input must have shape (N, C>=1, H>=1, W>=1), got " + fg::bind::shape_str(xs));
  const auto describe = [&](const char* why) {
    return "input " + fg::bind::shape_str(xs) + ", kernel_size " + str(k) + ", stride " + str(s) + ", padding " +
           str(p) + ", dilation " + str(d) + " " + why;
  };
  const char* bad = fg::pool_out_size(g.H, g.KH, g.pad_h, g.stride_h, g.dil_h, ceil_mode, &g.OH);
  if (!bad) bad = fg::pool_out_size(g.W, g.KW, g.pad_w, g.stride_w, g.dil_w, ceil_mode, &g.OW);
  if (bad) fail(op, std::string(bad) + " is too large: " + describe("overflow int64"));
  if (g.OH < 1 || g.OW < 1)
    fail(op, "kernel_size " + str(k) + " (dilation " + str(d) + ") is larger than the padded input " +
                 str({g.H + 2 * g.pad_h, g.W + 2 * g.pad_w}));  // fits: checked by pool_out_size
  // the input, the output and the padded plane an average window's divisor is counted in
  int64_t n;
  if (!fg::checked_elements({g.N, g.C, g.H, g.W}, &n))
    fail(op, "input is too large: " + describe("need more than 2^58 elements"));
  if (!fg::checked_elements({g.N, g.C, g.OH, g.OW}, &n) ||
      !fg::checked_elements({g.H + 2 * g.pad_h, g.W + 2 * g.pad_w}, &n))
    fail(op, "padding is too large: " + describe("need more than 2^58 elements"));
  return g;
}

// float64 arrays take the double kernels; anything else goes to the float32 checks (and their errors).
bool is_float64(const py::array& a) { return a.dtype().kind() == 'f' && a.dtype().itemsize() == 8; }

// indices None: the values alone (inference). float32, or float64 (input and out: the general loop).
void max_fwd(const py::array& x, const py::array& y, const std::optional<py::array>& idx, Pair k, Pair s, Pair p,
             Pair d, bool ceil_mode) {
  const bool f64 = is_float64(x);
  ArrayArg X = f64 ? fg::bind::f64_arg(x, "input", 4) : fg::bind::f32_arg(x, "input", 4);
  ArrayArg Y = f64 ? fg::bind::f64_arg(y, "out", 4, fg::bind::kContiguous, true)
                   : fg::bind::f32_arg(y, "out", 4, fg::bind::kContiguous, true);
  fg::Pool2dGeom g = make_geom("max_pool2d", X.shape, k, s, p, d, ceil_mode);
  fg::bind::expect_shape(Y, "out", {g.N, g.C, g.OH, g.OW});
  int64_t* indices = nullptr;
  if (idx) {
    ArrayArg I = fg::bind::i64_arg(*idx, "indices", 4, fg::bind::kContiguous, true);
    fg::bind::expect_shape(I, "indices", {g.N, g.C, g.OH, g.OW});
    fg::bind::check_no_overlap("max_pool2d", {{x, "input"}}, {{y, "out"}, {*idx, "indices"}});
    indices = I.i64();
  } else {
    fg::bind::check_no_overlap("max_pool2d", {{x, "input"}}, {{y, "out"}});
  }
  py::gil_scoped_release release;
  if (f64)
    fg::max_pool2d_forward(g, X.f64(), Y.f64(), indices);
  else
    fg::max_pool2d_forward(g, X.f32(), Y.f32(), indices);
}

void max_bwd(const py::array& gy, const py::array& idx, const py::array& gx) {
  const bool f64 = is_float64(gy);
  ArrayArg GY = f64 ? fg::bind::f64_arg(gy, "grad_output", 4) : fg::bind::f32_arg(gy, "grad_output", 4);
  ArrayArg I = fg::bind::i64_arg(idx, "indices", 4);
  ArrayArg GX = f64 ? fg::bind::f64_arg(gx, "grad_input", 4, fg::bind::kContiguous, true)
                    : fg::bind::f32_arg(gx, "grad_input", 4, fg::bind::kContiguous, true);
  fg::bind::expect_shape(I, "indices", GY.shape);
  if (GX.shape[0] != GY.shape[0] || GX.shape[1] != GY.shape[1])
    throw py::value_error("max_pool2d_backward: input_shape " + fg::bind::shape_str(GX.shape) +
                          " does not match grad_output " + fg::bind::shape_str(GY.shape) + " in (N, C)");
  fg::Pool2dGeom g{};
  g.N = GX.shape[0], g.C = GX.shape[1], g.H = GX.shape[2], g.W = GX.shape[3];
  g.OH = GY.shape[2], g.OW = GY.shape[3];
  const int64_t hw = g.H * g.W;
  fg::bind::check_no_overlap("max_pool2d_backward", {{gy, "grad_output"}, {idx, "indices"}}, {{gx, "grad_input"}});
  {
    py::gil_scoped_release release;
    bool bad = false;
    for (int64_t i = 0; i < I.size; ++i) bad |= I.i64()[i] < 0 || I.i64()[i] >= hw;
    if (!bad) {
      if (f64)
        fg::max_pool2d_backward(g, GY.f64(), I.i64(), GX.f64());
      else
        fg::max_pool2d_backward(g, GY.f32(), I.i64(), GX.f32());
      return;
    }
  }
  throw py::value_error("max_pool2d_backward: indices must lie in [0, H*W) of input_shape");
}

using Triple = std::tuple<int64_t, int64_t, int64_t>;

// The output sizes come from out's shape (Python computes torch's); the kernel skips every tap outside
// the volume, so only the arithmetic has to fit: each axis' furthest tap (O - 1) * stride +
// (K - 1) * dilation + 1, and the flat index a window's first tap gives, d * H * W + h * W + w.
void max3d_fwd(const py::array& x, const py::array& y, const py::array& idx, Triple k, Triple s, Triple p, Triple d) {
  const char* op = "max_pool3d";
  ArrayArg X = fg::bind::f32_arg(x, "input", 5);
  ArrayArg Y = fg::bind::f32_arg(y, "out", 5, fg::bind::kContiguous, true);
  ArrayArg I = fg::bind::i64_arg(idx, "indices", 5, fg::bind::kContiguous, true);
  fg::Pool3dGeom g{};
  g.N = X.shape[0], g.C = X.shape[1], g.D = X.shape[2], g.H = X.shape[3], g.W = X.shape[4];
  std::tie(g.KD, g.KH, g.KW) = k;
  std::tie(g.sd, g.sh, g.sw) = s;
  std::tie(g.pd, g.ph, g.pw) = p;
  std::tie(g.dd, g.dh, g.dw) = d;
  g.OD = Y.shape[2], g.OH = Y.shape[3], g.OW = Y.shape[4];
  fg::bind::expect_shape(Y, "out", {g.N, g.C, g.OD, g.OH, g.OW});
  fg::bind::expect_shape(I, "indices", {g.N, g.C, g.OD, g.OH, g.OW});
  const auto str3 = [](Triple t) { return fg::bind::shape_str({std::get<0>(t), std::get<1>(t), std::get<2>(t)}); };
  if (g.KD < 1 || g.KH < 1 || g.KW < 1) fail(op, "kernel_size must be >= 1, got " + str3(k));
  if (g.sd < 1 || g.sh < 1 || g.sw < 1) fail(op, "stride must be >= 1, got " + str3(s));
  if (g.dd < 1 || g.dh < 1 || g.dw < 1) fail(op, "dilation must be >= 1, got " + str3(d));
  if (g.pd < 0 || g.ph < 0 || g.pw < 0) fail(op, "padding must be >= 0, got " + str3(p));
  const int64_t outs[3] = {g.OD, g.OH, g.OW}, ks[3] = {g.KD, g.KH, g.KW}, ss[3] = {g.sd, g.sh, g.sw},
                ds[3] = {g.dd, g.dh, g.dw};
  int64_t reach[3];
  bool ok = true;
  for (int a = 0; a < 3; ++a) {
    int64_t r1, r2;
    ok = ok && outs[a] >= 1 && fg::checked_mul(outs[a] - 1, ss[a], &r1) && fg::checked_mul(ks[a] - 1, ds[a], &r2) &&
         fg::checked_add(r1, r2, &reach[a]) && fg::checked_add(reach[a], 1, &reach[a]);
  }
  int64_t hw, a, b, c;
  ok = ok && fg::checked_mul(g.H, g.W, &hw) && fg::checked_mul(reach[0], hw, &a) &&
       fg::checked_mul(reach[1], g.W, &b) && fg::checked_add(a, b, &c) && fg::checked_add(c, reach[2], &c);
  if (!ok)
    fail(op, "kernel_size " + str3(k) + ", stride " + str3(s) + " and dilation " + str3(d) + " with out " +
                 fg::bind::shape_str(Y.shape) + " reach past int64, or out is empty");
  // torch's geometry (ops/_window3d.pool_geometry): padding at most half the kernel, and at most ceil_mode's
  // outputs, whose last window starts inside the input or its left padding (the window is clipped to the input)
  const int64_t ins[3] = {g.D, g.H, g.W}, ps[3] = {g.pd, g.ph, g.pw};
  for (int a = 0; a < 3; ++a) {
    if (ps[a] > ks[a] / 2)
      fail(op, "padding must be at most half of kernel_size, got padding " + str3(p) + " and kernel_size " + str3(k));
    const __int128 n = ins[a], pad = ps[a], st = ss[a];
    const __int128 num = n + 2 * pad - __int128{ds[a]} * (ks[a] - 1) - 1 + st - 1;
    __int128 most = (num >= 0 ? num / st : -((-num + st - 1) / st)) + 1;
    if ((most - 1) * st >= n + pad) --most;
    if (outs[a] > most)
      fail(op, "out " + fg::bind::shape_str(Y.shape) + " has more outputs than kernel_size " + str3(k) + ", stride " +
                   str3(s) + ", padding " + str3(p) + " and dilation " + str3(d) + " give for input " +
                   fg::bind::shape_str(X.shape) + " (at most ceil_mode's)");
  }
  fg::bind::check_no_overlap(op, {{x, "input"}}, {{y, "out"}, {idx, "indices"}});
  py::gil_scoped_release release;
  fg::max_pool3d_forward(g, X.f32(), Y.f32(), I.i64());
}

void avg_fwd(const py::array& x, const py::array& y, Pair k, Pair s, Pair p, bool ceil_mode, bool count_include_pad,
             int64_t divisor_override) {
  ArrayArg X = fg::bind::f32_arg(x, "input", 4);
  ArrayArg Y = fg::bind::f32_arg(y, "out", 4, fg::bind::kContiguous, true);
  fg::Pool2dGeom g = make_geom("avg_pool2d", X.shape, k, s, p, {1, 1}, ceil_mode);
  fg::bind::expect_shape(Y, "out", {g.N, g.C, g.OH, g.OW});
  fg::bind::check_no_overlap("avg_pool2d", {{x, "input"}}, {{y, "out"}});
  py::gil_scoped_release release;
  fg::avg_pool2d_forward(g, X.f32(), Y.f32(), count_include_pad, divisor_override);
}

void avg_bwd(const py::array& gy, const py::array& gx, Pair k, Pair s, Pair p, bool ceil_mode, bool count_include_pad,
             int64_t divisor_override) {
  ArrayArg GY = fg::bind::f32_arg(gy, "grad_output", 4);
  ArrayArg GX = fg::bind::f32_arg(gx, "grad_input", 4, fg::bind::kContiguous, true);
  fg::Pool2dGeom g = make_geom("avg_pool2d", GX.shape, k, s, p, {1, 1}, ceil_mode);
  fg::bind::expect_shape(GY, "grad_output", {g.N, g.C, g.OH, g.OW});
  fg::bind::check_no_overlap("avg_pool2d_backward", {{gy, "grad_output"}}, {{gx, "grad_input"}});
  py::gil_scoped_release release;
  fg::avg_pool2d_backward(g, GY.f32(), GX.f32(), count_include_pad, divisor_override);
}

// The kernels compute window bounds as (o + 1) * in / out: that product must fit.
void check_adaptive(const char* op, const std::vector<int64_t>& in, const std::vector<int64_t>& out) {
  int64_t n;
  if (!fg::checked_mul(out[2], in[2], &n) || !fg::checked_mul(out[3], in[3], &n))
    fail(op,
         "output size " + str({out[2], out[3]}) + " times the input size " + str({in[2], in[3]}) + " overflows int64");
}

void adaptive_fwd(const py::array& x, const py::array& y) {
  ArrayArg X = fg::bind::f32_arg(x, "input", 4);
  ArrayArg Y = fg::bind::f32_arg(y, "out", 4, fg::bind::kContiguous, true);
  if (Y.shape[0] != X.shape[0] || Y.shape[1] != X.shape[1] || Y.shape[2] < 1 || Y.shape[3] < 1 || X.shape[2] < 1 ||
      X.shape[3] < 1)
    throw py::value_error("adaptive_avg_pool2d: bad shapes input " + fg::bind::shape_str(X.shape) + ", out " +
                          fg::bind::shape_str(Y.shape));
  check_adaptive("adaptive_avg_pool2d", X.shape, Y.shape);
  fg::bind::check_no_overlap("adaptive_avg_pool2d", {{x, "input"}}, {{y, "out"}});
  py::gil_scoped_release release;
  fg::adaptive_avg_pool2d_forward(X.shape[0], X.shape[1], X.shape[2], X.shape[3], Y.shape[2], Y.shape[3], X.f32(),
                                  Y.f32());
}

void adaptive_bwd(const py::array& gy, const py::array& gx) {
  ArrayArg GY = fg::bind::f32_arg(gy, "grad_output", 4);
  ArrayArg GX = fg::bind::f32_arg(gx, "grad_input", 4, fg::bind::kContiguous, true);
  if (GY.shape[0] != GX.shape[0] || GY.shape[1] != GX.shape[1] || GY.shape[2] < 1 || GY.shape[3] < 1 ||
      GX.shape[2] < 1 || GX.shape[3] < 1)
    throw py::value_error("adaptive_avg_pool2d_backward: bad shapes grad_output " + fg::bind::shape_str(GY.shape) +
                          ", grad_input " + fg::bind::shape_str(GX.shape));
  check_adaptive("adaptive_avg_pool2d_backward", GX.shape, GY.shape);
  fg::bind::check_no_overlap("adaptive_avg_pool2d_backward", {{gy, "grad_output"}}, {{gx, "grad_input"}});
  py::gil_scoped_release release;
  fg::adaptive_avg_pool2d_backward(GX.shape[0], GX.shape[1], GX.shape[2], GX.shape[3], GY.shape[2], GY.shape[3],
                                   GY.f32(), GX.f32());
}

void adaptive_max_fwd(const py::array& x, const py::array& y, const py::array& idx) {
  ArrayArg X = fg::bind::f32_arg(x, "input", 4);
  ArrayArg Y = fg::bind::f32_arg(y, "out", 4, fg::bind::kContiguous, true);
  ArrayArg I = fg::bind::i64_arg(idx, "indices", 4, fg::bind::kContiguous, true);
  if (Y.shape[0] != X.shape[0] || Y.shape[1] != X.shape[1] || Y.shape[2] < 1 || Y.shape[3] < 1 || X.shape[2] < 1 ||
      X.shape[3] < 1)
    throw py::value_error("adaptive_max_pool2d: bad shapes input " + fg::bind::shape_str(X.shape) + ", out " +
                          fg::bind::shape_str(Y.shape));
  fg::bind::expect_shape(I, "indices", Y.shape);
  check_adaptive("adaptive_max_pool2d", X.shape, Y.shape);
  fg::bind::check_no_overlap("adaptive_max_pool2d", {{x, "input"}}, {{y, "out"}, {idx, "indices"}});
  py::gil_scoped_release release;
  fg::adaptive_max_pool2d_forward(X.shape[0], X.shape[1], X.shape[2], X.shape[3], Y.shape[2], Y.shape[3], X.f32(),
                                  Y.f32(), I.i64());
}

// (N, C, OH, OW) of max / avg pooling; stride None means kernel_size (as torch).
std::vector<int64_t> py_output_shape(const std::vector<int64_t>& input_shape, Pair kernel_size,
                                     std::optional<Pair> stride, Pair padding, Pair dilation, bool ceil_mode,
                                     const std::string& op) {
  if (input_shape.size() != 4) fail(op, "input_shape must have 4 entries, got " + fg::bind::shape_str(input_shape));
  const fg::Pool2dGeom g =
      make_geom(op, input_shape, kernel_size, stride.value_or(kernel_size), padding, dilation, ceil_mode);
  return {g.N, g.C, g.OH, g.OW};
}

void bind(py::module_& m) {
  m.def("max_pool2d_forward", &max_fwd, py::arg("input"), py::arg("out"), py::arg("indices"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"));
  m.def("max_pool3d_forward", &max3d_fwd, py::arg("input"), py::arg("out"), py::arg("indices"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"),
        "out, indices (N, C, OD, OH, OW; their shape gives the output sizes) = the 3-D max pool of float32 input "
        "(N, C, D, H, W): torch's values and int64 indices d * H * W + h * W + w per volume (the first maximum in "
        "(d, h, w) order, or the last NaN); taps outside the volume are skipped.");
  m.def("max_pool2d_backward", &max_bwd, py::arg("grad_output"), py::arg("indices"), py::arg("grad_input"));
  m.def("avg_pool2d_forward", &avg_fwd, py::arg("input"), py::arg("out"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("divisor_override"));
  m.def("avg_pool2d_backward", &avg_bwd, py::arg("grad_output"), py::arg("grad_input"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("padding"), py::arg("ceil_mode"), py::arg("count_include_pad"),
        py::arg("divisor_override"));
  m.def("adaptive_avg_pool2d_forward", &adaptive_fwd, py::arg("input"), py::arg("out"));
  m.def("adaptive_avg_pool2d_backward", &adaptive_bwd, py::arg("grad_output"), py::arg("grad_input"));
  m.def("adaptive_max_pool2d_forward", &adaptive_max_fwd, py::arg("input"), py::arg("out"), py::arg("indices"),
        "out, indices (N, C, OH, OW; their shape gives the output size) = adaptive max pooling of float32 input "
        "(N, C, H, W): torch's windows, values and int64 indices h * W + w (the first maximum in row-major order, "
        "or the last NaN). The backward is max_pool2d_backward.");
  m.def("output_shape", &py_output_shape, py::arg("input_shape"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding") = Pair{0, 0}, py::arg("dilation") = Pair{1, 1}, py::arg("ceil_mode") = false,
        py::arg("op") = "pool2d",
        "Validated (N, C, OH, OW) of max / avg pooling (stride None: kernel_size), torch's rules incl. "
        "ceil_mode. Raises ValueError naming the argument, prefixed by op.");
}

}  // namespace

FG_REGISTER_BINDINGS(pool, bind)
