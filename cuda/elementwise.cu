// Elementwise activation kernels (grid-stride loops). The per-element math is the shared
// host/device code of forgegrad/hd/activation.h, the same functions the CPU kernel's portable
// build calls; each activation is its own kernel instance (the op code is a template argument).
#include "common.cuh"
#include "forgegrad/cuda_api.h"
#include "forgegrad/cuda_pointwise.h"
#include "forgegrad/hd/activation.h"

namespace fg::cuda {
namespace {

template <int kOp>
__global__ void act_fwd(const float* x, float* y, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = hd::act_forward(kOp, x[i], alpha);
}

template <int kOp>
__global__ void act_bwd(const float* g, const float* saved, float* dx, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dx[i] = hd::act_backward(kOp, g[i], saved[i], alpha);
}

constexpr int kThreads = 256;

template <int kOp>
std::string launch(bool backward, const float* a, const float* b, float* out, int64_t n, float alpha) {
  if (backward)
    act_bwd<kOp><<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(a, b, out, n, alpha);
  else
    act_fwd<kOp><<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(a, out, n, alpha);
  return launch_status();
}

std::string dispatch(int op, bool backward, const float* a, const float* b, float* out, int64_t n, float alpha) {
  if (n <= 0) return std::string();
  switch (op) {
    case hd::kRelu: return launch<hd::kRelu>(backward, a, b, out, n, alpha);
    case hd::kLeakyRelu: return launch<hd::kLeakyRelu>(backward, a, b, out, n, alpha);
    case hd::kGelu: return launch<hd::kGelu>(backward, a, b, out, n, alpha);
    case hd::kGeluTanh: return launch<hd::kGeluTanh>(backward, a, b, out, n, alpha);
    case hd::kSigmoid: return launch<hd::kSigmoid>(backward, a, b, out, n, alpha);
    case hd::kTanh: return launch<hd::kTanh>(backward, a, b, out, n, alpha);
    case hd::kSilu: return launch<hd::kSilu>(backward, a, b, out, n, alpha);
    default: return "unknown activation code " + std::to_string(op);
  }
}

}  // namespace

std::string act_forward(int op, const float* x, float* y, int64_t n, float alpha) {
  return dispatch(op, false, x, nullptr, y, n, alpha);
}

std::string act_backward(int op, const float* g, const float* saved, float* dx, int64_t n, float alpha) {
  return dispatch(op, true, g, saved, dx, n, alpha);
}

std::string relu_forward(const float* x, float* y, int64_t n) { return act_forward(hd::kRelu, x, y, n, 0.0f); }

std::string relu_backward(const float* y, const float* grad_y, float* grad_x, int64_t n) {
  return act_backward(hd::kRelu, grad_y, y, grad_x, n, 0.0f);
}

}  // namespace fg::cuda
