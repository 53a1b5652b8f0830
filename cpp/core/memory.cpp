#include "forgegrad/memory.h"

#include <cstdlib>
#include <cstring>
#include <new>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fg {

// glibc serves blocks above M_MMAP_THRESHOLD with a fresh mmap and unmaps them on free, and gives
// the top of the heap back to the OS once more than M_TRIM_THRESHOLD of it is free. A training
// step allocates and frees the same few-MiB activations, gradients and scratch buffers every step,
// so each step faulted thousands of fresh zero pages in again (a LeNet step at batch 64: ~2,900
// minor faults). Raising both keeps those pages mapped and reused. The cost: up to
// kTrimThreshold of freed memory stays in the process (reused by the next allocation, not
// returned to the OS), and blocks under kMmapThreshold come from the heap, where a freed block
// below a live one cannot be returned until the live one goes. Larger blocks still use mmap.
namespace {
constexpr int kMmapThreshold = 32 << 20;   // glibc's own dynamic threshold stops at 32 MiB
constexpr int kTrimThreshold = 128 << 20;

std::string& tuning_state() {
  static std::string s = "not applied";
  return s;
}
}  // namespace

void tune_malloc() {
#if defined(__GLIBC__)
  const char* off = std::getenv("FORGEGRAD_MALLOC_TUNING");
  if (off && std::strcmp(off, "0") == 0) {
    tuning_state() = "off (FORGEGRAD_MALLOC_TUNING=0)";
    return;
  }
  // The user's own malloc settings win.
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TRIM_THRESHOLD_") ||
      (tunables && std::strstr(tunables, "glibc.malloc."))) {
    tuning_state() = "off (malloc settings from the environment)";
    return;
  }
  if (mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 && mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1)
    tuning_state() = "mmap_threshold=32MiB trim_threshold=128MiB";
  else
    tuning_state() = "off (mallopt failed)";
#else
  tuning_state() = "off (not glibc)";
#endif
}

const std::string& malloc_tuning() { return tuning_state(); }

void* aligned_malloc(std::size_t bytes) {
  if (bytes == 0) bytes = 64;
  std::size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
  return p;
}

void aligned_free(void* p) { std::free(p); }

void AlignedBuffer::reset(std::size_t floats) {
  if (floats <= size_ && ptr_) return;
  aligned_free(ptr_);
  ptr_ = nullptr;
  size_ = 0;
  if (floats > static_cast<std::size_t>(-1) / sizeof(float) - 64) throw std::bad_alloc();  // byte count overflows
  ptr_ = static_cast<float*>(aligned_malloc(floats * sizeof(float)));
  size_ = floats;
}

}  // namespace fg
