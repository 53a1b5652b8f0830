// forgegrad._C.ctc: CTC loss forward / backward (cpp/kernels/ctc.cpp) on numpy arrays. log_probs is
// (T, N, C) float32 or float64; targets int64, padded (N, S) or concatenated (sum of target_lengths,);
// the lengths int64 (N,). Every length and label is checked here, so the kernels never index outside
// their arrays: a label outside [0, C) or equal to the blank, a length past T or past the targets.
#include <string>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/checked.h"
#include "forgegrad/ctc.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

// The checked problem and the offset tables it points into.
struct Checked {
  fg::CtcProblem p;
  std::vector<int64_t> target_offset, alpha_offset;
  int64_t alpha_size = 0;  // doubles in the whole alpha buffer
  bool is_f32 = true;
};

ArrayArg log_probs_arg(const py::array& a, bool* is_f32) {
  *is_f32 = fg::bind::is_float32(a);
  if (*is_f32) return fg::bind::f32_arg(a, "log_probs", 3);
  if (!py::detail::npy_api::get().PyArray_EquivTypes_(a.dtype().ptr(), py::dtype::of<double>().ptr()))
    throw py::type_error("log_probs must be a float32 or float64 array, got dtype " + std::string(py::str(a.dtype())));
  return fg::bind::f64_arg(a, "log_probs", 3);
}

std::string at(int64_t b) { return " (sample " + std::to_string(b) + ")"; }

Checked check(const py::array& log_probs, const py::array& targets, const py::array& input_lengths,
              const py::array& target_lengths, int64_t blank) {
  Checked c;
  ArrayArg X = log_probs_arg(log_probs, &c.is_f32);
  fg::CtcProblem& p = c.p;
  p.T = X.shape[0];
  p.N = X.shape[1];
  p.C = X.shape[2];
  if (blank < 0 || blank >= p.C)
    throw py::value_error("blank must be a class index in [0, " + std::to_string(p.C) + ") (log_probs has " +
                          std::to_string(p.C) + " classes), got " + std::to_string(blank));
  p.blank = blank;
  ArrayArg IL = fg::bind::i64_arg(input_lengths, "input_lengths", 1);
  ArrayArg TL = fg::bind::i64_arg(target_lengths, "target_lengths", 1);
  fg::bind::expect_shape(IL, "input_lengths", {p.N});
  fg::bind::expect_shape(TL, "target_lengths", {p.N});
  ArrayArg Y = fg::bind::i64_arg(targets, "targets");
  if (Y.ndim != 1 && Y.ndim != 2)
    throw py::value_error("targets must be 1-D (concatenated) or 2-D (N, S) (padded), got shape " +
                          fg::bind::shape_str(Y.shape));
  p.input_length = IL.i64();
  p.target_length = TL.i64();
  p.targets = Y.i64();
  for (int64_t b = 0; b < p.N; ++b) {
    const int64_t il = p.input_length[b];
    if (il < 0 || il > p.T)
      throw py::value_error("input_lengths must be in [0, T] with T = " + std::to_string(p.T) +
                            " (log_probs' time steps), got " + std::to_string(il) + at(b));
  }
  c.target_offset.resize(static_cast<size_t>(p.N));
  if (Y.ndim == 2) {
    if (Y.shape[0] != p.N)
      throw py::value_error("targets (padded, N x S) must have N = " + std::to_string(p.N) + " rows, got shape " +
                            fg::bind::shape_str(Y.shape));
    for (int64_t b = 0; b < p.N; ++b) {
      const int64_t tl = p.target_length[b];
      if (tl < 0 || tl > Y.shape[1])
        throw py::value_error("target_lengths must be in [0, S] with S = " + std::to_string(Y.shape[1]) +
                              " (targets' columns), got " + std::to_string(tl) + at(b));
      c.target_offset[static_cast<size_t>(b)] = b * Y.shape[1];
    }
  } else {
    int64_t pos = 0;
    for (int64_t b = 0; b < p.N; ++b) {
      const int64_t tl = p.target_length[b];
      if (tl < 0 || tl > Y.shape[0] - pos)
        throw py::value_error("target_lengths must be >= 0 and sum to the " + std::to_string(Y.shape[0]) +
                              " labels of the concatenated targets; " + std::to_string(tl) +
                              (tl < 0 ? " is negative" : " overruns them") + at(b));
      c.target_offset[static_cast<size_t>(b)] = pos;
      pos += tl;
    }
    if (pos != Y.shape[0])
      throw py::value_error("target_lengths sum to " + std::to_string(pos) + " but the concatenated targets hold " +
                            std::to_string(Y.shape[0]) + " labels");
  }
  p.target_offset = c.target_offset.data();
  c.alpha_offset.resize(static_cast<size_t>(p.N));
  for (int64_t b = 0; b < p.N; ++b) {
    const int64_t* tg = p.targets + c.target_offset[static_cast<size_t>(b)];
    for (int64_t k = 0; k < p.target_length[b]; ++k) {
      if (tg[k] < 0 || tg[k] >= p.C)
        throw py::value_error("targets must hold class indices in [0, " + std::to_string(p.C) + "), got " +
                              std::to_string(tg[k]) + " at position " + std::to_string(k) + at(b));
      if (tg[k] == blank)
        throw py::value_error("targets must not contain the blank (" + std::to_string(blank) + "), found at position " +
                              std::to_string(k) + at(b));
    }
    int64_t states = 0, rows = 0;
    // bounded: input_length <= T and target_length <= the targets' size, but their product may not be
    if (!fg::checked_mul(p.target_length[b], 2, &states) || !fg::checked_add(states, 1, &states) ||
        !fg::checked_elements({p.input_length[b], states}, &rows) ||
        !fg::checked_add(c.alpha_size, rows, &c.alpha_size) || c.alpha_size > fg::kMaxElements)
      throw py::value_error("ctc: the forward variables (sum of input_length x (2 target_length + 1)) are too many");
    c.alpha_offset[static_cast<size_t>(b)] = c.alpha_size - rows;
  }
  p.alpha_offset = c.alpha_offset.data();
  return c;
}

