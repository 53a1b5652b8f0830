// fg_cuda_emu: the host entry points of cuda/gemm.cu, conv.cu and pool.cu, compiled by g++ against
// the emulated runtime (cuda_runtime.h here), on numpy arrays (in emulation a device pointer is a
// host pointer); and, as the submodule cuda_gemm, the real bindings (cpp/bindings/bind_cuda_gemm.cpp)
// over them, with a module-local DeviceArray whose "device memory" is host memory. Built and used by
// tests/test_cuda_emulation.py only.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include <cstdlib>
#include <utility>

#include "common.cuh"
// The real bindings and their helpers, compiled into this one translation unit (one pybind11 parse)
#define FORGEGRAD_WITH_CUDA 1
#include "../../cpp/bindings/bind_cuda_gemm.cpp"
#include "../../cpp/bindings/py_array.cpp"
#include "forgegrad/bindings.h"
#include "forgegrad/conv.h"
#include "forgegrad/cuda_array.h"
#include "forgegrad/cuda_gemm.h"
#include "forgegrad/pool.h"

using F32 = py::array_t<float, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;

namespace fg::cuda {
cudaStream_t current_stream() { return nullptr; }
bool launch_blocking() { return false; }
// One emulated device whose memory is the host's.
int device_count() { return 1; }
std::string unavailable_reason() { return std::string(); }
std::string get_device(int* device) {
  *device = 0;
  return std::string();
}
std::string set_device(int device) { return device == 0 ? std::string() : "invalid device ordinal"; }
void* device_alloc(int, std::size_t bytes) { return std::malloc(bytes ? bytes : 1); }
void device_free(int, void* ptr) { std::free(ptr); }
std::string copy_to_device(void* dst, const void* src, std::size_t bytes) {
  std::memcpy(dst, src, bytes);
  return std::string();
}
std::string copy_to_host(void* dst, const void* src, std::size_t bytes) { return copy_to_device(dst, src, bytes); }
}  // namespace fg::cuda

// module.cpp's registry, for the one binding file compiled in (bind_cuda_gemm.cpp)
namespace fg::bind {
std::vector<std::pair<const char*, BindFn>>& registry() {
  static std::vector<std::pair<const char*, BindFn>> r;
  return r;
}
Registrar::Registrar(const char* submodule, BindFn fn) { registry().emplace_back(submodule, fn); }
}  // namespace fg::bind

namespace {

void ok(const std::string& err) {
  if (!err.empty()) throw std::runtime_error(err);
}
float* ptr(F32& a) { return a.mutable_data(); }
const float* cptr(const py::object& o) { return o.is_none() ? nullptr : o.cast<F32>().data(); }

fg::Conv2dGeom conv_geom(const std::vector<int64_t>& v) {  // N C H W OC KH KW groups sh sw dh dw pt pb pl pr OH OW
  if (v.size() != 18) throw std::invalid_argument("conv geometry needs 18 ints");
  fg::Conv2dGeom g{};
  g.N = v[0], g.C = v[1], g.H = v[2], g.W = v[3], g.OC = v[4], g.KH = v[5], g.KW = v[6], g.groups = v[7];
  g.stride_h = v[8], g.stride_w = v[9], g.dil_h = v[10], g.dil_w = v[11];
  g.pad_top = v[12], g.pad_bottom = v[13], g.pad_left = v[14], g.pad_right = v[15], g.OH = v[16], g.OW = v[17];
  return g;
}

fg::Pool2dGeom pool_geom(const std::vector<int64_t>& v) {  // N C H W KH KW sh sw ph pw dh dw OH OW
  if (v.size() != 14) throw std::invalid_argument("pool geometry needs 14 ints");
  fg::Pool2dGeom g{};
  g.N = v[0], g.C = v[1], g.H = v[2], g.W = v[3], g.KH = v[4], g.KW = v[5], g.stride_h = v[6], g.stride_w = v[7];
  g.pad_h = v[8], g.pad_w = v[9], g.dil_h = v[10], g.dil_w = v[11], g.OH = v[12], g.OW = v[13];
  return g;
}

}  // namespace

