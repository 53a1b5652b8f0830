// Array-level kernels every op needs: fill, strided copy (permute, expand, slicing with steps, cat
// all reduce to it) and dtype casts. Grid-stride loops on the current device's stream.
#include <cstring>

#include "common.cuh"
#include "forgegrad/cuda_api.h"
#include "forgegrad/strided_index.h"

namespace fg::cuda {
static_assert(kMaxDims == strided::kMaxDims, "one dimension limit");

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

template <class T>
__global__ void strided_copy_kernel(const T* __restrict__ src, T* __restrict__ dst, strided::CopyGeometry g) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < g.count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t s, d;
    strided::copy_offsets(g, i, &s, &d);
    dst[d] = src[s];
  }
}

template <class S, class D>
__global__ void cast_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n, bool to_bool) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = to_bool ? static_cast<D>(src[i] != S(0)) : static_cast<D>(src[i]);
}

// One thread per output element.
template <class T>
__global__ void sum_to_shape_kernel(const T* __restrict__ src, T* __restrict__ dst, strided::Reduction r) {
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < r.out_count;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[o] = strided::reduce_one(src, r, o);
}

__global__ void fault_kernel(float* p) { p[threadIdx.x] = 1.f; }

}  // namespace

std::string launch_faulting_kernel() {
  fault_kernel<<<1, 32, 0, current_stream()>>>(nullptr);
  return launch_status();
}

std::string sum_to_shape(const void* src, const int64_t* in_shape, void* dst, const int64_t* out_shape, int ndim,
                         DType t) {
  if (t != DType::kFloat32 && t != DType::kFloat64) return "sum_to_shape: float32 or float64 arrays only";
  strided::Reduction r;
  if (!strided::make_reduction(in_shape, out_shape, ndim, &r))
    return "sum_to_shape: shapes do not broadcast (or more than " + std::to_string(kMaxDims) + " dimensions)";
  if (r.out_count <= 0) return std::string();
  int64_t n_in = r.out_count * r.red_count;
  if (n_in == 0) return fill(dst, t, r.out_count, 0.0);
  unsigned blocks = blocks_for(r.out_count, 256);
  if (t == DType::kFloat32)
    sum_to_shape_kernel<float>
        <<<blocks, 256, 0, current_stream()>>>(static_cast<const float*>(src), static_cast<float*>(dst), r);
  else
    sum_to_shape_kernel<double>
        <<<blocks, 256, 0, current_stream()>>>(static_cast<const double*>(src), static_cast<double*>(dst), r);
  return launch_status();
}

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
  strided::CopyGeometry g;
  if (!strided::make_copy_geometry(shape, src_strides, dst_strides, ndim, &g))
    return "strided_copy: at most " + std::to_string(kMaxDims) + " dimensions";
  if (g.count <= 0) return std::string();
  unsigned blocks = blocks_for(g.count, 256);
  switch (itemsize) {
    case 1:
      strided_copy_kernel<uint8_t><<<blocks, 256, 0, current_stream()>>>(static_cast<const uint8_t*>(src) + src_offset,
                                                                         static_cast<uint8_t*>(dst) + dst_offset, g);
      break;
    case 2:
      strided_copy_kernel<uint16_t><<<blocks, 256, 0, current_stream()>>>(
          static_cast<const uint16_t*>(src) + src_offset, static_cast<uint16_t*>(dst) + dst_offset, g);
      break;
    case 4:
      strided_copy_kernel<uint32_t><<<blocks, 256, 0, current_stream()>>>(
          static_cast<const uint32_t*>(src) + src_offset, static_cast<uint32_t*>(dst) + dst_offset, g);
      break;
    case 8:
      strided_copy_kernel<uint64_t><<<blocks, 256, 0, current_stream()>>>(
          static_cast<const uint64_t*>(src) + src_offset, static_cast<uint64_t*>(dst) + dst_offset, g);
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
