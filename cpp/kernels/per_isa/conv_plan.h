// The layout of one image in B shared by the 2-D conv passes (conv.cpp: forward, input gradient;
// conv_backward_weight.cpp: weight gradient) and the Winograd choice. Include only from
// cpp/kernels/per_isa/ sources (everything is in namespace fg::FG_ISA_NS).
#pragma once
#include <cstdint>
#include <cstring>

#include "conv_tile.h"
#include "forgegrad/conv.h"
#include "forgegrad/parallel.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// Chunks of images for the weight-gradient batch sum: a function of N only (never of the thread
// count), so the order of additions is fixed.
constexpr int64_t kMaxWeightChunks = 8;

// How one image of one group is laid out in B for the forward / weight-gradient passes.
struct Plan {
  bool direct;     // stride 1: zero-padded image; else im2col
  int64_t Hp, Wp;  // padded image (direct)
  int64_t ld;      // im2col row stride (multiple of W)
  int64_t bsize;   // floats in B
};

inline Plan make_plan(const Conv2dGeom& g) {
  Plan pl{};
  const int64_t Cg = g.C / g.groups, K = Cg * g.KH * g.KW;
  pl.direct = g.stride_h == 1 && g.stride_w == 1;
  pl.Hp = g.H + g.pad_top + g.pad_bottom;
  pl.Wp = g.W + g.pad_left + g.pad_right;
  if (pl.direct) {
    // Reads reach off_max + (OH-1)*Wp + round_up(OW or Wp, W) <= Cg*Hp*Wp + Wp + W, because
    // OH + (KH-1)*dh = Hp at stride 1.
    pl.bsize = Cg * pl.Hp * pl.Wp + pl.Wp + 2 * W;
  } else {
    pl.ld = round_up(g.OH * g.OW, W);
    if (pl.ld % 128 == 0) pl.ld += W;  // rows a multiple of 512 bytes apart would share L1 sets
    pl.bsize = K * pl.ld;
  }
  return pl;
}

inline void fill_offsets(const Conv2dGeom& g, const Plan& pl, int64_t* off) {
  const int64_t Cg = g.C / g.groups;
  int64_t k = 0;
  for (int64_t ic = 0; ic < Cg; ++ic)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw, ++k)
        off[k] = pl.direct ? ic * pl.Hp * pl.Wp + kh * g.dil_h * pl.Wp + kw * g.dil_w : k * pl.ld;
}

inline void build_plan_vectors(const Conv2dGeom& g, const Plan& pl, VecList& vl) {
  if (pl.direct)
    build_direct(vl, g.OH, g.OW, pl.Wp);
  else
    build_dense(vl, g.OH * g.OW);
}

// B for image channels xs (Cg, H, W): the zero-padded image or the im2col matrix.
inline void fill_input(const Conv2dGeom& g, const Plan& pl, const float* xs, float* B) {
  const int64_t Cg = g.C / g.groups, H = g.H, Wd = g.W;
  if (pl.direct) {
    const int64_t plane = pl.Hp * pl.Wp;
    parallel_for(Cg, 4, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        float* d = B + c * plane;
        const float* s = xs + c * H * Wd;
        std::memset(d, 0, sizeof(float) * g.pad_top * pl.Wp);
        pad_plane_rows(d + g.pad_top * pl.Wp, pl.Wp, s, Wd, H, g.pad_left, Wd);
        std::memset(d + (g.pad_top + H) * pl.Wp, 0, sizeof(float) * g.pad_bottom * pl.Wp);
      }
    });
    std::memset(B + Cg * plane, 0, sizeof(float) * (pl.bsize - Cg * plane));
    return;
  }
  const int64_t KK = g.KH * g.KW, P = g.OH * g.OW;
  parallel_for(Cg * KK, 8, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t c = k / KK, kh = (k / g.KW) % g.KH, kw = k % g.KW;
      float* row = B + k * pl.ld;
      im2col_plane(g, xs + c * H * Wd, kh, kw, row);
      std::memset(row + P, 0, sizeof(float) * (pl.ld - P));
    }
  });
}

// Winograd F(2x2, 3x3) pays off for 3x3, stride 1, undilated kernels once there are enough
// channels for its 16 GEMMs to dominate the tile transforms.
// The kernel shape and channel counts are the weight's own (conv2d_winograd_pack asks them alone).
inline bool winograd_kernels(int64_t KH, int64_t KW, int64_t Cg, int64_t OCg) {
  return KH == 3 && KW == 3 && Cg >= 16 && OCg >= 16;
}

inline bool use_winograd(const Conv2dGeom& g) {
  return winograd_kernels(g.KH, g.KW, g.C / g.groups, g.OC / g.groups) && g.stride_h == 1 && g.stride_w == 1 &&
         g.dil_h == 1 && g.dil_w == 1;
}

}  // namespace
}  // namespace FG_ISA_NS
}  // namespace fg
