// Sums / means of float32 over any set of axes of a strided layout (sum_axes_f32, declared with its order in
// forgegrad/reduce_rows.h): x.sum((1, 3)) of a 4-D tensor, x.sum((0, 2, 4)) of a 5-D one, sums of sliced views.
//
// The layout is first put in its simplest form: axes of size 1 dropped, and neighbours of one kind (both reduced
// or both kept) that are contiguous with each other merged into one. That leaves alternating kept / reduced blocks,
// (K0, R0, K1, R1, ...), and one of two loops:
//   innermost block reduced (rows of L contiguous values): per output, the 8 float64 chains of each of its rows
//     (row_lanes, reduce_lanes.h) added up over the rows; threads split the outputs;
//   innermost block kept (I contiguous outputs): per block of columns, one float64 chain per column down the
//     reduced rows, in registers (strips of up to 64 columns) or, for wider blocks, in an L1 buffer; threads split
//     blocks of columns of the outer outputs (sum_mid_f32's loop, its rows here any set of strided offsets).
// Merging changes no bit: a kept block's chain takes its values in the same lexicographic order either way, and a
// reduced run's rows are the maximal contiguous ones the order names.
#include <cstdint>

#include "forgegrad/parallel.h"
#include "forgegrad/reduce_rows.h"
#include "reduce_lanes.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

constexpr int kMaxDims = kSumAxesMaxDims;

// A set of axes (size, stride in elements), outer to inner: the offsets of their index tuples in lexicographic
// order.
struct Axes {
  int n = 0;
  int64_t size[kMaxDims], stride[kMaxDims];

  void add(int64_t s, int64_t st) {
    size[n] = s;
    stride[n] = st;
    ++n;
  }
  int64_t count() const {
    int64_t c = 1;
    for (int k = 0; k < n; ++k) c *= size[k];
    return c;
  }
  // The offset of tuple number t.
  int64_t offset(int64_t t) const {
    int64_t off = 0;
    for (int k = n - 1; k >= 0; --k) {
      off += (t % size[k]) * stride[k];
      t /= size[k];
    }
    return off;
  }
  // f(offset) for every tuple in order; the innermost axis as a plain loop.
  template <class F>
  void each(F&& f) const {
    if (n == 0) {
      f(int64_t{0});
      return;
    }
    const int64_t in = size[n - 1], is = stride[n - 1];
    int64_t idx[kMaxDims] = {};
    int64_t off = 0;
    for (;;) {
      int64_t o = off;
      for (int64_t i = 0; i < in; ++i, o += is) f(o);
      int k = n - 2;
      for (; k >= 0; --k) {
        off += stride[k];
        if (++idx[k] < size[k]) break;
        off -= stride[k] * size[k];
        idx[k] = 0;
      }
      if (k < 0) return;
    }
  }
};

// Walks the tuples of an Axes from a given one on: off the current tuple's offset.
struct Cursor {
  const Axes& a;
  int64_t idx[kMaxDims] = {};
  int64_t off = 0;
  Cursor(const Axes& axes, int64_t t) : a(axes) {
    for (int k = a.n - 1; k >= 0; --k) {
      idx[k] = t % a.size[k];
      off += idx[k] * a.stride[k];
      t /= a.size[k];
    }
  }
  void next() {
    for (int k = a.n - 1; k >= 0; --k) {
      off += a.stride[k];
      if (++idx[k] < a.size[k]) return;
      off -= a.stride[k] * a.size[k];
      idx[k] = 0;
    }
  }
};

// Innermost block reduced, rows of L: y[o] for the outputs [o0, o1) of `kept`, each the tree of its rows' chains.
void rows_outputs(const float* x, const Axes& kept, const Axes& rows, int64_t L, int64_t o0, int64_t o1, bool mean,
                  double n, float* y) {
  Cursor c(kept, o0);
  for (int64_t o = o0; o < o1; ++o, c.next()) {
    const float* p = x + c.off;
    D8 acc = d8_zero();
    rows.each([&](int64_t off) { acc = d8_add(acc, row_lanes(p + off, L)); });
    y[o] = row_result(d8_tree(acc), mean, n);
  }
}

