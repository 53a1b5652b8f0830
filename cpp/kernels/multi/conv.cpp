// 2-D convolution kernels, compiled per ISA (see conv.h for the layout and the algorithm).
//
// Every pass is a product of a small packed matrix A with "rows" of a buffer B that are addressed
// through an offset table: row k of B starts at B + off[k]. With a zero-padded image, flat index
// p = oh * Wp + ow and off[(ic, kh, kw)] = ic*Hp*Wp + kh*dh*Wp + kw*dw, this is a stride-1
// convolution with no im2col copy (the Wp - OW columns past each output row are computed and
// dropped); with an im2col matrix, off[k] = k * ld. Two register-blocked micro-kernels cover it:
//   rows_kernel: C[m][p] = sum_k A[m][k] * B[off[k] + p]      (forward and input gradient)
//   dot_kernel:  D[m][k] = sum_p G[m][p] * B[off[k] + p]      (weight gradient)
// Each output element is computed by one fixed sequence of operations, whichever thread runs it,
// and the batch sums of the weight gradient go through fixed chunks of images added in order:
// results are bit-identical for any thread count.
#include <cstring>

#include "forgegrad/conv.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

#if defined(__AVX512F__)
constexpr int kMR = 6, kNR = 4;  // rows kernel: 6 rows x 4 vectors = 24 accumulators (of 32)
constexpr int kDM = 4, kDK = 6;  // dot kernel: 4 x 6 accumulators
#elif defined(__AVX2__)
constexpr int kMR = 6, kNR = 2;  // 12 accumulators + 2 loads + 1 broadcast of 16 registers
constexpr int kDM = 2, kDK = 4;
#else
constexpr int kMR = 4, kNR = 4;
constexpr int kDM = 2, kDK = 4;
#endif
constexpr int64_t kPB = int64_t(kNR) * W;  // columns per rows-kernel step
// Images per chunk of the weight-gradient batch sum: a function of N only (never of the thread
// count), so the order of additions is fixed.
constexpr int64_t kMaxWeightChunks = 8;

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// int64 scratch without std containers (see simd.h on templates in multi/ files).
struct OffsetTable {
  explicit OffsetTable(int64_t n)
      : p(static_cast<int64_t*>(aligned_malloc(sizeof(int64_t) * static_cast<size_t>(n > 0 ? n : 1)))) {}
  ~OffsetTable() { aligned_free(p); }
  OffsetTable(const OffsetTable&) = delete;
  OffsetTable& operator=(const OffsetTable&) = delete;
  int64_t* p;
};

// C[m][p] = init[m] + sum_k A[k*MR + m] * B[off[k] + p] for m < MR and p < round_up(P, kPB).
// B must be readable (finite or not: those columns are dropped) that far past each row start.
template <int MR>
void rows_kernel(int64_t K, const float* A, const float* B, const int64_t* off, int64_t P,
                 const float* init, float* C, int64_t ldc) {
  for (int64_t p0 = 0; p0 < P; p0 += kPB) {
    vf acc[MR][kNR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      vf v = vset1(init ? init[m] : 0.0f);
#pragma GCC unroll 8
      for (int j = 0; j < kNR; ++j) acc[m][j] = v;
    }
    const float* a = A;
    for (int64_t k = 0; k < K; ++k, a += MR) {
      const float* b = B + off[k] + p0;
      vf bv[kNR];
#pragma GCC unroll 8
      for (int j = 0; j < kNR; ++j) bv[j] = vload(b + j * W);
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) {
        vf av = vset1(a[m]);
#pragma GCC unroll 8
        for (int j = 0; j < kNR; ++j) acc[m][j] = vfmadd(av, bv[j], acc[m][j]);
      }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
      for (int j = 0; j < kNR; ++j) vstore(C + m * ldc + p0 + j * W, acc[m][j]);
  }
}