py::tuple forward(const py::array& log_probs, const py::array& targets, const py::array& input_lengths,
                  const py::array& target_lengths, int64_t blank, bool keep_alpha) {
  Checked c = check(log_probs, targets, input_lengths, target_lengths, blank);
  py::array_t<double> nll(c.p.N);
  py::object alpha_obj = py::none();
  double* alpha = nullptr;
  if (keep_alpha) {
    py::array_t<double> a(c.alpha_size);
    alpha = a.mutable_data();
    alpha_obj = a;
  }
  double* out = nll.mutable_data();
  const void* x = log_probs.data();
  {
    py::gil_scoped_release release;
    if (c.is_f32)
      fg::ctc_forward(c.p, static_cast<const float*>(x), out, alpha);
    else
      fg::ctc_forward(c.p, static_cast<const double*>(x), out, alpha);
  }
  return py::make_tuple(nll, alpha_obj);
}

py::array backward(const py::array& log_probs, const py::array& targets, const py::array& input_lengths,
                   const py::array& target_lengths, int64_t blank, const py::array& nll, const py::array& alpha,
                   const py::array& grad_nll, bool zero_infinity) {
  Checked c = check(log_probs, targets, input_lengths, target_lengths, blank);
  ArrayArg NLL = fg::bind::f64_arg(nll, "nll", 1);
  ArrayArg A = fg::bind::f64_arg(alpha, "alpha", 1);
  ArrayArg G = fg::bind::f64_arg(grad_nll, "grad_nll", 1);
  fg::bind::expect_shape(NLL, "nll", {c.p.N});
  fg::bind::expect_shape(A, "alpha", {c.alpha_size});
  fg::bind::expect_shape(G, "grad_nll", {c.p.N});
  const std::vector<py::ssize_t> shape = {static_cast<py::ssize_t>(c.p.T), static_cast<py::ssize_t>(c.p.N),
                                          static_cast<py::ssize_t>(c.p.C)};
  py::array grad = c.is_f32 ? py::array(py::array_t<float>(shape)) : py::array(py::array_t<double>(shape));
  void* g = grad.mutable_data();
  const void* x = log_probs.data();
  {
    py::gil_scoped_release release;
    if (c.is_f32)
      fg::ctc_backward(c.p, static_cast<const float*>(x), NLL.f64(), A.f64(), G.f64(), zero_infinity,
                       static_cast<float*>(g));
    else
      fg::ctc_backward(c.p, static_cast<const double*>(x), NLL.f64(), A.f64(), G.f64(), zero_infinity,
                       static_cast<double*>(g));
  }
  return grad;
}

void bind(py::module_& m) {
  m.def("forward", &forward, py::arg("log_probs"), py::arg("targets"), py::arg("input_lengths"),
        py::arg("target_lengths"), py::arg("blank"), py::arg("keep_alpha"),
        "CTC negative log-likelihood per sample: returns (nll float64 (N,), alpha float64 1-D or None). "
        "alpha (the log-space forward variables, sample after sample) is what backward needs.");
  m.def("backward", &backward, py::arg("log_probs"), py::arg("targets"), py::arg("input_lengths"),
        py::arg("target_lengths"), py::arg("blank"), py::arg("nll"), py::arg("alpha"), py::arg("grad_nll"),
        py::arg("zero_infinity"),
        "d (sum_b grad_nll[b] * nll[b]) / d log_probs, (T, N, C) in log_probs' dtype; 0 past each input "
        "length, and for every step of a sample whose nll is inf when zero_infinity.");
}

}  // namespace

FG_REGISTER_BINDINGS(ctc, bind)
