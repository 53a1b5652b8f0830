// F.grid_sample of float32 (N, C, H, W) inputs by (N, Ho, Wo, 2) grids, modes bilinear and nearest, padding
// zeros / border / reflection (python/forgegrad/ops/grid_sample.py; the reference formulas, torch's vectorized
// CPU kernel's, are python/forgegrad/ops/_grid_sample_math.py, which these follow operation for operation:
// -ffp-contract=off keeps every multiply and add apart, as numpy's; the two that torch's compiler fuses, and
// whose rounding the grid gradient amplifies by size / 2, are explicit std::fma here, as there).
//
// Per grid point its corner offsets, in-bounds flags, weights and d source / d grid are made, kBlock points at
// a time into a per-thread Block, and used for every channel:
//   forward:        tasks (n, block of points): out[n, :, block] = v_nw * nw + v_ne * ne + v_sw * sw + v_se * se,
//                   an outside corner's value 0 (so a NaN weight still gives NaN, as torch);
//   input gradient: tasks (n, group of kPlanes channels), each owning those planes: zeroed, then every point in
//                   increasing order scatters g * weight into them, corners nw, ne, sw, se: one order per plane;
//   grid gradient:  tasks (n, block of points); each point sums its channels in increasing c.
// So every result is bit-identical for any thread count.
//
// Only bind_grid_sample.cpp calls these kernels; their FG_KERNEL declarations live there.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "forgegrad/parallel.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

struct Axis {
  int64_t size;
  float sf;  // d source / d grid before padding
  bool ac;
  int pad;  // 0 zeros, 1 border, 2 reflection
};

Axis make_axis(int64_t size, bool ac, int pad) {
  Axis a;
  a.size = size;
  a.ac = ac;
  a.pad = pad;
  a.sf = ac ? static_cast<float>(size - 1) / 2.0f : static_cast<float>(size) / 2.0f;
  return a;
}

// The source coordinate and, when grad, d coordinate / d grid (torch's ComputeLocation<..>::apply[_get_grad]).
float source(float g, const Axis& a, bool grad, float* mult) {
  float x = a.ac ? (g + 1.0f) * a.sf : std::fma(g + 1.0f, a.sf, -0.5f);
  float m = a.sf;
  if (a.pad == 0) {
    *mult = m;
    return x;
  }
  if (a.pad == 2) {
    if (a.ac && a.size <= 1) {
      *mult = 0.0f;
      return 0.0f;
    }
    const float low = a.ac ? 0.0f : -0.5f;
    const float ts = a.ac ? static_cast<float>(2 * (a.size - 1)) : static_cast<float>(2 * a.size);
    const float shifted = x - low;
    const float ab = std::fabs(shifted);
    const float extra = std::fma(-std::trunc(ab / ts), ts, ab);
    const float refl = ts - extra;
    if (!grad) {
      x = (std::isnan(extra) ? extra : (refl < extra ? refl : extra)) + low;
    } else {
      const bool flip = extra > refl;
      x = (flip ? refl : extra) + low;
      m = m * ((flip != (shifted < 0.0f)) ? -1.0f : 1.0f);
    }
  }
  const float mx = static_cast<float>(a.size - 1);
  if (!grad) {  // clamp_min(0, x) takes NaN to 0
    const float r = x > 0.0f ? x : 0.0f;
    *mult = m;
    return r < mx ? r : mx;
  }
  const float lo = x > 0.0f ? x : (std::isnan(x) ? x : 0.0f);
  const float r = std::isnan(lo) ? lo : (mx < lo ? mx : lo);
  *mult = (lo != 0.0f && r != mx) ? m : 0.0f;
  return r;
}

bool inside(float i, int64_t n) { return i >= 0.0f && i < static_cast<float>(n); }

// Points are made kBlock at a time into a per-thread Block and used for every channel.
constexpr int64_t kBlock = 256;
// Channels per input-gradient task: each task owns these planes of one batch entry (so its sums have one order)
// and remakes the points of its batch entry once.
constexpr int64_t kPlanes = 8;

// A block of points, one array per field so that the channel loops vectorize (gathers and selects): corner k
// (nw, ne, sw, se; nearest: k = 0 only) of point i reads plane[off[k][i]], kept where in[k][i] (an outside corner
// reads element 0, which exists, and takes 0 instead). Offsets are int32 (the binding refuses planes of 2**31
// elements or more), which the gathers take.
struct Block {
  int32_t off[4][kBlock];
  int32_t in[4][kBlock];
  float wt[4][kBlock];
  float n[kBlock], s[kBlock], w[kBlock], e[kBlock];
  float mx[kBlock], my[kBlock];
};

