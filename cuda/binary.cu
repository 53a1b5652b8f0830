// Elementwise arithmetic with numpy broadcasting: one grid-stride kernel for every pointwise op
// (binary, unary and the gradient formulas), one for comparisons (bool out) and one for where.
// Each thread maps its output index to each input's offset through the broadcast strides (0 on a
// stretched dimension), so no input is ever materialised at the output's shape.
#include <cmath>

#include "common.cuh"
#include "forgegrad/cuda_nn.h"

namespace fg::cuda::nn {
namespace {

constexpr int kThreads = 256;

// Offsets of output element i in each of the first `count` inputs.
template <int count>
__device__ __forceinline__ void offsets(const Broadcast& geo, int64_t i, int64_t off[count]) {
#pragma unroll
  for (int k = 0; k < count; ++k) off[k] = 0;
  for (int d = geo.ndim - 1; d >= 0; --d) {
    int64_t s = geo.shape[d];
    int64_t c = i % s;
    i /= s;
#pragma unroll
    for (int k = 0; k < count; ++k) off[k] += c * geo.stride[k][d];
  }
}

__device__ __forceinline__ float load(const float* p, int64_t off, float scalar) { return p ? p[off] : scalar; }

// -log(sigmoid(x)) = log(1 + exp(-|x|)) + max(-x, 0), without overflow
__device__ __forceinline__ float log_sigmoid_neg(float x) { return log1pf(expf(-fabsf(x))) + fmaxf(-x, 0.f); }

constexpr float kLn2 = 0.693147180559945309f, kLn10 = 2.302585092994045684f, kPi = 3.14159265358979324f;
constexpr float kTwoOverSqrtPi = 1.128379167095512574f, kSqrtPiOverTwo = 0.886226925452758014f;

__device__ __forceinline__ float sign_of(float x) { return x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f); }  // NaN -> 0
// torch's div(a, b, rounding_mode="floor") as forgegrad's CPU gradient computes it: floor(a / b), and where a or
// b is infinite (or a / b is not finite) the fmod-based floor division (numpy.floor_divide): NaN for an
// infinite a, -1 for a finite nonzero a over an infinite b of the other sign.
__device__ __forceinline__ float floor_quotient(float a, float b) {
  float q = floorf(a / b);
  if (fabsf(q) < INFINITY && fabsf(b) < INFINITY) return q;
  if (b == 0.f) return a / b;
  float mod = fmodf(a, b);
  float div = (a - mod) / b;
  if (mod != 0.f && ((b < 0.f) != (mod < 0.f))) div -= 1.f;
  if (div == 0.f) return copysignf(0.f, a / b);
  float fl = floorf(div);
  return div - fl > 0.5f ? fl + 1.f : fl;
}
// numpy's maximum / minimum: NaN propagates (fmaxf / fminf would drop it)
__device__ __forceinline__ float max_nan(float x, float y) { return (x != x || y != y) ? x + y : fmaxf(x, y); }
__device__ __forceinline__ float min_nan(float x, float y) { return (x != x || y != y) ? x + y : fminf(x, y); }
__device__ __forceinline__ float relu6_nan(float x) { return min_nan(max_nan(x, 0.f), 6.f); }
// sigmoid as 0.5 (1 + tanh(x / 2)): no overflow, the CPU Functions' form
__device__ __forceinline__ float sigmoid_tanh(float x) { return 0.5f * (1.f + tanhf(0.5f * x)); }

// The ops appended to Pointwise after the BCE group: math, their gradients and activations (cuda_nn.h).
__device__ float apply_more(Pointwise op, float a, float b, float c, float d, float alpha) {
  switch (op) {
    case Pointwise::Log1p: return log1pf(a);
    case Pointwise::Expm1: return expm1f(a);
    case Pointwise::Exp2: return exp2f(a);
    case Pointwise::Log2: return log2f(a);
    case Pointwise::Log10: return log10f(a);
    case Pointwise::Square: return a * a;
    case Pointwise::Reciprocal: return 1.f / a;
    case Pointwise::Rsqrt: return 1.f / sqrtf(a);  // -0.0 -> -inf, as 1 / sqrt(-0.0)
    case Pointwise::Tan: return tanf(a);
    case Pointwise::Sinh: return sinhf(a);
    case Pointwise::Cosh: return coshf(a);
    case Pointwise::Asin: return asinf(a);
    case Pointwise::Acos: return acosf(a);
    case Pointwise::Atan: return atanf(a);
    case Pointwise::Asinh: return asinhf(a);
    case Pointwise::Acosh: return acoshf(a);
    case Pointwise::Atanh: return atanhf(a);
    case Pointwise::Erf: return erff(a);
    case Pointwise::Erfc: return erfcf(a);
    case Pointwise::Erfinv: return erfinvf(a);
    case Pointwise::Floor: return floorf(a);
    case Pointwise::Ceil: return ceilf(a);
    case Pointwise::Trunc: return truncf(a);
    case Pointwise::Round: return rintf(a);  // round to nearest, ties to even (torch.round)
    case Pointwise::Frac: return a - truncf(a);
    case Pointwise::Sign: return sign_of(a);
    case Pointwise::Deg2rad: return a * 0.0174532925199432958f;  // float(pi / 180), as the CPU's
    case Pointwise::Rad2deg: return a * 57.2957795130823209f;
    case Pointwise::Sinc: {
      if (a == 0.f) return 1.f;
      float px = a * kPi;
      return sinf(px) / px;
    }
    case Pointwise::Logit: {
      float p = a;
      if (b == b) {  // torch's order: below eps gives eps, then above 1 - eps gives 1 - eps
        float lo = b, hi = 1.f - b;
        p = p < lo ? lo : (p > hi ? hi : p);
      }
      return logf(p / (1.f - p));
    }
    case Pointwise::Signbit: return copysignf(1.f, a) < 0.f ? 1.f : 0.f;
    case Pointwise::Log1pGrad: return a / (b + 1.f);
    case Pointwise::Expm1Grad: return a * (b + 1.f);
    case Pointwise::Exp2Grad: return a * b * kLn2;
    case Pointwise::Log2Grad: return a / (b * kLn2);
    case Pointwise::Log10Grad: return a / (b * kLn10);
    case Pointwise::ReciprocalGrad: return -a * b * b;
    case Pointwise::RsqrtGrad: return a * b * b * b * -0.5f;
    case Pointwise::TanGrad: return a * (b * b + 1.f);
    case Pointwise::SinhGrad: return a * coshf(b);
    case Pointwise::CoshGrad: return a * sinhf(b);
    case Pointwise::AsinGrad: return a * (1.f / sqrtf(1.f - b * b));
    case Pointwise::AcosGrad: return -a * (1.f / sqrtf(1.f - b * b));
    case Pointwise::AtanGrad: return a / (b * b + 1.f);
    case Pointwise::AsinhGrad: return a * (1.f / sqrtf(b * b + 1.f));
    case Pointwise::AcoshGrad: return a * (1.f / sqrtf(b * b - 1.f));
    case Pointwise::AtanhGrad: return a / (1.f - b * b);
    case Pointwise::ErfGrad: return a * expf(-(b * b)) * kTwoOverSqrtPi;
    case Pointwise::ErfcGrad: return -(a * expf(-(b * b)) * kTwoOverSqrtPi);
    case Pointwise::ErfinvGrad: return a * expf(b * b) * kSqrtPiOverTwo;
    case Pointwise::SincGrad: {
      if (b * b * kPi == 0.f) return 0.f;  // torch's mask: where its denominator pi x^2 is 0
      float px = b * kPi;
      return a * ((cosf(px) * px - sinf(px)) / (b * b * kPi));
    }
    case Pointwise::LogitGrad: {
      float dx = a / (b * (1.f - b));
      if (c != c) return (b < 0.f || b > 1.f) ? NAN : dx;
      return (b < c || b > 1.f - c) ? 0.f : dx;
    }
    case Pointwise::Fmax: return fmaxf(a, b);
    case Pointwise::Fmin: return fminf(a, b);
    case Pointwise::Atan2: return atan2f(a, b);
    case Pointwise::Hypot: return hypotf(a, b);
    case Pointwise::Copysign: return copysignf(a, b);
    case Pointwise::Remainder: {  // fmod moved to the divisor's sign (numpy.remainder)
      float r = fmodf(a, b);
      if (r != 0.f && ((r < 0.f) != (b < 0.f))) r += b;
      return r == 0.f ? copysignf(0.f, b) : r;
    }
    case Pointwise::Fmod: return fmodf(a, b);
    case Pointwise::Logaddexp: {
      if (a == b) return a + kLn2;  // also +-inf twice (inf - inf would be NaN)
      float m = max_nan(a, b);
      return m + log1pf(expf(-fabsf(a - b)));
    }
    case Pointwise::Logaddexp2: {
      if (a == b) return a + 1.f;
      float m = max_nan(a, b);
      return m + log1pf(exp2f(-fabsf(a - b))) / kLn2;
    }
    case Pointwise::Xlogy: return (a == 0.f && b == b) ? 0.f : a * logf(b);
    case Pointwise::Lerp: return fabsf(c) < 0.5f ? a + c * (b - a) : b - (b - a) * (1.f - c);
    case Pointwise::MulDiv: return a * b / c;
    case Pointwise::MaximumGrad: return b == c ? a * 0.5f : (b < c ? 0.f : a);
    case Pointwise::MinimumGrad: return b == c ? a * 0.5f : (b > c ? 0.f : a);
    case Pointwise::FmaxGrad: return (b >= c || c != c) ? a : 0.f;
    case Pointwise::FminGrad: return (b <= c || c != c) ? a : 0.f;
    case Pointwise::Atan2Grad: return (b == 0.f && c == 0.f) ? 0.f : a * b / (b * b + c * c) * alpha;
    // torch's result / input, 0 at a zero input (NaN at an infinite or NaN input)
    case Pointwise::CopysignGrad: return a * (b == 0.f ? 0.f : c / b);
    case Pointwise::RemainderGradB: return -a * floor_quotient(b, c);
    case Pointwise::FmodGradB: return -a * truncf(b / c);
    case Pointwise::LogaddexpGrad: return a / (expf(c - b) + 1.f);
    case Pointwise::Logaddexp2Grad: return a / (expf((c - b) * kLn2) + 1.f);
    case Pointwise::XlogyGradA: return (b == 0.f && c <= 0.f) ? 0.f : a * logf(c);
    case Pointwise::EluFamily: return a > 0.f ? a * b : expm1f(min_nan(a, 0.f) * d) * c;
    case Pointwise::EluFamilyGrad: return b <= 0.f ? a * (expf(fminf(b, 0.f) * alpha) * d) : a * c;
    case Pointwise::EluGradOut: return b <= 0.f ? a * (b + alpha) : a;
    case Pointwise::Softplus: {
      float bx = a * b;
      return bx > c ? a : (max_nan(bx, 0.f) + log1pf(expf(-fabsf(bx)))) / b;
    }
    case Pointwise::SoftplusGrad: {
      float bx = b * c;
      return bx > d ? a : a * sigmoid_tanh(bx);
    }
    case Pointwise::HardtanhGrad: return (b > c && b < d) ? a : 0.f;
    case Pointwise::Hardsigmoid: return relu6_nan(a + 3.f) / 6.f;
    case Pointwise::HardsigmoidGrad: return (b > -3.f && b < 3.f) ? a * (1.f / 6.f) : 0.f;
    case Pointwise::Hardswish: return a * relu6_nan(a + 3.f) / 6.f;
    case Pointwise::HardswishGrad: return a * (b <= -3.f ? 0.f : (b < 3.f ? b / 3.f + 0.5f : 1.f));
    case Pointwise::Softshrink: return a != a ? a : (a > b ? a - b : (a < -b ? a + b : 0.f));
    case Pointwise::Hardshrink: return (a >= -b && a <= b) ? 0.f : a;
    case Pointwise::ShrinkGrad: return (b < -c || b > c) ? a : 0.f;
    case Pointwise::Threshold: return a <= b ? c : a;
    case Pointwise::ThresholdGrad: return b <= c ? 0.f : a;
    case Pointwise::Mish: return a * tanhf(log1pf(expf(a)));  // exp overflow: log1p(inf) = inf, tanh = 1
    case Pointwise::MishGrad: {
      float t = tanhf(log1pf(expf(b)));
      return a * (t + b * sigmoid_tanh(b) * (1.f - t * t));
    }
    case Pointwise::Logsigmoid: return min_nan(a, 0.f) - log1pf(expf(-fabsf(a)));
    case Pointwise::LogsigmoidGrad: {
      float z = expf(-fabsf(b));
      bool neg = b < 0.f;
      return a * ((neg ? 1.f : 0.f) - (neg ? 1.f : -1.f) * (z / (1.f + z)));
    }
    case Pointwise::Softsign: return a / (fabsf(a) + 1.f);
    case Pointwise::SoftsignGrad: {
      float u = fabsf(b) + 1.f;
      return a / u - a * b / (u * u) * sign_of(b);
    }
    case Pointwise::TanhshrinkGrad: return a - a * (1.f - b * b);
    case Pointwise::Tanh: return tanhf(a);
    case Pointwise::Prelu: return a > 0.f ? a : b * a;
    case Pointwise::PreluGradX: return b > 0.f ? a : c * a;
    case Pointwise::PreluGradW: return b > 0.f ? 0.f : b * a;
    default: return 0.f;
  }
}

__device__ __forceinline__ float apply(Pointwise op, float a, float b, float c, float d, float alpha) {
  switch (op) {
    case Pointwise::Add: return a + b;
    case Pointwise::Sub: return a - b;
    case Pointwise::Mul: return a * b;
    case Pointwise::Div: return a / b;
    case Pointwise::Pow: return powf(a, b);
    // torch.maximum / minimum propagate NaN from either side
    case Pointwise::Maximum: return (a != a || b != b) ? a + b : fmaxf(a, b);
    case Pointwise::Minimum: return (a != a || b != b) ? a + b : fminf(a, b);
    case Pointwise::Exp: return expf(a);
    case Pointwise::Log: return logf(a);
    case Pointwise::Sqrt: return sqrtf(a);
    case Pointwise::Abs: return fabsf(a);
    case Pointwise::Neg: return -a;
    case Pointwise::Sin: return sinf(a);
    case Pointwise::Cos: return cosf(a);
    case Pointwise::Copy: return a;
    case Pointwise::Clamp: {  // numpy.clip order: max(lo) first, then min(hi); NaN input stays NaN
      float y = a;
      if (b == b && y < b) y = b;
      if (c == c && y > c) y = c;
      return y;
    }
    case Pointwise::MulScaled: return a * b * alpha;
    case Pointwise::DivGradB: return -a * b / (c * c);
    // torch's pow_backward: 0 where the exponent c is 0; for the exponent y * log(base), 0 where the base
    // is 0 and the exponent >= 0, which is where y = 0 ** c is finite (0 or 1)
    case Pointwise::PowGradA: return c == 0.f ? 0.f : a * c * powf(b, c - 1.f);
    case Pointwise::PowGradB: return a * ((c == 0.f && fabsf(b) < INFINITY) ? 0.f : b * logf(c));
    case Pointwise::SqrtGrad: return a / (2.f * b);
    case Pointwise::AbsGrad: return a * (b > 0.f ? 1.f : (b < 0.f ? -1.f : 0.f));
    case Pointwise::SinGrad: return a * cosf(b);
    case Pointwise::CosGrad: return -a * sinf(b);
    case Pointwise::ClampGrad: return ((c != c || b >= c) && (d != d || b <= d)) ? a : 0.f;
    case Pointwise::AmaxGrad: return a == b ? c / d : 0.f;
    case Pointwise::BceLoss: return -(b * fmaxf(logf(a), -100.f) + (1.f - b) * fmaxf(log1pf(-a), -100.f)) * c;
    case Pointwise::BceGradP: return (a - b) / fmaxf(a * (1.f - a), 1e-12f) * c * alpha;
    case Pointwise::BceGradT: return -logf(a / (1.f - a)) * b * alpha;  // torch: -logit(p), unclamped
    case Pointwise::BceLogitsLoss: return ((1.f - b) * a + (1.f + (d - 1.f) * b) * log_sigmoid_neg(a)) * c;
    case Pointwise::BceLogitsGradX: {
      float e = expf(-fabsf(a));  // sigmoid without overflow for large |x|
      float sig = a >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
      return (sig * (c * b + 1.f - b) - c * b) * d * alpha;
    }
    case Pointwise::BceLogitsGradT:  // torch: log_sigmoid(-x) - pw log_sigmoid(x) (NaN at pw = x = inf)
      return (b == 1.f ? -a : b * log_sigmoid_neg(a) - log_sigmoid_neg(-a)) * c * alpha;
    default: return apply_more(op, a, b, c, d, alpha);
  }
  return 0.f;
}

struct Inputs {
  const float* p[kMaxInputs];
  float s[kMaxInputs];
};

__global__ void pointwise_kernel(Pointwise op, Broadcast geo, float* __restrict__ out, Inputs in, float alpha,
                                 int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t off[kMaxInputs];
    offsets<kMaxInputs>(geo, i, off);
    out[i] = apply(op, load(in.p[0], off[0], in.s[0]), load(in.p[1], off[1], in.s[1]), load(in.p[2], off[2], in.s[2]),
                   load(in.p[3], off[3], in.s[3]), alpha);
  }
}

