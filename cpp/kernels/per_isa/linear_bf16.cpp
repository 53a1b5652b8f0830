// Weight-only bfloat16 Linear: y = x W^T + bias with x float32 and W bfloat16 (the upper half of a
// float32), widened to float32 as it is read. Most published checkpoints store their weights in
// bfloat16: kept that way a model takes half the memory, and a decode step (a few rows against every
// weight, bound by reading them) streams half the bytes. The widening is exact, so the products are
// float32 products of the checkpoint's own weights: no quantization error.
//
// Up to kBf16DotRows rows (decode): dot products along K with sgemm's skinny dot form's arithmetic
// (gemm_internal.h's dot_accumulate, which both run: the same FMA order and lane sum), each weight
// widened in registers as it is loaded. More rows (a prompt): column blocks of W widened into float32 scratch
// and multiplied by sgemm_prepacked_b. Either way every output is computed exactly as sgemm computes
// x times the widened weight, so the results are the same bits as a float32 Linear holding the
// widened weight, at any thread count. Declared in forgegrad/gemm.h.
#include <cstring>

#include "forgegrad/gemm.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"
#include "gemm_internal.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// W (simd.h's lane count) bfloat16 values widened to float32; _n: the first n (< W), the rest zero.
#if defined(__AVX512F__)
inline vf vload_bf16(const uint16_t* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
inline vf vload_bf16_n(const uint16_t* p, int n) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << n) - 1u), p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
#elif defined(__AVX2__)
inline vf vload_bf16(const uint16_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
inline vf vload_bf16_n(const uint16_t* p, int n) {
  uint16_t tmp[8] = {0};
  std::memcpy(tmp, p, sizeof(uint16_t) * static_cast<size_t>(n));
  return vload_bf16(tmp);
}
#else
inline vf vload_bf16(const uint16_t* p) { return bf16_to_float(*p); }
inline vf vload_bf16_n(const uint16_t* p, int n) { return n > 0 ? bf16_to_float(*p) : 0.0f; }
#endif

// sgemm takes its skinny dot form up to 8 rows of x; the same bound keeps the bits the same.
constexpr int64_t kBf16DotRows = 8;

// RI rows of x (length K, contiguous) times RJ weight rows (w + j * ldw): gemm_skinny's dot_block (the
// same dot_accumulate) with alpha 1 and the bias as its beta = 1 term (one rounding: acc + bias).
template <int RI, int RJ>
void dot_block(int64_t K, const float* __restrict a, const uint16_t* __restrict w, int64_t ldw, const float* bias,
               float* c, int64_t ldc) {
  vf acc[RI][RJ];
  gemm_detail::dot_accumulate<RI, RJ>(
      K, a, w, ldw, [](const uint16_t* p) { return vload_bf16(p); },
      [](const uint16_t* p, int n) { return vload_bf16_n(p, n); }, acc);
  for (int i = 0; i < RI; ++i)
    for (int j = 0; j < RJ; ++j) {
      const float r = vreduce_add(acc[i][j]);
      c[i * ldc + j] = bias ? r + bias[j] : r;
    }
}

// Outputs [j0, j1) of RI rows. The weight is walked as S long sequential runs, as gemm_skinny.cpp's
// dot_cols does (the hardware prefetchers follow long streams: a 151936 x 896 LM head in 10.8 ms
// against 21.9 with S adjacent rows a block, Zen 4); which rows share a block never changes how an
// output is computed.
template <int RI>
void dot_cols(int64_t j0, int64_t j1, int64_t K, const float* a, const uint16_t* w, const float* bias, float* c,
              int64_t ldc) {
  constexpr int S = gemm_detail::dot_cols_per_block<RI>();
  const auto bias_at = [&](int64_t j) { return bias ? bias + j : nullptr; };
#if defined(__AVX2__)
  const int64_t run = (j1 - j0) / S;
  for (int64_t i = 0; i < run; ++i) {
    const int64_t j = j0 + i;
    // a block of S outputs run apart: gather their biases and results through small arrays
    float b[S], out[RI * S];
    for (int s = 0; s < S; ++s) b[s] = bias ? bias[j + s * run] : 0.0f;
    dot_block<RI, S>(K, a, w + j * K, run * K, bias ? b : nullptr, out, S);
    for (int r = 0; r < RI; ++r)
      for (int s = 0; s < S; ++s) c[r * ldc + j + s * run] = out[r * S + s];
  }
  int64_t j = j0 + S * run;
#else
  int64_t j = j0;
  for (; j + S <= j1; j += S) dot_block<RI, S>(K, a, w + j * K, K, bias_at(j), c + j, ldc);
#endif
  for (; j < j1; ++j) dot_block<RI, 1>(K, a, w + j * K, K, bias_at(j), c + j, ldc);
}

void widen_rows(const uint16_t* w, int64_t rows, int64_t K, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* src = w + r * K;
    float* dst = out + r * K;
    int64_t k = 0;
    for (; k + W <= K; k += W) vstore(dst + k, vload_bf16(src + k));
    for (; k < K; ++k) dst[k] = bf16_to_float(src[k]);
  }
}

}  // namespace

