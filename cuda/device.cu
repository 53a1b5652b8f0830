// Device discovery. The module links cudart statically, so it imports on machines without a
// driver; these calls then report zero devices instead of failing.
#include <cuda_runtime.h>

#include "forgegrad/cuda_api.h"

namespace fg::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later queries start clean
    return 0;
  }
  return n;
}

std::string unavailable_reason() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return cudaGetErrorString(err);
  }
  return n == 0 ? "no CUDA device found" : "";
}

}  // namespace fg::cuda
