// Fused scaled dot-product attention, forward and backward (FlashAttention-2's tiling on the CPU):
//   out = softmax(q k^T * scale + mask) v,   q (N, L, E), k (N, S, E), v (N, S, Ev), out (N, L, Ev)
// for N independent (batch, head) pairs. (Short sequences, attention_small_path in attention.h, take the
// whole-row kernels of attention_small.cpp instead.) The (L, S) score matrix is never stored: a task takes a
// block of kRows query rows and walks the keys in blocks of kBlk, keeping a running row maximum m,
// row sum l and an unnormalised output (the online softmax); forward saves lse = m + log(l) per row.
// Masks: causal (query r sees keys c <= r, top-left aligned as torch; key blocks past the diagonal
// are skipped) and/or an additive float mask (a bool mask arrives as 0 / -inf), read at
// mask[moff[n] + r * mrs + c] (mrs = 0 broadcasts one row over the queries). A row with no key left
// gives out = 0 and lse = -inf (torch's result), and gradients 0.
//
// Backward recomputes the scores tile by tile: for each key block j, over the query blocks i that
// see it, P = exp(S - lse), dV_j += P^T dO_i, dP = dO_i V_j^T, dS = P * (dP - D) with
// D = rowsum(dO * out), dK_j += dS^T (Q_i * scale), dQ_i += dS K_j (dQ scaled at the end).
// With a soft cap c (Gemma 2) the scores are t = c * tanh(x / c) of the scaled products x, the mask is
// added to t and lse is that of the capped scores: backward recomputes x, keeps th = tanh(x / c), takes
// P from t = c * th (the forward's operations, so the same bits), dT = P * (dP - D) and the chain rule
// through the cap, dS = dX = dT * (1 - th^2) (th = t / c), before the dK and dQ products.
//
// q is scaled before the product, (q * scale) k^T, as torch does: with scale < 1 (1/sqrt(E)) a large
// q then overflows no later than torch's (a score past float's range is +-inf and spreads NaN).
//
// Threads: forward tasks are (n, query block), backward tasks are n (one (batch, head) pair, whose
// dQ is accumulated over key blocks in ascending order by one thread), or, with fewer pairs than
// threads, (n, key block) for dK, dV and (n, query tile) for dQ (attention_backward_splits). Every output element is
// computed by the same sequence of operations whichever thread and whichever split runs it:
// bit-identical for any thread count.
//
// Layouts: every operand is read (and every result written) through an AttnLayout (attention.h), so
// the q, k, v parts of a packed (B, T, 3C) projection are read in place and the output is written
// head-merged as (B, T, C): no head split / merge copies around the kernel. Rows are strided, the
// last axis is contiguous; the arithmetic and its order do not depend on the layout. Operands read
// many times by a task (v and k blocks, dO rows) are first copied into the task's contiguous
// buffers when their rows are strided: a packed row stride of 3C (3 KB at C = 256) would map a
// block's rows onto a few L1 sets and evict them between the microkernel's passes. (q rows are
// always copied, scaled.)
//
// All products run through one register-blocked microkernel, C (M x N) (+)= A (M x K) B (K x N),
// with A read through strides (a broadcast scalar per row: q rows, P, or P transposed) and B
// row-major with N a multiple of W (the operands that play B are packed with zero padding when
// their width is not a multiple of W: k^T, v^T per key block; q, dO, k when E % W != 0).
#include <cmath>
#include <vector>

#include "attention_tiles.h"
#include "forgegrad/attention.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

using namespace attn;

constexpr int64_t kBlk = kAttnKeyBlock;  // keys per tile
constexpr int64_t kRows = 32;  // query rows per tile: on the causal diagonal a tile computes ~kRows^2/2 masked scores
// s[c] = cap * tanh(s[c] / cap) for c < n (Gemma 2's soft-capped scores): the multiply by 1 / cap and
// by cap in float32, tanh on simd.h's vtanh.
inline void soft_cap(float* s, int64_t n, float cap) {
  const vf inv = vset1(1.0f / cap), c = vset1(cap);
  const auto f = [&](vf x) { return vmul(c, vtanh(vmul(x, inv))); };
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore(s + i, f(vload(s + i)));
  if (i < n) vstore_n(s + i, f(vload_n(s + i, static_cast<int>(n - i))), static_cast<int>(n - i));
}

