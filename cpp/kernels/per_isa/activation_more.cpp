// The activations of forgegrad/activation_more.h (elu / selu / celu, softplus, mish, logsigmoid,
// hardsigmoid, hardswish, softsign, tanhshrink, hardtanh, softshrink, hardshrink, threshold), forward
// and backward, written once against simd.h: each op is a lane function over vf, which the portable
// build runs one float at a time (its vexp / vtanh are the shared scalar forgegrad/hd/common.h). exp
// and tanh are simd.h's; the two functions simd.h lacks, expm1 near 0 and log1p on [0, 1], are built
// below from its vocabulary and its vexp. The formulas are the numpy ones they replace in
// python/forgegrad/ops/ (torch's results at NaN, +-inf and +-0, and torch's one-sided gradients at
// the kinks), with the same association.

#include <cmath>

#include "act_map.h"
#include "forgegrad/activation_more.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

using act_map::kGrainCheap;
using act_map::kGrainTranscendental;
using act_map::map1;
using act_map::map2;

// exp(x) with +inf past the float range: vexp clamps its argument at 88.72, so an overflowing exp is
// inf here on every ISA, as torch's.
inline vf vexp_ovf(vf x) { return vselect_gt(x, vset1(88.7228394f), vset1(INFINITY), vexp(x)); }

// expm1(x). exp(x) - 1 loses the relative accuracy near 0 (the subtraction cancels), so |x| < 1 takes
// the Taylor series to x^11 / 11! (truncation under 4e-9 relative), x + x^2 p(x); beyond, the
// cancellation costs under 1.6x exp's error. expm1(-0) is -0 (x + x^2 p gives +0 there).
inline vf vexpm1(vf x) {
  const vf one = vset1(1.0f);
  vf p = vset1(2.50521084e-8f);                 // 1/11!
  p = vfmadd(p, x, vset1(2.75573192e-7f));      // 1/10!
  p = vfmadd(p, x, vset1(2.75573192e-6f));      // 1/9!
  p = vfmadd(p, x, vset1(2.48015873e-5f));      // 1/8!
  p = vfmadd(p, x, vset1(1.98412698e-4f));      // 1/7!
  p = vfmadd(p, x, vset1(1.38888889e-3f));      // 1/6!
  p = vfmadd(p, x, vset1(8.33333333e-3f));      // 1/5!
  p = vfmadd(p, x, vset1(4.16666667e-2f));      // 1/4!
  p = vfmadd(p, x, vset1(1.66666667e-1f));      // 1/3!
  p = vfmadd(p, x, vset1(0.5f));
  vf small = vfmadd(vmul(x, x), p, x);
  small = vselect_gt(vabs(x), vzero(), small, x);  // +-0 stays +-0
  vf big = vsub(vexp_ovf(x), one);
  return vselect_gt(one, vabs(x), small, big);     // NaN: big (exp(NaN) - 1)
}

// log1p(z) for z in [0, 1] or NaN (the callers' z = exp(-|x|)): Cephes' logf polynomial, about 1 ulp,
// on f in [sqrt(1/2) - 1, sqrt(2) - 1]. Where 1 + z <= sqrt 2, f = z itself (no rounding of 1 + z);
// else f = (1 + z) / 2 - 1 (exact) plus ln 2, and the rounding of u = 1 + z added back as
// (z - (u - 1)) / u.
inline vf vlog1p01(vf z) {
  const vf one = vset1(1.0f), zero = vzero(), sqrt2 = vset1(1.41421356f);
  vf u = vadd(one, z);
  vf e = vselect_gt(u, sqrt2, one, zero);
  vf f = vselect_gt(u, sqrt2, vsub(vmul(u, vset1(0.5f)), one), z);
  vf c = vselect_gt(u, sqrt2, vdiv(vsub(z, vsub(u, one)), u), zero);
  vf f2 = vmul(f, f);
  vf p = vset1(7.0376836292e-2f);
  p = vfmadd(p, f, vset1(-1.1514610310e-1f));
  p = vfmadd(p, f, vset1(1.1676998740e-1f));
  p = vfmadd(p, f, vset1(-1.2420140846e-1f));
  p = vfmadd(p, f, vset1(1.4249322787e-1f));
  p = vfmadd(p, f, vset1(-1.6668057665e-1f));
  p = vfmadd(p, f, vset1(2.0000714765e-1f));
  p = vfmadd(p, f, vset1(-2.4999993993e-1f));
  p = vfmadd(p, f, vset1(3.3333331174e-1f));
  vf y = vmul(vmul(p, f), f2);
  y = vfmadd(e, vset1(-2.12194440e-4f), y);
  y = vfnmadd(vset1(0.5f), f2, y);
  y = vadd(y, c);
  return vfmadd(e, vset1(0.693359375f), vadd(f, y));
}

// log1p(exp(x)) = max(x, 0) + log1p(exp(-|x|)): no overflow, and relative accuracy for x << 0 too.
// NaN propagates (vmax returns its second operand for NaN).
inline vf vsoftplus(vf x) { return vadd(vmax(vzero(), x), vlog1p01(vexp(vneg(vabs(x))))); }

