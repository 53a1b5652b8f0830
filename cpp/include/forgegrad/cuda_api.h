// Host-side entry points of the CUDA kernels (cuda/*.cu). Declared here so the bindings can call
// them without including CUDA headers; defined only when CMake builds with FORGEGRAD_WITH_CUDA.
// Every function returns an empty string on success and the CUDA error text otherwise, so the
// bindings can raise a Python exception instead of aborting.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "forgegrad/caching_allocator.h"

namespace fg::cuda {

// Element types of device arrays. kBool is stored as one byte per element (0 or 1), as numpy's bool.
enum class DType : int { kFloat32 = 0, kFloat64, kInt64, kInt32, kUInt8, kBool };
constexpr int kNumDTypes = 6;
inline std::size_t itemsize(DType t) {
  switch (t) {
    case DType::kFloat64:
    case DType::kInt64: return 8;
    case DType::kFloat32:
    case DType::kInt32: return 4;
    default: return 1;
  }
}
inline const char* dtype_name(DType t) {
  static const char* names[] = {"float32", "float64", "int64", "int32", "uint8", "bool"};
  return names[static_cast<int>(t)];
}

// Number of usable devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// Human-readable reason when device_count() == 0 (e.g. "no CUDA-capable device is detected").
std::string unavailable_reason();

// The calling host thread's current device (cudaGetDevice / cudaSetDevice).
std::string get_device(int* device);
std::string set_device(int device);

// Makes `device` the current device for a scope and restores the previous one (throws
// std::runtime_error naming cudaSetDevice when the device cannot be made current).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (!get_device(&prev_).empty()) prev_ = -1;
    if (prev_ != device) {
      std::string err = set_device(device);
      if (!err.empty()) throw std::runtime_error("cudaSetDevice(" + std::to_string(device) + "): CUDA error: " + err);
    }
  }
  ~DeviceGuard() {
    int now = -1;
    if (prev_ >= 0 && get_device(&now).empty() && now != prev_) set_device(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// Whether FORGEGRAD_CUDA_LAUNCH_BLOCKING=1 was set when the first kernel launched: then every
// launch synchronises its stream, so an asynchronous fault is reported by the launch that caused it.
bool launch_blocking();

// Raw device memory on the current device (cudaMalloc / cudaFree), outside the cache.
std::string malloc_device(void** ptr, std::size_t bytes);
std::string free_device(void* ptr);

// Device memory through the caching allocator of `device` (cuda/allocator.cu). device_alloc throws
// fg::OutOfMemoryError when the device is full even after emptying the cache, std::runtime_error
// naming the call for other CUDA errors; 0 bytes returns nullptr. device_free never throws.
void* device_alloc(int device, std::size_t bytes);
void device_free(int device, void* ptr);
AllocatorStats memory_stats(int device);
void reset_peak_memory_stats(int device);
void empty_cache(int device);

// Copies on the current device's stream. The host copies wait for the stream: the host buffer is
// pageable memory, and a copy to the host is read as soon as the call returns.
std::string copy_to_device(void* dst, const void* src, std::size_t bytes);
std::string copy_to_host(void* dst, const void* src, std::size_t bytes);
std::string copy_device_to_device(void* dst, const void* src, std::size_t bytes);
// Waits for all work queued on the current device's stream; asynchronous kernel faults surface here.
std::string synchronize();

// ---- array kernels (cuda/array_ops.cu), on the current device's stream -----------------------
constexpr int kMaxDims = 12;  // == fg::strided::kMaxDims (strided_index.h)
// dst[i] = value for n elements of type t (value converted as a C++ cast would; bool: value != 0).
std::string fill(void* dst, DType t, int64_t n, double value);
// Elementwise copy of an array of `shape` (ndim <= kMaxDims) between two strided layouts of the same
// element size: src element (i0..) at src + src_offset + sum(i_k * src_strides[k]), likewise dst.
// Offsets and strides count elements; strides may be 0 (broadcast) or negative (a reversed slice);
// the caller checks that every element lies inside both allocations.
std::string strided_copy(const void* src, int64_t src_offset, const int64_t* src_strides, void* dst, int64_t dst_offset,
                         const int64_t* dst_strides, const int64_t* shape, int ndim, std::size_t itemsize);
// dst (contiguous, out_shape) = src (contiguous, in_shape) summed over the axes where out_shape is 1
// and in_shape is not (out_shape has in_shape's ndim <= kMaxDims: the caller pads it with leading
// 1s): the gradient of a broadcast. float32 / float64; each output sums in a fixed order.
std::string sum_to_shape(const void* src, const int64_t* in_shape, void* dst, const int64_t* out_shape, int ndim,
                         DType t);
// Launches a kernel that writes through a null pointer (an asynchronous fault that leaves the
// context unusable): only for the tests of error reporting, which run it in a subprocess.
std::string launch_faulting_kernel();
// dst[i] = static_cast<dst type>(src[i]) for n elements (to bool: != 0).
std::string cast(const void* src, DType src_type, void* dst, DType dst_type, int64_t n);

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major device arrays (same contract as fg::sgemm).
std::string sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// y = max(x, 0); grad_x = grad_y * (y > 0)
std::string relu_forward(const float* x, float* y, int64_t n);
std::string relu_backward(const float* y, const float* grad_y, float* grad_x, int64_t n);
// One Adam/AdamW step over n parameters (torch's formulas; bias corrections precomputed on the host).
std::string adam_step(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, bool decoupled, float bias_correction1,
                      float bias_correction2_sqrt);

}  // namespace fg::cuda
