// Adaptive average / max pooling of (H, W) planes to OH x OW outputs (> 1 of them; the global pool is
// reduce_rows.cpp's), compiled per ISA. Output row oh covers input rows [hb[2 oh], hb[2 oh + 1]) (torch's
// floor(oh * H / OH), ceil((oh + 1) * H / OH)), output column ow columns [wb[2 ow], wb[2 ow + 1]).
//
// Both run in two passes per output row: a pass down the window's rows, lane by lane over all W columns
// (plain loops the compiler vectorises: each lane does the scalar code's operations in the scalar code's
// order, so every ISA gives the same bits), then a short pass over each output's columns. A plane is done
// by one thread, so results do not depend on the thread count either.
//   average: col[w] = x[h0][w] + x[h0 + 1][w] + ... in float64, then s = col[w0] + col[w0 + 1] + ... in
//            float64, y = float(s / (kh * kw)) (kh * kw exact in float64).
//   max:     col[w] = the winner of column w under torch's rule (a value replaces the best so far when it is
//            greater or NaN: the first maximum, or the last NaN), then the columns' winners are combined
//            into the window's winner in row-major order: among NaNs the largest index h * W + w, else the
//            greatest value and among equal ones the smallest index -- the element torch's row-major scan
//            of the window keeps.
//   backward of the average: r[w] = sum over the windows ow containing w (in order) of g[oh][ow] / kh / kw
//            (torch's float divisions), then every input row h of the window adds r (rows taken first time
//            are set: 0 + r), so grad_x[h][w] sums its windows' shares in (oh, ow) order.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "forgegrad/pool.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// The column pass of the max: cv / ch hold each column's winner and its row (relative to h0).
template <class I>
void max_columns(const float* __restrict xs, int64_t W, int64_t h0, int64_t h1, float* __restrict cv,
                 I* __restrict ch) {
  const float* r0 = xs + h0 * W;
  for (int64_t w = 0; w < W; ++w) {
    cv[w] = r0[w];
    ch[w] = 0;
  }
  for (int64_t h = h0 + 1; h < h1; ++h) {
    const float* __restrict r = xs + h * W;
    const I hh = static_cast<I>(h - h0);
    for (int64_t w = 0; w < W; ++w) {
      const float v = r[w];
      const bool take = (v > cv[w]) | (v != v);
      cv[w] = take ? v : cv[w];
      ch[w] = take ? hh : ch[w];
    }
  }
}

// The combine step, branch-free (which column wins is data, close to a coin flip: a branch mispredicts
// often enough to cost most of the kernel's time): v at index i replaces best at bi where it is NaN and best
// is not or comes earlier, or neither is NaN and v is greater, or equal at an earlier index.
inline float take_if_wins(float v, int64_t i, float best, int64_t& bi) {
  const unsigned vn = v != v, bn = best != best;
  const unsigned later = static_cast<unsigned>(i > bi), earlier = static_cast<unsigned>(i < bi);
  const unsigned beats = static_cast<unsigned>(v > best) | (static_cast<unsigned>(v == best) & earlier);
  const unsigned take = (vn & ((bn ^ 1u) | later)) | (((vn | bn) ^ 1u) & beats);
  const int64_t m = -static_cast<int64_t>(take);  // all ones or zero
  bi = (i & m) | (bi & ~m);
  uint32_t vb, bb;
  std::memcpy(&vb, &v, sizeof vb);
  std::memcpy(&bb, &best, sizeof bb);
  bb = (vb & static_cast<uint32_t>(m)) | (bb & ~static_cast<uint32_t>(m));
  float r;
  std::memcpy(&r, &bb, sizeof r);
  return r;
}

template <class I>
void max_planes(const float* x, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW, const int64_t* hb,
                const int64_t* wb, float* y, int64_t* idx) {
  std::vector<float> cv(static_cast<size_t>(W));
  std::vector<I> ch(static_cast<size_t>(W));
  for (int64_t p = 0; p < P; ++p) {
    const float* xs = x + p * H * W;
    float* ys = y + p * OH * OW;
    int64_t* is = idx + p * OH * OW;
    for (int64_t oh = 0; oh < OH; ++oh) {
      const int64_t h0 = hb[2 * oh], h1 = hb[2 * oh + 1];
      max_columns<I>(xs, W, h0, h1, cv.data(), ch.data());
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t w0 = wb[2 * ow], w1 = wb[2 * ow + 1];
        float best = cv[w0];
        int64_t bi = (h0 + ch[w0]) * W + w0;
        for (int64_t w = w0 + 1; w < w1; ++w) {
          const float v = cv[w];
          const int64_t i = (h0 + ch[w]) * W + w;
          best = take_if_wins(v, i, best, bi);
        }
        ys[oh * OW + ow] = best;
        is[oh * OW + ow] = bi;
      }
    }
  }
}

}  // namespace

