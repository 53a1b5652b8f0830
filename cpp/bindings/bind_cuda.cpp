// forgegrad._C.cuda: device queries, a device array type and the CUDA kernels. Without a CUDA
// build only the queries exist (reporting no device); python/forgegrad/cuda.py turns that into
// clear errors.
#include "forgegrad/bindings.h"
#ifdef FORGEGRAD_WITH_CUDA
#include <memory>
#include <stdexcept>
#include <vector>

#include "forgegrad/cuda_api.h"
#include "forgegrad/py_array.h"
#endif

namespace py = pybind11;

namespace {

#ifdef FORGEGRAD_WITH_CUDA
void check(const std::string& err, const char* what) {
  if (!err.empty()) throw std::runtime_error(std::string(what) + ": CUDA error: " + err);
}

// A float32 array in device memory, freed when the Python object goes away.
class DeviceArray {
 public:
  explicit DeviceArray(std::vector<int64_t> shape) : shape_(std::move(shape)) {
    if (fg::cuda::device_count() == 0)
      throw std::runtime_error("no CUDA device available: " + fg::cuda::unavailable_reason());
    size_ = 1;
    for (int64_t s : shape_) {
      if (s < 0) throw py::value_error("DeviceArray: negative dimension");
      size_ *= s;
    }
    check(fg::cuda::malloc_device(&ptr_, static_cast<size_t>(size_) * sizeof(float)), "cudaMalloc");
  }
  ~DeviceArray() {
    if (ptr_) fg::cuda::free_device(ptr_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  static std::shared_ptr<DeviceArray> from_numpy(const py::array& a) {
    auto arg = fg::bind::f32_arg(a, "array");
    auto d = std::make_shared<DeviceArray>(arg.shape);
    check(fg::cuda::copy_to_device(d->ptr_, arg.ptr, static_cast<size_t>(d->size_) * sizeof(float)), "copy to device");
    return d;
  }
  py::array_t<float> numpy() const {
    py::array_t<float> out(shape_);
    check(fg::cuda::copy_to_host(out.mutable_data(), ptr_, static_cast<size_t>(size_) * sizeof(float)), "copy to host");
    return out;
  }
  float* data() const { return static_cast<float*>(ptr_); }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t size() const { return size_; }

 private:
  void* ptr_ = nullptr;
  std::vector<int64_t> shape_;
  int64_t size_ = 0;
};

void same_size(const DeviceArray& a, const DeviceArray& b, const char* an, const char* bn) {
  if (a.size() != b.size())
    throw py::value_error(std::string(bn) + " must have as many elements as " + an + " (" + std::to_string(a.size()) +
                          "), got " + std::to_string(b.size()));
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
  check(fg::cuda::sgemm(ta, tb, M, N, K, alpha, a.data(), a.shape()[1], b.data(), b.shape()[1], beta, c.data(), N),
        "sgemm");
  check(fg::cuda::synchronize(), "sgemm");
}
#endif

void bind(py::module_& m) {
#ifdef FORGEGRAD_WITH_CUDA
  m.attr("built") = true;
  m.def("device_count", &fg::cuda::device_count);
  m.def("unavailable_reason", &fg::cuda::unavailable_reason);
  py::class_<DeviceArray, std::shared_ptr<DeviceArray>>(m, "DeviceArray")
      .def(py::init<std::vector<int64_t>>(), py::arg("shape"))
      .def_static("from_numpy", &DeviceArray::from_numpy, py::arg("array"))
      .def("numpy", &DeviceArray::numpy)
      .def_property_readonly("shape", [](const DeviceArray& d) { return py::tuple(py::cast(d.shape())); })
      .def_property_readonly("size", &DeviceArray::size)
      // what forgegrad's autograd engine reads of any device array (Tensor storage on the cuda device)
      .def_property_readonly("ndim", [](const DeviceArray& d) { return d.shape().size(); })
      .def_property_readonly("dtype", [](const DeviceArray&) { return py::dtype::of<float>(); });
  m.def("sgemm", &sgemm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f);
  m.def("relu_forward", [](const DeviceArray& x, DeviceArray& y) {
    same_size(x, y, "x", "out");
    check(fg::cuda::relu_forward(x.data(), y.data(), x.size()), "relu_forward");
    check(fg::cuda::synchronize(), "relu_forward");
  });
  m.def("relu_backward", [](const DeviceArray& y, const DeviceArray& gy, DeviceArray& gx) {
    same_size(y, gy, "y", "grad_y");
    same_size(y, gx, "y", "out");
    check(fg::cuda::relu_backward(y.data(), gy.data(), gx.data(), y.size()), "relu_backward");
    check(fg::cuda::synchronize(), "relu_backward");
  });
  m.def("adam_step", [](DeviceArray& p, const DeviceArray& g, DeviceArray& m1, DeviceArray& m2, float lr, float b1,
                        float b2, float eps, float wd, bool decoupled, float bc1, float bc2_sqrt) {
    same_size(p, g, "param", "grad");
    same_size(p, m1, "param", "exp_avg");
    same_size(p, m2, "param", "exp_avg_sq");
    check(fg::cuda::adam_step(p.data(), g.data(), m1.data(), m2.data(), p.size(), lr, b1, b2, eps, wd, decoupled, bc1,
                              bc2_sqrt),
          "adam_step");
    check(fg::cuda::synchronize(), "adam_step");
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