// th[c] = tanh(s[c] / cap) and s[c] = cap * th[c] for c < n: soft_cap's operations (the same bits),
// keeping the tanh for the backward's chain rule.
inline void soft_cap_keep(float* s, float* th, int64_t n, float cap) {
  const vf inv = vset1(1.0f / cap), c = vset1(cap);
  for (int64_t i = 0; i < n; i += W) {
    const int r = static_cast<int>(imin(W, n - i));
    const vf t = vtanh(vmul(vload_upto(s + i, r), inv));
    vstore_upto(th + i, t, r);
    vstore_upto(s + i, vmul(c, t), r);
  }
}

// ds[c] *= 1 - th[c]^2 for c < n: d(cap * tanh(x / cap)) / dx.
inline void cap_chain(float* ds, const float* th, int64_t n) {
  const vf one = vset1(1.0f);
  for (int64_t i = 0; i < n; i += W) {
    const int r = static_cast<int>(imin(W, n - i));
    const vf t = vload_upto(th + i, r);
    vstore_upto(ds + i, vmul(vload_upto(ds + i, r), vfnmadd(t, t, one)), r);
  }
}

}  // namespace

void attention_forward(const float* q, AttnLayout lq, const float* k, AttnLayout lk, const float* v, AttnLayout lv,
                       int64_t N, int64_t L, int64_t S, int64_t E, int64_t Ev, float scale, bool causal,
                       const float* mask, const int64_t* moff, int64_t mrs, float* out, AttnLayout lo, float* lse,
                       float softcap) {
  if (attention_small_path(L, S, softcap))
    return attention_forward_small(q, lq, k, lk, v, lv, N, L, S, E, Ev, scale, causal, mask, moff, mrs, out, lo, lse);
  const int64_t qblocks = (L + kRows - 1) / kRows, kblocks = (S + kBlk - 1) / kBlk;
  const int64_t evp = round_up(Ev, W), bcp = round_up(kBlk, W);
  // k^T of every key block, packed once (every query block of a head reads all of them)
  AlignedBuffer kt_all(N * kblocks * E * bcp);
  parallel_for_work(N * kblocks, kBlk * E, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t n = i / kblocks, c0 = (i % kblocks) * kBlk;
      transpose_padded(k + lk.base(n) + c0 * lk.sr, imin(kBlk, S - c0), E, lk.sr, kt_all.data() + i * E * bcp, bcp);
    }
  });
  // a task: one query block against every key
  parallel_tasks(N * qblocks, kRows * S * (E + Ev), [&](int64_t task) {
    const int64_t n = task / qblocks, r0 = (task % qblocks) * kRows, br = imin(kRows, L - r0);
    const float* qn = q + lq.base(n) + r0 * lq.sr;
    const float* ktn = kt_all.data() + n * kblocks * E * bcp;
    const float* vn = v + lv.base(n);
    const float* mn = mask ? mask + moff[n] : nullptr;
    const bool copy_v = Ev % W != 0 || lv.sr != Ev;
    AlignedBuffer buf(kRows * bcp + (copy_v ? kBlk * evp : 0) + kRows * evp + 2 * kRows + kRows * E);
    float* st = buf.data();  // scores, then P (br x bcp)
    float* vp = st + kRows * bcp;  // v block, contiguous and padded to evp columns (when copy_v)
    float* acc = vp + (copy_v ? kBlk * evp : 0);  // unnormalised output (br x evp)
    float* m = acc + kRows * evp;  // running row max
    float* l = m + kRows;  // running row sum
    float* qc = l + kRows;  // the block's q rows * scale, contiguous
    copy_scaled(qn, br, E, lq.sr, scale, qc, E);
    qn = qc;
    const int64_t ldq = E;
    zero(acc, br * evp);
    for (int64_t r = 0; r < br; ++r) m[r] = -INFINITY, l[r] = 0.0f;
    const int64_t key_end = causal ? imin(S, r0 + br) : S;  // later key blocks are above the diagonal
    for (int64_t c0 = 0; c0 < key_end; c0 += kBlk) {
      const int64_t bc = imin(kBlk, key_end - c0), np = round_up(bc, W);
      // (a causal row block ends its last key block early: the packed block's first bc keys)
      tile_gemm<false>(br, np, E, qn, ldq, 1, ktn + (c0 / kBlk) * E * bcp, bcp, st, bcp);
      for (int64_t r = 0; r < br; ++r) {
        float* s = st + r * bcp;
        const int64_t lim = visible(causal, r0 + r, c0, bc);
        if (softcap > 0.0f) soft_cap(s, lim, softcap);
        add_mask(s, mn ? mn + (r0 + r) * mrs + c0 : nullptr, lim);
        const float mx = lim ? std::fmax(m[r], vec_max(s, lim)) : m[r];
        if (mx == -INFINITY) {  // no key of this row so far: P = 0, nothing to rescale
          // (the max skips NaN: a NaN score, which torch spreads over the row, poisons the row sum)
          if (has_nan(s, lim)) l[r] = NAN;
          zero(s, bc);
          continue;
        }
        const float alpha = std::exp(m[r] - mx);  // 0 on the first block with a key
        const float sum = exp_sub_sum(s, lim, mx);
        for (int64_t c = lim; c < bc; ++c) s[c] = 0.0f;
        l[r] = l[r] * alpha + sum;
        if (m[r] != mx) scale_row(acc + r * evp, evp, alpha);
        m[r] = mx;
      }
      const float* vb = vn + c0 * lv.sr;
      int64_t ldv = lv.sr;
      if (copy_v) {
        copy_padded(vb, bc, Ev, lv.sr, vp, evp);
        vb = vp, ldv = evp;
      }
      tile_gemm<true>(br, evp, bc, st, bcp, 1, vb, ldv, acc, evp);
    }
    for (int64_t r = 0; r < br; ++r) {
      float* o = out + lo.base(n) + (r0 + r) * lo.sr;
      const bool any = !(l[r] <= 0.0f);  // a key seen, or a NaN row (NaN out, as torch)
      const float inv = any ? 1.0f / l[r] : 0.0f;
      for (int64_t e = 0; e < Ev; ++e) o[e] = acc[r * evp + e] * inv;
      lse[n * L + r0 + r] = any ? m[r] + std::log(l[r]) : -INFINITY;
    }
  });
}

