// Weight gradient of Winograd F(2x2, 3x3) convolution (see conv_winograd.cpp for the transforms):
// dL/dg = G^T (sum_t V[.][c][t] * Z[.][m][t]) G with Z = A gY A^T per 2x2 grad_y tile, compiled per ISA.
#include <cstring>

#include "conv_tile.h"
#include "conv_winograd_internal.h"
#include "forgegrad/gemm.h"
#include "forgegrad/parallel.h"

namespace fg {
namespace FG_ISA_NS {

#if defined(__AVX512F__)
namespace {
// The Z transform of one grad_y plane (OHo, OWo) of a narrow image (2 tw <= W) into z (tiles of the plane
// from z, planes m_plane apart): two tile rows per vector, grad_y rows loaded whole (zeros past OWo, and for
// rows past OHo, as the padded copy of the general path holds) and their even / odd columns of both tile
// rows picked by two-source permutes. Same values and operations as the general path: the same bits.
void z_transform_pairs(const Winograd3x3& p, const float* src, float* z) {
  const int64_t tw = p.tw, ntiles = p.th * tw, zplane = m_plane(p);
  const __m512i even = pair_columns(tw, 0), odd = pair_columns(tw, 1);
  const auto row = [&](int64_t r) { return r < p.OHo ? vload_n(src + r * p.OWo, static_cast<int>(p.OWo)) : vzero(); };
  for (int64_t th = 0; th < p.th; th += 2) {
    const bool two = th + 1 < p.th;
    const vf g0 = row(2 * th), g1 = row(2 * th + 1), g2 = two ? row(2 * th + 2) : vzero(),
             g3 = two ? row(2 * th + 3) : vzero();
    const vf a = _mm512_permutex2var_ps(g0, even, g2), b = _mm512_permutex2var_ps(g0, odd, g2);
    const vf c = _mm512_permutex2var_ps(g1, even, g3), e = _mm512_permutex2var_ps(g1, odd, g3);
    const int64_t t0 = th * tw;
    const int n = static_cast<int>(t0 + W <= ntiles ? W : ntiles - t0);
    const vf rx[4] = {a, vadd(a, c), vsub(a, c), vneg(c)};
    const vf ry[4] = {b, vadd(b, e), vsub(b, e), vneg(e)};
    for (int r = 0; r < 4; ++r) {
      const vf zv[4] = {rx[r], vadd(rx[r], ry[r]), vsub(rx[r], ry[r]), vneg(ry[r])};
      for (int j = 0; j < 4; ++j) vstore_upto(z + t0 + (r * 4 + j) * zplane, zv[j], n);
    }
  }
}
}  // namespace
#endif

int64_t winograd_wgrad_scratch_floats(const Winograd3x3& p) { return winograd_scratch_floats(p); }

void winograd_wgrad_unit(const Winograd3x3& p, const float* B, int64_t b_step, const float* gy, int64_t gy_step,
                         float* S, bool accumulate, float* scratch) {
  const int64_t T = p.nimg * p.th * p.tw;
  float* V = scratch;                  // 16 planes (Cin, ldT), v_plane apart
  float* Z = scratch + 16 * v_plane(p);  // 16 planes (M, ldT), m_plane apart
  input_transforms(p, B, b_step, V);
  // Z: each grad_y plane is copied into a zero-padded (2 th, 2 tw + 2W) buffer first, so that
  // tiles past an odd edge see zeros.
  const int64_t zw = 2 * p.tw + 2 * W, oplane = p.OHo * p.OWo;
  parallel_for(p.nimg * p.M, 1, [&](int64_t m0, int64_t m1) {
    AlignedBuffer pad(static_cast<size_t>(2 * p.th * zw));
    for (int64_t im = m0; im < m1; ++im) {
      const int64_t i = im / p.M, m = im % p.M;
      const float* src = gy + i * gy_step + m * oplane;
#if defined(__AVX512F__)
      if (2 * p.tw <= W) {
        z_transform_pairs(p, src, Z + m * p.ldT + i * p.th * p.tw);
        continue;
      }
#endif
      float* d = pad.data();
      std::memset(d, 0, sizeof(float) * 2 * p.th * zw);
      for (int64_t r = 0; r < p.OHo; ++r) std::memcpy(d + r * zw, src + r * p.OWo, sizeof(float) * p.OWo);
      const int64_t zplane = m_plane(p);
      for (int64_t th = 0; th < p.th; ++th)
        for (int64_t t0 = 0; t0 < p.tw; t0 += W) {
          // whole vectors where the extra lanes fall on later tile rows of this plane (as V's)
          const bool spill_ok = th * p.tw + t0 + W <= p.th * p.tw;
          const int64_t cnt = spill_ok || p.tw - t0 >= W ? W : p.tw - t0;
          vf a, b, c, e;
          deinterleave(d + 2 * th * zw + 2 * t0, a, b);
          deinterleave(d + (2 * th + 1) * zw + 2 * t0, c, e);
          // rows of A gY: [a, b], [a + c, b + e], [a - c, b - e], [-c, -e]; each row [x, y]
          // becomes [x, x + y, x - y, -y] through A^T.
          const vf rx[4] = {a, vadd(a, c), vsub(a, c), vneg(c)};
          const vf ry[4] = {b, vadd(b, e), vsub(b, e), vneg(e)};
          float* dst = Z + m * p.ldT + (i * p.th + th) * p.tw + t0;
          for (int r = 0; r < 4; ++r) {
            const vf z[4] = {rx[r], vadd(rx[r], ry[r]), vsub(rx[r], ry[r]), vneg(ry[r])};
            for (int j = 0; j < 4; ++j) {
              float* o = dst + (r * 4 + j) * zplane;
              vstore_upto(o, z[j], static_cast<int>(cnt));
            }
          }
        }
    }
  });
  // S[xi] (M x Cin) (+)= Z[xi] (M x T) V[xi]^T: 16 GEMMs whose reduction runs over every tile of the unit.
  FG_ISA_NS::sgemm_batched(false, true, 16, p.M, p.Cin, T, 1.0f, Z, p.ldT, m_plane(p), V, p.ldT, v_plane(p),
                           accumulate ? 1.0f : 0.0f, S, p.Cin, p.M * p.Cin);
}

void winograd_weight_grad(int64_t M, int64_t Cin, const float* S, float* gw) {
  const int64_t MC = M * Cin;
  for (int64_t mc = 0; mc < MC; ++mc) {
    float s[4][4], t[3][4];
    for (int xi = 0; xi < 16; ++xi) s[xi / 4][xi % 4] = S[xi * MC + mc];
    for (int j = 0; j < 4; ++j) {  // G^T s, G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1]
      t[0][j] = s[0][j] + 0.5f * (s[1][j] + s[2][j]);
      t[1][j] = 0.5f * (s[1][j] - s[2][j]);
      t[2][j] = 0.5f * (s[1][j] + s[2][j]) + s[3][j];
    }
    float* g = gw + mc * 9;
    for (int i = 0; i < 3; ++i) {  // (G^T s) G
      g[i * 3 + 0] = t[i][0] + 0.5f * (t[i][1] + t[i][2]);
      g[i * 3 + 1] = 0.5f * (t[i][1] - t[i][2]);
      g[i * 3 + 2] = 0.5f * (t[i][1] + t[i][2]) + t[i][3];
    }
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
