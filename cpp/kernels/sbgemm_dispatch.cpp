// The bfloat16 GEMM's path choice (forgegrad/sbgemm.h): the vdpbf16ps kernel (per_isa/sbgemm.cpp) where the CPU
// has AVX512_BF16 and the active SIMD path is avx512, else the operands widened to float32 and multiplied by sgemm.
// ISA-neutral code, compiled once.
#include "forgegrad/sbgemm.h"

#include <atomic>

#include "forgegrad/bf16_convert.h"
#include "forgegrad/cpu.h"
#include "forgegrad/gemm.h"
#include "forgegrad/memory.h"

namespace fg {
namespace {

std::atomic<bool>& native_allowed() {
  static std::atomic<bool> allow{true};
  return allow;
}

bool native() {
  return native_allowed().load(std::memory_order_relaxed) && active_isa() == Isa::avx512 && cpu_has_avx512_bf16();
}

// rows x cols of a bfloat16 matrix (rows ld apart) widened into a contiguous float32 one.
void widen(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld, float* dst) {
  if (ld == cols) {
    bf16_to_f32(src, dst, rows * cols);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) bf16_to_f32(src + r * ld, dst + r * cols, cols);
}

}  // namespace

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__)
  static const bool has = [] {
    if (detected_isa() != Isa::avx512) return false;  // (the OS-enabled zmm state is checked there)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has;
#else
  return false;
#endif
}

const char* sbgemm_path() { return native() ? "avx512_bf16" : "float32"; }

void set_sbgemm_native(bool allow) { native_allowed().store(allow, std::memory_order_relaxed); }

void sbgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
            const uint16_t* B, int64_t ldb, const float* bias, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
#if defined(__x86_64__)  // (only x86-64 builds compile the kernel: per_isa/sbgemm.cpp's AVX-512 part)
  if (native()) {
    avx512::sbgemm_avx512bf16(trans_a, trans_b, M, N, K, A, lda, B, ldb, bias, C, ldc);
    return;
  }
#endif
  // float32: the widened operands through sgemm, the bias as C's start (beta 1), as a float32 Linear's col_bias
  const int64_t ar = trans_a ? K : M, ac = trans_a ? M : K, br = trans_b ? N : K, bc = trans_b ? K : N;
  AlignedBuffer a32(static_cast<size_t>(ar * ac > 0 ? ar * ac : 1)),
      b32(static_cast<size_t>(br * bc > 0 ? br * bc : 1));
  if (K > 0) {
    widen(A, ar, ac, lda, a32.data());
    widen(B, br, bc, ldb, b32.data());
  }
  if (bias)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = bias[j];
  sgemm(trans_a, trans_b, M, N, K, 1.0f, a32.data(), ac, b32.data(), bc, bias ? 1.0f : 0.0f, C, ldc);
}

}  // namespace fg