namespace {

// What the backward's tiles of one (batch, head) pair read: q * scale (ldq), dO (ldg), D = rowsum(dO * out)
// and lse by query row, the mask rows.
struct BwdPair {
  const float* qb;
  int64_t ldq;
  const float* gb;
  int64_t ldg;
  const float* D;
  const float* ln;
  const float* mn;
  int64_t mrs;
};

struct BwdShape {
  int64_t L, S, E, Ev, ep, evp, bcp;
  bool causal;
  float softcap;
};

// D, q * scale (padded to ep) and, when pad_ev, dO (padded to evp) of pair n into D, qp, gp; the
// pair's view of them.
BwdPair prepare_pair(const BwdShape& sh, const float* q, AttnLayout lq, const float* out, const float* grad_out,
                     AttnLayout lo, const float* lse, const float* mask, const int64_t* moff, int64_t mrs, float scale,
                     bool pad_ev, int64_t n, float* D, float* qp, float* gp) {
  const float* on = out + lo.base(n);
  const float* gn = grad_out + lo.base(n);
  const int64_t os = lo.sr;
  row_dots(gn, on, os, sh.L, sh.Ev, D);
  copy_scaled(q + lq.base(n), sh.L, sh.E, lq.sr, scale, qp, sh.ep);
  BwdPair p{qp, sh.ep, gn, os, D, lse + n * sh.L, mask ? mask + moff[n] : nullptr, mrs};
  if (pad_ev) copy_padded(gn, sh.L, sh.Ev, os, gp, sh.evp), p.gb = gp, p.ldg = sh.evp;
  return p;
}

// The tile of query rows [r0, r0 + br) against keys [c0, c0 + kv) of a key block (kt, vt: its k^T and v^T,
// bcp columns): P = exp(S - lse) into pt, dS = P * (dP - D) (through the cap when capped) into dst, both
// zero past each row's visible keys. Every path of the backward computes P and dS here, so they have the
// same bits whichever tasks run them.
void tile_p_ds(const BwdShape& sh, const BwdPair& p, int64_t r0, int64_t br, int64_t c0, int64_t kv, const float* kt,
               const float* vt, float* pt, float* dst, float* tht) {
  const int64_t bcp = sh.bcp, npv = round_up(kv, W);
  tile_gemm<false>(br, npv, sh.E, p.qb + r0 * p.ldq, p.ldq, 1, kt, bcp, pt, bcp);
  tile_gemm<false>(br, npv, sh.Ev, p.gb + r0 * p.ldg, p.ldg, 1, vt, bcp, dst, bcp);
  for (int64_t r = 0; r < br; ++r) {
    float* pr = pt + r * bcp;
    float* ds = dst + r * bcp;
    const int64_t lim = visible(sh.causal, r0 + r, c0, kv);
    const float lr = p.ln[r0 + r];
    if (lr == -INFINITY || lim == 0) {
      zero(pr, kv);
      zero(ds, kv);
      continue;
    }
    float* th = sh.softcap > 0.0f ? tht + r * bcp : nullptr;
    if (th) soft_cap_keep(pr, th, lim, sh.softcap);
    add_mask(pr, p.mn ? p.mn + (r0 + r) * p.mrs + c0 : nullptr, lim);
    exp_sub_sum(pr, lim, lr);
    for (int64_t c = lim; c < kv; ++c) pr[c] = 0.0f;
    const vf d = vset1(p.D[r0 + r]);
    for (int64_t c = 0; c < kv; c += W) {
      const int rr = static_cast<int>(imin(W, kv - c));
      vstore_upto(ds + c, vmul(vload_upto(pr + c, rr), vsub(vload_upto(ds + c, rr), d)), rr);
    }
    if (th) cap_chain(ds, th, lim);  // keys past lim have P = 0, so dS = 0 there already
  }
}

// Keys [0, kv) of the key block at c0 that some row of the query tile at r0 sees; 0 when the tile takes no
// part in the block (causal: rows before c0 see none of its keys).
inline int64_t tile_keys(const BwdShape& sh, int64_t r0, int64_t br, int64_t c0, int64_t bc) {
  if (!sh.causal) return bc;
  return r0 < c0 ? 0 : imin(bc, r0 + br - c0);
}

// dK and dV of the key block at c0 (k^T kt, v^T vt), summed over the query tiles in ascending order into
// dka (bc x ep) and dva (bc x evp), then written through wk, wv. When dqa is given, dQ += dS K of each tile
// too (kb: the block's key rows, row stride ldk).
void key_block_grads(const BwdShape& sh, const BwdPair& p, int64_t c0, const float* kt, const float* vt,
                     const float* kb, int64_t ldk, float* dqa, float* pt, float* dst, float* tht, float* dka,
                     float* dva, float* dk, AttnLayout wk, float* dv, AttnLayout wv, int64_t n) {
  const int64_t bc = imin(kBlk, sh.S - c0), ep = sh.ep, evp = sh.evp;
  zero(dka, bc * ep);
  zero(dva, bc * evp);
  for (int64_t r0 = sh.causal ? c0 : 0; r0 < sh.L; r0 += kRows) {  // rows before c0 see no key of the block
    const int64_t br = imin(kRows, sh.L - r0), kv = tile_keys(sh, r0, br, c0, bc);
    tile_p_ds(sh, p, r0, br, c0, kv, kt, vt, pt, dst, tht);
    tile_gemm<true>(kv, evp, br, pt, 1, sh.bcp, p.gb + r0 * p.ldg, p.ldg, dva, evp);  // dV += P^T dO
    tile_gemm<true>(kv, ep, br, dst, 1, sh.bcp, p.qb + r0 * p.ldq, p.ldq, dka, ep);  // dK += dS^T (Q * scale)
    if (dqa) tile_gemm<true>(br, ep, kv, dst, sh.bcp, 1, kb, ldk, dqa + r0 * ep, ep);  // dQ += dS K
  }
  for (int64_t c = 0; c < bc; ++c) {
    float* dkr = dk + wk.base(n) + (c0 + c) * wk.sr;
    float* dvr = dv + wv.base(n) + (c0 + c) * wv.sr;
    for (int64_t e = 0; e < sh.E; ++e) dkr[e] = dka[c * ep + e];
    for (int64_t e = 0; e < sh.Ev; ++e) dvr[e] = dva[c * evp + e];
  }
}

}  // namespace

