// fg::cuda::DeviceArray: a float32 array in GPU memory, freed when its last owner goes away. It is
// the storage of tensors on the ``cuda`` device; every CUDA binding file takes and returns it.
// Included only by bindings compiled with FORGEGRAD_WITH_CUDA.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "forgegrad/cuda_api.h"
#include "forgegrad/py_array.h"

namespace fg::cuda {

// Raise a Python RuntimeError naming the CUDA call when err (a cuda_api.h status) is not empty.
inline void check(const std::string& err, const char* what) {
  if (!err.empty()) throw std::runtime_error(std::string(what) + ": CUDA error: " + err);
}

class DeviceArray {
 public:
  explicit DeviceArray(std::vector<int64_t> shape) : shape_(std::move(shape)) {
    if (device_count() == 0) throw std::runtime_error("no CUDA device available: " + unavailable_reason());
    size_ = 1;
    for (int64_t s : shape_) {
      if (s < 0) throw pybind11::value_error("DeviceArray: negative dimension");
      size_ *= s;
    }
    check(malloc_device(&ptr_, static_cast<size_t>(size_) * sizeof(float)), "cudaMalloc");
  }
  ~DeviceArray() {
    if (ptr_) free_device(ptr_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  static std::shared_ptr<DeviceArray> from_numpy(const pybind11::array& a) {
    auto arg = fg::bind::f32_arg(a, "array");
    auto d = std::make_shared<DeviceArray>(arg.shape);
    check(copy_to_device(d->ptr_, arg.ptr, static_cast<size_t>(d->size_) * sizeof(float)), "copy to device");
    return d;
  }
  pybind11::array_t<float> numpy() const {
    pybind11::array_t<float> out(shape_);
    check(copy_to_host(out.mutable_data(), ptr_, static_cast<size_t>(size_) * sizeof(float)), "copy to host");
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

}  // namespace fg::cuda
