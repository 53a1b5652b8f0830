// Reductions over any set of axes: one thread block per output element (or per slice of it), each
// thread accumulating a fixed, strided subset of the reduced elements in index order, then a shared
// memory tree in a fixed pairing. Large reductions with few outputs split the reduced range into a
// shape-determined number of slices (a first pass into workspace, a second over the slices), so the
// summation order -- and the result bits -- depend on the shape only, never on timing.
#include <cmath>

#include "common.cuh"
#include "forgegrad/cuda_nn.h"

namespace fg::cuda::nn {
namespace {

constexpr int kMaxThreads = 256;
constexpr int64_t kSliceMin = 16384;  // reduced elements per slice when splitting
constexpr int64_t kMaxSlices = 1024;

__device__ __forceinline__ int64_t keep_offset(const Reduction& r, int64_t o) {
  int64_t off = 0;
  for (int d = r.keep_ndim - 1; d >= 0; --d) {
    off += (o % r.keep_shape[d]) * r.keep_stride[d];
    o /= r.keep_shape[d];
  }
  return off;
}

__device__ __forceinline__ int64_t red_offset(const Reduction& r, int64_t i) {
  if (r.red_ndim == 1) return i * r.red_stride[0];
  int64_t off = 0;
  for (int d = r.red_ndim - 1; d >= 0; --d) {
    off += (i % r.red_shape[d]) * r.red_stride[d];
    i /= r.red_shape[d];
  }
  return off;
}

__device__ __forceinline__ float identity(Reduce op) {
  if (op == Reduce::Max) return -INFINITY;
  if (op == Reduce::Min) return INFINITY;
  return 0.f;
}

// NaN propagates through max / min (numpy / torch).
__device__ __forceinline__ float combine(Reduce op, float a, float b) {
  if (op == Reduce::Max) return (a != a || a > b) ? a : (b != b ? b : fmaxf(a, b));
  if (op == Reduce::Min) return (a != a || a < b) ? a : (b != b ? b : fminf(a, b));
  return a + b;
}

__device__ __forceinline__ float element(Reduce op, float x, float c) {
  if (op == Reduce::SumSqDev) return (x - c) * (x - c);
  if (op == Reduce::CountEq) return x == c ? 1.f : 0.f;
  return x;
}

// Fixed-pairing tree over blockDim.x (a power of two) values in shared memory.
__device__ __forceinline__ float block_tree(Reduce op, float v, float* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] = combine(op, sh[threadIdx.x], sh[threadIdx.x + s]);
    __syncthreads();
  }
  float r = sh[0];
  __syncthreads();
  return r;
}

// Block b handles output o = b / slices, slice p = b % slices of [0, R); when slices > 1 it writes
// the raw partial to part[o * slices + p], else out[o] = post(scale * value).
__global__ void reduce_kernel(Reduce op, Reduction r, const float* __restrict__ x, const float* __restrict__ center,
                              float* __restrict__ out, float* __restrict__ part, int64_t nout, int64_t R,
                              int64_t slices, int64_t chunk, float scale, bool sqrt_after) {
  __shared__ float sh[kMaxThreads];
  for (int64_t b = blockIdx.x; b < nout * slices; b += gridDim.x) {
    int64_t o = b / slices, p = b % slices;
    int64_t base = keep_offset(r, o);
    float c = center ? center[o] : 0.f;
    int64_t lo = p * chunk, hi = min(R, lo + chunk);
    float acc = identity(op);
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
      acc = combine(op, acc, element(op, x[base + red_offset(r, i)], c));
    Reduce tree_op = (op == Reduce::Max || op == Reduce::Min) ? op : Reduce::Sum;
    float v = block_tree(tree_op, acc, sh);
    if (threadIdx.x == 0) {
      if (slices > 1) {
        part[b] = v;
      } else {
        v *= scale;
        out[o] = sqrt_after ? sqrtf(v) : v;
      }
    }
  }
}

// Second pass: out[o] = post(scale * combine over part[o, 0..slices)), one block per output.
__global__ void finish_kernel(Reduce op, const float* __restrict__ part, float* __restrict__ out, int64_t nout,
                              int64_t slices, float scale, bool sqrt_after) {
  __shared__ float sh[kMaxThreads];
  for (int64_t o = blockIdx.x; o < nout; o += gridDim.x) {
    float acc = identity(op);
    for (int64_t i = threadIdx.x; i < slices; i += blockDim.x) acc = combine(op, acc, part[o * slices + i]);
    float v = block_tree(op, acc, sh);
    if (threadIdx.x == 0) {
      v *= scale;
      out[o] = sqrt_after ? sqrtf(v) : v;
    }
  }
}

