// Host entry points of the CUDA kernels for norms, softmax, losses, reductions, elementwise math,
// attention and embedding (cuda/{binary,reduce,softmax_loss,norm,attention,embedding}.cu).
//
// Same contract as cuda_api.h: raw device pointers, launches on fg::cuda::current_stream(), no
// synchronisation, an empty string on success and the CUDA error text otherwise. Shapes are checked
// by the bindings (cpp/bindings/bind_cuda_nn.cpp) before these run. Every reduction sums in a fixed
// order (a shape-determined thread layout and tree), so results are bitwise repeatable run to run;
// no result is accumulated with floating-point atomics.
#pragma once
#include <cstdint>
#include <string>

namespace fg::cuda::nn {

constexpr int kMaxDims = 8;   // broadcasting / reduction geometry rank limit
constexpr int kMaxInputs = 4;  // inputs of one pointwise launch

// ---- elementwise (binary.cu) --------------------------------------------------------------------
// Output shape and, per input, its element strides in the output's index space (0 on a broadcast
// dimension). ndim == 0 is a scalar. A null input pointer reads the matching scalar instead.
struct Broadcast {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxInputs][kMaxDims] = {};
};

enum class Pointwise : int {
  // binary math: out = f(in0, in1)
  Add = 0,
  Sub,
  Mul,
  Div,
  Pow,
  Maximum,
  Minimum,
  // unary math: out = f(in0)
  Exp,
  Log,
  Sqrt,
  Abs,
  Neg,
  Sin,
  Cos,
  Copy,
  Clamp,  // clamp(in0, lo, hi): lo / hi from the scalars slots 1 / 2, NaN bound = absent
  // gradients (g = in0)
  MulScaled,     // in0 * in1 * alpha
  DivGradB,      // -g * a / (b * b)                (g, a, b)
  PowGradA,      // g * b * a^(b - 1) (0 at b = 0)    (g, a, b)
  PowGradB,      // g * y * log a (0 at a = 0, y finite) (g, y, a)
  SqrtGrad,      // g / (2 y)                       (g, y)
  AbsGrad,       // g * sign(a)                     (g, a)
  SinGrad,       // g * cos(a)                      (g, a)
  CosGrad,       // -g * sin(a)                     (g, a)
  ClampGrad,     // g if lo <= a <= hi else 0       (g, a), bounds in scalars 2 / 3
  AmaxGrad,      // a == y ? g / count : 0          (a, y, g, count)
  // binary cross entropy on probabilities p (log terms clamped at -100, as torch)
  BceLoss,   // -(t max(log p, -100) + (1 - t) max(log(1 - p), -100)) * w     (p, t, w)
  BceGradP,  // (p - t) / max(p (1 - p), 1e-12) * g * alpha                  (p, t, g)
  BceGradT,  // -log(p / (1 - p)) * g * alpha (torch's -logit, unclamped)      (p, g)
  // binary cross entropy on logits x, lsn = log(1 + exp(-|x|)) + max(-x, 0) = -log sigmoid(x)
  BceLogitsLoss,   // ((1 - t) x + (1 + (pw - 1) t) lsn) * w                 (x, t, w, pw)
  BceLogitsGradX,  // (sigmoid(x) (pw t + 1 - t) - pw t) * g * alpha          (x, t, pw, g)
  BceLogitsGradT,  // (pw == 1 ? -x : pw lsn(x) - lsn(-x)) * g * alpha        (x, pw, g)
  // ---- appended (the numbering above is mirrored by tests/test_cuda_sim.py's POINTWISE) ----
  // more unary math: out = f(in0), torch's values at the edges (sign(NaN) = 0, round half to even)
  Log1p,
  Expm1,
  Exp2,
  Log2,
  Log10,
  Square,
  Reciprocal,
  Rsqrt,
  Tan,
  Sinh,
  Cosh,
  Asin,
  Acos,
  Atan,
  Asinh,
  Acosh,
  Atanh,
  Erf,
  Erfc,
  Erfinv,
  Floor,
  Ceil,
  Trunc,
  Round,
  Frac,     // x - trunc(x)
  Sign,     // -1, 0, 1; NaN -> 0
  Deg2rad,
  Rad2deg,
  Sinc,     // sin(pi x) / (pi x), 1 at 0
  Logit,    // log(p / (1 - p)), p clamped to [eps, 1 - eps] first unless eps (in1) is NaN
  Signbit,  // 1 where in0's sign bit is set (-0.0 and -NaN included), else 0
  // their gradients: g = in0, then the input x or the output y
  Log1pGrad,       // g / (x + 1)                        (g, x)
  Expm1Grad,       // g * (y + 1)                        (g, y)
  Exp2Grad,        // g * y * ln 2                       (g, y)
  Log2Grad,        // g / (x ln 2)                       (g, x)
  Log10Grad,       // g / (x ln 10)                      (g, x)
  ReciprocalGrad,  // -g * y * y                         (g, y)
  RsqrtGrad,       // -0.5 g y^3                         (g, y)
  TanGrad,         // g * (y * y + 1)                    (g, y)
  SinhGrad,        // g * cosh(x)                        (g, x)
  CoshGrad,        // g * sinh(x)                        (g, x)
  AsinGrad,        // g / sqrt(1 - x^2)                  (g, x)
  AcosGrad,        // -g / sqrt(1 - x^2)                 (g, x)
  AtanGrad,        // g / (x^2 + 1)                      (g, x)
  AsinhGrad,       // g / sqrt(x^2 + 1)                  (g, x)
  AcoshGrad,       // g / sqrt(x^2 - 1)                  (g, x)
  AtanhGrad,       // g / (1 - x^2)                      (g, x)
  ErfGrad,         // g * 2 / sqrt(pi) * exp(-x^2)       (g, x)
  ErfcGrad,        // -g * 2 / sqrt(pi) * exp(-x^2)      (g, x)
  ErfinvGrad,      // g * sqrt(pi) / 2 * exp(y^2)        (g, y)
  SincGrad,        // g (cos(pi x) pi x - sin(pi x)) / (pi x^2), 0 where pi x^2 == 0   (g, x)
  LogitGrad,       // g / (x (1 - x)); eps (in2) NaN: NaN outside [0, 1], else 0 outside [eps, 1 - eps]
  // more binary math: out = f(in0, in1)
  Fmax,        // NaN loses
  Fmin,
  Atan2,       // atan2(in0, in1)
  Hypot,
  Copysign,
  Remainder,   // a - floor(a / b) * b (Python's sign convention)
  Fmod,        // C's fmod
  Logaddexp,
  Logaddexp2,
  Xlogy,       // 0 where a == 0 and b is not NaN, else a log b
  Lerp,        // a + w (e - a) for |w| < 0.5, else e - (e - a)(1 - w)      (a, e, w)
  MulDiv,      // in0 * in1 / in2
  // their gradients
  MaximumGrad,     // g * (a == b ? 0.5 : a < b ? 0 : 1)          (g, a, b); b's: (g, b, a)
  MinimumGrad,     // g * (a == b ? 0.5 : a > b ? 0 : 1)          (g, a, b); b's: (g, b, a)
  FmaxGrad,        // a >= b or b is NaN ? g : 0                 (g, a, b); b's: g minus this
  FminGrad,        // a <= b or b is NaN ? g : 0                 (g, a, b); b's: g minus this
  Atan2Grad,       // alpha * g * u / (u^2 + v^2), 0 where u == v == 0    (g, u, v)
  CopysignGrad,    // g * sign(y) * sign(a), 0 where a == 0      (g, a, y)
  RemainderGradB,  // -g * floor(a / b)                          (g, a, b)
  FmodGradB,       // -g * trunc(a / b)                          (g, a, b)
  LogaddexpGrad,   // g / (exp(b - a) + 1)                       (g, a, b); b's: (g, b, a)
  Logaddexp2Grad,  // g / (2^(b - a) + 1)                        (g, a, b); b's: (g, b, a)
  XlogyGradA,      // a == 0 and b <= 0 ? 0 : g log b            (g, a, b)
  // activations: parameters in the scalar slots
  EluFamily,      // x > 0 ? x * s : expm1(min(x, 0) * i) * c      (x, s, c, i)
  EluFamilyGrad,  // x <= 0 ? g exp(min(x, 0) * alpha) * c : g * s  (g, x, s, c), alpha = input scale
  EluGradOut,     // y <= 0 ? g (y + alpha) : g                    (g, y), alpha >= 0
  Softplus,       // beta x > th ? x : log1p(exp(beta x)) / beta   (x, beta, th)
  SoftplusGrad,   // beta x > th ? g : g sigmoid(beta x)           (g, x, beta, th)
  HardtanhGrad,   // lo < x < hi ? g : 0                           (g, x, lo, hi)
  Hardsigmoid,    // min(max(x + 3, 0), 6) / 6, NaN kept
  HardsigmoidGrad,  // -3 < x < 3 ? g / 6 : 0                      (g, x)
  Hardswish,      // x min(max(x + 3, 0), 6) / 6
  HardswishGrad,  // g * (x <= -3 ? 0 : x < 3 ? x / 3 + 0.5 : 1)   (g, x)
  Softshrink,     // x > l ? x - l : x < -l ? x + l : 0, NaN kept  (x, l)
  Hardshrink,     // -l <= x <= l ? 0 : x                          (x, l)
  ShrinkGrad,     // x < -l or x > l ? g : 0                       (g, x, l)
  Threshold,      // x <= th ? v : x                               (x, th, v)
  ThresholdGrad,  // x <= th ? 0 : g                               (g, x, th)
  Mish,           // x tanh(log1p(exp(x)))
  MishGrad,       // g (t + x sigmoid(x) (1 - t^2)), t = tanh(softplus(x))   (g, x)
  Logsigmoid,     // min(x, 0) - log1p(exp(-|x|))
  LogsigmoidGrad,  // g ((x < 0) -+ z / (1 + z)), z = exp(-|x|)    (g, x)
  Softsign,       // x / (|x| + 1)
  SoftsignGrad,   // g / u - g x / u^2 sign(x), u = |x| + 1        (g, x)
  TanhshrinkGrad,  // g - g (1 - t^2)                              (g, t = tanh(x))
  Tanh,
  Prelu,          // x > 0 ? x : w x                               (x, w)
  PreluGradX,     // x > 0 ? g : g w                               (g, x, w)
  PreluGradW,     // x > 0 ? 0 : g x                               (g, x)
};

