// The caching allocator of each device: fg::CachingAllocator (caching_allocator.h) over
// cudaMalloc / cudaFree. Stream order makes immediate reuse of a freed block safe (forgegrad runs
// all its work on one stream per device; see caching_allocator.h). cudaFree synchronises the
// device, so empty_cache never returns memory a queued kernel still uses.
#include <atomic>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "common.cuh"
#include "forgegrad/cuda_api.h"

namespace fg::cuda {
namespace {

CachingAllocator* make_allocator(int device) {
  RawAllocator raw;
  raw.alloc = [device](std::size_t bytes) -> void* {
    DeviceGuard guard(device);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      return nullptr;  // the caching allocator empties its cache and retries once
    }
    if (err != cudaSuccess)
      throw std::runtime_error("cudaMalloc(" + std::to_string(bytes) + " bytes): CUDA error: " + status(err));
    return p;
  };
  raw.free = [device](void* p) {
    // never throws: the caching allocator has already forgotten the segment
    int prev = -1;
    if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
    if (prev != device) cudaSetDevice(device);
    cudaFree(p);
    if (prev >= 0 && prev != device) cudaSetDevice(prev);
    cudaGetLastError();
  };
  return new CachingAllocator(std::move(raw), "cuda:" + std::to_string(device));
}

CachingAllocator& allocator(int device) {
  constexpr int kMaxDevices = 64;
  // Never destroyed: at process exit the CUDA runtime may already be torn down, and freeing into it
  // then fails; the driver reclaims the memory with the process.
  static std::atomic<CachingAllocator*> allocators[kMaxDevices] = {};
  static std::mutex mu;
  if (device >= 0 && device < kMaxDevices) {
    CachingAllocator* a = allocators[device].load(std::memory_order_acquire);
    if (a != nullptr) return *a;  // the hot path of every allocation and free: no lock, no driver call
  }
  const int count = device_count();
  if (device < 0 || device >= kMaxDevices || device >= count)
    throw std::invalid_argument("CUDA device index " + std::to_string(device) + " is out of range (" +
                                std::to_string(count) + " devices)");
  std::lock_guard<std::mutex> lock(mu);
  CachingAllocator* a = allocators[device].load(std::memory_order_acquire);
  if (a == nullptr) {
    a = make_allocator(device);
    allocators[device].store(a, std::memory_order_release);
  }
  return *a;
}

}  // namespace

void* device_alloc(int device, std::size_t bytes) { return allocator(device).allocate(bytes); }

void device_free(int device, void* ptr) {
  if (ptr == nullptr) return;
  try {
    allocator(device).deallocate(ptr);
  } catch (...) {
    // only reachable for a pointer the allocator never handed out: a bug, but never a crash in a destructor
  }
}

AllocatorStats memory_stats(int device) { return allocator(device).stats(); }
void reset_peak_memory_stats(int device) { allocator(device).reset_peak(); }
void empty_cache(int device) { allocator(device).empty_cache(); }

}  // namespace fg::cuda
