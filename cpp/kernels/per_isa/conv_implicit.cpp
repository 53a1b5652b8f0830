// Implicit-GEMM 2-D convolution forward, compiled per ISA: y (OCg x columns) = w (OCg x K) * B (K x columns)
// per group, where B's column (n, oh, ow) holds image n's pixels under the kernel taps and B is never
// stored whole: the GEMM's packed B panels (gemm_internal.h layout, kc x kGemmNR) are built straight from
// the image, stride, padding and dilation handled by per-panel tables (built once per column block,
// reused for every input channel and K slice): runs of lanes read by masked loads and permutes on
// AVX-512, gathers elsewhere. The columns run over the whole batch, so small output planes (8x8 at
// DCGAN's 256 -> 128 k4 s2 input gradient) still make long GEMM rows, and the weight is packed once per
// call (not once per image) and streamed once per column block.
//
// Padding taps are skipped, not multiplied: K runs tap-major (row t * Cg + ic: channel ic under tap t),
// cut into slices of whole taps (or of one tap's channels), and the batch's columns are ordered by which
// taps of the pixel fall in the padding (the interior first, then each edge and corner class, image after
// image within a class), so that a panel of kGemmNR columns mostly holds one class and skips the slices
// whose taps are padding for all of its columns. At k4 s2 padding 1 on 8x8 outputs that is 12 % of the
// products (the share torch's oneDNN skips too); on 16x16 outputs 6 %. Tiles go to a per-block buffer in
// that column order, copied to y (with bias and activation) after the block's last slice.
//
// Arithmetic: sgemm's micro_tile fma chains over each slice, C = acc on a panel's first live slice, then
// C = C + acc. Which slices a column's panel runs depends on the geometry and batch alone (the column
// order and panels are fixed; the thread count only decides which panels go together), so the bits do
// not depend on the thread count. A skipped slice would have added exact zeros for every column of the
// panel (products with padding), except where the weight is not finite, where torch's direct kernels
// skip them as well.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "act_vec.h"
#include "conv_tile.h"
#include "forgegrad/conv.h"
#include "forgegrad/conv_implicit.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"
#include "gemm_internal.h"

namespace fg {
namespace FG_ISA_NS {

using gemm_detail::kGemmKCMax;
using gemm_detail::kGemmMR;
using gemm_detail::kGemmNCMax;
using gemm_detail::kGemmNR;
using gemm_detail::kGemmNV;

namespace {

// K rows [r0, r0 + kc): taps [t0, t1), channels [c0, c1) of each (several taps: every channel).
struct Slice {
  int64_t t0, t1, c0, c1, r0, kc;
};

std::vector<Slice> make_slices(int64_t Cg, int64_t KH, int64_t KW) {
  std::vector<Slice> out;
  if (Cg > kGemmKCMax) {  // one tap's channels in equal parts
    const int64_t parts = (Cg + kGemmKCMax - 1) / kGemmKCMax, chunk = (Cg + parts - 1) / parts;
    for (int64_t t = 0; t < KH * KW; ++t)
      for (int64_t c0 = 0; c0 < Cg; c0 += chunk) {
        const int64_t c1 = c0 + chunk < Cg ? c0 + chunk : Cg;
        out.push_back(Slice{t, t + 1, c0, c1, t * Cg + c0, c1 - c0});
      }
    return out;
  }
  // Taps of one kernel row together, as many as fit kGemmKCMax rows (in equal counts): a padding row of the
  // kernel is whole slices.
  const int64_t fit = kGemmKCMax / Cg < KW ? kGemmKCMax / Cg : KW, parts = (KW + fit - 1) / fit;
  const int64_t per = (KW + parts - 1) / parts;
  for (int64_t kh = 0; kh < KH; ++kh)
    for (int64_t kw = 0; kw < KW; kw += per) {
      const int64_t t0 = kh * KW + kw, t1 = kh * KW + (kw + per < KW ? kw + per : KW);
      out.push_back(Slice{t0, t1, 0, Cg, t0 * Cg, (t1 - t0) * Cg});
    }
  return out;
}

// One vector of a packed B row: lane l = base[idx[l]] where valid[l] != 0, else 0 (padding, or a
// column past the last). Masked lanes are not read.
inline void gather_vec(const float* base, const int32_t* idx, const int32_t* valid, float* dst) {
#if defined(__AVX512F__)
  const __m512i v = _mm512_loadu_si512(valid);
  const __mmask16 m = _mm512_test_epi32_mask(v, v);
  _mm512_storeu_ps(dst, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_loadu_si512(idx), base, 4));
#elif defined(__AVX2__)
  const __m256 m = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(valid)));
  const __m256i vi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx));
  _mm256_storeu_ps(dst, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, vi, m, 4));
