// 64-byte aligned scratch memory. Methods are defined out of line (core/memory.cpp) so the one
// copy the linker keeps is compiled without ISA-specific flags.
#pragma once
#include <cstddef>
#include <string>

namespace fg {

// Called once when the extension is imported: keeps freed large blocks mapped (glibc mallopt) so a
// training step does not page-fault its buffers in again every step. FORGEGRAD_MALLOC_TUNING=0, or
// malloc settings in the environment (MALLOC_MMAP_THRESHOLD_, GLIBC_TUNABLES, ...), leave malloc
// alone. malloc_tuning() says what was done.
void tune_malloc();
const std::string& malloc_tuning();

void* aligned_malloc(std::size_t bytes);  // throws std::bad_alloc
void aligned_free(void* p);

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t floats) { reset(floats); }
  ~AlignedBuffer() { aligned_free(ptr_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  void reset(std::size_t floats);  // contents undefined afterwards
  float* data() const { return ptr_; }
  std::size_t size() const { return size_; }

 private:
  float* ptr_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace fg