// ---- integer reductions (int64 or bool input, int64 out): exact, so any order gives the same result;
// the same block-per-output layout and slices as the float kernels.
__device__ __forceinline__ int64_t icombine(Reduce op, int64_t a, int64_t b) {
  if (op == Reduce::Max) return a > b ? a : b;
  if (op == Reduce::Min) return a < b ? a : b;
  return a + b;
}

__device__ __forceinline__ int64_t iidentity(Reduce op) {
  if (op == Reduce::Max) return INT64_MIN;
  if (op == Reduce::Min) return INT64_MAX;
  return 0;
}

__device__ __forceinline__ int64_t iblock_tree(Reduce op, int64_t v, int64_t* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] = icombine(op, sh[threadIdx.x], sh[threadIdx.x + s]);
    __syncthreads();
  }
  int64_t r = sh[0];
  __syncthreads();
  return r;
}

template <class T>
__global__ void reduce_int_kernel(Reduce op, Reduction r, const T* __restrict__ x, int64_t* __restrict__ out,
                                  int64_t* __restrict__ part, int64_t nout, int64_t R, int64_t slices, int64_t chunk) {
  __shared__ int64_t sh[kMaxThreads];
  for (int64_t b = blockIdx.x; b < nout * slices; b += gridDim.x) {
    int64_t o = b / slices, p = b % slices;
    int64_t base = keep_offset(r, o);
    int64_t lo = p * chunk, hi = min(R, lo + chunk);
    int64_t acc = iidentity(op);
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
      acc = icombine(op, acc, static_cast<int64_t>(x[base + red_offset(r, i)]));
    int64_t v = iblock_tree(op, acc, sh);
    if (threadIdx.x == 0) (slices > 1 ? part[b] : out[o]) = v;
  }
}

__global__ void finish_int_kernel(Reduce op, const int64_t* __restrict__ part, int64_t* __restrict__ out, int64_t nout,
                                  int64_t slices) {
  __shared__ int64_t sh[kMaxThreads];
  for (int64_t o = blockIdx.x; o < nout; o += gridDim.x) {
    int64_t acc = iidentity(op);
    for (int64_t i = threadIdx.x; i < slices; i += blockDim.x) acc = icombine(op, acc, part[o * slices + i]);
    int64_t v = iblock_tree(op, acc, sh);
    if (threadIdx.x == 0) out[o] = v;
  }
}

// (value, index) pairs: the larger (smaller) value wins, NaN beats everything, ties go to the
// lower index -- numpy's first occurrence, whatever the thread layout.
__device__ __forceinline__ bool better(bool is_max, float v, int64_t i, float bv, int64_t bi) {
  if (bi < 0) return true;
  bool vn = v != v, bn = bv != bv;
  if (vn || bn) return vn && (!bn || i < bi);
  if (v == bv) return i < bi;
  return is_max ? v > bv : v < bv;
}

__global__ void arg_kernel(bool is_max, Reduction r, const float* __restrict__ x, int64_t* __restrict__ index,
                           float* __restrict__ values, int64_t nout, int64_t R) {
  __shared__ float shv[kMaxThreads];
  __shared__ int64_t shi[kMaxThreads];
  for (int64_t o = blockIdx.x; o < nout; o += gridDim.x) {
    int64_t base = keep_offset(r, o);
    float bv = 0.f;
    int64_t bi = -1;
    for (int64_t i = threadIdx.x; i < R; i += blockDim.x) {
      float v = x[base + red_offset(r, i)];
      if (better(is_max, v, i, bv, bi)) bv = v, bi = i;
    }
    shv[threadIdx.x] = bv;
    shi[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s && shi[threadIdx.x + s] >= 0 &&
          better(is_max, shv[threadIdx.x + s], shi[threadIdx.x + s], shv[threadIdx.x], shi[threadIdx.x])) {
        shv[threadIdx.x] = shv[threadIdx.x + s];
        shi[threadIdx.x] = shi[threadIdx.x + s];
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      index[o] = shi[0];
      if (values) values[o] = shv[0];
    }
    __syncthreads();
  }
}

__global__ void scatter_axis_kernel(const float* __restrict__ g, const int64_t* __restrict__ index,
                                    float* __restrict__ out, int64_t outer, int64_t n, int64_t inner) {
  int64_t total = outer * n * inner;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t i = e % inner, k = (e / inner) % n, o = e / (inner * n);
    out[e] = index[o * inner + i] == k ? g[o * inner + i] : 0.f;
  }
}

int64_t prod(const int64_t* s, int n) {
  int64_t p = 1;
  for (int d = 0; d < n; ++d) p *= s[d];
  return p;
}

int threads_for(int64_t R) {
  int t = 32;
  while (t < kMaxThreads && t < R) t *= 2;
  return t;
}