void rows_block(int mr, int64_t K, const float* A, const float* B, const int64_t* off, int64_t P,
                const float* init, float* C, int64_t ldc) {
  switch (mr) {
    case 1: return rows_kernel<1>(K, A, B, off, P, init, C, ldc);
    case 2: return rows_kernel<2>(K, A, B, off, P, init, C, ldc);
    case 3: return rows_kernel<3>(K, A, B, off, P, init, C, ldc);
    case 4: return rows_kernel<4>(K, A, B, off, P, init, C, ldc);
#if defined(__AVX512F__) || defined(__AVX2__)
    case 5: return rows_kernel<5>(K, A, B, off, P, init, C, ldc);
    case 6: return rows_kernel<6>(K, A, B, off, P, init, C, ldc);
#endif
    default: return;
  }
}

// D[m][j] (+)= sum_{p < round_up(P, W)} G[m][p] * B[off[j] + p] for m < kDM, j < kDK; G rows are
// zero past P. accumulate: add to D's old value, else overwrite.
void dot_kernel(const float* const* g_rows, const float* B, const int64_t* off, int64_t P,
                float* const* d_rows, const int64_t* d_cols, int dm, int dk, bool accumulate) {
  vf acc[kDM][kDK];
#pragma GCC unroll 8
  for (int m = 0; m < kDM; ++m)
#pragma GCC unroll 8
    for (int j = 0; j < kDK; ++j) acc[m][j] = vzero();
  const float* b[kDK];
  for (int j = 0; j < kDK; ++j) b[j] = B + off[j];
  for (int64_t p = 0; p < P; p += W) {
    vf gv[kDM];
#pragma GCC unroll 8
    for (int m = 0; m < kDM; ++m) gv[m] = vload(g_rows[m] + p);
#pragma GCC unroll 8
    for (int j = 0; j < kDK; ++j) {
      vf bv = vload(b[j] + p);
#pragma GCC unroll 8
      for (int m = 0; m < kDM; ++m) acc[m][j] = vfmadd(gv[m], bv, acc[m][j]);
    }
  }
  for (int m = 0; m < dm; ++m)
    for (int j = 0; j < dk; ++j) {
      float s = vreduce_add(acc[m][j]);
      float* d = d_rows[m] + d_cols[j];
      *d = accumulate ? *d + s : s;
    }
}

// Packs an M x R matrix given elementwise by get(m, r) into kMR-row panels: the panel of rows
// [m0, m0 + mr) starts at out + m0 * R and holds get(m0 + i, r) at [r * mr + i].
template <class Get>
void pack_panels(int64_t M, int64_t R, float* out, Get get) {
  for (int64_t m0 = 0; m0 < M; m0 += kMR) {
    int64_t mr = M - m0 < kMR ? M - m0 : kMR;
    float* dst = out + m0 * R;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = 0; i < mr; ++i) dst[r * mr + i] = get(m0 + i, r);
  }
}

// Shapes of the B buffer built from one image of one group.
struct Plan {
  bool direct;     // stride 1: zero-padded image; else im2col
  int64_t Hp, Wp;  // padded image (direct)
  int64_t P;       // flat output columns computed per row (OH * Wp or OH * OW)
  int64_t ld;      // im2col row stride (multiple of kPB)
  int64_t bsize;   // floats in B
};

Plan make_plan(const Conv2dGeom& g) {
  Plan pl{};
  const int64_t Cg = g.C / g.groups, K = Cg * g.KH * g.KW;
  pl.direct = g.stride_h == 1 && g.stride_w == 1;
  pl.Hp = g.H + g.pad_top + g.pad_bottom;
  pl.Wp = g.W + g.pad_left + g.pad_right;
  if (pl.direct) {
    pl.P = g.OH * pl.Wp;
    // Reads reach off_max + round_up(P, kPB) <= Cg*Hp*Wp + Wp + kPB (see the header comment).
    pl.bsize = Cg * pl.Hp * pl.Wp + pl.Wp + kPB + W;
  } else {
    pl.P = g.OH * g.OW;
    pl.ld = round_up(pl.P, kPB);
    pl.bsize = K * pl.ld;
  }
  return pl;
}

void fill_offsets(const Conv2dGeom& g, const Plan& pl, int64_t* off) {
  const int64_t Cg = g.C / g.groups;
  int64_t k = 0;
  for (int64_t ic = 0; ic < Cg; ++ic)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw, ++k)
        off[k] = pl.direct ? ic * pl.Hp * pl.Wp + kh * g.dil_h * pl.Wp + kw * g.dil_w : k * pl.ld;
}

