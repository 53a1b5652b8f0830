// Shared pieces of the convolution kernels (cpp/kernels/per_isa/conv*.cpp), compiled per ISA:
// the register-blocked tile micro-kernel (C[m][vec] = sum_k A[m][k] * B[off[k] + pos[vec]]), the
// vector lists that cut an output plane into W-lane vectors, the panel packing of A, and the entry
// points that the conv*.cpp files share.
// Include only from cpp/kernels/per_isa/ sources (everything is in namespace fg::FG_ISA_NS).
#pragma once
#include <cstdint>
#include <cstring>

#include "forgegrad/conv.h"
#include "forgegrad/memory.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

#if defined(__AVX512F__)
constexpr int kConvMR = 6, kConvNR = 4;  // tile kernel: 6 rows x 4 vectors = 24 accumulators (of 32)
#elif defined(__AVX2__)
constexpr int kConvMR = 6, kConvNR = 2;  // 12 accumulators + 2 loads + 1 broadcast of 16 registers
#else
constexpr int kConvMR = 4, kConvNR = 4;
#endif

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// int64 scratch without std containers (see simd.h on templates in per_isa/ files).
struct I64Buf {
  explicit I64Buf(int64_t n)
      : p(static_cast<int64_t*>(aligned_malloc(sizeof(int64_t) * static_cast<size_t>(n > 0 ? n : 1)))) {}
  ~I64Buf() { aligned_free(p); }
  I64Buf(const I64Buf&) = delete;
  I64Buf& operator=(const I64Buf&) = delete;
  int64_t* p;
};

// The vectors that cover one output plane.
//   pos[v]: offset of the vector's first lane in B's flat column space (added to off[k])
//   dst[v]: offset of its first lane in the output plane (or in a scratch plane, when flat)
//   valid[v]: lanes that are real outputs (the rest are computed and dropped)
// Modes: "rows" (vectors never cross an output row: written straight into the output), "flat"
// (vectors run along the padded rows: fewer vectors for narrow images, written to a scratch plane
// of row length Wb and copied out) and "dense" (im2col columns: written straight into the output).
struct VecList {
  int64_t n = 0;
  bool flat = false;
  int64_t scratch_ld = 0;  // flat mode: scratch row stride (multiple of W)
  // rows mode: a row's short last vector is stored whole where its extra lanes stay inside the plane
  // (dst + W <= whole_end). They land on the next row's first outputs, which the next vectors write
  // afterwards (every caller stores a plane's vectors in order, one thread per plane), so only the
  // plane's last row needs a masked store: those are slow on Zen (~1 per 6-12 cycles against 1 a
  // cycle) and a 28-wide row has one short vector in four.
  int64_t whole_end = 0;
  I64Buf pos, dst, valid;
  explicit VecList(int64_t cap) : pos(cap), dst(cap), valid(cap) {}
};

inline int64_t rows_mode_count(int64_t OHo, int64_t OWo) { return OHo * ((OWo + W - 1) / W); }
inline int64_t flat_mode_count(int64_t OHo, int64_t Wb) { return (OHo * Wb + W - 1) / W; }

// Vectors for an (OHo, OWo) output whose pixel (r, c) reads B at flat column r * Wb + c.
inline void build_direct(VecList& vl, int64_t OHo, int64_t OWo, int64_t Wb) {
  // Flat vectors need a scratch plane and a copy: worth it only for clearly fewer vectors.
  if (5 * flat_mode_count(OHo, Wb) < 4 * rows_mode_count(OHo, OWo)) {
    vl.flat = true;
    vl.scratch_ld = round_up(OHo * Wb, W);
    for (int64_t q = 0; q < OHo * Wb; q += W, ++vl.n) {
      vl.pos.p[vl.n] = q;
      vl.dst.p[vl.n] = q;
      vl.valid.p[vl.n] = W;
    }
    return;
  }
  vl.whole_end = OHo * OWo;
  for (int64_t r = 0; r < OHo; ++r)
    for (int64_t c = 0; c < OWo; c += W, ++vl.n) {
      vl.pos.p[vl.n] = r * Wb + c;
      vl.dst.p[vl.n] = r * OWo + c;
      vl.valid.p[vl.n] = min64(W, OWo - c);
    }
}

// Vectors for P contiguous columns (im2col), output plane contiguous too.
inline void build_dense(VecList& vl, int64_t P) {
  for (int64_t q = 0; q < P; q += W, ++vl.n) {
    vl.pos.p[vl.n] = q;
    vl.dst.p[vl.n] = q;
    vl.valid.p[vl.n] = min64(W, P - q);
  }
}

