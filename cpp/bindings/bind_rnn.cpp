// forgegrad._C.rnn: LSTM / GRU / RNN forward and backward through time on numpy arrays (one layer,
// one direction). Every array is checked here (dtype, rank, exact shape, contiguity, writability)
// before the kernel runs; python/forgegrad/kernels/rnn.py allocates outputs and gives friendlier
// messages first.
#include <string>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/py_array.h"
#include "forgegrad/rnn.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

fg::RnnMode mode_from_int(int mode) {
  if (mode < 0 || mode > 3) throw py::value_error("rnn: mode must be 0 (lstm), 1 (gru), 2 (rnn_tanh) or 3 (rnn_relu)");
  return static_cast<fg::RnnMode>(mode);
}

const char* mode_name(fg::RnnMode m) {
  switch (m) {
    case fg::RnnMode::lstm: return "lstm";
    case fg::RnnMode::gru: return "gru";
    case fg::RnnMode::rnn_tanh: return "rnn_tanh";
    default: return "rnn_relu";
  }
}

// Required float32 C-contiguous array of an exact shape.
float* req(const py::object& o, const char* name, const std::vector<int64_t>& shape, bool writable) {
  if (o.is_none()) throw py::value_error(std::string(name) + " is required here");
  if (!py::isinstance<py::array>(o)) throw py::type_error(std::string(name) + " must be a numpy.ndarray");
  ArrayArg a =
      fg::bind::f32_arg(o.cast<py::array>(), name, static_cast<int>(shape.size()), fg::bind::kContiguous, writable);
  fg::bind::expect_shape(a, name, shape);
  return a.f32();
}

// Optional: None -> nullptr.
float* opt(const py::object& o, const char* name, const std::vector<int64_t>& shape, bool writable) {
  return o.is_none() ? nullptr : req(o, name, shape, writable);
}

struct Dims {
  fg::RnnMode mode;
  int64_t T, B, I, H, GH;
};

// Sizes from x (T, B, I) and w_hh (G*H, H); checks w_ih against them.
Dims dims(int mode, const py::object& x, const py::object& w_ih, const py::object& w_hh) {
  Dims d;
  d.mode = mode_from_int(mode);
  if (!py::isinstance<py::array>(x)) throw py::type_error("x must be a numpy.ndarray");
  if (!py::isinstance<py::array>(w_hh)) throw py::type_error("w_hh must be a numpy.ndarray");
  ArrayArg X = fg::bind::f32_arg(x.cast<py::array>(), "x", 3);
  ArrayArg Whh = fg::bind::f32_arg(w_hh.cast<py::array>(), "w_hh", 2);
  const int G = fg::rnn_num_gates(d.mode);
  d.T = X.shape[0];
  d.B = X.shape[1];
  d.I = X.shape[2];
  d.H = Whh.shape[1];
  d.GH = G * d.H;
  if (d.T < 1 || d.B < 1 || d.I < 1)
    throw py::value_error("x must have shape (T, B, I) with T, B, I >= 1, got " + fg::bind::shape_str(X.shape));
  if (d.H < 1) throw py::value_error("w_hh must have at least one column (hidden_size >= 1)");
  if (Whh.shape[0] != d.GH)
    throw py::value_error(std::string("w_hh must have shape (") + std::to_string(G) +
                          " * hidden_size, hidden_size) = " + fg::bind::shape_str({d.GH, d.H}) + " for " +
                          mode_name(d.mode) + ", got " + fg::bind::shape_str(Whh.shape));
  req(w_ih, "w_ih", {d.GH, d.I}, false);
  return d;
}

