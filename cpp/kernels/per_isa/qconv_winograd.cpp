// The int8 conv's 3x3 stride-1 layers on the AVX2 int8 path as Winograd F(2x2, 3x3) on integers
// (forgegrad/qconv.h: qwino_weights, qwino_rows). Without VNNI the exact u8 x s8 products run on int16
// vpmaddwd (16 per instruction), so the 2.25x fewer multiplies of Winograd are 2.25x fewer instructions,
// and the sums stay exact:
//   d = x - zp (|d| <= 255), V = B^T d B: each entry adds 4 of them, |V| <= 1020 (int16);
//   U = G2 g G2^T with G2 = 2 G = [2 0 0; 1 1 1; 1 -1 1; 0 0 2] (integers): |U| <= 9 * 128 = 1152 (int16);
//   M = sum over channels of U * V (int32), Y = A^T M A = 4 * (the 2x2 outputs' sums of d * w), exact.
// The int32 adds may wrap in between (two's complement); the result is exact because 4 * y itself fits
// (the caller keeps C small enough). So the sums equal the im2col GEMM's acc - zp * colsum, bit for bit.
#include <cstdint>
#include <cstring>

#include "forgegrad/qconv.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace fg {
namespace FG_ISA_NS {

namespace {

// 4 x 4 -> 4 x 4 along one axis: the rows of B^T applied to (d0, d1, d2, d3).
template <class T, class Sub, class Add>
inline void bt4(const T* d, T* r, Sub sub, Add add) {
  r[0] = sub(d[0], d[2]);
  r[1] = add(d[1], d[2]);
  r[2] = sub(d[2], d[1]);
  r[3] = sub(d[1], d[3]);
}

// The rows of A^T applied to (m0, m1, m2, m3): (m0 + m1 + m2, m1 - m2 - m3).
template <class T, class Sub, class Add>
inline void at4(const T* m, T* r, Sub sub, Add add) {
  r[0] = add(add(m[0], m[1]), m[2]);
  r[1] = sub(sub(m[1], m[2]), m[3]);
}

#if defined(__AVX2__)
inline __m256i pair_at(const int16_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

// m[r * ldm + 0..16) = sum over k < KP of the pair v[r * ldv + 2k, +1] times the 16 columns' pairs at u + k * ldu,
// for 4 tiles r: 8 accumulators in registers.
void wino_micro4(const int16_t* v, int64_t ldv, const int16_t* u, int64_t ldu, int64_t KP, int32_t* m, int64_t ldm) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  const int16_t *v0 = v, *v1 = v + ldv, *v2 = v + 2 * ldv, *v3 = v + 3 * ldv;
  for (int64_t k = 0; k < KP; ++k, u += ldu) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(u));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(u + 16));
    __m256i b = pair_at(v0 + 2 * k);
    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(b, w0));
    c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(b, w1));
    b = pair_at(v1 + 2 * k);
    c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(b, w0));
    c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(b, w1));
    b = pair_at(v2 + 2 * k);
    c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(b, w0));
    c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(b, w1));
    b = pair_at(v3 + 2 * k);
    c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(b, w0));
    c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(b, w1));
  }
  const auto put = [&](int64_t r, __m256i lo, __m256i hi) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(m + r * ldm), lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(m + r * ldm + 8), hi);
  };
  put(0, c00, c01);
  put(1, c10, c11);
  put(2, c20, c21);
  put(3, c30, c31);
}

// The same for mr < 4 tiles, one at a time.
void wino_micro_tail(const int16_t* v, int64_t ldv, const int16_t* u, int64_t ldu, int64_t KP, int64_t mr, int32_t* m,
                     int64_t ldm) {
  for (int64_t r = 0; r < mr; ++r) {
    __m256i c0 = _mm256_setzero_si256(), c1 = c0;
    const int16_t* up = u;
    for (int64_t k = 0; k < KP; ++k, up += ldu) {
      const __m256i b = pair_at(v + r * ldv + 2 * k);
      c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(up))));
      c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(up + 16))));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(m + r * ldm), c0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(m + r * ldm + 8), c1);
  }
}
#endif

}  // namespace

