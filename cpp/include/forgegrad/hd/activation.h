// Shared host/device math: the elementwise activations of forgegrad.ops.activation, forward and
// backward, one element at a time. The CPU kernel (cpp/kernels/per_isa/activation.cpp) calls these
// in its portable build and computes the same formulas on vectors in its AVX paths; the CUDA
// kernels (cuda/elementwise.cu) call them per thread.
#pragma once
#include "forgegrad/hd/common.h"

FG_HD_BEGIN

// The activation codes of forgegrad/activation.h (fg::ActOp), repeated here so that this header
// needs nothing but the compiler; bind_hd_math.cpp checks that the two lists agree.
enum ActCode : int {
  kRelu = 0,
  kLeakyRelu = 1,
  kGelu = 2,
  kGeluTanh = 3,
  kSigmoid = 4,
  kTanh = 5,
  kSilu = 6,
  kActCodes = 7
};

// torch's constants (aten/src/ATen/native/cpu/Activation.cpp)
constexpr float kSqrt1_2 = 0.70710678118654752440f;      // 1/sqrt(2)
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;   // 1/sqrt(2 pi)
constexpr float kSqrt2OverPi = 0.79788456080286535588f;  // sqrt(2/pi)
constexpr float kKappa = 0.044715f;
// SiLU below kSiluLo is 0 * x: -0 for finite x (the exact values there are under 3.7e-37), NaN at
// x = -inf as torch's -inf / inf. See cpp/kernels/per_isa/activation.cpp.
constexpr float kSiluLo = -88.37f;
constexpr float kFltMax = 3.402823466e38f;

// max(0, x): the second operand is returned for NaN, so NaN propagates as in torch.
FG_HD float relu(float x) { return vmax1(0.0f, x); }
FG_HD float leaky_relu(float x, float alpha) { return select_gt(x, 0.0f, x, x * alpha); }
FG_HD float gelu(float x) { return (x * 0.5f) * (1.0f + hd::erf(x * kSqrt1_2)); }
FG_HD float gelu_tanh(float x) {
  float inner = kSqrt2OverPi * fmadd(kKappa * (x * x), x, x);
  return (x * 0.5f) * (1.0f + hd::tanh(inner));
}
// x / (1 + exp(-x)): torch's association (one rounding fewer than x * sigmoid(x)).
FG_HD float silu(float x) { return select_gt(kSiluLo, x, 0.0f * x, x / (1.0f + hd::exp(-x))); }

// Backward: g times the derivative, from y = relu(x) (torch's threshold_backward: y <= 0 gives 0,
// which lets g through where y is NaN).
FG_HD float relu_backward(float g, float y) { return select_gt(y, 0.0f, g, select_gt(y, -INFINITY, 0.0f, g)); }
FG_HD float leaky_relu_backward(float g, float x, float alpha) { return select_gt(x, 0.0f, g, g * alpha); }
// d/dx x Phi(x) = Phi(x) + x phi(x)
FG_HD float gelu_backward(float g, float x) {
  float cdf = 0.5f * (1.0f + hd::erf(x * kSqrt1_2));
  float pdf = hd::exp(-0.5f * (x * x)) * kInvSqrt2Pi;
  return g * fmadd(x, pdf, cdf);
}
// the association of torch's GeluBackwardKernel (tanh form)
FG_HD float gelu_tanh_backward(float g, float x) {
  float x2 = x * x;
  float inner = kSqrt2OverPi * fmadd(kKappa * x2, x, x);
  float t = hd::tanh(inner);
  float left_d = 0.5f * (1.0f + t);
  float right_d = ((0.5f * x) * fnmadd(t, t, 1.0f)) * (kSqrt2OverPi * fmadd(3.0f * kKappa, x2, 1.0f));
  return g * (left_d + right_d);
}
FG_HD float sigmoid_backward(float g, float y) { return (g * (1.0f - y)) * y; }
FG_HD float tanh_backward(float g, float y) { return g * fnmadd(y, y, 1.0f); }
// g * s * (1 + x (1 - s)), s = sigmoid(x); below kSiluLo g * (0 * x): g * -0, NaN at x = -inf (torch's
// 0 * -inf); x = +inf gives NaN through the formula (torch's inf * 0).
FG_HD float silu_backward(float g, float x) {
  float s = 1.0f / (1.0f + hd::exp(-x));
  float d = (g * s) * (1.0f + x * (1.0f - s));
  return select_gt(kSiluLo, x, g * (0.0f * x), d);
}

// By code (alpha: leaky_relu's negative_slope, else unused). Unknown codes give x / g unchanged;
// every caller checks the code first.
FG_HD float act_forward(int op, float x, float alpha) {
  switch (op) {
    case kRelu: return relu(x);
    case kLeakyRelu: return leaky_relu(x, alpha);
    case kGelu: return gelu(x);
    case kGeluTanh: return gelu_tanh(x);
    case kSigmoid: return hd::sigmoid(x);
    case kTanh: return hd::tanh(x);
    case kSilu: return silu(x);
    default: return x;
  }
}
// saved: the forward output y for relu, sigmoid, tanh; the input x for the others.
FG_HD float act_backward(int op, float g, float saved, float alpha) {
  switch (op) {
    case kRelu: return relu_backward(g, saved);
    case kLeakyRelu: return leaky_relu_backward(g, saved, alpha);
    case kGelu: return gelu_backward(g, saved);
    case kGeluTanh: return gelu_tanh_backward(g, saved);
    case kSigmoid: return sigmoid_backward(g, saved);
    case kTanh: return tanh_backward(g, saved);
    case kSilu: return silu_backward(g, saved);
    default: return g;
  }
}
FG_HD bool act_backward_uses_output(int op) { return op == kRelu || op == kSigmoid || op == kTanh; }

FG_HD_END
