// bfloat16 GEMM: C (float32, M x N) = op(A) op(B) [+ bias[j]], A and B bfloat16 bit patterns (uint16), row-major.
//   op(A) is M x K (A is M x K, or K x M when trans_a), op(B) is K x N (B is K x N, or N x K when trans_b); lda, ldb,
//   ldc are row strides in elements; bias is null or N floats. C's old contents are ignored.
//
// Two paths (sbgemm_path() says which runs):
// - "avx512_bf16" (cpp/kernels/per_isa/sbgemm.cpp): vdpbf16ps on packed k-pairs, where the CPU has AVX512_BF16 and
//   the active SIMD path is avx512 (forgegrad.set_simd / FORGEGRAD_SIMD lower it to the other path). A bfloat16
//   product is exact in float32, so each step is an FMA of the widened values, except that the instruction treats
//   denormal inputs as zero and flushes denormal results (DAZ / FTZ). Each output is one chain: bias (or 0), then
//   the k-pairs in order; the K blocking is a function of K alone and threads only split tiles, so the bits are
//   the same at any thread count.
// - "float32": A and B widened exactly to float32 and multiplied by sgemm (bias as its col_bias): today's float32
//   kernels, whose bits differ from the avx512_bf16 path's by rounding (float32 accumulation either way; agreement
//   within bfloat16 tolerance, not bits).
#pragma once
#include <cstdint>

namespace fg {

namespace avx512 {
// The vdpbf16ps kernel; call only where cpu_has_avx512_bf16() (sbgemm checks).
void sbgemm_avx512bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
                       const uint16_t* B, int64_t ldb, const float* bias, float* C, int64_t ldc);
}  // namespace avx512

bool cpu_has_avx512_bf16();
// "avx512_bf16" or "float32": the path sbgemm takes now.
const char* sbgemm_path();
// allow == false keeps sbgemm on the float32 path even where vdpbf16ps is available (A/B benchmarks, tests of
// the fallback); true (the default) lets it take the best path the active SIMD path allows.
void set_sbgemm_native(bool allow);

void sbgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
            const uint16_t* B, int64_t ldb, const float* bias, float* C, int64_t ldc);

}  // namespace fg