void qwino_weights(const int8_t* packed, int64_t OC, int64_t C, int16_t* u) {
  const int64_t Cs = qwino_channels(C), OCp = qwino_columns(OC), K4 = qpad_k(9 * C) / 4;
  std::memset(u, 0, static_cast<size_t>(16 * Cs * OCp) * sizeof(int16_t));
  for (int64_t n = 0; n < OC; ++n) {
    const int8_t* blk = packed + (n / 16) * K4 * 64 + (n % 16) * 4;  // W[n][k] at blk[(k/4)*64 + k%4]
    for (int64_t c = 0; c < C; ++c) {
      int32_t g[3][3], t[4][3];
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 3; ++j) {
          const int64_t k = (i * 3 + j) * C + c;
          g[i][j] = blk[(k / 4) * 64 + k % 4];
        }
      for (int64_t j = 0; j < 3; ++j) {  // G2 g
        t[0][j] = 2 * g[0][j];
        t[1][j] = g[0][j] + g[1][j] + g[2][j];
        t[2][j] = g[0][j] - g[1][j] + g[2][j];
        t[3][j] = 2 * g[2][j];
      }
      for (int64_t a = 0; a < 4; ++a) {  // (G2 g) G2^T
        const int32_t row[4] = {2 * t[a][0], t[a][0] + t[a][1] + t[a][2], t[a][0] - t[a][1] + t[a][2], 2 * t[a][2]};
        for (int64_t b = 0; b < 4; ++b)  // U[xi][c / 2][n][c % 2]
          u[((a * 4 + b) * (Cs / 2) + c / 2) * OCp * 2 + n * 2 + c % 2] = static_cast<int16_t>(row[b]);
      }
    }
  }
}

void qwino_rows(const uint8_t* in, int64_t Wp, int64_t C, uint8_t zp, const int16_t* u, int64_t OC, int64_t R,
                int64_t OW, int32_t* out, int16_t* v, int32_t* m) {
  const int64_t Cs = qwino_channels(C), OCp = qwino_columns(OC), TW = OW / 2, T = R / 2 * TW, KP = Cs / 2;
  const int64_t pairs = (C + 1) / 2;  // the pairs the GEMMs read: past C, U is zero (and V's lanes are not read)
  const int64_t row = Wp * C;

  // 1. V[xi][t][c] = (B^T d B)[xi] of tile t's 4 x 4 inputs, d = x - zp, 16 channels at a time (lanes past C
  // read the next pixel's bytes: U is zero there, so they add nothing)
  for (int64_t t = 0; t < T; ++t) {
    const uint8_t* base = in + (t / TW) * 2 * row + (t % TW) * 2 * C;
    for (int64_t c0 = 0; c0 < Cs; c0 += 16) {
#if defined(__AVX2__)
      const __m256i z = _mm256_set1_epi16(zp);
      const auto sub = [](__m256i a, __m256i b) { return _mm256_sub_epi16(a, b); };
      const auto add = [](__m256i a, __m256i b) { return _mm256_add_epi16(a, b); };
      __m256i d[4][4], r[4][4], s[4][4];
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t j = 0; j < 4; ++j)
          d[i][j] = _mm256_sub_epi16(
              _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + i * row + j * C + c0))), z);
      for (int64_t j = 0; j < 4; ++j) {  // B^T d, column j
        const __m256i col[4] = {d[0][j], d[1][j], d[2][j], d[3][j]};
        __m256i o[4];
        bt4(col, o, sub, add);
        for (int64_t a = 0; a < 4; ++a) r[a][j] = o[a];
      }
      for (int64_t a = 0; a < 4; ++a) bt4(r[a], s[a], sub, add);  // (B^T d) B, row a
      for (int64_t xi = 0; xi < 16; ++xi)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(v + (xi * T + t) * Cs + c0), s[xi / 4][xi % 4]);
#else
      const auto sub = [](int32_t a, int32_t b) { return a - b; };
      const auto add = [](int32_t a, int32_t b) { return a + b; };
      for (int64_t c = c0; c < c0 + 16; ++c) {
        int32_t d[4][4], r[4][4], s[4][4];
        for (int64_t i = 0; i < 4; ++i)
          for (int64_t j = 0; j < 4; ++j) d[i][j] = c < C ? int32_t{base[i * row + j * C + c]} - zp : 0;
        for (int64_t j = 0; j < 4; ++j) {
          const int32_t col[4] = {d[0][j], d[1][j], d[2][j], d[3][j]};
          int32_t o[4];
          bt4(col, o, sub, add);
          for (int64_t a = 0; a < 4; ++a) r[a][j] = o[a];
        }
        for (int64_t a = 0; a < 4; ++a) bt4(r[a], s[a], sub, add);
        for (int64_t xi = 0; xi < 16; ++xi) v[(xi * T + t) * Cs + c] = static_cast<int16_t>(s[xi / 4][xi % 4]);
      }
