// forgegrad._C.cuda: device queries, a device array type and the CUDA kernels. Without a CUDA
// build only the queries exist (reporting no device); python/forgegrad/cuda.py turns that into
// clear errors.
#include "forgegrad/bindings.h"
#ifdef FORGEGRAD_WITH_CUDA
#include "forgegrad/cuda_array.h"
#endif

namespace py = pybind11;

namespace {

#ifdef FORGEGRAD_WITH_CUDA
using fg::cuda::check;
using fg::cuda::DeviceArray;

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
