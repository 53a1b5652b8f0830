// forgegrad._C.optim: fused SGD / Adam / AdamW updates over lists of numpy float32 arrays, and
// the per-tensor reductions behind clip_grad_norm_.
//
// Every array is checked here (float32, C-contiguous, writeable where written, same shape as its
// parameter) and no two arrays of one call may overlap: the kernels update in place from several
// threads. Hyper-parameters arrive as Python floats (double); derived coefficients such as
// 1 - beta1 are formed in double and rounded once to float, as torch does.
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/optim.h"
#include "forgegrad/parallel.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

// Lists arrive as Python sequences and their items are checked here, not converted by pybind11's
// py::array caster (which runs numpy's PyArray_FromAny per item: most of the cost of a step on a
// small model).
using List = py::sequence;

using fg::bind::expect_count;
using fg::bind::item_name;

struct Span {
  float* ptr = nullptr;
  int64_t size = 0;
};

bool same_shape(const py::array& a, const py::array& b) {
  if (a.ndim() != b.ndim()) return false;
  for (py::ssize_t d = 0; d < a.ndim(); ++d)
    if (a.shape(d) != b.shape(d)) return false;
  return true;
}

// list[i] as a float32, C-contiguous array (writeable if `writable`, shaped like `like` if given).
// The fast path tests exactly what fg::bind::f32_arg / expect_shape test; on any failure those run
// to raise their TypeError / ValueError naming the argument.
// Every item is kept referenced in `alive` until the call ends (a sequence may create its items on
// access; the kernel must not outlive them).
Span array_item(const List& list, const char* list_name, size_t i, const py::array* like, bool writable,
                std::vector<py::object>& alive, py::array* keep = nullptr) {
  py::object item = list[i];
  if (!py::isinstance<py::array>(item))
    throw py::type_error(item_name(list_name, i) + " must be a numpy float32 array, got " +
                         std::string(py::str(py::type::of(item).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(item);
  // Aligned too (flags.aligned): an unaligned buffer makes f32_arg below raise a clear error.
  bool ok = fg::bind::is_float32(a) && (a.flags() & py::array::c_style) &&
            (a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) && (!writable || a.writeable()) &&
            (like == nullptr || same_shape(a, *like));
  if (!ok) {
    std::string name = item_name(list_name, i);
    ArrayArg r = fg::bind::f32_arg(a, name.c_str(), -1, fg::bind::kContiguous, writable);
    if (like != nullptr) {
      std::vector<int64_t> want(like->shape(), like->shape() + like->ndim());
      fg::bind::expect_shape(r, name.c_str(), want);
    }
    throw py::value_error(name + " is not a valid array");  // not reached: the checks above raised
  }
  if (keep != nullptr) *keep = a;
  alive.push_back(a);
  return Span{static_cast<float*>(const_cast<void*>(a.data())), static_cast<int64_t>(a.size())};
}

// Rejects any two arrays of one call that share memory (the kernels write in place from several
// threads). Names are formatted only when reporting.
class OverlapCheck {
 public:
  void add(const Span& s, const char* list, size_t i) {
    if (s.size == 0) return;
    auto b = reinterpret_cast<std::uintptr_t>(s.ptr);
    ranges_.push_back({b, b + static_cast<std::uintptr_t>(s.size) * sizeof(float), list, i});
  }
  void check() {
    std::sort(ranges_.begin(), ranges_.end(), [](const Range& x, const Range& y) { return x.begin < y.begin; });
    for (size_t k = 1; k < ranges_.size(); ++k)
      if (ranges_[k].begin < ranges_[k - 1].end)
        throw py::value_error(item_name(ranges_[k - 1].list, ranges_[k - 1].index) + " and " +
                              item_name(ranges_[k].list, ranges_[k].index) +
                              " share memory; every array of an optimizer step must be distinct");
  }

 private:
  struct Range {
    std::uintptr_t begin, end;
    const char* list;
    size_t index;
  };
  std::vector<Range> ranges_;
};

// The arrays of one optimizer step, read item by item: every array after params[i] must have its
// shape. Keeps the items alive until the call ends and rejects any two that share memory.
class StepArrays {
 public:
  explicit StepArrays(size_t n) { alive_.reserve(5 * n); }
  Span param(const List& params, size_t i) {
    return add(array_item(params, "params", i, nullptr, true, alive_, &p_arr_), "params", i);
  }
  Span like_param(const List& list, const char* name, size_t i, bool writable) {
    return add(array_item(list, name, i, &p_arr_, writable, alive_), name, i);
  }
  void check() { overlap_.check(); }

 private:
  Span add(const Span& s, const char* name, size_t i) {
    overlap_.add(s, name, i);
    return s;
  }
  OverlapCheck overlap_;
  std::vector<py::object> alive_;
  py::array p_arr_;  // params[i]
};

void adam_step(const List& params, const List& grads, const List& exp_avgs, const List& exp_avg_sqs,
               const std::optional<List>& max_exp_avg_sqs, const std::vector<double>& step_sizes,
               const std::vector<double>& bias_correction2_sqrts, double beta1, double beta2, double eps, double lr,
               double weight_decay, bool decoupled, bool maximize) {
  const size_t n = params.size();
  fg::bind::expect_adam_counts(n, grads.size(), exp_avgs.size(), exp_avg_sqs.size(),
                               max_exp_avg_sqs ? static_cast<int64_t>(max_exp_avg_sqs->size()) : -1, step_sizes.size(),
                               bias_correction2_sqrts.size());
  std::vector<fg::AdamTensor> ts(n);
  StepArrays arrays(n);
  for (size_t i = 0; i < n; ++i) {
    Span p = arrays.param(params, i);
    Span g = arrays.like_param(grads, "grads", i, false);
    Span m = arrays.like_param(exp_avgs, "exp_avgs", i, true);
    Span v = arrays.like_param(exp_avg_sqs, "exp_avg_sqs", i, true);
    Span x;
    if (max_exp_avg_sqs) x = arrays.like_param(*max_exp_avg_sqs, "max_exp_avg_sqs", i, true);
    if (!(bias_correction2_sqrts[i] > 0.0))
      throw py::value_error(item_name("bias_correction2_sqrts", i) + " must be > 0");
    ts[i] = fg::AdamTensor{p.ptr,
                           g.ptr,
                           m.ptr,
                           v.ptr,
                           x.ptr,
                           p.size,
                           static_cast<float>(step_sizes[i]),
                           static_cast<float>(bias_correction2_sqrts[i])};
  }
  arrays.check();
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
  py::gil_scoped_release release;
  fg::adam_step(ts.data(), static_cast<int64_t>(n), h);
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
  std::vector<fg::SgdTensor> ts(n);
  StepArrays arrays(n);
  for (size_t i = 0; i < n; ++i) {
    Span p = arrays.param(params, i);
    Span g = arrays.like_param(grads, "grads", i, false);
    Span b;
    bool init = false;
    if (momentum != 0.0) {
      b = arrays.like_param(*momentum_buffers, "momentum_buffers", i, true);
      init = init_buffers[i];
    }
    ts[i] = fg::SgdTensor{p.ptr, g.ptr, b.ptr, p.size, init};
  }
  arrays.check();
  fg::SgdHyper h;
  h.neg_lr = static_cast<float>(-lr);
  h.momentum = static_cast<float>(momentum);
  h.one_minus_dampening = static_cast<float>(1.0 - dampening);
  h.weight_decay = static_cast<float>(weight_decay);
  h.nesterov = nesterov;
  h.maximize = maximize;
  py::gil_scoped_release release;
  fg::sgd_step(ts.data(), static_cast<int64_t>(n), h);
}

// Per-array reductions, each in double: "l1" sum |x|, "l2sq" sum x*x, "inf" max |x| (NaN wins).
std::vector<double> norms(const List& arrays, const std::string& kind) {
  int k;
  if (kind == "l1")
    k = fg::kNormL1;
  else if (kind == "l2sq")
    k = fg::kNormL2;
  else if (kind == "inf")
    k = fg::kNormInf;
  else
    throw py::value_error("norms: kind must be 'l1', 'l2sq' or 'inf', got '" + kind + "'");
  const size_t n = arrays.size();
  std::vector<const float*> ptrs(n);
  std::vector<int64_t> sizes(n);
  std::vector<int64_t> offsets(n + 1, 0);
  std::vector<py::object> alive;
  for (size_t i = 0; i < n; ++i) {
    Span a = array_item(arrays, "arrays", i, nullptr, false, alive);
    ptrs[i] = a.ptr;
    sizes[i] = a.size;
    offsets[i + 1] = offsets[i] + fg::reduce_chunks(a.size);
  }
  std::vector<double> partial(static_cast<size_t>(offsets[n]));
  {
    py::gil_scoped_release release;
    fg::norm_partials(ptrs.data(), sizes.data(), static_cast<int64_t>(n), k, partial.data());
  }
  std::vector<double> out(n, 0.0);
  for (size_t i = 0; i < n; ++i) {
    double acc = 0.0;
    for (int64_t c = offsets[i]; c < offsets[i + 1]; ++c) {
      double r = partial[static_cast<size_t>(c)];
      if (k == fg::kNormInf)
        acc = (r != r || acc != acc) ? (r != r ? r : acc) : std::max(acc, r);
      else
        acc += r;
    }
    out[i] = acc;
  }
  return out;
}

void bind(py::module_& m) {
  m.def("adam_step", &adam_step, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
        py::arg("max_exp_avg_sqs"), py::arg("step_sizes"), py::arg("bias_correction2_sqrts"), py::kw_only(),
        py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("lr"), py::arg("weight_decay"),
        py::arg("decoupled"), py::arg("maximize"),
        "In-place Adam/AdamW update of every (param, grad, exp_avg, exp_avg_sq[, max_exp_avg_sq]) "
        "in one fused pass. step_sizes[i] = lr / (1 - beta1**step_i), bias_correction2_sqrts[i] = "
        "sqrt(1 - beta2**step_i); max_exp_avg_sqs=None means no amsgrad.");
  m.def("sgd_step", &sgd_step, py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"),
        py::arg("init_buffers"), py::kw_only(), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
        py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"),
        "In-place SGD update (torch's formulas). init_buffers[i]: the momentum buffer is new and "
        "takes the gradient (no decay).");
  m.def("norms", &norms, py::arg("arrays"), py::arg("kind"),
        "Per-array reductions in double: 'l1' sum|x|, 'l2sq' sum x^2, 'inf' max|x| (NaN if any NaN); "
        "bit-identical for any thread count.");
}

}  // namespace

FG_REGISTER_BINDINGS(optim, bind)
