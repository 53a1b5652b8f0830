// forgegrad._C.plan: a frozen Sequential's graph-free forward as one call. At batch 1 a LeNet's four
// kernel calls take ~100 us and the Python between them (each step's checks, the output arrays, the
// bindings' argument conversion) ~20 us more; a SequentialPlan holds the steps (Conv2d with its
// activation and 2x2 max pool, Linear with its activation, Flatten) and runs them back to back, with
// the same kernels and arguments as the Python steps (so the same bits). The plan holds the layers'
// parameter dicts, not their arrays: each call reads every weight's current Parameter and array,
// uses a packed weight only while it is a snapshot of that array, and returns None (the caller then
// runs its Python steps, which raise the usual errors) for anything the steps would not run as
// planned: a module with forward pre-hooks, an input or weight of another dtype, layout or shape,
// empty arrays.
#include <algorithm>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include "forgegrad/activation.h"
#include "forgegrad/bindings.h"
#include "forgegrad/conv.h"
#include "forgegrad/gemm.h"
#include "forgegrad/memory.h"
#include "forgegrad/packed_weights.h"
#include "forgegrad/parallel.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;

namespace {

using Pair = std::pair<int64_t, int64_t>;
using Quad = std::tuple<int64_t, int64_t, int64_t, int64_t>;

enum class Kind { conv, linear, flatten };

struct Step {
  Kind kind = Kind::flatten;
  py::object params;               // the module's _parameters dict: "weight" and "bias" are read at each call
  std::vector<py::object> hooks;   // the steps' modules' forward-pre-hook dicts: any entry -> None
  py::object packed;               // the PackedConvWeight / PackedWeight object (kept alive) or None
  const fg::bind::PackedConvWeight* conv_packed = nullptr;
  const fg::bind::PackedLinearWeight* linear_packed = nullptr;
  int activation = -1;
  float alpha = 0.0f;
  // conv
  Pair stride{1, 1}, dilation{1, 1}, kernel{0, 0};  // kernel: the (kH, kW) the padding was resolved for
  Quad padding{0, 0, 0, 0};
  int64_t groups = 1;
  bool pool = false, ceil_mode = false;
};

// One step of one call: the arrays read now and the sizes worked out from the input's shape.
// What one kernel call needs, copied out of its Step: nothing points into the plan while the GIL is released (a
// thread adding a step then could move the steps).
struct Call {
  Kind kind = Kind::linear;
  int activation = -1;
  float alpha = 0.0f;
  bool pool = false;
  py::array w, b;
  bool has_bias = false;
  fg::Conv2dGeom g{};
  int64_t M = 0, N = 0, K = 0;
  const float* packed = nullptr;
  int64_t out_elems = 0;
};

// Interned names, kept for the process's lifetime (a lookup by C string makes a new str each time).
PyObject* interned(const char* s) { return PyUnicode_InternFromString(s); }
PyObject* data_name() {
  static PyObject* name = interned("_data");
  return name;
}
PyObject* weight_name() {
  static PyObject* name = interned("weight");
  return name;
}
PyObject* bias_name() {
  static PyObject* name = interned("bias");
  return name;
}

// a is exactly a numpy.ndarray of native float32, C-contiguous and aligned: what the steps pass to
// their kernels without a copy.
bool plain_f32(py::handle a) {
  auto& api = py::detail::npy_api::get();
  if (Py_TYPE(a.ptr()) != reinterpret_cast<PyTypeObject*>(api.PyArray_Type_)) return false;
  py::array arr = py::reinterpret_borrow<py::array>(a);
  return fg::bind::is_float32(arr) && (arr.flags() & py::array::c_style) &&
         (arr.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) && arr.size() > 0;
}

// The current array of params[name] (a Parameter: an object with `_data`) when it is a plain float32
// array of rank ndim. *absent: params holds no such entry, or None.
bool param_array(const py::object& params, PyObject* name, int ndim, py::array* out, bool* absent = nullptr) {
  PyObject* p = PyDict_GetItemWithError(params.ptr(), name);  // borrowed
  if (!p && PyErr_Occurred()) PyErr_Clear();
  if (absent) *absent = p == nullptr || p == Py_None;
  if (p == nullptr || p == Py_None) return false;
  PyObject* d = PyObject_GetAttr(p, data_name());
  if (!d) {
    PyErr_Clear();
    return false;
  }
  py::object obj = py::reinterpret_steal<py::object>(d);
  if (!plain_f32(obj)) return false;
  *out = py::reinterpret_borrow<py::array>(obj);
  return out->ndim() == ndim;
}

std::vector<py::object> hook_dicts(const py::list& hooks) {
  std::vector<py::object> out;
  for (py::handle h : hooks) {
    if (!PyDict_Check(h.ptr()))
      throw py::type_error("SequentialPlan: hooks must be a list of dicts (the modules' _forward_pre_hooks), got a " +
                           std::string(py::str(py::type::of(h).attr("__name__"))));
    out.push_back(py::reinterpret_borrow<py::object>(h));
  }
  return out;
}

void check_params(const py::object& params) {
  if (!PyDict_Check(params.ptr()))
    throw py::type_error("SequentialPlan: parameters must be a dict (the module's _parameters), got a " +
                         std::string(py::str(py::type::of(params).attr("__name__"))));
}

void check_activation(int activation) {
  if (activation < -1 || activation >= fg::kActCount)
    throw py::value_error("SequentialPlan: activation must be -1 (none) or an activation code, got " +
                          std::to_string(activation));
}

class SequentialPlan {
 public:
  void add_conv2d(const py::object& parameters, Pair stride, Quad padding, Pair dilation, int64_t groups,
                  Pair kernel_size, int activation, float alpha, bool max_pool2x2, bool ceil_mode,
                  const py::object& packed, const py::list& hooks) {
    check_params(parameters);
    check_activation(activation);
    Step s;
    s.kind = Kind::conv;
    s.params = parameters, s.hooks = hook_dicts(hooks);
    s.stride = stride, s.padding = padding, s.dilation = dilation, s.groups = groups, s.kernel = kernel_size;
    s.activation = activation, s.alpha = alpha, s.pool = max_pool2x2, s.ceil_mode = ceil_mode;
    if (!packed.is_none()) {
      if (!py::isinstance<fg::bind::PackedConvWeight>(packed))
        throw py::type_error("SequentialPlan: packed must be a PackedConvWeight or None, got a " +
                             std::string(py::str(py::type::of(packed).attr("__name__"))));
      s.conv_packed = packed.cast<const fg::bind::PackedConvWeight*>();
      s.packed = packed;
    }
    steps_.push_back(std::move(s));
  }

