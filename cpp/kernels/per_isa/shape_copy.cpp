// Copies and gradient sums of shape ops whose numpy forms walk memory badly (forgegrad.kernels.shape_copy):
//
// - transpose_copy_b32 / _b64: dst[b][r][c] = src[b*sb + r*sr + c*sc] into a C-contiguous dst, for 4- and 8-byte
//   elements moved as bits (any dtype of that size). Cache-blocked; where a dst row is a src column (|sr| == 1,
//   a transposed or transposed-and-flipped view: rot90's odd-k copies) AVX2 / AVX-512 builds move 8 x 8 (4 x 4)
//   tiles through registers. numpy's copy of such a view reads one element per cache line.
// - diff_forward_f32 / _f64: one forward difference along the middle axis of (outer, m, inner), x[k + 1] - x[k]
//   (numpy's hi - lo of two slices, one subtraction per element: the same bits).
// - diff_backward_f32 / _f64: the adjoint of one forward difference along the middle axis of (outer, m, inner),
//   out (outer, m + 1, inner) with out[k] = (0 + g[k-1]) - g[k] in one pass: the same operations, in the same
//   order, as numpy's zeros / += / -= form it replaces (0 + x turns -0 into +0), so the same bits.
// - unfold_backward_f32 / _f64: Tensor.unfold's overlap-add, g (outer, count, inner, size) into out (outer, n,
//   inner): out[w*step + j] += g[w][j], each element's terms added to 0 in increasing window order (torch's).
// Every element is written by one thread with a fixed order of additions: the same bits at any thread count.
#include <cstdint>

#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"
#include "forgegrad/transpose_f32.h"

namespace fg {
namespace FG_ISA_NS {

namespace {

constexpr int64_t kBlock = 64;  // a block of 64 x 64 elements: 16 (32) KiB of dst, its src lines in L1 / L2

template <class T>
void copy_block_scalar(const T* src, T* dst, int64_t r0, int64_t r1, int64_t c0, int64_t c1, int64_t sr, int64_t sc,
                       int64_t C) {
  if (sc != 1 && (sr == 1 || sr == -1)) {  // src runs along r: read down them, write across dst's columns
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t r = r0; r < r1; ++r) dst[r * C + c] = src[r * sr + c * sc];
  } else {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = c0; c < c1; ++c) dst[r * C + c] = src[r * sr + c * sc];
  }
}

#if defined(__AVX2__)
// dst rows r0 .. r0 + 7, cols c0 .. c0 + 7 from src columns read along r (sr = +1 or -1).
inline void tile8_b32(const uint32_t* src, uint32_t* dst, int64_t r0, int64_t c0, int64_t sr, int64_t sc, int64_t C) {
  __m256 v[8], t[8];
  if (sr == 1) {
    for (int k = 0; k < 8; ++k) v[k] = _mm256_loadu_ps(reinterpret_cast<const float*>(src + (c0 + k) * sc + r0));
  } else {  // elements r0 .. r0 + 7 lie at offsets -r0 - 7 .. -r0, in reverse
    const __m256i rev = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    for (int k = 0; k < 8; ++k)
      v[k] =
          _mm256_permutevar8x32_ps(_mm256_loadu_ps(reinterpret_cast<const float*>(src + (c0 + k) * sc - r0 - 7)), rev);
  }
  tile_f32::transpose8(v, t);
  for (int k = 0; k < 8; ++k) _mm256_storeu_ps(reinterpret_cast<float*>(dst + (r0 + k) * C + c0), t[k]);
}

inline void tile4_b64(const uint64_t* src, uint64_t* dst, int64_t r0, int64_t c0, int64_t sr, int64_t sc, int64_t C) {
  __m256d v[4];
  for (int k = 0; k < 4; ++k) {
    if (sr == 1) {
      v[k] = _mm256_loadu_pd(reinterpret_cast<const double*>(src + (c0 + k) * sc + r0));
    } else {
      v[k] =
          _mm256_permute4x64_pd(_mm256_loadu_pd(reinterpret_cast<const double*>(src + (c0 + k) * sc - r0 - 3)), 0x1B);
    }
  }
  const __m256d t0 = _mm256_unpacklo_pd(v[0], v[1]), t1 = _mm256_unpackhi_pd(v[0], v[1]);
  const __m256d t2 = _mm256_unpacklo_pd(v[2], v[3]), t3 = _mm256_unpackhi_pd(v[2], v[3]);
  double* d = reinterpret_cast<double*>(dst);
  _mm256_storeu_pd(d + (r0 + 0) * C + c0, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(d + (r0 + 1) * C + c0, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(d + (r0 + 2) * C + c0, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(d + (r0 + 3) * C + c0, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#endif

// One (r0..r1, c0..c1) block of one plane; tiles of L x L through registers where they fit and pay.
template <class T, int L>
void copy_block(const T* src, T* dst, int64_t r0, int64_t r1, int64_t c0, int64_t c1, int64_t sr, int64_t sc,
                int64_t C) {
#if defined(__AVX2__)
  if ((sr == 1 || sr == -1) && sc != 1) {
    const int64_t rt = r0 + (r1 - r0) / L * L, ct = c0 + (c1 - c0) / L * L;
    for (int64_t c = c0; c < ct; c += L)
      for (int64_t r = r0; r < rt; r += L) {
        if constexpr (L == 8) {
          tile8_b32(src, dst, r, c, sr, sc, C);
        } else {
          tile4_b64(src, dst, r, c, sr, sc, C);
        }
      }
    copy_block_scalar(src, dst, rt, r1, c0, c1, sr, sc, C);  // the rows and columns past the last whole tile
    copy_block_scalar(src, dst, r0, rt, ct, c1, sr, sc, C);
    return;
  }
#endif
  copy_block_scalar(src, dst, r0, r1, c0, c1, sr, sc, C);
}

template <class T, int L>
void transpose_copy_t(const T* src, int64_t B, int64_t R, int64_t C, int64_t sb, int64_t sr, int64_t sc, T* dst) {
  const int64_t rb = (R + kBlock - 1) / kBlock, cb = (C + kBlock - 1) / kBlock;
  parallel_for_work(B * rb, kBlock * C, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / rb, r0 = (t % rb) * kBlock, r1 = r0 + kBlock < R ? r0 + kBlock : R;
      const T* s = src + b * sb;
      T* d = dst + b * R * C;
      for (int64_t j = 0; j < cb; ++j) {
        const int64_t c0 = j * kBlock, c1 = c0 + kBlock < C ? c0 + kBlock : C;
        copy_block<T, L>(s, d, r0, r1, c0, c1, sr, sc, C);
      }
    }
  });
}

template <class T>
void diff_backward_t(const T* g, int64_t outer, int64_t m, int64_t inner, T* out) {
  const T zero = T(0);
  parallel_for_work(outer, (m + 1) * inner, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const T* __restrict gp = g + o * m * inner;
      T* __restrict op = out + o * (m + 1) * inner;
      if (m == 0) {
        for (int64_t i = 0; i < inner; ++i) op[i] = zero;
        continue;
      }
      for (int64_t i = 0; i < inner; ++i) op[i] = zero - gp[i];
      if (inner == 1) {
        for (int64_t k = 1; k < m; ++k) op[k] = (zero + gp[k - 1]) - gp[k];
      } else {
        for (int64_t k = 1; k < m; ++k) {
          const T* lo = gp + (k - 1) * inner;
          const T* hi = gp + k * inner;
          T* o_k = op + k * inner;
          for (int64_t i = 0; i < inner; ++i) o_k[i] = (zero + lo[i]) - hi[i];
        }
      }
      for (int64_t i = 0; i < inner; ++i) op[m * inner + i] = zero + gp[(m - 1) * inner + i];
    }
  });
}

template <class T>
void diff_forward_t(const T* x, int64_t outer, int64_t m, int64_t inner, T* out) {
  parallel_for_work(outer, m * inner, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const T* __restrict xp = x + o * m * inner;
      T* __restrict op = out + o * (m - 1) * inner;
      for (int64_t e = 0; e < (m - 1) * inner; ++e) op[e] = xp[e + inner] - xp[e];
    }
  });
}

