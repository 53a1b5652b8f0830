// Overflow-checked int64 arithmetic for shapes and geometry. Sizes, paddings and strides arrive
// from Python and may be anything up to 2^63 - 1, and signed overflow is undefined behaviour, so
// the geometry (conv.h, pool.h) computes every step with these and reports failure instead.
#pragma once
#include <cstdint>
#include <initializer_list>

namespace fg {

// The most elements (floats) a tensor or workspace of a geometry may hold. Far beyond any real
// allocation, and small enough that byte counts (x 4 or x 8) and the kernels' offsets (an element
// count plus a row or two) cannot overflow int64.
constexpr int64_t kMaxElements = int64_t{1} << 58;

inline bool checked_add(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }
inline bool checked_mul(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

// *out = the product of dims (each >= 0); false if it overflows or exceeds kMaxElements.
inline bool checked_elements(std::initializer_list<int64_t> dims, int64_t* out) {
  int64_t p = 1;
  for (int64_t d : dims)
    if (!checked_mul(p, d, &p) || p > kMaxElements) return false;
  *out = p;
  return true;
}

// The extent of a dilated window, dil * (k - 1) + 1; false on overflow, when the argument to blame
// is window_blame(k, dil).
inline bool window_extent(int64_t k, int64_t dil, int64_t* out) {
  return checked_mul(dil, k - 1, out) && checked_add(*out, 1, out);
}
inline const char* window_blame(int64_t k, int64_t dil) { return dil > k ? "dilation" : "kernel_size"; }

}  // namespace fg
