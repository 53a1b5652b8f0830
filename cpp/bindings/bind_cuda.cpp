// forgegrad._C.cuda: device queries, the device array type, memory statistics and the CUDA
// kernels. Without a CUDA build only the queries exist (reporting no device);
// python/forgegrad/cuda.py turns that into clear errors. Kernels are queued on the device's stream
// and never synchronised here: copies to the host and synchronize() wait for them.
#include "forgegrad/bindings.h"
#ifdef FORGEGRAD_WITH_CUDA
#include <pybind11/stl.h>

#include "forgegrad/cuda_array.h"
#include "forgegrad/strided_index.h"
#endif

namespace py = pybind11;

namespace {

#ifdef FORGEGRAD_WITH_CUDA
using fg::cuda::check;
using fg::cuda::DeviceArray;
using fg::cuda::DeviceGuard;
using fg::cuda::DType;
using ArrayPtr = std::shared_ptr<DeviceArray>;

void same_size(const DeviceArray& a, const DeviceArray& b, const char* an, const char* bn) {
  if (a.size() != b.size())
    throw py::value_error(std::string(bn) + " must have as many elements as " + an + " (" + std::to_string(a.size()) +
                          "), got " + std::to_string(b.size()));
  if (a.device() != b.device())
    throw py::value_error(std::string(bn) + " is on cuda:" + std::to_string(b.device()) + ", " + an +
                          " on cuda:" + std::to_string(a.device()));
}

DType dtype_arg(const py::object& dtype, const char* what) {
  return fg::cuda::from_numpy_dtype(py::dtype::from_args(dtype), what);
}

int device_arg(int device) {
  int count = fg::cuda::device_count();
  if (count == 0) throw std::runtime_error("CUDA is not available: " + fg::cuda::unavailable_reason());
  if (device < 0) return fg::cuda::current_device_checked();
  if (device >= count)
    throw py::value_error("device index " + std::to_string(device) + " is out of range (" + std::to_string(count) +
                          " CUDA devices)");
  return device;
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> st(shape.size());
  int64_t s = 1;
  for (std::size_t k = shape.size(); k-- > 0;) {
    st[k] = s;
    s *= shape[k];
  }
  return st;
}

// A new contiguous array with src's elements at (offset + sum i_k * strides[k]) (in elements, from
// src's first element): permute, expand, slicing with steps. Every element read must lie in src.
ArrayPtr strided_copy(const DeviceArray& src, std::vector<int64_t> shape, std::vector<int64_t> strides,
                      int64_t offset) {
  if (shape.size() != strides.size())
    throw py::value_error("strided_copy: shape has " + std::to_string(shape.size()) + " dimensions, strides " +
                          std::to_string(strides.size()));
  if (static_cast<int>(shape.size()) > fg::cuda::kMaxDims)
    throw py::value_error("strided_copy: at most " + std::to_string(fg::cuda::kMaxDims) + " dimensions, got " +
                          std::to_string(shape.size()));
  auto out = std::make_shared<DeviceArray>(shape, src.dtype(), src.device());
  if (out->size() == 0) return out;
  int64_t lo = 0, hi = 0;
  if (!fg::strided::span(shape.data(), strides.data(), static_cast<int>(shape.size()), offset, &lo, &hi) || lo < 0 ||
      hi >= src.size())
    throw py::index_error("strided_copy: elements " + std::to_string(lo) + ".." + std::to_string(hi) +
                          " lie outside the source's " + std::to_string(src.size()));
  auto dst_strides = contiguous_strides(shape);
  DeviceGuard guard(src.device());
  check(fg::cuda::strided_copy(src.raw_data(), offset, strides.data(), out->raw_data(), 0, dst_strides.data(),
                               shape.data(), static_cast<int>(shape.size()), src.itemsize()),
        "strided_copy");
  return out;
}

// Writes the contiguous src (of `shape`) into dst's elements at (offset + sum i_k * strides[k]):
// assignment through a basic-indexing view (the gradient of getitem).
void strided_assign(DeviceArray& dst, std::vector<int64_t> shape, std::vector<int64_t> strides, int64_t offset,
                    const DeviceArray& src) {
  if (shape != src.shape())
    throw py::value_error("strided_assign: src has shape " + fg::bind::shape_str(src.shape()) + ", expected " +
                          fg::bind::shape_str(shape));
  if (shape.size() != strides.size() || static_cast<int>(shape.size()) > fg::cuda::kMaxDims)
    throw py::value_error("strided_assign: shape and strides must have the same length (at most " +
                          std::to_string(fg::cuda::kMaxDims) + ")");
  if (src.dtype() != dst.dtype() || src.device() != dst.device())
    throw py::value_error("strided_assign: src and dst must have the same dtype and device");
  if (src.size() == 0) return;
  int64_t lo = 0, hi = 0;
  if (!fg::strided::span(shape.data(), strides.data(), static_cast<int>(shape.size()), offset, &lo, &hi) || lo < 0 ||
      hi >= dst.size())
    throw py::index_error("strided_assign: elements " + std::to_string(lo) + ".." + std::to_string(hi) +
                          " lie outside the destination's " + std::to_string(dst.size()));
  auto src_strides = contiguous_strides(shape);
  DeviceGuard guard(dst.device());
  check(fg::cuda::strided_copy(src.raw_data(), 0, src_strides.data(), dst.raw_data(), offset, strides.data(),
                               shape.data(), static_cast<int>(shape.size()), src.itemsize()),
        "strided_assign");
}

// src summed down to `shape` (numpy broadcasting in reverse: the gradient of expand).
ArrayPtr sum_to_shape(const DeviceArray& src, std::vector<int64_t> shape) {
  const int nd = src.ndim();
  if (static_cast<int>(shape.size()) > nd || nd > fg::cuda::kMaxDims)
    throw py::value_error("sum_to_shape: cannot sum " + fg::bind::shape_str(src.shape()) + " to " +
                          fg::bind::shape_str(shape));
  std::vector<int64_t> padded(nd - shape.size(), 1);
  padded.insert(padded.end(), shape.begin(), shape.end());
  for (int k = 0; k < nd; ++k)
    if (padded[k] != 1 && padded[k] != src.shape()[k])
      throw py::value_error("sum_to_shape: cannot sum " + fg::bind::shape_str(src.shape()) + " to " +
                            fg::bind::shape_str(shape));
  if (src.dtype() != DType::kFloat32 && src.dtype() != DType::kFloat64)
    throw py::type_error(std::string("sum_to_shape: float32 or float64 arrays only, got ") +
                         fg::cuda::dtype_name(src.dtype()));
  auto out = std::make_shared<DeviceArray>(shape, src.dtype(), src.device());
  DeviceGuard guard(src.device());
  check(fg::cuda::sum_to_shape(src.raw_data(), src.shape().data(), out->raw_data(), padded.data(), nd, src.dtype()),
        "sum_to_shape");
  return out;
}

ArrayPtr cast(const DeviceArray& src, const py::object& dtype) {
  DType t = dtype_arg(dtype, "cast");
  auto out = std::make_shared<DeviceArray>(src.shape(), t, src.device());
  out->copy_(src);
  return out;
}

ArrayPtr cat(const std::vector<ArrayPtr>& arrays, int64_t axis) {
  if (arrays.empty()) throw py::value_error("cat: expected a non-empty sequence of arrays");
  const DeviceArray& first = *arrays[0];
  const int64_t nd = first.ndim();
  if (nd == 0) throw py::value_error("cat: zero-dimensional arrays cannot be concatenated");
  if (axis < -nd || axis >= nd)
    throw py::value_error("cat: axis " + std::to_string(axis) + " is out of range for " + std::to_string(nd) +
                          "-d arrays");
  if (axis < 0) axis += nd;
  std::vector<int64_t> shape = first.shape();
  shape[axis] = 0;
  for (const auto& a : arrays) {
    if (!a) throw py::type_error("cat: arrays must be DeviceArrays, got None");
    bool ok = a->ndim() == nd && a->dtype() == first.dtype() && a->device() == first.device();
    for (int64_t k = 0; ok && k < nd; ++k) ok = k == axis || a->shape()[k] == first.shape()[k];
    if (!ok)
      throw py::value_error("cat: array of shape " + fg::bind::shape_str(a->shape()) + " (" +
                            fg::cuda::dtype_name(a->dtype()) + ", cuda:" + std::to_string(a->device()) +
                            ") does not match " + fg::bind::shape_str(first.shape()) + " (" +
                            fg::cuda::dtype_name(first.dtype()) + ", cuda:" + std::to_string(first.device()) +
                            ") outside axis " + std::to_string(axis));
    shape[axis] += a->shape()[axis];
  }
  auto out = std::make_shared<DeviceArray>(shape, first.dtype(), first.device());
  auto out_strides = contiguous_strides(shape);
  DeviceGuard guard(first.device());
  int64_t at = 0;
  for (const auto& a : arrays) {
    auto src_strides = contiguous_strides(a->shape());
    check(fg::cuda::strided_copy(a->raw_data(), 0, src_strides.data(), out->raw_data(), at * out_strides[axis],
                                 out_strides.data(), a->shape().data(), static_cast<int>(nd), a->itemsize()),
          "cat");
    at += a->shape()[axis];
  }
  return out;
}

void sgemm(const DeviceArray& a, const DeviceArray& b, DeviceArray& c, bool ta, bool tb, float alpha, float beta) {
  if (a.shape().size() != 2 || b.shape().size() != 2 || c.shape().size() != 2)
    throw py::value_error("sgemm: a, b and out must be 2-D");
  int64_t M = ta ? a.shape()[1] : a.shape()[0], K = ta ? a.shape()[0] : a.shape()[1];
  int64_t Kb = tb ? b.shape()[1] : b.shape()[0], N = tb ? b.shape()[0] : b.shape()[1];
  if (K != Kb)
    throw py::value_error("sgemm: inner dimensions differ: " + std::to_string(K) + " vs " + std::to_string(Kb));
  if (c.shape()[0] != M || c.shape()[1] != N)
    throw py::value_error("sgemm: out must have shape " + fg::bind::shape_str({M, N}) + ", got " +
                          fg::bind::shape_str(c.shape()));
  if (a.device() != c.device() || b.device() != c.device())
    throw py::value_error("sgemm: a, b and out must be on the same device");
  DeviceGuard guard(c.device());
  check(fg::cuda::sgemm(ta, tb, M, N, K, alpha, a.data(), a.shape()[1], b.data(), b.shape()[1], beta, c.data(), N),
        "sgemm");
}

std::vector<int64_t> shape_args(const py::args& args) {
  if (args.size() == 1 && (py::isinstance<py::tuple>(args[0]) || py::isinstance<py::list>(args[0])))
    return args[0].cast<std::vector<int64_t>>();
  return args.cast<std::vector<int64_t>>();
}

py::dict stats_dict(int device) {
  py::dict d;
  fg::for_each_stat(fg::cuda::memory_stats(device_arg(device)), [&](const char* name, std::size_t v) { d[name] = v; });
  return d;
}

void bind_array(py::module_& m) {
  py::class_<DeviceArray, ArrayPtr>(m, "DeviceArray",
                                    "A contiguous row-major array in GPU memory (storage of tensors on cuda)")
      .def(py::init([](std::vector<int64_t> shape, const py::object& dtype, int device) {
             return std::make_shared<DeviceArray>(std::move(shape), dtype_arg(dtype, "DeviceArray"),
                                                  device_arg(device));
           }),
           py::arg("shape"), py::arg("dtype") = py::dtype::of<float>(), py::arg("device") = -1)
      .def_static("from_numpy", &DeviceArray::from_numpy, py::arg("array"), py::arg("device") = -1)
      .def("numpy", &DeviceArray::numpy, "a numpy copy (waits for the queued work)")
      .def_property_readonly("shape", [](const DeviceArray& d) { return py::tuple(py::cast(d.shape())); })
      .def_property_readonly("size", &DeviceArray::size)
      .def_property_readonly("ndim", &DeviceArray::ndim)
      .def_property_readonly("dtype", [](const DeviceArray& d) { return fg::cuda::to_numpy_dtype(d.dtype()); })
      .def_property_readonly("itemsize", &DeviceArray::itemsize)
      .def_property_readonly("nbytes", &DeviceArray::nbytes)
      .def_property_readonly("device", &DeviceArray::device, "the CUDA device index")
      .def_property_readonly("data_ptr",
                             [](const DeviceArray& d) { return reinterpret_cast<std::uintptr_t>(d.raw_data()); })
      .def(
          "shares_storage", [](const DeviceArray& a, const DeviceArray& b) { return a.storage() == b.storage(); },
          py::arg("other"))
      .def("reshape", [](const DeviceArray& d, const py::args& args) { return d.reshape(shape_args(args)); })
      .def("fill", &DeviceArray::fill, py::arg("value"))
      .def("copy_", &DeviceArray::copy_, py::arg("src"))
      .def("__len__",
           [](const DeviceArray& d) {
             if (d.ndim() == 0) throw py::type_error("len() of a 0-d DeviceArray");
             return d.shape()[0];
           })
      .def("__array__",
           [](const DeviceArray&, const py::args&, const py::kwargs&) -> py::object {
             throw py::type_error("a cuda tensor's storage cannot be read as a numpy array; use .cpu()");
           })
      .def("__repr__", [](const DeviceArray& d) {
        return "DeviceArray(shape=" + fg::bind::shape_str(d.shape()) + ", dtype=" + fg::cuda::dtype_name(d.dtype()) +
               ", device=cuda:" + std::to_string(d.device()) + ")";
      });
}

#endif

void bind(py::module_& m) {
#ifdef FORGEGRAD_WITH_CUDA
  m.attr("built") = true;
  m.def("device_count", &fg::cuda::device_count);
  m.def("unavailable_reason", &fg::cuda::unavailable_reason);
  m.def("current_device", []() { return fg::cuda::current_device_checked(); });
  m.def(
      "set_device", [](int device) { check(fg::cuda::set_device(device_arg(device)), "cudaSetDevice"); },
      py::arg("device"));
  m.def(
      "synchronize",
      [](int device) {
        DeviceGuard guard(device_arg(device));
        check(fg::cuda::synchronize(), "synchronize");
      },
      py::arg("device") = -1);
  m.def("launch_blocking", &fg::cuda::launch_blocking);
  m.def("memory_stats", &stats_dict, py::arg("device") = -1);
  m.def(
      "reset_peak_memory_stats", [](int device) { fg::cuda::reset_peak_memory_stats(device_arg(device)); },
      py::arg("device") = -1);
  m.def("empty_cache", [](int device) { fg::cuda::empty_cache(device_arg(device)); }, py::arg("device") = -1);
  bind_array(m);
  m.def("strided_copy", &strided_copy, py::arg("src"), py::arg("shape"), py::arg("strides"), py::arg("offset") = 0);
  m.def("strided_assign", &strided_assign, py::arg("dst"), py::arg("shape"), py::arg("strides"), py::arg("offset"),
        py::arg("src"));
  m.def("sum_to_shape", &sum_to_shape, py::arg("src"), py::arg("shape"));
  m.def("cast", &cast, py::arg("src"), py::arg("dtype"));
  m.def("cat", &cat, py::arg("arrays"), py::arg("axis") = 0);
  m.def(
      "_fault_for_tests",
      []() {
        fg::cuda::current_device_checked();
        check(fg::cuda::launch_faulting_kernel(), "fault_kernel");
      },
      "launches a kernel that faults (tests of error reporting only: the process's CUDA context is lost)");
  m.def("sgemm", &sgemm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f);
  m.def("relu_forward", [](const DeviceArray& x, DeviceArray& y) {
    same_size(x, y, "x", "out");
    DeviceGuard guard(x.device());
    check(fg::cuda::relu_forward(x.data(), y.data(), x.size()), "relu_forward");
  });
  m.def("relu_backward", [](const DeviceArray& y, const DeviceArray& gy, DeviceArray& gx) {
    same_size(y, gy, "y", "grad_y");
    same_size(y, gx, "y", "out");
    DeviceGuard guard(y.device());
    check(fg::cuda::relu_backward(y.data(), gy.data(), gx.data(), y.size()), "relu_backward");
  });
  m.def("adam_step", [](DeviceArray& p, const DeviceArray& g, DeviceArray& m1, DeviceArray& m2, float lr, float b1,
                        float b2, float eps, float wd, bool decoupled, float bc1, float bc2_sqrt) {
    same_size(p, g, "param", "grad");
    same_size(p, m1, "param", "exp_avg");
    same_size(p, m2, "param", "exp_avg_sq");
    DeviceGuard guard(p.device());
    check(fg::cuda::adam_step(p.data(), g.data(), m1.data(), m2.data(), p.size(), lr, b1, b2, eps, wd, decoupled, bc1,
                              bc2_sqrt),
          "adam_step");
  });
#else
  m.attr("built") = false;
  m.def("device_count", []() { return 0; });
  m.def("unavailable_reason", []() {
    return std::string("forgegrad was built without CUDA (no CUDA compiler found, or FORGEGRAD_CUDA=OFF)");
  });
#endif
}

}  // namespace

FG_REGISTER_BINDINGS(cuda, bind)
