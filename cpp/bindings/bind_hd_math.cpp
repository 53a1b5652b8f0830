// forgegrad._C.hd_math: the shared host/device math (forgegrad/hd/*.h) evaluated element by
// element over numpy float32 arrays, in every build. The CUDA kernels call these functions per
// thread and the portable CPU kernels per element; tests/test_hd_math.py compares this binding with
// the CPU kernels (any ISA) and with torch, which is how the device math is tested without a GPU.
// Inputs are C-contiguous float32 arrays (checked, naming the argument); outputs are new arrays.
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "forgegrad/activation.h"
#include "forgegrad/bindings.h"
#include "forgegrad/hd/activation.h"
#include "forgegrad/hd/optim.h"
#include "forgegrad/hd/rnn_cells.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;
using Arr = py::array_t<float>;

namespace {

constexpr bool same_codes() {
  const int hd[] = {fg::hd::kRelu,    fg::hd::kLeakyRelu, fg::hd::kGelu, fg::hd::kGeluTanh,
                    fg::hd::kSigmoid, fg::hd::kTanh,      fg::hd::kSilu, fg::hd::kActCodes};
  const int cpu[] = {fg::kActRelu,    fg::kActLeakyRelu, fg::kActGelu, fg::kActGeluTanh,
                     fg::kActSigmoid, fg::kActTanh,      fg::kActSilu, fg::kActCount};
  for (int i = 0; i < 8; ++i)
    if (hd[i] != cpu[i]) return false;
  return true;
}
static_assert(same_codes(), "forgegrad/hd/activation.h's codes must match forgegrad/activation.h");

ArrayArg in(const py::array& a, const char* name, int ndim = -1) { return fg::bind::f32_arg(a, name, ndim); }
Arr like(const ArrayArg& a) { return Arr(a.shape); }
Arr shaped(int64_t rows, int64_t cols) { return Arr(std::vector<int64_t>{rows, cols}); }

// (B, G*H) gate rows: B and H from the array, G given.
void gate_rows(const ArrayArg& a, const char* name, int gates, int64_t& B, int64_t& H) {
  if (a.shape[1] % gates != 0)
    throw py::value_error(std::string(name) + " must have shape (batch, " + std::to_string(gates) +
                          " * hidden_size), got " + fg::bind::shape_str(a.shape));
  B = a.shape[0];
  H = a.shape[1] / gates;
}

template <class F>
Arr map1(const py::array& x, F f) {
  ArrayArg X = in(x, "x");
  Arr y = like(X);
  const float* xp = X.f32();
  float* yp = y.mutable_data();
  for (int64_t i = 0; i < X.size; ++i) yp[i] = f(xp[i]);
  return y;
}

void check_op(int op) {
  if (op < 0 || op >= fg::hd::kActCodes)
    throw py::value_error("op must be in [0, " + std::to_string(int(fg::hd::kActCodes)) + "), got " +
                          std::to_string(op));
}

Arr act_forward(int op, const py::array& x, float alpha) {
  check_op(op);
  return map1(x, [&](float v) { return fg::hd::act_forward(op, v, alpha); });
}

Arr act_backward(int op, const py::array& grad, const py::array& saved, float alpha) {
  check_op(op);
  ArrayArg G = in(grad, "grad"), S = in(saved, "saved");
  fg::bind::expect_shape(S, "saved", G.shape);
  Arr out = like(G);
  float* o = out.mutable_data();
  for (int64_t i = 0; i < G.size; ++i) o[i] = fg::hd::act_backward(op, G.f32()[i], S.f32()[i], alpha);
  return out;
}

// pre (B, 4H) pre-activations [i|f|g|o], c_prev (B, H) -> (gates (B, 4H) activations, c, h)
py::tuple lstm_forward(const py::array& pre, const py::array& c_prev) {
  ArrayArg P = in(pre, "pre", 2), C = in(c_prev, "c_prev", 2);
  int64_t B, H;
  gate_rows(P, "pre", 4, B, H);
  fg::bind::expect_shape(C, "c_prev", {B, H});
  Arr gates = like(P), c = shaped(B, H), h = shaped(B, H);
  float *g = gates.mutable_data(), *co = c.mutable_data(), *ho = h.mutable_data();
  std::copy(P.f32(), P.f32() + P.size, g);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H; ++j) {
      float* r = g + b * 4 * H;
      fg::hd::lstm_forward(r[j], r[H + j], r[2 * H + j], r[3 * H + j], C.f32()[b * H + j], co[b * H + j],
                           ho[b * H + j]);
    }
  return py::make_tuple(gates, c, h);
}

