// Winograd F(2x2, 3x3) convolution of one (image, group) unit, compiled per ISA (see conv_tile.h).
//   V[xi][c][t] = (B^T d B)[xi] for the 4x4 input tile d of tile t, channel c;
//   U[xi][m][c] = (G g G^T)[xi] for kernel g of (m, c);
//   M[xi][m][t] = sum_c U[xi][m][c] V[xi][c][t]  (16 GEMMs, the tile kernel);
//   y tile = A^T M A + bias.
// with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
// A^T = [1 1 1 0; 0 1 -1 -1] (Lavin & Gray). The input gradient is the same correlation of the
// padded grad_y with flipped, transposed kernels. The weight gradient is
// dL/dg = G^T (sum_t V[.][c][t] * Z[.][m][t]) G with Z = A gY A^T per 2x2 grad_y tile: 16 GEMMs
// that sum over tiles (sgemm). Tiles are vectorised W at a time along a tile row (AVX-512, rows of
// up to 7 tiles: two tile rows per vector, picked by two-source permutes); the stride-2 tile columns
// are gathered with an even/odd deinterleave. Every output element has one fixed sequence of
// operations whichever thread computes it.
#include <cstring>

#include "act_vec.h"
#include "conv_tile.h"
#include "conv_winograd_internal.h"
#include "forgegrad/gemm.h"
#include "forgegrad/parallel.h"
#include "forgegrad/transpose_f32.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// Stores a0, b0, a1, b1, ... (2W values), only the first n (n <= 2W).
inline void store_interleaved(float* p, vf a, vf b, int64_t n) {
#if defined(__AVX512F__)
  const __m512 lo =
      _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), b);
  const __m512 hi =
      _mm512_permutex2var_ps(a, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), b);
#elif defined(__AVX2__)
  const __m256 t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);
  const __m256 lo = _mm256_permute2f128_ps(t0, t1, 0x20), hi = _mm256_permute2f128_ps(t0, t1, 0x31);
#else
  const float lo = a, hi = b;
#endif
  if (n >= 2 * W) {
    vstore(p, lo);
    vstore(p + W, hi);
  } else if (n > W) {
    vstore(p, lo);
    vstore_n(p + W, hi, static_cast<int>(n - W));
  } else {
    vstore_n(p, lo, static_cast<int>(n));
  }
}

#if defined(__AVX512F__)
// The inverse: the 2 tw columns of one output row from the tiles of tile row `row` (0 or 1) in lanes of a
// (even columns) and b (odd columns).
inline __m512i pair_outputs(int64_t tw, int row) {
  alignas(64) int32_t ix[W];
  for (int l = 0; l < W; ++l) ix[l] = static_cast<int32_t>((l & 1 ? W : 0) + (row ? tw : 0) + l / 2) & (2 * W - 1);
  return _mm512_load_si512(ix);
}

// input_transform for narrow images (2 tw + 2 <= W: outputs up to 14 wide, LeNet's 14x14): two tile rows per
// vector. A tile row's 4 u rows (B^T d, the first stage) are one vector each, held in registers; one
// two-source permute per (u row, column offset) picks the columns of both tile rows' tiles, so the second
// stage and its 16 stores cover 2 tw tiles instead of tw (7 of 16 lanes). The same operations on the same
// values as input_transform: the same bits.
void input_transform_pairs(const Winograd3x3& p, const float* Bc, float* V, int64_t c, int64_t i_img) {
  const int64_t tw = p.tw, ntiles = p.th * tw, plane = v_plane(p);
  const __m512i i0 = pair_columns(tw, 0), i1 = pair_columns(tw, 1), i2 = pair_columns(tw, 2), i3 = pair_columns(tw, 3);
  const auto first_stage = [&](int64_t th, vf* u) {
    const float* r0 = Bc + 2 * th * p.Wb;
    const vf x0 = vload(r0), x1 = vload(r0 + p.Wb), x2 = vload(r0 + 2 * p.Wb), x3 = vload(r0 + 3 * p.Wb);
    u[0] = vsub(x0, x2);
    u[1] = vadd(x1, x2);
    u[2] = vsub(x2, x1);
    u[3] = vsub(x1, x3);
  };
  float* base = V + c * p.ldT + i_img * ntiles;
  for (int64_t th = 0; th < p.th; th += 2) {
    vf ua[4], ub[4] = {vzero(), vzero(), vzero(), vzero()};
    first_stage(th, ua);
    if (th + 1 < p.th) first_stage(th + 1, ub);
    const int64_t t0 = th * tw;
    // whole vectors while the spare lanes land on this plane's later tiles (stored after), as input_transform
    const int n = static_cast<int>(t0 + W <= ntiles ? W : ntiles - t0);
    for (int i = 0; i < 4; ++i) {
      const vf e0 = _mm512_permutex2var_ps(ua[i], i0, ub[i]), o1 = _mm512_permutex2var_ps(ua[i], i1, ub[i]);
      const vf e2 = _mm512_permutex2var_ps(ua[i], i2, ub[i]), o3 = _mm512_permutex2var_ps(ua[i], i3, ub[i]);
      const vf v[4] = {vsub(e0, e2), vadd(o1, e2), vsub(e2, o1), vsub(o1, o3)};
      for (int j = 0; j < 4; ++j) vstore_upto(base + t0 + (i * 4 + j) * plane, v[j], n);
    }
  }
}
#endif