#else
  for (int l = 0; l < W; ++l) dst[l] = valid[l] ? base[idx[l]] : 0.0f;
#endif
}

template <class T>
struct Buf {
  explicit Buf(int64_t n) : p(static_cast<T*>(aligned_malloc(sizeof(T) * static_cast<size_t>(n > 0 ? n : 1)))) {}
  ~Buf() { aligned_free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  T* p;
};

#if defined(__AVX512F__)
// AVX-512 packs a B vector from runs instead of gathers (a 16-lane gather costs ~30 cycles here, as much as
// a quarter of the GEMM work it feeds at 128 output channels): lanes [l0, l0 + len) read base[off + i * s]
// for i < len, one masked load of the run's (len - 1) * s + 1 <= 32 floats into two registers, one
// two-register permute (pattern l0) and a masked move into the vector. Padding and columns past the last
// are lanes no run covers (zeros).
struct RunOp {
  int32_t off;
  uint16_t mlo, mhi, mblend;
  uint16_t l0;
};
#endif

struct Implicit {
  const Conv2dGeom* g;
  int64_t Cg, OCg, KK, K, P, NP, KC, m_panels, Mp;
  std::vector<Slice> slices;
  std::vector<int64_t> colmap;  // column -> n * P + pixel, in the class order (see the top of the file)
#if defined(__AVX512F__)
  __m512i pat[16];  // pat[l0]: lane l reads float (l - l0) * stride_w of a run's two registers
#endif
};

// The column order: pixels sorted by the set of their taps that fall in the padding (stable: raster order
// within a set; kernels of more than 64 taps keep the raster order), then classes outer, images inner.
void make_colmap(Implicit& s) {
  const Conv2dGeom& g = *s.g;
  std::vector<uint64_t> key(static_cast<size_t>(s.P), 0);
  if (g.KH <= 64)
    for (int64_t pix = 0; pix < s.P; ++pix) {
      const int64_t oh = pix / g.OW;
      uint64_t m = 0;
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dil_h;
        if (ih < 0 || ih >= g.H) m |= uint64_t(1) << kh;
      }
      key[static_cast<size_t>(pix)] = m;
    }
  std::vector<int64_t> order(static_cast<size_t>(s.P));
  for (int64_t i = 0; i < s.P; ++i) order[static_cast<size_t>(i)] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return key[static_cast<size_t>(a)] < key[static_cast<size_t>(b)]; });
  s.colmap.resize(static_cast<size_t>(s.NP));
  size_t c = 0;
  for (int64_t a = 0; a < s.P;) {
    int64_t b = a + 1;
    while (b < s.P && key[static_cast<size_t>(order[b])] == key[static_cast<size_t>(order[a])]) ++b;
    for (int64_t n = 0; n < s.g->N; ++n)
      for (int64_t i = a; i < b; ++i) s.colmap[c++] = n * s.P + order[static_cast<size_t>(i)];
    a = b;
  }
}

