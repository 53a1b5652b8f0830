// fg::cuda::DeviceArray: a contiguous row-major array in GPU memory, the storage of tensors on the
// ``cuda`` device; every CUDA binding file takes and returns it. Its memory is a block of the
// device's caching allocator (cuda/allocator.cu) held by a shared Storage, so a reshape is a view
// sharing the block (shared ownership + a byte offset), and the block returns to the cache when the
// last array using it goes away. Dtypes: float32, float64, int64, int32, uint8, bool.
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

// The first device in this thread's current device, or "no CUDA device" as a RuntimeError.
inline int current_device_checked() {
  if (device_count() == 0) throw std::runtime_error("CUDA is not available: " + unavailable_reason());
  int d = 0;
  check(get_device(&d), "cudaGetDevice");
  return d;
}

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::kFloat32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::kFloat64;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::kInt64;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::kInt32;
}
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::kUInt8;
}
template <>
constexpr DType dtype_of<bool>() {
  return DType::kBool;
}

inline pybind11::dtype to_numpy_dtype(DType t) {
  switch (t) {
    case DType::kFloat32: return pybind11::dtype::of<float>();
    case DType::kFloat64: return pybind11::dtype::of<double>();
    case DType::kInt64: return pybind11::dtype::of<int64_t>();
    case DType::kInt32: return pybind11::dtype::of<int32_t>();
    case DType::kUInt8: return pybind11::dtype::of<uint8_t>();
    default: return pybind11::dtype::of<bool>();
  }
}

// The DType of a numpy dtype (native byte order); TypeError naming `what` for any other.
inline DType from_numpy_dtype(const pybind11::dtype& dt, const char* what) {
  auto& api = pybind11::detail::npy_api::get();
  for (int i = 0; i < kNumDTypes; ++i) {
    DType t = static_cast<DType>(i);
    if (api.PyArray_EquivTypes_(dt.ptr(), to_numpy_dtype(t).ptr())) return t;
  }
  throw pybind11::type_error(std::string(what) + ": dtype " + std::string(pybind11::str(dt)) +
                             " is not supported on CUDA (float32, float64, int64, int32, uint8, bool)");
}