// Input transform of channel c: V[xi][c][t] for all tiles (u: 4 rows of scratch, ucols floats each).
// Tiles of image i start at column i * th * tw of V.
void input_transform(const Winograd3x3& p, const float* Bc, float* V, int64_t c, int64_t i_img, float* u,
                     int64_t ucols) {
#if defined(__AVX512F__)
  if (2 * p.tw + 2 <= W) {
    input_transform_pairs(p, Bc, V, c, i_img);
    return;
  }
#endif
  const int64_t ncols = 2 * p.tw + 2;  // columns read per tile row (may pass Wb by one: dropped outputs)
  const int64_t plane = v_plane(p);
  for (int64_t th = 0; th < p.th; ++th) {
    const float* r0 = Bc + 2 * th * p.Wb;
    const float* r1 = r0 + p.Wb;
    const float* r2 = r1 + p.Wb;
    const float* r3 = r2 + p.Wb;
    for (int64_t c0 = 0; c0 < ncols; c0 += W) {
      const vf x0 = vload(r0 + c0), x1 = vload(r1 + c0), x2 = vload(r2 + c0), x3 = vload(r3 + c0);
      vstore(u + c0, vsub(x0, x2));
      vstore(u + ucols + c0, vadd(x1, x2));
      vstore(u + 2 * ucols + c0, vsub(x2, x1));
      vstore(u + 3 * ucols + c0, vsub(x1, x3));
    }
    for (int64_t t0 = 0; t0 < p.tw; t0 += W) {
      // A partial last vector of a tile row is stored whole when its extra lanes land on later tile
      // rows of this (image, channel), which this loop writes afterwards (masked stores are slow on
      // Zen, and a 14x14 image has 7 tiles a row, less than W).
      const bool spill_ok = th * p.tw + t0 + W <= p.th * p.tw;
      const int64_t cnt = spill_ok || p.tw - t0 >= W ? W : p.tw - t0;
      float* dst = V + c * p.ldT + (i_img * p.th + th) * p.tw + t0;
      for (int i = 0; i < 4; ++i) {
        vf e0, o1, e2, o3;
        deinterleave(u + i * ucols + 2 * t0, e0, o1);
        deinterleave(u + i * ucols + 2 * t0 + 2, e2, o3);
        const vf v[4] = {vsub(e0, e2), vadd(o1, e2), vsub(e2, o1), vsub(o1, o3)};
        for (int j = 0; j < 4; ++j) {
          float* d = dst + (i * 4 + j) * plane;
          vstore_upto(d, v[j], static_cast<int>(cnt));
        }
      }
    }
  }
}

// The 2x2 outputs of W tiles from their 16 products at src (planes `plane` apart), bias added and act applied:
// y[0] top-left, y[1] top-right, y[2] bottom-left, y[3] bottom-right (A^T M A, rows then columns).
template <class Act>
inline void tile_outputs(const float* src, int64_t plane, vf vb, Act act, vf y[4]) {
  vf s0[4], s1[4];
  for (int j = 0; j < 4; ++j) {
    const vf m0 = vload(src + j * plane), m1 = vload(src + (4 + j) * plane);
    const vf m2 = vload(src + (8 + j) * plane), m3 = vload(src + (12 + j) * plane);
    s0[j] = vadd(vadd(m0, m1), m2);
    s1[j] = vsub(vsub(m1, m2), m3);
  }
  y[0] = act(vadd(vadd(vadd(s0[0], s0[1]), s0[2]), vb));
  y[1] = act(vadd(vsub(vsub(s0[1], s0[2]), s0[3]), vb));
  y[2] = act(vadd(vadd(vadd(s1[0], s1[1]), s1[2]), vb));
  y[3] = act(vadd(vsub(vsub(s1[1], s1[2]), s1[3]), vb));
}

