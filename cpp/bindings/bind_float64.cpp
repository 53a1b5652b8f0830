// forgegrad._C.float64: the float64 kernels of forgegrad/float64.h (Adam, conv2d's im2col / col2im, the LSTM
// cell). Every array is checked here (float64, C-contiguous, writeable where written, its shape), and arrays
// a kernel writes may not overlap the others of the call.
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/checked.h"
#include "forgegrad/float64.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

using List = std::vector<py::array>;

using fg::bind::expect_count;
using fg::bind::item_name;

void adam_step(const List& params, const List& grads, const List& exp_avgs, const List& exp_avg_sqs,
               const std::optional<List>& maxes, const std::vector<double>& step_sizes,
               const std::vector<double>& bias_correction2_sqrts, double beta1, double beta2, double eps, double lr,
               double weight_decay, bool decoupled, bool maximize) {
  const size_t n = params.size();
  fg::bind::expect_adam_counts(n, grads.size(), exp_avgs.size(), exp_avg_sqs.size(),
                               maxes ? static_cast<int64_t>(maxes->size()) : -1, step_sizes.size(),
                               bias_correction2_sqrts.size());
  std::vector<fg::Adam64Tensor> ts(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string pn = item_name("params", i), gn = item_name("grads", i), mn = item_name("exp_avgs", i),
                      vn = item_name("exp_avg_sqs", i), xn = item_name("max_exp_avg_sqs", i);
    ArrayArg P = fg::bind::f64_arg(params[i], pn.c_str(), -1, fg::bind::kContiguous, true);
    ArrayArg G = fg::bind::f64_arg(grads[i], gn.c_str());
    ArrayArg M = fg::bind::f64_arg(exp_avgs[i], mn.c_str(), -1, fg::bind::kContiguous, true);
    ArrayArg V = fg::bind::f64_arg(exp_avg_sqs[i], vn.c_str(), -1, fg::bind::kContiguous, true);
    fg::bind::expect_shape(G, gn.c_str(), P.shape);
    fg::bind::expect_shape(M, mn.c_str(), P.shape);
    fg::bind::expect_shape(V, vn.c_str(), P.shape);
    double* X = nullptr;
    if (maxes) {
      ArrayArg A = fg::bind::f64_arg((*maxes)[i], xn.c_str(), -1, fg::bind::kContiguous, true);
      fg::bind::expect_shape(A, xn.c_str(), P.shape);
      X = A.f64();
    }
    fg::bind::check_no_overlap("adam_step",
                               {{params[i], pn.c_str(), true},
                                {grads[i], gn.c_str(), false},
                                {exp_avgs[i], mn.c_str(), true},
                                {exp_avg_sqs[i], vn.c_str(), true},
                                {maxes ? py::handle((*maxes)[i]) : py::handle(py::none()), xn.c_str(), true}});
    if (!(bias_correction2_sqrts[i] > 0.0))
      throw py::value_error(item_name("bias_correction2_sqrts", i) + " must be > 0");
    ts[i] = fg::Adam64Tensor{P.f64(), G.f64(), M.f64(), V.f64(), X, P.size, step_sizes[i], bias_correction2_sqrts[i]};
  }
  fg::Adam64Hyper h;
  h.one_minus_beta1 = 1.0 - beta1;
  h.beta2 = beta2;
  h.one_minus_beta2 = 1.0 - beta2;
  h.eps = eps;
  h.weight_decay = decoupled ? 0.0 : weight_decay;
  h.param_scale = decoupled ? 1.0 - lr * weight_decay : 1.0;
  h.decoupled = decoupled;
  h.maximize = maximize;
  h.amsgrad = maxes.has_value();
  py::gil_scoped_release release;
  fg::adam_step_f64(ts.data(), static_cast<int64_t>(n), h);
}

using Pair = std::tuple<int64_t, int64_t>;

fg::Im2colGeom geom(const std::vector<int64_t>& xs, Pair k, Pair s, Pair p, Pair d, int64_t OH, int64_t OW) {
  fg::Im2colGeom g{xs[0],
                   xs[1],
                   xs[2],
                   xs[3],
                   std::get<0>(k),
                   std::get<1>(k),
                   std::get<0>(s),
                   std::get<1>(s),
                   std::get<0>(p),
                   std::get<1>(p),
                   std::get<0>(d),
                   std::get<1>(d),
                   OH,
                   OW};
  if (g.KH < 1 || g.KW < 1 || g.stride_h < 1 || g.stride_w < 1 || g.dil_h < 1 || g.dil_w < 1 || g.pad_h < 0 ||
      g.pad_w < 0)
    throw py::value_error("im2col: kernel_size, stride and dilation must be >= 1 and padding >= 0");
  // Each size below 2^30: the kernels' products (oh * stride, kh * dilation, channel * taps) then fit in int64.
  constexpr int64_t kMax = int64_t(1) << 30;
  for (int64_t v : {g.KH, g.KW, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, OH, OW})
    if (v >= kMax)
      throw py::value_error(
          "im2col: kernel_size, stride, padding, dilation and the output size must be "
          "below 2^30");
  // The output size is the caller's (torch's, with any bottom / right padding): every tap is bounds-checked in the
  // kernels, so only its sign matters here; cols' shape (checked below) ties it to memory that exists.
  if (OH < 1 || OW < 1) throw py::value_error("im2col: out_h and out_w must be >= 1");
  int64_t rows, cols;
  if (!fg::checked_mul(g.C, g.KH, &rows) || !fg::checked_mul(rows, g.KW, &rows) || !fg::checked_mul(g.N, OH, &cols) ||
      !fg::checked_mul(cols, OW, &cols))
    throw py::value_error("im2col: cols' shape (C*KH*KW, N*OH*OW) overflows int64");
  return g;
}

