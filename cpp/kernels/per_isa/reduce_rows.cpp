// Sums of many short contiguous rows and their backward (declared, with the order of a row's sum, in
// forgegrad/reduce_rows.h). A row is summed by one thread in that fixed order on every path, so results
// are the same on every ISA and at any thread count; threads split the rows.
//
// The float and float64 lanes and a row's chains are in reduce_lanes.h (shared with reduce_axes.cpp).
// With AVX-512 the trees of 8 rows run at once (tree8). Sums over leading axes (sum_lead_f32) reuse a row's
// chains for (A, B, L) with L > 1, and run columns of float64 sums down the rows for L == 1. Sums over
// middle axes (sum_mid_f32, (O, M, I) summed over M) are that L == 1 case per outer index, in the same order.
#include <cstdint>

#include "forgegrad/parallel.h"
#include "forgegrad/reduce_rows.h"
#include "forgegrad/simd.h"
#include "reduce_lanes.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

#if defined(__AVX512F__)
// The trees of 8 rows' lanes v[0..7] at once, the same adds as d8_tree (a transposed reduction): 8 sums in
// row order. Per row a third of the shuffles and adds, and 8 rows divided and stored in one instruction each.
inline __m512d tree8(const D8* v) {
  __m512d h[4], q[2];
  for (int i = 0; i < 4; ++i) {  // h[l] = v[l] + v[l + 4] for rows 2i (lanes 0-3) and 2i + 1 (lanes 4-7)
    const __m512d a = v[2 * i].v, b = v[2 * i + 1].v;
    h[i] = _mm512_add_pd(_mm512_shuffle_f64x2(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f64x2(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int i = 0; i < 2; ++i)  // q[l] = h[l] + h[l + 2] for rows 4i .. 4i + 3, two lanes each
    q[i] = _mm512_add_pd(_mm512_shuffle_f64x2(h[2 * i], h[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f64x2(h[2 * i], h[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  // q[0] + q[1]: rows 0, 4, 1, 5, 2, 6, 3, 7 in lanes 0..7, put back in row order
  const __m512d s = _mm512_add_pd(_mm512_unpacklo_pd(q[0], q[1]), _mm512_unpackhi_pd(q[0], q[1]));
  return _mm512_permutexvar_pd(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), s);
}
#endif

}  // namespace

void sum_rows_f32(const float* x, int64_t R, int64_t L, bool mean, float* y) {
  if (L == 1) {  // each sum is 0.0 + x (exact; -0 turns +0) and a division by 1: x + 0.0f, W rows a step
    parallel_for_work(R, 2, [&](int64_t r0, int64_t r1) {
      int64_t r = r0;
      for (; r + W <= r1; r += W) vstore(y + r, vadd(vload(x + r), vzero()));
      if (r < r1) vstore_n(y + r, vadd(vload_n(x + r, static_cast<int>(r1 - r)), vzero()), static_cast<int>(r1 - r));
    });
    return;
  }
  const double n = static_cast<double>(L);
  parallel_for_work(R, L + 16, [&](int64_t r0, int64_t r1) {
    int64_t r = r0;
#if defined(__AVX512F__)
    for (; r + 8 <= r1; r += 8) {
      D8 v[8];
      for (int i = 0; i < 8; ++i) v[i] = row_lanes(x + (r + i) * L, L);
      __m512d s = _mm512_add_pd(tree8(v), _mm512_setzero_pd());  // -0 as +0 (row_lanes)
      if (mean) s = _mm512_div_pd(s, _mm512_set1_pd(n));
      _mm256_storeu_ps(y + r, _mm512_cvtpd_ps(s));
    }
#endif
    for (; r < r1; ++r) y[r] = row_result(d8_tree(row_lanes(x + r * L, L)), mean, n);
  });
}

namespace {

constexpr int64_t kLeadBlock = 64;    // L == 1: columns per parallel task
constexpr int64_t kLeadCols = 1024;   // L == 1: the float64 sums one pass down the rows carries (8 KB)

// L == 1, columns [b0, b1): s[j] = x[0][j] + x[1][j] + ... in float64 in row order, four rows a pass (the
// same adds as one row a pass, a load and store of s fewer).
void lead_columns(const float* x, int64_t A, int64_t B, int64_t b0, int64_t b1, bool mean, double n, float* y) {
  double s[kLeadCols];
  for (int64_t c = b0; c < b1; c += kLeadCols) {
    const int64_t m = b1 - c < kLeadCols ? b1 - c : kLeadCols;
    const float* __restrict r0 = x + c;
    for (int64_t j = 0; j < m; ++j) s[j] = static_cast<double>(r0[j]);
    int64_t a = 1;
    for (; a + 4 <= A; a += 4) {
      const float* __restrict p0 = x + a * B + c;
      const float* __restrict p1 = p0 + B;
      const float* __restrict p2 = p1 + B;
      const float* __restrict p3 = p2 + B;
      for (int64_t j = 0; j < m; ++j) {
        double t = s[j];
        t += static_cast<double>(p0[j]);
        t += static_cast<double>(p1[j]);
        t += static_cast<double>(p2[j]);
        t += static_cast<double>(p3[j]);
        s[j] = t;
      }
    }
    for (; a < A; ++a) {
      const float* __restrict p = x + a * B + c;
      for (int64_t j = 0; j < m; ++j) s[j] += static_cast<double>(p[j]);
    }
    for (int64_t j = 0; j < m; ++j) y[c + j] = row_result(s[j], mean, n);
  }
}

}  // namespace

void sum_lead_f32(const float* x, int64_t A, int64_t B, int64_t L, bool mean, float* y) {
  const double n = static_cast<double>(A) * static_cast<double>(L);
  if (L == 1) {
    parallel_for_work((B + kLeadBlock - 1) / kLeadBlock, A * kLeadBlock, [&](int64_t k0, int64_t k1) {
      lead_columns(x, A, B, k0 * kLeadBlock, k1 * kLeadBlock < B ? k1 * kLeadBlock : B, mean, n, y);
    });
    return;
  }
  // each row x[a][b][:] gives its chains as sum_rows does; a column's chains add them up in row order
  parallel_for_work(B, A * (L + 16), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      D8 c = row_lanes(x + b * L, L);
      for (int64_t a = 1; a < A; ++a) c = d8_add(c, row_lanes(x + (a * B + b) * L, L));
      y[b] = row_result(d8_tree(c), mean, n);
    }
  });
}

namespace {

// Columns [c0, c1) of one outer index: rows wider than one strip in row passes, others in a strip of kMidGroups
// groups of 8 (it then reads the rows in order) or single groups.
void mid_columns(const float* x, int64_t M, int64_t I, int64_t c0, int64_t c1, bool mean, double n, float* y) {
  const StridedRows rows{M, I};  // each column's chain x[0][c] + x[1][c] + ... in row order (sum_lead's L == 1)
  if (I > 8 * kMidGroups) {
    for (int64_t c = c0; c < c1; c += kPassCols)
      column_passes(x, rows, c, c1 - c < kPassCols ? c1 : c + kPassCols, mean, n, y);
    return;
  }
  int64_t c = c0;
  for (; c + 8 * kMidGroups <= c1; c += 8 * kMidGroups) column_strip<kMidGroups>(x, rows, c, 8, mean, n, y);
  for (; c < c1; c += 8) column_strip<1>(x, rows, c, lanes_left(c1 - c), mean, n, y);
}

}  // namespace

void sum_mid_f32(const float* x, int64_t O, int64_t M, int64_t I, bool mean, float* y) {
  // per outer index the leading-axes problem with L == 1: (M, I) rows, a column's chain down them in row order.
  // A task is a block of kLeadBlock columns of one outer index; a range of tasks may span outer indices.
  const double n = static_cast<double>(M);
  const int64_t nb = (I + kLeadBlock - 1) / kLeadBlock;
  parallel_for_work(O * nb, M * kLeadBlock, [&](int64_t t0, int64_t t1) {
    for (int64_t o = t0 / nb; o * nb < t1; ++o) {
      const int64_t c0 = t0 > o * nb ? (t0 - o * nb) * kLeadBlock : 0;
      const int64_t c1 = t1 < (o + 1) * nb ? (t1 - o * nb) * kLeadBlock : I;
      mid_columns(x + o * M * I, M, I, c0, c1 < I ? c1 : I, mean, n, y + o * I);
    }
  });
}

void fill_rows_f32(const float* g, int64_t R, int64_t L, float divisor, float* gx) {
  if (L == 1) {
    parallel_for_work(R, 2, [&](int64_t r0, int64_t r1) {
      const vf d = vset1(divisor);
      int64_t r = r0;
      for (; r + W <= r1; r += W) vstore(gx + r, vdiv(vload(g + r), d));
      if (r < r1) vstore_n(gx + r, vdiv(vload_n(g + r, static_cast<int>(r1 - r)), d), static_cast<int>(r1 - r));
    });
    return;
  }
  parallel_for_work(R, L + 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const vf v = vset1(g[r] / divisor);
      float* d = gx + r * L;
      int64_t k = 0;
      for (; k + W <= L; k += W) vstore(d + k, v);
      if (k < L) vstore_n(d + k, v, static_cast<int>(L - k));
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
