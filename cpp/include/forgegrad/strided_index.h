// Index math of the strided-copy and broadcast-reduction kernels (cuda/array_ops.cu), written once
// as __host__ __device__ code: the CUDA kernels run it per element, and the CPU build runs the same
// functions in _C.testing so tests/test_cuda_runtime.py checks them against numpy without a GPU.
#pragma once
#include <cstdint>

#include "forgegrad/checked.h"

#if defined(__CUDACC__)
#define FG_STRIDED_HD __host__ __device__
#else
#define FG_STRIDED_HD
#endif

namespace fg::strided {

constexpr int kMaxDims = 12;

// The lowest and highest element offsets a strided layout touches (every shape[k] >= 1); false
// when a step overflows int64 (strides and offsets come from Python and may be anything).
inline bool span(const int64_t* shape, const int64_t* strides, int ndim, int64_t offset, int64_t* lo, int64_t* hi) {
  *lo = *hi = offset;
  for (int k = 0; k < ndim; ++k) {
    int64_t step;
    if (shape[k] < 1 || !checked_mul(shape[k] - 1, strides[k], &step)) return false;
    int64_t* end = strides[k] < 0 ? lo : hi;
    if (!checked_add(*end, step, end)) return false;
  }
  return true;
}

// An elementwise copy of `shape` between two strided layouts (strides and offsets in elements).
struct CopyGeometry {
  int64_t shape[kMaxDims];
  int64_t src_strides[kMaxDims];
  int64_t dst_strides[kMaxDims];
  int ndim;
  int64_t count;  // elements
};

// Builds the geometry, dropping unit dimensions and merging neighbours that are contiguous in both
// layouts (fewer divisions per element). False when ndim is out of [0, kMaxDims].
inline bool make_copy_geometry(const int64_t* shape, const int64_t* src_strides, const int64_t* dst_strides, int ndim,
                               CopyGeometry* g) {
  if (ndim < 0 || ndim > kMaxDims) return false;
  int m = 0;
  int64_t n = 1;
  for (int k = 0; k < ndim; ++k) {
    n *= shape[k];
    if (shape[k] == 1) continue;
    if (m > 0 && g->src_strides[m - 1] == src_strides[k] * shape[k] &&
        g->dst_strides[m - 1] == dst_strides[k] * shape[k]) {
      g->shape[m - 1] *= shape[k];
      g->src_strides[m - 1] = src_strides[k];
      g->dst_strides[m - 1] = dst_strides[k];
      continue;
    }
    g->shape[m] = shape[k];
    g->src_strides[m] = src_strides[k];
    g->dst_strides[m] = dst_strides[k];
    ++m;
  }
  g->ndim = m;
  g->count = n;
  return true;
}

// The source and destination offsets of element i (row-major order over the shape).
FG_STRIDED_HD inline void copy_offsets(const CopyGeometry& g, int64_t i, int64_t* src, int64_t* dst) {
  int64_t s = 0, d = 0;
  for (int k = g.ndim - 1; k >= 0; --k) {
    int64_t idx = i % g.shape[k];
    i /= g.shape[k];
    s += idx * g.src_strides[k];
    d += idx * g.dst_strides[k];
  }
  *src = s;
  *dst = d;
}

// A contiguous array summed down to a broadcast shape of the same rank (out_shape[k] is in_shape[k]
// or 1): the gradient of a broadcast.
struct Reduction {
  int64_t out_shape[kMaxDims];
  int64_t out_src_strides[kMaxDims];  // source stride of each output axis
  int64_t red_shape[kMaxDims];        // the reduced axes, outermost first
  int64_t red_src_strides[kMaxDims];
  int ndim, nred;
  int64_t red_count;  // inputs per output
  int64_t out_count;
};

// False when the shapes do not broadcast or ndim is out of range.
inline bool make_reduction(const int64_t* in_shape, const int64_t* out_shape, int ndim, Reduction* r) {
  if (ndim < 0 || ndim > kMaxDims) return false;
  r->ndim = ndim;
  r->nred = 0;
  r->red_count = 1;
  r->out_count = 1;
  int64_t stride = 1;
  int64_t strides[kMaxDims];
  for (int k = ndim - 1; k >= 0; --k) {
    if (out_shape[k] != in_shape[k] && out_shape[k] != 1) return false;
    strides[k] = stride;
    stride *= in_shape[k];
  }
  for (int k = 0; k < ndim; ++k) {
    r->out_shape[k] = out_shape[k];
    r->out_src_strides[k] = strides[k];
    r->out_count *= out_shape[k];
    if (out_shape[k] == 1 && in_shape[k] != 1) {
      r->red_shape[r->nred] = in_shape[k];
      r->red_src_strides[r->nred] = strides[k];
      r->red_count *= in_shape[k];
      ++r->nred;
    }
  }
  return true;
}

// Output element o: its inputs summed in index order (a fixed order: deterministic).
template <class T>
FG_STRIDED_HD inline T reduce_one(const T* src, const Reduction& r, int64_t o) {
  int64_t base = 0;
  for (int k = r.ndim - 1; k >= 0; --k) {
    base += (o % r.out_shape[k]) * r.out_src_strides[k];
    o /= r.out_shape[k];
  }
  T acc = T(0);
  for (int64_t j = 0; j < r.red_count; ++j) {
    int64_t rj = j, off = base;
    for (int k = r.nred - 1; k >= 0; --k) {
      off += (rj % r.red_shape[k]) * r.red_src_strides[k];
      rj /= r.red_shape[k];
    }
    acc += src[off];
  }
  return acc;
}

}  // namespace fg::strided
