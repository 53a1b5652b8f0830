// Scaled dot-product attention for short sequences (attention_small_path: L, S <= kAttnSmallLen, no soft cap),
// forward and backward, on the microkernel of attention_tiles.h:
//   out = softmax(q k^T * scale + mask) v,   q (N, L, E), k (N, S, E), v (N, S, Ev), out (N, L, Ev).
// attention.cpp's flash tiling keeps a running max and rescales its output per 64-key block, and its
// backward recomputes the scores once per (key block, query tile) pair. With at most 256 keys a pair's whole
// score matrix fits in L2, so here:
//   forward, per group of kMR query rows: the group's scores against every key it sees (a kMR x S block),
//     the softmax over whole rows (one max, one exp per score), then out = P v / rowsum;
//   backward, per pair: phase A, per group of kMR query rows, P = exp(S - lse), dP = dO v^T,
//     dS = P * (dP - D) with D = rowsum(dO * out), stored for the pair (L x S each), and dQ = dS k;
//     phase B, per group of kMR keys, dV = P^T dO and dK = dS^T (q * scale) over the rows that see them.
// Causal masks (top-left aligned: query r sees keys c <= r) are followed at the microkernel's grain: a row
// group computes the score columns up to its last row's key (rounded up to a vector), the P v and dS k
// products run over the keys it sees, and the key groups' products over the rows from the group's first key:
// the causal triangle plus a thin diagonal band, where the 64-key tiles computed up to twice the triangle's
// work on short sequences. The masked, fully masked and NaN rows give what attention.cpp gives (0 and
// lse = -inf for a row with no key; NaN spread over a row with a NaN score).
//
// Threads: with enough pairs for every thread, a task is one pair (its operands stay in L2); otherwise the
// pairs' operands are prepared once and the forward's tasks are (pair, block of query rows), the backward's
// phase A (pair, block of query rows) and phase B (pair, block of keys). Every element is computed by the same
// operations in the same order either way (a dot product runs its K dimension in ascending order, a row's
// softmax is one pass): bit-identical for any thread count.
#include <cmath>
#include <vector>

#include "attention_tiles.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

using namespace attn;

constexpr int64_t kBlockRows = 48;  // query rows (backward: and keys) per task when pairs are split; kMR | 48

struct Shape {
  int64_t L, S, E, Ev, ep, evp, ldt;  // ldt: row stride of k^T, v^T, P and dS, S rounded up to a vector (or more)
  bool causal;
};

Shape make_shape(int64_t L, int64_t S, int64_t E, int64_t Ev, bool causal) {
  int64_t ldt = round_up(S, W);
  // rows a multiple of 512 bytes apart map onto a quarter of L1's sets: the microkernel's B panel (64 rows of
  // k^T) would evict itself
  if (ldt % 128 == 0) ldt += 16;
  return {L, S, E, Ev, round_up(E, W), round_up(Ev, W), ldt, causal};
}

// Keys query row r sees: [0, row_keys).
inline int64_t row_keys(const Shape& s, int64_t r) { return s.causal ? imin(r + 1, s.S) : s.S; }

// Keys some row of the group [i, i + mr) sees: the K of its P v and dS k products (its score columns are
// that, rounded up to a vector).
inline int64_t group_keys(const Shape& s, int64_t i, int64_t mr) { return row_keys(s, i + mr - 1); }

// Whether whole pairs keep the threads busy (at least 4/5 of the last round); otherwise the pairs are split.
inline bool whole_pairs(int64_t pairs, int threads) {
  const int64_t rounds = (pairs + threads - 1) / threads;
  return threads <= 1 || 5 * pairs >= 4 * threads * rounds;
}

// Prefetches (for writing) rows [0, rows) of cols floats at p, row stride ld: result rows written after a group's
// products, which hide the fetch (the results are strided rows of arrays that are seldom in cache).
inline void prefetch_rows(float* p, int64_t ld, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; c += 16) __builtin_prefetch(p + r * ld + c, 1, 3);
    __builtin_prefetch(p + r * ld + cols - 1, 1, 3);  // the row's last line (rows need not be 64-byte aligned)
  }
}

