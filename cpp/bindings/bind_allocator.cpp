// forgegrad._C.allocator: the caching allocator's error type, and HostCachingAllocator, the same
// fg::CachingAllocator the CUDA build runs per device, instantiated over malloc with an optional
// byte limit so the CPU tests can drive its logic (reuse, split/merge, stats, empty_cache, the
// out-of-memory retry, concurrent use). Present in every build.
#include <pybind11/stl.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/caching_allocator.h"

namespace py = pybind11;

namespace {

// malloc with a limit on the bytes outstanding: allocations beyond it fail as a full GPU would.
struct LimitedHeap {
  std::int64_t limit;  // < 0: none
  std::atomic<std::int64_t> outstanding{0};
  std::atomic<std::int64_t> failures{0};
  std::mutex mu;
  std::unordered_map<void*, std::size_t> sizes;

  void* alloc(std::size_t n) {
    std::lock_guard<std::mutex> lock(mu);
    if (limit >= 0 && outstanding + static_cast<std::int64_t>(n) > limit) {
      ++failures;
      return nullptr;
    }
    void* p = std::malloc(n);
    if (p == nullptr) return nullptr;
    sizes[p] = n;
    outstanding += static_cast<std::int64_t>(n);
    return p;
  }
  void free(void* p) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = sizes.find(p);
    outstanding -= static_cast<std::int64_t>(it->second);
    sizes.erase(it);
    std::free(p);
  }
};

class HostCachingAllocator {
 public:
  HostCachingAllocator(std::int64_t limit, std::size_t small_limit, std::size_t small_segment, std::size_t large_round)
      : heap_(std::make_shared<LimitedHeap>()) {
    heap_->limit = limit;
    fg::RawAllocator raw{[h = heap_](std::size_t n) { return h->alloc(n); }, [h = heap_](void* p) { h->free(p); }};
    fg::CachingAllocator::Options opt;
    opt.small_limit = small_limit;
    opt.small_segment = small_segment;
    opt.large_round = large_round;
    alloc_ = std::make_unique<fg::CachingAllocator>(std::move(raw), "host", opt);
  }

  std::uintptr_t allocate(std::size_t n) { return reinterpret_cast<std::uintptr_t>(alloc_->allocate(n)); }
  void free(std::uintptr_t p) { alloc_->deallocate(reinterpret_cast<void*>(p)); }
  fg::CachingAllocator& impl() { return *alloc_; }
  const LimitedHeap& heap() const { return *heap_; }

  // threads x iterations of random allocate / write a pattern / verify / free, all on this allocator
  // at once. Returns how many blocks were found overwritten by another thread (0 when correct).
  std::int64_t stress(int threads, int iterations, std::size_t max_bytes, unsigned seed) {
    std::atomic<std::int64_t> corrupt{0};
    std::mutex error_mu;
    std::exception_ptr error;  // the first exception of any thread, rethrown after all have joined
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        std::vector<std::pair<unsigned char*, std::size_t>> held;
        try {
          std::mt19937 rng(seed + static_cast<unsigned>(t));
          std::uniform_int_distribution<std::size_t> size(1, max_bytes);
          for (int i = 0; i < iterations; ++i) {
            if (held.size() < 8 && (held.empty() || rng() % 2)) {
              std::size_t n = size(rng);
              auto* p = static_cast<unsigned char*>(alloc_->allocate(n));
              std::memset(p, t + 1, n);
              held.emplace_back(p, n);
            } else {
              std::size_t k = rng() % held.size();
              auto [p, n] = held[k];
              for (std::size_t j = 0; j < n; ++j)
                if (p[j] != static_cast<unsigned char>(t + 1)) {
                  ++corrupt;
                  break;
                }
              alloc_->deallocate(p);
              held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
            }
          }
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (!error) error = std::current_exception();
        }
        for (auto& [p, n] : held) alloc_->deallocate(p);
      });
    }
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
    return corrupt;
  }

 private:
  std::shared_ptr<LimitedHeap> heap_;  // declared first: outlives the allocator, which frees into it
  std::unique_ptr<fg::CachingAllocator> alloc_;
};

py::dict stats_dict(const fg::AllocatorStats& s) {
  py::dict d;
  fg::for_each_stat(s, [&](const char* name, std::size_t v) { d[name] = v; });
  return d;
}

void bind(py::module_& m) {
  // A MemoryError subclass: `except MemoryError` catches a full GPU as it catches a full host.
  py::register_exception<fg::OutOfMemoryError>(m, "OutOfMemoryError", PyExc_MemoryError);
  m.attr("ROUND") = fg::CachingAllocator::kRound;
  using gil_release = py::call_guard<py::gil_scoped_release>;
  py::class_<HostCachingAllocator>(m, "HostCachingAllocator",
                                   "fg::CachingAllocator over malloc, failing beyond limit bytes (limit < 0: none)")
      .def(py::init<std::int64_t, std::size_t, std::size_t, std::size_t>(), py::arg("limit") = -1,
           py::arg("small_limit") = std::size_t(1) << 20, py::arg("small_segment") = std::size_t(2) << 20,
           py::arg("large_round") = std::size_t(2) << 20)
      .def("allocate", &HostCachingAllocator::allocate, py::arg("nbytes"), gil_release())
      .def("free", &HostCachingAllocator::free, py::arg("ptr"), gil_release())
      .def("empty_cache", [](HostCachingAllocator& a) { a.impl().empty_cache(); })
      .def("reset_peak", [](HostCachingAllocator& a) { a.impl().reset_peak(); })
      .def(
          "block_size",
          [](HostCachingAllocator& a, std::uintptr_t p) { return a.impl().block_size(reinterpret_cast<void*>(p)); },
          py::arg("ptr"))
      .def("stats", [](HostCachingAllocator& a) { return stats_dict(a.impl().stats()); })
      .def_property_readonly("raw_outstanding",
                             [](const HostCachingAllocator& a) { return a.heap().outstanding.load(); })
      .def_property_readonly("raw_failures", [](const HostCachingAllocator& a) { return a.heap().failures.load(); })
      .def("stress", &HostCachingAllocator::stress, py::arg("threads"), py::arg("iterations"), py::arg("max_bytes"),
           py::arg("seed") = 0, gil_release());
  m.def("round_size", &fg::CachingAllocator::round_size, py::arg("nbytes"));
}

}  // namespace

FG_REGISTER_BINDINGS(allocator, bind)
