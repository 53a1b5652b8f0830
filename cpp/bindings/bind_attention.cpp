// forgegrad._C.attention: the fused scaled dot-product attention of cpp/kernels/per_isa/attention.cpp
// on (N, L, E) / (N, S, E) / (N, S, Ev) float32 stacks (N = batch x heads), and on a packed
// (B, T, 3C) q/k/v projection read in place (causal self-attention, C = heads x head size, output
// (B, T, C) head-merged). Every array is checked here before a kernel runs; the float mask's offsets
// are bounds-checked against its size.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "forgegrad/attention.h"
#include "forgegrad/bindings.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/parallel.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

struct Dims {
  int64_t N, L, S, E, Ev;
};

Dims check_qkv(const ArrayArg& Q, const ArrayArg& K, const ArrayArg& V) {
  Dims d{Q.dim(0), Q.dim(1), K.dim(1), Q.dim(2), V.dim(2)};
  fg::bind::expect_shape(K, "k", {d.N, d.S, d.E});
  fg::bind::expect_shape(V, "v", {d.N, d.S, d.Ev});
  if (d.N < 1 || d.L < 1 || d.S < 1 || d.E < 1 || d.Ev < 1)
    throw py::value_error("attention: every size must be >= 1, got q " + fg::bind::shape_str(Q.shape) + ", v " +
                          fg::bind::shape_str(V.shape));
  return d;
}

// The mask pointer and its offsets (nullptrs for no mask), bounds-checked. The offsets are a copy: the kernel
// runs without the GIL, and another thread writing the caller's array must not move a checked offset.
struct MaskArg {
  const float* data = nullptr;
  std::vector<int64_t> offsets;
  const int64_t* offsets_data() const { return data ? offsets.data() : nullptr; }
};

MaskArg check_mask(const py::object& mask, const py::object& moff, int64_t mrs, const Dims& d) {
  MaskArg m;
  if (mask.is_none() != moff.is_none())
    throw py::value_error("attention: mask and mask_offsets must both be None or both be arrays");
  if (mask.is_none()) return m;
  if (!py::isinstance<py::array>(mask) || !py::isinstance<py::array>(moff))
    throw py::type_error("attention: mask must be a float32 numpy.ndarray and mask_offsets an int64 one");
  ArrayArg M = fg::bind::f32_arg(mask.cast<py::array>(), "mask");
  ArrayArg O = fg::bind::i64_arg(moff.cast<py::array>(), "mask_offsets", 1);
  fg::bind::expect_shape(O, "mask_offsets", {d.N});
  if (mrs < 0) throw py::value_error("attention: mask_row_stride must be >= 0, got " + std::to_string(mrs));
  // the elements one pair's mask spans, (L - 1) * mrs + S, in checked arithmetic: a huge stride must not wrap it
  // round to a small (or negative) span that passes the offsets' check
  int64_t span = 0;
  if (__builtin_mul_overflow(d.L - 1, mrs, &span) || __builtin_add_overflow(span, d.S, &span) || span > M.size)
    throw py::value_error("attention: mask_row_stride " + std::to_string(mrs) + " with " + std::to_string(d.L) +
                          " query rows of " + std::to_string(d.S) + " keys reads past the mask of " +
                          std::to_string(M.size) + " elements");
  m.offsets.assign(O.i64(), O.i64() + d.N);
  for (int64_t n = 0; n < d.N; ++n) {
    const int64_t off = m.offsets[n];
    if (off < 0 || off > M.size - span)
      throw py::value_error("attention: mask_offsets[" + std::to_string(n) + "] = " + std::to_string(off) +
                            " reads outside the mask of " + std::to_string(M.size) + " elements");
  }
  m.data = M.f32();
  return m;
}

// softcap: 0 (none) or a finite number > 0; anything else (negative, NaN, inf) is refused.
void check_softcap(const char* who, float softcap) {
  if (!(softcap >= 0.0f) || std::isinf(softcap))
    throw py::value_error(std::string(who) + ": softcap must be a finite number >= 0 (0: none), got " +
                          std::to_string(softcap));
}