// ---- forward ----

struct Operands {  // what every task reads: the arguments, by (batch, head) pair n
  const float *q, *k, *v;
  AttnLayout lq, lk, lv;
  float scale;
  const float* mask;
  const int64_t* moff;
  int64_t mrs;
  const float* mask_rows(int64_t n) const { return mask ? mask + moff[n] : nullptr; }
};

struct KeyPanel {  // one pair's k^T (E x ldt, zero past S) and v rows (row stride ldv, Ev padded to a vector)
  const float* kt;
  const float* vb;
  int64_t ldv;
};

// Floats of a pair's KeyPanel buffer.
inline int64_t panel_floats(const Shape& s, bool copy_v) { return s.E * s.ldt + (copy_v ? s.S * s.evp : 0); }

KeyPanel make_panel(const Shape& s, const Operands& a, int64_t n, bool copy_v, float* at) {
  transpose_padded(a.k + a.lk.base(n), s.S, s.E, a.lk.sr, at, s.ldt);
  KeyPanel p{at, a.v + a.lv.base(n), a.lv.sr};
  if (copy_v) {
    float* vp = at + s.E * s.ldt;
    copy_padded(p.vb, s.S, s.Ev, a.lv.sr, vp, s.evp);
    p.vb = vp, p.ldv = s.evp;
  }
  return p;
}

// Floats of forward_rows's buffer for up to `rows` query rows.
inline int64_t rows_floats(const Shape& s, int64_t rows) { return rows * s.ep + kMR * (s.ldt + s.evp); }

// out and lse of query rows [r0, r1) of pair n (r0 a multiple of kMR), one row group at a time; buf holds
// rows_floats(r1 - r0) floats.
void forward_rows(const Shape& s, const Operands& a, int64_t n, int64_t r0, int64_t r1, const KeyPanel& kp, float* out,
                  AttnLayout lo, float* lse, float* buf) {
  float* qs = buf;  // the rows of q * scale (copied in one pass: a stream the prefetchers follow)
  float* st = qs + (r1 - r0) * s.ep;  // a group's scores, then exp(scores - max)
  float* og = st + kMR * s.ldt;  // P v
  float m[kMR], l[kMR];
  const float* mn = a.mask_rows(n);
  copy_scaled(a.q + a.lq.base(n) + r0 * a.lq.sr, r1 - r0, s.E, a.lq.sr, a.scale, qs, s.ep);
  for (int64_t i = r0; i < r1; i += kMR) {
    const int64_t mr = imin(kMR, r1 - i), keys = group_keys(s, i, mr);
    prefetch_rows(out + lo.base(n) + i * lo.sr, lo.sr, mr, s.Ev);
    tile_gemm<false>(mr, round_up(keys, W), s.E, qs + (i - r0) * s.ep, s.ep, 1, kp.kt, s.ldt, st, s.ldt);
    for (int64_t r = 0; r < mr; ++r) {
      float* sr = st + r * s.ldt;
      const int64_t lim = row_keys(s, i + r);
      add_mask(sr, mn ? mn + (i + r) * a.mrs : nullptr, lim);
      m[r] = vec_max(sr, lim);
      if (m[r] == -INFINITY) {  // no key: P = 0 (a NaN score, which the max skips, makes the row NaN)
        l[r] = has_nan(sr, lim) ? NAN : 0.0f;
        zero(sr, keys);
        continue;
      }
      l[r] = exp_sub_sum(sr, lim, m[r]);
      zero(sr + lim, keys - lim);
    }
    tile_gemm<false>(mr, s.evp, keys, st, s.ldt, 1, kp.vb, kp.ldv, og, s.evp);
    for (int64_t r = 0; r < mr; ++r) {
      float* o = out + lo.base(n) + (i + r) * lo.sr;
      const bool any = !(l[r] <= 0.0f);  // a key seen, or a NaN row (NaN out, as torch)
      const float inv = any ? 1.0f / l[r] : 0.0f;
      for (int64_t e = 0; e < s.Ev; ++e) o[e] = og[r * s.evp + e] * inv;
      lse[n * s.L + i + r] = any ? m[r] + std::log(l[r]) : -INFINITY;
    }
  }
}