// gates (B, 4H) activations, c (B, H) = c_t, c_prev, dh, dc -> (d_pre (B, 4H), dc_prev (B, H))
py::tuple lstm_backward(const py::array& gates, const py::array& c, const py::array& c_prev, const py::array& dh,
                        const py::array& dc) {
  ArrayArg Gt = in(gates, "gates", 2);
  int64_t B, H;
  gate_rows(Gt, "gates", 4, B, H);
  ArrayArg C = in(c, "c", 2), Cp = in(c_prev, "c_prev", 2), Dh = in(dh, "dh", 2), Dc = in(dc, "dc", 2);
  for (const auto& [a, name] : {std::pair{&C, "c"}, {&Cp, "c_prev"}, {&Dh, "dh"}, {&Dc, "dc"}})
    fg::bind::expect_shape(*a, name, {B, H});
  Arr dpre = like(Gt), dcp = shaped(B, H);
  float *d = dpre.mutable_data(), *dco = dcp.mutable_data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H; ++j) {
      const float* g = Gt.f32() + b * 4 * H;
      float* dr = d + b * 4 * H;
      const int64_t k = b * H + j;
      fg::hd::lstm_backward(g[j], g[H + j], g[2 * H + j], g[3 * H + j], C.f32()[k], Cp.f32()[k], Dh.f32()[k],
                            Dc.f32()[k], dr[j], dr[H + j], dr[2 * H + j], dr[3 * H + j], dco[k]);
    }
  return py::make_tuple(dpre, dcp);
}

// xg (B, 3H) = W_i x + b_i [r|z|n], hp (B, 3H) = W_h h + b_h, h_prev (B, H) -> (gates r,z,n, h)
py::tuple gru_forward(const py::array& xg, const py::array& hp, const py::array& h_prev) {
  ArrayArg X = in(xg, "xg", 2);
  int64_t B, H;
  gate_rows(X, "xg", 3, B, H);
  ArrayArg Hp = in(hp, "hp", 2), Hv = in(h_prev, "h_prev", 2);
  fg::bind::expect_shape(Hp, "hp", X.shape);
  fg::bind::expect_shape(Hv, "h_prev", {B, H});
  Arr gates = like(X), h = shaped(B, H);
  float *g = gates.mutable_data(), *ho = h.mutable_data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H; ++j) {
      const float *x = X.f32() + b * 3 * H, *p = Hp.f32() + b * 3 * H;
      float* r = g + b * 3 * H;
      fg::hd::gru_forward(x[j], x[H + j], x[2 * H + j], p[j], p[H + j], p[2 * H + j], Hv.f32()[b * H + j], r[j],
                          r[H + j], r[2 * H + j], ho[b * H + j]);
    }
  return py::make_tuple(gates, h);
}

// gates (B, 3H) r,z,n; hn (B, H) = W_hn h + b_hn; h_prev; dh -> (d_input (B, 3H), d_hidden (B, 3H), dh_direct)
py::tuple gru_backward(const py::array& gates, const py::array& hn, const py::array& h_prev, const py::array& dh) {
  ArrayArg Gt = in(gates, "gates", 2);
  int64_t B, H;
  gate_rows(Gt, "gates", 3, B, H);
  ArrayArg Hn = in(hn, "hn", 2), Hp = in(h_prev, "h_prev", 2), Dh = in(dh, "dh", 2);
  for (const auto& [a, name] : {std::pair{&Hn, "hn"}, {&Hp, "h_prev"}, {&Dh, "dh"}})
    fg::bind::expect_shape(*a, name, {B, H});
  Arr dgi = like(Gt), dgh = like(Gt), dd = shaped(B, H);
  float *di = dgi.mutable_data(), *dh_ = dgh.mutable_data(), *ddo = dd.mutable_data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H; ++j) {
      const float* g = Gt.f32() + b * 3 * H;
      float *xi = di + b * 3 * H, *hh = dh_ + b * 3 * H;
      const int64_t k = b * H + j;
      float dhn;
      fg::hd::gru_backward(g[j], g[H + j], g[2 * H + j], Hn.f32()[k], Hp.f32()[k], Dh.f32()[k], xi[j], xi[H + j],
                           xi[2 * H + j], dhn, ddo[k]);
      hh[j] = xi[j];
      hh[H + j] = xi[H + j];
      hh[2 * H + j] = dhn;
    }
  return py::make_tuple(dgi, dgh, dd);
}

