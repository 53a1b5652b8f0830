// The caching allocator of each device: fg::CachingAllocator (caching_allocator.h) over
// cudaMalloc / cudaFree. Stream order makes immediate reuse of a freed block safe (forgegrad runs
// all its work on one stream per device; see caching_allocator.h). cudaFree synchronises the
// device, so empty_cache never returns memory a queued kernel still uses.
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "common.cuh"
#include "forgegrad/cuda_api.h"

namespace fg::cuda {
namespace {

CachingAllocator& allocator(int device) {
  constexpr int kMaxDevices = 64;
  // Never destroyed: at process exit the CUDA runtime may already be torn down, and freeing into it
  // then fails; the driver reclaims the memory with the process.
  static CachingAllocator* allocators[kMaxDevices] = {};
  static std::mutex mu;
  if (device < 0 || device >= kMaxDevices || device >= device_count())
    throw std::invalid_argument("CUDA device index " + std::to_string(device) + " is out of range (" +
                                std::to_string(device_count()) + " devices)");
  std::lock_guard<std::mutex> lock(mu);
  if (allocators[device] == nullptr) {
    RawAllocator raw;
    raw.alloc = [device](std::size_t bytes) -> void* {
      DeviceGuard guard(device);
      void* p = nullptr;
      cudaError_t err = cudaMalloc(&p, bytes);
      if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return nullptr;
      }
      if (err != cudaSuccess)
        throw std::runtime_error("cudaMalloc(" + std::to_string(bytes) + " bytes): CUDA error: " + status(err));
      return p;
    };
    raw.free = [device](void* p) {
      DeviceGuard guard(device);
      cudaFree(p);
      cudaGetLastError();
    };
    allocators[device] = new CachingAllocator(std::move(raw), "cuda:" + std::to_string(device));
  }
  return *allocators[device];
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