inline int64_t veclist_capacity(int64_t OHo, int64_t OWo, int64_t Wb) {
  int64_t a = rows_mode_count(OHo, OWo), b = flat_mode_count(OHo, Wb), c = (OHo * OWo + W - 1) / W;
  return a > b ? (a > c ? a : c) : (b > c ? b : c);
}

// C[m * ldc + dst[j] + lane] = init[m] + sum_k A[k*MR + m] * B[off[k] + pos[j] + lane] for m < MR,
// j < NV; only valid[j] lanes are stored, or all W where dst[j] + W <= whole_end (see VecList).
// B must be readable W floats past every pos. kRelu: max(0, C) is stored instead (the ReLU of
// act_vec.h, same bits), the commonest activation applied in registers rather than by a second pass.
template <int MR, int NV, bool kRelu = false>
void tile_kernel(int64_t K, const float* A, const float* B, const int64_t* off, const int64_t* pos, const int64_t* dst,
                 const int64_t* valid, int64_t whole_end, const float* init, float* C, int64_t ldc) {
  vf acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
    vf v = vset1(init ? init[m] : 0.0f);
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[m][j] = v;
  }
  const float* bp[NV];
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) bp[j] = B + pos[j];
  const float* a = A;
  for (int64_t k = 0; k < K; ++k, a += MR) {
    const int64_t o = off[k];
    vf bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = vload(bp[j] + o);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      vf av = vset1(a[m]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[m][j] = vfmadd(av, bv[j], acc[m][j]);
    }
  }
  if (kRelu) {
    const vf zero = vzero();
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[m][j] = vmax(zero, acc[m][j]);
  }
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) {
    if (valid[j] == W || dst[j] + W <= whole_end) {
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) vstore(C + m * ldc + dst[j], acc[m][j]);
    } else {
      const int nv = static_cast<int>(valid[j]);
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) vstore_n(C + m * ldc + dst[j], acc[m][j], nv);
    }
  }
}

using TileFn = void (*)(int64_t, const float*, const float*, const int64_t*, const int64_t*, const int64_t*,
                        const int64_t*, int64_t, const float*, float*, int64_t);

template <int MR, bool kRelu>
TileFn pick_nv(int nv) {
  switch (nv) {
    case 1: return &tile_kernel<MR, 1, kRelu>;
    case 2: return &tile_kernel<MR, 2, kRelu>;
#if defined(__AVX512F__) || !defined(__AVX2__)
    case 3: return &tile_kernel<MR, 3, kRelu>;
    case 4: return &tile_kernel<MR, 4, kRelu>;
#endif
    default: return nullptr;
  }
}

template <bool kRelu>
TileFn pick_tile(int mr, int nv) {
  switch (mr) {
    case 1: return pick_nv<1, kRelu>(nv);
    case 2: return pick_nv<2, kRelu>(nv);
    case 3: return pick_nv<3, kRelu>(nv);
    case 4: return pick_nv<4, kRelu>(nv);
#if defined(__AVX512F__) || defined(__AVX2__)
    case 5: return pick_nv<5, kRelu>(nv);
    case 6: return pick_nv<6, kRelu>(nv);
#endif
    default: return nullptr;
  }
}

// Output rows [m0, m0 + mr) of one plane set: C points at row m0, rows ldc apart; relu: store
// max(0, C) (tile_kernel's kRelu).
// Vectors [v_begin, v_end) only, when given (v_end < 0: all).
inline void run_rows(int64_t mr, int64_t K, const float* A, const float* B, const int64_t* off, const VecList& vl,
                     const float* init, float* C, int64_t ldc, bool relu = false, int64_t v_begin = 0,
                     int64_t v_end = -1) {
  const int64_t ve = v_end < 0 ? vl.n : v_end;
  for (int64_t v0 = v_begin; v0 < ve; v0 += kConvNR) {
    const int nv = static_cast<int>(min64(kConvNR, ve - v0));
    (relu ? pick_tile<true> : pick_tile<false>)(static_cast<int>(mr), nv)(K, A, B, off, vl.pos.p + v0, vl.dst.p + v0,
                                                                          vl.valid.p + v0, vl.whole_end, init, C, ldc);
  }
}

