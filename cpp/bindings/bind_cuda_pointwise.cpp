// forgegrad._C.cuda_pointwise: the CUDA kernels built on the shared host/device math
// (forgegrad/hd/): activations, recurrent layers and their gate kernels, multi-tensor Adam / SGD.
// Arrays are fg::cuda::DeviceArray (forgegrad._C.cuda.DeviceArray). Kernels launch on the current
// stream and nothing here synchronises: asynchronous faults surface at the next synchronisation.
//
// The module has the same functions in every build, taking arrays as plain objects, so that its
// stub (_C.pyi) is the same for CPU-only and CUDA builds; without CUDA every call raises
// RuntimeError. forgegrad.cuda_pointwise / forgegrad.cuda_optim are the Python entry points.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "forgegrad/activation.h"
#include "forgegrad/bindings.h"
#include "forgegrad/py_array.h"
#ifdef FORGEGRAD_WITH_CUDA
#include "forgegrad/cuda_array.h"
#include "forgegrad/cuda_pointwise.h"
#endif

namespace py = pybind11;
using Obj = py::object;
using List = std::vector<py::object>;

namespace {

#ifdef FORGEGRAD_WITH_CUDA
using fg::cuda::check;
using fg::cuda::DeviceArray;
using fg::cuda::DeviceGuard;
using Shape = std::vector<int64_t>;

// The arrays of one call: each a float32 DeviceArray, all on one device (made current for the
// launch by a DeviceGuard on device()). Errors name the argument.
class Arrays {
 public:
  DeviceArray& get(const py::handle& h, const std::string& name) {
    DeviceArray* a;
    try {
      a = &h.cast<DeviceArray&>();
    } catch (const py::cast_error&) {
      throw py::type_error(name + " must be a forgegrad._C.cuda.DeviceArray, got " +
                           py::str(py::type::of(h).attr("__name__")).cast<std::string>());
    }
    if (a->dtype() != fg::cuda::DType::kFloat32)
      throw py::type_error(name + " must hold float32, got " + fg::cuda::dtype_name(a->dtype()));
    if (device_ < 0) {
      device_ = a->device();
      first_ = name;
    } else if (a->device() != device_) {
      throw py::value_error(name + " is on cuda:" + std::to_string(a->device()) + " but " + first_ +
                            " is on cuda:" + std::to_string(device_));
    }
    return *a;
  }
  DeviceArray* opt(const py::handle& h, const std::string& name) { return h.is_none() ? nullptr : &get(h, name); }
  int device() const { return device_; }

