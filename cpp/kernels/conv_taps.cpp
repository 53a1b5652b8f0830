// The tap interleave of a transposed convolution whose kernel equals its stride (see conv.h): a
// copy, no arithmetic, so one portable build (the compiler vectorises the kW == 2 and kW == 1 rows).
#include <cstring>

#include "forgegrad/conv.h"
#include "forgegrad/parallel.h"

namespace fg {
namespace {

// One output row (W * KW floats) <-> KW tap rows of W floats. Scatter: out[w * KW + c] = tap[c][w].
template <int KW>
void row_fixed(const float* const* taps, float* out, int64_t W) {
  for (int64_t w = 0; w < W; ++w)
    for (int c = 0; c < KW; ++c) out[w * KW + c] = taps[c][w];
}
template <int KW>
void row_fixed_gather(const float* in, float* const* taps, int64_t W) {
  for (int64_t w = 0; w < W; ++w)
    for (int c = 0; c < KW; ++c) taps[c][w] = in[w * KW + c];
}

}  // namespace

void conv_taps_interleave(const float* src, float* dst, int64_t B, const int64_t* sp, const int64_t* k, bool gather) {
  const int64_t D = sp[0], H = sp[1], W = sp[2], KD = k[0], KH = k[1], KW = k[2];
  const int64_t P = D * H * W, K = KD * KH * KW;
  // One task per (b, d, a): KH * H output rows of W * KW floats.
  const int64_t tasks = B * D * KD;
  parallel_for_work(tasks, KH * H * W * KW, [&](int64_t t0, int64_t t1) {
    const float* taps_c[64];
    float* taps_m[64];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / (D * KD), d = (t / KD) % D, a = t % KD;
      const int64_t cols = b * K * P;  // the (K, D, H, W) block of b
      for (int64_t h = 0; h < H; ++h)
        for (int64_t bb = 0; bb < KH; ++bb) {
          const int64_t row = ((((b * D + d) * KD + a) * H + h) * KH + bb) * W * KW;
          const int64_t tap0 = cols + ((a * KH + bb) * KW) * P + (d * H + h) * W;
          for (int64_t c0 = 0; c0 < KW; c0 += 64) {  // at most 64 tap rows at once
            const int64_t nc = KW - c0 < 64 ? KW - c0 : 64;
            if (!gather) {
              for (int64_t c = 0; c < nc; ++c) taps_c[c] = src + tap0 + (c0 + c) * P;
              float* out = dst + row + c0;
              if (KW == 1) {
                std::memcpy(out, taps_c[0], sizeof(float) * W);
              } else if (KW == 2) {
                row_fixed<2>(taps_c, out, W);
              } else {
                for (int64_t w = 0; w < W; ++w)
                  for (int64_t c = 0; c < nc; ++c) out[w * KW + c] = taps_c[c][w];
              }
            } else {
              for (int64_t c = 0; c < nc; ++c) taps_m[c] = dst + tap0 + (c0 + c) * P;
              const float* in = src + row + c0;
              if (KW == 1) {
                std::memcpy(taps_m[0], in, sizeof(float) * W);
              } else if (KW == 2) {
                row_fixed_gather<2>(in, taps_m, W);
              } else {
                for (int64_t w = 0; w < W; ++w)
                  for (int64_t c = 0; c < nc; ++c) taps_m[c][w] = in[w * KW + c];
              }
            }
          }
        }
    }
  });
}

}  // namespace fg
