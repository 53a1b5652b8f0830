// Decode attention over a paged KV cache (vLLM's PagedAttention, one query token per row, on the CPU):
//   out[b, h, r] = softmax_p(cap(q[b, h, r] . k_p * scale)) v_p   for p in [lo_b, len_b)
// q (B, Hkv, rep, D): rep query heads share kv head h (grouped-query attention); the keys and values
// of row b at position p are block tables[b, p / BT], place p % BT of the pools k, v (blocks, Hkv, BT,
// D). lo_b = max(0, len_b - window) with a sliding window (window > 0), else 0; cap(s) = softcap *
// tanh(s / softcap) when softcap > 0 (Gemma 2), else s. With a bias table (T5's relative-position bias), query
// head g = h * rep + r's score against position p gains bias[g, min(len_b - 1 - p, bias_len - 1)] after the cap:
// the query is the row's last position, the distance len_b - 1 - p >= 0, and distances past the table read its
// last column (T5's buckets saturate, so a table as long as max_distance covers any row).
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

// Vectors of the output a task keeps in registers while it walks a row's values (a chunk of D).
constexpr int kOutVecs = 8;

// sum_i a[i] * b[i] over D elements: W-wide products accumulated in one vector, then reduced. The four-key form
// below runs the same operations per key, so a key's score does not depend on which form computed it.
inline float dot(const float* a, const float* b, int64_t D) {
  vf acc = vzero();
  int64_t i = 0;
  for (; i + W <= D; i += W) acc = vfmadd(vload(a + i), vload(b + i), acc);
  if (i < D) acc = vfmadd(vload_n(a + i, static_cast<int>(D - i)), vload_n(b + i, static_cast<int>(D - i)), acc);
  return vreduce_add(acc);
}

// s[0, 4) = a . b[t * D, (t + 1) * D) for the four consecutive rows t of b: four independent chains.
inline void dot4(const float* a, const float* b, int64_t D, float* s) {
  vf c0 = vzero(), c1 = vzero(), c2 = vzero(), c3 = vzero();
  int64_t i = 0;
  for (; i + W <= D; i += W) {
    const vf x = vload(a + i);
    c0 = vfmadd(x, vload(b + i), c0);
    c1 = vfmadd(x, vload(b + D + i), c1);
    c2 = vfmadd(x, vload(b + 2 * D + i), c2);
    c3 = vfmadd(x, vload(b + 3 * D + i), c3);
  }
  if (i < D) {
    const int r = static_cast<int>(D - i);
    const vf x = vload_n(a + i, r);
    c0 = vfmadd(x, vload_n(b + i, r), c0);
    c1 = vfmadd(x, vload_n(b + D + i, r), c1);
    c2 = vfmadd(x, vload_n(b + 2 * D + i, r), c2);
    c3 = vfmadd(x, vload_n(b + 3 * D + i, r), c3);
  }
  s[0] = vreduce_add(c0), s[1] = vreduce_add(c1), s[2] = vreduce_add(c2), s[3] = vreduce_add(c3);
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

// Calls f(rows, first, count) for the runs of consecutive positions [lo, len) that share a block: ``count`` rows of
// D floats from ``rows`` (the block's places of head h), the first of them position ``first``.
template <class F>
inline void for_runs(const float* pool, const int64_t* table, int64_t block, int64_t h, int64_t BT, int64_t D,
                     int64_t lo, int64_t len, F&& f) {
  for (int64_t p = lo; p < len;) {
    const int64_t place = p % BT, count = (len - p < BT - place) ? len - p : BT - place;
    f(pool + table[p / BT] * block + (h * BT + place) * D, p, count);
    p += count;
  }
}

}  // namespace

void paged_attention_decode(const float* q, const float* k, const float* v, const int64_t* tables,
                            const int64_t* lengths, int64_t B, int64_t Hkv, int64_t rep, int64_t D, int64_t BT,
                            int64_t width, int64_t window, float scale, float softcap, const float* bias,
                            int64_t bias_len, float* out) {
  int64_t longest = 1;
  for (int64_t b = 0; b < B; ++b) longest = lengths[b] > longest ? lengths[b] : longest;
  const int64_t block = Hkv * BT * D;  // one block of one layer, every kv head
  parallel_tasks(B * Hkv, 2 * rep * longest * D, [&](int64_t task) {
    const int64_t b = task / Hkv, h = task % Hkv;
    const int64_t len = lengths[b];
    const int64_t lo = window > 0 && len > window ? len - window : 0;
    const int64_t n = len - lo;
    const int64_t* table = tables + b * width;
    std::vector<float> scores(static_cast<size_t>(rep * n)), probs(static_cast<size_t>(rep * n));
    const float* qh = q + (b * Hkv + h) * rep * D;
    // scores (rep, n): the keys block by block, four at a time
    for_runs(k, table, block, h, BT, D, lo, len, [&](const float* rows, int64_t first, int64_t count) {
      for (int64_t r = 0; r < rep; ++r) {
        float* s = scores.data() + r * n + (first - lo);
        int64_t t = 0;
        for (; t + 4 <= count; t += 4) dot4(qh + r * D, rows + t * D, D, s + t);
        for (; t < count; ++t) s[t] = dot(qh + r * D, rows + t * D, D);
      }
    });
    for (int64_t r = 0; r < rep; ++r) {
      float* s = scores.data() + r * n;
      const vf sc = vset1(scale);
      int64_t i = 0;
      for (; i + W <= n; i += W) vstore(s + i, vmul(vload(s + i), sc));
      if (i < n) vstore_n(s + i, vmul(vload_n(s + i, static_cast<int>(n - i)), sc), static_cast<int>(n - i));
      if (softcap > 0.0f) cap_scores(s, n, softcap);
      if (bias != nullptr) {  // position lo + i is at distance len - 1 - lo - i of the query
        const float* bh = bias + (h * rep + r) * bias_len;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t dist = len - 1 - lo - i;
          s[i] += bh[dist < bias_len ? dist : bias_len - 1];
        }
      }
      rows::softmax_into(s, vset1(rows::row_max(s, n)), probs.data() + r * n, n);
    }
    // out (rep, D) = probs v: a chunk of kOutVecs vectors of D at a time in registers, the values in position order
    float* oh = out + (b * Hkv + h) * rep * D;
    for (int64_t r = 0; r < rep; ++r) {
      const float* pr = probs.data() + r * n;
      for (int64_t d0 = 0; d0 < D; d0 += kOutVecs * W) {
        const int64_t span = D - d0 < kOutVecs * W ? D - d0 : kOutVecs * W;
        const int full = static_cast<int>(span / W), tail = static_cast<int>(span % W);
        vf acc[kOutVecs + 1];
        for (int j = 0; j <= full; ++j) acc[j] = vzero();
        for_runs(v, table, block, h, BT, D, lo, len, [&](const float* rows, int64_t first, int64_t count) {
          for (int64_t t = 0; t < count; ++t) {
            const vf pv = vset1(pr[first - lo + t]);
            const float* x = rows + t * D + d0;
            for (int j = 0; j < full; ++j) acc[j] = vfmadd(pv, vload(x + j * W), acc[j]);
            if (tail) acc[full] = vfmadd(pv, vload_n(x + full * W, tail), acc[full]);
          }
        });
        for (int j = 0; j < full; ++j) vstore(oh + r * D + d0 + j * W, acc[j]);
        if (tail) vstore_n(oh + r * D + d0 + full * W, acc[full], tail);
      }
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
