// Host-side entry points of the CUDA kernels (cuda/*.cu). Declared here so the bindings can call
// them without including CUDA headers; defined only when CMake builds with FORGEGRAD_WITH_CUDA.
// Every function returns an empty string on success and the CUDA error text otherwise, so the
// bindings can raise a Python exception instead of aborting.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace fg::cuda {

// Number of usable devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// Human-readable reason when device_count() == 0 (e.g. "no CUDA-capable device is detected").
std::string unavailable_reason();

// Device memory.
std::string malloc_device(void** ptr, std::size_t bytes);
std::string free_device(void* ptr);
std::string copy_to_device(void* dst, const void* src, std::size_t bytes);
std::string copy_to_host(void* dst, const void* src, std::size_t bytes);
std::string synchronize();

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major device arrays (same contract as fg::sgemm).
std::string sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// y = max(x, 0); grad_x = grad_y * (y > 0)
std::string relu_forward(const float* x, float* y, int64_t n);
std::string relu_backward(const float* y, const float* grad_y, float* grad_x, int64_t n);
// One Adam/AdamW step over n parameters (torch's formulas; bias corrections precomputed on the host).
std::string adam_step(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, bool decoupled, float bias_correction1,
                      float bias_correction2_sqrt);

}  // namespace fg::cuda