// B for image channels xs (Cg, H, W): the zero-padded image or the im2col matrix.
void fill_input(const Conv2dGeom& g, const Plan& pl, const float* xs, float* B) {
  const int64_t Cg = g.C / g.groups, H = g.H, Wd = g.W;
  if (pl.direct) {
    const int64_t plane = pl.Hp * pl.Wp;
    parallel_for(Cg, 4, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        float* d = B + c * plane;
        const float* s = xs + c * H * Wd;
        std::memset(d, 0, sizeof(float) * g.pad_top * pl.Wp);
        for (int64_t h = 0; h < H; ++h) {
          float* row = d + (g.pad_top + h) * pl.Wp;
          std::memset(row, 0, sizeof(float) * g.pad_left);
          std::memcpy(row + g.pad_left, s + h * Wd, sizeof(float) * Wd);
          std::memset(row + g.pad_left + Wd, 0, sizeof(float) * g.pad_right);
        }
        std::memset(d + (g.pad_top + H) * pl.Wp, 0, sizeof(float) * g.pad_bottom * pl.Wp);
      }
    });
    std::memset(B + Cg * plane, 0, sizeof(float) * (pl.bsize - Cg * plane));
    return;
  }
  const int64_t KK = g.KH * g.KW;
  parallel_for(Cg * KK, 8, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t c = k / KK, kh = (k / g.KW) % g.KH, kw = k % g.KW;
      const float* s = xs + c * H * Wd;
      float* row = B + k * pl.ld;
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dil_h;
        float* r = row + oh * g.OW;
        if (ih < 0 || ih >= H) {
          std::memset(r, 0, sizeof(float) * g.OW);
          continue;
        }
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const int64_t iw = ow * g.stride_w - g.pad_left + kw * g.dil_w;
          r[ow] = (iw >= 0 && iw < Wd) ? s[ih * Wd + iw] : 0.0f;
        }
      }
      std::memset(row + pl.P, 0, sizeof(float) * (pl.ld - pl.P));
    }
  });
}

}  // namespace

// x (N, C, H, W), weight (OC, Cg, KH, KW), bias (OC,) or null -> y (N, OC, OH, OW)
void conv2d_forward(const Conv2dGeom& g, const float* x, const float* w, const float* bias, float* y) {
  if (g.N <= 0) return;
  const int64_t G = g.groups, Cg = g.C / G, OCg = g.OC / G, K = Cg * g.KH * g.KW;
  const int64_t OHW = g.OH * g.OW;
  const Plan pl = make_plan(g);
  const int64_t ldc = round_up(pl.P, kPB);
  AlignedBuffer A(static_cast<size_t>(g.OC * K));
  for (int64_t gi = 0; gi < G; ++gi) {
    const float* wg = w + gi * OCg * K;
    pack_panels(OCg, K, A.data() + gi * OCg * K, [&](int64_t m, int64_t r) { return wg[m * K + r]; });
  }
  OffsetTable off(K);
  fill_offsets(g, pl, off.p);
  const int64_t nblocks = (OCg + kMR - 1) / kMR;
  parallel_for(g.N * G, 1, [&](int64_t u0, int64_t u1) {
    AlignedBuffer B(static_cast<size_t>(pl.bsize));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t n = u / G, gi = u % G;
      fill_input(g, pl, x + (n * g.C + gi * Cg) * g.H * g.W, B.data());
      float* ys = y + (n * g.OC + gi * OCg) * OHW;
      parallel_for(nblocks, 1, [&](int64_t b0, int64_t b1) {
        AlignedBuffer Cs(static_cast<size_t>(kMR * ldc));
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t m0 = blk * kMR, mr = OCg - m0 < kMR ? OCg - m0 : kMR;
          rows_block(static_cast<int>(mr), K, A.data() + (gi * OCg + m0) * K, B.data(), off.p, pl.P,
                     bias ? bias + gi * OCg + m0 : nullptr, Cs.data(), ldc);
          const int64_t src_ld = pl.direct ? pl.Wp : g.OW;
          for (int64_t m = 0; m < mr; ++m)
            for (int64_t oh = 0; oh < g.OH; ++oh)
              std::memcpy(ys + (m0 + m) * OHW + oh * g.OW, Cs.data() + m * ldc + oh * src_ld,
                          sizeof(float) * g.OW);
        }
      });
    }
  });
}

