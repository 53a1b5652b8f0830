// Batch norm (one thread block per channel) and layer / RMS norm (one block per row), forward and
// backward. Statistics are two-pass (mean, then the sum of squared deviations: no catastrophic
// cancellation of E[x^2] - E[x]^2) with block_reduce's fixed order; the weight / bias gradients of
// layer norm are column sums over fixed row slices, then over the slices in order -- no atomics.
#include <cmath>

#include "block_reduce.cuh"
#include "common.cuh"
#include "forgegrad/cuda_nn.h"

namespace fg::cuda::nn {
namespace {

// Element j (0 <= j < N * inner) of channel c in an [N, C, inner] array.
__device__ __forceinline__ int64_t chan_index(int64_t j, int64_t c, int64_t C, int64_t inner) {
  return ((j / inner) * C + c) * inner + j % inner;
}

__global__ void bn_fwd(const float* __restrict__ x, const float* __restrict__ weight, const float* __restrict__ bias,
                       float* __restrict__ running_mean, float* __restrict__ running_var, bool training, float momentum,
                       float eps, float* __restrict__ y, float* __restrict__ save_mean, float* __restrict__ save_invstd,
                       int64_t N, int64_t C, int64_t inner) {
  __shared__ float sh[kRowThreads];
  int64_t cnt = N * inner;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    float mean, invstd;
    if (training) {
      float s = 0.f;
      for (int64_t j = threadIdx.x; j < cnt; j += blockDim.x) s += x[chan_index(j, c, C, inner)];
      mean = block_reduce<SumOp>(s, sh) / static_cast<float>(cnt);
      float q = 0.f;
      for (int64_t j = threadIdx.x; j < cnt; j += blockDim.x) {
        float d = x[chan_index(j, c, C, inner)] - mean;
        q += d * d;
      }
      float var = block_reduce<SumOp>(q, sh) / static_cast<float>(cnt);
      invstd = 1.f / sqrtf(var + eps);
      if (threadIdx.x == 0 && running_mean && running_var) {
        float unbiased = cnt > 1 ? var * static_cast<float>(cnt) / static_cast<float>(cnt - 1) : var;
        running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean;
        running_var[c] = (1.f - momentum) * running_var[c] + momentum * unbiased;
      }
    } else {
      mean = running_mean[c];
      invstd = 1.f / sqrtf(running_var[c] + eps);
    }
    float w = weight ? weight[c] : 1.f, b = bias ? bias[c] : 0.f;
    for (int64_t j = threadIdx.x; j < cnt; j += blockDim.x) {
      int64_t e = chan_index(j, c, C, inner);
      y[e] = (x[e] - mean) * invstd * w + b;
    }
    if (threadIdx.x == 0) {
      save_mean[c] = mean;
      save_invstd[c] = invstd;
    }
  }
}

__global__ void bn_bwd(const float* __restrict__ g, const float* __restrict__ x, const float* __restrict__ weight,
                       const float* __restrict__ mean_in, const float* __restrict__ invstd_in, bool training,
                       float* __restrict__ gx, float* __restrict__ gw, float* __restrict__ gb, int64_t N, int64_t C,
                       int64_t inner) {
  __shared__ float sh[kRowThreads];
  int64_t cnt = N * inner;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    float mean = mean_in[c], invstd = invstd_in[c];
    float sg = 0.f, sgx = 0.f;
    for (int64_t j = threadIdx.x; j < cnt; j += blockDim.x) {
      int64_t e = chan_index(j, c, C, inner);
      sg += g[e];
      sgx += g[e] * (x[e] - mean) * invstd;
    }
    sg = block_reduce<SumOp>(sg, sh);
    sgx = block_reduce<SumOp>(sgx, sh);
    if (threadIdx.x == 0) {
      if (gw) gw[c] = sgx;
      if (gb) gb[c] = sg;
    }
    if (!gx) continue;
    float k = (weight ? weight[c] : 1.f) * invstd;
    float inv_n = 1.f / static_cast<float>(cnt);
    for (int64_t j = threadIdx.x; j < cnt; j += blockDim.x) {
      int64_t e = chan_index(j, c, C, inner);
      gx[e] = training ? k * (g[e] - sg * inv_n - (x[e] - mean) * invstd * sgx * inv_n) : k * g[e];
    }
  }
}

__global__ void ln_fwd(bool rms, const float* __restrict__ x, const float* __restrict__ weight,
                       const float* __restrict__ bias, float eps, float* __restrict__ y, float* __restrict__ mean_out,
                       float* __restrict__ rstd_out, int64_t rows, int64_t D) {
  __shared__ float sh[kRowThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * D;
    float mean = 0.f;
    if (!rms) {
      float s = 0.f;
      for (int64_t k = threadIdx.x; k < D; k += blockDim.x) s += xr[k];
      mean = block_reduce<SumOp>(s, sh) / static_cast<float>(D);
    }
    float q = 0.f;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
      float d = xr[k] - mean;
      q += d * d;
    }
    float rstd = 1.f / sqrtf(block_reduce<SumOp>(q, sh) / static_cast<float>(D) + eps);
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
      float v = (xr[k] - mean) * rstd;
      if (weight) v *= weight[k];
      if (bias) v += bias[k];
      y[r * D + k] = v;
    }
    if (threadIdx.x == 0) {
      if (mean_out) mean_out[r] = mean;
      rstd_out[r] = rstd;
    }
  }
}