enum class Compare : int { Lt = 0, Le, Gt, Ge, Eq, Ne };

std::string pointwise(Pointwise op, const Broadcast& geo, float* out, const float* const in[kMaxInputs],
                      const float scalar[kMaxInputs], float alpha);
// out (bool, one byte) = in0 <op> in1
std::string compare(Compare op, const Broadcast& geo, bool* out, const float* in0, const float* in1, float s0,
                    float s1);
// The same on int64 inputs (exact, no conversion to float).
std::string compare_i64(Compare op, const Broadcast& geo, bool* out, const int64_t* in0, const int64_t* in1, int64_t s0,
                        int64_t s1);
// out = cond ? a : b, with cond bool (stride slot 0), a (slot 1), b (slot 2); null a/b read sa/sb.
std::string where(const Broadcast& geo, float* out, const bool* cond, const float* a, const float* b, float sa,
                  float sb);

// ---- reductions (reduce.cu) ---------------------------------------------------------------------
// Output elements index the kept dimensions (row-major over keep_shape); each reduces the elements
// of the reduced dimensions (row-major over red_shape) in that order.
struct Reduction {
  int keep_ndim = 0, red_ndim = 0;
  int64_t keep_shape[kMaxDims] = {}, keep_stride[kMaxDims] = {};
  int64_t red_shape[kMaxDims] = {}, red_stride[kMaxDims] = {};
};

