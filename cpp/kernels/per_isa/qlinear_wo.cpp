// Weight-only int8 Linear: y = x W^T * scale + bias with x float32 and W int8 (per output channel
// scale), the int8 weights converted to float inside the kernel as they stream in. For the decoder
// case (a few rows, large weights) the product is bound by reading W, and int8 reads a quarter of
// the bytes of float32. Declared in forgegrad/qgemm.h.
//
// Each output is one dot product over K in a fixed order (vector lanes, then the lane sum), computed
// by whichever thread owns its column block: the same bits at any thread count.
#include <cstring>

#include "forgegrad/parallel.h"
#include "forgegrad/qgemm.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// W (= simd.h's lane count) int8 weights as floats; _n: the first n (< W), the rest zero.
#if defined(__AVX512F__)
inline vf vload_s8(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline vf vload_s8_n(const int8_t* p, int n) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << n) - 1u), p)));
}
#elif defined(__AVX2__)
inline vf vload_s8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline vf vload_s8_n(const int8_t* p, int n) {
  int8_t tmp[8] = {0};
  std::memcpy(tmp, p, static_cast<size_t>(n));
  return vload_s8(tmp);
}
#else
inline vf vload_s8(const int8_t* p) { return static_cast<float>(*p); }
inline vf vload_s8_n(const int8_t* p, int n) { return n > 0 ? static_cast<float>(*p) : 0.0f; }
#endif

constexpr int kWoCols = 4;  // weight rows (outputs) per pass: four independent FMA chains

// y[m][n0 + j] for j < cols (<= kWoCols): four dot products over K sharing each load of x.
// Weight row j of the pass is w + j * ldw.
inline void dots(const float* xr, int64_t K, const int8_t* w, int64_t ldw, int cols, float* out) {
  const int8_t* w0 = w;
  const int8_t* w1 = w + (cols > 1 ? ldw : 0);  // a missing column re-reads column 0 (discarded)
  const int8_t* w2 = w + (cols > 2 ? 2 * ldw : 0);
  const int8_t* w3 = w + (cols > 3 ? 3 * ldw : 0);
  vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
  int64_t k = 0;
  for (; k + W <= K; k += W) {
    const vf xv = vload(xr + k);
    a0 = vfmadd(xv, vload_s8(w0 + k), a0);
    a1 = vfmadd(xv, vload_s8(w1 + k), a1);
    a2 = vfmadd(xv, vload_s8(w2 + k), a2);
    a3 = vfmadd(xv, vload_s8(w3 + k), a3);
  }
  if (k < K) {
    const int t = static_cast<int>(K - k);
    const vf xv = vload_n(xr + k, t);
    a0 = vfmadd(xv, vload_s8_n(w0 + k, t), a0);
    a1 = vfmadd(xv, vload_s8_n(w1 + k, t), a1);
    a2 = vfmadd(xv, vload_s8_n(w2 + k, t), a2);
    a3 = vfmadd(xv, vload_s8_n(w3 + k, t), a3);
  }
  const float r[kWoCols] = {vreduce_add(a0), vreduce_add(a1), vreduce_add(a2), vreduce_add(a3)};
  for (int j = 0; j < cols; ++j) out[j] = r[j];
}

}  // namespace

void qlinear_weight_only(const float* x, int64_t M, int64_t K, const int8_t* w, const float* scale, const float* bias,
                         float* y, int64_t N) {
  // Outputs n, n + step, ..., n + (cols - 1) * step in one pass (the same arithmetic per output
  // whichever outputs share the pass).
  auto pass = [&](int64_t n, int64_t step, int cols) {
    for (int64_t m = 0; m < M; ++m) {
      float d[kWoCols];
      dots(x + m * K, K, w + n * K, step * K, cols, d);
      for (int j = 0; j < cols; ++j) {
        const int64_t o = n + j * step;
        float v = d[j] * scale[o];
        if (bias) v = v + bias[o];
        y[m * N + o] = v;
      }
    }
  };
  const int64_t nblocks = (N + kWoCols - 1) / kWoCols;
  parallel_for_work(nblocks, M * K * kWoCols, [&](int64_t b0, int64_t b1) {
#if defined(__AVX2__)
    // AVX2 and AVX-512 builds: the outputs [n0, n1) are cut into kWoCols equal runs and each pass takes the i-th
    // row of every run, so the weight streams in as kWoCols long sequential reads instead of
    // kWoCols adjacent rows (768 bytes each for a 768-wide layer: new short streams every 3 KB,
    // which the hardware prefetchers keep missing the start of). As gemm_skinny.cpp's dot_cols;
    // same bits as the adjacent order.
    const int64_t n0 = b0 * kWoCols, n1 = b1 * kWoCols < N ? b1 * kWoCols : N;
    const int64_t run = (n1 - n0) / kWoCols;
    for (int64_t i = 0; i < run; ++i) pass(n0 + i, run, kWoCols);
    for (int64_t n = n0 + kWoCols * run; n < n1; ++n) pass(n, 1, 1);
#else
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = b * kWoCols;
      pass(n, 1, static_cast<int>(N - n < kWoCols ? N - n : kWoCols));
    }
#endif
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