// Slices of the reduced range: only when there are too few outputs to fill the GPU.
int64_t slices_for(int64_t nout, int64_t R) {
  if (nout >= 1024 || R < 2 * kSliceMin) return 1;
  int64_t s = (R + kSliceMin - 1) / kSliceMin;
  return s > kMaxSlices ? kMaxSlices : s;
}

std::string check_geo(const Reduction& r) {
  if (r.keep_ndim < 0 || r.keep_ndim > kMaxDims || r.red_ndim < 0 || r.red_ndim > kMaxDims)
    return "reduction rank out of range (at most 8 kept and 8 reduced dimensions)";
  return std::string();
}

unsigned grid_for(int64_t blocks) {
  return static_cast<unsigned>(blocks < 65535 * 32 ? (blocks < 1 ? 1 : blocks) : 65535 * 32);
}

}  // namespace

int64_t reduce_workspace(const Reduction& r) {
  int64_t nout = prod(r.keep_shape, r.keep_ndim), R = prod(r.red_shape, r.red_ndim);
  int64_t s = slices_for(nout, R);
  return s > 1 ? nout * s : 0;
}

std::string reduce(Reduce op, const Reduction& r, const float* x, const float* center, float* out, float scale,
                   bool sqrt_after, float* workspace) {
  std::string err = check_geo(r);
  if (!err.empty()) return err;
  int64_t nout = prod(r.keep_shape, r.keep_ndim), R = prod(r.red_shape, r.red_ndim);
  if (nout == 0) return std::string();
  int64_t slices = slices_for(nout, R);
  if (slices > 1 && !workspace) return "reduce: workspace required for this shape";
  int64_t chunk = slices > 1 ? (R + slices - 1) / slices : R;
  int threads = threads_for(chunk);
  reduce_kernel<<<grid_for(nout * slices), threads, 0, current_stream()>>>(op, r, x, center, out, workspace, nout, R,
                                                                           slices, chunk, scale, sqrt_after);
  err = launch_status();
  if (!err.empty() || slices == 1) return err;
  Reduce fin = (op == Reduce::Max || op == Reduce::Min) ? op : Reduce::Sum;
  finish_kernel<<<grid_for(nout), threads_for(slices), 0, current_stream()>>>(fin, workspace, out, nout, slices, scale,
                                                                              sqrt_after);
  return launch_status();
}

std::string reduce_int(Reduce op, const Reduction& r, const void* x, bool is_bool, int64_t* out, int64_t* workspace) {
  std::string err = check_geo(r);
  if (!err.empty()) return err;
  if (op != Reduce::Sum && op != Reduce::Max && op != Reduce::Min) return "reduce_int: only sum, max and min";
  int64_t nout = prod(r.keep_shape, r.keep_ndim), R = prod(r.red_shape, r.red_ndim);
  if (nout == 0) return std::string();
  int64_t slices = slices_for(nout, R);
  if (slices > 1 && !workspace) return "reduce_int: workspace required for this shape";
  int64_t chunk = slices > 1 ? (R + slices - 1) / slices : R;
  if (is_bool)
    reduce_int_kernel<uint8_t><<<grid_for(nout * slices), threads_for(chunk), 0, current_stream()>>>(
        op, r, static_cast<const uint8_t*>(x), out, workspace, nout, R, slices, chunk);
  else
    reduce_int_kernel<int64_t><<<grid_for(nout * slices), threads_for(chunk), 0, current_stream()>>>(
        op, r, static_cast<const int64_t*>(x), out, workspace, nout, R, slices, chunk);
  err = launch_status();
  if (!err.empty() || slices == 1) return err;
  finish_int_kernel<<<grid_for(nout), threads_for(slices), 0, current_stream()>>>(op, workspace, out, nout, slices);
  return launch_status();
}

std::string arg_reduce(bool is_max, const Reduction& r, const float* x, int64_t* index, float* values) {
  std::string err = check_geo(r);
  if (!err.empty()) return err;
  int64_t nout = prod(r.keep_shape, r.keep_ndim), R = prod(r.red_shape, r.red_ndim);
  if (nout == 0) return std::string();
  if (R == 0) return "arg_reduce: empty reduced dimension";
  arg_kernel<<<grid_for(nout), threads_for(R), 0, current_stream()>>>(is_max, r, x, index, values, nout, R);
  return launch_status();
}

std::string scatter_axis(const float* g, const int64_t* index, float* out, int64_t outer, int64_t n, int64_t inner) {
  int64_t total = outer * n * inner;
  if (total == 0) return std::string();
  scatter_axis_kernel<<<blocks_for(total, 256), 256, 0, current_stream()>>>(g, index, out, outer, n, inner);
  return launch_status();
}

}  // namespace fg::cuda::nn