  void add_linear(const py::object& parameters, int activation, float alpha, const py::object& packed,
                  const py::list& hooks) {
    check_params(parameters);
    check_activation(activation);
    Step s;
    s.kind = Kind::linear;
    s.params = parameters, s.hooks = hook_dicts(hooks);
    s.activation = activation, s.alpha = alpha;
    if (!packed.is_none()) {
      if (!py::isinstance<fg::bind::PackedLinearWeight>(packed))
        throw py::type_error("SequentialPlan: packed must be a PackedWeight or None, got a " +
                             std::string(py::str(py::type::of(packed).attr("__name__"))));
      s.linear_packed = packed.cast<const fg::bind::PackedLinearWeight*>();
      s.packed = packed;
    }
    steps_.push_back(std::move(s));
  }

  void add_flatten(const py::list& hooks) {
    Step s;
    s.kind = Kind::flatten;
    s.hooks = hook_dicts(hooks);
    steps_.push_back(std::move(s));
  }

  std::size_t size() const { return steps_.size(); }

  // The output array, or None where the Python steps must run instead (see the file comment).
  py::object run(py::handle x_in) const {
    if (!plain_f32(x_in)) return py::none();
    py::array x = py::reinterpret_borrow<py::array>(x_in);
    std::vector<int64_t> shape(x.shape(), x.shape() + x.ndim());
    std::vector<Call> calls;
    calls.reserve(steps_.size());
    double work = 0;  // multiply-adds, to decide whether to release the GIL (a double: no overflow on odd shapes)
    for (const Step& s : steps_) {
      for (const py::object& h : s.hooks)
        if (PyDict_GET_SIZE(h.ptr()) != 0) return py::none();
      if (s.kind == Kind::flatten) {
        if (shape.size() < 2) return py::none();
        int64_t rest = 1;
        for (std::size_t i = 1; i < shape.size(); ++i) rest *= shape[i];
        shape = {shape[0], rest};
        continue;
      }
      Call c;
      c.kind = s.kind, c.activation = s.activation, c.alpha = s.alpha, c.pool = s.pool;
      if (!param_array(s.params, weight_name(), s.kind == Kind::conv ? 4 : 2, &c.w)) return py::none();
      bool no_bias = false;
      if (!param_array(s.params, bias_name(), 1, &c.b, &no_bias) && !no_bias) return py::none();
      c.has_bias = !no_bias;
      if (s.kind == Kind::conv) {
        if (shape.size() != 4) return py::none();
        std::vector<int64_t> ws(c.w.shape(), c.w.shape() + 4);
        if (ws[2] != s.kernel.first || ws[3] != s.kernel.second) return py::none();  // padding resolved for another
        try {
          c.g = fg::bind::conv2d_geom(shape, ws, s.stride, s.padding, s.dilation, s.groups);
        } catch (const py::builtin_exception&) {
          return py::none();  // the Python step raises the error
        }
        if (c.has_bias && c.b.shape(0) != c.g.OC) return py::none();
        if (s.pool) {
          // the 2x2 / stride 2 pool the kernel takes per block: floor sizes (ceil_mode gives the same on even sizes)
          if (c.g.OH < 2 || c.g.OW < 2 || (s.ceil_mode && (c.g.OH % 2 || c.g.OW % 2))) return py::none();
          shape = {c.g.N, c.g.OC, c.g.OH / 2, c.g.OW / 2};
        } else {
          shape = {c.g.N, c.g.OC, c.g.OH, c.g.OW};
        }
        const fg::bind::PackedConvWeight* p = s.conv_packed;
        if (p && p->source.is(c.w) && p->groups == s.groups && p->isa == fg::active_isa() && p->buf.size() > 0)
          c.packed = p->buf.data();
        work += double(c.g.N) * double(c.g.OC) * double(c.g.OH) * double(c.g.OW) * double(c.g.C / c.g.groups) *
                double(c.g.KH) * double(c.g.KW);
      } else {
        c.N = c.w.shape(0), c.K = c.w.shape(1);
        if (shape.empty() || shape.back() != c.K) return py::none();
        if (c.has_bias && c.b.shape(0) != c.N) return py::none();
        c.M = 1;
        for (std::size_t i = 0; i + 1 < shape.size(); ++i) c.M *= shape[i];
        shape.back() = c.N;
        const fg::bind::PackedLinearWeight* p = s.linear_packed;
        if (p && p->source.is(c.w) && p->isa == fg::active_isa() && p->buf.size() > 0) c.packed = p->buf.data();
        work += double(c.M) * double(c.N) * double(c.K);
      }
      c.out_elems = 1;
      for (int64_t d : shape) c.out_elems *= d;
      if (c.out_elems == 0) return py::none();
      calls.push_back(std::move(c));
    }
    if (calls.empty()) return py::none();
    py::array_t<float> out(shape);
    // the intermediate outputs, one after another in one buffer (each 64-byte aligned)
    std::vector<int64_t> offset(calls.size(), 0);
    int64_t total = 0;
    for (std::size_t i = 0; i + 1 < calls.size(); ++i) {
      offset[i] = total;
      total += (calls[i].out_elems + 15) / 16 * 16;
    }
    fg::AlignedBuffer scratch(static_cast<std::size_t>(std::max<int64_t>(total, 1)));
    {
      // a batch-1 layer's kernel is a few microseconds: release the GIL only for work worth a switch
      std::optional<py::gil_scoped_release> release;
      if (work >= double(1 << 16)) release.emplace();
      // The steps' regions come back to back: the pool's worker, woken by the first, spins between them, and a
      // region hands it a part for the price of a few cache lines (LeNet at batch 1, ~4M multiply-adds: 95 us at 1
      // thread, 60-65 us at 2 on a quiet Zen 4 VM), while the pool's back-off keeps a busy machine's forwards on this
      // thread. A forward below ~1M multiply-adds (~20 us) runs on this thread: its few regions would be too short to
      // gain from a second thread.
      std::optional<fg::SerialScope> serial;
      std::optional<fg::BackToBackScope> back_to_back;
      if (work < double(1 << 20))
        serial.emplace();
      else
        back_to_back.emplace();
      const float* in = static_cast<const float*>(x.data());
      for (std::size_t i = 0; i < calls.size(); ++i) {
        const Call& c = calls[i];
        float* dst = i + 1 == calls.size() ? out.mutable_data() : scratch.data() + offset[i];
        const float* w = static_cast<const float*>(c.w.data());
        const float* b = !c.has_bias ? nullptr : static_cast<const float*>(c.b.data());
        if (c.kind == Kind::conv)
          fg::conv2d_forward(c.g, in, w, b, dst, c.activation, c.alpha, c.pool, c.packed);
        else
          fg::sgemm_prepacked_b(false, true, c.M, c.N, c.K, 1.0f, in, c.K, w, c.K, c.packed, 0.0f, dst, c.N,
                                c.activation, c.alpha, b);
        in = dst;
      }
    }
    return std::move(out);
  }

