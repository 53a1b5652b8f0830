// Shared helpers of the CUDA kernels: error strings and launch geometry.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace fg::cuda {

inline std::string status(cudaError_t err) {
  if (err == cudaSuccess) return std::string();
  cudaGetLastError();  // clear the error so the next call starts clean
  return cudaGetErrorString(err);
}

// The stream every forgegrad kernel launches on (one per device; the calling thread's current
// device's). Kernels do not synchronise: results are ordered on this stream, and copies to the
// host wait for it.
cudaStream_t current_stream();
bool launch_blocking();

// After a kernel launch: launch-configuration errors. Asynchronous faults surface at the next
// synchronisation, or here when FORGEGRAD_CUDA_LAUNCH_BLOCKING=1 (then the binding that launched
// the kernel names it in the error).
inline std::string launch_status() {
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && launch_blocking()) err = cudaStreamSynchronize(current_stream());
  return status(err);
}

inline unsigned int blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b > 65535 * 32) b = 65535 * 32;  // grid-stride loops cover the rest
  return static_cast<unsigned int>(b < 1 ? 1 : b);
}

}  // namespace fg::cuda
