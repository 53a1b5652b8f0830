// Fused softmax cross-entropy over (N, C) logits with class-index targets (see loss.h).
// Forward saves prob = softmax(logits) so that backward is one pass: no exp, no log.
#include <cmath>

#include "forgegrad/loss.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"
#include "softmax_rows.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

using rows::imax;

// One row: writes p = softmax(x) and returns the row's loss. Label smoothing adds a pass for
// sum_c w_c (x_c - m).
float ce_row(const float* x, const float* w, int64_t C, int64_t t, float w_total, float eps, float* p) {
  const float m_s = rows::row_max(x, C);
  const vf m = vset1(m_s);
  const double s = rows::softmax_into(x, m, p, C);
  const float ls = static_cast<float>(std::log(s));
  const float wt = w ? w[t] : 1.0f;
  const float logp_t = (x[t] - m_s) - ls;
  float loss = (1.0f - eps) * (-wt * logp_t);
  if (eps > 0.0f) {
    // sum_c w_c logp_c = sum_c w_c (x_c - m) - log(s) * sum_c w_c
    double swz;
    if (w)
      swz = rows::row_sum(
          C, [&](int64_t k) { return vmul(vload(w + k), vsub(vload(x + k), m)); },
          [&](int64_t k, int r) {
            return vmul(vload_n(w + k, r), rows::keep_first(vsub(vload_n(x + k, r), m), vzero(), r));
          });
    else
      swz = rows::row_sum(
          C, [&](int64_t k) { return vsub(vload(x + k), m); },
          [&](int64_t k, int r) { return rows::keep_first(vsub(vload_n(x + k, r), m), vzero(), r); });
    const float sum_w_logp = static_cast<float>(swz - static_cast<double>(ls) * w_total);
    loss += eps / static_cast<float>(C) * -sum_w_logp;
  }
  return loss;
}

}  // namespace

void cross_entropy_forward(const float* logits, const int64_t* target, const float* weight, float weight_total,
                           int64_t N, int64_t C, int64_t ignore_index, float label_smoothing, float* prob,
                           float* loss) {
  if (C <= 0) return;
  parallel_for(N, imax(1, 8192 / C), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t t = target[r];
      const bool ignored = t == ignore_index;
      // An ignored row still gets its softmax (cheap, keeps prob defined); its loss is 0.
      float l = ce_row(logits + r * C, weight, C, ignored ? 0 : t, weight_total, label_smoothing, prob + r * C);
      loss[r] = ignored ? 0.0f : l;
    }
  });
}

void cross_entropy_backward(const float* prob, const int64_t* target, const float* weight, float weight_total,
                            int64_t N, int64_t C, int64_t ignore_index, float label_smoothing, const float* grad_loss,
                            float grad_scale, float* dlogits) {
  if (C <= 0) return;
  const float eps = label_smoothing;
  const float eps_c = eps / static_cast<float>(C);
  parallel_for(N, imax(1, 16384 / C), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* p = prob + r * C;
      float* d = dlogits + r * C;
      const int64_t t = target[r];
      int64_t i = 0;
      // An ignored row's upstream gradient is 0 but, as in torch's log_softmax backward (g - p * sum g),
      // it still meets p and the class weights: NaN where p is NaN or (with smoothing) a weight is not finite.
      const bool ignored = t == ignore_index;
      const float a = ignored ? 0.0f : (grad_loss ? grad_scale * grad_loss[r] : grad_scale);
      const float wt = ignored ? 0.0f : (weight ? weight[t] : 1.0f);
      const vf ac = vset1(a * ((1.0f - eps) * wt + (eps > 0.0f ? eps_c * weight_total : 0.0f)));
      if (eps > 0.0f) {
        const vf aw = vset1(a * eps_c);
        if (weight) {
          for (; i + W <= C; i += W) vstore(d + i, vfnmadd(aw, vload(weight + i), vmul(vload(p + i), ac)));
          if (i < C) {
            int k = static_cast<int>(C - i);
            vstore_n(d + i, vfnmadd(aw, vload_n(weight + i, k), vmul(vload_n(p + i, k), ac)), k);
          }
        } else {
          for (; i + W <= C; i += W) vstore(d + i, vsub(vmul(vload(p + i), ac), aw));
          if (i < C) {
            int k = static_cast<int>(C - i);
            vstore_n(d + i, vsub(vmul(vload_n(p + i, k), ac), aw), k);
          }
        }
      } else {
        for (; i + W <= C; i += W) vstore(d + i, vmul(vload(p + i), ac));
        if (i < C) {
          int k = static_cast<int>(C - i);
          vstore_n(d + i, vmul(vload_n(p + i, k), ac), k);
        }
      }
      if (!ignored) d[t] -= a * (1.0f - eps) * wt;
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
