// fg::CachingAllocator: a caching allocator over a raw allocator (an alloc/free function pair).
// Device-agnostic and header-only: the CUDA build instantiates it over cudaMalloc/cudaFree, one per
// device (cuda/allocator.cu); every build instantiates it over malloc in _C.allocator so the CPU
// tests drive the same logic (tests/test_cuda_runtime.py).
//
// Policy (a simplified version of torch's CUDA caching allocator):
// - sizes round up to kRound (512) bytes; a request of 0 bytes returns nullptr and owns nothing;
// - requests of at most small_limit (1 MiB) come from the small pool, whose segments (raw
//   allocations) are small_segment (2 MiB) each; larger requests come from the large pool, whose
//   segments are the request rounded up to large_round (2 MiB). Blocks never move between pools, so
//   small temporaries do not fragment the large segments;
// - a request takes the smallest free block of its pool that fits (best fit, ties to the lower
//   address); a block larger than needed is split when the rest is at least kRound (small pool) or
//   more than small_limit (large pool: a smaller rest would only serve small requests, which never
//   come here);
// - a freed block merges with its free neighbours of the same segment, so a segment whose blocks are
//   all free is one block again, and empty_cache() returns such segments to the raw allocator;
// - when the raw allocator fails (returns nullptr), the cache is emptied and the raw allocation is
//   tried once more; if it fails again, OutOfMemoryError names the request and the statistics.
//
// Streams: the CUDA build has one stream per device and every kernel and copy runs on it. A block
// freed on the host while queued kernels still read or write it can be handed out at once: whatever
// the new owner enqueues runs on the same stream, hence after that earlier work (stream order), so no
// event per block is needed. Work on another stream would need one (record an event on free, reuse
// the block once it has completed); forgegrad launches on no other stream.
//
// Thread safety: every public method takes one mutex (the raw allocator is called under it).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fg {

// The allocator could not get memory even after releasing its cache. Bindings turn it into Python's
// MemoryError (forgegrad.cuda.OutOfMemoryError, a MemoryError subclass).
class OutOfMemoryError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RawAllocator {
  // Returns nullptr when out of memory (the caller then frees its cache and retries once); throws
  // std::runtime_error for any other failure.
  std::function<void*(std::size_t)> alloc;
  std::function<void(void*)> free;
};

struct AllocatorStats {
  std::size_t allocated = 0;       // bytes in blocks handed out (rounded sizes)
  std::size_t requested = 0;       // bytes asked for by the live allocations (unrounded)
  std::size_t reserved = 0;        // bytes held from the raw allocator (all segments)
  std::size_t peak_allocated = 0;  // maximum of allocated since construction or reset_peak()
  std::size_t peak_reserved = 0;
  std::size_t num_allocs = 0;  // allocate() calls that returned memory
  std::size_t num_frees = 0;
  std::size_t raw_allocs = 0;  // successful raw allocations (segments created)
  std::size_t raw_frees = 0;   // segments returned to the raw allocator
  std::size_t num_ooms = 0;    // raw allocation failures (each retried once after emptying the cache)
  std::size_t segments = 0;    // live segments
  std::size_t live_blocks = 0;
};

// Calls f(name, value) for each field of s (what the bindings turn into a dict).
template <class F>
void for_each_stat(const AllocatorStats& s, F&& f) {
  f("allocated", s.allocated);
  f("requested", s.requested);
  f("reserved", s.reserved);
  f("peak_allocated", s.peak_allocated);
  f("peak_reserved", s.peak_reserved);
  f("num_allocs", s.num_allocs);
  f("num_frees", s.num_frees);
  f("raw_allocs", s.raw_allocs);
  f("raw_frees", s.raw_frees);
  f("num_ooms", s.num_ooms);
  f("segments", s.segments);
  f("live_blocks", s.live_blocks);
}

class CachingAllocator {
 public:
  static constexpr std::size_t kRound = 512;

  struct Options {
    std::size_t small_limit = std::size_t(1) << 20;
    std::size_t small_segment = std::size_t(2) << 20;
    std::size_t large_round = std::size_t(2) << 20;
  };

  CachingAllocator(RawAllocator raw, std::string name) : CachingAllocator(std::move(raw), std::move(name), Options()) {}
  CachingAllocator(RawAllocator raw, std::string name, Options opt)
      : raw_(std::move(raw)), name_(std::move(name)), opt_(opt) {
    if (opt_.small_limit % kRound || opt_.small_segment < opt_.small_limit || opt_.large_round % kRound ||
        opt_.large_round == 0)
      throw std::invalid_argument("CachingAllocator: inconsistent options");
  }
  // Live blocks at destruction are the owner's leak; their segments are returned all the same.
  ~CachingAllocator() {
    for (auto& kv : blocks_) {
      Block* b = kv.second;
      if (b->prev == nullptr) raw_.free(b->ptr);
    }
    for (auto& kv : blocks_) delete kv.second;
  }
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  static std::size_t round_size(std::size_t bytes) {
    if (bytes > SIZE_MAX - kRound) return SIZE_MAX / kRound * kRound;
    return bytes == 0 ? kRound : (bytes + kRound - 1) / kRound * kRound;
  }