template <class T>
__global__ void compare_kernel(Compare op, Broadcast geo, bool* __restrict__ out, const T* a, const T* b, T sa, T sb,
                               int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t off[2];
    offsets<2>(geo, i, off);
    T x = a ? a[off[0]] : sa, y = b ? b[off[1]] : sb;
    bool r = false;
    switch (op) {
      case Compare::Lt: r = x < y; break;
      case Compare::Le: r = x <= y; break;
      case Compare::Gt: r = x > y; break;
      case Compare::Ge: r = x >= y; break;
      case Compare::Eq: r = x == y; break;
      case Compare::Ne: r = x != y; break;
    }
    out[i] = r;
  }
}

__global__ void where_kernel(Broadcast geo, float* __restrict__ out, const bool* cond, const float* a, const float* b,
                             float sa, float sb, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t off[3];
    offsets<3>(geo, i, off);
    out[i] = cond[off[0]] ? load(a, off[1], sa) : load(b, off[2], sb);
  }
}

int64_t numel(const Broadcast& geo) {
  int64_t n = 1;
  for (int d = 0; d < geo.ndim; ++d) n *= geo.shape[d];
  return n;
}

std::string check_geo(const Broadcast& geo) {
  if (geo.ndim < 0 || geo.ndim > kMaxDims) return "broadcast rank out of range (at most 8 dimensions)";
  return std::string();
}

}  // namespace