// ---- backward ----

struct PairGrad {  // one pair's backward operands (contiguous, padded to vectors) and its P and dS (L x ldt)
  float* D;  // rowsum(dO * out)
  float* qs;  // q * scale (L x ep)
  const float* gb;  // dO (row stride ldg)
  int64_t ldg;
  float *kt, *vt;  // k^T, v^T (E x ldt, Ev x ldt)
  const float* kb;  // k rows (row stride ldk)
  int64_t ldk;
  float *P, *dS;
};

struct GradLayout {  // where backward reads out and dO and writes dq, dk, dv
  const float *out, *grad_out, *lse;
  AttnLayout lo;
  float *dq, *dk, *dv;
  AttnLayout wq, wk, wv;
};

struct Pads {
  bool e, ev;  // k copied (E % W or strided rows), dO copied (Ev % W or strided rows)
};

inline int64_t pair_floats(const Shape& s, Pads pad) {
  return s.L + s.L * s.ep + (pad.ev ? s.L * s.evp : 0) + (s.E + s.Ev) * s.ldt + (pad.e ? s.S * s.ep : 0) +
         2 * s.L * s.ldt;
}

PairGrad make_pair_grad(const Shape& s, const Operands& a, const GradLayout& g, Pads pad, int64_t n, float* at) {
  PairGrad p;
  const float* gn = g.grad_out + g.lo.base(n);
  p.D = at, at += s.L;
  row_dots(gn, g.out + g.lo.base(n), g.lo.sr, s.L, s.Ev, p.D);
  p.qs = at, at += s.L * s.ep;
  copy_scaled(a.q + a.lq.base(n), s.L, s.E, a.lq.sr, a.scale, p.qs, s.ep);
  p.gb = gn, p.ldg = g.lo.sr;
  if (pad.ev) copy_padded(gn, s.L, s.Ev, g.lo.sr, at, s.evp), p.gb = at, p.ldg = s.evp, at += s.L * s.evp;
  const float* kn = a.k + a.lk.base(n);
  p.kt = at, at += s.E * s.ldt;
  transpose_padded(kn, s.S, s.E, a.lk.sr, p.kt, s.ldt);
  p.vt = at, at += s.Ev * s.ldt;
  transpose_padded(a.v + a.lv.base(n), s.S, s.Ev, a.lv.sr, p.vt, s.ldt);
  p.kb = kn, p.ldk = a.lk.sr;
  if (pad.e) copy_padded(kn, s.S, s.E, a.lk.sr, at, s.ep), p.kb = at, p.ldk = s.ep, at += s.S * s.ep;
  p.P = at, at += s.L * s.ldt;
  p.dS = at;
  return p;
}