void forward(const py::array& q, const py::array& k, const py::array& v, float scale, bool causal,
             const py::object& mask, const py::object& mask_offsets, int64_t mask_row_stride, const py::array& out,
             const py::array& lse, float softcap) {
  check_softcap("attention_forward", softcap);
  ArrayArg Q = fg::bind::f32_arg(q, "q", 3), K = fg::bind::f32_arg(k, "k", 3), V = fg::bind::f32_arg(v, "v", 3);
  Dims d = check_qkv(Q, K, V);
  MaskArg m = check_mask(mask, mask_offsets, mask_row_stride, d);
  ArrayArg O = fg::bind::f32_arg(out, "out", 3, fg::bind::kContiguous, true);
  ArrayArg S = fg::bind::f32_arg(lse, "lse", 2, fg::bind::kContiguous, true);
  fg::bind::expect_shape(O, "out", {d.N, d.L, d.Ev});
  fg::bind::expect_shape(S, "lse", {d.N, d.L});
  fg::bind::check_no_overlap("attention_forward",
                             {{q, "q"}, {k, "k"}, {v, "v"}, {mask, "mask"}, {mask_offsets, "mask_offsets"}},
                             {{out, "out"}, {lse, "lse"}});
  py::gil_scoped_release release;
  using fg::AttnLayout;
  fg::attention_forward(Q.f32(), AttnLayout::contiguous(d.L, d.E), K.f32(), AttnLayout::contiguous(d.S, d.E), V.f32(),
                        AttnLayout::contiguous(d.S, d.Ev), d.N, d.L, d.S, d.E, d.Ev, scale, causal, m.data,
                        m.offsets_data(), mask_row_stride, O.f32(), AttnLayout::contiguous(d.L, d.Ev), S.f32(),
                        softcap);
}

void backward(const py::array& q, const py::array& k, const py::array& v, const py::array& out,
              const py::array& grad_out, const py::array& lse, float scale, bool causal, const py::object& mask,
              const py::object& mask_offsets, int64_t mask_row_stride, const py::array& dq, const py::array& dk,
              const py::array& dv, float softcap) {
  check_softcap("attention_backward", softcap);
  ArrayArg Q = fg::bind::f32_arg(q, "q", 3), K = fg::bind::f32_arg(k, "k", 3), V = fg::bind::f32_arg(v, "v", 3);
  Dims d = check_qkv(Q, K, V);
  MaskArg m = check_mask(mask, mask_offsets, mask_row_stride, d);
  ArrayArg O = fg::bind::f32_arg(out, "out", 3), G = fg::bind::f32_arg(grad_out, "grad_out", 3);
  ArrayArg S = fg::bind::f32_arg(lse, "lse", 2);
  fg::bind::expect_shape(O, "out", {d.N, d.L, d.Ev});
  fg::bind::expect_shape(G, "grad_out", {d.N, d.L, d.Ev});
  fg::bind::expect_shape(S, "lse", {d.N, d.L});
  ArrayArg DQ = fg::bind::f32_arg(dq, "dq", 3, fg::bind::kContiguous, true);
  ArrayArg DK = fg::bind::f32_arg(dk, "dk", 3, fg::bind::kContiguous, true);
  ArrayArg DV = fg::bind::f32_arg(dv, "dv", 3, fg::bind::kContiguous, true);
  fg::bind::expect_shape(DQ, "dq", Q.shape);
  fg::bind::expect_shape(DK, "dk", K.shape);
  fg::bind::expect_shape(DV, "dv", V.shape);
  fg::bind::check_no_overlap("attention_backward",
                             {{q, "q"},
                              {k, "k"},
                              {v, "v"},
                              {out, "out"},
                              {grad_out, "grad_out"},
                              {lse, "lse"},
                              {mask, "mask"},
                              {mask_offsets, "mask_offsets"}},
                             {{dq, "dq"}, {dk, "dk"}, {dv, "dv"}});
  py::gil_scoped_release release;
  using fg::AttnLayout;
  fg::attention_backward(Q.f32(), AttnLayout::contiguous(d.L, d.E), K.f32(), AttnLayout::contiguous(d.S, d.E), V.f32(),
                         AttnLayout::contiguous(d.S, d.Ev), O.f32(), G.f32(), AttnLayout::contiguous(d.L, d.Ev),
                         S.f32(), d.N, d.L, d.S, d.E, d.Ev, scale, causal, m.data, m.offsets_data(), mask_row_stride,
                         DQ.f32(), AttnLayout::contiguous(d.L, d.E), DK.f32(), AttnLayout::contiguous(d.S, d.E),
                         DV.f32(), AttnLayout::contiguous(d.S, d.Ev), softcap);
}

// ---- packed causal self-attention: qkv (B, T, 3C), heads H, head size D = C / H ----
// q/k/v of head h are columns [h*D, (h+1)*D) of the first / second / third C columns. Forward
// splits the heads into a contiguous (3, B*H, T, D) array in one sequential pass over qkv (the
// kernels then read contiguous tiles; strided 3C rows cost more in their inner loops than the
// copy), which backward reads again; the output is written head-merged and the gradient straight
// into a (B, T, 3C) array laid out as qkv.
struct Packed {
  int64_t B, T, C, H, D;
  fg::AttnLayout qkv() const { return {H, T * 3 * C, D, 3 * C}; }
  fg::AttnLayout merged() const { return {H, T * C, D, C}; }
  fg::AttnLayout split() const { return fg::AttnLayout::contiguous(T, D); }
  int64_t part() const { return B * H * T * D; }  // one of q, k, v in the split array
};