std::string pointwise(Pointwise op, const Broadcast& geo, float* out, const float* const in[kMaxInputs],
                      const float scalar[kMaxInputs], float alpha) {
  std::string err = check_geo(geo);
  if (!err.empty()) return err;
  int64_t n = numel(geo);
  if (n == 0) return std::string();
  Inputs args;
  for (int k = 0; k < kMaxInputs; ++k) {
    args.p[k] = in[k];
    args.s[k] = scalar[k];
  }
  pointwise_kernel<<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(op, geo, out, args, alpha, n);
  return launch_status();
}

std::string compare(Compare op, const Broadcast& geo, bool* out, const float* in0, const float* in1, float s0,
                    float s1) {
  std::string err = check_geo(geo);
  if (!err.empty()) return err;
  int64_t n = numel(geo);
  if (n == 0) return std::string();
  compare_kernel<float><<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(op, geo, out, in0, in1, s0, s1, n);
  return launch_status();
}

std::string compare_i64(Compare op, const Broadcast& geo, bool* out, const int64_t* in0, const int64_t* in1, int64_t s0,
                        int64_t s1) {
  std::string err = check_geo(geo);
  if (!err.empty()) return err;
  int64_t n = numel(geo);
  if (n == 0) return std::string();
  compare_kernel<int64_t>
      <<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(op, geo, out, in0, in1, s0, s1, n);
  return launch_status();
}

std::string where(const Broadcast& geo, float* out, const bool* cond, const float* a, const float* b, float sa,
                  float sb) {
  std::string err = check_geo(geo);
  if (!err.empty()) return err;
  int64_t n = numel(geo);
  if (n == 0) return std::string();
  where_kernel<<<blocks_for(n, kThreads), kThreads, 0, current_stream()>>>(geo, out, cond, a, b, sa, sb, n);
  return launch_status();
}

}  // namespace fg::cuda::nn
