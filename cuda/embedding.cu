// Embedding: a row gather forward; a deterministic backward without sorting. The backward first
// counts the uses of each row (integer atomics: exact, so order-free), then gives every row that is
// used one thread block, which scans the indices in ascending position (staged through shared
// memory) and adds the matching gradient rows in that order -- the same order as the CPU kernel,
// with no floating-point atomics. Unused rows (and padding_idx) are written as zeros.
#include <cmath>

#include "common.cuh"
#include "forgegrad/cuda_nn.h"

namespace fg::cuda::nn {
namespace {

constexpr int kThreads = 128;
constexpr int kStage = 1024;  // indices staged in shared memory per step

__global__ void gather(const float* __restrict__ weight, const int64_t* __restrict__ index, float* __restrict__ out,
                       int64_t n, int64_t V, int64_t D) {
  int64_t total = n * D;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t i = e / D, d = e % D;
    int64_t r = index[i];
    out[e] = (r >= 0 && r < V) ? weight[r * D + d] : NAN;
  }
}

__global__ void count_rows(const int64_t* __restrict__ index, int* __restrict__ counts, int64_t n, int64_t V) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t r = index[i];
    if (r >= 0 && r < V) atomicAdd(&counts[r], 1);  // integer count: exact in any order
  }
}

__global__ void scan_rows(const float* __restrict__ g, const int64_t* __restrict__ index,
                          const int* __restrict__ counts, float* __restrict__ gw, int64_t n, int64_t V, int64_t D,
                          int64_t padding_idx) {
  __shared__ int64_t stage[kStage];
  for (int64_t r = blockIdx.x; r < V; r += gridDim.x) {
    float* row = gw + r * D;
    if (counts[r] == 0 || r == padding_idx) {
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) row[d] = 0.f;
      continue;
    }
    // each thread owns columns d = threadIdx.x + k * blockDim.x; D <= 4 * kThreads in registers,
    // wider rows in passes over the indices
    for (int64_t d0 = 0; d0 < D; d0 += 4 * blockDim.x) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      for (int64_t s = 0; s < n; s += kStage) {
        int64_t m = min(static_cast<int64_t>(kStage), n - s);
        __syncthreads();
        for (int64_t k = threadIdx.x; k < m; k += blockDim.x) stage[k] = index[s + k];
        __syncthreads();
        for (int64_t k = 0; k < m; ++k) {
          if (stage[k] != r) continue;
          const float* gr = g + (s + k) * D;
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            int64_t d = d0 + threadIdx.x + u * blockDim.x;
            if (d < D) acc[u] += gr[d];
          }
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        int64_t d = d0 + threadIdx.x + u * blockDim.x;
        if (d < D) row[d] = acc[u];
      }
    }
  }
}

}  // namespace

std::string embedding_forward(const float* weight, const int64_t* index, float* out, int64_t n, int64_t V, int64_t D) {
  if (n * D == 0) return std::string();
  gather<<<blocks_for(n * D, 256), 256, 0, current_stream()>>>(weight, index, out, n, V, D);
  return launch_status();
}

std::string embedding_backward(const float* g, const int64_t* index, float* grad_weight, int64_t n, int64_t V,
                               int64_t D, int64_t padding_idx, int* workspace) {
  if (V * D == 0) return std::string();
  std::string err = status(cudaMemsetAsync(workspace, 0, static_cast<size_t>(V) * sizeof(int), current_stream()));
  if (!err.empty()) return err;
  if (n > 0) {
    count_rows<<<blocks_for(n, 256), 256, 0, current_stream()>>>(index, workspace, n, V);
    err = launch_status();
    if (!err.empty()) return err;
  }
  scan_rows<<<static_cast<unsigned>(V > 65535 * 32 ? 65535 * 32 : V), kThreads, 0, current_stream()>>>(
      g, index, workspace, grad_weight, n, V, D, padding_idx);
  return launch_status();
}

}  // namespace fg::cuda::nn