void attention_backward(const float* q, AttnLayout lq, const float* k, AttnLayout lk, const float* v, AttnLayout lv,
                        const float* out, const float* grad_out, AttnLayout lo, const float* lse, int64_t N, int64_t L,
                        int64_t S, int64_t E, int64_t Ev, float scale, bool causal, const float* mask,
                        const int64_t* moff, int64_t mrs, float* dq, AttnLayout wq, float* dk, AttnLayout wk, float* dv,
                        AttnLayout wv, float softcap) {
  if (attention_small_path(L, S, softcap))
    return attention_backward_small(q, lq, k, lk, v, lv, out, grad_out, lo, lse, N, L, S, E, Ev, scale, causal, mask,
                                    moff, mrs, dq, wq, dk, wk, dv, wv);
  const bool capped = softcap > 0.0f;
  const BwdShape sh{L, S, E, Ev, round_up(E, W), round_up(Ev, W), round_up(kBlk, W), causal, softcap};
  const int64_t ep = sh.ep, evp = sh.evp, bcp = sh.bcp;
  const int64_t kblocks = (S + kBlk - 1) / kBlk, qblocks = (L + kRows - 1) / kRows;
  // q, k blocks and dO are used from contiguous copies (padded to ep / evp) when E % W, Ev % W or
  // when their rows are strided
  const bool pad_e = E % W != 0 || lq.sr != E || lk.sr != E, pad_ev = Ev % W != 0 || lo.sr != Ev;
  const int64_t tile_floats = 2 * kRows * bcp + (capped ? kRows * bcp : 0);  // P, dS, tanh tiles
  auto write_dq = [&](int64_t n, int64_t r0, int64_t rows, const float* dqa) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t e = 0; e < E; ++e) dq[wq.base(n) + (r0 + r) * wq.sr + e] = dqa[r * ep + e] * scale;
  };
  if (!attention_backward_splits(N, S, get_num_threads())) {
    // a task: one pair, its dq, dk and dv (dQ summed over the key blocks in ascending order)
    parallel_tasks(N, 2 * L * S * (E + Ev), [&](int64_t n) {
      AlignedBuffer buf(L + L * ep + L * ep + (pad_ev ? L * evp : 0) + (pad_e ? kBlk * ep : 0) + E * bcp + Ev * bcp +
                        kBlk * ep + kBlk * evp + tile_floats);
      float* D = buf.data();
      float* dqa = D + L;  // dQ accumulator (L x ep)
      float* qp = dqa + L * ep;
      float* gp = qp + L * ep;
      float* kp = gp + (pad_ev ? L * evp : 0);  // key block, contiguous and padded to ep (when pad_e)
      float* kt = kp + (pad_e ? kBlk * ep : 0);  // k^T of the key block (E x bcp)
      float* vt = kt + E * bcp;  // v^T of the key block (Ev x bcp)
      float* dka = vt + Ev * bcp;
      float* dva = dka + kBlk * ep;
      float* pt = dva + kBlk * evp;
      const BwdPair p = prepare_pair(sh, q, lq, out, grad_out, lo, lse, mask, moff, mrs, scale, pad_ev, n, D, qp, gp);
      zero(dqa, L * ep);
      const float* kn = k + lk.base(n);
      const float* vn = v + lv.base(n);
      for (int64_t c0 = 0; c0 < S; c0 += kBlk) {
        const int64_t bc = imin(kBlk, S - c0);
        transpose_padded(kn + c0 * lk.sr, bc, E, lk.sr, kt, bcp);
        transpose_padded(vn + c0 * lv.sr, bc, Ev, lv.sr, vt, bcp);
        const float* kb = kn + c0 * lk.sr;
        int64_t ldk = lk.sr;
        if (pad_e) copy_padded(kb, bc, E, lk.sr, kp, ep), kb = kp, ldk = ep;
        key_block_grads(sh, p, c0, kt, vt, kb, ldk, dqa, pt, pt + kRows * bcp, pt + 2 * kRows * bcp, dka, dva, dk, wk,
                        dv, wv, n);
      }
      write_dq(n, 0, L, dqa);
    });
    return;
  }
  // Split: every pair's D, q * scale and dO copies, and each key block's k^T, v^T and padded rows, made
  // once; then tasks (pair, key block) compute dK, dV and tasks (pair, query tile) compute dQ, summing
  // dS K over the key blocks in ascending order as the whole-pair task does.
  const int64_t gpn = pad_ev ? L * evp : 0, kpn = pad_e ? kBlk * ep : 0, kbn = (E + Ev) * bcp + kpn;
  AlignedBuffer shared(N * (L + L * ep + gpn) + N * kblocks * kbn);
  float* pairs_at = shared.data();
  float* blocks_at = pairs_at + N * (L + L * ep + gpn);
  std::vector<BwdPair> pairs(N);
  parallel_for_work(N, L * (E + 2 * Ev), [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) {
      float* D = pairs_at + n * (L + L * ep + gpn);
      pairs[n] =
          prepare_pair(sh, q, lq, out, grad_out, lo, lse, mask, moff, mrs, scale, pad_ev, n, D, D + L, D + L + L * ep);
    }
  });
  parallel_for_work(N * kblocks, kBlk * (E + Ev), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t n = i / kblocks, c0 = (i % kblocks) * kBlk, bc = imin(kBlk, S - c0);
      float* kt = blocks_at + i * kbn;
      transpose_padded(k + lk.base(n) + c0 * lk.sr, bc, E, lk.sr, kt, bcp);
      transpose_padded(v + lv.base(n) + c0 * lv.sr, bc, Ev, lv.sr, kt + E * bcp, bcp);
      if (pad_e) copy_padded(k + lk.base(n) + c0 * lk.sr, bc, E, lk.sr, kt + (E + Ev) * bcp, ep);
    }
  });
  auto block = [&](int64_t n, int64_t j) { return blocks_at + (n * kblocks + j) * kbn; };
  parallel_tasks(N * kblocks, 2 * L * kBlk * (E + Ev), [&](int64_t i) {
    const int64_t n = i / kblocks, j = i % kblocks;
    AlignedBuffer buf(kBlk * ep + kBlk * evp + tile_floats);
    float* dka = buf.data();
    float* dva = dka + kBlk * ep;
    float* pt = dva + kBlk * evp;
    key_block_grads(sh, pairs[n], j * kBlk, block(n, j), block(n, j) + E * bcp, nullptr, 0, nullptr, pt,
                    pt + kRows * bcp, pt + 2 * kRows * bcp, dka, dva, dk, wk, dv, wv, n);
  });
  parallel_tasks(N * qblocks, 2 * kRows * S * (E + Ev), [&](int64_t i) {
    const int64_t n = i / qblocks, r0 = (i % qblocks) * kRows, br = imin(kRows, L - r0);
    AlignedBuffer buf(kRows * ep + tile_floats);
    float* dqa = buf.data();
    float* pt = dqa + kRows * ep;
    const BwdPair& p = pairs[n];
    zero(dqa, br * ep);
    for (int64_t j = 0; j < kblocks; ++j) {
      const int64_t c0 = j * kBlk, kv = tile_keys(sh, r0, br, c0, imin(kBlk, S - c0));
      if (kv == 0) continue;
      const float* kt = block(n, j);
      const float* kb = pad_e ? kt + (E + Ev) * bcp : k + lk.base(n) + c0 * lk.sr;
      tile_p_ds(sh, p, r0, br, c0, kv, kt, kt + E * bcp, pt, pt + kRows * bcp, pt + 2 * kRows * bcp);
      tile_gemm<true>(br, ep, kv, pt + kRows * bcp, bcp, 1, kb, pad_e ? ep : lk.sr, dqa, ep);  // dQ += dS K
    }
    write_dq(n, r0, br, dqa);
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
