// Decode attention over a paged KV cache (vLLM's PagedAttention, one query token per row, on the CPU):
//   out[b, h, r] = softmax_p(cap(q[b, h, r] . k_p * scale)) v_p   for p in [lo_b, len_b)
// q (B, Hkv, rep, D): rep query heads share kv head h (grouped-query attention); the keys and values
// of row b at position p are block tables[b, p / BT], place p % BT of the pools k, v (blocks, Hkv, BT,
// D). lo_b = max(0, len_b - window) with a sliding window (window > 0), else 0; cap(s) = softcap *
// tanh(s / softcap) when softcap > 0 (Gemma 2), else s.
//
// A task is one (b, h) pair: the scores of its rep rows (rep x len, a task-local buffer), each row's
// softmax with the softmax kernel's row code (softmax_rows.h: the same max, exp and blocked sum), then
// the weighted sum of the value rows in position order. One thread computes a task in a fixed order,
// so the result's bits do not depend on the thread count; a row reads only its own blocks, never a
// padded column, so its values do not depend on the other rows of the batch either.
#include <cmath>
#include <vector>

#include "forgegrad/attention.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"
#include "softmax_rows.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// sum_i a[i] * b[i] over D elements: W-wide products accumulated in one vector, then reduced.
inline float dot(const float* a, const float* b, int64_t D) {
  vf acc = vzero();
  int64_t i = 0;
  for (; i + W <= D; i += W) acc = vfmadd(vload(a + i), vload(b + i), acc);
  if (i < D) acc = vfmadd(vload_n(a + i, static_cast<int>(D - i)), vload_n(b + i, static_cast<int>(D - i)), acc);
  return vreduce_add(acc);
}

// o[0, D) += p * x[0, D)
inline void axpy(float p, const float* x, float* o, int64_t D) {
  const vf pv = vset1(p);
  int64_t i = 0;
  for (; i + W <= D; i += W) vstore(o + i, vfmadd(pv, vload(x + i), vload(o + i)));
  if (i < D) {
    const int r = static_cast<int>(D - i);
    vstore_n(o + i, vfmadd(pv, vload_n(x + i, r), vload_n(o + i, r)), r);
  }
}

// s[0, n) = softcap * tanh(s / softcap)
inline void cap_scores(float* s, int64_t n, float softcap) {
  const vf c = vset1(softcap), inv = vset1(1.0f / softcap);
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore(s + i, vmul(c, vtanh(vmul(vload(s + i), inv))));
  if (i < n) {
    const int r = static_cast<int>(n - i);
    vstore_n(s + i, vmul(c, vtanh(vmul(vload_n(s + i, r), inv))), r);
  }
}

}  // namespace

void paged_attention_decode(const float* q, const float* k, const float* v, const int64_t* tables,
                            const int64_t* lengths, int64_t B, int64_t Hkv, int64_t rep, int64_t D, int64_t BT,
                            int64_t width, int64_t window, float scale, float softcap, float* out) {
  int64_t longest = 1;
  for (int64_t b = 0; b < B; ++b) longest = lengths[b] > longest ? lengths[b] : longest;
  const int64_t block = Hkv * BT * D;  // one block of one layer, every kv head
  parallel_tasks(B * Hkv, 2 * rep * longest * D, [&](int64_t task) {
    const int64_t b = task / Hkv, h = task % Hkv;
    const int64_t len = lengths[b];
    const int64_t lo = window > 0 && len > window ? len - window : 0;
    const int64_t n = len - lo;
    const int64_t* table = tables + b * width;
    std::vector<float> scores(static_cast<size_t>(rep * n)), probs(static_cast<size_t>(n));
    const float* qh = q + (b * Hkv + h) * rep * D;
    for (int64_t p = lo; p < len; ++p) {
      const float* kp = k + table[p / BT] * block + (h * BT + p % BT) * D;
      for (int64_t r = 0; r < rep; ++r) scores[r * n + p - lo] = dot(qh + r * D, kp, D) * scale;
    }
    float* oh = out + (b * Hkv + h) * rep * D;
    for (int64_t r = 0; r < rep; ++r) {
      float* s = scores.data() + r * n;
      if (softcap > 0.0f) cap_scores(s, n, softcap);
      rows::softmax_into(s, vset1(rows::row_max(s, n)), probs.data(), n);
      float* o = oh + r * D;
      for (int64_t i = 0; i < D; ++i) o[i] = 0.0f;
      for (int64_t p = lo; p < len; ++p) axpy(probs[p - lo], v + table[p / BT] * block + (h * BT + p % BT) * D, o, D);
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
