// Static int8 convolution on the int8 GEMM (see forgegrad/qconv.h for the steps). Only copies live
// here; the arithmetic is qquantize_u8 and the GEMM's epilogue, so every int8 path gives the same bits.
#include "forgegrad/qconv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/qgemm.h"
#include "forgegrad/transpose_u8.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fg {
namespace {

// A uint8 scratch buffer on 64-byte boundaries (the AMX path reads aligned rows without a copy).
// Buffers up to kKeepBytes are kept per calling thread and reused: a fresh multi-megabyte buffer
// costs a page fault per 4 KB on every call (LeNet's conv1 at batch 64 spent more time faulting
// its im2col matrix in than in the GEMM). Larger ones are freed after the call.
constexpr int64_t kKeepBytes = int64_t(64) << 20;
struct Scratch {
  AlignedBuffer kept[3];
};
thread_local Scratch t_scratch;

class Bytes {
 public:
  Bytes(int slot, int64_t n) {
    const size_t floats = static_cast<size_t>((n + 3) / 4 + 1);
    AlignedBuffer& k = t_scratch.kept[slot];
    if (n <= kKeepBytes) {
      if (k.size() < floats) k.reset(floats);
      ptr_ = reinterpret_cast<uint8_t*>(k.data());
    } else {
      own_.reset(floats);
      ptr_ = reinterpret_cast<uint8_t*>(own_.data());
    }
  }
  uint8_t* data() const { return ptr_; }

 private:
  AlignedBuffer own_;
  uint8_t* ptr_ = nullptr;
};

// n bytes, n small (a tap row of a few channels): fixed-size (overlapping) moves instead of a
// memcpy call or a byte loop; every byte written lies in [dst, dst + n).
inline void copy_bytes(uint8_t* dst, const uint8_t* src, int64_t n) {
  auto mv = [&](int64_t at, auto tag) {
    decltype(tag) v;
    std::memcpy(&v, src + at, sizeof v);
    std::memcpy(dst + at, &v, sizeof v);
  };
  struct B16 {
    uint64_t lo, hi;
  };
  if (n >= 32) {
    std::memcpy(dst, src, static_cast<size_t>(n));
  } else if (n >= 16) {
    mv(0, B16{});
    mv(n - 16, B16{});
  } else if (n >= 8) {
    mv(0, uint64_t{});
    mv(n - 8, uint64_t{});
  } else if (n >= 4) {
    mv(0, uint32_t{});
    mv(n - 4, uint32_t{});
  } else if (n > 0) {
    dst[0] = src[0];
    dst[n / 2] = src[n / 2];
    dst[n - 1] = src[n - 1];
  }
}

// One pooled output row, channels last: out[c][o] = max(floor_q, the ph x pw window of rows
// `src` (OW * OC bytes each, row_ld apart) at columns c * pw ..). Sizes are parameters (locals), so
// the byte stores cannot alias them, and the max runs 16 bytes at a time (SSE2: every x86-64).
void pool_row(const uint8_t* src, int64_t row_ld, int64_t ph, int64_t pw, int64_t PW, int64_t OC, uint8_t floor_q,
              uint8_t* __restrict out) {
  for (int64_t c = 0; c < PW; ++c) {
    uint8_t* __restrict mx = out + c * OC;
    int64_t o = 0;
#if defined(__SSE2__)
    for (; o + 16 <= OC; o += 16) {
      __m128i m = _mm_set1_epi8(static_cast<char>(floor_q));
      for (int64_t i = 0; i < ph; ++i)
        for (int64_t j = 0; j < pw; ++j)
          m = _mm_max_epu8(m,
                           _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * row_ld + (c * pw + j) * OC + o)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(mx + o), m);
    }
#endif
    for (; o < OC; ++o) {
      uint8_t m = floor_q;
      for (int64_t i = 0; i < ph; ++i)
        for (int64_t j = 0; j < pw; ++j) m = std::max(m, src[i * row_ld + (c * pw + j) * OC + o]);
      mx[o] = m;
    }
  }
}

