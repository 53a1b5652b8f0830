// SGEMM on the GPU: 64x64 output tiles per 256-thread block, each thread a 4x4 register tile,
// K in steps of 16 staged through shared memory. Row-major, op() = identity or transpose, the
// same contract as the CPU fg::sgemm. Each output is summed in a fixed k order (deterministic).
#include "common.cuh"
#include "forgegrad/cuda_api.h"

namespace fg::cuda {
namespace {

constexpr int TM = 64, TN = 64, TK = 16;

__global__ void sgemm_tiled(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* __restrict__ A,
                            int64_t lda, const float* __restrict__ B, int64_t ldb, float beta, float* __restrict__ C,
                            int64_t ldc) {
  __shared__ float As[TK][TM + 1];  // As[k][m]; +1 avoids bank conflicts on the transposed store
  __shared__ float Bs[TK][TN + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * TM, col0 = static_cast<int64_t>(blockIdx.x) * TN;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += TK) {
    for (int i = threadIdx.x; i < TM * TK; i += blockDim.x) {
      int m = i / TK, k = i % TK;
      int64_t gm = row0 + m, gk = k0 + k;
      float v = 0.f;
      if (gm < M && gk < K) v = ta ? A[gk * lda + gm] : A[gm * lda + gk];
      As[k][m] = v;
    }
    for (int i = threadIdx.x; i < TN * TK; i += blockDim.x) {
      int k = i / TN, n = i % TN;
      int64_t gn = col0 + n, gk = k0 + k;
      float v = 0.f;
      if (gn < N && gk < K) v = tb ? B[gn * ldb + gk] : B[gk * ldb + gn];
      Bs[k][n] = v;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < TK; ++k) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[k][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[k][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int64_t r = row0 + ty * 4 + i;
    if (r >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int64_t c = col0 + tx * 4 + j;
      if (c >= N) continue;
      float old = beta == 0.f ? 0.f : beta * C[r * ldc + c];
      C[r * ldc + c] = alpha * acc[i][j] + old;
    }
  }
}

}  // namespace

std::string sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return std::string();
  dim3 grid(static_cast<unsigned>((N + TN - 1) / TN), static_cast<unsigned>((M + TM - 1) / TM));
  sgemm_tiled<<<grid, 256, 0, current_stream()>>>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  return launch_status();
}

}  // namespace fg::cuda