// weight (OC, Cg, KH, KW), grad_y (N, OC, OH, OW) -> grad_x (N, C, H, W)
void conv2d_backward_input(const Conv2dGeom& g, const float* w, const float* gy, float* gx) {
  if (g.N <= 0) return;
  const int64_t G = g.groups, Cg = g.C / G, OCg = g.OC / G, KK = g.KH * g.KW, K = Cg * KK;
  const int64_t OHW = g.OH * g.OW, HW = g.H * g.W;
  if (g.stride_h == 1 && g.stride_w == 1) {
    // grad_x is a stride-1 correlation of grad_y, zero-padded into (OCg, Hq, Wq), with the
    // flipped, transposed kernel: gx[ic][ih][iw] = sum_{oc,kh,kw} w[oc][ic][kh][kw] *
    // gyp[oc][ih + (KH-1-kh)*dh][iw + (KW-1-kw)*dw], where gyp[r][c] = gy[r - T][c - L].
    const int64_t Hq = g.H + (g.KH - 1) * g.dil_h, Wq = g.W + (g.KW - 1) * g.dil_w;
    const int64_t T = (g.KH - 1) * g.dil_h - g.pad_top, L = (g.KW - 1) * g.dil_w - g.pad_left;
    const int64_t R = OCg * KK;  // reduction length
    const int64_t P = g.H * Wq, ldc = round_up(P, kPB);
    const int64_t plane = Hq * Wq, bsize = OCg * plane + Wq + kPB + W;
    AlignedBuffer A(static_cast<size_t>(g.C * R));
    for (int64_t gi = 0; gi < G; ++gi) {
      const float* wg = w + gi * OCg * K;
      pack_panels(Cg, R, A.data() + gi * Cg * R, [&](int64_t ic, int64_t r) {
        const int64_t oc = r / KK, kk = r % KK;
        return wg[(oc * Cg + ic) * KK + kk];
      });
    }
    OffsetTable off(R);
    for (int64_t oc = 0, r = 0; oc < OCg; ++oc)
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw, ++r)
          off.p[r] = oc * plane + (g.KH - 1 - kh) * g.dil_h * Wq + (g.KW - 1 - kw) * g.dil_w;
    const int64_t nblocks = (Cg + kMR - 1) / kMR;
    parallel_for(g.N * G, 1, [&](int64_t u0, int64_t u1) {
      AlignedBuffer B(static_cast<size_t>(bsize));
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t n = u / G, gi = u % G;
        const float* gys = gy + (n * g.OC + gi * OCg) * OHW;
        parallel_for(OCg, 4, [&](int64_t c0, int64_t c1) {
          for (int64_t oc = c0; oc < c1; ++oc) {
            float* d = B.data() + oc * plane;
            for (int64_t r = 0; r < Hq; ++r) {
              float* row = d + r * Wq;
              const int64_t oh = r - T;
              if (oh < 0 || oh >= g.OH) {
                std::memset(row, 0, sizeof(float) * Wq);
                continue;
              }
              const float* s = gys + oc * OHW + oh * g.OW;
              for (int64_t c = 0; c < Wq; ++c) {
                const int64_t ow = c - L;
                row[c] = (ow >= 0 && ow < g.OW) ? s[ow] : 0.0f;
              }
            }
          }
        });
        std::memset(B.data() + OCg * plane, 0, sizeof(float) * (bsize - OCg * plane));
        float* gxs = gx + (n * g.C + gi * Cg) * HW;
        parallel_for(nblocks, 1, [&](int64_t b0, int64_t b1) {
          AlignedBuffer Cs(static_cast<size_t>(kMR * ldc));
          for (int64_t blk = b0; blk < b1; ++blk) {
            const int64_t m0 = blk * kMR, mr = Cg - m0 < kMR ? Cg - m0 : kMR;
            rows_block(static_cast<int>(mr), R, A.data() + (gi * Cg + m0) * R, B.data(), off.p, P,
                       nullptr, Cs.data(), ldc);
            for (int64_t m = 0; m < mr; ++m)
              for (int64_t ih = 0; ih < g.H; ++ih)
                std::memcpy(gxs + (m0 + m) * HW + ih * g.W, Cs.data() + m * ldc + ih * Wq,
                            sizeof(float) * g.W);
          }
        });
      }
    });
    return;
  }
  // Strided: gcol (K, OH*OW) = W^T grad_y per image, then col2im, one input channel per task.
  const int64_t P = OHW, ld = round_up(P, kPB);
  AlignedBuffer A(static_cast<size_t>(G * K * OCg));
  for (int64_t gi = 0; gi < G; ++gi) {
    const float* wg = w + gi * OCg * K;
    pack_panels(K, OCg, A.data() + gi * K * OCg, [&](int64_t k, int64_t oc) { return wg[oc * K + k]; });
  }
  OffsetTable off(OCg);
  for (int64_t oc = 0; oc < OCg; ++oc) off.p[oc] = oc * ld;
  const int64_t nblocks = (K + kMR - 1) / kMR;
  parallel_for(g.N * G, 1, [&](int64_t u0, int64_t u1) {
    AlignedBuffer B(static_cast<size_t>(OCg * ld)), gcol(static_cast<size_t>(K * ld));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t n = u / G, gi = u % G;
      const float* gys = gy + (n * g.OC + gi * OCg) * OHW;
      for (int64_t oc = 0; oc < OCg; ++oc) {
        std::memcpy(B.data() + oc * ld, gys + oc * OHW, sizeof(float) * P);
        std::memset(B.data() + oc * ld + P, 0, sizeof(float) * (ld - P));
      }
      parallel_for(nblocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t m0 = blk * kMR, mr = K - m0 < kMR ? K - m0 : kMR;
          rows_block(static_cast<int>(mr), OCg, A.data() + gi * K * OCg + m0 * OCg, B.data(), off.p, P,
                     nullptr, gcol.data() + m0 * ld, ld);
        }
      });
      float* gxs = gx + (n * g.C + gi * Cg) * HW;
      parallel_for(Cg, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t ic = c0; ic < c1; ++ic) {
          float* d = gxs + ic * HW;
          std::memset(d, 0, sizeof(float) * HW);
          for (int64_t kh = 0; kh < g.KH; ++kh)
            for (int64_t kw = 0; kw < g.KW; ++kw) {
              const float* s = gcol.data() + ((ic * g.KH + kh) * g.KW + kw) * ld;
              for (int64_t oh = 0; oh < g.OH; ++oh) {
                const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dil_h;
                if (ih < 0 || ih >= g.H) continue;
                for (int64_t ow = 0; ow < g.OW; ++ow) {
                  const int64_t iw = ow * g.stride_w - g.pad_left + kw * g.dil_w;
                  if (iw >= 0 && iw < g.W) d[ih * g.W + iw] += s[oh * g.OW + ow];
                }
              }
            }
        }
      });
    }
  });
}