// sigmoid(x) as z / (z + 1), z = exp(x): exactly 0 at -inf (mish's gradient is then -inf * 0 = NaN,
// as torch's) and 1 from x = 80 on (exp's argument is clamped there; NaN passes vmin's second operand).
inline vf vsigmoid_z(vf x) {
  vf z = vexp(vmin(vset1(80.0f), x));
  return vdiv(z, vadd(z, vset1(1.0f)));
}

// sign(x) with sign(+-0) = +0 and sign(NaN) = NaN (numpy's and torch's).
inline vf vsign(vf x) {
  const vf zero = vzero();
  return vselect_gt(x, zero, vset1(1.0f), vselect_gt(zero, x, vset1(-1.0f), vmul(vabs(x), zero)));
}

}  // namespace

void pw_forward(int op, const float* x, float* y, int64_t n, float p0, float p1, float p2) {
  const vf zero = vzero(), one = vset1(1.0f), three = vset1(3.0f), six = vset1(6.0f);
  switch (op) {
    case kPwElu: {  // p = scale, negcoef, input_scale; torch's x >= 0 branch keeps +-0 for a negative alpha too
      const vf scale = vset1(p0), negcoef = vset1(p1), is = vset1(p2);
      map1(x, y, n, kGrainTranscendental,
           [&](vf v) { return vselect_gt(zero, v, vmul(vexpm1(vmul(v, is)), negcoef), vmul(v, scale)); });
      break;
    }
    case kPwSoftplus: {  // p = beta, threshold: x where beta x > threshold
      const vf beta = vset1(p0), thr = vset1(p1);
      map1(x, y, n, kGrainTranscendental, [&](vf v) {
        vf bx = vmul(v, beta);
        return vselect_gt(bx, thr, v, vdiv(vsoftplus(bx), beta));
      });
      break;
    }
    case kPwMish:  // x tanh(softplus(x)); -inf gives -inf * 0 = NaN, as torch's
      map1(x, y, n, kGrainTranscendental, [](vf v) { return vmul(v, vtanh(vsoftplus(v))); });
      break;
    case kPwLogsigmoid:  // min(x, 0) - log1p(exp(-|x|)); vmin(0, NaN) is NaN
      map1(x, y, n, kGrainTranscendental, [&](vf v) { return vsub(vmin(zero, v), vlog1p01(vexp(vneg(vabs(v))))); });
      break;
    case kPwHardsigmoid:  // min(max(x + 3, 0), 6) / 6; NaN passes both (second operands)
      map1(x, y, n, kGrainCheap, [&](vf v) { return vdiv(vmin(six, vmax(zero, vadd(v, three))), six); });
      break;
    case kPwHardswish:  // (x * clip(x + 3, 0, 6)) / 6: -inf * 0 = NaN at -inf, as torch's
      map1(x, y, n, kGrainCheap, [&](vf v) { return vdiv(vmul(v, vmin(six, vmax(zero, vadd(v, three)))), six); });
      break;
    case kPwSoftsign:  // x / (|x| + 1): inf / inf = NaN at +-inf, as torch's composite
      map1(x, y, n, kGrainCheap, [&](vf v) { return vdiv(v, vadd(vabs(v), one)); });
      break;
    case kPwTanhshrink:  // + 0: torch's -0 - tanh(-0) is +0 (vtanh(-0) is +0, and -0 - +0 would be -0)
      map1(x, y, n, kGrainTranscendental, [&](vf v) { return vadd(vsub(v, vtanh(v)), zero); });
      break;
    case kPwHardtanh: {  // NaN passes both (second operands)
      const vf lo = vset1(p0), hi = vset1(p1);
      map1(x, y, n, kGrainCheap, [&](vf v) { return vmin(hi, vmax(lo, v)); });
      break;
    }
    case kPwSoftshrink: {  // NaN stays NaN (both compares fail, then the last select keeps x)
      const vf l = vset1(p0), ml = vset1(-p0), inf = vset1(INFINITY);
      map1(x, y, n, kGrainCheap, [&](vf v) {
        vf r = vselect_gt(v, l, vsub(v, l), vselect_gt(ml, v, vadd(v, l), zero));
        return vselect_le(v, inf, r, v);
      });
      break;
    }
    case kPwHardshrink: {  // 0 on [-l, l]; NaN stays NaN
      const vf l = vset1(p0), ml = vset1(-p0);
      map1(x, y, n, kGrainCheap, [&](vf v) { return vselect_le(v, l, vselect_le(ml, v, zero, v), v); });
      break;
    }
    case kPwThreshold: {  // NaN stays NaN (x <= threshold is false for it)
      const vf th = vset1(p0), value = vset1(p1);
      map1(x, y, n, kGrainCheap, [&](vf v) { return vselect_le(v, th, value, v); });
      break;
    }
    default: break;  // kPwEluFromOutput has no forward; the binding refuses unknown codes
  }
}

