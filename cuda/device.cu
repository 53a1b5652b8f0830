// Device discovery and memory. The module links cudart statically, so it imports on machines
// without a driver; these calls then report zero devices instead of failing.
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

std::string malloc_device(void** ptr, std::size_t bytes) { return status(cudaMalloc(ptr, bytes == 0 ? 4 : bytes)); }
std::string free_device(void* ptr) { return status(cudaFree(ptr)); }
std::string copy_to_device(void* dst, const void* src, std::size_t bytes) {
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, current_stream());
  if (err == cudaSuccess) err = cudaStreamSynchronize(current_stream());  // src is pageable host memory
  return status(err);
}
std::string copy_to_host(void* dst, const void* src, std::size_t bytes) {
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, current_stream());
  if (err == cudaSuccess) err = cudaStreamSynchronize(current_stream());
  return status(err);
}
std::string synchronize() { return status(cudaStreamSynchronize(current_stream())); }

cudaStream_t current_stream() {
  // Created on first use; a non-blocking stream so forgegrad's work does not serialise with the
  // legacy default stream of other libraries in the process.
  static cudaStream_t stream = [] {
    cudaStream_t s = nullptr;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
      cudaGetLastError();
      s = nullptr;  // fall back to the default stream
    }
    return s;
  }();
  return stream;
}

}  // namespace fg::cuda