Packed check_packed(const ArrayArg& QKV, int64_t heads) {
  const int64_t three_c = QKV.dim(2);
  if (heads < 1) throw py::value_error("attention_packed: heads must be >= 1, got " + std::to_string(heads));
  if (heads > three_c || three_c % (3 * heads))
    throw py::value_error("attention_packed: qkv's last dimension (" + std::to_string(three_c) +
                          ") must be 3 x heads x head size, heads = " + std::to_string(heads));
  Packed p{QKV.dim(0), QKV.dim(1), three_c / 3, heads, three_c / 3 / heads};
  if (p.B < 1 || p.T < 1 || p.D < 1)
    throw py::value_error("attention_packed: every size must be >= 1, got qkv " + fg::bind::shape_str(QKV.shape));
  return p;
}

void forward_packed(const py::array& qkv, int64_t heads, float scale, const py::array& out, const py::array& lse,
                    const py::array& split) {
  ArrayArg QKV = fg::bind::f32_arg(qkv, "qkv", 3);
  const Packed p = check_packed(QKV, heads);
  ArrayArg O = fg::bind::f32_arg(out, "out", 3, fg::bind::kContiguous, true);
  ArrayArg S = fg::bind::f32_arg(lse, "lse", 2, fg::bind::kContiguous, true);
  ArrayArg X = fg::bind::f32_arg(split, "split", 4, fg::bind::kContiguous, true);
  fg::bind::expect_shape(O, "out", {p.B, p.T, p.C});
  fg::bind::expect_shape(S, "lse", {p.B * p.H, p.T});
  fg::bind::expect_shape(X, "split", {3, p.B * p.H, p.T, p.D});
  fg::bind::check_no_overlap("attention_forward_packed", {{qkv, "qkv"}},
                             {{out, "out"}, {lse, "lse"}, {split, "split"}});
  py::gil_scoped_release release;
  const float* src = QKV.f32();
  float* x = X.f32();
  // row (b, t) of qkv -> row t of stack (part, b * H + h); a copy, so any split of the rows is exact
  fg::parallel_for_work(p.B * p.T, 3 * p.C, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / p.T, t = r % p.T;
      for (int64_t part = 0; part < 3; ++part)
        for (int64_t h = 0; h < p.H; ++h)
          std::memcpy(x + part * p.part() + ((b * p.H + h) * p.T + t) * p.D, src + r * 3 * p.C + part * p.C + h * p.D,
                      sizeof(float) * p.D);
    }
  });
  fg::attention_forward(x, p.split(), x + p.part(), p.split(), x + 2 * p.part(), p.split(), p.B * p.H, p.T, p.T, p.D,
                        p.D, scale, true, nullptr, nullptr, 0, O.f32(), p.merged(), S.f32(), 0.0f);
}

void backward_packed(const py::array& split, const py::array& out, const py::array& grad_out, const py::array& lse,
                     int64_t heads, float scale, const py::array& dqkv) {
  ArrayArg D = fg::bind::f32_arg(dqkv, "dqkv", 3, fg::bind::kContiguous, true);
  const Packed p = check_packed(D, heads);
  ArrayArg X = fg::bind::f32_arg(split, "split", 4);
  ArrayArg O = fg::bind::f32_arg(out, "out", 3), G = fg::bind::f32_arg(grad_out, "grad_out", 3);
  ArrayArg S = fg::bind::f32_arg(lse, "lse", 2);
  fg::bind::expect_shape(X, "split", {3, p.B * p.H, p.T, p.D});
  fg::bind::expect_shape(O, "out", {p.B, p.T, p.C});
  fg::bind::expect_shape(G, "grad_out", {p.B, p.T, p.C});
  fg::bind::expect_shape(S, "lse", {p.B * p.H, p.T});
  fg::bind::check_no_overlap("attention_backward_packed",
                             {{split, "split"}, {out, "out"}, {grad_out, "grad_out"}, {lse, "lse"}}, {{dqkv, "dqkv"}});
  py::gil_scoped_release release;
  const float* x = X.f32();
  float* d = D.f32();
  fg::attention_backward(x, p.split(), x + p.part(), p.split(), x + 2 * p.part(), p.split(), O.f32(), G.f32(),
                         p.merged(), S.f32(), p.B * p.H, p.T, p.T, p.D, p.D, scale, true, nullptr, nullptr, 0, d,
                         p.qkv(), d + p.C, p.qkv(), d + 2 * p.C, p.qkv(), 0.0f);
}