void pw_backward(int op, const float* g, const float* saved, float* dx, int64_t n, float p0, float p1, float p2) {
  const vf zero = vzero(), one = vset1(1.0f), three = vset1(3.0f);
  switch (op) {
    case kPwElu: {  // saved = x; p = scale, coef (= input_scale negcoef), input_scale; NaN x: g scale
      const vf scale = vset1(p0), coef = vset1(p1), is = vset1(p2);
      map2(g, saved, dx, n, kGrainTranscendental,
           [&](vf gv, vf x) { return vmul(gv, vselect_le(x, zero, vmul(vexp_ovf(vmul(x, is)), coef), scale)); });
      break;
    }
    case kPwEluFromOutput: {  // saved = y; p = alpha: g (y + alpha) where y <= 0, else g (NaN y too)
      const vf alpha = vset1(p0);
      map2(g, saved, dx, n, kGrainCheap,
           [&](vf gv, vf y) { return vmul(gv, vselect_le(y, zero, vadd(y, alpha), one)); });
      break;
    }
    case kPwSoftplus: {  // g sigmoid(beta x), g where beta x > threshold
      const vf beta = vset1(p0), thr = vset1(p1);
      map2(g, saved, dx, n, kGrainTranscendental, [&](vf gv, vf x) {
        vf bx = vmul(x, beta);
        return vmul(gv, vselect_gt(bx, thr, one, vsigmoid_z(bx)));
      });
      break;
    }
    case kPwMish:  // g (t + x sigmoid(x) (1 - t^2)), t = tanh(softplus(x)): NaN at +-inf, as torch's
      map2(g, saved, dx, n, kGrainTranscendental, [&](vf gv, vf x) {
        vf t = vtanh(vsoftplus(x));
        return vmul(gv, vfmadd(vmul(x, vsigmoid_z(x)), vfnmadd(t, t, one), t));
      });
      break;
    case kPwLogsigmoid:  // torch's form: q = z / (1 + z), z = exp(-|x|); g (1 - q) where x < 0, else g q
      map2(g, saved, dx, n, kGrainTranscendental, [&](vf gv, vf x) {
        vf z = vexp(vneg(vabs(x)));
        vf q = vdiv(z, vadd(one, z));
        return vmul(gv, vselect_gt(zero, x, vsub(one, q), q));
      });
      break;
    case kPwHardsigmoid: {  // g / 6 strictly inside (-3, 3), else 0 (NaN too; torch's 1.0f / 6.0f)
      const vf sixth = vset1(1.0f / 6.0f), m3 = vset1(-3.0f);
      map2(g, saved, dx, n, kGrainCheap,
           [&](vf gv, vf x) { return vselect_gt(x, m3, vselect_gt(three, x, vmul(gv, sixth), zero), zero); });
      break;
    }
    case kPwHardswish: {  // g times 0 for x <= -3, x / 3 + 1/2 inside, 1 from 3 on (and for NaN)
      const vf m3 = vset1(-3.0f), half = vset1(0.5f);
      map2(g, saved, dx, n, kGrainCheap, [&](vf gv, vf x) {
        vf inner = vselect_gt(three, x, vadd(vdiv(x, three), half), one);
        return vmul(gv, vselect_le(x, m3, zero, inner));
      });
      break;
    }
    case kPwSoftsign:  // torch's composite x / u, u = |x| + 1, term by term: g / u - g ((x / u) / u) sign(x)
      map2(g, saved, dx, n, kGrainCheap, [&](vf gv, vf x) {
        vf u = vadd(vabs(x), one);
        return vsub(vdiv(gv, u), vmul(vmul(gv, vdiv(vdiv(x, u), u)), vsign(x)));
      });
      break;
    case kPwTanhshrink:  // torch's composite x - tanh(x): g - g (1 - t^2)
      map2(g, saved, dx, n, kGrainTranscendental, [&](vf gv, vf x) {
        vf t = vtanh(x);
        return vsub(gv, vmul(gv, vfnmadd(t, t, one)));
      });
      break;
    case kPwHardtanh: {  // g strictly inside (lo, hi), else 0 (also for NaN x or g)
      const vf lo = vset1(p0), hi = vset1(p1);
      map2(g, saved, dx, n, kGrainCheap,
           [&](vf gv, vf x) { return vselect_gt(x, lo, vselect_gt(hi, x, gv, zero), zero); });
      break;
    }
    case kPwSoftshrink:
    case kPwHardshrink: {  // g outside [-l, l], else 0 (NaN x too)
      const vf l = vset1(p0), ml = vset1(-p0);
      map2(g, saved, dx, n, kGrainCheap,
           [&](vf gv, vf x) { return vselect_gt(x, l, gv, vselect_gt(ml, x, gv, zero)); });
      break;
    }
    case kPwThreshold: {  // 0 where x <= threshold, else g (NaN x: g)
      const vf th = vset1(p0);
      map2(g, saved, dx, n, kGrainCheap, [&](vf gv, vf x) { return vselect_le(x, th, zero, gv); });
      break;
    }
    default: break;
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
