// The quantize helpers of dynamic int8 quantization (declared in forgegrad/qgemm.h), compiled per
// ISA: the activation range (qminmax_f32) and the rounding to u8 (qquantize_u8). The GEMM is in
// qgemm.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "forgegrad/parallel.h"
#include "forgegrad/qgemm.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {

void qminmax_f32(const float* x, int64_t n, float* mn, float* mx) {
  vf lo = vset1(x[0]), hi = lo, bad = vzero();  // bad: x - x is NaN for NaN and +-inf
  int64_t i = 0;
  // four independent chains first (one chain of dependent adds ran at a third of the load rate); min,
  // max and "any NaN" do not depend on the order (up to the sign of a zero minimum, and the range
  // is widened to include 0 anyway)
  {
    vf lo1 = lo, hi1 = hi, bad1 = bad, lo2 = lo, hi2 = hi, bad2 = bad, lo3 = lo, hi3 = hi, bad3 = bad;
    for (; i + 4 * W <= n; i += 4 * W) {
      const vf v0 = vload(x + i), v1 = vload(x + i + W), v2 = vload(x + i + 2 * W), v3 = vload(x + i + 3 * W);
      lo = vmin(lo, v0);
      hi = vmax(hi, v0);
      bad = vadd(bad, vsub(v0, v0));
      lo1 = vmin(lo1, v1);
      hi1 = vmax(hi1, v1);
      bad1 = vadd(bad1, vsub(v1, v1));
      lo2 = vmin(lo2, v2);
      hi2 = vmax(hi2, v2);
      bad2 = vadd(bad2, vsub(v2, v2));
      lo3 = vmin(lo3, v3);
      hi3 = vmax(hi3, v3);
      bad3 = vadd(bad3, vsub(v3, v3));
    }
    lo = vmin(vmin(lo, lo1), vmin(lo2, lo3));
    hi = vmax(vmax(hi, hi1), vmax(hi2, hi3));
    bad = vadd(vadd(bad, bad1), vadd(bad2, bad3));
  }
  for (; i + W <= n; i += W) {
    const vf v = vload(x + i);
    lo = vmin(lo, v);
    hi = vmax(hi, v);
    bad = vadd(bad, vsub(v, v));
  }
  float lv[W], hv[W], bv[W];  // the lanes (a scalar build has one)
  vstore(lv, lo);
  vstore(hv, hi);
  vstore(bv, bad);
  float l = x[0], h = x[0], b = 0.0f;
  for (int j = 0; j < W; ++j) {
    l = std::min(l, lv[j]);
    h = std::max(h, hv[j]);
    b = b + bv[j];
  }
  for (; i < n; ++i) {
    l = std::min(l, x[i]);
    h = std::max(h, x[i]);
    b = b + (x[i] - x[i]);
  }
  *mn = b == 0.0f ? l : NAN;
  *mx = b == 0.0f ? h : NAN;
}

void qquantize_u8(const float* x, int64_t M, int64_t K, int64_t ldx, float inv_scale, int32_t zp, int32_t qmin,
                  int32_t qmax, uint8_t* out, int64_t ldo, int64_t pad_to) {
  const float fz = static_cast<float>(zp), flo = static_cast<float>(qmin), fhi = static_cast<float>(qmax);
  parallel_for_work(M, K, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const float* xr = x + m * ldx;
      uint8_t* o = out + m * ldo;
      int64_t k = 0;
#if defined(__AVX512F__)
      const vf vinv = vset1(inv_scale), vz = vset1(fz), vlo = vset1(flo), vhi = vset1(fhi);
      for (; k + 16 <= K; k += 16) {
        vf t = vadd(vround(vmul(vload(xr + k), vinv)), vz);
        t = vmax(vmin(t, vhi), vlo);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + k), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t)));
      }
#elif defined(__AVX2__)
      // the same operations 8 lanes at a time; the values are in [qmin, qmax] within [0, 255], so the
      // packs do not saturate, and the permute undoes their in-lane order
      const vf vinv = vset1(inv_scale), vz = vset1(fz), vlo = vset1(flo), vhi = vset1(fhi);
      const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
      auto q8 = [&](int64_t i) { return _mm256_cvtps_epi32(vmax(vmin(vadd(vround(vmul(vload(xr + i), vinv)), vz), vhi), vlo)); };
      for (; k + 32 <= K; k += 32) {
        const __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(q8(k), q8(k + 8)), _mm256_packs_epi32(q8(k + 16), q8(k + 24)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k), _mm256_permutevar8x32_epi32(b, order));
      }
      for (; k + 8 <= K; k += 8) {
        const __m256i w = _mm256_packs_epi32(q8(k), q8(k));
        const __m256i b = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w, w), order);  // bytes 0-7: lanes 0-7
        _mm_storel_epi64(reinterpret_cast<__m128i*>(o + k), _mm256_castsi256_si128(b));
      }
#endif
      for (; k < K; ++k) {
        float t = std::nearbyint(xr[k] * inv_scale) + fz;
        t = t < fhi ? t : fhi;  // the operand order of vmin/vmax: NaN -> qmax
        t = t > flo ? t : flo;
        o[k] = static_cast<uint8_t>(static_cast<int>(t));
      }
      if (pad_to > K) std::memset(o + K, 0, static_cast<size_t>(pad_to - K));
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
