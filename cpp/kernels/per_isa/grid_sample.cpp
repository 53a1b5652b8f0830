// F.grid_sample of float32 (N, C, H, W) inputs by (N, Ho, Wo, 2) grids, modes bilinear and nearest, padding
// zeros / border / reflection (python/forgegrad/ops/grid_sample.py; the reference formulas, torch's vectorized
// CPU kernel's, are python/forgegrad/ops/_grid_sample_math.py, which these follow operation for operation:
// -ffp-contract=off keeps every multiply and add apart, as numpy's; the two that torch's compiler fuses, and
// whose rounding the grid gradient amplifies by size / 2, are explicit std::fma here, as there).
//
// Per grid point a Point (corner offsets, in-bounds bits, weights, d source / d grid) is made, kBlock points at
// a time into a per-thread table, and used for every channel:
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

struct Point {
  int64_t off[4];
  float wt[4];     // nw, ne, sw, se (nearest: wt unused)
  float n, s, w, e;
  float mx, my;
  unsigned mask;   // bit k: corner k inside
};

// The Points of grid entries [q0, q0 + len) (flat over N * P) into pts.
void make_points(const float* grid, int64_t q0, int64_t len, int64_t H, int64_t W, bool nearest, int pad, bool ac,
                 bool grad, Point* pts) {
  const Axis ax = make_axis(W, ac, pad), ay = make_axis(H, ac, pad);
  for (int64_t i = 0; i < len; ++i) {
    const int64_t q = q0 + i;
    Point& pt = pts[i];
    float mx, my;
    const float x = source(grid[2 * q], ax, grad, &mx);
    const float y = source(grid[2 * q + 1], ay, grad, &my);
    pt.mx = mx;
    pt.my = my;
    pt.mask = 0;
    if (nearest) {
      const float xr = std::nearbyint(x), yr = std::nearbyint(y);
      pt.off[0] = 0;
      if (inside(xr, W) && inside(yr, H)) {
        pt.mask = 1;
        pt.off[0] = static_cast<int64_t>(yr) * W + static_cast<int64_t>(xr);
      }
      continue;
    }
    const float x0 = std::floor(x), y0 = std::floor(y);
    const float wx = x - x0, ex = 1.0f - wx;
    const float ny = y - y0, sy = 1.0f - ny;
    pt.n = ny;
    pt.s = sy;
    pt.w = wx;
    pt.e = ex;
    pt.wt[0] = sy * ex;
    pt.wt[1] = sy * wx;
    pt.wt[2] = ny * ex;
    pt.wt[3] = ny * wx;
    const float xs[2] = {x0, x0 + 1.0f}, ys[2] = {y0, y0 + 1.0f};
    for (int k = 0; k < 4; ++k) {
      const float cx = xs[k & 1], cy = ys[k >> 1];
      pt.off[k] = 0;
      if (inside(cx, W) && inside(cy, H)) {
        pt.mask |= 1u << k;
        pt.off[k] = static_cast<int64_t>(cy) * W + static_cast<int64_t>(cx);
      }
    }
  }
}

float at(const float* plane, const Point& pt, int k) { return (pt.mask >> k) & 1u ? plane[pt.off[k]] : 0.0f; }

// Points are made kBlock at a time (a per-thread table that stays in L1/L2) and used for every channel.
constexpr int64_t kBlock = 256;
// Channels per input-gradient task: each task owns these planes of one batch entry (so its sums have one order)
// and remakes the points of its batch entry once.
constexpr int64_t kPlanes = 8;

}  // namespace

void grid_sample2d_forward(const float* x, const float* grid, int64_t N, int64_t C, int64_t H, int64_t W, int64_t P,
                           int mode, int pad, bool ac, float* y) {
  const bool nearest = mode == 1;
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  parallel_for_work(N * blocks, kBlock * (24 + C * (nearest ? 1 : 8)), [&](int64_t b, int64_t e) {
    std::vector<Point> pts(kBlock);
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / blocks, p0 = (t % blocks) * kBlock;
      const int64_t len = P - p0 < kBlock ? P - p0 : kBlock;
      make_points(grid, n * P + p0, len, H, W, nearest, pad, ac, false, pts.data());
      for (int64_t c = 0; c < C; ++c) {
        const float* xp = x + (n * C + c) * H * W;
        float* yp = y + (n * C + c) * P + p0;
        if (nearest) {
          for (int64_t i = 0; i < len; ++i) yp[i] = at(xp, pts[i], 0);
          continue;
        }
        for (int64_t i = 0; i < len; ++i) {
          const Point& pt = pts[i];
          yp[i] = at(xp, pt, 0) * pt.wt[0] + at(xp, pt, 1) * pt.wt[1] + at(xp, pt, 2) * pt.wt[2] +
                  at(xp, pt, 3) * pt.wt[3];
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
      std::vector<Point> pts(kBlock);
      for (int64_t t = b; t < e; ++t) {
        const int64_t n = t / groups, c0 = (t % groups) * kPlanes;
        const int64_t c1 = C - c0 < kPlanes ? C : c0 + kPlanes;
        std::memset(gx + (n * C + c0) * H * W, 0, static_cast<size_t>((c1 - c0) * H * W) * sizeof(float));
        for (int64_t p0 = 0; p0 < P; p0 += kBlock) {
          const int64_t len = P - p0 < kBlock ? P - p0 : kBlock;
          make_points(grid, n * P + p0, len, H, W, nearest, pad, ac, true, pts.data());
          for (int64_t c = c0; c < c1; ++c) {
            float* gp = gx + (n * C + c) * H * W;
            const float* go = g + (n * C + c) * P + p0;
            for (int64_t i = 0; i < len; ++i) {
              const Point& pt = pts[i];
              if (nearest) {
                if (pt.mask) gp[pt.off[0]] = gp[pt.off[0]] + go[i];
                continue;
              }
              for (int k = 0; k < 4; ++k)
                if ((pt.mask >> k) & 1u) gp[pt.off[k]] = gp[pt.off[k]] + pt.wt[k] * go[i];
            }
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
    std::vector<Point> pts(kBlock);
    std::vector<float> ax(kBlock), ay(kBlock);
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / blocks, p0 = (t % blocks) * kBlock;
      const int64_t len = P - p0 < kBlock ? P - p0 : kBlock;
      make_points(grid, n * P + p0, len, H, W, false, pad, ac, true, pts.data());
      std::fill(ax.begin(), ax.begin() + len, 0.0f);
      std::fill(ay.begin(), ay.begin() + len, 0.0f);
      for (int64_t c = 0; c < C; ++c) {
        const float* xp = x + (n * C + c) * H * W;
        const float* go = g + (n * C + c) * P + p0;
        for (int64_t i = 0; i < len; ++i) {
          const Point& pt = pts[i];
          const float nw = at(xp, pt, 0), ne = at(xp, pt, 1), sw = at(xp, pt, 2), se = at(xp, pt, 3);
          ax[i] = ax[i] + ((ne - nw) * pt.s + (se - sw) * pt.n) * go[i];
          ay[i] = ay[i] + ((sw - nw) * pt.e + (se - ne) * pt.w) * go[i];
        }
      }
      float* gg = ggrid + (n * P + p0) * 2;
      for (int64_t i = 0; i < len; ++i) {
        gg[2 * i] = ax[i] * pts[i].mx;
        gg[2 * i + 1] = ay[i] * pts[i].my;
      }
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