// The fields forward and backward share (mode, sizes, direction, inputs, weights), checked in the
// same order by both.
template <class Args>
void fill_common(Args& a, const Dims& d, bool reverse, const py::object& x, const py::object& h0, const py::object& c0,
                 const py::object& w_ih, const py::object& w_hh) {
  a.mode = d.mode;
  a.T = d.T, a.B = d.B, a.I = d.I, a.H = d.H;
  a.reverse = reverse;
  a.x = req(x, "x", {d.T, d.B, d.I}, false);
  a.h0 = req(h0, "h0", {d.B, d.H}, false);
  a.c0 = d.mode == fg::RnnMode::lstm ? req(c0, "c0", {d.B, d.H}, false) : nullptr;
  a.w_ih = req(w_ih, "w_ih", {d.GH, d.I}, false);
  a.w_hh = req(w_hh, "w_hh", {d.GH, d.H}, false);
}

void forward(int mode, const py::object& x, const py::object& h0, const py::object& c0, const py::object& w_ih,
             const py::object& w_hh, const py::object& b_ih, const py::object& b_hh, const py::object& y,
             const py::object& h_n, const py::object& c_n, const py::object& gates, const py::object& cells,
             const py::object& hn_lin, bool reverse) {
  Dims d = dims(mode, x, w_ih, w_hh);
  const bool lstm = d.mode == fg::RnnMode::lstm, gru = d.mode == fg::RnnMode::gru;
  fg::RnnForwardArgs a{};
  fill_common(a, d, reverse, x, h0, c0, w_ih, w_hh);
  a.b_ih = opt(b_ih, "b_ih", {d.GH}, false);
  a.b_hh = opt(b_hh, "b_hh", {d.GH}, false);
  a.y = req(y, "y", {d.T, d.B, d.H}, true);
  a.h_n = req(h_n, "h_n", {d.B, d.H}, true);
  a.c_n = lstm ? req(c_n, "c_n", {d.B, d.H}, true) : nullptr;
  if (lstm || gru) {
    a.gates = opt(gates, "gates", {d.T, d.B, d.GH}, true);
    float* extra = opt(lstm ? cells : hn_lin, lstm ? "cells" : "hn_lin", {d.T, d.B, d.H}, true);
    if ((a.gates == nullptr) != (extra == nullptr))
      throw py::value_error(std::string("rnn forward: gates and ") + (lstm ? "cells" : "hn_lin") +
                            " must both be given (training) or both be None (inference)");
    (lstm ? a.cells : a.hn_lin) = extra;
  }
  const py::object none = py::none();
  fg::bind::check_no_overlap(
      "rnn forward",
      {{x, "x"}, {h0, "h0"}, {lstm ? c0 : none, "c0"}, {w_ih, "w_ih"}, {w_hh, "w_hh"}, {b_ih, "b_ih"}, {b_hh, "b_hh"}},
      {{y, "y"},
       {h_n, "h_n"},
       {lstm ? c_n : none, "c_n"},
       {(lstm || gru) ? gates : none, "gates"},
       {lstm ? cells : none, "cells"},
       {gru ? hn_lin : none, "hn_lin"}});
  py::gil_scoped_release release;
  fg::rnn_forward(a);
}

