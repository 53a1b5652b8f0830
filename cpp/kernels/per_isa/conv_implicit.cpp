// Implicit-GEMM 2-D convolution forward, compiled per ISA: y (OCg x columns) = w (OCg x K) * B (K x columns)
// per group, where B's column (n, oh, ow) holds image n's pixels under the kernel taps and B is never
// stored whole: the GEMM's packed B panels (gemm_internal.h layout, kc x kGemmNR) are built straight from
// the image, stride, padding and dilation handled by per-panel tables (built once per column block,
// reused for every input channel and K slice): runs of lanes read by masked loads and permutes on
// AVX-512, gathers elsewhere. The columns run over the whole batch, so small output planes (8x8 at
// DCGAN's 256 -> 128 k4 s2 input gradient) still make long GEMM rows, and the weight is packed once per
// call (not once per image) and streamed once per column block. The arithmetic is sgemm's packed path:
// the same KC slices (a function of K alone), the same micro_tile fma chains, C = acc on the first slice
// then C = C + acc. Every output goes through that one sequence whatever the blocking, so the bits do
// not depend on the thread count (and equal im2col + sgemm's where sgemm takes its packed path).
#include <cstdint>
#include <cstring>

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

// sgemm's choose_kc (gemm.cpp): K in equal slices of at most kGemmKCMax, rounded up to 8.
int64_t implicit_kc(int64_t K) {
  const int64_t slices = (K + kGemmKCMax - 1) / kGemmKCMax;
  const int64_t kc = (K + slices - 1) / slices;
  return (kc + 7) / 8 * 8 < kGemmKCMax ? (kc + 7) / 8 * 8 : kGemmKCMax;
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

struct I32Buf {
  explicit I32Buf(int64_t n)
      : p(static_cast<int32_t*>(aligned_malloc(sizeof(int32_t) * static_cast<size_t>(n > 0 ? n : 1)))) {}
  ~I32Buf() { aligned_free(p); }
  I32Buf(const I32Buf&) = delete;
  I32Buf& operator=(const I32Buf&) = delete;
  int32_t* p;
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
#if defined(__AVX512F__)
  __m512i pat[16];  // pat[l0]: lane l reads float (l - l0) * stride_w of a run's two registers
#endif
};

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

// Index tables of column panels [q0, q1) (columns q * kGemmNR onwards of the batch's N * P): for tap t
// and panel q, lane jj of entry ((q - q0) * KK + t) * kGemmNR + jj is where column (n, oh, ow) reads its
// input relative to the channel plane (n * C * H * W + ih * W + iw), valid when (ih, iw) is inside.
void build_tables(const Implicit& s, int64_t q0, int64_t q1, int32_t* idx, int32_t* valid) {
  const Conv2dGeom& g = *s.g;
  const int64_t CHW = g.C * g.H * g.W;
  for (int64_t q = q0; q < q1; ++q)
    for (int64_t jj = 0; jj < kGemmNR; ++jj) {
      const int64_t c = q * kGemmNR + jj;
      const bool col = c < s.NP;
      const int64_t n = col ? c / s.P : 0, pix = col ? c % s.P : 0, oh = pix / g.OW, ow = pix % g.OW;
      for (int64_t t = 0; t < s.KK; ++t) {
        const int64_t kh = t / g.KW, kw = t % g.KW;
        const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dil_h, iw = ow * g.stride_w - g.pad_left + kw * g.dil_w;
        const bool ok = col && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
        const int64_t e = ((q - q0) * s.KK + t) * kGemmNR + jj;
        idx[e] = ok ? static_cast<int32_t>(n * CHW + ih * g.W + iw) : 0;
        valid[e] = ok ? -1 : 0;
      }
    }
}

#if defined(__AVX512F__)
// Rows [pc, pc + kc) of a packed B panel from its runs (qops: the panel's, nruns a vector); R > 0: nruns
// as a constant (the common 1-3: the run loop unrolled).
template <int R>
void pack_runs(const Implicit& s, const float* xg, int64_t HW, int64_t pc, int64_t kc, const RunOp* qops, int nruns,
               float* dst) {
  const int nr = R > 0 ? R : nruns;
  int64_t ic = pc / s.KK, t = pc % s.KK;
  for (int64_t k = 0; k < kc; ++k) {
    const float* base = xg + ic * HW;
    for (int v = 0; v < kGemmNV; ++v) {
      const RunOp* op = qops + (t * kGemmNV + v) * nr;
      __m512 acc = _mm512_setzero_ps();
      for (int o = 0; o < nr; ++o) {
        const __m512 lo = _mm512_maskz_loadu_ps(op[o].mlo, base + op[o].off);
        const __m512 hi = _mm512_maskz_loadu_ps(op[o].mhi, base + op[o].off + 16);
        acc = _mm512_mask_mov_ps(acc, op[o].mblend, _mm512_permutex2var_ps(lo, s.pat[op[o].l0], hi));
      }
      _mm512_storeu_ps(dst + k * kGemmNR + v * W, acc);
    }
    if (++t == s.KK) {
      t = 0;
      ++ic;
    }
  }
}
#endif

// Packed B panel q (kc x kGemmNR) of K rows [pc, pc + kc): row k = (ic, tap) read from channel ic.
void pack_b(const Implicit& s, const float* xg, int64_t HW, int64_t q, int64_t q0, int64_t pc, int64_t kc,
            const int32_t* idx, const int32_t* valid, const void* runs, const int32_t* nruns_p, float* dst) {
#if defined(__AVX512F__)
  (void)idx;
  (void)valid;
  const int nruns = *nruns_p;
  const RunOp* qops = static_cast<const RunOp*>(runs) + (q - q0) * s.KK * kGemmNV * nruns;
  switch (nruns) {
    case 1: pack_runs<1>(s, xg, HW, pc, kc, qops, nruns, dst); break;
    case 2: pack_runs<2>(s, xg, HW, pc, kc, qops, nruns, dst); break;
    case 3: pack_runs<3>(s, xg, HW, pc, kc, qops, nruns, dst); break;
    default: pack_runs<0>(s, xg, HW, pc, kc, qops, nruns, dst); break;
  }
#else
  (void)runs;
  (void)nruns_p;
  int64_t ic = pc / s.KK, t = pc % s.KK;
  const int64_t tab = (q - q0) * s.KK * kGemmNR;
  for (int64_t k = 0; k < kc; ++k) {
    const float* base = xg + ic * HW;
    const int64_t e = tab + t * kGemmNR;
    for (int v = 0; v < kGemmNV; ++v) gather_vec(base, idx + e + v * W, valid + e + v * W, dst + k * kGemmNR + v * W);
    if (++t == s.KK) {
      t = 0;
      ++ic;
    }
  }
#endif
}

// One unit: group gi, column panels [q0, q1), every row of y.
void run_unit(const Implicit& s, const float* x, const float* apack, const float* bias, float* y, int act, float alpha,
              int64_t gi, int64_t q0, int64_t q1, float* bpack, int32_t* idx, int32_t* valid, void* runs,
              int32_t* nruns_p, float* tmp) {
  const Conv2dGeom& g = *s.g;
  const int64_t HW = g.H * g.W;
  const float* xg = x + gi * s.Cg * HW;
  build_tables(s, q0, q1, idx, valid);
#if defined(__AVX512F__)
  *nruns_p = build_runs(s, q1 - q0, idx, valid, static_cast<RunOp*>(runs));
#endif
  for (int64_t pc = 0; pc < s.K; pc += s.KC) {
    const int64_t kc = s.K - pc < s.KC ? s.K - pc : s.KC;
    const float beta = pc == 0 ? 0.0f : 1.0f;
    const float* aslice = apack + gi * s.K * s.Mp + pc * s.Mp;
    auto tile = [&](int64_t p, int64_t q, const float* bp) {
      const int64_t i = p * kGemmMR, j = q * kGemmNR;
      const int rows = static_cast<int>(s.OCg - i < kGemmMR ? s.OCg - i : kGemmMR);
      const int cols = static_cast<int>(s.NP - j < kGemmNR ? s.NP - j : kGemmNR);
      const float* ap = aslice + p * kGemmMR * kc;
      const int64_t n0 = j / s.P, n1 = (j + cols - 1) / s.P;
      if (n0 == n1) {  // the tile's columns are one stretch of one image's planes
        float* c = y + (n0 * g.OC + gi * s.OCg + i) * s.P + (j - n0 * s.P);
        gemm_detail::micro_tile(rows, cols, kc, ap, bp, kGemmNR, c, s.P, 1.0f, beta);
        return;
      }
      // Across images: computed into tmp with beta 0 and added here; fma(1, C, acc) rounds as C + acc
      gemm_detail::micro_tile(rows, cols, kc, ap, bp, kGemmNR, tmp, kGemmNR, 1.0f, 0.0f);
      for (int64_t jj = 0; jj < cols; ++jj) {
        const int64_t n = (j + jj) / s.P, pix = (j + jj) % s.P;
        float* c = y + (n * g.OC + gi * s.OCg + i) * s.P + pix;
        for (int r = 0; r < rows; ++r)
          c[r * s.P] = pc == 0 ? tmp[r * kGemmNR + jj] : c[r * s.P] + tmp[r * kGemmNR + jj];
      }
    };
    if constexpr (gemm_detail::kGemmBPanelInL1) {
      // each B panel (L1) against every A panel of the slice (L2)
      for (int64_t q = q0; q < q1; ++q) {
        pack_b(s, xg, HW, q, q0, pc, kc, idx, valid, runs, nruns_p, bpack);
        for (int64_t p = 0; p < s.m_panels; ++p) tile(p, q, bpack);
      }
    } else {
      // each A panel (L1) against the block's B panels (L2)
      for (int64_t q = q0; q < q1; ++q)
        pack_b(s, xg, HW, q, q0, pc, kc, idx, valid, runs, nruns_p, bpack + (q - q0) * kc * kGemmNR);
      for (int64_t p = 0; p < s.m_panels; ++p)
        for (int64_t q = q0; q < q1; ++q) tile(p, q, bpack + (q - q0) * kc * kGemmNR);
    }
  }
  if (!bias && act < 0) return;
  // bias then activation over the block's columns, per image (elementwise: the bits of the pass over whole planes)
  const int64_t c0 = q0 * kGemmNR, c1 = q1 * kGemmNR < s.NP ? q1 * kGemmNR : s.NP;
  for (int64_t c = c0; c < c1;) {
    const int64_t n = c / s.P, pa = c % s.P, pb = (c1 - n * s.P) < s.P ? c1 - n * s.P : s.P;
    for (int64_t m = 0; m < s.OCg; ++m) {
      float* plane = y + (n * g.OC + gi * s.OCg + m) * s.P;
      if (bias) {
        const float b = bias[gi * s.OCg + m];
        for (int64_t i = pa; i < pb; ++i) plane[i] += b;
      }
      act_forward_serial(act, alpha, plane + pa, pb - pa);
    }
    c = n * s.P + pb;
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
  s.KC = implicit_kc(s.K);
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
  // The weight packed once for the call: group gi, slice at pc, panel p at gi*K*Mp + pc*Mp + p*MR*kc.
  AlignedBuffer A(static_cast<size_t>(G * s.K * s.Mp));
  parallel_for(G * s.m_panels, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t gi = u / s.m_panels, p = u % s.m_panels, i = p * kGemmMR;
      const int rows = static_cast<int>(s.OCg - i < kGemmMR ? s.OCg - i : kGemmMR);
      const float* wg = w + gi * s.OCg * s.K;
      for (int64_t pc = 0; pc < s.K; pc += s.KC) {
        const int64_t kc = s.K - pc < s.KC ? s.K - pc : s.KC;
        gemm_detail::pack_panel(wg + i * s.K + pc, s.K, 1, rows, kc, kGemmMR,
                                A.data() + gi * s.K * s.Mp + pc * s.Mp + p * kGemmMR * kc);
      }
    }
  });
  // Column blocks: a B block of at most sgemm's NC columns per KC slice (L2), and at least one block per
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
  parallel_for(G * nblocks, 1, [&](int64_t u0, int64_t u1) {
    AlignedBuffer B(static_cast<size_t>(s.KC * kGemmNR * (whole_block ? per : 1)));
    AlignedBuffer T(static_cast<size_t>(kGemmMR * kGemmNR));
    I32Buf idx(per * s.KK * kGemmNR), valid(per * s.KK * kGemmNR), nruns(1);
#if defined(__AVX512F__)
    I32Buf runs(per * s.KK * kGemmNR * 3);  // RunOp: 3 int32 each, at most one run per lane
    void* rp = runs.p;
#else
    void* rp = nullptr;
#endif
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t gi = u / nblocks, b = u % nblocks, q0 = b * per, q1 = q0 + per < tq ? q0 + per : tq;
      run_unit(s, x, A.data(), bias, y, act, alpha, gi, q0, q1, B.data(), idx.p, valid.p, rp, nruns.p, T.data());
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
