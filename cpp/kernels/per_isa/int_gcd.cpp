// torch.gcd of int32 / int64 (forgegrad.kernels.int_math.gcd): out[i] = gcd(a[i * sa], b[i * sb]), sa and sb 1
// or 0 (a broadcast number). Binary GCD (shifts and subtractions on |a|, |b| as unsigned) where neither operand is
// the type's MIN: the same value as torch's Euclid loop, gcd(0, x) = |x|, gcd(0, 0) = 0. Where one is MIN, whose
// |MIN| wraps to MIN in torch, torch's loop itself runs (C's truncating remainder on the wrapped values; x % -1 is
// taken as 0, which C leaves undefined for MIN % -1), so those elements keep torch's results (gcd(MIN, 6) = -2).
// AVX-512 builds run the binary GCD on whole vectors (gcd_block). Elements are independent: the same results at
// any thread count and on any ISA path.
#include <cstdint>
#include <limits>
#include <type_traits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "forgegrad/parallel.h"

namespace fg {
namespace FG_ISA_NS {

namespace {

inline int ctz(uint64_t x) { return __builtin_ctzll(x); }
inline int ctz(uint32_t x) { return __builtin_ctz(x); }

template <class S, class U>
inline S gcd_one(S a, S b) {
  constexpr S kMin = std::numeric_limits<S>::min();
  if (a == kMin || b == kMin) {
    S x = a < 0 ? static_cast<S>(U(0) - static_cast<U>(a)) : a;  // wraps MIN to MIN, as torch's abs
    S y = b < 0 ? static_cast<S>(U(0) - static_cast<U>(b)) : b;
    while (x != 0) {
      const S c = x;
      x = x == -1 ? S(0) : static_cast<S>(y % x);
      y = c;
    }
    return y;
  }
  U u = a < 0 ? U(0) - static_cast<U>(a) : static_cast<U>(a);
  U v = b < 0 ? U(0) - static_cast<U>(b) : static_cast<U>(b);
  if (u == 0) return static_cast<S>(v);
  if (v == 0) return static_cast<S>(u);
  const int shift = ctz(u | v);
  u >>= ctz(u);
  do {
    v >>= ctz(v);
    if (u > v) {
      const U t = v;
      v = u;
      u = t;
    }
    v -= u;
  } while (v != 0);
  return static_cast<S>(u << shift);
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// The binary GCD on 8 (int64) or 16 (int32) lanes, two vectors at a time, until every lane is done: the scalar
// loop's iteration count varies from element to element, and its exit branch mispredicts about once per element.
// ctz(x) per lane from the exponent of the lowest set bit converted to floating point (exact: a power of two);
// x == 0 gives a negative count, which the variable shifts read as >= the width: 0, a lane already done.
struct Lanes64 {
  using S = int64_t;
  static constexpr int kLanes = 8;
  static constexpr __mmask16 kAll = 0xFF;
  static __m512i load(const S* p) { return _mm512_loadu_si512(p); }
  static __m512i set1(S x) { return _mm512_set1_epi64(x); }
  static __m512i abs(__m512i x) { return _mm512_abs_epi64(x); }  // MIN stays MIN (2^63 unsigned)
  static __mmask16 eq(__m512i x, __m512i y) { return _mm512_cmpeq_epi64_mask(x, y); }
  static __m512i ctz(__m512i x) {
    const __m512i low = _mm512_and_si512(x, _mm512_sub_epi64(_mm512_setzero_si512(), x));
    const __m512i bits = _mm512_castpd_si512(_mm512_cvtepu64_pd(low));
    return _mm512_sub_epi64(_mm512_srli_epi64(bits, 52), _mm512_set1_epi64(1023));
  }
  static __m512i srl(__m512i x, __m512i n) { return _mm512_srlv_epi64(x, n); }
  static __m512i sll(__m512i x, __m512i n) { return _mm512_sllv_epi64(x, n); }
  static __m512i mask_srl(__m512i x, __mmask16 k, __m512i n) { return _mm512_mask_srlv_epi64(x, (__mmask8)k, x, n); }
  static __m512i mask_min(__m512i src, __mmask16 k, __m512i x, __m512i y) {
    return _mm512_mask_min_epu64(src, (__mmask8)k, x, y);
  }
  static __m512i mask_sub_max_min(__m512i src, __mmask16 k, __m512i x, __m512i y) {
    return _mm512_mask_sub_epi64(src, (__mmask8)k, _mm512_max_epu64(x, y), _mm512_min_epu64(x, y));
  }
  static __m512i blend(__mmask16 k, __m512i x, __m512i y) { return _mm512_mask_blend_epi64((__mmask8)k, x, y); }
  static __mmask16 nonzero(__m512i x) { return _mm512_test_epi64_mask(x, x); }
  static void store(S* p, __m512i x) { _mm512_storeu_si512(p, x); }
};

struct Lanes32 {
  using S = int32_t;
  static constexpr int kLanes = 16;
  static constexpr __mmask16 kAll = 0xFFFF;
  static __m512i load(const S* p) { return _mm512_loadu_si512(p); }
  static __m512i set1(S x) { return _mm512_set1_epi32(x); }
  static __m512i abs(__m512i x) { return _mm512_abs_epi32(x); }
  static __mmask16 eq(__m512i x, __m512i y) { return _mm512_cmpeq_epi32_mask(x, y); }
  static __m512i ctz(__m512i x) {
    const __m512i low = _mm512_and_si512(x, _mm512_sub_epi32(_mm512_setzero_si512(), x));
    const __m512i bits = _mm512_castps_si512(_mm512_cvtepu32_ps(low));
    return _mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(127));
  }
  static __m512i srl(__m512i x, __m512i n) { return _mm512_srlv_epi32(x, n); }
  static __m512i sll(__m512i x, __m512i n) { return _mm512_sllv_epi32(x, n); }
  static __m512i mask_srl(__m512i x, __mmask16 k, __m512i n) { return _mm512_mask_srlv_epi32(x, k, x, n); }
  static __m512i mask_min(__m512i src, __mmask16 k, __m512i x, __m512i y) {
    return _mm512_mask_min_epu32(src, k, x, y);
  }
  static __m512i mask_sub_max_min(__m512i src, __mmask16 k, __m512i x, __m512i y) {
    return _mm512_mask_sub_epi32(src, k, _mm512_max_epu32(x, y), _mm512_min_epu32(x, y));
  }
  static __m512i blend(__mmask16 k, __m512i x, __m512i y) { return _mm512_mask_blend_epi32(k, x, y); }
  static __mmask16 nonzero(__m512i x) { return _mm512_test_epi32_mask(x, x); }
  static void store(S* p, __m512i x) { _mm512_storeu_si512(p, x); }
};

// One vector's state: u, v (|a|, |b| with u's factors of two removed), the common shift, the lanes still
// running, and the original |a|, |b| and the lanes where a or b is MIN (left to the scalar loop).
template <class L>
struct GcdVec {
  __m512i u0, v0, u, v, shift;
  __mmask16 zu, zv, active, minlane;
  void start(__m512i a, __m512i b) {
    const __m512i mn = L::set1(std::numeric_limits<typename L::S>::min());
    minlane = L::eq(a, mn) | L::eq(b, mn);
    u0 = u = L::abs(a);
    v0 = v = L::abs(b);
    zu = L::eq(u0, _mm512_setzero_si512());
    zv = L::eq(v0, _mm512_setzero_si512());
    shift = L::ctz(_mm512_or_si512(u, v));
    u = L::srl(u, L::ctz(u));
    active = static_cast<__mmask16>(L::kAll & ~(zu | zv | minlane));
  }
  void step() {
    v = L::mask_srl(v, active, L::ctz(v));
    const __m512i u_next = L::mask_min(u, active, u, v);
    v = L::mask_sub_max_min(v, active, u, v);
    u = u_next;
    active = static_cast<__mmask16>(active & L::nonzero(v));
  }
  __m512i result() const {  // gcd(0, x) = |x|, gcd(x, 0) = |x|
    return L::blend(zv, L::blend(zu, L::sll(u, shift), v0), u0);
  }
};

template <class L>
void gcd_block(const typename L::S* a, int64_t sa, const typename L::S* b, int64_t sb, typename L::S* out) {
  using S = typename L::S;
  constexpr int N = L::kLanes;
  GcdVec<L> x, y;
  x.start(sa ? L::load(a) : L::set1(a[0]), sb ? L::load(b) : L::set1(b[0]));
  y.start(sa ? L::load(a + N) : L::set1(a[0]), sb ? L::load(b + N) : L::set1(b[0]));
  while (x.active | y.active) {
    x.step();
    y.step();
  }
  L::store(out, x.result());
  L::store(out + N, y.result());
  const uint32_t mins = static_cast<uint32_t>(x.minlane) | (static_cast<uint32_t>(y.minlane) << N);
  if (mins) {
    using U = typename std::make_unsigned<S>::type;
    for (int i = 0; i < 2 * N; ++i)
      if (mins >> i & 1u) out[i] = gcd_one<S, U>(a[i * sa], b[i * sb]);
  }
}
#endif

template <class S, class U>
void gcd_t(const S* a, int64_t sa, const S* b, int64_t sb, int64_t n, S* out) {
  parallel_for_work(n, 32, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    using L = typename std::conditional<sizeof(S) == 8, Lanes64, Lanes32>::type;
    for (; i + 2 * L::kLanes <= end; i += 2 * L::kLanes) gcd_block<L>(a + i * sa, sa, b + i * sb, sb, out + i);
#endif
    for (; i < end; ++i) out[i] = gcd_one<S, U>(a[i * sa], b[i * sb]);
  });
}

}  // namespace

void gcd_i64(const int64_t* a, int64_t sa, const int64_t* b, int64_t sb, int64_t n, int64_t* out) {
  gcd_t<int64_t, uint64_t>(a, sa, b, sb, n, out);
}

void gcd_i32(const int32_t* a, int64_t sa, const int32_t* b, int64_t sb, int64_t n, int32_t* out) {
  gcd_t<int32_t, uint32_t>(a, sa, b, sb, n, out);
}

}  // namespace FG_ISA_NS
}  // namespace fg