#if defined(__AVX512F__)
// pad_plane_rows for rows of one vector (ld <= W).
inline void pad_rows_one_vector(float* dst, int64_t ld, const float* src, int64_t sld, int64_t nrows, int64_t left,
                                int64_t n) {
  const int64_t lo = left > 0 ? left : 0, hi = left + n < W ? left + n : W;
  const uint32_t m = hi > lo ? ((1u << hi) - 1u) & ~((1u << lo) - 1u) : 0u;
  for (int64_t r = 0; r < nrows; ++r, dst += ld, src += sld) {
    // masked-off lanes are not read: their addresses may lie outside src
    const vf v = _mm512_maskz_loadu_ps(static_cast<__mmask16>(m), src - left);
    // a whole vector only where its spare lanes stay inside these rows (rows written after it): past them lies
    // the next plane, which another thread may already have filled
    if ((nrows - r) * ld >= W)
      vstore(dst, v);
    else
      vstore_n(dst, v, static_cast<int>(ld));
  }
}
#endif

// nrows rows of ld floats at dst: row r holds src[r * sld + c - left] at columns c with 0 <= c - left < n, zeros
// elsewhere (left may be negative: the row's start is cropped). The padded image planes of the direct and
// Winograd passes. Rows of one vector (AVX-512, ld <= 16: LeNet's 14x14 planes padded to 16), where three
// libc calls a row (memset, memcpy, memset) cost more than the copy: one masked load and one store a row,
// stored whole (the spare lanes land on the next rows, written after it) except where a vector would pass the
// last row (masked).
// Wider rows keep the libc calls: the vector form measured ~10% slower on the whole 32x64x32x32 -> 64
// forward (rows of 34 floats: stores split across cache lines and overlapping the next row's).
inline void pad_plane_rows(float* dst, int64_t ld, const float* src, int64_t sld, int64_t nrows, int64_t left,
                           int64_t n) {
#if defined(__AVX512F__)
  if (ld <= W) {
    pad_rows_one_vector(dst, ld, src, sld, nrows, left, n);
    return;
  }
#endif
  const int64_t lo = min64(left > 0 ? left : 0, ld), hi = min64(left + n, ld) > lo ? min64(left + n, ld) : lo;
  for (int64_t r = 0; r < nrows; ++r, dst += ld, src += sld) {
    std::memset(dst, 0, sizeof(float) * lo);
    std::memcpy(dst + lo, src + (lo - left), sizeof(float) * (hi - lo));
    std::memset(dst + hi, 0, sizeof(float) * (ld - hi));
  }
}

// The whole plane of tap (kh, kw): dst[p] for every output pixel p of image channel s. Plain loops
// (no memset calls: rows are often 8-16 floats) that the compiler vectorises.
inline void im2col_plane(const Conv2dGeom& g, const float* s, int64_t kh, int64_t kw, float* dst) {
  const int64_t shift = kw * g.dil_w - g.pad_left, sw = g.stride_w, OW = g.OW;
  int64_t ow_lo = shift >= 0 ? 0 : (-shift + sw - 1) / sw;
  int64_t ow_hi = g.W - 1 - shift < 0 ? 0 : (g.W - 1 - shift) / sw + 1;
  if (ow_hi > OW) ow_hi = OW;
  if (ow_lo > ow_hi) ow_lo = ow_hi;
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    float* d = dst + oh * OW;
    const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dil_h;
    if (ih < 0 || ih >= g.H) {
      for (int64_t ow = 0; ow < OW; ++ow) d[ow] = 0.0f;
      continue;
    }
    const float* r = s + ih * g.W + shift;  // r[ow * sw] is pixel (oh, ow)'s input
    for (int64_t ow = 0; ow < ow_lo; ++ow) d[ow] = 0.0f;
    if (sw == 1) {
      for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = r[ow];
    } else if (sw == 2) {
      for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = r[2 * ow];
    } else {
      for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = r[ow * sw];
    }
    for (int64_t ow = ow_hi; ow < OW; ++ow) d[ow] = 0.0f;
  }
}

// Packs an M x R matrix given elementwise by get(m, r) into kConvMR-row panels: the panel of rows
// [m0, m0 + mr) starts at out + m0 * R and holds get(m0 + i, r) at [r * mr + i].
template <class Get>
void pack_panels(int64_t M, int64_t R, float* out, Get get) {
  for (int64_t m0 = 0; m0 < M; m0 += kConvMR) {
    const int64_t mr = min64(M - m0, kConvMR);
    float* dst = out + m0 * R;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = 0; i < mr; ++i) dst[r * mr + i] = get(m0 + i, r);
  }
}

}  // namespace

