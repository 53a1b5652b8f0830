// Static int8 convolution on the int8 GEMM (see forgegrad/qconv.h for the steps). Only copies live
// here; the arithmetic is qquantize_u8 and the GEMM's epilogue, so every int8 path gives the same bits.
#include "forgegrad/qconv.h"

#include <algorithm>
#include <cstring>

#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/qgemm.h"

namespace fg {
namespace {

// A uint8 scratch buffer on 64-byte boundaries (the AMX path reads aligned rows without a copy).
struct Bytes {
  AlignedBuffer buf;
  explicit Bytes(int64_t n) : buf(static_cast<size_t>((n + 3) / 4)) {}
  uint8_t* data() const { return reinterpret_cast<uint8_t*>(buf.data()); }
};

}  // namespace

void qconv2d_f32(const QConvGeom& g, const QConvArgs& a, const float* x, float* y) {
  const int64_t HW = g.H * g.W, Hp = g.H + g.pt + g.pb, Wp = g.W + g.pl + g.pr;
  const int64_t P = g.OH * g.OW, M = g.N * P, K = g.kh * g.kw * g.C, lda = qpad_k(K);
  if (M == 0 || g.OC == 0) return;

  // 1. quantize (NCHW, row by row), then into padded channels-last rows filled with the zero point
  Bytes q_nchw(g.N * g.C * HW), xp(g.N * Hp * Wp * g.C);
  if (HW > 0) qquantize_u8(x, g.N * g.C * g.H, g.W, g.W, a.x_inv_scale, a.x_zp, 0, 255, q_nchw.data(), g.W, g.W);
  const uint8_t* qs = q_nchw.data();
  uint8_t* xpd = xp.data();
  parallel_for(g.N * Hp, grain_for_work(Wp * g.C), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / Hp, hp = t % Hp, h = hp - g.pt;
      uint8_t* row = xpd + t * Wp * g.C;
      if (h < 0 || h >= g.H) {
        std::memset(row, a.x_zp, static_cast<size_t>(Wp * g.C));
        continue;
      }
      std::memset(row, a.x_zp, static_cast<size_t>(g.pl * g.C));
      std::memset(row + (g.pl + g.W) * g.C, a.x_zp, static_cast<size_t>(g.pr * g.C));
      const uint8_t* src = qs + (n * g.C * g.H + h) * g.W;  // channel c at src + c * HW
      uint8_t* dst = row + g.pl * g.C;
      if (g.C == 1) {
        std::memcpy(dst, src, static_cast<size_t>(g.W));
      } else {
        for (int64_t w = 0; w < g.W; ++w)
          for (int64_t c = 0; c < g.C; ++c) dst[w * g.C + c] = src[c * HW + w];
      }
    }
  });

  // 2. im2col: row (n, oh, ow), columns (i, j, c), zero past K
  Bytes cols(M * lda);
  uint8_t* cd = cols.data();
  parallel_for(M, grain_for_work(lda), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const int64_t n = m / P, p = m % P, oh = p / g.OW, ow = p % g.OW;
      uint8_t* dst = cd + m * lda;
      for (int64_t i = 0; i < g.kh; ++i) {
        const uint8_t* src_row = xpd + ((n * Hp + oh * g.sh + i * g.dh) * Wp + ow * g.sw) * g.C;
        for (int64_t j = 0; j < g.kw; ++j) {
          std::memcpy(dst, src_row + j * g.dw * g.C, static_cast<size_t>(g.C));
          dst += g.C;
        }
      }
      std::memset(dst, 0, static_cast<size_t>(lda - K));
    }
  });

  // 3. the GEMM, requantized to u8 in the output qparams
  Bytes yq(M * g.OC);
  QGemmArgs q;
  q.a = cd;
  q.lda = lda;
  q.b = a.packed;
  q.M = M;
  q.N = g.OC;
  q.K = K;
  q.out = QOut::u8;
  q.c = yq.data();
  q.ldc = g.OC;
  q.a_zp = a.x_zp;
  q.colsum = a.colsum;
  q.scale = a.scale;
  q.bias = a.bias;
  q.out_inv_scale = a.out_inv_scale;
  q.out_zp = a.out_zp;
  bool small = true;  // every byte <= 127 lets the AVX2 kernel use vpmaddubsw (same integers)
  for (int64_t i = 0; i < g.N * g.C * HW && small; ++i) small = qs[i] < 128;
  q.a_7bit = small && a.x_zp < 128;
  qgemm(q);

  // 4. dequantize into NCHW: y[n, oc, p] = (q[n * P + p, oc] - zp) * scale
  const uint8_t* yd = yq.data();
  const float zp = static_cast<float>(a.out_zp), s = a.out_scale;
  parallel_for(g.N * g.OC, grain_for_work(P), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / g.OC, oc = t % g.OC;
      const uint8_t* src = yd + n * P * g.OC + oc;
      float* dst = y + t * P;
      for (int64_t p = 0; p < P; ++p) dst[p] = (static_cast<float>(src[p * g.OC]) - zp) * s;
    }
  });
}

}  // namespace fg