 private:
  int device_ = -1;
  std::string first_;
};

float* ptr(DeviceArray* a) { return a ? a->data() : nullptr; }

void expect(const DeviceArray& a, const std::string& name, const Shape& shape) {
  if (a.shape() != shape)
    throw py::value_error(name + " must have shape " + fg::bind::shape_str(shape) + ", got " +
                          fg::bind::shape_str(a.shape()));
}
void same_shape(const DeviceArray& a, const std::string& an, const DeviceArray& b, const std::string& bn) {
  if (a.shape() != b.shape())
    throw py::value_error(bn + " must have the shape of " + an + " " + fg::bind::shape_str(a.shape()) + ", got " +
                          fg::bind::shape_str(b.shape()));
}
std::string item(const char* list, size_t i) { return std::string(list) + "[" + std::to_string(i) + "]"; }
#else
[[noreturn]] void no_cuda() {
  throw std::runtime_error("forgegrad was built without CUDA (no CUDA compiler found, or FORGEGRAD_CUDA=OFF)");
}
#endif

void check_op(int op) {
  if (op < 0 || op >= fg::kActCount)
    throw py::value_error("op must be a forgegrad._C.activation code in [0, " + std::to_string(int(fg::kActCount)) +
                          "), got " + std::to_string(op));
}

void act_forward(int op, const Obj& x, const Obj& out, float alpha) {
  check_op(op);
#ifdef FORGEGRAD_WITH_CUDA
  Arrays A;
  DeviceArray &X = A.get(x, "x"), &Y = A.get(out, "out");
  same_shape(X, "x", Y, "out");
  DeviceGuard guard(A.device());
  check(fg::cuda::act_forward(op, X.data(), Y.data(), X.size(), alpha), "act_forward");
#else
  no_cuda();
#endif
}

void act_backward(int op, const Obj& grad, const Obj& saved, const Obj& out, float alpha) {
  check_op(op);
#ifdef FORGEGRAD_WITH_CUDA
  Arrays A;
  DeviceArray &G = A.get(grad, "grad"), &S = A.get(saved, "saved"), &D = A.get(out, "out");
  same_shape(G, "grad", S, "saved");
  same_shape(G, "grad", D, "out");
  DeviceGuard guard(A.device());
  check(fg::cuda::act_backward(op, G.data(), S.data(), D.data(), G.size(), alpha), "act_backward");
#else
  no_cuda();
#endif
}

#ifdef FORGEGRAD_WITH_CUDA
// The layer's sizes from x (T, B, I) and w_hh (G*H, H), with every other argument's shape checked.
struct RnnDims {
  fg::RnnMode mode;
  int64_t T, B, I, H, GH;
};
RnnDims rnn_dims(int mode, const DeviceArray& x, const DeviceArray& w_ih, const DeviceArray& w_hh) {
  if (mode < 0 || mode > 3) throw py::value_error("mode must be 0 (lstm), 1 (gru), 2 (rnn_tanh) or 3 (rnn_relu)");
  RnnDims d;
  d.mode = static_cast<fg::RnnMode>(mode);
  const int G = fg::rnn_num_gates(d.mode);
  if (x.shape().size() != 3)
    throw py::value_error("x must be 3-D (seq_len, batch, input_size), got " + fg::bind::shape_str(x.shape()));
  d.T = x.shape()[0];
  d.B = x.shape()[1];
  d.I = x.shape()[2];
  if (w_hh.shape().size() != 2 || w_hh.shape()[0] != G * w_hh.shape()[1])
    throw py::value_error("w_hh must have shape (" + std::to_string(G) + " * hidden_size, hidden_size), got " +
                          fg::bind::shape_str(w_hh.shape()));
  d.H = w_hh.shape()[1];
  d.GH = G * d.H;
  expect(w_ih, "w_ih", {d.GH, d.I});
  return d;
}
#endif

void rnn_forward(int mode, const Obj& x, const Obj& h0, const Obj& c0, const Obj& w_ih, const Obj& w_hh,
                 const Obj& b_ih, const Obj& b_hh, const Obj& y, const Obj& h_n, const Obj& c_n, const Obj& gates,
                 const Obj& cells, const Obj& hn_lin, bool reverse) {
#ifdef FORGEGRAD_WITH_CUDA
  Arrays A;
  DeviceArray &X = A.get(x, "x"), &Wi = A.get(w_ih, "w_ih"), &Wh = A.get(w_hh, "w_hh");
  RnnDims d = rnn_dims(mode, X, Wi, Wh);
  const bool lstm = d.mode == fg::RnnMode::lstm, gru = d.mode == fg::RnnMode::gru;
  const Shape bh{d.B, d.H}, tbh{d.T, d.B, d.H};
  DeviceArray &H0 = A.get(h0, "h0"), &Y = A.get(y, "y"), &Hn = A.get(h_n, "h_n");
  expect(H0, "h0", bh);
  expect(Y, "y", tbh);
  expect(Hn, "h_n", bh);
  DeviceArray *C0 = lstm ? &A.get(c0, "c0") : nullptr, *Cn = lstm ? &A.get(c_n, "c_n") : nullptr;
  if (lstm) {
    expect(*C0, "c0", bh);
    expect(*Cn, "c_n", bh);
  }
  DeviceArray *Bi = A.opt(b_ih, "b_ih"), *Bh = A.opt(b_hh, "b_hh");
  if (Bi) expect(*Bi, "b_ih", {d.GH});
  if (Bh) expect(*Bh, "b_hh", {d.GH});
  DeviceArray* Gs = A.opt(gates, "gates");
  DeviceArray *Cs = nullptr, *Hl = nullptr;
  if (Gs) {
    expect(*Gs, "gates", {d.T, d.B, d.GH});
    if (lstm) expect(*(Cs = &A.get(cells, "cells")), "cells", tbh);
    if (gru) expect(*(Hl = &A.get(hn_lin, "hn_lin")), "hn_lin", tbh);
  }
  fg::RnnForwardArgs a{d.mode,    d.T,     d.B,       d.I,       d.H,     reverse, X.data(),
                       H0.data(), ptr(C0), Wi.data(), Wh.data(), ptr(Bi), ptr(Bh), Y.data(),
                       Hn.data(), ptr(Cn), ptr(Gs),   ptr(Cs),   ptr(Hl)};
  DeviceGuard guard(A.device());
  check(fg::cuda::rnn_layer_forward(a), "rnn_forward");
#else
  no_cuda();
#endif
}

void rnn_backward(int mode, const Obj& x, const Obj& h0, const Obj& c0, const Obj& w_ih, const Obj& w_hh, const Obj& y,
                  const Obj& gates, const Obj& cells, const Obj& hn_lin, const Obj& grad_y, const Obj& grad_hn,
                  const Obj& grad_cn, const Obj& gx, const Obj& gh0, const Obj& gc0, const Obj& gw_ih, const Obj& gw_hh,
                  const Obj& gb_ih, const Obj& gb_hh, bool reverse) {
#ifdef FORGEGRAD_WITH_CUDA
  Arrays A;
  DeviceArray &X = A.get(x, "x"), &Wi = A.get(w_ih, "w_ih"), &Wh = A.get(w_hh, "w_hh");
  RnnDims d = rnn_dims(mode, X, Wi, Wh);
  const bool lstm = d.mode == fg::RnnMode::lstm, gru = d.mode == fg::RnnMode::gru;
  const Shape bh{d.B, d.H}, tbh{d.T, d.B, d.H};
  DeviceArray &H0 = A.get(h0, "h0"), &Y = A.get(y, "y");
  expect(H0, "h0", bh);
  expect(Y, "y", tbh);
  DeviceArray *C0 = nullptr, *Gs = nullptr, *Cs = nullptr, *Hl = nullptr, *Gc0 = nullptr;
  if (lstm || gru) expect(*(Gs = &A.get(gates, "gates")), "gates", {d.T, d.B, d.GH});
  if (lstm) {
    expect(*(C0 = &A.get(c0, "c0")), "c0", bh);
    expect(*(Cs = &A.get(cells, "cells")), "cells", tbh);
    expect(*(Gc0 = &A.get(gc0, "gc0")), "gc0", bh);
  }
  if (gru) expect(*(Hl = &A.get(hn_lin, "hn_lin")), "hn_lin", tbh);
  DeviceArray *Gy = A.opt(grad_y, "grad_y"), *Ghn = A.opt(grad_hn, "grad_hn"),
              *Gcn = lstm ? A.opt(grad_cn, "grad_cn") : nullptr;
  if (Gy) expect(*Gy, "grad_y", tbh);
  if (Ghn) expect(*Ghn, "grad_hn", bh);
  if (Gcn) expect(*Gcn, "grad_cn", bh);
  DeviceArray &Gx = A.get(gx, "gx"), &Gh0 = A.get(gh0, "gh0"), &Gwi = A.get(gw_ih, "gw_ih"),
              &Gwh = A.get(gw_hh, "gw_hh");
  expect(Gx, "gx", {d.T, d.B, d.I});
  expect(Gh0, "gh0", bh);
  expect(Gwi, "gw_ih", {d.GH, d.I});
  expect(Gwh, "gw_hh", {d.GH, d.H});
  DeviceArray *Gbi = A.opt(gb_ih, "gb_ih"), *Gbh = A.opt(gb_hh, "gb_hh");
  if (Gbi) expect(*Gbi, "gb_ih", {d.GH});
  if (Gbh) expect(*Gbh, "gb_hh", {d.GH});
  fg::RnnBackwardArgs a{d.mode,     d.T,        d.B,       d.I,       d.H,       reverse,    X.data(),
                        H0.data(),  ptr(C0),    Wi.data(), Wh.data(), Y.data(),  ptr(Gs),    ptr(Cs),
                        ptr(Hl),    ptr(Gy),    ptr(Ghn),  ptr(Gcn),  Gx.data(), Gh0.data(), ptr(Gc0),
                        Gwi.data(), Gwh.data(), ptr(Gbi),  ptr(Gbh)};
  DeviceGuard guard(A.device());
  check(fg::cuda::rnn_layer_backward(a), "rnn_backward");
#else
  no_cuda();
#endif
}

// One step's gate kernels alone (what the layer calls per time step), for tests.
void lstm_cell_forward(const Obj& gates, const Obj& c_prev, const Obj& c_out, const Obj& h_out) {
#ifdef FORGEGRAD_WITH_CUDA
  Arrays A;
  DeviceArray &G = A.get(gates, "gates"), &Cp = A.get(c_prev, "c_prev"), &Co = A.get(c_out, "c_out"),
              &Ho = A.get(h_out, "h_out");
  if (G.shape().size() != 2 || G.shape()[1] % 4 != 0)
    throw py::value_error("gates must have shape (batch, 4 * hidden_size), got " + fg::bind::shape_str(G.shape()));
  const Shape bh{G.shape()[0], G.shape()[1] / 4};
  expect(Cp, "c_prev", bh);
  expect(Co, "c_out", bh);
  expect(Ho, "h_out", bh);
  DeviceGuard guard(A.device());
  check(fg::cuda::lstm_cell_forward(bh[0], bh[1], G.data(), Cp.data(), Co.data(), Ho.data()), "lstm_cell_forward");
#else
  no_cuda();
#endif
}

void gru_cell_forward(const Obj& xg, const Obj& hp, const Obj& h_prev, const Obj& h_out, const Obj& hn_save) {
#ifdef FORGEGRAD_WITH_CUDA
  Arrays A;
  DeviceArray &Xg = A.get(xg, "xg"), &Hp = A.get(hp, "hp"), &Hv = A.get(h_prev, "h_prev"), &Ho = A.get(h_out, "h_out");
  if (Xg.shape().size() != 2 || Xg.shape()[1] % 3 != 0)
    throw py::value_error("xg must have shape (batch, 3 * hidden_size), got " + fg::bind::shape_str(Xg.shape()));
  const Shape bh{Xg.shape()[0], Xg.shape()[1] / 3};
  same_shape(Xg, "xg", Hp, "hp");
  expect(Hv, "h_prev", bh);
  expect(Ho, "h_out", bh);
  DeviceArray* Hs = A.opt(hn_save, "hn_save");
  if (Hs) expect(*Hs, "hn_save", bh);
  DeviceGuard guard(A.device());
  check(fg::cuda::gru_cell_forward(bh[0], bh[1], Xg.data(), Hp.data(), Hv.data(), Ho.data(), ptr(Hs)),
        "gru_cell_forward");
#else
  no_cuda();
#endif
}

void lstm_cell_backward(const Obj& gates, const Obj& c, const Obj& c_prev, const Obj& dh, const Obj& gy, const Obj& dc,
                        const Obj& d_pre) {
#ifdef FORGEGRAD_WITH_CUDA
  Arrays A;
  DeviceArray &G = A.get(gates, "gates"), &D = A.get(d_pre, "d_pre");
  if (G.shape().size() != 2 || G.shape()[1] % 4 != 0)
    throw py::value_error("gates must have shape (batch, 4 * hidden_size), got " + fg::bind::shape_str(G.shape()));
  same_shape(G, "gates", D, "d_pre");
  const Shape bh{G.shape()[0], G.shape()[1] / 4};
  DeviceArray &C = A.get(c, "c"), &Cp = A.get(c_prev, "c_prev"), &Dh = A.get(dh, "dh"), &Dc = A.get(dc, "dc");
  expect(C, "c", bh);
  expect(Cp, "c_prev", bh);
  expect(Dh, "dh", bh);
  expect(Dc, "dc", bh);
  DeviceArray* Gy = A.opt(gy, "gy");
  if (Gy) expect(*Gy, "gy", bh);
  DeviceGuard guard(A.device());
  check(fg::cuda::lstm_cell_backward(bh[0], bh[1], G.data(), C.data(), Cp.data(), Dh.data(), ptr(Gy), Dc.data(),
                                     D.data()),
        "lstm_cell_backward");
#else
  no_cuda();
#endif
}

void gru_cell_backward(const Obj& gates, const Obj& hn, const Obj& h_prev, const Obj& dh, const Obj& gy,
                       const Obj& d_input, const Obj& d_hidden, const Obj& dh_direct) {
#ifdef FORGEGRAD_WITH_CUDA
  Arrays A;
  DeviceArray &G = A.get(gates, "gates"), &Di = A.get(d_input, "d_input"), &Dhh = A.get(d_hidden, "d_hidden");
  if (G.shape().size() != 2 || G.shape()[1] % 3 != 0)
    throw py::value_error("gates must have shape (batch, 3 * hidden_size), got " + fg::bind::shape_str(G.shape()));
  same_shape(G, "gates", Di, "d_input");
  same_shape(G, "gates", Dhh, "d_hidden");
  const Shape bh{G.shape()[0], G.shape()[1] / 3};
  DeviceArray &Hn = A.get(hn, "hn"), &Hv = A.get(h_prev, "h_prev"), &Dh = A.get(dh, "dh"),
              &Dd = A.get(dh_direct, "dh_direct");
  expect(Hn, "hn", bh);
  expect(Hv, "h_prev", bh);
  expect(Dh, "dh", bh);
  expect(Dd, "dh_direct", bh);
  DeviceArray* Gy = A.opt(gy, "gy");
  if (Gy) expect(*Gy, "gy", bh);
  DeviceGuard guard(A.device());
  check(fg::cuda::gru_cell_backward(bh[0], bh[1], G.data(), Hn.data(), Hv.data(), Dh.data(), ptr(Gy), Di.data(),
                                    Dhh.data(), Dd.data()),
        "gru_cell_backward");
#else
  no_cuda();
#endif
}

void expect_count(const char* name, size_t got, size_t n) {
  if (got != n)
    throw py::value_error(std::string(name) + " must have " + std::to_string(n) + " entries (one per param), got " +
                          std::to_string(got));
}

// The scalars as forgegrad._C.optim.adam_step takes them (bind_optim.cpp): the same derivation, so
// the two devices run the same float constants.
void adam_step(const List& params, const List& grads, const List& exp_avgs, const List& exp_avg_sqs,
               const std::optional<List>& max_exp_avg_sqs, const std::vector<double>& step_sizes,
               const std::vector<double>& bias_correction2_sqrts, double beta1, double beta2, double eps, double lr,
               double weight_decay, bool decoupled, bool maximize) {
  const size_t n = params.size();
  expect_count("grads", grads.size(), n);
  expect_count("exp_avgs", exp_avgs.size(), n);
  expect_count("exp_avg_sqs", exp_avg_sqs.size(), n);
  if (max_exp_avg_sqs) expect_count("max_exp_avg_sqs", max_exp_avg_sqs->size(), n);
  expect_count("step_sizes", step_sizes.size(), n);
  expect_count("bias_correction2_sqrts", bias_correction2_sqrts.size(), n);
#ifdef FORGEGRAD_WITH_CUDA
  std::map<int, std::vector<fg::AdamTensor>> by_device;  // one launch per device
  for (size_t i = 0; i < n; ++i) {
    Arrays A;  // parameter i and its state: one device
    DeviceArray& p = A.get(params[i], item("params", i));
    DeviceArray &g = A.get(grads[i], item("grads", i)), &m = A.get(exp_avgs[i], item("exp_avgs", i)),
                &v = A.get(exp_avg_sqs[i], item("exp_avg_sqs", i));
    same_shape(p, item("params", i), g, item("grads", i));
    same_shape(p, item("params", i), m, item("exp_avgs", i));
    same_shape(p, item("params", i), v, item("exp_avg_sqs", i));
    float* x = nullptr;
    if (max_exp_avg_sqs) {
      DeviceArray& mx = A.get((*max_exp_avg_sqs)[i], item("max_exp_avg_sqs", i));
      same_shape(p, item("params", i), mx, item("max_exp_avg_sqs", i));
      x = mx.data();
    }
    if (!(bias_correction2_sqrts[i] > 0.0)) throw py::value_error(item("bias_correction2_sqrts", i) + " must be > 0");
    by_device[A.device()].push_back(fg::AdamTensor{p.data(), g.data(), m.data(), v.data(), x, p.size(),
                                                   static_cast<float>(step_sizes[i]),
                                                   static_cast<float>(bias_correction2_sqrts[i])});
  }
  fg::AdamHyper h;
  h.exp_avg_weight = static_cast<float>(1.0 - beta1);
  h.beta2 = static_cast<float>(beta2);
  h.exp_avg_sq_weight = static_cast<float>(1.0 - beta2);
  h.eps = static_cast<float>(eps);
  h.weight_decay = decoupled ? 0.0f : static_cast<float>(weight_decay);
  h.param_scale = decoupled ? static_cast<float>(1.0 - lr * weight_decay) : 1.0f;
  h.decoupled = decoupled;
  h.maximize = maximize;
  h.amsgrad = max_exp_avg_sqs.has_value();
  for (const auto& [device, ts] : by_device) {
    DeviceGuard guard(device);
    check(fg::cuda::adam_multi_tensor(ts.data(), static_cast<int64_t>(ts.size()), h), "adam_step");
  }
#else
  no_cuda();
#endif
}

void sgd_step(const List& params, const List& grads, const std::optional<List>& momentum_buffers,
              const std::vector<bool>& init_buffers, double lr, double momentum, double dampening, double weight_decay,
              bool nesterov, bool maximize) {
  const size_t n = params.size();
  expect_count("grads", grads.size(), n);
  if (momentum != 0.0 && !momentum_buffers) throw py::value_error("momentum_buffers are required when momentum != 0");
  if (momentum != 0.0) {
    expect_count("momentum_buffers", momentum_buffers->size(), n);
    expect_count("init_buffers", init_buffers.size(), n);
  }
#ifdef FORGEGRAD_WITH_CUDA
  std::map<int, std::vector<fg::SgdTensor>> by_device;  // one launch per device
  for (size_t i = 0; i < n; ++i) {
    Arrays A;  // parameter i and its buffer: one device
    DeviceArray &p = A.get(params[i], item("params", i)), &g = A.get(grads[i], item("grads", i));
    same_shape(p, item("params", i), g, item("grads", i));
    float* b = nullptr;
    bool init = false;
    if (momentum != 0.0) {
      DeviceArray& buf = A.get((*momentum_buffers)[i], item("momentum_buffers", i));
      same_shape(p, item("params", i), buf, item("momentum_buffers", i));
      b = buf.data();
      init = init_buffers[i];
    }
    by_device[A.device()].push_back(fg::SgdTensor{p.data(), g.data(), b, p.size(), init});
  }
  fg::SgdHyper h;
  h.neg_lr = static_cast<float>(-lr);
  h.momentum = static_cast<float>(momentum);
  h.one_minus_dampening = static_cast<float>(1.0 - dampening);
  h.weight_decay = static_cast<float>(weight_decay);
  h.nesterov = nesterov;
  h.maximize = maximize;
  for (const auto& [device, ts] : by_device) {
    DeviceGuard guard(device);
    check(fg::cuda::sgd_multi_tensor(ts.data(), static_cast<int64_t>(ts.size()), h), "sgd_step");
  }
#else
  no_cuda();
#endif
}

void bind(py::module_& m) {
#ifdef FORGEGRAD_WITH_CUDA
  m.attr("built") = true;
#else
  m.attr("built") = false;
#endif
  m.def("act_forward", &act_forward, py::arg("op"), py::arg("x"), py::arg("out"), py::arg("alpha") = 0.0f,
        "out = act(x) on device arrays; op is a forgegrad._C.activation code (RELU, ...)");
  m.def("act_backward", &act_backward, py::arg("op"), py::arg("grad"), py::arg("saved"), py::arg("out"),
        py::arg("alpha") = 0.0f, "out = grad * act'(saved); saved = y (relu, sigmoid, tanh) or x (the others)");
  m.def("rnn_forward", &rnn_forward, py::arg("mode"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("y"), py::arg("h_n"), py::arg("c_n"),
        py::arg("gates"), py::arg("cells"), py::arg("hn_lin"), py::arg("reverse"),
        "One recurrent layer on device arrays (the contract of forgegrad._C.rnn.forward).");
  m.def("rnn_backward", &rnn_backward, py::arg("mode"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("y"), py::arg("gates"), py::arg("cells"), py::arg("hn_lin"), py::arg("grad_y"),
        py::arg("grad_hn"), py::arg("grad_cn"), py::arg("gx"), py::arg("gh0"), py::arg("gc0"), py::arg("gw_ih"),
        py::arg("gw_hh"), py::arg("gb_ih"), py::arg("gb_hh"), py::arg("reverse"),
        "Backward through time on device arrays (the contract of forgegrad._C.rnn.backward).");
  m.def("lstm_cell_forward", &lstm_cell_forward, py::arg("gates"), py::arg("c_prev"), py::arg("c_out"),
        py::arg("h_out"));
  m.def("gru_cell_forward", &gru_cell_forward, py::arg("xg"), py::arg("hp"), py::arg("h_prev"), py::arg("h_out"),
        py::arg("hn_save"));
  m.def("lstm_cell_backward", &lstm_cell_backward, py::arg("gates"), py::arg("c"), py::arg("c_prev"), py::arg("dh"),
        py::arg("gy"), py::arg("dc"), py::arg("d_pre"));
  m.def("gru_cell_backward", &gru_cell_backward, py::arg("gates"), py::arg("hn"), py::arg("h_prev"), py::arg("dh"),
        py::arg("gy"), py::arg("d_input"), py::arg("d_hidden"), py::arg("dh_direct"));
  m.def("adam_step", &adam_step, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
        py::arg("max_exp_avg_sqs"), py::arg("step_sizes"), py::arg("bias_correction2_sqrts"), py::kw_only(),
        py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("lr"), py::arg("weight_decay"),
        py::arg("decoupled"), py::arg("maximize"),
        "One Adam/AdamW step of every device parameter in one kernel launch (forgegrad._C.optim.adam_step's "
        "contract).");
  m.def("sgd_step", &sgd_step, py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"),
        py::arg("init_buffers"), py::kw_only(), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
        py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"),
        "One SGD step of every device parameter in one kernel launch (forgegrad._C.optim.sgd_step's contract).");
}

}  // namespace

FG_REGISTER_BINDINGS(cuda_pointwise, bind)
