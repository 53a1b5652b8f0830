// Deterministic block-wide reductions for the row kernels (softmax, losses, norms): each thread
// folds its strided share in index order, then a shared-memory tree pairs values in a fixed order,
// so the result depends on blockDim.x and the data only.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace fg::cuda::nn {

constexpr int kRowThreads = 256;  // upper bound of blockDim.x for the row kernels

struct SumOp {
  __device__ static float apply(float a, float b) { return a + b; }
};
struct MaxOp {
  // NaN propagates (a NaN logit gives a NaN row, as torch)
  __device__ static float apply(float a, float b) { return (a != a || a > b) ? a : (b != b ? b : (a > b ? a : b)); }
};

// All threads of the block get the result; sh holds blockDim.x (a power of two) floats.
template <class Op>
__device__ __forceinline__ float block_reduce(float v, float* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] = Op::apply(sh[threadIdx.x], sh[threadIdx.x + s]);
    __syncthreads();
  }
  float r = sh[0];
  __syncthreads();
  return r;
}

// Threads for a row of n elements: a power of two in [32, kRowThreads].
inline int row_threads(int64_t n) {
  int t = 32;
  while (t < kRowThreads && t < n) t *= 2;
  return t;
}

inline unsigned row_grid(int64_t rows) {
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > 65535 * 32 ? 65535 * 32 : rows));
}

}  // namespace fg::cuda::nn