// One Adam/AdamW step in place on param, exp_avg, exp_avg_sq (and max_exp_avg_sq for amsgrad), with
// the host-side scalars computed as forgegrad.kernels.optim.adam_step and bind_optim.cpp do.
void adam_update(const py::array& param, const py::array& grad, const py::array& exp_avg, const py::array& exp_avg_sq,
                 const std::optional<py::array>& max_exp_avg_sq, double step, double lr, double beta1, double beta2,
                 double eps, double weight_decay, bool decoupled, bool maximize) {
  ArrayArg P = fg::bind::f32_arg(param, "param", -1, fg::bind::kContiguous, true);
  ArrayArg G = in(grad, "grad");
  ArrayArg M = fg::bind::f32_arg(exp_avg, "exp_avg", -1, fg::bind::kContiguous, true);
  ArrayArg V = fg::bind::f32_arg(exp_avg_sq, "exp_avg_sq", -1, fg::bind::kContiguous, true);
  for (const auto& [a, name] : {std::pair{&G, "grad"}, {&M, "exp_avg"}, {&V, "exp_avg_sq"}})
    fg::bind::expect_shape(*a, name, P.shape);
  ArrayArg X;
  if (max_exp_avg_sq) {
    X = fg::bind::f32_arg(*max_exp_avg_sq, "max_exp_avg_sq", -1, fg::bind::kContiguous, true);
    fg::bind::expect_shape(X, "max_exp_avg_sq", P.shape);
  }
  if (!(step >= 1.0)) throw py::value_error("step must be >= 1, got " + std::to_string(step));
  // each element's update reads and writes its own slots: an array overlapping another is refused
  fg::bind::check_no_overlap("adam_update", {{grad, "grad"}},
                             {{param, "param"},
                              {exp_avg, "exp_avg"},
                              {exp_avg_sq, "exp_avg_sq"},
                              {max_exp_avg_sq ? py::handle(*max_exp_avg_sq) : py::handle(Py_None), "max_exp_avg_sq"}});
  const fg::hd::AdamParams c =
      fg::hd::adam_params(static_cast<float>(1.0 - beta1), static_cast<float>(beta2), static_cast<float>(1.0 - beta2),
                          static_cast<float>(eps), decoupled ? 0.0f : static_cast<float>(weight_decay),
                          decoupled ? static_cast<float>(1.0 - lr * weight_decay) : 1.0f, decoupled, maximize);
  const float step_size = static_cast<float>(lr / (1.0 - std::pow(beta1, step)));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, step)));
  const bool ams = max_exp_avg_sq.has_value();
  for (int64_t i = 0; i < P.size; ++i) {
    float dummy = 0.0f;
    fg::hd::adam_update(P.f32()[i], G.f32()[i], M.f32()[i], V.f32()[i], ams ? X.f32()[i] : dummy, ams, c, step_size,
                        bc2_sqrt);
  }
}