#endif
    }
  }

  // 2. M[t][xi][n] = sum_c V[xi][t][c] * U[xi][c][n]: 16 small GEMMs, channel pairs on vpmaddwd
  for (int64_t xi = 0; xi < 16; ++xi) {
    const int16_t* vx = v + xi * T * Cs;
    const int16_t* ux = u + xi * KP * OCp * 2;
    for (int64_t t0 = 0; t0 < T; t0 += 4) {
      const int64_t mr = T - t0 < 4 ? T - t0 : 4;
      for (int64_t n0 = 0; n0 < OCp; n0 += 16) {
#if defined(__AVX2__)
        if (mr == 4)
          wino_micro4(vx + t0 * Cs, Cs, ux + n0 * 2, OCp * 2, pairs, m + (t0 * 16 + xi) * OCp + n0, 16 * OCp);
        else
          wino_micro_tail(vx + t0 * Cs, Cs, ux + n0 * 2, OCp * 2, pairs, mr, m + (t0 * 16 + xi) * OCp + n0, 16 * OCp);
#else
        for (int64_t r = 0; r < mr; ++r)
          for (int64_t n = n0; n < n0 + 16; ++n) {
            uint32_t s = 0;  // (wraps as vpaddd does)
            for (int64_t c = 0; c < 2 * pairs; ++c)
              s += static_cast<uint32_t>(int32_t{vx[(t0 + r) * Cs + c]} * ux[(c / 2) * OCp * 2 + n * 2 + c % 2]);
            m[((t0 + r) * 16 + xi) * OCp + n] = static_cast<int32_t>(s);
          }
#endif
      }
    }
  }

  // 3. the 2 x 2 outputs of each tile: (A^T M A) / 4, into rows of OC sums
  for (int64_t t = 0; t < T; ++t) {
    const int32_t* mt = m + t * 16 * OCp;
    int32_t* o = out + ((t / TW) * 2 * OW + (t % TW) * 2) * OC;
    int64_t n0 = 0;
#if defined(__AVX2__)
    const auto sub = [](__m256i a, __m256i b) { return _mm256_sub_epi32(a, b); };
    const auto add = [](__m256i a, __m256i b) { return _mm256_add_epi32(a, b); };
    for (; n0 < OC; n0 += 8) {
      __m256i x[4][4], r[2][4], y[2][2];
      for (int64_t xi = 0; xi < 16; ++xi)
        x[xi / 4][xi % 4] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mt + xi * OCp + n0));
      for (int64_t b = 0; b < 4; ++b) {
        const __m256i col[4] = {x[0][b], x[1][b], x[2][b], x[3][b]};
        __m256i s[2];
        at4(col, s, sub, add);
        r[0][b] = s[0];
        r[1][b] = s[1];
      }
      for (int64_t p = 0; p < 2; ++p) {
        at4(r[p], y[p], sub, add);
        for (int64_t q = 0; q < 2; ++q) {
          const __m256i val = _mm256_srai_epi32(y[p][q], 2);
          int32_t* dst = o + (p * OW + q) * OC + n0;
          if (n0 + 8 <= OC) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), val);
          } else {
            alignas(32) int32_t tmp[8];
            _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), val);
            std::memcpy(dst, tmp, static_cast<size_t>(OC - n0) * sizeof(int32_t));
          }
        }
      }
    }
#else
    const auto sub = [](uint32_t a, uint32_t b) { return a - b; };
    const auto add = [](uint32_t a, uint32_t b) { return a + b; };
    for (; n0 < OC; ++n0) {
      uint32_t x[4][4], r[2][4], y[2][2];
      for (int64_t xi = 0; xi < 16; ++xi) x[xi / 4][xi % 4] = static_cast<uint32_t>(mt[xi * OCp + n0]);
      for (int64_t b = 0; b < 4; ++b) {
        const uint32_t col[4] = {x[0][b], x[1][b], x[2][b], x[3][b]};
        uint32_t s[2];
        at4(col, s, sub, add);
        r[0][b] = s[0];
        r[1][b] = s[1];
      }
      for (int64_t p = 0; p < 2; ++p) {
        at4(r[p], y[p], sub, add);
        for (int64_t q = 0; q < 2; ++q) o[(p * OW + q) * OC + n0] = static_cast<int32_t>(y[p][q]) / 4;
      }
    }
#endif
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
