// forgegrad._C.loss: fused softmax cross-entropy on (N, C) logits with int64 class targets.
// Targets are range-checked here (an out-of-range class would read outside the row).
#include <string>

#include "forgegrad/bindings.h"
#include "forgegrad/loss.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

struct CeArgs {
  py::array weight_arr;  // owns the weight array converted from a sequence: a.weight points into it
  int64_t N = 0, C = 0;
  const int64_t* target = nullptr;
  const float* weight = nullptr;
  float weight_total = 0.0f;
};

CeArgs check_common(const ArrayArg& Z, const char* zname, const py::array& target, const py::object& weight,
                    int64_t ignore_index, float label_smoothing) {
  CeArgs a;
  a.N = Z.shape[0];
  a.C = Z.shape[1];
  ArrayArg T = fg::bind::i64_arg(target, "target", 1);
  fg::bind::expect_shape(T, "target", {a.N});
  if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f))
    throw py::value_error("label_smoothing must be in [0, 1], got " + std::to_string(label_smoothing));
  a.target = T.i64();
  for (int64_t i = 0; i < a.N; ++i) {
    int64_t t = a.target[i];
    if (t != ignore_index && (t < 0 || t >= a.C))
      throw py::index_error("cross_entropy: target " + std::to_string(t) + " is out of bounds for " +
                            std::to_string(a.C) + " classes");
  }
  double total = static_cast<double>(a.C);
  if (!weight.is_none()) {
    a.weight_arr = py::array(weight);  // a temporary would be freed before the kernel reads it
    ArrayArg Wt = fg::bind::f32_arg(a.weight_arr, "weight", 1);
    fg::bind::expect_shape(Wt, "weight", {a.C});
    a.weight = Wt.f32();
    total = 0.0;
    for (int64_t c = 0; c < a.C; ++c) total += a.weight[c];
  }
  a.weight_total = static_cast<float>(total);
  if (a.C == 0 && a.N > 0)
    throw py::value_error(std::string(zname) + " has 0 classes but " + std::to_string(a.N) + " rows");
  return a;
}

// Returns (sum of the per-row losses, sum of the target weights of the rows not ignored): the
// numerators and denominator of reduction='sum' / 'mean', summed in row order in double.
py::tuple forward(const py::array& logits, const py::array& target, const py::object& weight, int64_t ignore_index,
                  float label_smoothing, const py::array& prob_out, const py::array& loss_out) {
  ArrayArg Z = fg::bind::f32_arg(logits, "logits", 2);
  CeArgs a = check_common(Z, "logits", target, weight, ignore_index, label_smoothing);
  ArrayArg P = fg::bind::f32_arg(prob_out, "prob_out", 2, fg::bind::kContiguous, true);
  ArrayArg L = fg::bind::f32_arg(loss_out, "loss_out", 1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(P, "prob_out", Z.shape);
  fg::bind::expect_shape(L, "loss_out", {a.N});
  fg::bind::check_no_overlap("cross_entropy_forward", {{logits, "logits"}, {target, "target"}, {weight, "weight"}},
                             {{prob_out, "prob_out"}, {loss_out, "loss_out"}});
  double loss_sum = 0.0, weight_sum = 0.0;
  {
    py::gil_scoped_release release;
    fg::cross_entropy_forward(Z.f32(), a.target, a.weight, a.weight_total, a.N, a.C, ignore_index, label_smoothing,
                              P.f32(), L.f32());
    const float* l = L.f32();
    for (int64_t i = 0; i < a.N; ++i) {
      loss_sum += l[i];
      int64_t t = a.target[i];
      if (t != ignore_index) weight_sum += a.weight ? a.weight[t] : 1.0f;
    }
  }
  return py::make_tuple(static_cast<float>(loss_sum), static_cast<float>(weight_sum));
}

void backward(const py::array& prob, const py::array& target, const py::object& weight, int64_t ignore_index,
              float label_smoothing, const py::object& grad_loss, float grad_scale, const py::array& out) {
  ArrayArg P = fg::bind::f32_arg(prob, "prob", 2);
  CeArgs a = check_common(P, "prob", target, weight, ignore_index, label_smoothing);
  ArrayArg D = fg::bind::f32_arg(out, "out", 2, fg::bind::kContiguous, true);
  fg::bind::expect_shape(D, "out", P.shape);
  const float* gl = nullptr;
  py::array gl_arr;  // keeps a grad_loss converted from a sequence alive until the kernel returns
  if (!grad_loss.is_none()) {
    gl_arr = py::array(grad_loss);
    ArrayArg G = fg::bind::f32_arg(gl_arr, "grad_loss", 1);
    fg::bind::expect_shape(G, "grad_loss", {a.N});
    gl = G.f32();
  }
  // out may be prob itself: rows are read and written in one pass
  fg::bind::check_no_overlap("cross_entropy_backward",
                             {{prob, "prob"}, {target, "target"}, {weight, "weight"}, {gl_arr, "grad_loss"}},
                             {{out, "out"}}, {{"out", "prob"}});
  py::gil_scoped_release release;
  fg::cross_entropy_backward(P.f32(), a.target, a.weight, a.weight_total, a.N, a.C, ignore_index, label_smoothing, gl,
                             grad_scale, D.f32());
}

void bind(py::module_& m) {
  m.def("cross_entropy_forward", &forward, py::arg("logits"), py::arg("target"), py::arg("weight"),
        py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("prob_out"), py::arg("loss_out"),
        "Per-row cross-entropy losses into loss_out and softmax(logits) into prob_out; returns "
        "(loss_sum, weight_sum).");
  m.def("cross_entropy_backward", &backward, py::arg("prob"), py::arg("target"), py::arg("weight"),
        py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("grad_loss"), py::arg("grad_scale"),
        py::arg("out"), "out = d loss / d logits scaled by grad_scale * grad_loss[i] (grad_loss may be None).");
}

}  // namespace

FG_REGISTER_BINDINGS(loss, bind)
