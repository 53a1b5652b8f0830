// Array-level kernels every op needs: fill, strided copy (permute, expand, slicing with steps, cat
// all reduce to it) and dtype casts. Grid-stride loops on the current device's stream.
#include <cstring>

#include "common.cuh"
#include "forgegrad/cuda_api.h"

namespace fg::cuda {
namespace {

// Element types by DType; bool is a byte holding 0 or 1.
template <class F>
bool with_type(DType t, F&& f) {
  switch (t) {
    case DType::kFloat32: f(float()); return true;
    case DType::kFloat64: f(double()); return true;
    case DType::kInt64: f(int64_t()); return true;
    case DType::kInt32: f(int32_t()); return true;
    case DType::kUInt8:
    case DType::kBool: f(uint8_t()); return true;
  }
  return false;
}

template <class T>
__global__ void fill_kernel(T* __restrict__ dst, int64_t n, T value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = value;
}

struct Geometry {
  int64_t shape[kMaxDims];
  int64_t src_strides[kMaxDims];
  int64_t dst_strides[kMaxDims];
  int ndim;
};

template <class T>
__global__ void strided_copy_kernel(const T* __restrict__ src, T* __restrict__ dst, Geometry g, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rest = i, s = 0, d = 0;
    for (int k = g.ndim - 1; k >= 0; --k) {
      int64_t idx = rest % g.shape[k];
      rest /= g.shape[k];
      s += idx * g.src_strides[k];
      d += idx * g.dst_strides[k];
    }
    dst[d] = src[s];
  }
}

template <class S, class D>
__global__ void cast_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n, bool to_bool) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = to_bool ? static_cast<D>(src[i] != S(0)) : static_cast<D>(src[i]);
}

}  // namespace

std::string fill(void* dst, DType t, int64_t n, double value) {
  if (n <= 0) return std::string();
  with_type(t, [&](auto zero) {
    using T = decltype(zero);
    T v = t == DType::kBool ? static_cast<T>(value != 0.0) : static_cast<T>(value);
    fill_kernel<T><<<blocks_for(n, 256), 256, 0, current_stream()>>>(static_cast<T*>(dst), n, v);
  });
  return launch_status();
}

std::string strided_copy(const void* src, int64_t src_offset, const int64_t* src_strides, void* dst, int64_t dst_offset,
                         const int64_t* dst_strides, const int64_t* shape, int ndim, std::size_t itemsize) {
  if (ndim < 0 || ndim > kMaxDims) return "strided_copy: at most " + std::to_string(kMaxDims) + " dimensions";
  Geometry g{};
  // Merge neighbouring dimensions that are contiguous in both layouts (fewer divisions per element),
  // and drop unit dimensions.
  int m = 0;
  int64_t n = 1;
  for (int k = 0; k < ndim; ++k) {
    n *= shape[k];
    if (shape[k] == 1) continue;
    if (m > 0 && g.src_strides[m - 1] == src_strides[k] * shape[k] &&
        g.dst_strides[m - 1] == dst_strides[k] * shape[k]) {
      g.shape[m - 1] *= shape[k];
      g.src_strides[m - 1] = src_strides[k];
      g.dst_strides[m - 1] = dst_strides[k];
      continue;
    }
    g.shape[m] = shape[k];
    g.src_strides[m] = src_strides[k];
    g.dst_strides[m] = dst_strides[k];
    ++m;
  }
  g.ndim = m;
  if (n <= 0) return std::string();
  unsigned blocks = blocks_for(n, 256);
  switch (itemsize) {
    case 1:
      strided_copy_kernel<uint8_t><<<blocks, 256, 0, current_stream()>>>(static_cast<const uint8_t*>(src) + src_offset,
                                                                         static_cast<uint8_t*>(dst) + dst_offset, g, n);
      break;
    case 2:
      strided_copy_kernel<uint16_t><<<blocks, 256, 0, current_stream()>>>(
          static_cast<const uint16_t*>(src) + src_offset, static_cast<uint16_t*>(dst) + dst_offset, g, n);
      break;
    case 4:
      strided_copy_kernel<uint32_t><<<blocks, 256, 0, current_stream()>>>(
          static_cast<const uint32_t*>(src) + src_offset, static_cast<uint32_t*>(dst) + dst_offset, g, n);
      break;
    case 8:
      strided_copy_kernel<uint64_t><<<blocks, 256, 0, current_stream()>>>(
          static_cast<const uint64_t*>(src) + src_offset, static_cast<uint64_t*>(dst) + dst_offset, g, n);
      break;
    default: return "strided_copy: unsupported element size " + std::to_string(itemsize);
  }
  return launch_status();
}

std::string cast(const void* src, DType src_type, void* dst, DType dst_type, int64_t n) {
  if (n <= 0) return std::string();
  const bool to_bool = dst_type == DType::kBool;
  unsigned blocks = blocks_for(n, 256);
  with_type(src_type, [&](auto s0) {
    using S = decltype(s0);
    with_type(dst_type, [&](auto d0) {
      using D = decltype(d0);
      cast_kernel<S, D>
          <<<blocks, 256, 0, current_stream()>>>(static_cast<const S*>(src), static_cast<D*>(dst), n, to_bool);
    });
  });
  return launch_status();
}

}  // namespace fg::cuda