// Phase A for query rows [r0, r1) (r0 a multiple of kMR): P and dS of each row group, zero past each row's
// keys up to the group's score columns, and its dq rows = dS k * scale. tmp: kMR x ep floats. The score
// columns are those of a whole group even when L cuts the last one short: phase B's key groups read them.
void rows_grads(const Shape& s, const Operands& a, const GradLayout& g, const PairGrad& p, int64_t n, int64_t r0,
                int64_t r1, float* tmp) {
  const float* mn = a.mask_rows(n);
  const float* ln = g.lse + n * s.L;
  for (int64_t i = r0; i < r1; i += kMR) {
    const int64_t mr = imin(kMR, r1 - i), keys = group_keys(s, i, mr), cols = round_up(group_keys(s, i, kMR), W);
    float* P = p.P + i * s.ldt;
    float* dS = p.dS + i * s.ldt;
    prefetch_rows(g.dq + g.wq.base(n) + i * g.wq.sr, g.wq.sr, mr, s.E);
    tile_gemm<false>(mr, cols, s.E, p.qs + i * s.ep, s.ep, 1, p.kt, s.ldt, P, s.ldt);
    tile_gemm<false>(mr, cols, s.Ev, p.gb + i * p.ldg, p.ldg, 1, p.vt, s.ldt, dS, s.ldt);  // dP
    for (int64_t r = 0; r < mr; ++r) {
      float* pr = P + r * s.ldt;
      float* ds = dS + r * s.ldt;
      const int64_t row = i + r, lim = row_keys(s, row);
      if (ln[row] == -INFINITY) {  // a row without keys: no gradient
        zero(pr, cols);
        zero(ds, cols);
        continue;
      }
      add_mask(pr, mn ? mn + row * a.mrs : nullptr, lim);
      exp_sub_sum(pr, lim, ln[row]);
      zero(pr + lim, cols - lim);
      const vf d = vset1(p.D[row]);
      for (int64_t c = 0; c < cols; c += W) vstore(ds + c, vmul(vload(pr + c), vsub(vload(ds + c), d)));
    }
    tile_gemm<false>(mr, s.ep, keys, dS, s.ldt, 1, p.kb, p.ldk, tmp, s.ep);
    for (int64_t r = 0; r < mr; ++r) {
      float* dq = g.dq + g.wq.base(n) + (i + r) * g.wq.sr;
      for (int64_t e = 0; e < s.E; ++e) dq[e] = tmp[r * s.ep + e] * a.scale;
    }
  }
}

// Phase B for keys [c0, c1) (c0 a multiple of kMR): dv = P^T dO and dk = dS^T (q * scale) of each key group,
// over the rows that see its first key onwards (causal: the rows before see none of the group's keys; the
// P and dS columns of the rows from there are stored, as phase A's groups start at multiples of kMR too).
// tmp: kMR x (ep + evp) floats.
void keys_grads(const Shape& s, const GradLayout& g, const PairGrad& p, int64_t n, int64_t c0, int64_t c1, float* tmp) {
  float* tk = tmp + kMR * s.evp;
  for (int64_t j = c0; j < c1; j += kMR) {
    const int64_t mk = imin(kMR, c1 - j), rs = s.causal ? imin(j, s.L) : 0, rows = s.L - rs;
    prefetch_rows(g.dk + g.wk.base(n) + j * g.wk.sr, g.wk.sr, mk, s.E);
    prefetch_rows(g.dv + g.wv.base(n) + j * g.wv.sr, g.wv.sr, mk, s.Ev);
    tile_gemm<false>(mk, s.evp, rows, p.P + rs * s.ldt + j, 1, s.ldt, p.gb + rs * p.ldg, p.ldg, tmp, s.evp);
    tile_gemm<false>(mk, s.ep, rows, p.dS + rs * s.ldt + j, 1, s.ldt, p.qs + rs * s.ep, s.ep, tk, s.ep);
    for (int64_t c = 0; c < mk; ++c) {
      float* dk = g.dk + g.wk.base(n) + (j + c) * g.wk.sr;
      float* dv = g.dv + g.wv.base(n) + (j + c) * g.wv.sr;
      for (int64_t e = 0; e < s.E; ++e) dk[e] = tk[c * s.ep + e];
      for (int64_t e = 0; e < s.Ev; ++e) dv[e] = tmp[c * s.evp + e];
    }
  }
}

}  // namespace