// One image row of a quantized NCHW batch (channel c's row at src + c * plane, W bytes) into channels
// last (dst[w * C + c]); 16 x 16 byte tiles, so reads run up to 15 bytes past a row (buffer slack).
void nchw_row_to_nhwc(const uint8_t* src, int64_t plane, int64_t C, int64_t W, uint8_t* __restrict dst) {
  int64_t c0 = 0;
#if defined(__SSE2__)
  for (; C >= 4 && c0 < C; c0 += 16) {  // (2 or 3 channels: the byte loop below)
    const int64_t cn = std::min<int64_t>(16, C - c0);
    for (int64_t w0 = 0; w0 < W; w0 += 16) {
      __m128i cols[16];
      tile_u8::load_transposed(src + c0 * plane + w0, plane, cn, cols);
      for (int64_t j = 0; j < std::min<int64_t>(16, W - w0); ++j) {
        uint8_t* d = dst + (w0 + j) * C + c0;
        if (cn == 16) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(d), cols[j]);
        } else {
          alignas(16) uint8_t tmp[16];
          _mm_store_si128(reinterpret_cast<__m128i*>(tmp), cols[j]);
          std::memcpy(d, tmp, static_cast<size_t>(cn));
        }
      }
    }
  }
#endif
  for (; c0 < C; ++c0)
    for (int64_t w = 0; w < W; ++w) dst[w * C + c0] = src[c0 * plane + w];
}

// im2col rows m0..m1 of one output row (n, oh): `taps` runs of `run` bytes per kernel row i. The
// zero tail past K is written first, as whole 16-byte blocks from the one holding byte K (lda is a
// multiple of 16), and the taps over it: a memset call per row cost more than the row itself for
// small K (LeNet's conv1: K = 9 in 16-byte rows, 50176 rows at batch 64).
void im2col_rows(const uint8_t* in, int64_t in_ld, int64_t kh, int64_t runs, int64_t run, int64_t jstep,
                 int64_t sw_bytes, int64_t OW, int64_t K, int64_t lda, uint8_t* __restrict dst) {
  const int64_t tail = K / 16 * 16;
  for (int64_t ow = 0; ow < OW; ++ow, dst += lda) {
#if defined(__SSE2__)
    for (int64_t z = tail; z < lda; z += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + z), _mm_setzero_si128());
#else
    std::memset(dst + tail, 0, static_cast<size_t>(lda - tail));
#endif
    uint8_t* __restrict d = dst;
    for (int64_t i = 0; i < kh; ++i) {
      const uint8_t* s = in + i * in_ld + ow * sw_bytes;
      for (int64_t j = 0; j < runs; ++j, d += run) copy_bytes(d, s + j * jstep, run);
    }
  }
}

// True when every byte of p[0, n) is below 128: an OR of 8-byte words (a running byte in a local that
// lambdas capture by reference stays in memory, one store per byte: 0.6 ms at LeNet's conv2, batch 64).
bool all_below_128(const uint8_t* p, int64_t n) {
  uint64_t acc = 0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, sizeof v);
    acc |= v;
  }
  for (; i < n; ++i) acc |= p[i];
  return (acc & 0x8080808080808080ull) == 0;
}

// The requantizing epilogue is non-decreasing in the s32 sum (so a max-pool may run before it) when every
// scale is positive and finite, the bias finite (no NaN: the GEMM's ReLU sends NaN to 0, its u8 clamp to
// 255) and the output's inverse scale positive and finite.
bool requant_is_monotone(const QConvArgs& a, int64_t OC) {
  if (!(a.out_inv_scale > 0.0f && std::isfinite(a.out_inv_scale))) return false;
  for (int64_t n = 0; n < OC; ++n) {
    if (!(a.scale[n] > 0.0f && std::isfinite(a.scale[n]))) return false;
    if (a.bias && !std::isfinite(a.bias[n])) return false;
  }
  return true;
}

}  // namespace