#if defined(__AVX512F__)
// output_transform for narrow images (2 tw <= W): two tile rows per vector (see input_transform_pairs), the
// four output rows they make picked out of the tile outputs by two-source permutes. Rows are stored in order,
// whole where the spare lanes land on later rows of this plane. Same values and operations: the same bits.
template <class Act>
void output_transform_pairs(const Winograd3x3& p, const float* Mb, float bias, float* out, int64_t m, int64_t i_img,
                            Act act) {
  const int64_t tw = p.tw, plane = m_plane(p), plane_end = p.OHo * p.OWo;
  const __m512i top = pair_outputs(tw, 0), bottom = pair_outputs(tw, 1);
  const vf vb = vset1(bias);
  const auto store = [&](int64_t r, vf v) {
    if (r >= p.OHo) return;
    float* d = out + r * p.OWo;
    if (r * p.OWo + W <= plane_end)
      vstore(d, v);
    else
      vstore_n(d, v, static_cast<int>(p.OWo));
  };
  for (int64_t th = 0; th < p.th; th += 2) {
    vf y[4];
    tile_outputs(Mb + m * p.ldT + (i_img * p.th + th) * tw, plane, vb, act, y);
    store(2 * th, _mm512_permutex2var_ps(y[0], top, y[1]));
    store(2 * th + 1, _mm512_permutex2var_ps(y[2], top, y[3]));
    if (th + 1 < p.th) {
      store(2 * th + 2, _mm512_permutex2var_ps(y[0], bottom, y[1]));
      store(2 * th + 3, _mm512_permutex2var_ps(y[2], bottom, y[3]));
    }
  }
}
#endif

// Output transform of channel m: y tiles from M[xi][m][t].
// act(v) is applied to each vector as it is stored (the activation's bits: act_vec.h).
template <class Act>
void output_transform(const Winograd3x3& p, const float* Mb, float bias, float* out, int64_t m, int64_t i_img,
                      Act act) {
#if defined(__AVX512F__)
  if (2 * p.tw <= W) {
    output_transform_pairs(p, Mb, bias, out, m, i_img, act);
    return;
  }
#endif
  const int64_t plane = m_plane(p);
  const vf vb = vset1(bias);
  for (int64_t th = 0; th < p.th; ++th) {
    for (int64_t t0 = 0; t0 < p.tw; t0 += W) {
      const float* src = Mb + m * p.ldT + (i_img * p.th + th) * p.tw + t0;
      vf y[4];
      tile_outputs(src, plane, vb, act, y);
      const int64_t n = p.OWo - 2 * t0 < 2 * W ? p.OWo - 2 * t0 : 2 * W;  // valid output columns
      float* y0 = out + 2 * th * p.OWo + 2 * t0;
      // As in input_transform, a short last block is stored whole when its extra lanes fall on later
      // rows of this output plane, written after it: always for the second row of the pair (the next
      // pairs follow); for the first only if the block is the row's first (row 2 th + 1 of the pair is
      // written block by block right after the first row's block).
      const int64_t end0 = 2 * th * p.OWo + 2 * t0 + 2 * W, plane_end = p.OHo * p.OWo;
      store_interleaved(y0, y[0], y[1], t0 == 0 && end0 <= plane_end ? 2 * W : n);
      if (2 * th + 1 < p.OHo) store_interleaved(y0 + p.OWo, y[2], y[3], end0 + p.OWo <= plane_end ? 2 * W : n);
    }
  }
}

// best after candidate v under the max pool's rule: v where v > best or v is NaN (pool_max2x2.cpp).
inline vf take_over(vf v, vf best) {
#if defined(__AVX512F__)
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), best,
                              v);
#elif defined(__AVX2__)
  return _mm256_blendv_ps(best, v, _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
#else
  return v > best || v != v ? v : best;
#endif
}