// The points of grid entries [q0, q0 + len) (flat over N * P) into blk.
void make_points(const float* grid, int64_t q0, int64_t len, int64_t H, int64_t W, bool nearest, int pad, bool ac,
                 bool grad, Block& blk) {
  const Axis ax = make_axis(W, ac, pad), ay = make_axis(H, ac, pad);
  for (int64_t i = 0; i < len; ++i) {
    const int64_t q = q0 + i;
    float mx, my;
    const float x = source(grid[2 * q], ax, grad, &mx);
    const float y = source(grid[2 * q + 1], ay, grad, &my);
    blk.mx[i] = mx;
    blk.my[i] = my;
    if (nearest) {
      const float xr = std::nearbyint(x), yr = std::nearbyint(y);
      const bool ok = inside(xr, W) && inside(yr, H);
      blk.in[0][i] = ok;
      blk.off[0][i] = ok ? static_cast<int32_t>(static_cast<int64_t>(yr) * W + static_cast<int64_t>(xr)) : 0;
      continue;
    }
    const float x0 = std::floor(x), y0 = std::floor(y);
    const float wx = x - x0, ex = 1.0f - wx;
    const float ny = y - y0, sy = 1.0f - ny;
    blk.n[i] = ny;
    blk.s[i] = sy;
    blk.w[i] = wx;
    blk.e[i] = ex;
    blk.wt[0][i] = sy * ex;
    blk.wt[1][i] = sy * wx;
    blk.wt[2][i] = ny * ex;
    blk.wt[3][i] = ny * wx;
    const float xs[2] = {x0, x0 + 1.0f}, ys[2] = {y0, y0 + 1.0f};
    for (int k = 0; k < 4; ++k) {
      const float cx = xs[k & 1], cy = ys[k >> 1];
      const bool ok = inside(cx, W) && inside(cy, H);
      blk.in[k][i] = ok;
      blk.off[k][i] = ok ? static_cast<int32_t>(static_cast<int64_t>(cy) * W + static_cast<int64_t>(cx)) : 0;
    }
  }
}

// out[i] = the bilinear sum of point i on plane xp (restrict: no store reaches what the loop reads, so it
// vectorizes with gathers and selects).
void lerp_points(const float* __restrict xp, const Block& __restrict blk, int64_t len, float* __restrict yp) {
  const int32_t *o0 = blk.off[0], *o1 = blk.off[1], *o2 = blk.off[2], *o3 = blk.off[3];
  const int32_t *m0 = blk.in[0], *m1 = blk.in[1], *m2 = blk.in[2], *m3 = blk.in[3];
  const float *w0 = blk.wt[0], *w1 = blk.wt[1], *w2 = blk.wt[2], *w3 = blk.wt[3];
  for (int64_t i = 0; i < len; ++i) {
    float v0 = xp[o0[i]], v1 = xp[o1[i]], v2 = xp[o2[i]], v3 = xp[o3[i]];
    v0 = m0[i] ? v0 : 0.0f;
    v1 = m1[i] ? v1 : 0.0f;
    v2 = m2[i] ? v2 : 0.0f;
    v3 = m3[i] ? v3 : 0.0f;
    yp[i] = v0 * w0[i] + v1 * w1[i] + v2 * w2[i] + v3 * w3[i];
  }
}

void nearest_points(const float* __restrict xp, const Block& __restrict blk, int64_t len, float* __restrict yp) {
  const int32_t *o0 = blk.off[0], *m0 = blk.in[0];
  for (int64_t i = 0; i < len; ++i) {
    const float v = xp[o0[i]];
    yp[i] = m0[i] ? v : 0.0f;
  }
}

// ax[i] += d out / d x (before the coordinate's own factor) of point i on plane xp for output gradient go, ay[i]
// the same for y: torch's ((ne - nw) s + (se - sw) n) g and ((sw - nw) e + (se - ne) w) g.
void grid_grad_points(const float* __restrict xp, const float* __restrict go, const Block& __restrict blk, int64_t len,
                      float* __restrict ax, float* __restrict ay) {
  const int32_t *o0 = blk.off[0], *o1 = blk.off[1], *o2 = blk.off[2], *o3 = blk.off[3];
  const int32_t *m0 = blk.in[0], *m1 = blk.in[1], *m2 = blk.in[2], *m3 = blk.in[3];
  const float *bn = blk.n, *bs = blk.s, *bw = blk.w, *be = blk.e;
  for (int64_t i = 0; i < len; ++i) {
    float nw = xp[o0[i]], ne = xp[o1[i]], sw = xp[o2[i]], se = xp[o3[i]];
    nw = m0[i] ? nw : 0.0f;
    ne = m1[i] ? ne : 0.0f;
    sw = m2[i] ? sw : 0.0f;
    se = m3[i] ? se : 0.0f;
    ax[i] = ax[i] + ((ne - nw) * bs[i] + (se - sw) * bn[i]) * go[i];
    ay[i] = ay[i] + ((sw - nw) * be[i] + (se - ne) * bw[i]) * go[i];
  }
}

}  // namespace