// One SGD step in place (torch.optim.SGD); momentum_buffer required when momentum != 0.
void sgd_update(const py::array& param, const py::array& grad, const std::optional<py::array>& momentum_buffer,
                bool init_buffer, double lr, double momentum, double dampening, double weight_decay, bool nesterov,
                bool maximize) {
  ArrayArg P = fg::bind::f32_arg(param, "param", -1, fg::bind::kContiguous, true);
  ArrayArg G = in(grad, "grad");
  fg::bind::expect_shape(G, "grad", P.shape);
  ArrayArg Bf;
  if (momentum != 0.0) {
    if (!momentum_buffer) throw py::value_error("momentum_buffer is required when momentum != 0");
    Bf = fg::bind::f32_arg(*momentum_buffer, "momentum_buffer", -1, fg::bind::kContiguous, true);
    fg::bind::expect_shape(Bf, "momentum_buffer", P.shape);
  }
  fg::bind::check_no_overlap(
      "sgd_update", {{grad, "grad"}},
      {{param, "param"}, {momentum != 0.0 ? py::handle(*momentum_buffer) : py::handle(Py_None), "momentum_buffer"}});
  const fg::hd::SgdParams c =
      fg::hd::sgd_params(static_cast<float>(-lr), static_cast<float>(momentum), static_cast<float>(1.0 - dampening),
                         static_cast<float>(weight_decay), nesterov, maximize);
  for (int64_t i = 0; i < P.size; ++i) {
    float dummy = 0.0f;
    fg::hd::sgd_update(P.f32()[i], G.f32()[i], momentum != 0.0 ? Bf.f32()[i] : dummy, init_buffer, c);
  }
}

void bind(py::module_& m) {
  m.def("exp", [](const py::array& x) { return map1(x, [](float v) { return fg::hd::exp(v); }); }, py::arg("x"));
  m.def(
      "sigmoid", [](const py::array& x) { return map1(x, [](float v) { return fg::hd::sigmoid(v); }); }, py::arg("x"));
  m.def("tanh", [](const py::array& x) { return map1(x, [](float v) { return fg::hd::tanh(v); }); }, py::arg("x"));
  m.def("erf", [](const py::array& x) { return map1(x, [](float v) { return fg::hd::erf(v); }); }, py::arg("x"));
  m.def("act_forward", &act_forward, py::arg("op"), py::arg("x"), py::arg("alpha") = 0.0f,
        "act(x) elementwise; op is a forgegrad._C.activation code (RELU, ...)");
  m.def("act_backward", &act_backward, py::arg("op"), py::arg("grad"), py::arg("saved"), py::arg("alpha") = 0.0f,
        "grad * act'(.) from saved = y (relu, sigmoid, tanh) or x (the others)");
  m.def("lstm_forward", &lstm_forward, py::arg("pre"), py::arg("c_prev"));
  m.def("lstm_backward", &lstm_backward, py::arg("gates"), py::arg("c"), py::arg("c_prev"), py::arg("dh"),
        py::arg("dc"));
  m.def("gru_forward", &gru_forward, py::arg("xg"), py::arg("hp"), py::arg("h_prev"));
  m.def("gru_backward", &gru_backward, py::arg("gates"), py::arg("hn"), py::arg("h_prev"), py::arg("dh"));
  m.def(
      "rnn_forward",
      [](const py::array& pre, bool relu) { return map1(pre, [&](float v) { return fg::hd::rnn_forward(v, relu); }); },
      py::arg("pre"), py::arg("relu"));
  m.def(
      "rnn_backward",
      [](const py::array& h, const py::array& dh, bool relu) {
        ArrayArg Hh = in(h, "h"), D = in(dh, "dh");
        fg::bind::expect_shape(D, "dh", Hh.shape);
        Arr out = like(Hh);
        for (int64_t i = 0; i < Hh.size; ++i)
          out.mutable_data()[i] = fg::hd::rnn_backward(Hh.f32()[i], D.f32()[i], relu);
        return out;
      },
      py::arg("h"), py::arg("dh"), py::arg("relu"));
  m.def("adam_update", &adam_update, py::arg("param"), py::arg("grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
        py::arg("max_exp_avg_sq"), py::kw_only(), py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
        py::arg("eps"), py::arg("weight_decay") = 0.0, py::arg("decoupled") = false, py::arg("maximize") = false,
        "one Adam/AdamW step in place (amsgrad when max_exp_avg_sq is given)");
  m.def("sgd_update", &sgd_update, py::arg("param"), py::arg("grad"), py::arg("momentum_buffer"),
        py::arg("init_buffer"), py::kw_only(), py::arg("lr"), py::arg("momentum") = 0.0, py::arg("dampening") = 0.0,
        py::arg("weight_decay") = 0.0, py::arg("nesterov") = false, py::arg("maximize") = false,
        "one SGD step in place");
}

}  // namespace

FG_REGISTER_BINDINGS(hd_math, bind)