void attention_forward_small(const float* q, AttnLayout lq, const float* k, AttnLayout lk, const float* v,
                             AttnLayout lv, int64_t N, int64_t L, int64_t S, int64_t E, int64_t Ev, float scale,
                             bool causal, const float* mask, const int64_t* moff, int64_t mrs, float* out,
                             AttnLayout lo, float* lse) {
  const Shape s = make_shape(L, S, E, Ev, causal);
  const Operands a{q, k, v, lq, lk, lv, scale, mask, moff, mrs};
  // v is read many times by a pair's row groups: from a contiguous copy when its rows are strided
  const bool copy_v = Ev % W != 0 || lv.sr != Ev;
  const int64_t pn = panel_floats(s, copy_v);
  if (whole_pairs(N, get_num_threads())) {
    parallel_tasks(N, L * S * (E + Ev), [&](int64_t n) {
      AlignedBuffer buf(pn + rows_floats(s, L));
      const KeyPanel kp = make_panel(s, a, n, copy_v, buf.data());
      forward_rows(s, a, n, 0, L, kp, out, lo, lse, buf.data() + pn);
    });
    return;
  }
  AlignedBuffer shared(N * pn);
  std::vector<KeyPanel> panels(N);
  parallel_for_work(N, S * (E + Ev), [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) panels[n] = make_panel(s, a, n, copy_v, shared.data() + n * pn);
  });
  const int64_t blocks = (L + kBlockRows - 1) / kBlockRows;
  parallel_tasks(N * blocks, kBlockRows * S * (E + Ev), [&](int64_t t) {
    const int64_t n = t / blocks, r0 = (t % blocks) * kBlockRows;
    AlignedBuffer buf(rows_floats(s, kBlockRows));
    forward_rows(s, a, n, r0, imin(L, r0 + kBlockRows), panels[n], out, lo, lse, buf.data());
  });
}

void attention_backward_small(const float* q, AttnLayout lq, const float* k, AttnLayout lk, const float* v,
                              AttnLayout lv, const float* out, const float* grad_out, AttnLayout lo, const float* lse,
                              int64_t N, int64_t L, int64_t S, int64_t E, int64_t Ev, float scale, bool causal,
                              const float* mask, const int64_t* moff, int64_t mrs, float* dq, AttnLayout wq, float* dk,
                              AttnLayout wk, float* dv, AttnLayout wv) {
  const Shape s = make_shape(L, S, E, Ev, causal);
  const Operands a{q, k, v, lq, lk, lv, scale, mask, moff, mrs};
  const GradLayout g{out, grad_out, lse, lo, dq, dk, dv, wq, wk, wv};
  // k (dS k) and dO (dP, dV) are read many times: from contiguous copies when their rows are strided
  const Pads pad{E % W != 0 || lk.sr != E, Ev % W != 0 || lo.sr != Ev};
  const int64_t pn = pair_floats(s, pad), tn = kMR * (s.ep + s.evp);
  if (whole_pairs(N, get_num_threads())) {
    parallel_tasks(N, 2 * L * S * (E + Ev), [&](int64_t n) {
      AlignedBuffer buf(pn + tn);
      const PairGrad p = make_pair_grad(s, a, g, pad, n, buf.data());
      rows_grads(s, a, g, p, n, 0, L, buf.data() + pn);
      keys_grads(s, g, p, n, 0, S, buf.data() + pn);
    });
    return;
  }
  AlignedBuffer shared(N * pn);
  std::vector<PairGrad> pairs(N);
  parallel_for_work(N, L * (E + 2 * Ev) + S * (E + Ev), [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) pairs[n] = make_pair_grad(s, a, g, pad, n, shared.data() + n * pn);
  });
  const int64_t rblocks = (L + kBlockRows - 1) / kBlockRows, kblocks = (S + kBlockRows - 1) / kBlockRows;
  parallel_tasks(N * rblocks, kBlockRows * S * (E + 2 * Ev), [&](int64_t t) {
    const int64_t n = t / rblocks, r0 = (t % rblocks) * kBlockRows;
    AlignedBuffer buf(tn);
    rows_grads(s, a, g, pairs[n], n, r0, imin(L, r0 + kBlockRows), buf.data());
  });
  parallel_tasks(N * kblocks, kBlockRows * L * (E + Ev), [&](int64_t t) {
    const int64_t n = t / kblocks, c0 = (t % kblocks) * kBlockRows;
    AlignedBuffer buf(tn);
    keys_grads(s, g, pairs[n], n, c0, imin(S, c0 + kBlockRows), buf.data());
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