enum class Reduce : int {
  Sum = 0,
  Max,
  Min,
  SumSqDev,  // sum of (x - center[o])^2: the second pass of var/std
  CountEq,   // number of x == center[o] (amax/amin backward)
};

// Floats of scratch memory reduce() needs for this geometry (0: one pass).
int64_t reduce_workspace(const Reduction& r);
// out[o] = post(scale * reduce(x over reduced dims)); post = sqrt when sqrt_after. center is read by
// SumSqDev / CountEq (one value per output).
std::string reduce(Reduce op, const Reduction& r, const float* x, const float* center, float* out, float scale,
                   bool sqrt_after, float* workspace);
// Sum / Max / Min of int64 elements, or Sum of bool ones (is_bool: one byte each), into int64 (exact);
// workspace: reduce_workspace(r) int64 values.
std::string reduce_int(Reduce op, const Reduction& r, const void* x, bool is_bool, int64_t* out, int64_t* workspace);
// Index (row-major over red_shape) of the first max (or min) of each output's elements, NaN counting
// as the largest (numpy's argmax); values gets the value when not null.
std::string arg_reduce(bool is_max, const Reduction& r, const float* x, int64_t* index, float* values);
// out[outer, n, inner] = 0 except out[o, index[o, i], i] = g[o, i] (max_dim / min_dim backward).
std::string scatter_axis(const float* g, const int64_t* index, float* out, int64_t outer, int64_t n, int64_t inner);

// ---- softmax and losses (softmax_loss.cu) ------------------------------------------------------
// Rows are (o, i) of an [outer, n, inner] array, their elements n apart by inner.
std::string softmax_forward(bool log, const float* x, float* y, int64_t outer, int64_t n, int64_t inner);
// softmax: gx = y * (g - sum(g * y)); log_softmax: gx = g - exp(y) * sum(g)
std::string softmax_backward(bool log, const float* y, const float* g, float* gx, int64_t outer, int64_t n,
                             int64_t inner);

