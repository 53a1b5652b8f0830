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
    case Pointwise::PowGradA: return a * c * powf(b, c - 1.f);
    case Pointwise::PowGradB: return a * b * (c > 0.f ? logf(c) : 0.f);
    case Pointwise::SqrtGrad: return a / (2.f * b);
    case Pointwise::AbsGrad: return a * (b > 0.f ? 1.f : (b < 0.f ? -1.f : 0.f));
    case Pointwise::SinGrad: return a * cosf(b);
    case Pointwise::CosGrad: return -a * sinf(b);
    case Pointwise::ClampGrad: return ((c != c || b >= c) && (d != d || b <= d)) ? a : 0.f;
    case Pointwise::AmaxGrad: return a == b ? c / d : 0.f;
    case Pointwise::BceLoss: return -(b * fmaxf(logf(a), -100.f) + (1.f - b) * fmaxf(log1pf(-a), -100.f)) * c;
    case Pointwise::BceGradP: return (a - b) / fmaxf(a * (1.f - a), 1e-12f) * c * alpha;
    case Pointwise::BceGradT: return -(fmaxf(logf(a), -100.f) - fmaxf(log1pf(-a), -100.f)) * b * alpha;
    case Pointwise::BceLogitsLoss: return ((1.f - b) * a + (1.f + (d - 1.f) * b) * log_sigmoid_neg(a)) * c;
    case Pointwise::BceLogitsGradX: {
      float e = expf(-fabsf(a));  // sigmoid without overflow for large |x|
      float sig = a >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
      return (sig * (c * b + 1.f - b) - c * b) * d * alpha;
    }
    case Pointwise::BceLogitsGradT: return (-a + (b - 1.f) * log_sigmoid_neg(a)) * c * alpha;
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
