// CSR @ CSR (SpGEMM), Gustavson row by row: see forgegrad/spgemm.h for the contract. Compiled once, not per ISA:
// the work is index chasing (gathers and scatters into the accumulator), which the vector units do not speed up;
// -ffp-contract=off (CMakeLists.txt) keeps a*b + acc two roundings on every target.
//
// A task (a block of rows) accumulates a row either in a dense array of N doubles with a bitmap of the columns the
// row has hit (N bits: it stays in L1 where an int64 marker would not, and scanning it lists the row's columns in
// order, cheaper than sorting them when the row is not very sparse), or, when N is large next to the task's
// products, in an open-addressing hash sized to the row's products. Either sums each column's products in
// product order from +0.0, so the choice (which depends on the task cut, hence on the thread count) never
// changes a bit.
#include "forgegrad/spgemm.h"

#include <algorithm>
#include <stdexcept>

#include "forgegrad/parallel.h"

namespace fg {

namespace {

// Columns above which a dense accumulator (16 bytes a column per task) is never used; below it, a task uses one
// while N is at most kDenseColsPerProduct times its products (the O(N) setup stays below the product work).
constexpr int64_t kDenseMaxCols = int64_t(1) << 21;
constexpr int64_t kDenseColsPerProduct = 8;
constexpr int64_t kDenseMinCols = 4096;
// A row of c distinct columns is emitted by scanning the bitmap (N / 64 words) when that is at most
// kScanWordsPerColumn * c, else by sorting its columns (O(c log c)).
constexpr int64_t kScanWordsPerColumn = 8;
// Rows of at least this many columns per bitmap word are listed by ColumnBitmap::take_columns, sparser ones by
// take_columns_sparse.
constexpr int64_t kBusyWordBits = 3;
// About what one product costs in threads_for's units (multiply-adds): a gather, a scatter and a branch.
constexpr int64_t kWorkPerProduct = 16;
constexpr int64_t kTasksPerThread = 8;

// Marks the columns one row of C hits: one bit each.
struct ColumnBitmap {
  std::vector<uint64_t> words;
  explicit ColumnBitmap(int64_t n) : words(static_cast<size_t>((n + 63) / 64), 0) {}
  // Sets column j's bit; true when it was clear (the row's first product in column j).
  bool first_hit(int64_t j) {
    uint64_t& w = words[static_cast<size_t>(j >> 6)];
    const uint64_t bit = uint64_t(1) << (j & 63);
    const bool first = (w & bit) == 0;
    w |= bit;
    return first;
  }
  void set(int64_t j) { words[static_cast<size_t>(j >> 6)] |= uint64_t(1) << (j & 63); }
  int64_t nwords() const { return static_cast<int64_t>(words.size()); }
  bool scan_beats_sort(int64_t cnt) const { return nwords() <= kScanWordsPerColumn * cnt; }
  // Writes the set columns in order to cols and clears the bitmap; returns how many. For rows of several
  // columns a word: the inner loop's trip count is long enough for its exit to be the only miss.
  int64_t take_columns(int64_t* cols) {
    int64_t q = 0;
    for (int64_t w = 0; w < nwords(); ++w) {
      for (uint64_t bits = words[static_cast<size_t>(w)]; bits != 0; bits &= bits - 1)
        cols[q++] = w * 64 + __builtin_ctzll(bits);
      words[static_cast<size_t>(w)] = 0;
    }
    return q;
  }
  // The same for rows of about one column a word or fewer, where that loop's exit is a branch miss per word
  // (at 10000^2 @ 10000^2, 0.1 %, those misses were most of the numeric pass): two unconditional steps a word (a step
  // past the last bit stores a column that the next store overwrites: cols needs 2 slots of slack), a loop only for the
  // rare third bit.
  int64_t take_columns_sparse(int64_t* cols) {
    int64_t q = 0;
    for (int64_t w = 0; w < nwords(); ++w) {
      uint64_t bits = words[static_cast<size_t>(w)];
      words[static_cast<size_t>(w)] = 0;
      const int64_t base = w * 64;
      for (int step = 0; step < 2; ++step) {
        cols[q] = base + __builtin_ctzll(bits | (uint64_t(1) << 63));
        q += bits != 0;
        bits &= bits - 1;
      }
      for (; bits != 0; bits &= bits - 1) cols[q++] = base + __builtin_ctzll(bits);
    }
    return q;
  }
  // Clears the row's bits: the whole bitmap or the words of its columns, whichever is fewer stores.
  void clear(const int64_t* cols, int64_t cnt) {
    if (nwords() <= cnt)
      std::fill(words.begin(), words.end(), uint64_t(0));
    else
      for (int64_t p = 0; p < cnt; ++p) words[static_cast<size_t>(cols[p] >> 6)] = 0;
  }
};

bool use_dense(const SpgemmPlan& plan, int64_t r0, int64_t r1, int64_t n) {
  const int64_t p = plan.products[r1] - plan.products[r0];
  return n <= kDenseMaxCols && (n <= kDenseMinCols || n / kDenseColsPerProduct <= p);
}

// Open addressing with linear probing over a power-of-two table of column indices (-1: empty), sized to at
// least twice the row's distinct columns (so at most half full).
struct ColumnHash {
  std::vector<int64_t> keys;
  std::vector<double> vals;
  uint64_t mask = 0;
  int shift = 0;