void grid_sample2d_forward(const float* x, const float* grid, int64_t N, int64_t C, int64_t H, int64_t W, int64_t P,
                           int mode, int pad, bool ac, float* y) {
  const bool nearest = mode == 1;
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  parallel_for_work(N * blocks, kBlock * (24 + C * (nearest ? 1 : 8)), [&](int64_t b, int64_t e) {
    std::unique_ptr<Block> bp(new Block);
    Block& blk = *bp;
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / blocks, p0 = (t % blocks) * kBlock;
      const int64_t len = P - p0 < kBlock ? P - p0 : kBlock;
      make_points(grid, n * P + p0, len, H, W, nearest, pad, ac, false, blk);
      for (int64_t c = 0; c < C; ++c) {
        const float* xp = x + (n * C + c) * H * W;
        float* yp = y + (n * C + c) * P + p0;
        if (nearest) {
          nearest_points(xp, blk, len, yp);
        } else {
          lerp_points(xp, blk, len, yp);
        }
      }
    }
  });
}

void grid_sample2d_backward(const float* g, const float* x, const float* grid, int64_t N, int64_t C, int64_t H,
                            int64_t W, int64_t P, int mode, int pad, bool ac, float* gx, float* ggrid) {
  const bool nearest = mode == 1;
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  if (gx != nullptr) {
    const int64_t groups = (C + kPlanes - 1) / kPlanes;
    parallel_for_work(N * groups, P * 24 + kPlanes * (H * W + P * (nearest ? 1 : 8)), [&](int64_t b, int64_t e) {
      std::unique_ptr<Block> bp(new Block);
      Block& blk = *bp;
      for (int64_t t = b; t < e; ++t) {
        const int64_t n = t / groups, c0 = (t % groups) * kPlanes;
        const int64_t c1 = C - c0 < kPlanes ? C : c0 + kPlanes;
        std::memset(gx + (n * C + c0) * H * W, 0, static_cast<size_t>((c1 - c0) * H * W) * sizeof(float));
        for (int64_t p0 = 0; p0 < P; p0 += kBlock) {
          const int64_t len = P - p0 < kBlock ? P - p0 : kBlock;
          make_points(grid, n * P + p0, len, H, W, nearest, pad, ac, true, blk);
          for (int64_t c = c0; c < c1; ++c) {
            float* gp = gx + (n * C + c) * H * W;
            const float* go = g + (n * C + c) * P + p0;
            if (nearest) {
              for (int64_t i = 0; i < len; ++i)
                if (blk.in[0][i]) gp[blk.off[0][i]] = gp[blk.off[0][i]] + go[i];
              continue;
            }
            for (int64_t i = 0; i < len; ++i)
              for (int k = 0; k < 4; ++k)
                if (blk.in[k][i]) gp[blk.off[k][i]] = gp[blk.off[k][i]] + blk.wt[k][i] * go[i];
          }
        }
      }
    });
  }
  if (ggrid == nullptr) return;
  if (nearest) {
    std::memset(ggrid, 0, static_cast<size_t>(N * P * 2) * sizeof(float));
    return;
  }
  parallel_for_work(N * blocks, kBlock * (24 + C * 12), [&](int64_t b, int64_t e) {
    std::unique_ptr<Block> bp(new Block);
    Block& blk = *bp;
    std::vector<float> acc_x(kBlock), acc_y(kBlock);
    float* ax = acc_x.data();
    float* ay = acc_y.data();
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / blocks, p0 = (t % blocks) * kBlock;
      const int64_t len = P - p0 < kBlock ? P - p0 : kBlock;
      make_points(grid, n * P + p0, len, H, W, false, pad, ac, true, blk);
      std::fill(ax, ax + len, 0.0f);
      std::fill(ay, ay + len, 0.0f);
      for (int64_t c = 0; c < C; ++c)
        grid_grad_points(x + (n * C + c) * H * W, g + (n * C + c) * P + p0, blk, len, ax, ay);
      float* gg = ggrid + (n * P + p0) * 2;
      for (int64_t i = 0; i < len; ++i) {
        gg[2 * i] = ax[i] * blk.mx[i];
        gg[2 * i + 1] = ay[i] * blk.my[i];
      }
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