// x (N, C, H, W), grad_y (N, OC, OH, OW) -> grad_weight (OC, Cg, KH, KW), grad_bias (OC,)
void conv2d_backward_weight(const Conv2dGeom& g, const float* x, const float* gy, float* gw, float* gb) {
  const int64_t G = g.groups, Cg = g.C / G, OCg = g.OC / G, K = Cg * g.KH * g.KW;
  const int64_t OHW = g.OH * g.OW;
  if (g.N <= 0) {
    if (gw) std::memset(gw, 0, sizeof(float) * g.OC * K);
    if (gb) std::memset(gb, 0, sizeof(float) * g.OC);
    return;
  }
  const Plan pl = make_plan(g);
  // G rows: grad_y in B's flat column layout (zeros in the dropped columns and past P).
  const int64_t ldg = pl.direct ? round_up(pl.P, W) : pl.ld;
  OffsetTable off(K);
  fill_offsets(g, pl, off.p);
  // Fixed chunks of images; chunk c sums its images in order into part[c], chunks are added in order.
  const int64_t nchunks = g.N < kMaxWeightChunks ? g.N : kMaxWeightChunks;
  const int64_t per_chunk = (g.N + nchunks - 1) / nchunks;
  const int64_t nch = (g.N + per_chunk - 1) / per_chunk;
  AlignedBuffer part_w(gw && nch > 1 ? static_cast<size_t>(nch * g.OC * K) : 0);
  AlignedBuffer part_b(static_cast<size_t>(nch * g.OC));
  const int64_t mblocks = (OCg + kDM - 1) / kDM, kblocks = (K + kDK - 1) / kDK;
  parallel_for(nch, 1, [&](int64_t c0, int64_t c1) {
    AlignedBuffer B(gw ? static_cast<size_t>(pl.bsize) : 0);
    AlignedBuffer Gb(static_cast<size_t>(OCg * ldg));
    for (int64_t ch = c0; ch < c1; ++ch) {
      float* dw = gw ? (nch > 1 ? part_w.data() + ch * g.OC * K : gw) : nullptr;
      float* db = part_b.data() + ch * g.OC;
      const int64_t n_end = (ch + 1) * per_chunk < g.N ? (ch + 1) * per_chunk : g.N;
      for (int64_t n = ch * per_chunk; n < n_end; ++n) {
        const bool first = n == ch * per_chunk;
        for (int64_t gi = 0; gi < G; ++gi) {
          const float* gys = gy + (n * g.OC + gi * OCg) * OHW;
          float* Gd = Gb.data();
          parallel_for(OCg, 4, [&](int64_t o0, int64_t o1) {
            for (int64_t oc = o0; oc < o1; ++oc) {
              float* row = Gd + oc * ldg;
              if (pl.direct) {
                for (int64_t oh = 0; oh < g.OH; ++oh) {
                  std::memcpy(row + oh * pl.Wp, gys + oc * OHW + oh * g.OW, sizeof(float) * g.OW);
                  std::memset(row + oh * pl.Wp + g.OW, 0, sizeof(float) * (pl.Wp - g.OW));
                }
              } else {
                std::memcpy(row, gys + oc * OHW, sizeof(float) * OHW);
              }
              std::memset(row + pl.P, 0, sizeof(float) * (ldg - pl.P));
              // bias gradient: this image's channel sum, added to the chunk's running sum
              vf s = vzero();
              for (int64_t p = 0; p < ldg; p += W) s = vadd(s, vload(row + p));
              const float t = vreduce_add(s);
              db[gi * OCg + oc] = first ? t : db[gi * OCg + oc] + t;
            }
          });
          if (!gw) continue;
          fill_input(g, pl, x + (n * g.C + gi * Cg) * g.H * g.W, B.data());
          parallel_for(mblocks * kblocks, 4, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
              const int64_t mb = t / kblocks, kb = t % kblocks;
              const int64_t m0 = mb * kDM, k0 = kb * kDK;
              const int dm = static_cast<int>(OCg - m0 < kDM ? OCg - m0 : kDM);
              const int dk = static_cast<int>(K - k0 < kDK ? K - k0 : kDK);
              const float* g_rows[kDM];
              float* d_rows[kDM];
              int64_t offs[kDK], cols[kDK];
              for (int i = 0; i < kDM; ++i) {
                const int64_t m = m0 + (i < dm ? i : dm - 1);  // spare lanes repeat the last row
                g_rows[i] = Gd + m * ldg;
                d_rows[i] = dw + (gi * OCg + m) * K;
              }
              for (int j = 0; j < kDK; ++j) {
                const int64_t k = k0 + (j < dk ? j : dk - 1);
                offs[j] = off.p[k];
                cols[j] = k;
              }
              dot_kernel(g_rows, B.data(), offs, ldg, d_rows, cols, dm, dk, !first);
            }
          });
        }
      }
    }
  });
  if (gw && nch > 1) {
    const int64_t total = g.OC * K;
    parallel_for(total, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        float s = part_w.data()[i];
        for (int64_t c = 1; c < nch; ++c) s += part_w.data()[c * total + i];
        gw[i] = s;
      }
    });
  }
  if (gb) {
    for (int64_t oc = 0; oc < g.OC; ++oc) {
      float s = part_b.data()[oc];
      for (int64_t c = 1; c < nch; ++c) s += part_b.data()[c * g.OC + oc];
      gb[oc] = s;
    }
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