// grad_weight (OC, C / groups, KH, KW) of any geometry: im2col of the whole batch, blocked, through
// sgemm (conv_wgrad.cpp). grad_weight is overwritten; N >= 1.
void conv_weight_grad_gemm(const Conv2dGeom& g, const float* x, const float* gy, float* gw);
// Whether conv2d_forward_ocv (conv_direct_ocv.cpp) runs its own tile on this geometry: AVX-512, output
// channels per group a multiple of 16, column stride 1 or 2 (else it runs conv2d_forward_implicit).
bool conv2d_forward_ocv_supported(const Conv2dGeom& g);
// grad_weight of 4-wide kernels (KH even, column stride <= 2, undilated columns, output channels per group a
// multiple of 16; AVX-512) by the direct tile of conv_wgrad_ocv.cpp: padding taps skipped, the same bits at
// any thread count. Elsewhere conv_weight_grad_ocv runs conv_weight_grad_gemm.
bool conv_weight_grad_ocv_supported(const Conv2dGeom& g);
void conv_weight_grad_ocv(const Conv2dGeom& g, const float* x, const float* gy, float* gw);
// grad_bias (OC,) of grad_y: per channel, fixed chunks of per_chunk images summed in image order,
// chunk sums added in chunk order (conv_wgrad.cpp).
void conv_bias_grad(const Conv2dGeom& g, const float* gy, int64_t per_chunk, float* gb);

// Winograd F(2x2, 3x3) for one (image, group) unit: out (M, OHo, OWo) = valid 3x3 correlation of
// the buffer B (Cin, Hb, Wb) with kernels (M, Cin, 3, 3), plus bias. 2x2 output tiles cost 16
// products per (m, c) instead of 36: the 16 transformed products are 16 GEMMs (M x Cin) x (Cin x
// tiles) run by the tile kernel. Defined in conv_winograd.cpp.
// B must stay readable (any finite or not values) Wb + 2W floats past the last plane: odd OHo / OWo
// read one row / column past the valid range, which only feeds dropped outputs.
// A unit may hold several images (nimg): their tiles sit side by side in the GEMMs, so small
// images still make long GEMM rows. Columns are independent: results do not depend on nimg.
struct Winograd3x3 {
  int64_t Cin, M, Hb, Wb, OHo, OWo, nimg;
  int64_t th, tw, T, ldT;  // tile rows, tile columns, tiles of all images, transformed row stride
};
Winograd3x3 winograd_plan(int64_t Cin, int64_t M, int64_t Hb, int64_t Wb, int64_t OHo, int64_t OWo, int64_t nimg);
// U: the transformed kernels, 16 * M * Cin floats (per product index, kConvMR-row panels).
void winograd_weights(const Winograd3x3& p, const float* kernels, float* U);
int64_t winograd_scratch_floats(const Winograd3x3& p);
// Image i of the unit reads B + i * b_step and writes out + i * out_step; p.nimg may be lowered
// (fewer images in the last unit) without changing the scratch size. act (-1: none) is applied to
// each output plane; with pool2x2, out holds the planes' 2x2 / stride 2 max pools (OHo/2, OWo/2)
// instead, each taken while its plane is in cache (max_pool2x2_plane: the pool op's bits).
void winograd_unit(const Winograd3x3& p, const float* B, int64_t b_step, const float* U, const float* bias, float* out,
                   int64_t out_step, float* scratch, int act = -1, float alpha = 0.0f, bool pool2x2 = false);

// Weight gradient by Winograd: S[xi][m][c] (+)= sum_t Z[xi][m][t] V[xi][c][t], with V the input
// transform of B (as winograd_unit) and Z = A gY A^T the transform of each 2x2 grad_y tile; image
// i of the unit reads B + i * b_step and grad_y planes (M, OHo, OWo) at gy + i * gy_step. S is
// (16, M, Cin); accumulate adds to it. winograd_weight_grad turns the summed S into (M, Cin, 3, 3).
int64_t winograd_wgrad_scratch_floats(const Winograd3x3& p);
void winograd_wgrad_unit(const Winograd3x3& p, const float* B, int64_t b_step, const float* gy, int64_t gy_step,
                         float* S, bool accumulate, float* scratch);
void winograd_weight_grad(int64_t M, int64_t Cin, const float* S, float* gw);

}  // namespace FG_ISA_NS
}  // namespace fg
