// Static int8 convolution (groups = 1) on the int8 GEMM: float NCHW in, float NCHW out, with every
// intermediate in C++ (cpp/kernels/qconv.cpp). The steps, each a plain copy or the GEMM:
//   1. quantize x with the input qparams into channels-last rows, padded with the input zero point
//      (the quantized 0, so padding is a real zero);
//   2. im2col: one row per output pixel, columns ordered (tap i, tap j, channel) to match the
//      packed weights (QuantizedConv2d packs W as (OC, kh * kw * C)), rows padded to qpad_k(K);
//   3. the int8 GEMM with its requantizing epilogue (u8 in the output qparams);
//   4. optionally ReLU and a max-pool on the u8 output (both commute with the increasing dequantize:
//      ReLU is max(q, out_zp), the pool the max of the window's bytes), then dequantize and
//      transpose back to NCHW: y = (float(q) - float(out_zp)) * out_scale.
// Bits equal the im2col + GEMM reference (then float ReLU / max-pool) on every int8 path and at any
// thread count.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"
#include "forgegrad/qgemm.h"

namespace fg {

struct QConvGeom {
  int64_t N, C, H, W;          // input
  int64_t OC, kh, kw;          // weights
  int64_t sh, sw, dh, dw;      // stride, dilation
  int64_t pt, pb, pl, pr;      // padding: top, bottom, left, right
  int64_t OH, OW;              // convolution output (the caller computes and checks them)
  int64_t ph = 1, pw = 1;      // max-pool window = stride, no padding, floor (1 x 1: none); ph <= OH, pw <= OW
  bool relu = false;           // ReLU on the output (before or after the pool: the same)
};

struct QConvArgs {
  float x_inv_scale;  // float32(1 / input scale), the inverse taken in double (as quantize_u8)
  int32_t x_zp;
  const int8_t* packed;   // qpacked_bytes(OC, kh * kw * C)
  const int32_t* colsum;  // OC
  const float* scale;     // OC: x_scale * w_scale[oc]
  const float* bias;      // OC or null
  float out_scale;      // float32(output scale): the dequantizing multiply
  float out_inv_scale;  // float32(1 / output scale), the inverse taken in double (as linear_u8)
  int32_t out_zp;
};

// Dequantize a channels-last block into planes: y[c * plane + r] = (float(src[r * ld + c]) - zp) * s for
// r < rows, c < cols (step 4's last copy). Reads 16 bytes from each row's start at multiples of 16
// columns, so up to 15 bytes past the block's end (the caller's buffer has that slack). The same two
// roundings on every ISA path.
FG_KERNEL(void, qdequant_transpose,
          (const uint8_t* src, int64_t ld, int64_t rows, int64_t cols, float zp, float s, int64_t plane, float* y),
          (src, ld, rows, cols, zp, s, plane, y))

// im2col for short rows (step 2; no dilation, K = kh * run <= 16, one run of <= 8 bytes per kernel row,
// lda >= 16): row ow of dst (lda bytes) = the run bytes at in + i * in_ld + ow * sw_bytes for each kernel
// row i, then zeros. Reads 8 bytes from each run's start (up to 7 past it: the padded input's slack).
FG_KERNEL(void, qim2col_short_rows,
          (const uint8_t* in, int64_t in_ld, int64_t kh, int64_t run, int64_t sw_bytes, int64_t OW, int64_t lda,
           uint8_t* dst),
          (in, in_ld, kh, run, sw_bytes, OW, lda, dst))

// Max-pool on the s32 sums, then the GEMM's requantizing epilogue (ep: N columns, its a_zp, colsum, scale,
// bias, relu, out_inv_scale, out_zp): acc holds conv rows of OW pixels, ep.N sums each; out gets PH * PW rows
// of ep.N bytes, row pr * PW + pc the pooled (pr, pc). Only for a non-decreasing epilogue (every scale > 0).
FG_KERNEL(void, qpool_requant,
          (const QGemmArgs& ep, const int32_t* acc, int64_t OW, int64_t ph, int64_t pw, int64_t PH, int64_t PW,
           uint8_t* out),
          (ep, acc, OW, ph, pw, PH, PW, out))

// 3x3 stride-1 convolutions on the AVX2 int8 path: Winograd F(2x2, 3x3) on integers (exact; see
// cpp/kernels/per_isa/qconv_winograd.cpp). Channels are padded to qwino_channels(C), output columns to
// qwino_columns(OC). The s32 sums' bound: 4 * 9 * C * 255 * 128 < 2^31 needs C <= kQWinoMaxC.
constexpr int64_t kQWinoMaxC = 1024;
inline int64_t qwino_channels(int64_t C) { return (C + 15) / 16 * 16; }
inline int64_t qwino_columns(int64_t OC) { return (OC + 15) / 16 * 16; }
// u (16 * qwino_channels(C) * qwino_columns(OC) int16): the weights' transforms G2 g G2^T (G2 = 2 G), from the
// packed (OC, 9 * C) weights (taps (i, j, c), as QuantizedConv2d packs them).
FG_KERNEL(void, qwino_weights, (const int8_t* packed, int64_t OC, int64_t C, int16_t* u), (packed, OC, C, u))
// The s32 sums sum (x - zp) * w of R conv rows (R even) of OW pixels (OW even), out row r * OW + ow (ld OC):
// in = the padded channels-last image at the band's first row (rows of Wp * C bytes; reads up to 15 bytes
// past a pixel's C). Scratch: v 16 * (R / 2) * (OW / 2) * qwino_channels(C) int16, m as many tiles * 16 *
// qwino_columns(OC) int32.
FG_KERNEL(void, qwino_rows,
          (const uint8_t* in, int64_t Wp, int64_t C, uint8_t zp, const int16_t* u, int64_t OC, int64_t R, int64_t OW,
           int32_t* out, int16_t* v, int32_t* m),
          (in, Wp, C, zp, u, OC, R, OW, out, v, m))

// y (N, OC, OH / ph, OW / pw) float32 from x (N, C, H, W) float32.
void qconv2d_f32(const QConvGeom& g, const QConvArgs& a, const float* x, float* y);

}  // namespace fg
