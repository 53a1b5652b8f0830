// forgegrad._C.cuda: device queries (and, when built with CUDA, the device kernels).
#include "forgegrad/bindings.h"
#ifdef FORGEGRAD_WITH_CUDA
#include "forgegrad/cuda_api.h"
#endif

namespace py = pybind11;

namespace {

void bind(py::module_& m) {
#ifdef FORGEGRAD_WITH_CUDA
  m.attr("built") = true;
  m.def("device_count", &fg::cuda::device_count);
  m.def("unavailable_reason", &fg::cuda::unavailable_reason);
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