void adaptive_avg_pool2d_planes(const float* x, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                const int64_t* hb, const int64_t* wb, float* y) {
  std::vector<double> colv(static_cast<size_t>(W)), sums(static_cast<size_t>(OW)), widths(static_cast<size_t>(OW));
  double* __restrict col = colv.data();
  double* __restrict sum = sums.data();
  double* __restrict kw = widths.data();
  for (int64_t ow = 0; ow < OW; ++ow) kw[ow] = static_cast<double>(wb[2 * ow + 1] - wb[2 * ow]);
  for (int64_t p = 0; p < P; ++p) {
    const float* xs = x + p * H * W;
    float* ys = y + p * OH * OW;
    for (int64_t oh = 0; oh < OH; ++oh) {
      const int64_t h0 = hb[2 * oh], h1 = hb[2 * oh + 1];
      const float* __restrict r0 = xs + h0 * W;
      for (int64_t w = 0; w < W; ++w) col[w] = static_cast<double>(r0[w]);
      for (int64_t h = h0 + 1; h < h1; ++h) {
        const float* __restrict r = xs + h * W;
        for (int64_t w = 0; w < W; ++w) col[w] += static_cast<double>(r[w]);
      }
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t w0 = wb[2 * ow], w1 = wb[2 * ow + 1];
        double s = col[w0];
        for (int64_t w = w0 + 1; w < w1; ++w) s += col[w];
        sum[ow] = s + 0.0;  // an all -0 window sums to +0, as a sum that starts at 0
      }
      const double kh = static_cast<double>(h1 - h0);
      float* __restrict yr = ys + oh * OW;
      for (int64_t ow = 0; ow < OW; ++ow) yr[ow] = static_cast<float>(sum[ow] / (kh * kw[ow]));  // vector divides
    }
  }
}

void adaptive_avg_pool2d_backward_planes(const float* gy, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                         const int64_t* hb, const int64_t* wb, float* gx) {
  std::vector<float> rv(static_cast<size_t>(W));
  float* __restrict r = rv.data();
  for (int64_t p = 0; p < P; ++p) {
    const float* gs = gy + p * OH * OW;
    float* gp = gx + p * H * W;
    int64_t done = 0;  // rows [0, done) hold a sum already
    for (int64_t oh = 0; oh < OH; ++oh) {
      const int64_t h0 = hb[2 * oh], h1 = hb[2 * oh + 1];
      const float kh = static_cast<float>(h1 - h0);
      for (int64_t w = 0; w < W; ++w) r[w] = 0.0f;
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t w0 = wb[2 * ow], w1 = wb[2 * ow + 1];
        const float v = gs[oh * OW + ow] / kh / static_cast<float>(w1 - w0);
        for (int64_t w = w0; w < w1; ++w) r[w] += v;
      }
      for (int64_t h = h0; h < h1; ++h) {
        float* __restrict d = gp + h * W;
        if (h < done) {
          for (int64_t w = 0; w < W; ++w) d[w] += r[w];
        } else {
          for (int64_t w = 0; w < W; ++w) d[w] = r[w];
        }
      }
      if (h1 > done) done = h1;
    }
  }
}

void adaptive_max_pool2d_planes(const float* x, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                const int64_t* hb, const int64_t* wb, float* y, int64_t* idx) {
  // a column's winning row fits int32 unless a window is 2^31 rows high
  int64_t tallest = 0;
  for (int64_t oh = 0; oh < OH; ++oh) tallest = std::max(tallest, hb[2 * oh + 1] - hb[2 * oh]);
  if (tallest < (int64_t{1} << 31))
    max_planes<int32_t>(x, P, H, W, OH, OW, hb, wb, y, idx);
  else
    max_planes<int64_t>(x, P, H, W, OH, OW, hb, wb, y, idx);
}

}  // namespace FG_ISA_NS
}  // namespace fg