// output_transform followed by the 2x2 / stride 2 max pool (floor), taken in registers: output tile
// (th, t) is exactly the window of pooled pixel (th, t), so the full-size plane is never stored.
// max_pool2x2_plane's order (top-left, then top-right; bottom-left, then bottom-right; then the
// bottom winner against the top one) on the same values: the same bits. out: (OHo / 2, OWo / 2).
template <class Act>
void output_transform_pool(const Winograd3x3& p, const float* Mb, float bias, float* out, int64_t m, int64_t i_img,
                           Act act) {
  const int64_t plane = m_plane(p), POH = p.OHo / 2, POW = p.OWo / 2;
  const vf vb = vset1(bias);
  for (int64_t th = 0; th < POH; ++th) {
    for (int64_t t0 = 0; t0 < POW; t0 += W) {
      const float* src = Mb + m * p.ldT + (i_img * p.th + th) * p.tw + t0;
      vf t[4];
      tile_outputs(src, plane, vb, act, t);
      const vf y = take_over(take_over(t[3], t[2]), take_over(t[1], t[0]));
      const int64_t n = POW - t0 < W ? POW - t0 : W;
      if (n == W)
        vstore(out + th * POW + t0, y);
      else
        vstore_n(out + th * POW + t0, y, static_cast<int>(n));
    }
  }
}

int64_t ucols_of(const Winograd3x3& p) { return round_up(2 * p.tw + 2, W) + 2 * W + 2; }

}  // namespace

// V from the padded input B (images b_step apart): every (image, channel) plane, in parallel.
void input_transforms(const Winograd3x3& p, const float* B, int64_t b_step, float* V) {
  const int64_t ucols = ucols_of(p);
  parallel_for(p.nimg * p.Cin, 1, [&](int64_t c0, int64_t c1) {
    AlignedBuffer u(static_cast<size_t>(4 * ucols));
    for (int64_t ic = c0; ic < c1; ++ic) {
      const int64_t i = ic / p.Cin, c = ic % p.Cin;
      input_transform(p, B + i * b_step + c * p.Hb * p.Wb, V, c, i, u.data(), ucols);
    }
  });
}

Winograd3x3 winograd_plan(int64_t Cin, int64_t M, int64_t Hb, int64_t Wb, int64_t OHo, int64_t OWo, int64_t nimg) {
  Winograd3x3 p{};
  p.Cin = Cin, p.M = M, p.Hb = Hb, p.Wb = Wb, p.OHo = OHo, p.OWo = OWo, p.nimg = nimg;
  p.th = (OHo + 1) / 2;
  p.tw = (OWo + 1) / 2;
  p.T = nimg * p.th * p.tw;
  p.ldT = round_up(p.T, W);
  if (p.ldT % 128 == 0) p.ldT += W;  // rows a multiple of 512 bytes apart would share L1 sets
  return p;
}

namespace {
// u = G g G^T for one 3x3 kernel g (row-major), on floats or on vectors of 8 kernels: the same
// operations in the same order either way, so both give the same bits.
template <class T>
inline void kernel_transform(const T* g, T* u, T half) {
  T t[4][3];  // unrolled, so that t stays in registers (as a stack array the vector form stalled)
#pragma GCC unroll 3
  for (int j = 0; j < 3; ++j) {
    t[0][j] = g[j];
    t[1][j] = half * (g[j] + g[3 + j] + g[6 + j]);
    t[2][j] = half * (g[j] - g[3 + j] + g[6 + j]);
    t[3][j] = g[6 + j];
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    u[i * 4 + 0] = t[i][0];
    u[i * 4 + 1] = half * (t[i][0] + t[i][1] + t[i][2]);
    u[i * 4 + 2] = half * (t[i][0] - t[i][1] + t[i][2]);
    u[i * 4 + 3] = t[i][2];
  }
}
}  // namespace