// cols (C*KH*KW, N*OH*OW) from x (N, C, H, W); the output size (OH, OW) is passed.
void im2col(const py::array& x, const py::array& cols, Pair k, Pair s, Pair p, Pair d, int64_t OH, int64_t OW) {
  ArrayArg X = fg::bind::f64_arg(x, "input", 4);
  ArrayArg C = fg::bind::f64_arg(cols, "cols", 2, fg::bind::kContiguous, true);
  fg::Im2colGeom g = geom(X.shape, k, s, p, d, OH, OW);
  fg::bind::expect_shape(C, "cols", {g.C * g.KH * g.KW, g.N * OH * OW});
  fg::bind::check_no_overlap("im2col", {{x, "input", false}, {cols, "cols", true}});
  py::gil_scoped_release release;
  fg::im2col_f64(g, X.f64(), C.f64());
}

// grad_input (N, C, H, W) from cols (C*KH*KW, N*OH*OW), im2col's adjoint.
void col2im(const py::array& cols, const py::array& gx, Pair k, Pair s, Pair p, Pair d, int64_t OH, int64_t OW) {
  ArrayArg C = fg::bind::f64_arg(cols, "cols", 2);
  ArrayArg GX = fg::bind::f64_arg(gx, "grad_input", 4, fg::bind::kContiguous, true);
  fg::Im2colGeom g = geom(GX.shape, k, s, p, d, OH, OW);
  fg::bind::expect_shape(C, "cols", {g.C * g.KH * g.KW, g.N * OH * OW});
  fg::bind::check_no_overlap("col2im", {{cols, "cols", false}, {gx, "grad_input", true}});
  py::gil_scoped_release release;
  fg::col2im_f64(g, C.f64(), GX.f64());
}

void lstm_cell_forward(const py::array& a, const py::array& c_prev, const py::array& act, const py::array& c,
                       const py::array& tc, const py::array& h) {
  ArrayArg A = fg::bind::f64_arg(a, "gates", 2);
  const int64_t B = A.shape[0], H = A.shape[1] / 4;
  if (A.shape[1] != 4 * H) throw py::value_error("lstm_cell_forward: gates must be (B, 4H)");
  ArrayArg CP = fg::bind::f64_arg(c_prev, "c_prev", 2);
  ArrayArg ACT = fg::bind::f64_arg(act, "act", 2, fg::bind::kContiguous, true);
  ArrayArg C = fg::bind::f64_arg(c, "c", 2, fg::bind::kContiguous, true);
  ArrayArg TC = fg::bind::f64_arg(tc, "tanh_c", 2, fg::bind::kContiguous, true);
  ArrayArg HH = fg::bind::f64_arg(h, "h", 2, fg::bind::kContiguous, true);
  fg::bind::expect_shape(CP, "c_prev", {B, H});
  fg::bind::expect_shape(ACT, "act", {B, 4 * H});
  fg::bind::expect_shape(C, "c", {B, H});
  fg::bind::expect_shape(TC, "tanh_c", {B, H});
  fg::bind::expect_shape(HH, "h", {B, H});
  fg::bind::check_no_overlap("lstm_cell_forward", {{a, "gates", false},
                                                   {c_prev, "c_prev", false},
                                                   {act, "act", true},
                                                   {c, "c", true},
                                                   {tc, "tanh_c", true},
                                                   {h, "h", true}});
  py::gil_scoped_release release;
  fg::lstm_cell_forward_f64(B, H, A.f64(), CP.f64(), ACT.f64(), C.f64(), TC.f64(), HH.f64());
}

