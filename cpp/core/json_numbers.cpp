// See forgegrad/json_numbers.h. A single pass over the text with an explicit stack of open
// arrays: each level's length is fixed by its first array and every later array at that level
// must match; numbers may only sit at the deepest level, the one where the first number was seen.
#include "forgegrad/json_numbers.h"

#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstring>
#include <system_error>

namespace fg::json {

namespace {

inline bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

inline void skip_ws(const char*& p, const char* end) {
  while (p < end && is_ws(*p)) ++p;
}

// Powers of ten that are exact doubles (10^22 < 2^53 * 2^22, all of 5^k exact up to k = 22).
constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                             1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
#if LDBL_MANT_DIG == 64
constexpr long double kPow10Extended[] = {1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,  1e7L,  1e8L,  1e9L,
                                          1e10L, 1e11L, 1e12L, 1e13L, 1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L,
                                          1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};
#endif
constexpr uint64_t kExactMantissa = uint64_t(1) << 53;

// Eight ASCII digits at p, as little-endian bytes (the usual SWAR test and conversion: three
// multiplies instead of eight dependent multiply-adds).
inline bool eight_digits_at(const char* p, uint64_t& v) {
  std::memcpy(&v, p, 8);
  return ((v & 0xF0F0F0F0F0F0F0F0ull) | (((v + 0x0606060606060606ull) & 0xF0F0F0F0F0F0F0F0ull) >> 4)) ==
         0x3333333333333333ull;
}
inline uint64_t eight_digits_value(uint64_t v) {
  v -= 0x3030303030303030ull;
  v = v * 10 + (v >> 8);  // adjacent pairs: byte 2i holds the value of digits 2i, 2i + 1
  const uint64_t mask = 0x000000FF000000FFull;
  return (((v & mask) * 0x000F424000000064ull) + (((v >> 16) & mask) * 0x0000271000000001ull)) >> 32;
}

// Significant digits from p into mantissa (at most 19 of them, counted in `digits`); the ones past
// 19 set `dropped` if nonzero and, in the integer part, raise `scale`. In the fraction each
// accumulated digit lowers `scale`.
inline void read_digits(const char*& p, const char* end, bool fraction, uint64_t& mantissa, int& digits, bool& dropped,
                        int64_t& scale) {
  uint64_t eight;
  while (end - p >= 8 && digits <= 11 && eight_digits_at(p, eight)) {
    mantissa = mantissa * 100000000ull + eight_digits_value(eight);
    digits += 8;
    if (fraction) scale -= 8;
    p += 8;
  }
  for (; p < end && is_digit(*p); ++p) {
    if (digits < 19) {
      mantissa = mantissa * 10 + uint64_t(*p - '0');
      ++digits;
      if (fraction) --scale;
    } else {
      dropped = dropped || *p != '0';
      if (!fraction) ++scale;
    }
  }
}

// One JSON number at p (RFC 8259 grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?), as
// Python's float() of its text would give it (int() for an integer literal). Advances p past it.
bool parse_number(const char*& p, const char* end, double& out) {
  const char* start = p;
  const bool negative = p < end && *p == '-';
  if (negative) ++p;
  if (p == end) return false;
  uint64_t mantissa = 0;  // the significant digits (the first nonzero digit on), at most 19
  int digits = 0;
  bool dropped = false;   // a nonzero digit past the 19th
  int64_t scale = 0;      // value = mantissa * 10^scale (+ what was dropped)
  if (*p == '0') {
    ++p;
  } else if (*p >= '1' && *p <= '9') {
    read_digits(p, end, false, mantissa, digits, dropped, scale);
  } else {
    return false;
  }
  const int64_t int_digits = p - start - (negative ? 1 : 0);
  bool integer = true;
  if (p < end && *p == '.') {
    ++p;
    if (p == end || !is_digit(*p)) return false;
    if (mantissa == 0) {
      for (; p < end && *p == '0'; ++p) --scale;  // leading zeros are not significant
    }
    read_digits(p, end, true, mantissa, digits, dropped, scale);
    integer = false;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    bool exp_negative = false;
    if (p < end && (*p == '+' || *p == '-')) exp_negative = *p++ == '-';
    if (p == end || !is_digit(*p)) return false;
    int64_t e = 0;
    while (p < end && is_digit(*p)) {
      if (e < 100000) e = e * 10 + (*p - '0');
      ++p;
    }
    scale += exp_negative ? -e : e;
    integer = false;
  }
  if (integer) {
    // Python's int: exact; past 15 digits a double may not hold it, so the generic path decides.
    if (int_digits > 15) return false;
    out = mantissa == 0 ? 0.0 : (negative ? -double(mantissa) : double(mantissa));
    return true;
  }
  if (mantissa == 0) {
    out = negative ? -0.0 : 0.0;
    return true;
  }
  if (!dropped && mantissa <= kExactMantissa && scale >= -22 && scale <= 22) {
    // Both operands exact: the one rounding of * or / is the correctly rounded value (Clinger).
    const double m = double(mantissa);
    const double v = scale < 0 ? m / kPow10[-scale] : m * kPow10[scale];
    out = negative ? -v : v;
    return true;
  }
#if LDBL_MANT_DIG == 64
  if (!dropped && scale >= -27 && scale <= 27) {
    // x87 extended precision: mantissa (< 2^64) and 10^|scale| (5^27 < 2^64) are exact, so the
    // quotient or product is rounded once to 64 bits, then once more to 53. The second rounding
    // is the correct one unless the 64-bit result sits exactly halfway between two doubles (the
    // low 11 of its 64 significand bits 10000000000): then the true value may lie on either side.
    const long double pow10 = kPow10Extended[scale < 0 ? -scale : scale];
    const long double m = static_cast<long double>(mantissa);
    const long double r = scale < 0 ? m / pow10 : m * pow10;
    uint64_t significand;
    std::memcpy(&significand, &r, sizeof significand);
    if ((significand & 0x7FF) != 0x400) {
      const double v = static_cast<double>(r);
      out = negative ? -v : v;
      return true;
    }
  }
#endif
  double v = 0.0;
  const auto result = std::from_chars(start, p, v);  // correctly rounded (general format)
  if (result.ec != std::errc() || result.ptr != p) return false;
  // overflow, and results that underflow to a denormal or zero, are left to the generic path
  if (!std::isfinite(v) || std::fabs(v) < DBL_MIN) return false;
  out = v;
  return true;
}

}  // namespace

bool parse_number_array(const char* text, std::size_t size, NumberArray& out) {
  const char* p = text;
  const char* const end = text + size;
  out.values.clear();
  int64_t count[kMaxArrayDims];   // elements so far in the open array of each level
  int64_t length[kMaxArrayDims];  // each level's length, once an array of that level has closed
  bool known[kMaxArrayDims] = {};
  int depth = 0;       // arrays open
  int leaf_depth = 0;  // the level whose elements are numbers (0: no number seen yet)
  skip_ws(p, end);
  if (p == end || *p != '[') return false;
  for (;;) {
    // at an element position (just after '[' or ','), or at the outermost '['
    if (p < end && *p == '[') {
      if (depth == kMaxArrayDims || (leaf_depth != 0 && depth >= leaf_depth)) return false;
      count[depth++] = 0;
      ++p;
      skip_ws(p, end);
      if (p < end && *p == ']') return false;  // an empty level
      continue;
    }
    if (depth == 0) return false;
    if (leaf_depth == 0) {
      leaf_depth = depth;
    } else if (depth != leaf_depth) {
      return false;  // a number where the other elements of this level are arrays
    }
    double v;
    if (!parse_number(p, end, v)) return false;
    out.values.push_back(v);
    ++count[depth - 1];
    // after an element: ',' continues its level, ']' closes it (and perhaps the levels above)
    for (;;) {
      skip_ws(p, end);
      if (p == end) return false;
      const int level = depth - 1;
      if (*p == ',') {
        if (known[level] && count[level] >= length[level]) return false;  // longer than its first array
        ++p;
        skip_ws(p, end);
        break;
      }
      if (*p != ']') return false;
      ++p;
      if (known[level] && count[level] != length[level]) return false;  // ragged
      length[level] = count[level];
      known[level] = true;
      if (--depth == 0) {
        skip_ws(p, end);
        if (p != end) return false;
        out.shape.assign(length, length + leaf_depth);
        return true;
      }
      ++count[depth - 1];
    }
  }
}

}  // namespace fg::json
