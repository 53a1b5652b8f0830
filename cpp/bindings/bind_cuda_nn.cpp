// forgegrad._C.cuda_nn: the CUDA kernels of cuda_nn.h on DeviceArrays -- elementwise math with
// broadcasting, reductions, softmax and losses, norms, attention, embedding. Every function checks
// shapes and dtypes (ValueError / TypeError naming the argument), allocates its outputs on the
// inputs' device and queues the kernels on that device's stream without waiting for them.
// Norms, attention and embedding are bound by bind_cuda_nn_layers.cpp into the same submodule.
// Without a CUDA build the submodule is empty (python/forgegrad/cuda.py reports why).
#include "forgegrad/bindings.h"
#ifdef FORGEGRAD_WITH_CUDA
#include <cmath>
#include <optional>

#include "cuda_nn_bind.h"
#endif

namespace py = pybind11;

namespace {

#ifdef FORGEGRAD_WITH_CUDA
using namespace fg::cuda::nn_bind;  // NOLINT: the binding helpers of cuda_nn_bind.h

// ---- elementwise ------------------------------------------------------------------------------
// An input of a pointwise launch: a device array (float32, or bool for where's condition) or a
// Python number / None (a scalar).
struct Operand {
  Arr arr;
  float scalar = NAN;
};

Operand operand(const py::handle& h, const char* fn, int k) {
  Operand o;
  if (h.is_none()) return o;
  if (py::isinstance<DeviceArray>(h)) {
    o.arr = h.cast<Arr>();
    return o;
  }
  try {  // a Python or numpy number
    o.scalar = h.cast<float>();
  } catch (const py::cast_error&) {
    throw py::type_error(std::string(fn) + ": input " + std::to_string(k) +
                         " must be a DeviceArray, a number or None, got " + std::string(Py_TYPE(h.ptr())->tp_name));
  }
  return o;
}

// numpy broadcasting of the array operands: the output shape and each operand's strides into it.
// `shape`, when given, is the output shape (every input must broadcast to it).
nn::Broadcast broadcast(const std::vector<Operand>& ops, const char* fn, int* device,
                        const std::optional<Shape>& shape = std::nullopt) {
  Shape out = shape ? *shape : Shape();
  *device = -1;
  for (const auto& o : ops) {
    if (!o.arr) continue;
    if (*device < 0) *device = o.arr->device();
    if (o.arr->device() != *device) throw py::value_error(std::string(fn) + ": inputs are on different devices");
    const Shape& s = o.arr->shape();
    if (s.size() > out.size()) out.insert(out.begin(), s.size() - out.size(), 1);
    for (size_t i = 0; i < s.size(); ++i) {
      int64_t& d = out[out.size() - s.size() + i];
      if (d == 1)
        d = s[i];
      else if (s[i] != 1 && s[i] != d)
        throw py::value_error(std::string(fn) + ": shapes cannot broadcast: " + shape_str(s) + " against " +
                              shape_str(out));
    }
  }
  if (shape && out != *shape)
    throw py::value_error(std::string(fn) + ": inputs do not broadcast to the output shape " + shape_str(*shape) +
                          " (they give " + shape_str(out) + ")");
  if (*device < 0) throw py::value_error(std::string(fn) + ": at least one input must be a DeviceArray");
  if (out.size() > static_cast<size_t>(nn::kMaxDims))
    throw py::value_error(std::string(fn) + ": at most 8 dimensions are supported, got " + shape_str(out));
  nn::Broadcast g;
  g.ndim = static_cast<int>(out.size());
  for (int d = 0; d < g.ndim; ++d) g.shape[d] = out[d];
  for (size_t k = 0; k < ops.size(); ++k) {
    if (!ops[k].arr) continue;
    const Shape& s = ops[k].arr->shape();
    int64_t stride = 1;
    for (int d = g.ndim - 1, j = static_cast<int>(s.size()) - 1; j >= 0; --d, --j) {
      g.stride[k][d] = s[j] == 1 ? 0 : stride;
      stride *= s[j];
    }
  }
  return g;
}

Shape shape_of(const nn::Broadcast& g) { return Shape(g.shape, g.shape + g.ndim); }

Arr pointwise(const std::string& name, const py::list& inputs, float alpha, const std::optional<Shape>& shape) {
  auto it = pointwise_ops().find(name);
  if (it == pointwise_ops().end()) throw py::value_error("pointwise: unknown op '" + name + "'");
  if (inputs.size() < 1 || inputs.size() > static_cast<size_t>(nn::kMaxInputs))
    throw py::value_error("pointwise: 1 to 4 inputs expected");
  std::vector<Operand> ops;
  for (size_t k = 0; k < inputs.size(); ++k) {
    ops.push_back(operand(inputs[k], "pointwise", static_cast<int>(k)));
    if (ops.back().arr) need_dtype(*ops.back().arr, DType::kFloat32, "pointwise", "every array input");
  }
  int device;
  nn::Broadcast g = broadcast(ops, "pointwise", &device, shape);
  Arr out = empty(shape_of(g), DType::kFloat32, device);
  const float* in[nn::kMaxInputs] = {nullptr, nullptr, nullptr, nullptr};
  float sc[nn::kMaxInputs] = {NAN, NAN, NAN, NAN};
  for (size_t k = 0; k < ops.size(); ++k) {
    in[k] = ops[k].arr ? ops[k].arr->data() : nullptr;
    sc[k] = ops[k].scalar;
  }
  fg::cuda::DeviceGuard guard(device);
  check(nn::pointwise(it->second, g, out->data(), in, sc, alpha), ("pointwise " + name).c_str());
  return out;
}

Arr compare(const std::string& name, const py::object& a, const py::object& b) {
  static const std::map<std::string, nn::Compare> ops = {{"lt", nn::Compare::Lt}, {"le", nn::Compare::Le},
                                                         {"gt", nn::Compare::Gt}, {"ge", nn::Compare::Ge},
                                                         {"eq", nn::Compare::Eq}, {"ne", nn::Compare::Ne}};
  auto it = ops.find(name);
  if (it == ops.end()) throw py::value_error("compare: unknown op '" + name + "' (lt, le, gt, ge, eq, ne)");
  std::vector<Operand> v = {operand(a, "compare", 0), operand(b, "compare", 1)};
  // float32 with float32, or int64 with int64 (exact); a number takes the arrays' type
  bool ints = (v[0].arr && v[0].arr->dtype() == DType::kInt64) || (v[1].arr && v[1].arr->dtype() == DType::kInt64);
  for (auto& o : v)
    if (o.arr) need_dtype(*o.arr, ints ? DType::kInt64 : DType::kFloat32, "compare", "both array inputs");
  int64_t iscalar[2] = {0, 0};
  if (ints)
    for (int k = 0; k < 2; ++k) {
      if (v[k].arr) continue;
      const py::object& h = k == 0 ? a : b;
      if (!py::isinstance<py::int_>(h) && !py::isinstance(h, py::module_::import("numpy").attr("integer")))
        throw py::type_error("compare: an int64 array compares with an int64 array or an integer, got " +
                             std::string(Py_TYPE(h.ptr())->tp_name));
      iscalar[k] = h.cast<int64_t>();
    }
  int device;
  nn::Broadcast g = broadcast(v, "compare", &device);
  Arr out = empty(shape_of(g), DType::kBool, device);
  fg::cuda::DeviceGuard guard(device);
  if (ints)
    check(nn::compare_i64(it->second, g, out->data_as<bool>(), v[0].arr ? v[0].arr->data_as<int64_t>() : nullptr,
                          v[1].arr ? v[1].arr->data_as<int64_t>() : nullptr, iscalar[0], iscalar[1]),
          "compare");
  else
    check(nn::compare(it->second, g, out->data_as<bool>(), v[0].arr ? v[0].arr->data() : nullptr,
                      v[1].arr ? v[1].arr->data() : nullptr, v[0].scalar, v[1].scalar),
          "compare");
  return out;
}

Arr where(const Arr& cond, const py::object& a, const py::object& b) {
  need_dtype(*cond, DType::kBool, "where", "cond");
  std::vector<Operand> v = {Operand{cond}, operand(a, "where", 1), operand(b, "where", 2)};
  for (size_t k = 1; k < 3; ++k) {
    if (v[k].arr)
      need_dtype(*v[k].arr, DType::kFloat32, "where", "a and b");
    else if (std::isnan(v[k].scalar) && (k == 1 ? a : b).is_none())
      throw py::type_error("where: a and b must be DeviceArrays or numbers, not None");
  }
  int device;
  nn::Broadcast g = broadcast(v, "where", &device);
  Arr out = empty(shape_of(g), DType::kFloat32, device);
  fg::cuda::DeviceGuard guard(device);
  check(nn::where(g, out->data(), cond->data_as<bool>(), v[1].arr ? v[1].arr->data() : nullptr,
                  v[2].arr ? v[2].arr->data() : nullptr, v[1].scalar, v[2].scalar),
        "where");
  return out;
}

// ---- reductions -------------------------------------------------------------------------------
// Geometry of reducing `axes` of a contiguous array of `shape`; out_shape gets the result's shape.
nn::Reduction reduction(const Shape& shape, const std::vector<int64_t>& axes_in, bool keepdim, const char* fn,
                        Shape* out_shape) {
  int64_t ndim = static_cast<int64_t>(shape.size());
  if (ndim > nn::kMaxDims) throw py::value_error(std::string(fn) + ": at most 8 dimensions are supported");
  std::vector<bool> red(shape.size(), false);
  for (int64_t a : axes_in) {
    int64_t ax = norm_axis(a, ndim, fn);
    if (ndim == 0) continue;
    if (red[ax]) throw py::value_error(std::string(fn) + ": axis " + std::to_string(a) + " appears twice");
    red[ax] = true;
  }
  nn::Reduction r;
  out_shape->clear();
  int64_t stride = 1;
  std::vector<int64_t> strides(shape.size());
  for (int64_t d = ndim - 1; d >= 0; --d) {
    strides[d] = stride;
    stride *= shape[d];
  }
  for (int64_t d = 0; d < ndim; ++d) {
    if (red[d]) {
      r.red_shape[r.red_ndim] = shape[d];
      r.red_stride[r.red_ndim++] = strides[d];
      if (keepdim) out_shape->push_back(1);
    } else {
      r.keep_shape[r.keep_ndim] = shape[d];
      r.keep_stride[r.keep_ndim++] = strides[d];
      out_shape->push_back(shape[d]);
    }
  }
  return r;
}

Arr run_reduce(nn::Reduce op, const DeviceArray& x, const nn::Reduction& r, const Shape& out_shape, const float* center,
               float scale, bool sqrt_after, const char* fn) {
  Arr out = empty(out_shape, DType::kFloat32, x.device());
  int64_t ws = nn::reduce_workspace(r);
  Arr work = ws > 0 ? empty({ws}, DType::kFloat32, x.device()) : nullptr;
  fg::cuda::DeviceGuard guard(x.device());
  check(nn::reduce(op, r, x.data(), center, out->data(), scale, sqrt_after, work ? work->data() : nullptr), fn);
  return out;
}

Arr reduce(const std::string& name, const Arr& x, const std::optional<std::vector<int64_t>>& axes, bool keepdim,
           float scale, bool sqrt_after, const OptArr& center) {
  static const std::map<std::string, nn::Reduce> ops = {{"sum", nn::Reduce::Sum},
                                                        {"max", nn::Reduce::Max},
                                                        {"min", nn::Reduce::Min},
                                                        {"sum_sq_dev", nn::Reduce::SumSqDev},
                                                        {"count_eq", nn::Reduce::CountEq}};
  auto it = ops.find(name);
  if (it == ops.end()) throw py::value_error("reduce: unknown op '" + name + "'");
  std::vector<int64_t> all(x->shape().size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  Shape out_shape;
  nn::Reduction r = reduction(x->shape(), axes ? *axes : all, keepdim, "reduce", &out_shape);
  if (x->dtype() == DType::kInt64 || x->dtype() == DType::kBool) {  // exact integer sums (numpy: int64 out)
    bool is_bool = x->dtype() == DType::kBool;
    if (!(it->second == nn::Reduce::Sum ||
          (!is_bool && (it->second == nn::Reduce::Max || it->second == nn::Reduce::Min))))
      throw py::type_error("reduce: " + name + " of a " + fg::cuda::dtype_name(x->dtype()) +
                           " array is not supported on cuda (sum of int64 / bool, max / min of int64)");
    if (scale != 1.f || sqrt_after || center)
      throw py::type_error(std::string("reduce: scale, sqrt and center apply to float32 arrays only, got ") +
                           fg::cuda::dtype_name(x->dtype()));
    if (it->second != nn::Reduce::Sum && prod(out_shape) > 0 && prod(Shape(r.red_shape, r.red_shape + r.red_ndim)) == 0)
      throw py::value_error("reduce: max/min of an empty dimension (input shape " + shape_str(x->shape()) + ")");
    Arr out = empty(out_shape, DType::kInt64, x->device());
    int64_t ws = nn::reduce_workspace(r);
    Arr work = ws > 0 ? empty({ws}, DType::kInt64, x->device()) : nullptr;
    fg::cuda::DeviceGuard guard(x->device());
    check(nn::reduce_int(it->second, r, x->raw_data(), is_bool, out->data_as<int64_t>(),
                         work ? work->data_as<int64_t>() : nullptr),
          "reduce");
    return out;
  }
  need_dtype(*x, DType::kFloat32, "reduce", "x");
  bool needs_center = it->second == nn::Reduce::SumSqDev || it->second == nn::Reduce::CountEq;
  if (needs_center != center.has_value())
    throw py::value_error("reduce: center is required by sum_sq_dev / count_eq and only by them");
  if (center) {
    need_dtype(**center, DType::kFloat32, "reduce", "center");
    same_device(*x, **center, "reduce", "center");
    if ((*center)->size() != prod(out_shape))
      throw py::value_error("reduce: center must have one value per output (" + std::to_string(prod(out_shape)) +
                            "), got " + std::to_string((*center)->size()));
  }
  if ((it->second == nn::Reduce::Max || it->second == nn::Reduce::Min) && prod(out_shape) > 0 && r.red_ndim > 0 &&
      prod(Shape(r.red_shape, r.red_shape + r.red_ndim)) == 0)
    throw py::value_error("reduce: max/min of an empty dimension (input shape " + shape_str(x->shape()) + ")");
  return run_reduce(it->second, *x, r, out_shape, center ? (*center)->data() : nullptr, scale, sqrt_after, "reduce");
}

// g summed over the axes broadcasting stretched or added, to `shape` (autograd's unbroadcast).
Arr sum_to(const Arr& g, const Shape& shape) {
  need_dtype(*g, DType::kFloat32, "sum_to", "g");
  const Shape& gs = g->shape();
  if (shape.size() > gs.size())
    throw py::value_error("sum_to: cannot sum " + shape_str(gs) + " to the larger rank " + shape_str(shape));
  size_t lead = gs.size() - shape.size();
  std::vector<int64_t> axes;
  for (size_t d = 0; d < gs.size(); ++d) {
    if (d < lead) {
      axes.push_back(static_cast<int64_t>(d));
    } else if (shape[d - lead] != gs[d]) {
      if (shape[d - lead] != 1)
        throw py::value_error("sum_to: shape " + shape_str(shape) + " does not broadcast to " + shape_str(gs));
      axes.push_back(static_cast<int64_t>(d));
    }
  }
  Shape out_shape;
  nn::Reduction r = reduction(gs, axes, false, "sum_to", &out_shape);
  return run_reduce(nn::Reduce::Sum, *g, r, out_shape, nullptr, 1.f, false, "sum_to")->reshape(shape);
}

py::tuple arg_reduce(bool is_max, const Arr& x, const std::optional<int64_t>& axis, bool keepdim) {
  need_dtype(*x, DType::kFloat32, "arg_reduce", "x");
  std::vector<int64_t> axes;
  if (axis)
    axes.push_back(*axis);
  else
    for (size_t i = 0; i < x->shape().size(); ++i) axes.push_back(static_cast<int64_t>(i));
  Shape out_shape;
  nn::Reduction r = reduction(x->shape(), axes, keepdim, "arg_reduce", &out_shape);
  if (prod(Shape(r.red_shape, r.red_shape + r.red_ndim)) == 0)
    throw py::value_error("arg_reduce: reduction over an empty dimension (input shape " + shape_str(x->shape()) + ")");
  Arr index = empty(out_shape, DType::kInt64, x->device());
  Arr values = empty(out_shape, DType::kFloat32, x->device());
  fg::cuda::DeviceGuard guard(x->device());
  check(nn::arg_reduce(is_max, r, x->data(), index->data_as<int64_t>(), values->data()), "arg_reduce");
  return py::make_tuple(index, values);
}

Arr scatter_axis(const Arr& g, const Arr& index, const Shape& shape, int64_t axis) {
  need_dtype(*g, DType::kFloat32, "scatter_axis", "g");
  need_dtype(*index, DType::kInt64, "scatter_axis", "index");
  int64_t ax = norm_axis(axis, static_cast<int64_t>(shape.size()), "scatter_axis");
  int64_t outer = prod(shape, 0, ax), n = shape.empty() ? 1 : shape[ax], inner = prod(shape, ax + 1);
  if (g->size() != outer * inner || index->size() != outer * inner)
    throw py::value_error("scatter_axis: g and index must have " + std::to_string(outer * inner) + " elements");
  Arr out = empty(shape, DType::kFloat32, g->device());
  fg::cuda::DeviceGuard guard(g->device());
  check(nn::scatter_axis(g->data(), index->data_as<int64_t>(), out->data(), outer, n, inner), "scatter_axis");
  return out;
}

// ---- softmax and losses -----------------------------------------------------------------------
Arr softmax(const Arr& x, int64_t axis, bool log) {
  need_dtype(*x, DType::kFloat32, "softmax", "x");
  const Shape& s = x->shape();
  int64_t ax = norm_axis(axis, static_cast<int64_t>(s.size()), "softmax");
  Arr y = empty(s, DType::kFloat32, x->device());
  fg::cuda::DeviceGuard guard(x->device());
  check(nn::softmax_forward(log, x->data(), y->data(), prod(s, 0, ax), s.empty() ? 1 : s[ax], prod(s, ax + 1)),
        log ? "log_softmax" : "softmax");
  return y;
}

Arr softmax_backward(const Arr& y, const Arr& g, int64_t axis, bool log) {
  need_dtype(*y, DType::kFloat32, "softmax_backward", "y");
  need_dtype(*g, DType::kFloat32, "softmax_backward", "g");
  need_shape(*g, y->shape(), "softmax_backward", "g");
  same_device(*y, *g, "softmax_backward", "g");
  const Shape& s = y->shape();
  int64_t ax = norm_axis(axis, static_cast<int64_t>(s.size()), "softmax_backward");
  Arr gx = empty(s, DType::kFloat32, y->device());
  fg::cuda::DeviceGuard guard(y->device());
  check(nn::softmax_backward(log, y->data(), g->data(), gx->data(), prod(s, 0, ax), s.empty() ? 1 : s[ax],
                             prod(s, ax + 1)),
        "softmax_backward");
  return gx;
}

// Logits (C,), (N, C) or (N, C, d...): the [outer, C, inner] view and the target shape it needs.
struct ClassLayout {
  int64_t outer, C, inner;
  Shape target;
};

ClassLayout class_layout(const DeviceArray& x, const DeviceArray& target, const OptArr& weight, const char* fn) {
  need_dtype(x, DType::kFloat32, fn, "input");
  need_dtype(target, DType::kInt64, fn, "target");
  same_device(x, target, fn, "target");
  const Shape& s = x.shape();
  if (s.empty()) throw py::value_error(std::string(fn) + ": input must have at least 1 dimension (classes)");
  ClassLayout c;
  if (s.size() == 1) {
    c = {1, s[0], 1, {}};
  } else {
    c = {s[0], s[1], prod(s, 2), Shape{s[0]}};
    c.target.insert(c.target.end(), s.begin() + 2, s.end());
  }
  need_shape(target, c.target, fn, "target");
  if (weight) {
    need_dtype(**weight, DType::kFloat32, fn, "weight");
    need_shape(**weight, {c.C}, fn, "weight");
    same_device(x, **weight, fn, "weight");
  }
  return c;
}

// g of a loss reduced per row (shape `rows`) or to a scalar (one element): its stride per row.
int64_t grad_stride(const DeviceArray& g, const Shape& rows, const char* fn) {
  need_dtype(g, DType::kFloat32, fn, "grad");
  if (g.size() == 1) return 0;
  need_shape(g, rows, fn, "grad");
  return 1;
}

py::tuple cross_entropy_forward(const Arr& logits, const Arr& target, const OptArr& weight, int64_t ignore_index,
                                float label_smoothing) {
  ClassLayout c = class_layout(*logits, *target, weight, "cross_entropy");
  if (!(label_smoothing >= 0.f && label_smoothing <= 1.f))
    throw py::value_error("cross_entropy: label_smoothing must be in [0, 1]");
  int dev = logits->device();
  Arr prob = empty(logits->shape(), DType::kFloat32, dev), per = empty(c.target, DType::kFloat32, dev),
      wy = empty(c.target, DType::kFloat32, dev);
  fg::cuda::DeviceGuard guard(dev);
  check(nn::cross_entropy_forward(logits->data(), target->data_as<int64_t>(), fptr(weight), prob->data(), per->data(),
                                  wy->data(), c.outer, c.C, c.inner, ignore_index, label_smoothing),
        "cross_entropy_forward");
  return py::make_tuple(prob, per, wy);
}

Arr cross_entropy_backward(const Arr& prob, const Arr& target, const OptArr& weight, const Arr& g, const OptArr& denom,
                           int64_t ignore_index, float label_smoothing) {
  ClassLayout c = class_layout(*prob, *target, weight, "cross_entropy_backward");
  int64_t gs = grad_stride(*g, c.target, "cross_entropy_backward");
  Arr grad = empty(prob->shape(), DType::kFloat32, prob->device());
  fg::cuda::DeviceGuard guard(prob->device());
  check(nn::cross_entropy_backward(prob->data(), target->data_as<int64_t>(), fptr(weight), g->data(), gs, fptr(denom),
                                   grad->data(), c.outer, c.C, c.inner, ignore_index, label_smoothing),
        "cross_entropy_backward");
  return grad;
}

py::tuple nll_forward(const Arr& logp, const Arr& target, const OptArr& weight, int64_t ignore_index) {
  ClassLayout c = class_layout(*logp, *target, weight, "nll_loss");
  int dev = logp->device();
  Arr per = empty(c.target, DType::kFloat32, dev), wy = empty(c.target, DType::kFloat32, dev);
  fg::cuda::DeviceGuard guard(dev);
  check(nn::nll_forward(logp->data(), target->data_as<int64_t>(), fptr(weight), per->data(), wy->data(), c.outer, c.C,
                        c.inner, ignore_index),
        "nll_forward");
  return py::make_tuple(per, wy);
}

Arr nll_backward(const Shape& shape, const Arr& target, const OptArr& weight, const Arr& g, const OptArr& denom,
                 int64_t ignore_index) {
  Arr like = empty(shape, DType::kFloat32, target->device());  // the gradient, shaped as the input
  ClassLayout c = class_layout(*like, *target, weight, "nll_backward");
  int64_t gs = grad_stride(*g, c.target, "nll_backward");
  fg::cuda::DeviceGuard guard(target->device());
  check(nn::nll_backward(target->data_as<int64_t>(), fptr(weight), g->data(), gs, fptr(denom), like->data(), c.outer,
                         c.C, c.inner, ignore_index),
        "nll_backward");
  return like;
}
#endif

void bind(py::module_& m) {
#ifdef FORGEGRAD_WITH_CUDA
  m.def("pointwise", &pointwise, py::arg("op"), py::arg("inputs"), py::arg("alpha") = 1.0f,
        py::arg("shape") = py::none(),
        "op over broadcast inputs (DeviceArrays, numbers, None); the output has `shape` when given, else the "
        "inputs' broadcast shape; see cuda_nn.h for the ops");
  m.def("compare", &compare, py::arg("op"), py::arg("a"), py::arg("b"));
  m.def("where", &where, py::arg("cond"), py::arg("a"), py::arg("b"));
  m.def("reduce", &reduce, py::arg("op"), py::arg("x"), py::arg("axes") = py::none(), py::arg("keepdim") = false,
        py::arg("scale") = 1.0f, py::arg("sqrt") = false, py::arg("center") = py::none());
  m.def("sum_to", &sum_to, py::arg("g"), py::arg("shape"));
  m.def("arg_reduce", &arg_reduce, py::arg("is_max"), py::arg("x"), py::arg("axis") = py::none(),
        py::arg("keepdim") = false, "(int64 index, values) of the first max / min");
  m.def("scatter_axis", &scatter_axis, py::arg("g"), py::arg("index"), py::arg("shape"), py::arg("axis"));
  m.def("softmax", &softmax, py::arg("x"), py::arg("axis") = -1, py::arg("log") = false);
  m.def("softmax_backward", &softmax_backward, py::arg("y"), py::arg("g"), py::arg("axis") = -1,
        py::arg("log") = false);
  m.def("cross_entropy_forward", &cross_entropy_forward, py::arg("logits"), py::arg("target"),
        py::arg("weight") = py::none(), py::arg("ignore_index") = -100, py::arg("label_smoothing") = 0.0f,
        "(prob, per-row loss, per-row target weight)");
  m.def("cross_entropy_backward", &cross_entropy_backward, py::arg("prob"), py::arg("target"), py::arg("weight"),
        py::arg("g"), py::arg("denom"), py::arg("ignore_index") = -100, py::arg("label_smoothing") = 0.0f);
  m.def("nll_forward", &nll_forward, py::arg("logp"), py::arg("target"), py::arg("weight") = py::none(),
        py::arg("ignore_index") = -100);
  m.def("nll_backward", &nll_backward, py::arg("shape"), py::arg("target"), py::arg("weight"), py::arg("g"),
        py::arg("denom"), py::arg("ignore_index") = -100);
#else
  (void)m;
#endif
}

}  // namespace

FG_REGISTER_BINDINGS(cuda_nn, bind)