// One block of device memory; returned to the device's cache when the last array using it goes.
struct Storage {
  Storage(std::size_t nbytes, int device) : ptr(device_alloc(device, nbytes)), nbytes(nbytes), device(device) {}
  ~Storage() { device_free(device, ptr); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* ptr;
  std::size_t nbytes;
  int device;
};

class DeviceArray {
 public:
  // A new, uninitialised array on `device` (-1: the current device).
  explicit DeviceArray(std::vector<int64_t> shape, DType dtype = DType::kFloat32, int device = -1)
      : shape_(std::move(shape)), dtype_(dtype) {
    int count = device_count();
    if (count == 0) throw std::runtime_error("CUDA is not available: " + unavailable_reason());
    if (device < 0) device = current_device_checked();
    if (device >= count)
      throw pybind11::value_error("device index " + std::to_string(device) + " is out of range (" +
                                  std::to_string(count) + " CUDA devices)");
    size_ = checked_size(shape_);
    storage_ = std::make_shared<Storage>(static_cast<std::size_t>(size_) * fg::cuda::itemsize(dtype_), device);
  }
  // A view of `storage` from byte `offset` (the caller checks that it fits).
  DeviceArray(std::shared_ptr<Storage> storage, std::size_t offset, std::vector<int64_t> shape, DType dtype)
      : storage_(std::move(storage)), offset_(offset), shape_(std::move(shape)), dtype_(dtype) {
    size_ = checked_size(shape_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  // A copy of a numpy array (any supported dtype, any layout) on `device` (-1: current).
  static std::shared_ptr<DeviceArray> from_numpy(const pybind11::array& a, int device = -1) {
    DType t = from_numpy_dtype(a.dtype(), "from_numpy");
    auto c = pybind11::array::ensure(a, pybind11::array::c_style);
    if (!c) throw pybind11::error_already_set();  // the contiguous copy failed (e.g. MemoryError)
    std::vector<int64_t> shape(c.shape(), c.shape() + c.ndim());
    auto d = std::make_shared<DeviceArray>(shape, t, device);
    DeviceGuard guard(d->device());
    check(copy_to_device(d->raw_data(), c.data(), d->nbytes()), "copy to device");
    return d;
  }
  // A numpy copy; waits for the work queued on the array's stream.
  pybind11::array numpy() const {
    pybind11::array out(to_numpy_dtype(dtype_), shape_);
    DeviceGuard guard(device());
    check(copy_to_host(out.mutable_data(), raw_data(), nbytes()), "copy to host");
    return out;
  }

  void* raw_data() const { return static_cast<char*>(storage_->ptr) + offset_; }
  // The float32 data (the element type of most kernels); TypeError for any other dtype.
  float* data() const { return data_as<float>(); }
  template <class T>
  T* data_as() const {
    if (dtype_ != dtype_of<T>())
      throw pybind11::type_error(std::string("DeviceArray holds ") + dtype_name(dtype_) + ", expected " +
                                 dtype_name(dtype_of<T>()));
    return static_cast<T*>(raw_data());
  }

  const std::vector<int64_t>& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t size() const { return size_; }
  DType dtype() const { return dtype_; }
  std::size_t itemsize() const { return fg::cuda::itemsize(dtype_); }
  std::size_t nbytes() const { return static_cast<std::size_t>(size_) * itemsize(); }
  int device() const { return storage_->device; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  std::size_t offset() const { return offset_; }  // bytes from the start of the storage

  // A view with a new shape (one entry may be -1); ValueError when the sizes differ.
  std::shared_ptr<DeviceArray> reshape(std::vector<int64_t> shape) const {
    int infer = -1;
    int64_t known = 1;
    for (std::size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] == -1) {
        if (infer >= 0) throw pybind11::value_error("reshape: only one dimension can be -1");
        infer = static_cast<int>(i);
      } else if (shape[i] < 0) {
        throw pybind11::value_error("reshape: negative dimension " + std::to_string(shape[i]));
      } else {
        known *= shape[i];
      }
    }
    if (infer >= 0) {
      if (known == 0 || size_ % known != 0)
        throw pybind11::value_error("reshape: cannot reshape array of size " + std::to_string(size_) + " into shape " +
                                    fg::bind::shape_str(shape));
      shape[infer] = size_ / known;
      known *= shape[infer];
    }
    if (known != size_)
      throw pybind11::value_error("reshape: cannot reshape array of size " + std::to_string(size_) + " into shape " +
                                  fg::bind::shape_str(shape));
    return std::make_shared<DeviceArray>(storage_, offset_, std::move(shape), dtype_);
  }

  // Every element = value (converted to the dtype; bool: value != 0). Queued on the stream.
  void fill(double value) {
    DeviceGuard guard(device());
    check(fg::cuda::fill(raw_data(), dtype_, size_, value), "fill");
  }

  // Copies `src` into this array (same shape, same device); a dtype difference is a cast.
  void copy_(const DeviceArray& src) {
    if (src.shape_ != shape_)
      throw pybind11::value_error("copy_: source shape " + fg::bind::shape_str(src.shape_) + " differs from " +
                                  fg::bind::shape_str(shape_));
    if (src.device() != device())
      throw pybind11::value_error("copy_: source is on cuda:" + std::to_string(src.device()) +
                                  ", destination on cuda:" + std::to_string(device()));
    DeviceGuard guard(device());
    if (src.dtype_ == dtype_)
      check(copy_device_to_device(raw_data(), src.raw_data(), nbytes()), "copy device to device");
    else
      check(cast(src.raw_data(), src.dtype_, raw_data(), dtype_, size_), "cast");
  }

 private:
  static int64_t checked_size(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t s : shape) {
      if (s < 0) throw pybind11::value_error("DeviceArray: negative dimension in shape " + fg::bind::shape_str(shape));
      if (s != 0 && n > INT64_MAX / s)
        throw pybind11::value_error("DeviceArray: shape " + fg::bind::shape_str(shape) + " is too large");
      n *= s;
    }
    if (n > INT64_MAX / 8)
      throw pybind11::value_error("DeviceArray: shape " + fg::bind::shape_str(shape) + " is too large");
    return n;
  }

  std::shared_ptr<Storage> storage_;
  std::size_t offset_ = 0;
  std::vector<int64_t> shape_;
  DType dtype_;
  int64_t size_ = 0;
};

}  // namespace fg::cuda