// ---- decode attention over a paged KV cache ----
// q (B, Hkv, rep, D); k_pool, v_pool (blocks, Hkv, BT, D); tables (B, width) int64; lengths (B,) int64. Every row's
// length must be in [1, width * BT] and the block ids its keys are read from in [0, blocks): checked here, on copies
// the kernel then reads, so it never reads outside the pools. bias: None or a float32 (Hkv * rep, bias_len >= 1) table
// by distance.
void paged_decode(const py::array& q, const py::array& k_pool, const py::array& v_pool, const py::array& tables,
                  const py::array& lengths, float scale, float softcap, int64_t window, const py::array& out,
                  const py::object& bias) {
  check_softcap("paged_attention_decode", softcap);
  ArrayArg Q = fg::bind::f32_arg(q, "q", 4), K = fg::bind::f32_arg(k_pool, "k_pool", 4);
  ArrayArg V = fg::bind::f32_arg(v_pool, "v_pool", 4);
  ArrayArg T = fg::bind::i64_arg(tables, "tables", 2), L = fg::bind::i64_arg(lengths, "lengths", 1);
  const int64_t B = Q.dim(0), H = Q.dim(1), rep = Q.dim(2), D = Q.dim(3), blocks = K.dim(0), BT = K.dim(2);
  const int64_t width = T.dim(1);
  if (B < 1 || H < 1 || rep < 1 || D < 1 || blocks < 1 || BT < 1 || width < 1)
    throw py::value_error("paged_attention_decode: every size must be >= 1, got q " + fg::bind::shape_str(Q.shape) +
                          ", k_pool " + fg::bind::shape_str(K.shape) + ", tables " + fg::bind::shape_str(T.shape));
  fg::bind::expect_shape(K, "k_pool", {blocks, H, BT, D});
  fg::bind::expect_shape(V, "v_pool", {blocks, H, BT, D});
  fg::bind::expect_shape(T, "tables", {B, width});
  fg::bind::expect_shape(L, "lengths", {B});
  if (window < 0)
    throw py::value_error("paged_attention_decode: window must be >= 0 (0: none), got " + std::to_string(window));
  // the kernel reads copies of the lengths and block ids checked here: it runs without the GIL, and another thread
  // writing the caller's tables (a scheduler handing a block on) must not change an id after its check
  const std::vector<int64_t> table_ids(T.i64(), T.i64() + B * width), lens(L.i64(), L.i64() + B);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = lens[b];
    if (len < 1 || len > width * BT)
      throw py::value_error("paged_attention_decode: lengths[" + std::to_string(b) + "] = " + std::to_string(len) +
                            " must be in [1, " + std::to_string(width * BT) + "] (the table's blocks)");
    for (int64_t j = 0; j < (len + BT - 1) / BT; ++j) {
      const int64_t id = table_ids[b * width + j];
      if (id < 0 || id >= blocks)
        throw py::value_error("paged_attention_decode: tables[" + std::to_string(b) + ", " + std::to_string(j) +
                              "] = " + std::to_string(id) + " is not a block of the pools (0 .. " +
                              std::to_string(blocks - 1) + ")");
    }
  }
  ArrayArg O = fg::bind::f32_arg(out, "out", 4, fg::bind::kContiguous, true);
  fg::bind::expect_shape(O, "out", Q.shape);
  const float* bias_data = nullptr;
  int64_t bias_len = 0;
  if (!bias.is_none()) {
    if (!py::isinstance<py::array>(bias))
      throw py::type_error("paged_attention_decode: bias must be None or a float32 numpy.ndarray (heads, distances)");
    ArrayArg Bi = fg::bind::f32_arg(bias.cast<py::array>(), "bias", 2);
    if (Bi.dim(0) != H * rep || Bi.dim(1) < 1)
      throw py::value_error("paged_attention_decode: bias must be (heads, distances) = (" + std::to_string(H * rep) +
                            ", >= 1), one row per query head, got " + fg::bind::shape_str(Bi.shape));
    bias_data = Bi.f32();
    bias_len = Bi.dim(1);
  }
  fg::bind::check_no_overlap(
      "paged_attention_decode",
      {{q, "q"}, {k_pool, "k_pool"}, {v_pool, "v_pool"}, {tables, "tables"}, {lengths, "lengths"}, {bias, "bias"}},
      {{out, "out"}});
  py::gil_scoped_release release;
  fg::paged_attention_decode(Q.f32(), K.f32(), V.f32(), table_ids.data(), lens.data(), B, H, rep, D, BT, width, window,
                             scale, softcap, bias_data, bias_len, O.f32());
}

