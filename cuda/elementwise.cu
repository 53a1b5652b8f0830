// Elementwise kernels (grid-stride loops).
#include "common.cuh"
#include "forgegrad/cuda_api.h"

namespace fg::cuda {
namespace {

__global__ void relu_fwd(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = x[i] > 0.f ? x[i] : 0.f;
}

__global__ void relu_bwd(const float* __restrict__ y, const float* __restrict__ gy, float* __restrict__ gx, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    gx[i] = y[i] > 0.f ? gy[i] : 0.f;
}

}  // namespace

std::string relu_forward(const float* x, float* y, int64_t n) {
  if (n <= 0) return std::string();
  relu_fwd<<<blocks_for(n, 256), 256, 0, current_stream()>>>(x, y, n);
  return launch_status();
}

std::string relu_backward(const float* y, const float* grad_y, float* grad_x, int64_t n) {
  if (n <= 0) return std::string();
  relu_bwd<<<blocks_for(n, 256), 256, 0, current_stream()>>>(y, grad_y, grad_x, n);
  return launch_status();
}

}  // namespace fg::cuda
