// Host entry points of the GEMM-family CUDA kernels: SGEMM (cuda/gemm.cu), implicit-GEMM
// convolution (cuda/conv.cu) and pooling (cuda/pool.cu). Declared without CUDA headers so the
// bindings (cpp/bindings/bind_cuda_gemm.cpp) can call them; defined only in a CUDA build.
//
// Every function launches on fg::cuda::current_stream() without synchronising and returns an empty
// string on success, else the CUDA error text (cuda_api.h's convention). Pointers are device
// pointers; the caller has validated shapes and geometry (the bindings do). Results are
// deterministic: every output is summed in a fixed order, no float atomics. Ran on an H200.
#pragma once
#include <cstdint>
#include <string>

namespace fg {
struct Conv2dGeom;  // forgegrad/conv.h
struct Pool2dGeom;  // forgegrad/pool.h
}  // namespace fg

namespace fg::cuda {

constexpr int kGemmMaxBatchDims = 8;

// The batch of a batched GEMM: C entry z (row-major over size[0..ndim)) is op(A) op(B) of the A
// entry at A + sum_d idx_d * stride_a[d] (likewise B, C). A stride of 0 broadcasts that operand
// along the dimension; C entries must not overlap. ndim == 0: one GEMM.
struct GemmBatch {
  int ndim = 0;
  int64_t size[kGemmMaxBatchDims] = {};
  int64_t stride_a[kGemmMaxBatchDims] = {};
  int64_t stride_b[kGemmMaxBatchDims] = {};
  int64_t stride_c[kGemmMaxBatchDims] = {};
};

// C = alpha * op(A) op(B) + beta * C for every batch entry, row-major, the contract of fg::sgemm
// (beta == 0 ignores C's old contents; alpha == 0 or K == 0 only scales C by beta). allow_tf32:
// multiply on tensor cores with TF32 inputs (10-bit mantissa), as torch's allow_tf32; otherwise
// FP32 FMAs in a fixed k order. col_bias (N floats, or null) is added to every row of the result
// (linear layers; K == 0 gives the bias rows); it needs alpha != 0.
std::string sgemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                          const GemmBatch& batch, bool allow_tf32, const float* col_bias = nullptr);

// The strided form of fg::sgemm_batched (one batch dimension).
std::string sgemm_strided_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                                  float alpha, const float* A, int64_t lda, int64_t stride_a, const float* B,
                                  int64_t ldb, int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c,
                                  bool allow_tf32);

// dst (target batch shape x inner) = src (full batch shape x inner) summed over the batch
// dimensions where target[d] == 1 < full[d] (a broadcast operand's gradient), in a fixed order.
std::string sum_to_batch(const float* src, float* dst, int ndim, const int64_t* full, const int64_t* target,
                         int64_t inner);

// dst[o] = sum over i < outer, j < inner of src[i * stride_outer + o * stride_o + j], o < n_out:
// bias gradients (linear: outer = rows; conv: outer = N, inner = OH * OW). Fixed order.
std::string strided_sum(const float* src, float* dst, int64_t n_out, int64_t outer, int64_t stride_outer,
                        int64_t stride_o, int64_t inner);

// ---- convolution (NCHW, the geometry of fg::Conv2dGeom and the CPU kernels' semantics) ----
std::string conv2d_forward(const Conv2dGeom& g, const float* x, const float* weight, const float* bias, float* y);
std::string conv2d_backward_input(const Conv2dGeom& g, const float* weight, const float* grad_y, float* grad_x);
// Floats of device workspace conv2d_backward_weight needs (0: none; the pointer may be null).
int64_t conv2d_backward_weight_workspace(const Conv2dGeom& g);
// grad_weight and/or grad_bias (either may be null); both overwritten.
std::string conv2d_backward_weight(const Conv2dGeom& g, const float* x, const float* grad_y, float* grad_weight,
                                   float* grad_bias, float* workspace);

// ---- pooling (fg::Pool2dGeom; torch's semantics, as the CPU kernels) ----
std::string max_pool2d_forward(const Pool2dGeom& g, const float* x, float* y, int64_t* indices);
std::string max_pool2d_backward(const Pool2dGeom& g, const float* grad_y, const int64_t* indices, float* grad_x);
std::string avg_pool2d_forward(const Pool2dGeom& g, const float* x, float* y, bool count_include_pad,
                               int64_t divisor_override);
std::string avg_pool2d_backward(const Pool2dGeom& g, const float* grad_y, float* grad_x, bool count_include_pad,
                                int64_t divisor_override);
// Output (oh, ow) averages rows [oh*H/OH, ceil((oh+1)*H/OH)) and likewise columns (the CPU kernels' rule).
std::string adaptive_avg_pool2d_forward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                        const float* x, float* y);
std::string adaptive_avg_pool2d_backward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                         const float* grad_y, float* grad_x);

}  // namespace fg::cuda
