// Top-k and sort of float32 rows (rows, n), C-contiguous, along the last axis: forgegrad.topk / sort / argsort /
// kthvalue (python/forgegrad/_torch_indexing.py) and generation's top-k filter (models/hf/sampling.py).
//
// Order (the numpy path's, _sort_indices / _topk_indices): NaN is the largest value (first when largest /
// descending, last when smallest / ascending), -0.0 equals 0.0, and equal values keep their index order (the
// lower index first), so a row's result is the first k of a stable sort. Each element becomes a 64-bit key,
//   (order key of the value) << 32 | (0xFFFFFFFF - index),
// distinct within a row, and the k largest keys, largest first, are the answer. Ties are thereby decided by
// the key alone, never by the path that found them: any selection gives the same indices.
//
// Paths per row:
// - short rows (n < kRadixMin): all keys, nth_element + sort.
// - k small next to n (n >= kPrefilterRatio * k, e.g. top-50 of a vocabulary): a threshold prefilter. The
//   first k keys fill a buffer; the current k-th best value is the threshold, and a vector compare against it
//   skips every block of the row that holds nothing better (on typical logits, almost all of them). The few
//   that pass are appended; when the buffer is full it is cut back to its k best (nth_element), which raises
//   the threshold. At the end the buffer's k best are sorted.
// - else (a larger k, a full sort): radix selection. A histogram of the keys' top 11 bits finds the bin of
//   the k-th best; that bin and the better ones are gathered and sorted by a stable LSD radix sort.
//
// Threads: rows only; each row's work is one thread's, so the results do not depend on the thread count.
// Only bind_topk.cpp calls these kernels; their FG_KERNEL declarations live there.
#include <algorithm>
#include <cstring>

#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

constexpr int64_t kRadixMin = 256;  // shorter rows: all keys selected and sorted by comparisons
// The prefilter's cost grows with k / n (the values that pass, the buffer's cuts), the radix selection's with n
// alone: measured on random logits, they cross near n = 128 k (n = 4096 and 32000).
constexpr int64_t kPrefilterRatio = 128;

// The comparator is a type of this namespace, so the std algorithms below are instantiated once per ISA
// (simd.h's rule: no std template on shared types only).
struct Greater {
  bool operator()(uint64_t a, uint64_t b) const { return a > b; }
};

inline uint32_t float_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

