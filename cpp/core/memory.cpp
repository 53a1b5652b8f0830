#include "forgegrad/memory.h"

#include <cstdlib>
#include <new>

namespace fg {

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