void lstm_cell_backward(const py::array& act, const py::array& c_prev, const py::array& tc, const py::array& dh,
                        const py::array& dc, const py::array& d) {
  ArrayArg ACT = fg::bind::f64_arg(act, "act", 2);
  const int64_t B = ACT.shape[0], H = ACT.shape[1] / 4;
  if (ACT.shape[1] != 4 * H) throw py::value_error("lstm_cell_backward: act must be (B, 4H)");
  ArrayArg CP = fg::bind::f64_arg(c_prev, "c_prev", 2);
  ArrayArg TC = fg::bind::f64_arg(tc, "tanh_c", 2);
  ArrayArg DH = fg::bind::f64_arg(dh, "dh", 2);
  ArrayArg DC = fg::bind::f64_arg(dc, "dc", 2, fg::bind::kContiguous, true);
  ArrayArg D = fg::bind::f64_arg(d, "d_gates", 2, fg::bind::kContiguous, true);
  fg::bind::expect_shape(CP, "c_prev", {B, H});
  fg::bind::expect_shape(TC, "tanh_c", {B, H});
  fg::bind::expect_shape(DH, "dh", {B, H});
  fg::bind::expect_shape(DC, "dc", {B, H});
  fg::bind::expect_shape(D, "d_gates", {B, 4 * H});
  fg::bind::check_no_overlap("lstm_cell_backward", {{act, "act", false},
                                                    {c_prev, "c_prev", false},
                                                    {tc, "tanh_c", false},
                                                    {dh, "dh", false},
                                                    {dc, "dc", true},
                                                    {d, "d_gates", true}});
  py::gil_scoped_release release;
  fg::lstm_cell_backward_f64(B, H, ACT.f64(), CP.f64(), TC.f64(), DH.f64(), DC.f64(), D.f64());
}

void relu(const py::array& x, const py::array& y) {
  ArrayArg X = fg::bind::f64_arg(x, "input");
  ArrayArg Y = fg::bind::f64_arg(y, "out", -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(Y, "out", X.shape);
  fg::bind::check_no_overlap("relu", {{x, "input", false}, {y, "out", true}}, {{"input", "out"}});
  py::gil_scoped_release release;
  fg::relu_forward_f64(X.f64(), Y.f64(), X.size);
}

void relu_backward(const py::array& g, const py::array& y, const py::array& gx) {
  ArrayArg G = fg::bind::f64_arg(g, "grad_output");
  ArrayArg Y = fg::bind::f64_arg(y, "output");
  ArrayArg GX = fg::bind::f64_arg(gx, "grad_input", -1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(Y, "output", G.shape);
  fg::bind::expect_shape(GX, "grad_input", G.shape);
  fg::bind::check_no_overlap("relu_backward",
                             {{g, "grad_output", false}, {y, "output", false}, {gx, "grad_input", true}},
                             {{"grad_output", "grad_input"}});
  py::gil_scoped_release release;
  fg::relu_backward_f64(G.f64(), Y.f64(), GX.f64(), G.size);
}

void bind(py::module_& m) {
  m.doc() = "float64 kernels of a training step: Adam, conv2d's im2col / col2im, the LSTM cell, relu";
  m.def("adam_step", &adam_step, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
        py::arg("max_exp_avg_sqs"), py::arg("step_sizes"), py::arg("bias_correction2_sqrts"), py::kw_only(),
        py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("lr"), py::arg("weight_decay"),
        py::arg("decoupled"), py::arg("maximize"),
        "In-place float64 Adam/AdamW update (torch's single-tensor float64 math); arguments as _C.optim.adam_step.");
  m.def("im2col", &im2col, py::arg("input"), py::arg("cols"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("out_h"), py::arg("out_w"),
        "cols (C*KH*KW, N*OH*OW) of float64 input (N, C, H, W): rows (c, kh, kw), columns (n, oh, ow).");
  m.def("col2im", &col2im, py::arg("cols"), py::arg("grad_input"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("out_h"), py::arg("out_w"),
        "grad_input (N, C, H, W) = im2col's adjoint applied to cols (taps in a fixed order per plane).");
  m.def("lstm_cell_forward", &lstm_cell_forward, py::arg("gates"), py::arg("c_prev"), py::arg("act"), py::arg("c"),
        py::arg("tanh_c"), py::arg("h"),
        "One LSTM step's pointwise part: pre-activations gates (B, 4H) and c_prev (B, H) -> act (sigmoid i, f, o; "
        "tanh g), c, tanh(c), h.");
  m.def("lstm_cell_backward", &lstm_cell_backward, py::arg("act"), py::arg("c_prev"), py::arg("tanh_c"), py::arg("dh"),
        py::arg("dc"), py::arg("d_gates"),
        "Its backward: d_gates (B, 4H) from dh and dc (B, H); dc is replaced by the gradient for c_prev.");
  m.def("relu", &relu, py::arg("input"), py::arg("out"), "out = relu(input), float64 (NaN kept); out may be input.");
  m.def("relu_backward", &relu_backward, py::arg("grad_output"), py::arg("output"), py::arg("grad_input"),
        "grad_input = output <= 0 ? 0 : grad_output (torch's threshold_backward); grad_input may be grad_output.");
}

}  // namespace

FG_REGISTER_BINDINGS(float64, bind)