  // Empties a table of at least 2 * bound slots (and at least 16) for a row of at most `bound` distinct columns.
  void reset(int64_t bound, bool with_values) {
    int bits = 4;
    while ((int64_t(1) << bits) < 2 * bound) ++bits;
    const size_t size = size_t(1) << bits;
    if (keys.size() < size) keys.resize(size);
    if (with_values && vals.size() < size) vals.resize(size);
    std::fill(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(size), int64_t(-1));
    mask = size - 1;
    shift = 64 - bits;
  }
  // The slot of column j: its own, or the empty one where it goes.
  size_t slot(int64_t j) const {
    size_t h = static_cast<size_t>((static_cast<uint64_t>(j) * 0x9E3779B97F4A7C15ull) >> shift);
    while (keys[h] != j && keys[h] != -1) h = (h + 1) & mask;
    return h;
  }
};

int64_t row_products(const SpgemmPlan& plan, int64_t i) { return plan.products[i + 1] - plan.products[i]; }

template <class F>
void for_each_task(const SpgemmPlan& plan, F&& f) {
  const int64_t ntasks = static_cast<int64_t>(plan.task_start.size()) - 1;
  const int64_t total = plan.products.back();
  const int64_t work = ntasks > 0 ? (total / ntasks + 1) * kWorkPerProduct : 0;
  parallel_tasks(ntasks, work, [&](int64_t t) {
    const int64_t r0 = plan.task_start[t], r1 = plan.task_start[t + 1];
    if (r0 < r1) f(r0, r1);
  });
}

// Starts loading the row of B that A's nonzero p multiplies (a random row: the main cache miss of the loop).
inline void prefetch_b_row(const CsrPattern& a, const CsrPattern& b, const void* b_val, size_t val_size, int64_t p,
                           int64_t a_nnz) {
  if (p >= a_nnz) return;
  const int64_t r = b.crow[a.col[p]];
  __builtin_prefetch(b.col + r);
  if (b_val != nullptr) __builtin_prefetch(static_cast<const char*>(b_val) + static_cast<size_t>(r) * val_size);
}
constexpr int64_t kPrefetchAhead = 4;  // nonzeros of A

// Row i of C into acc (+0.0 where untouched, left so) and the bitmap; list: also write each column's first hit
// to cols (for a row that is sorted rather than scanned; cols needs one slot of slack beyond the row's columns).
// acc[j] + prod from +0.0 is the first product's 0.0 + prod.
template <class T, bool list>
inline void accumulate_row(const CsrPattern& a, const T* a_val, const CsrPattern& b, const T* b_val, int64_t i,
                           ColumnBitmap& seen, double* acc, int64_t* cols) {
  const int64_t a_nnz = a.crow[a.rows];
  for (int64_t p = a.crow[i]; p < a.crow[i + 1]; ++p) {
    prefetch_b_row(a, b, b_val, sizeof(T), p + kPrefetchAhead, a_nnz);
    const int64_t k = a.col[p];
    const T av = a_val[p];
    for (int64_t r = b.crow[k]; r < b.crow[k + 1]; ++r) {
      const int64_t j = b.col[r];
      const T prod = av * b_val[r];
      acc[j] += static_cast<double>(prod);
      if (list) {
        *cols = j;  // kept when it is the row's first hit of j (no branch to miss)
        cols += seen.first_hit(j);
      } else {
        seen.set(j);
      }
    }
  }
}

template <class T>
void numeric_rows(const SpgemmPlan& plan, const CsrPattern& a, const T* a_val, const CsrPattern& b, const T* b_val,
                  const int64_t* out_crow, int64_t* out_col, T* out_val, int64_t r0, int64_t r1) {
  const int64_t n = b.cols;
  if (use_dense(plan, r0, r1, n)) {
    ColumnBitmap seen(n);
    std::vector<double> acc(static_cast<size_t>(n), 0.0);  // back to +0.0 after each row
    std::vector<int64_t> order(static_cast<size_t>(n) + 2);  // a row's columns in order (2 slots of slack)
    for (int64_t i = r0; i < r1; ++i) {
      const int64_t start = out_crow[i], cnt = out_crow[i + 1] - start;
      if (seen.scan_beats_sort(cnt)) {  // the set bits, word by word: the columns in order (and cleared)
        accumulate_row<T, false>(a, a_val, b, b_val, i, seen, acc.data(), nullptr);
        const int64_t got = cnt >= seen.nwords() * kBusyWordBits ? seen.take_columns(order.data())
                                                                 : seen.take_columns_sparse(order.data());
        // got == cnt unless another thread rewrote the inputs between the passes (the GIL is released): never
        // more than the row's slots written then
        const int64_t kept = std::min(got, cnt);
        for (int64_t p = 0; p < kept; ++p) {
          const int64_t j = order[static_cast<size_t>(p)];
          out_col[start + p] = j;
          out_val[start + p] = static_cast<T>(acc[j]);
          acc[j] = 0.0;
        }
        for (int64_t p = kept; p < got; ++p) acc[order[static_cast<size_t>(p)]] = 0.0;
      } else {
        // listed in order (not in out_col: the list's slack slot would be the next row's, maybe another task's)
        accumulate_row<T, true>(a, a_val, b, b_val, i, seen, acc.data(), order.data());
        std::sort(order.begin(), order.begin() + cnt);
        for (int64_t p = 0; p < cnt; ++p) {
          const int64_t j = order[static_cast<size_t>(p)];
          out_col[start + p] = j;
          out_val[start + p] = static_cast<T>(acc[j]);
          acc[j] = 0.0;
        }
        seen.clear(order.data(), cnt);
      }
    }
    return;
  }
  ColumnHash hash;
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t start = out_crow[i], cnt = out_crow[i + 1] - start;
    if (cnt == 0) continue;
    hash.reset(cnt, true);
    int64_t q = start;
    for (int64_t p = a.crow[i]; p < a.crow[i + 1]; ++p) {
      const int64_t k = a.col[p];
      const T av = a_val[p];
      for (int64_t r = b.crow[k]; r < b.crow[k + 1]; ++r) {
        const int64_t j = b.col[r];
        const T prod = av * b_val[r];
        const size_t h = hash.slot(j);
        if (hash.keys[h] != j) {
          if (q == start + cnt) continue;  // only if the inputs changed since the symbolic pass: stay in the row
          hash.keys[h] = j;
          hash.vals[h] = 0.0 + static_cast<double>(prod);
          out_col[q++] = j;
        } else {
          hash.vals[h] += static_cast<double>(prod);
        }
      }
    }
    std::sort(out_col + start, out_col + q);
    for (int64_t p = start; p < q; ++p) out_val[p] = static_cast<T>(hash.vals[hash.slot(out_col[p])]);
  }
}

}  // namespace

