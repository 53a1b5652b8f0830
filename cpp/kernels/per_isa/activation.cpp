// Elementwise activations (forward and backward) and column sums, written once against simd.h.
// x, y, g, dx are contiguous float32 buffers of n elements. The per-element math is
// forgegrad/hd/activation.h (shared with cuda/elementwise.cu): the portable build calls it, the
// AVX builds compute the same operations on vectors (the forward ones in act_vec.h, the backward
// ones below).

#include <cmath>

#include "act_map.h"
#include "act_vec.h"
#include "forgegrad/activation.h"
#include "forgegrad/hd/activation.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

using act_map::imax;
using act_map::imin;
using act_map::kGrainCheap;
using act_map::kGrainTranscendental;
using act_map::map1;
using act_map::map2;

// torch's constants and the SiLU limits: one definition, in forgegrad/hd/activation.h.
// SiLU: for x < kSiluLo the result is 0 * x, chosen by a select: -0 for finite x, NaN at x = -inf
// (torch's x / (1 + exp(-x)) is -inf / inf = NaN there), and every ISA agrees near the overflow of
// exp(-x) (AVX2's vexp already returns inf from 127.5 ln 2 = 88.376 on, the others only past
// 88.72). The exact results there are under 3.7e-37 in size; torch's exp overflows at 88.72 and
// gives -0 below that. NaN x fails the compare and goes through the formula, so it stays NaN.
using hd::kInvSqrt2Pi;
using hd::kKappa;
using hd::kSiluLo;
using hd::kSqrt1_2;
using hd::kSqrt2OverPi;

}  // namespace

// Per-op grain: cheap ops are worth a thread later than exp-based ones.
inline int64_t act_grain(int op, bool backward) {
  if (op == kActRelu || op == kActLeakyRelu) return kGrainCheap;
  if (backward && (op == kActSigmoid || op == kActTanh)) return kGrainCheap;
  return kGrainTranscendental;
}

void act_forward(int op, const float* x, float* y, int64_t n, float alpha) {
  with_act_forward(op, alpha, [&](auto f) { map1(x, y, n, act_grain(op, false), f); });
}

void act_backward(int op, const float* g, const float* saved, float* dx, int64_t n, float alpha) {
#if defined(FG_SIMD_PORTABLE)
  if (op < 0 || op >= kActCount) return;
  map2(g, saved, dx, n, act_grain(op, true), [op, alpha](vf gv, vf s) { return hd::act_backward(op, gv, s, alpha); });
  return;
#endif
  const vf zero = vzero(), half = vset1(0.5f), one = vset1(1.0f);
  switch (op) {
    case kActRelu: {
      // saved = y = relu(x), so y is >= 0 or NaN. torch (threshold_backward on the result) gives
      // y <= 0 ? 0 : g, which lets g through where y is NaN: y > 0 -> g; else y > -inf (not NaN) -> 0.
      const vf ninf = vset1(-INFINITY);
      map2(g, saved, dx, n, kGrainCheap,
           [&](vf gv, vf y) { return vselect_gt(y, zero, gv, vselect_gt(y, ninf, zero, gv)); });
      break;
    }
    case kActLeakyRelu: {  // saved = x
      const vf a = vset1(alpha);
      map2(g, saved, dx, n, kGrainCheap, [&](vf gv, vf x) { return vselect_gt(x, zero, gv, vmul(gv, a)); });
      break;
    }
    case kActGelu:  // saved = x: d/dx x Phi(x) = Phi(x) + x phi(x)
      map2(g, saved, dx, n, kGrainTranscendental, [&](vf gv, vf x) {
        vf cdf = vmul(half, vadd(one, verf(vmul(x, vset1(kSqrt1_2)))));
        vf pdf = vmul(vexp(vmul(vset1(-0.5f), vmul(x, x))), vset1(kInvSqrt2Pi));
        return vmul(gv, vfmadd(x, pdf, cdf));
      });
      break;
    case kActGeluTanh:  // saved = x; the same association as torch's GeluBackwardKernel
      map2(g, saved, dx, n, kGrainTranscendental, [&](vf gv, vf x) {
        vf x2 = vmul(x, x);
        vf inner = vmul(vset1(kSqrt2OverPi), vfmadd(vmul(vset1(kKappa), x2), x, x));
        vf t = vtanh(inner);
        vf left_d = vmul(half, vadd(one, t));
        vf right_d = vmul(vmul(vmul(half, x), vfnmadd(t, t, one)),
                          vmul(vset1(kSqrt2OverPi), vfmadd(vset1(3.0f * kKappa), x2, one)));
        return vmul(gv, vadd(left_d, right_d));
      });
      break;
    case kActSigmoid:  // saved = y: g * (1 - y) * y
      map2(g, saved, dx, n, kGrainCheap, [&](vf gv, vf y) { return vmul(vmul(gv, vsub(one, y)), y); });
      break;
    case kActTanh:  // saved = y: g * (1 - y^2)
      map2(g, saved, dx, n, kGrainCheap, [&](vf gv, vf y) { return vmul(gv, vfnmadd(y, y, one)); });
      break;
    case kActSilu: {
      // saved = x: g * s * (1 + x * (1 - s)), s = sigmoid(x), torch's association. Below kSiluLo
      // g * (0 * x): g * -0 (the exact factor is under 3.7e-37 there, and torch's s is exactly 0
      // below -88.72), NaN at x = -inf (torch's 0 * -inf); x = +inf gives torch's NaN (inf * 0).
      const vf lo = vset1(kSiluLo);
      map2(g, saved, dx, n, kGrainTranscendental, [&](vf gv, vf x) {
        vf s = vdiv(one, vadd(one, vexp(vneg(x))));
        vf d = vmul(vmul(gv, s), vadd(one, vmul(x, vsub(one, s))));
        return vselect_gt(lo, x, vmul(gv, vmul(zero, x)), d);
      });
      break;
    }
    default: break;
  }
}

// x is (rows, cols). Threads own disjoint 64-column strips; each column is accumulated over rows
// in row order, so the sums do not depend on the thread count.
void column_sums(const float* x, int64_t rows, int64_t cols, float* out) {
  constexpr int64_t kStrip = 64;
  constexpr int kVecs = static_cast<int>(kStrip / W);
  int64_t nstrips = (cols + kStrip - 1) / kStrip;
  int64_t grain = imax(1, 16384 / imax(1, rows * kStrip));
  parallel_for(nstrips, grain, [&](int64_t sb, int64_t se) {
    for (int64_t s = sb; s < se; ++s) {
      int64_t c0 = s * kStrip;
      int width = static_cast<int>(imin(kStrip, cols - c0));
      int full = width / W, rest = width - full * W;
      vf acc[kVecs];
      for (int j = 0; j < kVecs; ++j) acc[j] = vzero();
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = x + r * cols + c0;
        for (int j = 0; j < full; ++j) acc[j] = vadd(acc[j], vload(row + j * W));
        if (rest) acc[full] = vadd(acc[full], vload_n(row + full * W, rest));
      }
      for (int j = 0; j < full; ++j) vstore(out + c0 + j * W, acc[j]);
      if (rest) vstore_n(out + c0 + full * W, acc[full], rest);
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