#if defined(__AVX512F__)
// The runs of every (panel, tap, vector) of the tables built below, nruns to a vector: vector e's are
// ops[e * nruns .. (e + 1) * nruns), padded with empty runs (zero masks: nothing read or moved) so that
// every vector loops the same count (a count varying from tap to tap mispredicted ~1 branch per vector).
// Returns nruns.
int build_runs(const Implicit& s, int64_t npanels, const int32_t* idx, const int32_t* valid, RunOp* ops) {
  const int64_t sw = s.g->stride_w, max_len = 31 / sw + 1;  // (len - 1) * sw + 1 <= 32 floats
  const int64_t nvec = npanels * s.KK * kGemmNV;
  // emit(i, first lane, lanes, offset) for run i of vector e, in lane order; returns the count
  auto scan = [&](int64_t e, auto emit) {
    const int32_t* ix = idx + e * W;
    const int32_t* ok = valid + e * W;
    int count = 0;
    for (int l = 0; l < W;) {
      if (!ok[l]) {
        ++l;
        continue;
      }
      int len = 1;
      while (l + len < W && len < max_len && ok[l + len] && ix[l + len] == ix[l] + len * sw) ++len;
      emit(count++, l, len, ix[l]);
      l += len;
    }
    return count;
  };
  int nruns = 1;
  for (int64_t e = 0; e < nvec; ++e) {
    const int c = scan(e, [](int, int, int, int32_t) {});
    nruns = c > nruns ? c : nruns;
  }
  for (int64_t e = 0; e < nvec; ++e) {
    RunOp* o = ops + e * nruns;
    int count = scan(e, [&](int i, int l, int len, int32_t off) {
      const int n = static_cast<int>((len - 1) * sw + 1);
      o[i].off = off;
      o[i].mlo = static_cast<uint16_t>(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
      o[i].mhi = static_cast<uint16_t>(n > 16 ? (1u << (n - 16)) - 1u : 0u);
      o[i].mblend = static_cast<uint16_t>(((1u << len) - 1u) << l);
      o[i].l0 = static_cast<uint16_t>(l);
    });
    for (; count < nruns; ++count) o[count] = RunOp{0, 0, 0, 0, 0};
  }
  return nruns;
}
#endif

// Index tables of column panels [q0, q1): for tap t and panel q, lane jj of entry ((q - q0) * KK + t) *
// kGemmNR + jj is where column q * kGemmNR + jj (pixel (oh, ow) of image n) reads its input relative to
// the channel plane (n * C * H * W + ih * W + iw), valid when (ih, iw) is inside. live[(q - q0) * nslices
// + i]: some column of panel q reads inside the image under some tap of slice i.
void build_tables(const Implicit& s, int64_t q0, int64_t q1, int32_t* idx, int32_t* valid, uint8_t* live) {
  const Conv2dGeom& g = *s.g;
  const int64_t CHW = g.C * g.H * g.W, ns = static_cast<int64_t>(s.slices.size());
  for (int64_t q = q0; q < q1; ++q) {
    for (int64_t jj = 0; jj < kGemmNR; ++jj) {
      const int64_t c = q * kGemmNR + jj;
      const bool col = c < s.NP;
      const int64_t cm = col ? s.colmap[static_cast<size_t>(c)] : 0;
      const int64_t n = cm / s.P, pix = cm % s.P, oh = pix / g.OW, ow = pix % g.OW;
      for (int64_t t = 0; t < s.KK; ++t) {
        const int64_t kh = t / g.KW, kw = t % g.KW;
        const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dil_h, iw = ow * g.stride_w - g.pad_left + kw * g.dil_w;
        const bool ok = col && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
        const int64_t e = ((q - q0) * s.KK + t) * kGemmNR + jj;
        idx[e] = ok ? static_cast<int32_t>(n * CHW + ih * g.W + iw) : 0;
        valid[e] = ok ? -1 : 0;
      }
    }
    for (int64_t i = 0; i < ns; ++i) {
      const Slice& sl = s.slices[static_cast<size_t>(i)];
      const int32_t* v = valid + ((q - q0) * s.KK + sl.t0) * kGemmNR;
      uint8_t any = 0;
      for (int64_t e = 0; e < (sl.t1 - sl.t0) * kGemmNR; ++e) any |= v[e] != 0;
      live[(q - q0) * ns + i] = any;
    }
  }
}

#if defined(__AVX512F__)
// The packed B panel of slice sl from its runs (qops: the panel's, nruns a vector); R > 0: nruns as a
// constant (the common 1-3: the run loop unrolled, a tap's runs held in registers over its channels).
template <int R>
void pack_runs(const Implicit& s, const float* xg, int64_t HW, const Slice& sl, const RunOp* qops, int nruns,
               float* dst) {
  const int nr = R > 0 ? R : nruns;
  const int64_t nc = sl.c1 - sl.c0;
  // Channels outer: a slice's taps read the same lines of a channel (neighbouring taps of one kernel row),
  // and the lines kPackAhead channels on are fetched meanwhile (the planes lie HW floats apart, often in L3).
  constexpr int64_t kPackAhead = 4;
  for (int64_t ic = sl.c0; ic < sl.c1; ++ic) {
    const float* base = xg + ic * HW;
    const bool ahead = ic + kPackAhead < sl.c1;
    for (int64_t t = sl.t0; t < sl.t1; ++t) {
      const RunOp* op0 = qops + t * kGemmNV * nr;
      float* d = dst + ((t - sl.t0) * nc + ic - sl.c0) * kGemmNR;
      for (int v = 0; v < kGemmNV; ++v) {
        const RunOp* op = op0 + v * nr;
        __m512 acc = _mm512_setzero_ps();
        for (int o = 0; o < nr; ++o) {
          if (t == sl.t0 && ahead)
            _mm_prefetch(reinterpret_cast<const char*>(base + kPackAhead * HW + op[o].off), _MM_HINT_T0);
          const __m512 lo = _mm512_maskz_loadu_ps(op[o].mlo, base + op[o].off);
          const __m512 hi = _mm512_maskz_loadu_ps(op[o].mhi, base + op[o].off + 16);
          acc = _mm512_mask_mov_ps(acc, op[o].mblend, _mm512_permutex2var_ps(lo, s.pat[op[o].l0], hi));
        }
        _mm512_storeu_ps(d + v * W, acc);
      }
    }
  }
}
#endif

// Packed B panel q (kc x kGemmNR) of slice sl: row (t, ic) read from channel ic under tap t.
void pack_b(const Implicit& s, const float* xg, int64_t HW, int64_t q, int64_t q0, const Slice& sl, const int32_t* idx,
            const int32_t* valid, const void* runs, int nruns, float* dst) {
#if defined(__AVX512F__)
  (void)idx;
  (void)valid;
  const RunOp* qops = static_cast<const RunOp*>(runs) + (q - q0) * s.KK * kGemmNV * nruns;
  switch (nruns) {
    case 1: pack_runs<1>(s, xg, HW, sl, qops, nruns, dst); break;
    case 2: pack_runs<2>(s, xg, HW, sl, qops, nruns, dst); break;
    case 3: pack_runs<3>(s, xg, HW, sl, qops, nruns, dst); break;
    default: pack_runs<0>(s, xg, HW, sl, qops, nruns, dst); break;
  }
#else
  (void)runs;
  (void)nruns;
  const int64_t tab = (q - q0) * s.KK * kGemmNR;
  for (int64_t t = sl.t0; t < sl.t1; ++t) {
    const int64_t e = tab + t * kGemmNR;
    for (int64_t ic = sl.c0; ic < sl.c1; ++ic, dst += kGemmNR) {
      const float* base = xg + ic * HW;
      for (int v = 0; v < kGemmNV; ++v) gather_vec(base, idx + e + v * W, valid + e + v * W, dst + v * W);
    }
  }
#endif
}

// Per-thread scratch of run_unit.
struct Scratch {
  float* bpack;  // B panels of one slice: the block's (A panel in L1) or one (B panel in L1)
  float* ybuf;   // OCg rows of the block's columns, ldy apart
  int64_t ldy;
  int32_t *idx, *valid;
  void* runs;
  uint8_t* live;
  int64_t* first;  // per panel: its first live slice, -1 if none
};

// One unit: group gi, column panels [q0, q1), every row of y.
void run_unit(const Implicit& s, const float* x, const float* apack, const float* bias, float* y, int act, float alpha,
              int64_t gi, int64_t q0, int64_t q1, const Scratch& sc) {
  const Conv2dGeom& g = *s.g;
  const int64_t HW = g.H * g.W, ns = static_cast<int64_t>(s.slices.size()), nq = q1 - q0;
  const float* xg = x + gi * s.Cg * HW;
  build_tables(s, q0, q1, sc.idx, sc.valid, sc.live);
  int nruns = 1;
#if defined(__AVX512F__)
  nruns = build_runs(s, nq, sc.idx, sc.valid, static_cast<RunOp*>(sc.runs));
#endif
  for (int64_t q = 0; q < nq; ++q) {
    sc.first[q] = -1;
    for (int64_t i = 0; i < ns && sc.first[q] < 0; ++i)
      if (sc.live[q * ns + i]) sc.first[q] = i;
    if (sc.first[q] < 0)  // every tap in the padding for every column: y = bias
      for (int64_t m = 0; m < s.OCg; ++m) std::memset(sc.ybuf + m * sc.ldy + q * kGemmNR, 0, sizeof(float) * kGemmNR);
  }
  for (int64_t i = 0; i < ns; ++i) {
    const Slice& sl = s.slices[static_cast<size_t>(i)];
    const float* aslice = apack + gi * s.K * s.Mp + sl.r0 * s.Mp;
    auto tile = [&](int64_t p, int64_t q, const float* bp) {
      const int64_t r0 = p * kGemmMR, j = q * kGemmNR;
      const int rows = static_cast<int>(s.OCg - r0 < kGemmMR ? s.OCg - r0 : kGemmMR);
      const int cols = static_cast<int>(s.NP - j < kGemmNR ? s.NP - j : kGemmNR);
      gemm_detail::micro_tile(rows, cols, sl.kc, aslice + p * kGemmMR * sl.kc, bp, kGemmNR,
                              sc.ybuf + r0 * sc.ldy + (q - q0) * kGemmNR, sc.ldy, 1.0f,
                              sc.first[q - q0] == i ? 0.0f : 1.0f);
    };
    if constexpr (gemm_detail::kGemmBPanelInL1) {
      // each B panel (L1) against every A panel of the slice (L2)
      for (int64_t q = q0; q < q1; ++q) {
        if (!sc.live[(q - q0) * ns + i]) continue;
        pack_b(s, xg, HW, q, q0, sl, sc.idx, sc.valid, sc.runs, nruns, sc.bpack);
        for (int64_t p = 0; p < s.m_panels; ++p) tile(p, q, sc.bpack);
      }
    } else {
      // each A panel (L1) against the block's B panels (L2)
      for (int64_t q = q0; q < q1; ++q)
        if (sc.live[(q - q0) * ns + i])
          pack_b(s, xg, HW, q, q0, sl, sc.idx, sc.valid, sc.runs, nruns, sc.bpack + (q - q0) * sl.kc * kGemmNR);
      for (int64_t p = 0; p < s.m_panels; ++p)
        for (int64_t q = q0; q < q1; ++q)
          if (sc.live[(q - q0) * ns + i]) tile(p, q, sc.bpack + (q - q0) * sl.kc * kGemmNR);
    }
  }
  // The block's columns to y in runs of one image's consecutive pixels, plus bias, then the activation
  // (elementwise: the bits of the pass over whole planes).
  const int64_t c0 = q0 * kGemmNR, c1 = q1 * kGemmNR < s.NP ? q1 * kGemmNR : s.NP;
  for (int64_t c = c0; c < c1;) {
    const int64_t cm = s.colmap[static_cast<size_t>(c)], n = cm / s.P, pix = cm % s.P;
    int64_t len = 1;
    while (c + len < c1 && s.colmap[static_cast<size_t>(c + len)] == cm + len && pix + len < s.P) ++len;
    for (int64_t m = 0; m < s.OCg; ++m) {
      float* d = y + (n * g.OC + gi * s.OCg + m) * s.P + pix;
      const float* src = sc.ybuf + m * sc.ldy + (c - c0);
      int64_t k = 0;
      if (bias) {
        const vf b = vset1(bias[gi * s.OCg + m]);
        for (; k + W <= len; k += W) vstore(d + k, vadd(vload(src + k), b));
        if (k < len) vstore_n(d + k, vadd(vload_n(src + k, static_cast<int>(len - k)), b), static_cast<int>(len - k));
      } else {
        for (; k + W <= len; k += W) vstore(d + k, vload(src + k));
        if (k < len) vstore_n(d + k, vload_n(src + k, static_cast<int>(len - k)), static_cast<int>(len - k));
      }
      act_forward_serial(act, alpha, d, len);
    }
    c += len;
  }
}

}  // namespace

