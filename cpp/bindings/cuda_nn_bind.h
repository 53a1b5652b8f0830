// Helpers shared by the bind_cuda_nn*.cpp binding files: argument checks that raise ValueError /
// TypeError naming the function and argument, and output allocation on the inputs' device.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "forgegrad/cuda_array.h"
#include "forgegrad/cuda_nn.h"

namespace fg::cuda::nn_bind {

namespace py = pybind11;
using fg::cuda::check;
using fg::cuda::DeviceArray;
using fg::cuda::DType;
using Arr = std::shared_ptr<DeviceArray>;
using OptArr = std::optional<Arr>;
using Shape = std::vector<int64_t>;
namespace nn = fg::cuda::nn;

inline std::string shape_str(const Shape& s) { return fg::bind::shape_str(s); }

inline Arr empty(const Shape& shape, DType t, int device) { return std::make_shared<DeviceArray>(shape, t, device); }

inline const float* fptr(const OptArr& a) { return a ? (*a)->data() : nullptr; }

inline void need_dtype(const DeviceArray& a, DType t, const char* fn, const char* name) {
  if (a.dtype() != t)
    throw py::type_error(std::string(fn) + ": " + name + " must be " + fg::cuda::dtype_name(t) + ", got " +
                         fg::cuda::dtype_name(a.dtype()));
}

inline void same_device(const DeviceArray& a, const DeviceArray& b, const char* fn, const char* name) {
  if (a.device() != b.device())
    throw py::value_error(std::string(fn) + ": " + name + " is on cuda:" + std::to_string(b.device()) +
                          ", expected cuda:" + std::to_string(a.device()));
}

inline void need_shape(const DeviceArray& a, const Shape& want, const char* fn, const char* name) {
  if (a.shape() != want)
    throw py::value_error(std::string(fn) + ": " + name + " must have shape " + shape_str(want) + ", got " +
                          shape_str(a.shape()));
}

inline int64_t prod(const Shape& s, size_t lo = 0, size_t hi = SIZE_MAX) {
  int64_t p = 1;
  for (size_t i = lo; i < s.size() && i < hi; ++i) p *= s[i];
  return p;
}

inline int64_t norm_axis(int64_t axis, int64_t ndim, const char* fn) {
  int64_t n = ndim > 0 ? ndim : 1;
  if (axis < -n || axis >= n)
    throw py::index_error(std::string(fn) + ": axis " + std::to_string(axis) + " out of range for " +
                          std::to_string(ndim) + " dimensions");
  return axis < 0 ? axis + n : axis;
}

// op name -> kernel op of forgegrad._C.cuda_nn.pointwise (cuda_pointwise_names.cpp)
const std::map<std::string, nn::Pointwise>& pointwise_ops();

}  // namespace fg::cuda::nn_bind