__global__ void ln_bwd_x(bool rms, const float* __restrict__ g, const float* __restrict__ x,
                         const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                         const float* __restrict__ weight, float* __restrict__ gx, int64_t rows, int64_t D) {
  __shared__ float sh[kRowThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float mean = rms ? 0.f : mean_in[r], rstd = rstd_in[r];
    const float *xr = x + r * D, *gr = g + r * D;
    float s1 = 0.f, s2 = 0.f;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
      float gh = weight ? gr[k] * weight[k] : gr[k];
      s1 += gh;
      s2 += gh * (xr[k] - mean) * rstd;
    }
    s1 = rms ? 0.f : block_reduce<SumOp>(s1, sh);
    s2 = block_reduce<SumOp>(s2, sh);
    float inv_d = 1.f / static_cast<float>(D);
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
      float gh = weight ? gr[k] * weight[k] : gr[k];
      gx[r * D + k] = rstd * (gh - s1 * inv_d - (xr[k] - mean) * rstd * s2 * inv_d);
    }
  }
}

// part[p, 0, d] = sum over rows of slice p of g * xhat, part[p, 1, d] = sum of g (rows in order).
__global__ void ln_bwd_cols(bool rms, const float* __restrict__ g, const float* __restrict__ x,
                            const float* __restrict__ mean_in, const float* __restrict__ rstd_in,
                            float* __restrict__ part, int64_t rows, int64_t D, int64_t chunk) {
  int64_t p = blockIdx.y;
  int64_t lo = p * chunk, hi = min(rows, lo + chunk);
  for (int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; d < D;
       d += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sw = 0.f, sb = 0.f;
    for (int64_t r = lo; r < hi; ++r) {
      float gv = g[r * D + d];
      sw += gv * (x[r * D + d] - (rms ? 0.f : mean_in[r])) * rstd_in[r];
      sb += gv;
    }
    part[(p * 2) * D + d] = sw;
    part[(p * 2 + 1) * D + d] = sb;
  }
}

__global__ void ln_bwd_cols_finish(const float* __restrict__ part, float* __restrict__ gw, float* __restrict__ gb,
                                   int64_t slices, int64_t D) {
  for (int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; d < D;
       d += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sw = 0.f, sb = 0.f;
    for (int64_t p = 0; p < slices; ++p) {
      sw += part[(p * 2) * D + d];
      sb += part[(p * 2 + 1) * D + d];
    }
    if (gw) gw[d] = sw;
    if (gb) gb[d] = sb;
  }
}

constexpr int64_t kRowsPerSlice = 64;
constexpr int64_t kMaxSlices = 512;

int64_t ln_slices(int64_t rows) {
  int64_t s = (rows + kRowsPerSlice - 1) / kRowsPerSlice;
  return s < 1 ? 1 : (s > kMaxSlices ? kMaxSlices : s);
}

}  // namespace

std::string batch_norm_forward(const float* x, const float* weight, const float* bias, float* running_mean,
                               float* running_var, bool training, float momentum, float eps, float* y, float* save_mean,
                               float* save_invstd, int64_t N, int64_t C, int64_t inner) {
  if (C == 0) return std::string();
  if (!training && (!running_mean || !running_var)) return "batch_norm: running statistics required in eval mode";
  bn_fwd<<<row_grid(C), row_threads(N * inner), 0, current_stream()>>>(
      x, weight, bias, running_mean, running_var, training, momentum, eps, y, save_mean, save_invstd, N, C, inner);
  return launch_status();
}

std::string batch_norm_backward(const float* g, const float* x, const float* weight, const float* mean,
                                const float* invstd, bool training, float* grad_x, float* grad_weight, float* grad_bias,
                                int64_t N, int64_t C, int64_t inner) {
  if (C == 0) return std::string();
  bn_bwd<<<row_grid(C), row_threads(N * inner), 0, current_stream()>>>(g, x, weight, mean, invstd, training, grad_x,
                                                                       grad_weight, grad_bias, N, C, inner);
  return launch_status();
}

std::string layer_norm_forward(bool rms, const float* x, const float* weight, const float* bias, float eps, float* y,
                               float* mean, float* rstd, int64_t rows, int64_t D) {
  if (rows == 0) return std::string();
  ln_fwd<<<row_grid(rows), row_threads(D), 0, current_stream()>>>(rms, x, weight, bias, eps, y, mean, rstd, rows, D);
  return launch_status();
}

int64_t layer_norm_workspace(int64_t rows, int64_t D) { return ln_slices(rows) * 2 * D; }

std::string layer_norm_backward(bool rms, const float* g, const float* x, const float* mean, const float* rstd,
                                const float* weight, float* grad_x, float* grad_weight, float* grad_bias, int64_t rows,
                                int64_t D, float* workspace) {
  if (rows == 0 || D == 0) return std::string();
  if (grad_x) {
    ln_bwd_x<<<row_grid(rows), row_threads(D), 0, current_stream()>>>(rms, g, x, mean, rstd, weight, grad_x, rows, D);
    std::string err = launch_status();
    if (!err.empty()) return err;
  }
  if (!grad_weight && !grad_bias) return std::string();
  if (!workspace) return "layer_norm_backward: workspace required for the weight / bias gradients";
  int64_t slices = ln_slices(rows), chunk = (rows + slices - 1) / slices;
  dim3 grid(static_cast<unsigned>((D + 127) / 128 > 65535 ? 65535 : (D + 127) / 128), static_cast<unsigned>(slices));
  ln_bwd_cols<<<grid, 128, 0, current_stream()>>>(rms, g, x, mean, rstd, workspace, rows, D, chunk);
  std::string err = launch_status();
  if (!err.empty()) return err;
  ln_bwd_cols_finish<<<blocks_for(D, 128), 128, 0, current_stream()>>>(workspace, grad_weight, grad_bias, slices, D);
  return launch_status();
}

}  // namespace fg::cuda::nn