void backward(int mode, const py::object& x, const py::object& h0, const py::object& c0, const py::object& w_ih,
              const py::object& w_hh, const py::object& y, const py::object& gates, const py::object& cells,
              const py::object& hn_lin, const py::object& grad_y, const py::object& grad_hn, const py::object& grad_cn,
              const py::object& gx, const py::object& gh0, const py::object& gc0, const py::object& gw_ih,
              const py::object& gw_hh, const py::object& gb_ih, const py::object& gb_hh, bool reverse) {
  Dims d = dims(mode, x, w_ih, w_hh);
  const bool lstm = d.mode == fg::RnnMode::lstm, gru = d.mode == fg::RnnMode::gru;
  fg::RnnBackwardArgs a{};
  fill_common(a, d, reverse, x, h0, c0, w_ih, w_hh);
  a.y = req(y, "y", {d.T, d.B, d.H}, false);
  a.gates = (lstm || gru) ? req(gates, "gates", {d.T, d.B, d.GH}, false) : nullptr;
  a.cells = lstm ? req(cells, "cells", {d.T, d.B, d.H}, false) : nullptr;
  a.hn_lin = gru ? req(hn_lin, "hn_lin", {d.T, d.B, d.H}, false) : nullptr;
  a.grad_y = opt(grad_y, "grad_y", {d.T, d.B, d.H}, false);
  a.grad_hn = opt(grad_hn, "grad_hn", {d.B, d.H}, false);
  a.grad_cn = lstm ? opt(grad_cn, "grad_cn", {d.B, d.H}, false) : nullptr;
  a.gx = req(gx, "gx", {d.T, d.B, d.I}, true);
  a.gh0 = req(gh0, "gh0", {d.B, d.H}, true);
  a.gc0 = lstm ? req(gc0, "gc0", {d.B, d.H}, true) : nullptr;
  a.gw_ih = req(gw_ih, "gw_ih", {d.GH, d.I}, true);
  a.gw_hh = req(gw_hh, "gw_hh", {d.GH, d.H}, true);
  a.gb_ih = opt(gb_ih, "gb_ih", {d.GH}, true);
  a.gb_hh = opt(gb_hh, "gb_hh", {d.GH}, true);
  const py::object none = py::none();
  fg::bind::check_no_overlap("rnn backward",
                             {{x, "x"},
                              {h0, "h0"},
                              {lstm ? c0 : none, "c0"},
                              {w_ih, "w_ih"},
                              {w_hh, "w_hh"},
                              {y, "y"},
                              {(lstm || gru) ? gates : none, "gates"},
                              {lstm ? cells : none, "cells"},
                              {gru ? hn_lin : none, "hn_lin"},
                              {grad_y, "grad_y"},
                              {grad_hn, "grad_hn"},
                              {lstm ? grad_cn : none, "grad_cn"}},
                             {{gx, "gx"},
                              {gh0, "gh0"},
                              {lstm ? gc0 : none, "gc0"},
                              {gw_ih, "gw_ih"},
                              {gw_hh, "gw_hh"},
                              {gb_ih, "gb_ih"},
                              {gb_hh, "gb_hh"}});
  py::gil_scoped_release release;
  fg::rnn_backward(a);
}

py::array activation(const std::string& kind, const py::array& x) {
  int k = kind == "sigmoid" ? 0 : kind == "tanh" ? 1 : kind == "exp" ? 2 : -1;
  if (k < 0) throw py::value_error("activation: kind must be 'sigmoid', 'tanh' or 'exp', got '" + kind + "'");
  ArrayArg X = fg::bind::f32_arg(x, "x", 1);
  py::array_t<float> out(X.size);
  float* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    fg::rnn_activation(k, X.f32(), o, X.size);
  }
  return out;
}

void bind(py::module_& m) {
  m.def("forward", &forward, py::arg("mode"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("y"), py::arg("h_n"), py::arg("c_n"),
        py::arg("gates"), py::arg("cells"), py::arg("hn_lin"), py::arg("reverse"),
        "One recurrent layer over a sequence; writes y, h_n, c_n and (training) the saved activations.");
  m.def("backward", &backward, py::arg("mode"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("y"), py::arg("gates"), py::arg("cells"), py::arg("hn_lin"), py::arg("grad_y"),
        py::arg("grad_hn"), py::arg("grad_cn"), py::arg("gx"), py::arg("gh0"), py::arg("gc0"), py::arg("gw_ih"),
        py::arg("gw_hh"), py::arg("gb_ih"), py::arg("gb_hh"), py::arg("reverse"),
        "Backward through time of one recurrent layer; writes every gradient.");
  m.def("activation", &activation, py::arg("kind"), py::arg("x"),
        "The SIMD sigmoid / tanh / exp the gate passes use (for accuracy tests), on a 1-D float32 array.");
}

}  // namespace

FG_REGISTER_BINDINGS(rnn, bind)
