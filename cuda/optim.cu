// Fused Adam / AdamW update: one pass over parameter, gradient and both moments.
#include "common.cuh"
#include "forgegrad/cuda_api.h"

namespace fg::cuda {
namespace {

__global__ void adam_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                            float* __restrict__ v, int64_t n, float lr, float b1, float b2, float eps, float wd,
                            bool decoupled, float bc1, float bc2_sqrt) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float grad = g[i];
    float param = p[i];
    if (wd != 0.f) {
      if (decoupled)
        param *= 1.f - lr * wd;
      else
        grad += wd * param;
    }
    float mi = b1 * m[i] + (1.f - b1) * grad;
    float vi = b2 * v[i] + (1.f - b2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    float denom = sqrtf(vi) / bc2_sqrt + eps;
    p[i] = param - (lr / bc1) * mi / denom;
  }
}

}  // namespace

std::string adam_step(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, bool decoupled, float bias_correction1,
                      float bias_correction2_sqrt) {
  if (n <= 0) return std::string();
  adam_kernel<<<blocks_for(n, 256), 256, 0, current_stream()>>>(param, grad, exp_avg, exp_avg_sq, n, lr, beta1, beta2,
                                                                eps, weight_decay, decoupled, bias_correction1,
                                                                bias_correction2_sqrt);
  return launch_status();
}

}  // namespace fg::cuda