void bind(py::module_& m) {
  m.def("paged_decode", &paged_decode, py::arg("q"), py::arg("k_pool"), py::arg("v_pool"), py::arg("tables"),
        py::arg("lengths"), py::arg("scale"), py::arg("softcap"), py::arg("window"), py::arg("out"),
        py::arg("bias") = py::none(),
        "Decode attention over a paged KV cache: out (B, Hkv, rep, D) = softmax(q k^T * scale) v of the query rows "
        "q (B, Hkv, rep, D) against row b's first lengths[b] keys and values, position p read from block "
        "tables[b, p // BT], place p % BT of k_pool and v_pool (blocks, Hkv, BT, D). window > 0: only a row's last "
        "window keys; softcap > 0: each scaled score s becomes softcap * tanh(s / softcap). bias: None or a float32 "
        "(Hkv * rep, distances) table: query head h * rep + r's score against position p then gains bias[h * rep + "
        "r, min(lengths[b] - 1 - p, distances - 1)] (T5's relative-position bias; past the table, its last column). "
        "The same bits at any thread count.");
  m.def("attention_forward", &forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("scale"), py::arg("causal"),
        py::arg("mask"), py::arg("mask_offsets"), py::arg("mask_row_stride"), py::arg("out"), py::arg("lse"),
        py::arg("softcap") = 0.0f,
        "out = softmax(q k^T * scale + mask) v for q (N, L, E), k (N, S, E), v (N, S, Ev), without storing the "
        "scores; lse (N, L) gets the row logsumexp. causal: query r sees keys c <= r. mask: None or a float32 "
        "array whose element (n, r, c) is mask[mask_offsets[n] + r * mask_row_stride + c]. softcap > 0: each "
        "scaled score s becomes softcap * tanh(s / softcap) before the mask (attention_backward takes the same "
        "softcap).");
  m.def("attention_backward", &backward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("grad_out"),
        py::arg("lse"), py::arg("scale"), py::arg("causal"), py::arg("mask"), py::arg("mask_offsets"),
        py::arg("mask_row_stride"), py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("softcap") = 0.0f,
        "Fills dq, dk, dv of attention_forward from grad_out, recomputing the scores tile by tile. softcap: the "
        "forward's (0: none); the gradient then goes through softcap * tanh(s / softcap).");
  m.def("attention_forward_packed", &forward_packed, py::arg("qkv"), py::arg("heads"), py::arg("scale"), py::arg("out"),
        py::arg("lse"), py::arg("split"),
        "Causal self-attention on a packed projection qkv (B, T, 3C) = [q | k | v], each C = heads x D columns "
        "head by head: split (3, B x heads, T, D) gets q, k, v per head (what backward reads), out (B, T, C) the "
        "heads' outputs side by side (head-merged), lse (B x heads, T) the row logsumexp.");
  m.def("attention_backward_packed", &backward_packed, py::arg("split"), py::arg("out"), py::arg("grad_out"),
        py::arg("lse"), py::arg("heads"), py::arg("scale"), py::arg("dqkv"),
        "Fills dqkv (B, T, 3C), laid out as qkv, with the gradient of attention_forward_packed for grad_out (B, T, C), "
        "from forward's split, out and lse.");
  m.def(
      "small_path",
      [](int64_t L, int64_t S, float softcap) {
        if (L < 1 || S < 1) throw py::value_error("small_path: L and S must be >= 1");
        return fg::attention_small_path(L, S, softcap);
      },
      py::arg("L"), py::arg("S"), py::arg("softcap") = 0.0f,
      "Whether attention of L queries over S keys (softcap: 0 for none) runs on the whole-row kernels for short "
      "sequences (every query and key count <= kAttnSmallLen, no soft cap) rather than the flash-tiled ones.");
  m.def(
      "backward_splits",
      [](int64_t pairs, int64_t keys, int threads) {
        if (pairs < 0 || keys < 0 || threads < 1)
          throw py::value_error("backward_splits: pairs and keys must be >= 0 and threads >= 1");
        return fg::attention_backward_splits(pairs, keys, threads);
      },
      py::arg("pairs"), py::arg("keys"), py::arg("threads"),
      "Whether attention_backward at `threads` threads splits each of `pairs` (batch, head) pairs over its key "
      "blocks and query tiles (few pairs) rather than running whole pairs per thread; both give the same bits.");
}

}  // namespace

FG_REGISTER_BINDINGS(attention, bind)