// An unsigned key increasing with the value: NaN (any sign or payload) the largest, -0.0 == 0.0.
inline uint32_t order_key(float v) {
  uint32_t b = float_bits(v);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return 0xFFFFFFFFu;
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The key whose largest is the best: the value's (largest) or its complement's (smallest; NaN then the worst).
inline uint64_t rank_key(float v, int64_t i, bool largest) {
  const uint32_t u = order_key(v);
  const uint32_t r = largest ? u : (u == 0xFFFFFFFFu ? 0u : ~u);
  return (static_cast<uint64_t>(r) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(i));
}

inline int64_t key_index(uint64_t key) { return static_cast<int64_t>(0xFFFFFFFFu - static_cast<uint32_t>(key)); }

// Buffers of one thread's rows, grown as needed (AlignedBuffer counts floats: two per key).
struct Scratch {
  AlignedBuffer a, b, c;
  static uint64_t* get(AlignedBuffer& buf, int64_t n) {
    if (buf.size() < static_cast<std::size_t>(2 * n)) buf.reset(static_cast<std::size_t>(2 * n));
    return reinterpret_cast<uint64_t*>(buf.data());
  }
};

void write_out(const float* row, const uint64_t* keys, int64_t k, float* vals, int64_t* idx) {
  for (int64_t j = 0; j < k; ++j) {
    const int64_t i = key_index(keys[j]);
    idx[j] = i;
    vals[j] = row[i];
  }
}

// The sort key of a value: increasing from the best (the rank key's upper half, complemented).
inline uint32_t ascend_key(float v, bool largest) {
  const uint32_t u = order_key(v);
  return largest ? ~u : u;
}

// The k best of the row, best first, by radix: the 32-bit sort keys (best first = ascending), a histogram of their
// top 11 bits finds the bin of the k-th best, the elements of that bin and the better ones are gathered in index
// order, and a stable LSD radix sort (bytes) orders them: equal keys stay in index order, the ties' order.
void radix_select_row(const float* row, int64_t n, int64_t k, bool largest, Scratch& s, float* vals, int64_t* idx) {
  uint32_t* key = reinterpret_cast<uint32_t*>(Scratch::get(s.c, (n + 1) / 2));
  for (int64_t i = 0; i < n; ++i) key[i] = ascend_key(row[i], largest);
  uint32_t top[2048];
  std::memset(top, 0, sizeof top);
  for (int64_t i = 0; i < n; ++i) ++top[key[i] >> 21];
  int64_t count = 0;
  uint32_t bin = 0;
  for (;; ++bin) {
    count += top[bin];
    if (count >= k) break;
  }
  uint64_t* a = Scratch::get(s.a, count + 1);
  uint64_t* b = Scratch::get(s.b, count + 1);
  uint32_t hist[4][256];
  std::memset(hist, 0, sizeof hist);
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t r = key[i];
    a[m] = (static_cast<uint64_t>(r) << 32) | static_cast<uint64_t>(i);
    m += (r >> 21) <= bin;  // no branch: the bin test is unpredictable near the k-th value
  }
  for (int64_t j = 0; j < m; ++j) {
    const uint32_t r = static_cast<uint32_t>(a[j] >> 32);
    ++hist[0][r & 255u];
    ++hist[1][(r >> 8) & 255u];
    ++hist[2][(r >> 16) & 255u];
    ++hist[3][r >> 24];
  }
  for (int pass = 0; pass < 4; ++pass) {
    uint32_t* h = hist[pass];
    const int shift = 32 + 8 * pass;
    if (h[(a[0] >> shift) & 255u] == static_cast<uint32_t>(m)) continue;  // one bucket: the pass moves nothing
    uint32_t sum = 0;
    for (int d = 0; d < 256; ++d) {
      const uint32_t c = h[d];
      h[d] = sum;
      sum += c;
    }
    for (int64_t j = 0; j < m; ++j) b[h[(a[j] >> shift) & 255u]++] = a[j];
    uint64_t* const t = a;
    a = b;
    b = t;
  }
  for (int64_t j = 0; j < k; ++j) {
    const int64_t i = static_cast<int64_t>(static_cast<uint32_t>(a[j]));
    idx[j] = i;
    vals[j] = row[i];
  }
}

// The k best of m keys in buf, best first (k <= m).
void select_sorted(uint64_t* buf, int64_t m, int64_t k) {
  if (k < m) std::nth_element(buf, buf + (k - 1), buf + m, Greater());
  std::sort(buf, buf + k, Greater());
}

// Which values pass the prefilter against the threshold t (the current k-th best value).
enum class Pass { kGreaterOrNan, kLess, kNotNan };

#if defined(__AVX512F__)
inline uint32_t pass_mask(const float* p, __m512 t, Pass mode) {
  const __m512 v = _mm512_loadu_ps(p);
  if (mode == Pass::kGreaterOrNan) return _mm512_cmp_ps_mask(v, t, _CMP_NLE_UQ);
  if (mode == Pass::kLess) return _mm512_cmp_ps_mask(v, t, _CMP_LT_OQ);
  return _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
}
#elif defined(__AVX2__)
inline uint32_t pass_mask(const float* p, __m256 t, Pass mode) {
  const __m256 v = _mm256_loadu_ps(p);
  __m256 m;
  if (mode == Pass::kGreaterOrNan)
    m = _mm256_cmp_ps(v, t, _CMP_NLE_UQ);
  else if (mode == Pass::kLess)
    m = _mm256_cmp_ps(v, t, _CMP_LT_OQ);
  else
    m = _mm256_cmp_ps(v, v, _CMP_ORD_Q);
  return static_cast<uint32_t>(_mm256_movemask_ps(m));
}
#endif

inline bool passes(float v, float t, Pass mode) {
  if (mode == Pass::kGreaterOrNan) return !(v <= t);
  if (mode == Pass::kLess) return v < t;
  return v == v;
}