PYBIND11_MODULE(fg_cuda_emu, m) {
  using fg::cuda::DeviceArray;
  // module-local: the real forgegrad._C registers its own DeviceArray for the same C++ type
  py::class_<DeviceArray, std::shared_ptr<DeviceArray>>(m, "DeviceArray", py::module_local())
      .def_static("from_numpy", [](const py::array& a) { return DeviceArray::from_numpy(a); })
      .def("numpy", &DeviceArray::numpy)
      .def_property_readonly("shape", [](const DeviceArray& d) { return py::tuple(py::cast(d.shape())); })
      .def_property_readonly("dtype", [](const DeviceArray& d) { return fg::cuda::to_numpy_dtype(d.dtype()); })
      .def_property_readonly("device", &DeviceArray::device);
  for (auto& [name, fn] : fg::bind::registry()) {
    py::module_ sub = m.def_submodule(name);
    fn(sub);
  }
  m.def("sgemm", [](bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, F32 A, int64_t lda, F32 B,
                    int64_t ldb, float beta, F32 C, int64_t ldc, std::vector<int64_t> sizes, std::vector<int64_t> sa,
                    std::vector<int64_t> sb, std::vector<int64_t> sc, bool tf32, py::object bias, int64_t a_off) {
    fg::cuda::GemmBatch gb;
    gb.ndim = static_cast<int>(sizes.size());
    for (int d = 0; d < gb.ndim; ++d)
      gb.size[d] = sizes[d], gb.stride_a[d] = sa[d], gb.stride_b[d] = sb[d], gb.stride_c[d] = sc[d];
    // a_off: start A that many floats into its buffer (to exercise the unaligned scalar path)
    ok(fg::cuda::sgemm_batched(ta, tb, M, N, K, alpha, A.data() + a_off, lda, B.data(), ldb, beta, ptr(C), ldc, gb,
                               tf32, cptr(bias)));
  });
  m.def("sum_to_batch", [](F32 src, F32 dst, std::vector<int64_t> full, std::vector<int64_t> target, int64_t inner) {
    ok(fg::cuda::sum_to_batch(src.data(), ptr(dst), static_cast<int>(full.size()), full.data(), target.data(), inner));
  });
  m.def("strided_sum", [](F32 src, F32 dst, int64_t n_out, int64_t outer, int64_t so, int64_t sm, int64_t inner) {
    ok(fg::cuda::strided_sum(src.data(), ptr(dst), n_out, outer, so, sm, inner));
  });
  m.def("conv2d_forward", [](F32 x, F32 w, py::object bias, F32 y, std::vector<int64_t> geo) {
    ok(fg::cuda::conv2d_forward(conv_geom(geo), x.data(), w.data(), cptr(bias), ptr(y)));
  });
  m.def("conv2d_backward_input", [](F32 w, F32 gy, F32 gx, std::vector<int64_t> geo) {
    ok(fg::cuda::conv2d_backward_input(conv_geom(geo), w.data(), gy.data(), ptr(gx)));
  });
  m.def("conv2d_backward_weight", [](F32 x, F32 gy, py::object gw, py::object gb, std::vector<int64_t> geo) {
    const fg::Conv2dGeom g = conv_geom(geo);
    std::vector<float> work(static_cast<size_t>(fg::cuda::conv2d_backward_weight_workspace(g)));
    float* gwp = gw.is_none() ? nullptr : gw.cast<F32>().mutable_data();
    float* gbp = gb.is_none() ? nullptr : gb.cast<F32>().mutable_data();
    ok(fg::cuda::conv2d_backward_weight(g, x.data(), gy.data(), gwp, gbp, work.empty() ? nullptr : work.data()));
    return static_cast<int64_t>(work.size());
  });
  m.def("max_pool2d_forward", [](F32 x, F32 y, I64 idx, std::vector<int64_t> geo) {
    ok(fg::cuda::max_pool2d_forward(pool_geom(geo), x.data(), ptr(y), idx.mutable_data()));
  });
  m.def("max_pool2d_backward", [](F32 gy, I64 idx, F32 gx, std::vector<int64_t> geo) {
    ok(fg::cuda::max_pool2d_backward(pool_geom(geo), gy.data(), idx.data(), ptr(gx)));
  });
  m.def("adaptive_avg_pool2d_forward", [](F32 x, F32 y) {
    ok(fg::cuda::adaptive_avg_pool2d_forward(x.shape(0), x.shape(1), x.shape(2), x.shape(3), y.shape(2), y.shape(3),
                                             x.data(), ptr(y)));
  });
  m.def("adaptive_avg_pool2d_backward", [](F32 gy, F32 gx) {
    ok(fg::cuda::adaptive_avg_pool2d_backward(gx.shape(0), gx.shape(1), gx.shape(2), gx.shape(3), gy.shape(2),
                                              gy.shape(3), gy.data(), ptr(gx)));
  });
  m.def("avg_pool2d_forward", [](F32 x, F32 y, std::vector<int64_t> geo, bool cip, int64_t div) {
    ok(fg::cuda::avg_pool2d_forward(pool_geom(geo), x.data(), ptr(y), cip, div));
  });
  m.def("avg_pool2d_backward", [](F32 gy, F32 gx, std::vector<int64_t> geo, bool cip, int64_t div) {
    ok(fg::cuda::avg_pool2d_backward(pool_geom(geo), gy.data(), ptr(gx), cip, div));
  });
}