void conv2d_forward_implicit(const Conv2dGeom& g, const float* x, const float* w, const float* bias, float* y, int act,
                             float alpha) {
  Implicit s;
  s.g = &g;
  const int64_t G = g.groups;
  s.Cg = g.C / G;
  s.OCg = g.OC / G;
  s.KK = g.KH * g.KW;
  s.K = s.Cg * s.KK;
  s.P = g.OH * g.OW;
  s.NP = g.N * s.P;
  s.m_panels = (s.OCg + kGemmMR - 1) / kGemmMR;
  s.Mp = s.m_panels * kGemmMR;
#if defined(__AVX512F__)
  for (int l0 = 0; l0 < 16; ++l0) {
    alignas(64) int32_t p[16];
    for (int l = 0; l < 16; ++l)
      p[l] = l >= l0 && (l - l0) * g.stride_w < 32 ? static_cast<int32_t>((l - l0) * g.stride_w) : 0;
    s.pat[l0] = _mm512_load_si512(p);
  }
#endif
  if (s.NP <= 0 || s.OCg <= 0) return;
  if (s.K <= 0) {  // no taps: y = bias
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t oc = 0; oc < g.OC; ++oc) {
        float* plane = y + (n * g.OC + oc) * s.P;
        for (int64_t i = 0; i < s.P; ++i) plane[i] = bias ? bias[oc] : 0.0f;
        act_forward_serial(act, alpha, plane, s.P);
      }
    return;
  }
  s.slices = make_slices(s.Cg, g.KH, g.KW);
  s.KC = 0;
  for (const Slice& sl : s.slices) s.KC = sl.kc > s.KC ? sl.kc : s.KC;
  make_colmap(s);
  // The weight packed once for the call, tap-major: group gi, slice at row r0, panel p at gi*K*Mp + r0*Mp +
  // p*MR*kc, a slice's taps one after the other. Read a weight row's KK taps at a time (one line at k4)
  // and scattered to the taps' slices: the strided gathers of a pack per tap cost ~4 % of the call.
  std::vector<int64_t> koff(static_cast<size_t>(s.K)), kcs(static_cast<size_t>(s.K));  // by ic * KK + t
  for (const Slice& sl : s.slices)
    for (int64_t t = sl.t0; t < sl.t1; ++t)
      for (int64_t ic = sl.c0; ic < sl.c1; ++ic) {
        const size_t k = static_cast<size_t>(ic * s.KK + t);
        koff[k] = sl.r0 * s.Mp + ((t - sl.t0) * (sl.c1 - sl.c0) + ic - sl.c0) * kGemmMR;
        kcs[k] = sl.kc;
      }
  AlignedBuffer A(static_cast<size_t>(G * s.K * s.Mp));
  parallel_for(G * s.m_panels, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t gi = u / s.m_panels, p = u % s.m_panels, i = p * kGemmMR;
      const int64_t rows = s.OCg - i < kGemmMR ? s.OCg - i : kGemmMR;
      const float* wg = w + (gi * s.OCg + i) * s.K;
      float* ag = A.data() + gi * s.K * s.Mp + p * kGemmMR;
      for (int64_t k = 0; k < s.K; ++k) {
        float* d = ag + koff[static_cast<size_t>(k)] + (kcs[static_cast<size_t>(k)] - 1) * p * kGemmMR;
        for (int64_t r = 0; r < rows; ++r) d[r] = wg[r * s.K + k];
        for (int64_t r = rows; r < kGemmMR; ++r) d[r] = 0.0f;
      }
    }
  });
  // Column blocks: a B block of at most sgemm's NC columns per slice (L2), and at least one block per
  // thread. Which columns go together never changes a result (see the top of the file).
  const int64_t tq = (s.NP + kGemmNR - 1) / kGemmNR;
  int64_t per = kGemmKCMax * kGemmNCMax / s.KC / kGemmNR;
  if (per < 1) per = 1;
  // bounds the index tables (per * KK * kGemmNR entries of 5 int32): AVX2's NC would make 256 panels, and
  // huge kernels (the binding takes any) thousands of taps
  const int64_t tab_cap = (int64_t(1) << 16) / (s.KK * kGemmNR);
  if (per > 64) per = 64;
  if (per > tab_cap) per = tab_cap < 1 ? 1 : tab_cap;
  int64_t nblocks = (tq + per - 1) / per;
  const int64_t nt = get_num_threads();
  if (nblocks * G < nt) nblocks = (nt + G - 1) / G < tq ? (nt + G - 1) / G : tq;
  per = (tq + nblocks - 1) / nblocks;
  nblocks = (tq + per - 1) / per;
  const bool whole_block = !gemm_detail::kGemmBPanelInL1;
  const int64_t ns = static_cast<int64_t>(s.slices.size());
  parallel_for(G * nblocks, 1, [&](int64_t u0, int64_t u1) {
    int64_t ldy = per * kGemmNR;
    if (ldy % 128 == 0) ldy += W;  // rows a multiple of 512 bytes apart would share L1 sets
    AlignedBuffer B(static_cast<size_t>(s.KC * kGemmNR * (whole_block ? per : 1)));
    AlignedBuffer Y(static_cast<size_t>(s.OCg * ldy));
    Buf<int32_t> idx(per * s.KK * kGemmNR), valid(per * s.KK * kGemmNR);
    Buf<uint8_t> live(per * ns);
    Buf<int64_t> first(per);
#if defined(__AVX512F__)
    Buf<int32_t> runs(per * s.KK * kGemmNR * 3);  // RunOp: 3 int32 each, at most one run per lane
    void* rp = runs.p;
#else
    void* rp = nullptr;
#endif
    const Scratch sc{B.data(), Y.data(), ldy, idx.p, valid.p, rp, live.p, first.p};
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t gi = u / nblocks, b = u % nblocks, q0 = b * per, q1 = q0 + per < tq ? q0 + per : tq;
      run_unit(s, x, A.data(), bias, y, act, alpha, gi, q0, q1, sc);
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