void winograd_weights(const Winograd3x3& p, const float* kernels, float* U) {
  // Each transformed value goes to its place in the kConvMR-row panels of its plane (the layout of
  // pack_panels: rows [m0, m0 + mr) at m0 * Cin, element (m, c) at c * mr + m - m0).
  const int64_t MC = p.M * p.Cin;
#if defined(__AVX2__)
  if (p.Cin * 9 * 8 < (int64_t{1} << 31)) {
    // A vector holds one input channel's kernels for the mr output channels of a panel, which are
    // mr adjacent floats of each plane.
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i idx = _mm256_mullo_epi32(lane, _mm256_set1_epi32(static_cast<int32_t>(p.Cin * 9)));
    const __m256 half = _mm256_set1_ps(0.5f);
    AlignedBuffer vbuf(static_cast<size_t>(p.Cin * 16 * 8));
    for (int64_t m0 = 0; m0 < p.M; m0 += kConvMR) {
      const int64_t mr = min64(p.M - m0, kConvMR);
      const __m256i in = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(mr)), lane);
      // The panel's transformed kernels go to vbuf (channel c's 16 vectors at 16 * 8 * c) and then
      // plane by plane to U: stored channel by channel, the 16 stores M * Cin floats apart hit one
      // L1 set when M * Cin is a multiple of 1024 (LeNet's 64 x 32).
      const auto store = [&](int64_t c, const __m256* uv) {
        for (int xi = 0; xi < 16; ++xi) _mm256_store_ps(vbuf.data() + (c * 16 + xi) * 8, uv[xi]);
      };
      int64_t c = 0;
      // 8 input channels at a time: each kernel row's 72 floats loaded whole and transposed in 8 x 8
      // blocks (gathers cost ~20 cycles each here)
      for (; c + 8 <= p.Cin; c += 8) {
        const float* rows[8];
        for (int mm = 0; mm < 8; ++mm) rows[mm] = kernels + ((m0 + (mm < mr ? mm : 0)) * p.Cin + c) * 9;
        __m256 col[72], uv[16];
        for (int blk = 0; blk < 9; ++blk) {
          __m256 r[8];
          for (int mm = 0; mm < 8; ++mm) r[mm] = _mm256_loadu_ps(rows[mm] + 8 * blk);
          tile_f32::transpose8(r, col + 8 * blk);
        }
        for (int cl = 0; cl < 8; ++cl) {
          kernel_transform(col + 9 * cl, uv, half);
          store(c + cl, uv);
        }
      }
      for (; c < p.Cin; ++c) {
        const float* g = kernels + (m0 * p.Cin + c) * 9;
        __m256 gv[9], uv[16];
        for (int j = 0; j < 9; ++j)
          gv[j] = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), g + j, idx, _mm256_castsi256_ps(in), 4);
        kernel_transform(gv, uv, half);
        store(c, uv);
      }
      // lanes past mr land on the next channels' values, stored right after; where they would leave
      // the panel the store is masked
      for (int xi = 0; xi < 16; ++xi) {
        float* dst = U + xi * MC + m0 * p.Cin;
        for (int64_t c2 = 0; c2 < p.Cin; ++c2) {
          const __m256 v = _mm256_load_ps(vbuf.data() + (c2 * 16 + xi) * 8);
          if ((c2 * mr + 8) <= mr * p.Cin)
            _mm256_storeu_ps(dst + c2 * mr, v);
          else
            _mm256_maskstore_ps(dst + c2 * mr, in, v);
        }
      }
    }
    return;
  }
#endif
  for (int64_t m = 0; m < p.M; ++m) {
    const int64_t m0 = m - m % kConvMR, mr = min64(p.M - m0, kConvMR);
    for (int64_t c = 0; c < p.Cin; ++c) {
      float u[16];
      kernel_transform(kernels + (m * p.Cin + c) * 9, u, 0.5f);
      for (int xi = 0; xi < 16; ++xi) U[xi * MC + m0 * p.Cin + c * mr + (m - m0)] = u[xi];
    }
  }
}

// The last `nt` tiles from t0 (fewer than kConvMR: a vector of tiles would be mostly empty lanes) of
// product xi: Mxi[m][t] = sum_c Uxi[m][c] Vxi[c][t] with the output channels along the lanes (a
// kConvMR-row panel of U is one vector per c), kChains panels at a time for independent chains (a
// missing panel of the last group reads zero lanes and stores nothing). Each sum is the tile
// kernel's: fmas in c order from +0, so the same bits.
static void winograd_tail_tiles(const Winograd3x3& p, const float* Uxi, const float* Vxi, int64_t t0, int64_t nt,
                                float* Mxi) {
  constexpr int kChains = 4;
  const int64_t panels = (p.M + kConvMR - 1) / kConvMR;
  for (int64_t t = t0; t < t0 + nt; ++t) {
    for (int64_t q0 = 0; q0 < panels; q0 += kChains) {
      int rows[kChains];
      const float* a[kChains];
      vf acc[kChains];
#pragma GCC unroll 8
      for (int j = 0; j < kChains; ++j) {
        const int64_t m0 = (q0 + j) * kConvMR;
        rows[j] = q0 + j < panels ? static_cast<int>(p.M - m0 < kConvMR ? p.M - m0 : kConvMR) : 0;
        a[j] = rows[j] ? Uxi + m0 * p.Cin : Uxi;
        acc[j] = vzero();
      }
      for (int64_t c = 0; c < p.Cin; ++c) {
        const vf v = vset1(Vxi[c * p.ldT + t]);
#pragma GCC unroll 8
        for (int j = 0; j < kChains; ++j) acc[j] = vfmadd(vload_n(a[j] + c * rows[j], rows[j]), v, acc[j]);
      }
#pragma GCC unroll 8
      for (int j = 0; j < kChains; ++j) {
        alignas(64) float lanes[W];
        vstore(lanes, acc[j]);
        for (int m = 0; m < rows[j]; ++m) Mxi[((q0 + j) * kConvMR + m) * p.ldT + t] = lanes[m];
      }
    }
  }
}