// Columns [c0, c1) of the outputs at x (a row of I): wide rows in row passes, others in one strip of as many
// groups of 8 as the columns need (all of a row of <= 8 * kMidGroups columns read in one walk down the rows).
void columns(const float* x, const Axes& rows, int64_t I, int64_t c0, int64_t c1, bool mean, double n, float* y) {
  if (I > 8 * kMidGroups) {
    for (int64_t c = c0; c < c1; c += kPassCols)
      column_passes(x, rows, c, c1 - c < kPassCols ? c1 : c + kPassCols, mean, n, y);
    return;
  }
  const int64_t groups = (c1 - c0 + 7) / 8;
  const int last = lanes_left(c1 - c0 - 8 * (groups - 1));
  switch (groups) {
    case 1: return column_strip<1>(x, rows, c0, last, mean, n, y);
    case 2: return column_strip<2>(x, rows, c0, last, mean, n, y);
    case 3: return column_strip<3>(x, rows, c0, last, mean, n, y);
    case 4: return column_strip<4>(x, rows, c0, last, mean, n, y);
#if defined(__AVX512F__)
    case 5: return column_strip<5>(x, rows, c0, last, mean, n, y);
    case 6: return column_strip<6>(x, rows, c0, last, mean, n, y);
    case 7: return column_strip<7>(x, rows, c0, last, mean, n, y);
    case 8: return column_strip<8>(x, rows, c0, last, mean, n, y);
#endif
    default: return;  // (groups <= kMidGroups: I <= 8 * kMidGroups)
  }
}

constexpr int64_t kColBlock = 64;  // innermost block kept: columns per parallel task

}  // namespace

void sum_axes_f32(const float* x, int nd, const int64_t* shape, const int64_t* stride, const bool* reduced, bool mean,
                  float* y) {
  // the simplest form: size-1 axes dropped, contiguous neighbours of one kind merged (outer to inner)
  int m = 0;
  int64_t sz[kMaxDims], st[kMaxDims];
  bool red[kMaxDims];
  double n = 1.0;
  for (int k = 0; k < nd; ++k) {
    if (reduced[k]) n *= static_cast<double>(shape[k]);
    if (shape[k] == 1) continue;
    if (m > 0 && red[m - 1] == reduced[k] && st[m - 1] == shape[k] * stride[k]) {
      sz[m - 1] *= shape[k];
      st[m - 1] = stride[k];
      continue;
    }
    sz[m] = shape[k];
    st[m] = stride[k];
    red[m] = reduced[k];
    ++m;
  }
  if (m == 0 || !red[m - 1]) {  // innermost block kept (a single value: one kept column)
    const int64_t I = m == 0 ? 1 : sz[m - 1];
    Axes outer, rows;
    for (int k = 0; k + 1 < m; ++k) (red[k] ? rows : outer).add(sz[k], st[k]);
    const int64_t O = outer.count(), M = rows.count(), nb = (I + kColBlock - 1) / kColBlock;
    parallel_for_work(O * nb, M * kColBlock, [&](int64_t t0, int64_t t1) {
      for (int64_t o = t0 / nb; o * nb < t1; ++o) {
        const int64_t c0 = t0 > o * nb ? (t0 - o * nb) * kColBlock : 0;
        const int64_t c1 = t1 < (o + 1) * nb ? (t1 - o * nb) * kColBlock : I;
        columns(x + outer.offset(o), rows, I, c0, c1 < I ? c1 : I, mean, n, y + o * I);
      }
    });
    return;
  }
  // innermost block reduced: its rows of L, the other reduced blocks the rows of an output
  const int64_t L = sz[m - 1];
  Axes kept, rows;
  for (int k = 0; k + 1 < m; ++k) (red[k] ? rows : kept).add(sz[k], st[k]);
  const int64_t M = rows.count();
  parallel_for_work(kept.count(), M * (L + 16),
                    [&](int64_t o0, int64_t o1) { rows_outputs(x, kept, rows, L, o0, o1, mean, n, y); });
}

}  // namespace FG_ISA_NS
}  // namespace fg
