// The SIMD vocabulary. Kernels in cpp/kernels/per_isa/ are written once against these names and
// compiled three times (CMakeLists.txt); the flags of each compilation pick one mapping below:
//   AVX-512F  -> vf = __m512 (16 lanes)    AVX2+FMA -> vf = __m256 (8 lanes)    else -> 1 lane.
// Everything here lives in namespace fg::FG_ISA_NS so that the three copies never collide at link
// time (an inline function compiled with AVX-512 must not be picked for the AVX2 path).
//
// Rules for code in cpp/kernels/per_isa/: put it inside `namespace fg { namespace FG_ISA_NS {`,
// and do not instantiate std templates on shared types there (std::vector<float>, std::sort on
// float*): the linker keeps one copy of such a function, possibly the AVX-512 one. Use raw
// buffers (fg::AlignedBuffer from memory.h) instead.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "forgegrad/hd/common.h"

#ifndef FG_ISA_NS
#error "simd.h is for cpp/kernels/per_isa/ sources, which CMake compiles with FG_ISA_NS defined"
#endif

namespace fg {
namespace FG_ISA_NS {

#if defined(__AVX512F__)
using vf = __m512;
constexpr int W = 16;
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vset1(float x) { return _mm512_set1_ps(x); }
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
// Partial vectors: the first n (< W) lanes; the others read as 0 and are not written.
inline vf vload_n(const float* p, int n) { return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p); }
inline void vstore_n(float* p, vf v, int n) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
inline vf vfmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }   // a*b + c
inline vf vfnmadd(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); } // c - a*b
inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
inline vf vsqrt(vf a) { return _mm512_sqrt_ps(a); }
inline vf vabs(vf a) { return _mm512_abs_ps(a); }
inline vf vneg(vf a) {
  return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(int(0x80000000u))));
}
inline vf vround(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n * a for integral-valued n.
inline vf vscale2(vf a, vf n) { return _mm512_scalef_ps(a, n); }
// mask ? a : b, mask = (x > y)
inline vf vselect_gt(vf x, vf y, vf a, vf b) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, y, _CMP_GT_OQ), b, a);
}
// mask ? a : b, mask = (x <= y). A NaN in x or y gives b: torch's `x <= 0 ? neg : pos` sends NaN to
// pos, which the complement of vselect_gt (vselect_gt(x, y, b, a)) would not.
inline vf vselect_le(vf x, vf y, vf a, vf b) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, y, _CMP_LE_OQ), b, a);
}
// whether some lane has x > y (vselect_gt's compare): a branch that skips work no lane selects
inline bool vany_gt(vf x, vf y) { return _mm512_cmp_ps_mask(x, y, _CMP_GT_OQ) != 0; }
// Horizontal reductions by in-register shuffles: GCC 12's expansion of _mm512_reduce_*_ps and of
// the 512->256 extract intrinsics triggers false -Wmaybe-uninitialized warnings.
inline float vreduce_add(vf a) {
  vf t = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(1, 0, 3, 2)));
  t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
  t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
  t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_cvtss_f32(t);
}
inline float vreduce_max(vf a) {
  vf t = _mm512_max_ps(a, _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(1, 0, 3, 2)));
  t = _mm512_max_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
  t = _mm512_max_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
  t = _mm512_max_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_cvtss_f32(t);
}
#elif defined(__AVX2__) && defined(__FMA__)
using vf = __m256;
constexpr int W = 8;
inline __m256i tail_mask8(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vset1(float x) { return _mm256_set1_ps(x); }
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
inline vf vload_n(const float* p, int n) { return _mm256_maskload_ps(p, tail_mask8(n)); }
inline void vstore_n(float* p, vf v, int n) { _mm256_maskstore_ps(p, tail_mask8(n), v); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
inline vf vfmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf vfnmadd(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
inline vf vsqrt(vf a) { return _mm256_sqrt_ps(a); }
inline vf vabs(vf a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
inline vf vneg(vf a) { return _mm256_xor_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(int(0x80000000u)))); }
inline vf vround(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n * a in two exact power-of-two steps: one 2^n built in the exponent field would overflow at n = 128
// (vexp of 88.38..88.72, whose results are finite floats) where AVX-512's scalef and ldexp do not.
inline vf vscale2(vf a, vf n) {
  const __m256i ni = _mm256_cvtps_epi32(n), half = _mm256_srai_epi32(ni, 1), bias = _mm256_set1_epi32(127);
  const __m256i e1 = _mm256_slli_epi32(_mm256_add_epi32(half, bias), 23);
  const __m256i e2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), bias), 23);
  return _mm256_mul_ps(_mm256_mul_ps(a, _mm256_castsi256_ps(e1)), _mm256_castsi256_ps(e2));
}
inline vf vselect_gt(vf x, vf y, vf a, vf b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, y, _CMP_GT_OQ)); }
inline vf vselect_le(vf x, vf y, vf a, vf b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, y, _CMP_LE_OQ)); }
inline bool vany_gt(vf x, vf y) { return _mm256_movemask_ps(_mm256_cmp_ps(x, y, _CMP_GT_OQ)) != 0; }
inline float vreduce_add(vf a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float vreduce_max(vf a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#else
// Portable path: one lane. The compiler may still auto-vectorise loops with SSE2. Its math is the
// shared host/device code of forgegrad/hd/ (kernels test FG_SIMD_PORTABLE to call it directly).
#define FG_SIMD_PORTABLE 1
using vf = float;
constexpr int W = 1;
inline vf vzero() { return 0.0f; }
inline vf vset1(float x) { return x; }
inline vf vload(const float* p) { return *p; }
inline void vstore(float* p, vf v) { *p = v; }
inline vf vload_n(const float* p, int n) { return n > 0 ? *p : 0.0f; }
inline void vstore_n(float* p, vf v, int n) {
  if (n > 0) *p = v;
}
inline vf vadd(vf a, vf b) { return a + b; }
inline vf vsub(vf a, vf b) { return a - b; }
inline vf vmul(vf a, vf b) { return a * b; }
inline vf vdiv(vf a, vf b) { return a / b; }
// Plain multiply-add: without -mfma, std::fma would be a slow library call.
inline vf vfmadd(vf a, vf b, vf c) { return a * b + c; }
inline vf vfnmadd(vf a, vf b, vf c) { return c - a * b; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vf vsqrt(vf a) { return std::sqrt(a); }
inline vf vabs(vf a) { return std::fabs(a); }
inline vf vneg(vf a) { return -a; }
inline vf vround(vf a) { return std::nearbyint(a); }
inline vf vscale2(vf a, vf n) { return n == n ? std::ldexp(a, static_cast<int>(n)) : a + n; }
inline vf vselect_gt(vf x, vf y, vf a, vf b) { return x > y ? a : b; }
inline vf vselect_le(vf x, vf y, vf a, vf b) { return x <= y ? a : b; }
inline bool vany_gt(vf x, vf y) { return x > y; }
inline float vreduce_add(vf a) { return a; }
inline float vreduce_max(vf a) { return a; }
#endif

// The first n (1 <= n <= W) lanes: a whole vector when n == W (the common case in loops over a
// row whose length need not be a multiple of W), a masked one otherwise.
inline vf vload_upto(const float* p, int n) { return n == W ? vload(p) : vload_n(p, n); }
inline void vstore_upto(float* p, vf v, int n) {
  if (n == W)
    vstore(p, v);
  else
    vstore_n(p, v, n);
}

#if defined(FG_SIMD_PORTABLE)
// One lane: the shared scalar definitions (forgegrad/hd/common.h), which the vector versions below
// implement operation for operation.
inline vf vexp(vf x) { return hd::exp(x); }
inline vf vsigmoid(vf x) { return hd::sigmoid(x); }
inline vf vtanh(vf x) { return hd::tanh(x); }
inline vf verf(vf x) { return hd::erf(x); }
#else
// The vector forms of hd::exp, hd::sigmoid, hd::tanh and hd::erf (forgegrad/hd/common.h): the same
// constants and the same operations in the same order.
// exp(x), relative error about 2 ulp over the float range (Cephes polynomial on [-ln2/2, ln2/2]
// after x = n*ln2 + r). Inputs are clamped to [-87.3, 88.7]; below -87.3 the result is exactly 0.
// The clamp takes x as the second operand of max/min, which x86 returns when either is NaN, so a
// NaN input gives NaN (also through vsigmoid and vtanh) instead of a finite number.
inline vf vexp(vf x) {
  // Below ln(FLT_MIN) the result would be subnormal or 0: give exactly 0 there (so exp(-inf) is 0,
  // not FLT_MIN, and a masked softmax entry is exactly 0), at most FLT_MIN = 1.2e-38 from exp(x).
  const vf lo = vset1(-87.336544f);
  const vf x_in = x;
  x = vmin(vset1(88.722839f), vmax(lo, x));
  vf n = vround(vmul(x, vset1(1.44269504088896341f)));
  vf r = vfnmadd(n, vset1(0.693359375f), x);
  r = vfnmadd(n, vset1(-2.12194440e-4f), r);
  vf p = vset1(1.9875691500e-4f);
  p = vfmadd(p, r, vset1(1.3981999507e-3f));
  p = vfmadd(p, r, vset1(8.3334519073e-3f));
  p = vfmadd(p, r, vset1(4.1665795894e-2f));
  p = vfmadd(p, r, vset1(1.6666665459e-1f));
  p = vfmadd(p, r, vset1(5.0000001201e-1f));
  vf r2 = vmul(r, r);
  p = vfmadd(p, r2, vadd(r, vset1(1.0f)));
  return vselect_gt(lo, x_in, vzero(), vscale2(p, n));
}

// 1 / (1 + exp(-x))
inline vf vsigmoid(vf x) { return vdiv(vset1(1.0f), vadd(vset1(1.0f), vexp(vneg(x)))); }

// tanh(x): an odd polynomial near 0 (where 1 - 2/(e^2x + 1) would lose relative accuracy),
// the exp form elsewhere.
inline vf vtanh(vf x) {
  vf ax = vabs(x);
  // exp form, sign restored: tanh(|x|) = 1 - 2/(exp(2|x|)+1)
  vf e = vexp(vadd(ax, ax));
  vf t_big = vsub(vset1(1.0f), vdiv(vset1(2.0f), vadd(e, vset1(1.0f))));
  // minimax-style odd series for |x| < 0.625: x + x^3 p(x^2)
  vf x2 = vmul(x, x);
  vf p = vset1(-5.70498872745e-3f);
  p = vfmadd(p, x2, vset1(2.06390887954e-2f));
  p = vfmadd(p, x2, vset1(-5.37397155531e-2f));
  p = vfmadd(p, x2, vset1(1.33314422036e-1f));
  p = vfmadd(p, x2, vset1(-3.33332819422e-1f));
  vf t_small = vfmadd(vmul(p, x2), ax, ax);
  vf t = vselect_gt(ax, vset1(0.625f), t_big, t_small);
  // copy the sign of x
  vf neg_t = vneg(t);
  return vselect_gt(vzero(), x, neg_t, t);
}

// erf(x), max error about 1 ulp (N. Juffa's erff: x*p(x^2) for |x| <= 0.9277, else
// 1 - exp(q(|x|)) with the sign of x). NaN propagates. A vector with no lane past 0.9277 (most of a
// GELU's inputs, pre-activations of a normalised input) returns the polynomial without evaluating
// the exp branch, which no lane would select: the same bits, about a third of the work.
inline vf verf(vf x) {
  vf t = vabs(x), s = vmul(x, x);
  vf p = vset1(-5.96761703e-4f);
  p = vfmadd(p, s, vset1(4.99119423e-3f));
  p = vfmadd(p, s, vset1(-2.67681349e-2f));
  p = vfmadd(p, s, vset1(1.12819925e-1f));
  p = vfmadd(p, s, vset1(-3.76125336e-1f));
  p = vfmadd(p, s, vset1(1.28379166e-1f));
  vf small = vfmadd(p, x, x);
  const vf edge = vset1(0.927734375f);
  if (!vany_gt(t, edge)) return small;
  vf r = vfmadd(vset1(-1.72853470e-5f), t, vset1(3.83197126e-4f));
  vf u = vfmadd(vset1(-3.88396438e-3f), t, vset1(2.42546219e-2f));
  r = vfmadd(r, s, u);
  r = vfmadd(r, t, vset1(-1.06777877e-1f));
  r = vfmadd(r, t, vset1(-6.34846687e-1f));
  r = vfmadd(r, t, vset1(-1.28717512e-1f));
  r = vfmadd(r, t, vneg(t));
  vf big = vsub(vset1(1.0f), vexp(r));
  big = vselect_gt(vzero(), x, vneg(big), big);
  return vselect_gt(t, edge, big, small);
}

#endif  // FG_SIMD_PORTABLE

}  // namespace FG_ISA_NS
}  // namespace fg
