// Fused scaled dot-product attention (cpp/kernels/per_isa/attention.cpp): the kernels and the
// layout through which they read q, k, v, grad_out and write out, dq, dk, dv.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

// Where the (N, R, C) stack of one attention operand lives: element (n, r, c) of the stack is at
// base[(n / heads) * sb + (n % heads) * sh + r * sr + c] (the last axis is contiguous). A plain
// contiguous stack is {1, R * C, 0, C}; the q (or k, v) part of a packed (B, T, 3 * H * D)
// projection, read as B * H stacks of (T, D) without a copy, is {H, T * 3HD, D, 3HD} from the
// q (k: + HD, v: + 2HD) pointer. That layout also writes a (B, T, H * D) head-merged output.
struct AttnLayout {
  int64_t heads, sb, sh, sr;
  int64_t base(int64_t n) const { return (n / heads) * sb + (n % heads) * sh; }
  static AttnLayout contiguous(int64_t rows, int64_t cols) { return {1, rows * cols, 0, cols}; }
};

// out (N, L, Ev) and lse (N, L) (the row logsumexp of the masked, scaled scores; -inf for a row
// with no key; lse is always a contiguous (N, L) buffer). mask: null, or element (n, r, c) at
// mask[moff[n] + r * mrs + c].
// softcap > 0 (Gemma 2's attn_logit_softcapping): each scaled score s becomes softcap * tanh(s / softcap)
// before the mask is added; 0: none (attention_backward takes the same softcap).
FG_KERNEL(void, attention_forward,
          (const float* q, AttnLayout lq, const float* k, AttnLayout lk, const float* v, AttnLayout lv, int64_t N,
           int64_t L, int64_t S, int64_t E, int64_t Ev, float scale, bool causal, const float* mask,
           const int64_t* moff, int64_t mrs, float* out, AttnLayout lo, float* lse, float softcap),
          (q, lq, k, lk, v, lv, N, L, S, E, Ev, scale, causal, mask, moff, mrs, out, lo, lse, softcap))

// Keys per tile of the fused kernels, on every ISA.
constexpr int64_t kAttnKeyBlock = 64;

// Sequences up to kAttnSmallLen queries and keys (without a soft cap) take the whole-row kernels of
// attention_small.cpp: a (batch, head) pair's scores fit in L2, so the softmax runs once over whole rows and
// the products cover the causal triangle in microkernel rows instead of 64-key tiles. Longer ones take the
// flash-tiled kernels. The choice depends on the shapes only, never on the thread count (the two compute
// the same values in a different order, so different bits).
constexpr int64_t kAttnSmallLen = 256;
inline bool attention_small_path(int64_t L, int64_t S, float softcap) {
  return L <= kAttnSmallLen && S <= kAttnSmallLen && !(softcap > 0.0f);
}

// Whether attention_backward splits each (batch, head) pair's work over its key blocks (dK, dV) and query
// tiles (dQ) instead of giving each thread whole pairs. The split recomputes the scores and dP once more
// (7 tile products instead of 5), so it is taken only when that beats whole pairs on `threads` threads:
// fewer pairs than threads, or few enough that the last round leaves most threads idle. Both ways compute
// every element with the same operations in the same order: the same bits.
inline bool attention_backward_splits(int64_t pairs, int64_t keys, int threads) {
  const int64_t kblocks = (keys + kAttnKeyBlock - 1) / kAttnKeyBlock;
  if (threads <= 1 || pairs * kblocks < 2) return false;
  const int64_t rounds = (pairs + threads - 1) / threads;
  return 7 * pairs < 5 * threads * rounds;
}

// dq, dk, dv from grad_out and forward's out and lse. grad_out is read through lo (out's layout);
// dq, dk, dv are written through wq, wk, wv. softcap: the forward's (0: none); the gradient then goes
// through the cap, d(c * tanh(x / c)) / dx = 1 - tanh(x / c)^2.
FG_KERNEL(void, attention_backward,
          (const float* q, AttnLayout lq, const float* k, AttnLayout lk, const float* v, AttnLayout lv,
           const float* out, const float* grad_out, AttnLayout lo, const float* lse, int64_t N, int64_t L, int64_t S,
           int64_t E, int64_t Ev, float scale, bool causal, const float* mask, const int64_t* moff, int64_t mrs,
           float* dq, AttnLayout wq, float* dk, AttnLayout wk, float* dv, AttnLayout wv, float softcap),
          (q, lq, k, lk, v, lv, out, grad_out, lo, lse, N, L, S, E, Ev, scale, causal, mask, moff, mrs, dq, wq, dk, wk,
           dv, wv, softcap))

// Decode attention over a paged KV cache (cpp/kernels/per_isa/paged_attention.cpp): out (B, Hkv, rep, D) of the
// query rows q (B, Hkv, rep, D) against each row b's keys and values at positions [lo_b, lengths[b]), position p
// in block tables[b * width + p / BT], place p % BT of the pools k, v (blocks, Hkv, BT, D); lo_b =
// lengths[b] - window when window > 0 and the row is longer, else 0. softcap > 0: each scaled score s becomes
// softcap * tanh(s / softcap). bias: nullptr, or a (Hkv * rep, bias_len) table added after the cap, query head
// h * rep + r's score against position p gaining bias[h * rep + r, min(lengths[b] - 1 - p, bias_len - 1)] (T5's
// relative-position bias by distance; bias_len >= 1). Every row has lengths[b] >= 1 and its blocks inside the
// pools (checked by the binding).
FG_KERNEL(void, paged_attention_decode,
          (const float* q, const float* k, const float* v, const int64_t* tables, const int64_t* lengths, int64_t B,
           int64_t Hkv, int64_t rep, int64_t D, int64_t BT, int64_t width, int64_t window, float scale, float softcap,
           const float* bias, int64_t bias_len, float* out),
          (q, k, v, tables, lengths, B, Hkv, rep, D, BT, width, window, scale, softcap, bias, bias_len, out))

}  // namespace fg