// The prefilter path (k < n): see the file comment.
void prefilter_row(const float* row, int64_t n, int64_t k, bool largest, Scratch& s, float* vals, int64_t* idx) {
  const int64_t cap = k + (k > 128 ? k : 128);
  uint64_t* buf = Scratch::get(s.a, cap);
  int64_t m = 0;
  for (int64_t i = 0; i < k; ++i) buf[m++] = rank_key(row[i], i, largest);
  uint64_t worst = buf[0];
  for (int64_t j = 1; j < k; ++j) worst = buf[j] < worst ? buf[j] : worst;

  float t = 0.0f;
  Pass mode = Pass::kLess;
  bool done = false;
  // From the k-th best key so far: the threshold and the compare that passes exactly the values better than it
  // (a later equal value has a higher index: it loses). A NaN k-th best when largest: nothing later can win.
  auto set_threshold = [&](uint64_t kth) {
    t = row[key_index(kth)];
    if (t != t) {
      if (largest) done = true;
      mode = Pass::kNotNan;
    } else {
      mode = largest ? Pass::kGreaterOrNan : Pass::kLess;
    }
  };
  set_threshold(worst);
  auto add = [&](int64_t i) {
    buf[m++] = rank_key(row[i], i, largest);
    if (m == cap) {
      std::nth_element(buf, buf + (k - 1), buf + m, Greater());
      m = k;
      set_threshold(buf[k - 1]);
    }
  };

  int64_t i = k;
#if defined(__AVX512F__) || defined(__AVX2__)
#if defined(__AVX512F__)
  constexpr int64_t L = 16;
  auto vt = [&] { return _mm512_set1_ps(t); };
#else
  constexpr int64_t L = 8;
  auto vt = [&] { return _mm256_set1_ps(t); };
#endif
  auto tv = vt();
  while (!done && i + 4 * L <= n) {
    const float* p = row + i;
    const uint32_t m0 = pass_mask(p, tv, mode), m1 = pass_mask(p + L, tv, mode);
    const uint32_t m2 = pass_mask(p + 2 * L, tv, mode), m3 = pass_mask(p + 3 * L, tv, mode);
    if ((m0 | m1 | m2 | m3) != 0) {
      const uint32_t masks[4] = {m0, m1, m2, m3};
      for (int q = 0; q < 4; ++q)
        for (uint32_t bits = masks[q]; bits != 0; bits &= bits - 1) add(i + q * L + __builtin_ctz(bits));
      tv = vt();
    }
    i += 4 * L;
  }
#endif
  for (; !done && i < n; ++i)
    if (passes(row[i], t, mode)) add(i);
  select_sorted(buf, m, k);
  write_out(row, buf, k, vals, idx);
}

void topk_row(const float* row, int64_t n, int64_t k, bool largest, Scratch& s, float* vals, int64_t* idx) {
  if (k == 0) return;
  if (n < kRadixMin) {
    uint64_t* buf = Scratch::get(s.a, n);
    for (int64_t i = 0; i < n; ++i) buf[i] = rank_key(row[i], i, largest);
    select_sorted(buf, n, k);
    write_out(row, buf, k, vals, idx);
  } else if (kPrefilterRatio * k <= n) {
    prefilter_row(row, n, k, largest, s, vals, idx);
  } else {
    radix_select_row(row, n, k, largest, s, vals, idx);
  }
}

}  // namespace

// vals, idx: (rows, k). largest: the k largest, largest first; else the k smallest, smallest first.
void topk_rows_f32(const float* x, int64_t rows, int64_t n, int64_t k, bool largest, float* vals, int64_t* idx) {
  if (rows <= 0 || k <= 0) return;
  parallel_for_work(rows, n, [&](int64_t r0, int64_t r1) {
    Scratch s;
    for (int64_t r = r0; r < r1; ++r) topk_row(x + r * n, n, k, largest, s, vals + r * k, idx + r * k);
  });
}

// vals, idx: (rows, n), each row sorted stably (equal values in index order), NaN last (first if descending).
void sort_rows_f32(const float* x, int64_t rows, int64_t n, bool descending, float* vals, int64_t* idx) {
  topk_rows_f32(x, rows, n, n, descending, vals, idx);
}

}  // namespace FG_ISA_NS
}  // namespace fg