int64_t winograd_scratch_floats(const Winograd3x3& p) { return 16 * (v_plane(p) + m_plane(p)) + 2 * W; }

void winograd_unit(const Winograd3x3& p, const float* B, int64_t b_step, const float* U, const float* bias, float* out,
                   int64_t out_step, float* scratch, int act, float alpha, bool pool2x2) {
  const int64_t T = p.nimg * p.th * p.tw;
  float* V = scratch;                   // 16 planes (Cin, ldT), v_plane apart
  float* Mb = scratch + 16 * v_plane(p);  // 16 planes (M, ldT), m_plane apart (+ 2W floats of slack)
  input_transforms(p, B, b_step, V);
  I64Buf off(p.Cin);
  for (int64_t c = 0; c < p.Cin; ++c) off.p[c] = c * p.ldT;
  // A last vector of few tiles costs the tile kernel a full vector per row of U: those tiles may go by rows
  // instead (winograd_tail_tiles). Measured there, a tile costs ~7 cycles per (4 panels, input channel): its
  // masked loads are slow on Zen. The extra vector costs 6 fmas per (panel, input channel): 3 cycles on
  // Zen 5's two fma pipes, 6 on Zen 4's one. So with AVX-512 only 1 or 2 tiles go by rows (2: level on
  // Zen 5, cheaper on Zen 4); more tiles (LeNet's 64x32x14x14 -> 64: units of 245 tiles, 5 left over, ~10%
  // of the forward on Zen 5) go through the tile kernel. The AVX2 build keeps its threshold (kConvMR).
#if defined(__AVX512F__)
  constexpr int64_t kMaxTailTiles = 2;
#else
  constexpr int64_t kMaxTailTiles = kConvMR - 1;
#endif
  const int64_t rest = T % W, dense = rest > 0 && rest <= kMaxTailTiles ? T - rest : T;
  VecList vl((T + W - 1) / W);
  build_dense(vl, dense);
  vl.whole_end = p.ldT;  // a short last vector is stored whole: its spare lanes land in M's row padding
  const int64_t mblocks = (p.M + kConvMR - 1) / kConvMR;
  parallel_for(16 * mblocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t xi = task / mblocks, m0 = (task % mblocks) * kConvMR;
      const int64_t mr = p.M - m0 < kConvMR ? p.M - m0 : kConvMR;
      run_rows(mr, p.Cin, U + xi * p.M * p.Cin + m0 * p.Cin, V + xi * v_plane(p), off.p, vl, nullptr,
               Mb + xi * m_plane(p) + m0 * p.ldT, p.ldT);
    }
  });
  if (dense < T)
    parallel_for(16, 1, [&](int64_t x0, int64_t x1) {
      for (int64_t xi = x0; xi < x1; ++xi)
        winograd_tail_tiles(p, U + xi * p.M * p.Cin, V + xi * v_plane(p), dense, T - dense, Mb + xi * m_plane(p));
    });
  const int64_t oplane = p.OHo * p.OWo, POH = p.OHo / 2, POW = p.OWo / 2;
  // the activation goes on each vector of output as the transform stores it (no pass over the plane),
  // and the pool on each 2x2 tile in registers
  const auto transform = [&](auto f) {
    parallel_for(p.nimg * p.M, 1, [&](int64_t m0, int64_t m1) {
      for (int64_t im = m0; im < m1; ++im) {
        const int64_t i = im / p.M, m = im % p.M;
        const float b = bias ? bias[m] : 0.0f;
        if (pool2x2)
          output_transform_pool(p, Mb, b, out + i * out_step + m * POH * POW, m, i, f);
        else
          output_transform(p, Mb, b, out + i * out_step + m * oplane, m, i, f);
      }
    });
  };
  if (act >= 0 && act < kActCount)
    with_act_forward(act, alpha, transform);
  else
    transform([](vf v) { return v; });
}

}  // namespace FG_ISA_NS
}  // namespace fg
