// The forward activations on vectors, compiled per ISA: with_act_forward(op, alpha, run) calls
// run(f) with f(vf) -> vf, the op's lane operations, so that every kernel applying an activation
// (activation.cpp's act_forward over a buffer, a convolution's fused activation on each block it
// writes) computes the same bits. The portable build calls the shared scalar math
// (forgegrad/hd/activation.h); the AVX builds compute its operations on vectors.
#pragma once
#include "forgegrad/activation.h"
#include "forgegrad/hd/activation.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {

// Unknown codes run nothing (the bindings reject them).
template <class Run>
inline void with_act_forward(int op, float alpha, Run&& run) {
  if (op < 0 || op >= kActCount) return;
#if defined(FG_SIMD_PORTABLE)
  run([op, alpha](vf v) { return hd::act_forward(op, v, alpha); });
#else
  const vf zero = vzero(), half = vset1(0.5f), one = vset1(1.0f);
  switch (op) {
    case kActRelu:
      // max(0, x): the second operand is returned for NaN, so NaN propagates as in torch.
      run([zero](vf v) { return vmax(zero, v); });
      break;
    case kActLeakyRelu: {
      const vf a = vset1(alpha);
      run([zero, a](vf v) { return vselect_gt(v, zero, v, vmul(v, a)); });
      break;
    }
    case kActGelu:
      run([half, one](vf v) {
        vf cdf1 = vadd(one, verf(vmul(v, vset1(hd::kSqrt1_2))));  // 2 * Phi(x)
        return vmul(vmul(v, half), cdf1);
      });
      break;
    case kActGeluTanh:
      run([half, one](vf v) {
        vf inner = vmul(vset1(hd::kSqrt2OverPi), vfmadd(vmul(vset1(hd::kKappa), vmul(v, v)), v, v));
        return vmul(vmul(v, half), vadd(one, vtanh(inner)));
      });
      break;
    case kActSigmoid: run([](vf v) { return vsigmoid(v); }); break;
    case kActTanh: run([](vf v) { return vtanh(v); }); break;
    case kActSilu: {
      // x / (1 + exp(-x)): torch's association (one rounding fewer than x * sigmoid(x)).
      // below kSiluLo 0 * x: -0, NaN at x = -inf (as torch's -inf / inf)
      const vf lo = vset1(hd::kSiluLo);
      run([zero, one, lo](vf v) { return vselect_gt(lo, v, vmul(zero, v), vdiv(v, vadd(one, vexp(vneg(v))))); });
      break;
    }
    default: break;
  }
#endif
}

// op (-1: none) in place over n floats on the calling thread.
inline void act_forward_serial(int op, float alpha, float* p, int64_t n) {
  with_act_forward(op, alpha, [p, n](auto f) {
    int64_t i = 0;
    for (; i + W <= n; i += W) vstore(p + i, f(vload(p + i)));
    if (i < n) {
      const int r = static_cast<int>(n - i);
      vstore_n(p + i, f(vload_n(p + i, r)), r);
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