// Class-index cross entropy / nll over logits [outer, C, inner] (classes on axis 1), rows (o, i).
// cross_entropy saves prob = softmax(logits) (same layout); per[row] is the row's loss and
// wy[row] its target's class weight (0 when ignored): the mean divides sum(per) by sum(wy).
// A target outside [0, C) that is not ignore_index gives a NaN loss (the kernel cannot raise).
std::string cross_entropy_forward(const float* logits, const int64_t* target, const float* weight, float* prob,
                                  float* per, float* wy, int64_t outer, int64_t C, int64_t inner, int64_t ignore_index,
                                  float label_smoothing);
// grad_logits = a * d(per) / d logits with a = g[row * g_stride] / (denom ? *denom : 1).
std::string cross_entropy_backward(const float* prob, const int64_t* target, const float* weight, const float* g,
                                   int64_t g_stride, const float* denom, float* grad, int64_t outer, int64_t C,
                                   int64_t inner, int64_t ignore_index, float label_smoothing);
std::string nll_forward(const float* logp, const int64_t* target, const float* weight, float* per, float* wy,
                        int64_t outer, int64_t C, int64_t inner, int64_t ignore_index);
std::string nll_backward(const int64_t* target, const float* weight, const float* g, int64_t g_stride,
                         const float* denom, float* grad, int64_t outer, int64_t C, int64_t inner,
                         int64_t ignore_index);

// ---- normalization (norm.cu) --------------------------------------------------------------------
// x [N, C, inner]; training: batch statistics (biased var normalises, the running var gets the
// unbiased one), running stats updated in place when given; eval: running stats.
std::string batch_norm_forward(const float* x, const float* weight, const float* bias, float* running_mean,
                               float* running_var, bool training, float momentum, float eps, float* y, float* save_mean,
                               float* save_invstd, int64_t N, int64_t C, int64_t inner);
// grad_x / grad_weight / grad_bias may be null (not needed).
std::string batch_norm_backward(const float* g, const float* x, const float* weight, const float* mean,
                                const float* invstd, bool training, float* grad_x, float* grad_weight, float* grad_bias,
                                int64_t N, int64_t C, int64_t inner);

// Rows of D elements; rms: no mean (mean gets zeros). mean may be null for rms.
std::string layer_norm_forward(bool rms, const float* x, const float* weight, const float* bias, float eps, float* y,
                               float* mean, float* rstd, int64_t rows, int64_t D);
int64_t layer_norm_workspace(int64_t rows, int64_t D);
std::string layer_norm_backward(bool rms, const float* g, const float* x, const float* mean, const float* rstd,
                                const float* weight, float* grad_x, float* grad_weight, float* grad_bias, int64_t rows,
                                int64_t D, float* workspace);

// ---- attention (attention.cu) ------------------------------------------------------------------
// q [B, L, D], k [B, S, D], v [B, S, Dv] contiguous, D and Dv <= 128; mask an additive float
// [B, L, S] array read with batch stride mask_bstride (0: one mask for all); causal keeps j <= i.
// out [B, L, Dv]; lse [B, L] (log-sum-exp of each scaled, masked score row) for the backward.
std::string attention_forward(const float* q, const float* k, const float* v, const float* mask, int64_t mask_bstride,
                              float* out, float* lse, int64_t B, int64_t L, int64_t S, int64_t D, int64_t Dv,
                              float scale, bool causal);
// workspace: B * L floats (rowsum(dO * O)).
std::string attention_backward(const float* q, const float* k, const float* v, const float* mask, int64_t mask_bstride,
                               const float* out, const float* lse, const float* grad_out, float* grad_q, float* grad_k,
                               float* grad_v, int64_t B, int64_t L, int64_t S, int64_t D, int64_t Dv, float scale,
                               bool causal, float* workspace);

// grad_scores [B, L, S] = the gradient of the scaled, masked scores (that of an additive mask before
// summing it to the mask's shape): p * (dO . v - dO . O), 0 where masked.
std::string attention_mask_grad(const float* q, const float* k, const float* v, const float* mask, int64_t mask_bstride,
                                const float* out, const float* lse, const float* grad_out, float* grad_scores,
                                int64_t B, int64_t L, int64_t S, int64_t D, int64_t Dv, float scale, bool causal);

// ---- embedding (embedding.cu) ------------------------------------------------------------------
// out[i, :] = weight[index[i], :] for n indices into a [V, D] table; an index outside [0, V)
// gives a row of NaN (the kernel cannot raise).
std::string embedding_forward(const float* weight, const int64_t* index, float* out, int64_t n, int64_t V, int64_t D);
// grad_weight[r, :] = sum over i with index[i] == r, in ascending i, of g[i, :]; row padding_idx
// (< 0: none) stays zero. workspace: V int32 counts.
std::string embedding_backward(const float* g, const int64_t* index, float* grad_weight, int64_t n, int64_t V,
                               int64_t D, int64_t padding_idx, int* workspace);

}  // namespace fg::cuda::nn
