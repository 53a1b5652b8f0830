// Threading. One global thread count (set_num_threads); work is split into index ranges whose
// results do not depend on how many threads run them: every output element is computed by the
// same sequence of operations whichever thread owns it, and reductions use fixed-size chunks
// combined in order (parallel_reduce_chunks). That is what makes results bit-identical for any
// thread count.
#pragma once
#include <cstdint>
#include <exception>
#include <omp.h>

namespace fg {

// An exception must not leave an OpenMP region (that is std::terminate: the process dies). Each
// region body runs under a guard that keeps the first exception (e.g. std::bad_alloc of a large
// scratch buffer), and the caller rethrows it after the join, so pybind11 turns it into a Python
// error (MemoryError, ...). On the normal path this costs nothing.
class RegionErrors {
 public:
  template <class F>
  void run(F&& f) noexcept {
    try {
      f();
    } catch (...) {
#pragma omp critical(fg_region_errors)
      if (!first_) first_ = std::current_exception();
    }
  }
  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::exception_ptr first_;
};

int get_num_threads();
void set_num_threads(int n);  // n >= 1

// Calls f(begin_i, end_i) on disjoint ranges covering [0, n). Ranges are at least `grain` long;
// runs inline when one thread suffices. f must write only outputs owned by its range.
template <class F>
inline void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int nt = get_num_threads();
  int64_t max_chunks = (n + grain - 1) / grain;
  if (nt > max_chunks) nt = static_cast<int>(max_chunks);
  if (nt <= 1 || omp_in_parallel()) {
    f(int64_t(0), n);
    return;
  }
  RegionErrors errors;
#pragma omp parallel num_threads(nt)
  {
    int t = omp_get_thread_num();
    int T = omp_get_num_threads();
    int64_t b = n * t / T, e = n * (t + 1) / T;
    if (b < e) errors.run([&] { f(b, e); });
  }
  errors.rethrow();
}

// Calls f(task) for task in [0, ntasks), spread over threads (dynamic schedule: tasks may differ
// in cost). Each task must own its outputs.
template <class F>
inline void parallel_tasks(int64_t ntasks, F&& f) {
  if (ntasks <= 0) return;
  int nt = get_num_threads();
  if (nt > ntasks) nt = static_cast<int>(ntasks);
  if (nt <= 1 || omp_in_parallel()) {
    for (int64_t i = 0; i < ntasks; ++i) f(i);
    return;
  }
  RegionErrors errors;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int64_t i = 0; i < ntasks; ++i) errors.run([&] { f(i); });
  errors.rethrow();
}

// Number of fixed-size chunks used by deterministic reductions over n elements.
constexpr int64_t kReduceChunk = 16384;
inline int64_t reduce_chunks(int64_t n) { return n <= 0 ? 0 : (n + kReduceChunk - 1) / kReduceChunk; }

}  // namespace fg