SpgemmPlan spgemm_plan(const CsrPattern& a, const CsrPattern& b) {
  const int64_t m = a.rows;
  SpgemmPlan plan;
  plan.products.resize(static_cast<size_t>(m + 1));
  int64_t total = 0;
  plan.products[0] = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t p = a.crow[i]; p < a.crow[i + 1]; ++p) {
      const int64_t k = a.col[p];
      if (__builtin_add_overflow(total, b.crow[k + 1] - b.crow[k], &total))
        throw std::overflow_error("spgemm: the number of products a_ik * b_kj exceeds int64");
    }
    plan.products[static_cast<size_t>(i + 1)] = total;
  }
  // Tasks of about equal products (a row is never split). The cut only moves work between threads.
  const int nt = threads_for(region_work(total, kWorkPerProduct));
  const int64_t ntasks = nt <= 1 || m <= 1 ? 1 : std::min<int64_t>(m, int64_t(nt) * kTasksPerThread);
  plan.task_start.resize(static_cast<size_t>(ntasks + 1));
  plan.task_start[0] = 0;
  for (int64_t t = 1; t < ntasks; ++t) {
    const int64_t target = static_cast<int64_t>(static_cast<__int128>(total) * t / ntasks);
    const int64_t row = std::lower_bound(plan.products.begin(), plan.products.end(), target) - plan.products.begin();
    plan.task_start[static_cast<size_t>(t)] = std::max(plan.task_start[static_cast<size_t>(t - 1)], std::min(row, m));
  }
  plan.task_start[static_cast<size_t>(ntasks)] = m;
  return plan;
}

