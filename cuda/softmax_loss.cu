// softmax / log_softmax along one axis, class-index cross entropy and nll_loss. Every kernel works
// on rows (o, i) of an [outer, n, inner] array, so any axis runs without a transpose: inner == 1 is
// the common last-axis case (coalesced); other axes read with stride inner. One thread block per
// row, block_reduce for the max and the sums (fixed order).
#include <cmath>

#include "block_reduce.cuh"
#include "common.cuh"
#include "forgegrad/cuda_nn.h"

namespace fg::cuda::nn {
namespace {

__global__ void softmax_fwd(bool log_out, const float* __restrict__ x, float* __restrict__ y, int64_t outer, int64_t n,
                            int64_t inner) {
  __shared__ float sh[kRowThreads];
  for (int64_t row = blockIdx.x; row < outer * inner; row += gridDim.x) {
    int64_t base = (row / inner) * n * inner + row % inner;
    float m = -INFINITY;
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) m = MaxOp::apply(m, x[base + k * inner]);
    m = block_reduce<MaxOp>(m, sh);
    float s = 0.f;
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) s += expf(x[base + k * inner] - m);
    s = block_reduce<SumOp>(s, sh);
    if (log_out) {
      float ls = logf(s);
      for (int64_t k = threadIdx.x; k < n; k += blockDim.x) y[base + k * inner] = x[base + k * inner] - m - ls;
    } else {
      float inv = 1.f / s;
      for (int64_t k = threadIdx.x; k < n; k += blockDim.x) y[base + k * inner] = expf(x[base + k * inner] - m) * inv;
    }
  }
}

__global__ void softmax_bwd(bool log_out, const float* __restrict__ y, const float* __restrict__ g,
                            float* __restrict__ gx, int64_t outer, int64_t n, int64_t inner) {
  __shared__ float sh[kRowThreads];
  for (int64_t row = blockIdx.x; row < outer * inner; row += gridDim.x) {
    int64_t base = (row / inner) * n * inner + row % inner;
    float s = 0.f;
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      int64_t e = base + k * inner;
      s += log_out ? g[e] : g[e] * y[e];
    }
    s = block_reduce<SumOp>(s, sh);
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      int64_t e = base + k * inner;
      gx[e] = log_out ? g[e] - expf(y[e]) * s : y[e] * (g[e] - s);
    }
  }
}

__global__ void cross_entropy_fwd(const float* __restrict__ z, const int64_t* __restrict__ target,
                                  const float* __restrict__ weight, float* __restrict__ prob, float* __restrict__ per,
                                  float* __restrict__ wy_out, int64_t outer, int64_t C, int64_t inner,
                                  int64_t ignore_index, float eps) {
  __shared__ float sh[kRowThreads];
  for (int64_t row = blockIdx.x; row < outer * inner; row += gridDim.x) {
    int64_t base = (row / inner) * C * inner + row % inner;
    float m = -INFINITY;
    for (int64_t k = threadIdx.x; k < C; k += blockDim.x) m = MaxOp::apply(m, z[base + k * inner]);
    m = block_reduce<MaxOp>(m, sh);
    float s = 0.f, wz = 0.f, wsum = 0.f;
    for (int64_t k = threadIdx.x; k < C; k += blockDim.x) {
      float v = z[base + k * inner];
      s += expf(v - m);
      if (eps > 0.f) {  // sum_k w_k (z_k - m): relative to the max, so no cancellation against lse below
        float w = weight ? weight[k] : 1.f;
        wz += w * (v - m);
        wsum += w;
      }
    }
    s = block_reduce<SumOp>(s, sh);
    if (eps > 0.f) {
      wz = block_reduce<SumOp>(wz, sh);
      wsum = block_reduce<SumOp>(wsum, sh);
    }
    float inv = 1.f / s;
    for (int64_t k = threadIdx.x; k < C; k += blockDim.x) prob[base + k * inner] = expf(z[base + k * inner] - m) * inv;
    if (threadIdx.x == 0) {
      int64_t t = target[row];
      bool valid = t != ignore_index;
      float loss = 0.f, wy = 0.f;
      if (valid && (t < 0 || t >= C)) {
        loss = NAN;  // out-of-range target: visible as NaN (a kernel cannot raise IndexError)
      } else if (valid) {
        wy = weight ? weight[t] : 1.f;
        loss = (1.f - eps) * (-((z[base + t * inner] - m) - logf(s)) * wy);
        // -sum_k w_k logp_k = -(sum_k w_k (z_k - m) - (lse - m) sum_k w_k)
        if (eps > 0.f) loss += eps / static_cast<float>(C) * (-(wz - logf(s) * wsum));
      }
      per[row] = loss;
      wy_out[row] = wy;
    }
  }
}

__device__ __forceinline__ float grad_scale(const float* g, int64_t g_stride, const float* denom, int64_t row) {
  float a = g[row * g_stride];
  return denom ? a / *denom : a;
}

