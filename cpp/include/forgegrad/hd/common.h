// Shared host/device math (forgegrad::hd): the pointwise formulas of the kernels, written once as
// plain scalar code that g++ compiles for the CPU kernels and the _C.hd_math test binding, and
// nvcc compiles for the CUDA kernels (cuda/*.cu). See docs/shared_math.md.
//
// This file holds the macros and the transcendental functions. They are the scalar form of
// simd.h's vexp / vsigmoid / vtanh / verf, operation for operation: the portable (1-lane) build of
// simd.h calls them, and the AVX2 / AVX-512 paths implement the same formulas on vectors.
//
// Rules: every function is FG_HD and reads only its arguments (no globals, no std containers, no
// exceptions); host-only library calls go through the FG_HD_* wrappers below, which pick the
// CUDA device function under __CUDA_ARCH__.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FG_HD __host__ __device__ inline
#else
#define FG_HD inline
#endif

// Code in cpp/kernels/per_isa/ is compiled three times with different instruction sets. An inline
// function compiled there can be emitted out of line in each copy, and the linker keeps one, maybe
// the AVX-512 one, for every caller. An inline namespace per ISA keeps the copies apart (the same
// reason simd.h lives in fg::FG_ISA_NS); callers still write fg::hd::name.
#if defined(FG_ISA_NS) && !defined(__CUDACC__)
#define FG_HD_BEGIN \
  namespace fg {    \
  namespace hd {    \
  inline namespace FG_ISA_NS {
#define FG_HD_END \
  }               \
  }               \
  }
#else
#define FG_HD_BEGIN \
  namespace fg {    \
  namespace hd {
#define FG_HD_END \
  }               \
  }
#endif

FG_HD_BEGIN

// ---- primitives: the 1-lane meaning of simd.h's vocabulary -----------------------------------------
// a*b + c. On the host the kernels compile with -ffp-contract=off and no FMA instructions in the
// portable build, so this is a multiply and an add (as simd.h's 1-lane vfmadd); nvcc contracts it
// to one fma (its default --fmad=true), which differs by float rounding only.
FG_HD float fmadd(float a, float b, float c) { return a * b + c; }
FG_HD float fnmadd(float a, float b, float c) { return c - a * b; }  // c - a*b
// x86 max/min semantics: the second operand when either is NaN (simd.h's vmax/vmin).
FG_HD float vmax1(float a, float b) { return a > b ? a : b; }
FG_HD float vmin1(float a, float b) { return a < b ? a : b; }
FG_HD float select_gt(float x, float y, float a, float b) { return x > y ? a : b; }  // x > y ? a : b

FG_HD float fabs_(float x) {
#if defined(__CUDA_ARCH__)
  return fabsf(x);
#else
  return std::fabs(x);
#endif
}
FG_HD float sqrt_(float x) {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);  // IEEE round-to-nearest (nvcc's default -prec-sqrt=true)
#else
  return std::sqrt(x);
#endif
}
// Round to nearest, ties to even (the rounding mode every kernel runs under).
FG_HD float rint_(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return std::nearbyint(x);
#endif
}
// 2^n * a for integral-valued n; NaN n gives NaN (simd.h's 1-lane vscale2).
FG_HD float scale2(float a, float n) {
#if defined(__CUDA_ARCH__)
  return n == n ? ldexpf(a, static_cast<int>(n)) : a + n;
#else
  return n == n ? std::ldexp(a, static_cast<int>(n)) : a + n;
#endif
}

// ---- transcendental functions -------------------------------------------------------------------
// exp(x), about 2 ulp (Cephes polynomial on [-ln2/2, ln2/2] after x = n ln2 + r). Exactly 0 below
// ln(FLT_MIN) = -87.34 (so exp(-inf) is 0); clamped at 88.72 above; NaN gives NaN.
FG_HD float exp(float x) {
  const float lo = -87.336544f;
  const float x_in = x;
  x = vmin1(88.722839f, vmax1(lo, x));
  float n = rint_(x * 1.44269504088896341f);
  float r = fnmadd(n, 0.693359375f, x);
  r = fnmadd(n, -2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = fmadd(p, r, 1.3981999507e-3f);
  p = fmadd(p, r, 8.3334519073e-3f);
  p = fmadd(p, r, 4.1665795894e-2f);
  p = fmadd(p, r, 1.6666665459e-1f);
  p = fmadd(p, r, 5.0000001201e-1f);
  float r2 = r * r;
  p = fmadd(p, r2, r + 1.0f);
  return select_gt(lo, x_in, 0.0f, scale2(p, n));
}

// 1 / (1 + exp(-x))
FG_HD float sigmoid(float x) { return 1.0f / (1.0f + hd::exp(-x)); }

// tanh(x): odd polynomial for |x| <= 0.625 (where 1 - 2/(e^2x + 1) loses relative accuracy), the
// exp form elsewhere, sign restored.
FG_HD float tanh(float x) {
  float ax = fabs_(x);
  float e = hd::exp(ax + ax);
  float t_big = 1.0f - 2.0f / (e + 1.0f);
  float x2 = x * x;
  float p = -5.70498872745e-3f;
  p = fmadd(p, x2, 2.06390887954e-2f);
  p = fmadd(p, x2, -5.37397155531e-2f);
  p = fmadd(p, x2, 1.33314422036e-1f);
  p = fmadd(p, x2, -3.33332819422e-1f);
  float t_small = fmadd(p * x2, ax, ax);
  float t = select_gt(ax, 0.625f, t_big, t_small);
  return select_gt(0.0f, x, -t, t);
}

// erf(x), about 1 ulp (N. Juffa's erff: x p(x^2) for |x| <= 0.9277, else 1 - exp(q(|x|)) with the
// sign of x). NaN propagates.
FG_HD float erf(float x) {
  float t = fabs_(x), s = x * x;
  float r = fmadd(-1.72853470e-5f, t, 3.83197126e-4f);
  float u = fmadd(-3.88396438e-3f, t, 2.42546219e-2f);
  r = fmadd(r, s, u);
  r = fmadd(r, t, -1.06777877e-1f);
  r = fmadd(r, t, -6.34846687e-1f);
  r = fmadd(r, t, -1.28717512e-1f);
  r = fmadd(r, t, -t);
  float big = 1.0f - hd::exp(r);
  big = select_gt(0.0f, x, -big, big);
  float p = -5.96761703e-4f;
  p = fmadd(p, s, 4.99119423e-3f);
  p = fmadd(p, s, -2.67681349e-2f);
  p = fmadd(p, s, 1.12819925e-1f);
  p = fmadd(p, s, -3.76125336e-1f);
  p = fmadd(p, s, 1.28379166e-1f);
  float small = fmadd(p, x, x);
  return select_gt(t, 0.927734375f, big, small);
}

// Derivatives from the outputs: s (1 - s) as s - s*s, and 1 - t^2 (simd.h kernels' dsig / dtanh).
FG_HD float dsigmoid_from_y(float s) { return fnmadd(s, s, s); }
FG_HD float dtanh_from_y(float t) { return fnmadd(t, t, 1.0f); }

FG_HD_END