int64_t spgemm_symbolic(const SpgemmPlan& plan, const CsrPattern& a, const CsrPattern& b, int64_t* out_crow) {
  const int64_t m = a.rows, n = b.cols, a_nnz = a.crow[m];
  // out_crow[i + 1] = the distinct columns of row i, then a prefix sum
  for_each_task(plan, [&](int64_t r0, int64_t r1) {
    if (use_dense(plan, r0, r1, n)) {
      ColumnBitmap seen(n);
      std::vector<int64_t> cols(static_cast<size_t>(n) + 1);  // the row's columns, to clear their bits (+ slack)
      for (int64_t i = r0; i < r1; ++i) {
        int64_t cnt = 0;
        for (int64_t p = a.crow[i]; p < a.crow[i + 1]; ++p) {
          prefetch_b_row(a, b, nullptr, 0, p + kPrefetchAhead, a_nnz);
          const int64_t k = a.col[p];
          for (int64_t r = b.crow[k]; r < b.crow[k + 1]; ++r) {
            const int64_t j = b.col[r];
            cols[static_cast<size_t>(cnt)] = j;  // kept when it is the row's first hit of j (no branch to miss)
            cnt += seen.first_hit(j);
          }
        }
        seen.clear(cols.data(), cnt);
        out_crow[i + 1] = cnt;
      }
      return;
    }
    ColumnHash hash;
    for (int64_t i = r0; i < r1; ++i) {
      const int64_t bound = std::min(row_products(plan, i), n);
      int64_t cnt = 0;
      if (bound > 0) {
        hash.reset(bound, false);
        for (int64_t p = a.crow[i]; p < a.crow[i + 1]; ++p) {
          const int64_t k = a.col[p];
          for (int64_t r = b.crow[k]; r < b.crow[k + 1]; ++r) {
            const int64_t j = b.col[r];
            const size_t h = hash.slot(j);
            if (hash.keys[h] != j) {
              hash.keys[h] = j;
              ++cnt;
            }
          }
        }
      }
      out_crow[i + 1] = cnt;
    }
  });
  out_crow[0] = 0;
  for (int64_t i = 0; i < m; ++i) out_crow[i + 1] += out_crow[i];
  return out_crow[m];
}

template <class T>
void spgemm_numeric(const SpgemmPlan& plan, const CsrPattern& a, const T* a_val, const CsrPattern& b, const T* b_val,
                    const int64_t* out_crow, int64_t* out_col, T* out_val) {
  for_each_task(plan, [&](int64_t r0, int64_t r1) {
    numeric_rows(plan, a, a_val, b, b_val, out_crow, out_col, out_val, r0, r1);
  });
}

template void spgemm_numeric<float>(const SpgemmPlan&, const CsrPattern&, const float*, const CsrPattern&, const float*,
                                    const int64_t*, int64_t*, float*);
template void spgemm_numeric<double>(const SpgemmPlan&, const CsrPattern&, const double*, const CsrPattern&,
                                     const double*, const int64_t*, int64_t*, double*);

}  // namespace fg