__global__ void cross_entropy_bwd(const float* __restrict__ prob, const int64_t* __restrict__ target,
                                  const float* __restrict__ weight, const float* __restrict__ g, int64_t g_stride,
                                  const float* __restrict__ denom, float* __restrict__ grad, int64_t outer, int64_t C,
                                  int64_t inner, int64_t ignore_index, float eps) {
  __shared__ float sh[kRowThreads];
  for (int64_t row = blockIdx.x; row < outer * inner; row += gridDim.x) {
    int64_t base = (row / inner) * C * inner + row % inner;
    int64_t t = target[row];
    bool valid = t != ignore_index;
    bool bad = valid && (t < 0 || t >= C);
    // An ignored row's upstream gradient is 0 (a = 0) but, as in torch's log_softmax backward (g - p * sum g),
    // it still meets p and the class weights: NaN where p is NaN or (with smoothing) a weight is not finite.
    float wsum = 0.f;
    if (eps > 0.f) {
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x) wsum += weight ? weight[k] : 1.f;
      wsum = block_reduce<SumOp>(wsum, sh);
    }
    float a = valid ? grad_scale(g, g_stride, denom, row) : 0.f;
    float wy = (valid && !bad) ? (weight ? weight[t] : 1.f) : 0.f;
    float smooth = eps / static_cast<float>(C);
    float coef = (1.f - eps) * wy + smooth * wsum;
    for (int64_t k = threadIdx.x; k < C; k += blockDim.x) {
      float d = prob[base + k * inner] * coef;
      if (k == t) d -= (1.f - eps) * wy;
      if (smooth > 0.f) d -= smooth * (weight ? weight[k] : 1.f);
      grad[base + k * inner] = bad ? NAN : d * a;
    }
  }
}

__global__ void nll_fwd(const float* __restrict__ lp, const int64_t* __restrict__ target,
                        const float* __restrict__ weight, float* __restrict__ per, float* __restrict__ wy_out,
                        int64_t outer, int64_t C, int64_t inner, int64_t ignore_index) {
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; row < outer * inner;
       row += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t base = (row / inner) * C * inner + row % inner;
    int64_t t = target[row];
    float loss = 0.f, wy = 0.f;
    if (t != ignore_index) {
      if (t < 0 || t >= C) {
        loss = NAN;
      } else {
        wy = weight ? weight[t] : 1.f;
        loss = -lp[base + t * inner] * wy;
      }
    }
    per[row] = loss;
    wy_out[row] = wy;
  }
}

__global__ void nll_bwd(const int64_t* __restrict__ target, const float* __restrict__ weight,
                        const float* __restrict__ g, int64_t g_stride, const float* __restrict__ denom,
                        float* __restrict__ grad, int64_t outer, int64_t C, int64_t inner, int64_t ignore_index) {
  int64_t total = outer * C * inner;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t i = e % inner, k = (e / inner) % C, o = e / (inner * C);
    int64_t row = o * inner + i;
    int64_t t = target[row];
    float d = 0.f;
    if (t != ignore_index) {
      if (t < 0 || t >= C)
        d = NAN;
      else if (k == t)
        d = -(weight ? weight[t] : 1.f) * grad_scale(g, g_stride, denom, row);
    }
    grad[e] = d;
  }
}

}  // namespace

std::string softmax_forward(bool log, const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
  if (outer * n * inner == 0) return std::string();
  softmax_fwd<<<row_grid(outer * inner), row_threads(n), 0, current_stream()>>>(log, x, y, outer, n, inner);
  return launch_status();
}

std::string softmax_backward(bool log, const float* y, const float* g, float* gx, int64_t outer, int64_t n,
                             int64_t inner) {
  if (outer * n * inner == 0) return std::string();
  softmax_bwd<<<row_grid(outer * inner), row_threads(n), 0, current_stream()>>>(log, y, g, gx, outer, n, inner);
  return launch_status();
}

std::string cross_entropy_forward(const float* logits, const int64_t* target, const float* weight, float* prob,
                                  float* per, float* wy, int64_t outer, int64_t C, int64_t inner, int64_t ignore_index,
                                  float label_smoothing) {
  if (outer * inner == 0) return std::string();
  cross_entropy_fwd<<<row_grid(outer * inner), row_threads(C), 0, current_stream()>>>(
      logits, target, weight, prob, per, wy, outer, C, inner, ignore_index, label_smoothing);
  return launch_status();
}

std::string cross_entropy_backward(const float* prob, const int64_t* target, const float* weight, const float* g,
                                   int64_t g_stride, const float* denom, float* grad, int64_t outer, int64_t C,
                                   int64_t inner, int64_t ignore_index, float label_smoothing) {
  if (outer * inner == 0) return std::string();
  cross_entropy_bwd<<<row_grid(outer * inner), row_threads(C), 0, current_stream()>>>(
      prob, target, weight, g, g_stride, denom, grad, outer, C, inner, ignore_index, label_smoothing);
  return launch_status();
}

std::string nll_forward(const float* logp, const int64_t* target, const float* weight, float* per, float* wy,
                        int64_t outer, int64_t C, int64_t inner, int64_t ignore_index) {
  int64_t rows = outer * inner;
  if (rows == 0) return std::string();
  nll_fwd<<<blocks_for(rows, 256), 256, 0, current_stream()>>>(logp, target, weight, per, wy, outer, C, inner,
                                                               ignore_index);
  return launch_status();
}

std::string nll_backward(const int64_t* target, const float* weight, const float* g, int64_t g_stride,
                         const float* denom, float* grad, int64_t outer, int64_t C, int64_t inner,
                         int64_t ignore_index) {
  int64_t total = outer * C * inner;
  if (total == 0) return std::string();
  nll_bwd<<<blocks_for(total, 256), 256, 0, current_stream()>>>(target, weight, g, g_stride, denom, grad, outer, C,
                                                                inner, ignore_index);
  return launch_status();
}

}  // namespace fg::cuda::nn