 private:
  std::vector<Step> steps_;
};

void bind(py::module_& m) {
  py::class_<SequentialPlan>(m, "SequentialPlan",
                             "A frozen Sequential's graph-free steps run in one call (see nn.Sequential): add "
                             "the steps, then run(x).")
      .def(py::init<>())
      // holds the layers' parameter dicts: a deep copy of a model gets no plan (its Sequential builds its own)
      .def(
          "__deepcopy__", [](const SequentialPlan&, py::dict) { return py::none(); }, py::arg("memo"))
      .def("add_conv2d", &SequentialPlan::add_conv2d, py::arg("parameters"), py::arg("stride"), py::arg("padding"),
           py::arg("dilation"), py::arg("groups"), py::arg("kernel_size"), py::arg("activation") = -1,
           py::arg("alpha") = 0.0f, py::arg("max_pool2x2").noconvert() = false,
           py::arg("ceil_mode").noconvert() = false, py::arg("packed") = py::none(), py::arg("hooks") = py::list(),
           "A Conv2d step: act(conv2d(x, weight) + bias), parameters[\"weight\"] and [\"bias\"] read at each "
           "call, then, with max_pool2x2, its 2x2 / stride 2 max pool (as conv2d_forward). padding: (top, bottom, "
           "left, right) resolved for kernel_size (kH, kW); "
           "packed: a PackedConvWeight or None; hooks: the forward-pre-hook dicts of the step's modules.")
      .def("add_linear", &SequentialPlan::add_linear, py::arg("parameters"), py::arg("activation") = -1,
           py::arg("alpha") = 0.0f, py::arg("packed") = py::none(), py::arg("hooks") = py::list(),
           "A Linear step: act(x @ weight.T + bias) (as gemm.linear; parameters read at each call); packed: a "
           "PackedWeight or None.")
      .def("add_flatten", &SequentialPlan::add_flatten, py::arg("hooks") = py::list(),
           "A Flatten step: (N, ...) -> (N, prod(...)).")
      .def("__len__", &SequentialPlan::size)
      .def("run", &SequentialPlan::run, py::arg("x"),
           "The steps on x (a C-contiguous float32 numpy array): a new array, or None where the module's "
           "Python steps must run instead (a forward pre-hook, another dtype, layout or shape, empty arrays).");
}

}  // namespace

FG_REGISTER_BINDINGS(plan, bind)