void linear_bf16w(const float* x, int64_t M, int64_t K, const uint16_t* w, const float* bias, float* y, int64_t N) {
  if (M <= 0 || N <= 0) return;
  if (M <= kBf16DotRows) {
    // outputs per thread chunk: ~512k multiply-adds, as sgemm_skinny's
    const int64_t min_work = int64_t(1) << 19;
    const int64_t grain = (min_work + M * K - 1) / (M * K > 0 ? M * K : 1);
    parallel_for(N, grain, [&](int64_t j0, int64_t j1) {
      // rows in groups of up to 4, so that W streams from memory once per group (each output's
      // arithmetic is the same whichever rows share a pass)
      int64_t i = 0;
      for (; i + 4 <= M; i += 4) dot_cols<4>(j0, j1, K, x + i * K, w, bias, y + i * N, N);
      const float* xi = x + i * K;
      float* yi = y + i * N;
      if (M - i == 3) dot_cols<3>(j0, j1, K, xi, w, bias, yi, N);
      if (M - i == 2) dot_cols<2>(j0, j1, K, xi, w, bias, yi, N);
      if (M - i == 1) dot_cols<1>(j0, j1, K, xi, w, bias, yi, N);
    });
    return;
  }
  // Column blocks of up to 4 MB of widened weight and at most 512 rows (sgemm packs B 512 columns at a
  // time and packs x again for each such block, so narrower blocks would pack x more often: at 128 rows of x,
  // blocks of 512 KB ran Qwen2.5-0.5B's 896 -> 4864 projection in 12.9 ms, these in 11.1, float32 on a
  // prepacked weight 10.5; Zen 4). At least 32 rows, so no block takes sgemm's thin-B path that a
  // full-width call would not. Widened in turn, each multiplied by sgemm, whose threads split the block's
  // rows of x; the last block takes the remainder.
  int64_t nb = (int64_t(1) << 20) / (K > 0 ? K : 1);
  if (nb > 512) nb = 512;
  if (nb < 32) nb = 32;
  const int64_t blocks = N / nb > 0 ? N / nb : 1;
  AlignedBuffer wide(static_cast<size_t>((N / blocks + 1) * (K > 0 ? K : 1)));
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t n0 = N * b / blocks, n1 = N * (b + 1) / blocks;
    widen_rows(w + n0 * K, n1 - n0, K, wide.data());
    sgemm_prepacked_b(false, true, M, n1 - n0, K, 1.0f, x, K, wide.data(), K, nullptr, bias ? 1.0f : 0.0f, y + n0, N,
                      -1, 0.0f, bias ? bias + n0 : nullptr);
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
