// Device discovery, the current device, the per-device stream and copies. The module links cudart
// statically, so it imports on machines without a driver; these calls then report zero devices
// instead of failing.
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "common.cuh"
#include "forgegrad/cuda_api.h"

namespace fg::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string unavailable_reason() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) return status(err);
  return n == 0 ? "no CUDA device found" : "";
}

std::string get_device(int* device) { return status(cudaGetDevice(device)); }
std::string set_device(int device) { return status(cudaSetDevice(device)); }

bool launch_blocking() {
  static const bool on = [] {
    const char* v = std::getenv("FORGEGRAD_CUDA_LAUNCH_BLOCKING");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return on;
}

std::string malloc_device(void** ptr, std::size_t bytes) { return status(cudaMalloc(ptr, bytes == 0 ? 4 : bytes)); }
std::string free_device(void* ptr) { return status(cudaFree(ptr)); }
std::string copy_to_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return std::string();
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, current_stream());
  if (err == cudaSuccess) err = cudaStreamSynchronize(current_stream());  // src is pageable host memory
  return status(err);
}
std::string copy_to_host(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return std::string();
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, current_stream());
  if (err == cudaSuccess) err = cudaStreamSynchronize(current_stream());
  return status(err);
}
std::string copy_device_to_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return std::string();
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, current_stream());
  if (err == cudaSuccess && launch_blocking()) err = cudaStreamSynchronize(current_stream());
  return status(err);
}
std::string synchronize() { return status(cudaStreamSynchronize(current_stream())); }

cudaStream_t current_stream() {
  // One stream per device, created on first use: a non-blocking stream, so forgegrad's work does
  // not serialise with the legacy default stream of other libraries in the process. Every kernel
  // and copy of forgegrad goes to it, which is what lets the caching allocator reuse a freed block
  // at once (see caching_allocator.h).
  constexpr int kMaxDevices = 64;
  static cudaStream_t streams[kMaxDevices] = {};
  static std::mutex mu;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) {
    cudaGetLastError();
    return nullptr;  // the default stream; the next CUDA call reports the error
  }
  std::lock_guard<std::mutex> lock(mu);
  if (streams[dev] == nullptr) {
    cudaStream_t s = nullptr;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;  // fall back to the default stream (and try again next time)
    }
    streams[dev] = s;
  }
  return streams[dev];
}

}  // namespace fg::cuda