template <class T>
void unfold_backward_t(const T* g, int64_t outer, int64_t count, int64_t inner, int64_t size, int64_t step, int64_t n,
                       T* out) {
  parallel_for_work(outer, count * inner * size + n * inner, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      T* __restrict op = out + o * n * inner;
      for (int64_t e = 0; e < n * inner; ++e) op[e] = T(0);
      for (int64_t w = 0; w < count; ++w) {
        const T* __restrict gw = g + (o * count + w) * inner * size;
        T* __restrict base = op + w * step * inner;
        if (inner == 1) {
          for (int64_t j = 0; j < size; ++j) base[j] = base[j] + gw[j];
        } else {
          for (int64_t j = 0; j < size; ++j) {
            T* row = base + j * inner;
            for (int64_t i = 0; i < inner; ++i) row[i] = row[i] + gw[i * size + j];
          }
        }
      }
    }
  });
}

}  // namespace

void transpose_copy_b32(const uint32_t* src, int64_t B, int64_t R, int64_t C, int64_t sb, int64_t sr, int64_t sc,
                        uint32_t* dst) {
  transpose_copy_t<uint32_t, 8>(src, B, R, C, sb, sr, sc, dst);
}

void transpose_copy_b64(const uint64_t* src, int64_t B, int64_t R, int64_t C, int64_t sb, int64_t sr, int64_t sc,
                        uint64_t* dst) {
  transpose_copy_t<uint64_t, 4>(src, B, R, C, sb, sr, sc, dst);
}

void diff_backward_f32(const float* g, int64_t outer, int64_t m, int64_t inner, float* out) {
  diff_backward_t(g, outer, m, inner, out);
}

void diff_backward_f64(const double* g, int64_t outer, int64_t m, int64_t inner, double* out) {
  diff_backward_t(g, outer, m, inner, out);
}

void diff_forward_f32(const float* x, int64_t outer, int64_t m, int64_t inner, float* out) {
  diff_forward_t(x, outer, m, inner, out);
}

void diff_forward_f64(const double* x, int64_t outer, int64_t m, int64_t inner, double* out) {
  diff_forward_t(x, outer, m, inner, out);
}

void unfold_backward_f32(const float* g, int64_t outer, int64_t count, int64_t inner, int64_t size, int64_t step,
                         int64_t n, float* out) {
  unfold_backward_t(g, outer, count, inner, size, step, n, out);
}

void unfold_backward_f64(const double* g, int64_t outer, int64_t count, int64_t inner, int64_t size, int64_t step,
                         int64_t n, double* out) {
  unfold_backward_t(g, outer, count, inner, size, step, n, out);
}

}  // namespace FG_ISA_NS
}  // namespace fg