void qconv2d_f32(const QConvGeom& g, const QConvArgs& a, const float* x, float* y) {
  const int64_t HW = g.H * g.W, Hp = g.H + g.pt + g.pb, Wp = g.W + g.pl + g.pr;
  const int64_t P = g.OH * g.OW, M = g.N * P, K = g.kh * g.kw * g.C;
  // Rows only as long as the path reads; the slack after the last row keeps any path in bounds
  // (bytes past K meet zero weights) should another thread change the int8 path meanwhile.
  const int64_t kp = qpad_k(K), lda = qrow_bytes(K, active_qpath());
  if (M == 0 || g.OC == 0) return;

  // 1. quantize (NCHW, row by row), then into padded channels-last rows filled with the zero point
  // (16 bytes of slack on each: the 16-byte tile reads of nchw_row_to_nhwc and qim2col_short_rows)
  Bytes q_nchw(0, g.N * g.C * HW + 16), xp(1, g.N * Hp * Wp * g.C + 16);
  // (one row per plane: x is contiguous, and short rows cost the kernel a tail each)
  if (HW > 0) qquantize_u8(x, g.N * g.C, HW, HW, a.x_inv_scale, a.x_zp, 0, 255, q_nchw.data(), HW, HW);
  // The byte loops below read the sizes from locals: a store through a uint8_t* may alias any
  // object, so sizes read through `g` would be reloaded after every byte (and nothing vectorizes).
  const uint8_t* qs = q_nchw.data();
  uint8_t* xpd = xp.data();
  const int64_t C = g.C, H = g.H, W = g.W, pt = g.pt, pl = g.pl, pr = g.pr;
  const uint8_t xzp = static_cast<uint8_t>(a.x_zp);
  parallel_for_work(g.N * Hp, Wp * C, [&, C, H, W, pt, pl, pr, xzp](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / Hp, hp = t % Hp, h = hp - pt;
      uint8_t* __restrict row = xpd + t * Wp * C;
      if (h < 0 || h >= H) {
        std::memset(row, xzp, static_cast<size_t>(Wp * C));
        continue;
      }
      std::memset(row, xzp, static_cast<size_t>(pl * C));
      std::memset(row + (pl + W) * C, xzp, static_cast<size_t>(pr * C));
      const uint8_t* __restrict src = qs + (n * C * H + h) * W;  // channel c at src + c * HW
      uint8_t* __restrict dst = row + pl * C;
      if (C == 1)
        std::memcpy(dst, src, static_cast<size_t>(W));
      else
        nchw_row_to_nhwc(src, HW, C, W, dst);
    }
  });

  // 2. im2col: row (n, oh, ow), columns (i, j, c), zero past K. Without dilation a tap row's kw
  // taps are kw * C consecutive bytes of the padded input: one copy per i.
  const int64_t run = g.dw == 1 ? g.kw * C : C, runs = g.dw == 1 ? 1 : g.kw;
  const bool short_rows = runs == 1 && run <= 8 && K <= 16 && lda >= 16;
  const auto im2col_row = [&](int64_t n, int64_t oh, uint8_t* dst) {  // the OW rows of output row (n, oh)
    const uint8_t* in = xpd + (n * Hp + oh * g.sh) * Wp * C;
    if (short_rows)
      qim2col_short_rows(in, g.dh * Wp * C, g.kh, run, g.sw * C, g.OW, lda, dst);
    else
      im2col_rows(in, g.dh * Wp * C, g.kh, runs, run, g.dw * C, g.sw * C, g.OW, K, lda, dst);
  };

  // every byte <= 127 lets the AVX2 kernel use vpmaddubsw (same integers)
  const bool below_128 = all_below_128(qs, g.N * g.C * HW);

  // 3. the GEMM, requantized to u8 in the output qparams
  QGemmArgs q;
  q.lda = lda;
  q.b = a.packed;
  q.N = g.OC;
  q.K = K;
  q.a_zp = a.x_zp;
  q.colsum = a.colsum;
  q.scale = a.scale;
  q.bias = a.bias;
  q.out_inv_scale = a.out_inv_scale;
  q.out_zp = a.out_zp;
  q.a_7bit = below_128 && a.x_zp < 128;

  const float zp = static_cast<float>(a.out_zp), s = a.out_scale;
  const int64_t PH = g.OH / g.ph, PW = g.OW / g.pw, OC = g.OC;
  // 3x3 stride-1 layers on the AVX2 path (no VNNI): Winograd F(2x2, 3x3) on integers, the same sums with
  // 2.25x fewer int16 multiplies, in the banded pipeline below (s32 sums, then the requantizing epilogue). The
  // weights' transform runs per call (OC * C filters), so only where the batch's pixels outnumber it well; under 8
  // channels the input transform (16 channels a vector) costs more than it saves (LeNet's conv1: 0.7 -> 1.05 ms).
  const bool wino = active_qpath() == QPath::avx2 && g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 &&
                    g.dw == 1 && C >= 8 && C <= kQWinoMaxC && g.OW % 2 == 0 && M >= 2048;
  const bool pools = g.ph * g.pw > 1;
  if ((pools && requant_is_monotone(a, OC)) || (wino && !pools)) {
    // Pool first: per band of pooled rows of one image, the im2col rows, the GEMM's s32 sums and the
    // pooled, requantized bytes stay in this thread's cache (bands of <= 8 pooled rows, so that a small
    // batch still splits across threads); ReLU in the epilogue (max(v, 0), then quantized: the zero point).
    // (Without a pool the epilogue runs on each sum: no order to keep.) Winograd takes bands of an even
    // number of conv rows (tiles of 2 x 2 outputs); an odd one takes the GEMM.
    int64_t bands = (PH + 7) / 8, band = (PH + bands - 1) / bands;
    if (wino && g.ph % 2 == 1 && band % 2 == 1 && band < PH) {
      band += 1;
      bands = (PH + band - 1) / band;
    }
    const int64_t tiles = band * g.ph / 2 * (g.OW / 2), wc = qwino_channels(C), wn = qwino_columns(OC);
    std::vector<int16_t> wu(wino ? static_cast<size_t>(16 * wc * wn) : 0);
    if (wino) qwino_weights(a.packed, OC, C, wu.data());
    parallel_for_work(g.N * bands, band * g.ph * g.OW * (lda + 4 * OC), [&](int64_t b, int64_t e) {
      AlignedBuffer a_buf(wino ? 0 : static_cast<size_t>((band * g.ph * g.OW * lda + kp) / 4 + 1));
      AlignedBuffer v_buf(wino ? static_cast<size_t>(16 * tiles * wc / 2 + 8) : 0);
      AlignedBuffer m_buf(wino ? static_cast<size_t>(16 * tiles * wn) : 0);
      AlignedBuffer acc_buf(static_cast<size_t>(band * g.ph * g.OW * OC));
      std::vector<uint8_t> pooled(static_cast<size_t>(band * PW * OC + 16));  // (slack: qdequant_transpose)
      for (int64_t t = b; t < e; ++t) {
        const int64_t n = t / bands, r0 = t % bands * band, nr = std::min(band, PH - r0);
        const int64_t rows = nr * g.ph * g.OW;  // conv rows r0 * ph .. of image n
        QGemmArgs qb = q;
        qb.M = rows;
        qb.out = QOut::s32;
        qb.c = acc_buf.data();
        qb.ldc = OC;
        if (wino && nr * g.ph % 2 == 0) {
          qwino_rows(xpd + (n * Hp + r0 * g.ph) * Wp * C, Wp, C, xzp, wu.data(), OC, nr * g.ph, g.OW,
                     reinterpret_cast<int32_t*>(acc_buf.data()), reinterpret_cast<int16_t*>(v_buf.data()),
                     reinterpret_cast<int32_t*>(m_buf.data()));
          qb.a_zp = 0;  // the sums are of x - zp already
        } else {
          if (a_buf.size() == 0) a_buf.reset(static_cast<size_t>((band * g.ph * g.OW * lda + kp) / 4 + 1));
          uint8_t* ad = reinterpret_cast<uint8_t*>(a_buf.data());
          for (int64_t i = 0; i < nr * g.ph; ++i) im2col_row(n, r0 * g.ph + i, ad + i * g.OW * lda);
          std::memset(ad + rows * lda, 0, static_cast<size_t>(kp - lda));
          qb.a = ad;
          qgemm(qb);
        }
        qb.relu = g.relu;
        qpool_requant(qb, reinterpret_cast<const int32_t*>(acc_buf.data()), g.OW, g.ph, g.pw, nr, PW, pooled.data());
        qdequant_transpose(pooled.data(), OC, nr * PW, OC, zp, s, PH * PW, y + n * OC * PH * PW + r0 * PW);
      }
    });
    return;
  }

  Bytes cols(2, M * lda + (kp - lda));
  uint8_t* cd = cols.data();
  parallel_for_work(g.N * g.OH, g.OW * lda, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) im2col_row(t / g.OH, t % g.OH, cd + t * g.OW * lda);
  });
  std::memset(cd + M * lda, 0, static_cast<size_t>(kp - lda));
  Bytes yq(0, M * g.OC);  // (the scratch of step 1: done with)
  q.a = cd;
  q.M = M;
  q.out = QOut::u8;
  q.c = yq.data();
  q.ldc = g.OC;
  qgemm(q);

  // 4. ReLU and pool on the bytes, then dequantize into NCHW: y = (float(q) - zp) * scale. ReLU is
  // max(q, zp): the dequantized zero point is +0, what the float ReLU gives for negatives.
  const uint8_t floor_q = g.relu ? static_cast<uint8_t>(a.out_zp) : 0;
  const uint8_t* yd = yq.data();
  parallel_for_work(g.N * PH, PW * OC * g.ph * g.pw, [&](int64_t b, int64_t e) {
    std::vector<uint8_t> pooled(static_cast<size_t>(PW * OC + 16));  // (slack: the tile reads of qdequant_transpose)
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / PH, r = t % PH;
      pool_row(yd + (n * g.OH + r * g.ph) * g.OW * OC, g.OW * OC, g.ph, g.pw, PW, OC, floor_q, pooled.data());
      qdequant_transpose(pooled.data(), OC, PW, OC, zp, s, PH * PW, y + (n * OC * PH + r) * PW);
    }
  });
}

}  // namespace fg