  void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    const std::size_t size = round_size(bytes);
    const bool small = size <= opt_.small_limit;
    FreeSet& pool = small ? small_free_ : large_free_;
    Block* b = best_fit(pool, size);
    if (b == nullptr)
      b = new_segment(size, small, bytes);
    else
      pool.erase(b);
    split(b, size, pool);
    b->allocated = true;
    b->requested = bytes;
    live_[b->ptr] = b;
    stats_.allocated += b->size;
    stats_.requested += bytes;
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
    ++stats_.num_allocs;
    ++stats_.live_blocks;
    return b->ptr;
  }

  // Returns the block to the cache (never to the raw allocator). nullptr is a no-op; a pointer this
  // allocator did not hand out throws std::invalid_argument.
  void deallocate(void* ptr) {
    if (ptr == nullptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    if (it == live_.end()) throw std::invalid_argument(name_ + ": free of a pointer this allocator does not own");
    Block* b = it->second;
    live_.erase(it);
    b->allocated = false;
    stats_.allocated -= b->size;
    stats_.requested -= b->requested;
    ++stats_.num_frees;
    --stats_.live_blocks;
    FreeSet& pool = b->small ? small_free_ : large_free_;
    if (b->prev && !b->prev->allocated) b = merge(b->prev, b, pool);
    if (b->next && !b->next->allocated) b = merge(b, b->next, pool);
    pool.insert(b);
  }

  // Returns every segment with no live block to the raw allocator.
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached();
  }

  AllocatorStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_allocated = stats_.allocated;
    stats_.peak_reserved = stats_.reserved;
  }
  // The usable size of a live block (its rounded size); 0 for nullptr.
  std::size_t block_size(void* ptr) const {
    if (ptr == nullptr) return 0;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    if (it == live_.end()) throw std::invalid_argument(name_ + ": pointer is not a live block");
    return it->second->size;
  }
  const std::string& name() const { return name_; }

 private:
  struct Block {
    char* ptr;
    std::size_t size;
    std::size_t requested = 0;
    bool small;
    bool allocated = false;
    Block* prev = nullptr;  // neighbours inside the same segment (prev == nullptr: segment start)
    Block* next = nullptr;
  };
  struct BySize {
    bool operator()(const Block* a, const Block* b) const {
      if (a->size != b->size) return a->size < b->size;
      return std::less<const char*>()(a->ptr, b->ptr);
    }
  };
  using FreeSet = std::set<Block*, BySize>;

  Block* best_fit(FreeSet& pool, std::size_t size) {
    Block key{nullptr, size, 0, false};
    auto it = pool.lower_bound(&key);
    return it == pool.end() ? nullptr : *it;
  }

  Block* new_segment(std::size_t size, bool small, std::size_t requested) {
    if (size > SIZE_MAX / 2) throw OutOfMemoryError(oom_message(requested, size));  // no raw allocator can
    std::size_t seg = small ? opt_.small_segment : round_up(size, opt_.large_round);
    void* p = raw_.alloc(seg);
    if (p == nullptr) {
      ++stats_.num_ooms;
      release_cached();
      p = raw_.alloc(seg);
      if (p == nullptr) {
        ++stats_.num_ooms;
        throw OutOfMemoryError(oom_message(requested, seg));
      }
    }
    Block* b = new Block{static_cast<char*>(p), seg, 0, small};
    blocks_[b->ptr] = b;
    ++stats_.raw_allocs;
    ++stats_.segments;
    stats_.reserved += seg;
    stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
    return b;
  }

  void split(Block* b, std::size_t size, FreeSet& pool) {
    std::size_t rest = b->size - size;
    bool worth = b->small ? rest >= kRound : rest > opt_.small_limit;
    if (!worth) return;
    Block* r = new Block{b->ptr + size, rest, 0, b->small};
    r->prev = b;
    r->next = b->next;
    if (b->next) b->next->prev = r;
    b->next = r;
    b->size = size;
    blocks_[r->ptr] = r;
    pool.insert(r);
  }

  // a and b are neighbours (a->next == b), one of them in `pool`; returns a, grown, out of `pool`.
  Block* merge(Block* a, Block* b, FreeSet& pool) {
    pool.erase(a);
    pool.erase(b);
    a->size += b->size;
    a->next = b->next;
    if (b->next) b->next->prev = a;
    blocks_.erase(b->ptr);
    delete b;
    return a;
  }

  void release_cached() {
    for (FreeSet* pool : {&small_free_, &large_free_}) {
      for (auto it = pool->begin(); it != pool->end();) {
        Block* b = *it;
        if (b->prev == nullptr && b->next == nullptr) {  // a whole free segment
          it = pool->erase(it);
          raw_.free(b->ptr);
          stats_.reserved -= b->size;
          ++stats_.raw_frees;
          --stats_.segments;
          blocks_.erase(b->ptr);
          delete b;
        } else {
          ++it;
        }
      }
    }
  }

  std::string oom_message(std::size_t requested, std::size_t seg) const {
    std::size_t cached = stats_.reserved - stats_.allocated;
    return "out of memory on " + name_ + ": tried to allocate " + std::to_string(requested) + " bytes (a " +
           std::to_string(seg) + "-byte segment) after releasing the cache; allocated " +
           std::to_string(stats_.allocated) + " bytes, reserved " + std::to_string(stats_.reserved) +
           " bytes (cached free " + std::to_string(cached) + "), peak allocated " +
           std::to_string(stats_.peak_allocated) + " bytes";
  }

  static std::size_t round_up(std::size_t n, std::size_t m) { return (n + m - 1) / m * m; }

  RawAllocator raw_;
  std::string name_;
  Options opt_;
  mutable std::mutex mu_;
  FreeSet small_free_, large_free_;
  std::unordered_map<void*, Block*> live_;    // allocated blocks by address
  std::unordered_map<char*, Block*> blocks_;  // every block (free or live), owner of the Block objects
  AllocatorStats stats_;
};

}  // namespace fg
