// Threading. One global thread count (set_num_threads); work is split into index ranges whose
// results do not depend on how many threads run them: every output element is computed by the
// same sequence of operations whichever thread owns it, and reductions use fixed-size chunks
// combined in order (parallel_reduce_chunks). That is what makes results bit-identical for any
// thread count.
//
// Regions run on forgegrad's own thread pool (core/parallel.cpp), not OpenMP. A region's work is
// cut into a fixed set of parts (the same cut as a static schedule would make); the calling thread
// and the pool's workers *claim* parts, so the caller never waits for a worker that has not started:
// on a busy machine a descheduled worker simply finds every part taken. Idle workers spin briefly
// (back-to-back regions, e.g. the steps of an RNN), then yield, then sleep, so they do not burn a
// core another process needs; when they find themselves descheduled, small regions run on the caller
// alone for a while (threads_for). The cut never depends on which thread runs a part.
#pragma once
#include <cstdint>
#include <exception>
#include <mutex>
#include <utility>

namespace fg {

// An exception must not leave a worker thread (that is std::terminate: the process dies). Each
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
      std::lock_guard<std::mutex> lock(mutex_);
      if (!first_) first_ = std::current_exception();
    }
  }
  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr first_;
};

int get_num_threads();
void set_num_threads(int n);  // n >= 1

// True on a pool worker and on a thread that is running a region: nested regions run inline.
bool in_parallel();

// While one lives, the regions this thread starts run inline on it (the same parts, so the same bits): for a
// sequence of kernel calls whose whole work is too small to pay for waking the pool at each of them.
class SerialScope {
 public:
  SerialScope();
  ~SerialScope();
  SerialScope(const SerialScope&) = delete;
  SerialScope& operator=(const SerialScope&) = delete;

 private:
  bool previous_;
};

// While one lives, the regions this thread starts follow each other within microseconds (the layers of a
// frozen forward): a worker woken by the first stays awake for the next (it spins between regions), so a
// hand-off costs a few cache lines instead of a wake-up, and kernels whose split pays for a wake-up cut
// finer (split_work). Results do not change: only which thread runs which part.
class BackToBackScope {
 public:
  BackToBackScope();
  ~BackToBackScope();
  BackToBackScope(const BackToBackScope&) = delete;
  BackToBackScope& operator=(const BackToBackScope&) = delete;

 private:
  bool previous_;
};

// Smallest amount of work (roughly multiply-adds or float loads/stores) worth handing to a second
// thread. Below it the hand-off (a wake-up, a cache line bouncing between cores, a scheduler slice
// when the machine is busy) costs more than the work saves, so the region runs on one thread.
constexpr int64_t kMinParallelWork = 32768;

// Grain (items per range) for items that each cost about `work_per_item`: ranges of at least
// kMinParallelWork.
inline int64_t grain_for_work(int64_t work_per_item) {
  if (work_per_item < 1) work_per_item = 1;
  return work_per_item >= kMinParallelWork ? 1 : (kMinParallelWork + work_per_item - 1) / work_per_item;
}

// Least work per thread a kernel hands out: `idle` (what pays for waking a sleeping worker) outside a
// BackToBackScope, kBackToBackWork inside one.
constexpr int64_t kBackToBackWork = 4 * kMinParallelWork;
int64_t split_work(int64_t idle);

// Work below which a region runs on the calling thread alone while the pool backs off (its workers
// were recently found descheduled: another process wants the cores). ~1 ms of multiply-adds, the
// order of a scheduler time slice: a descheduled worker waits that long for a core, so only regions
// longer than that gain from one that gets part of a core (on a large machine with some cores busy).
constexpr int64_t kBusyMinWork = int64_t(1) << 26;

// Threads for a region of about `work` units: 1 inside a region or at one thread, 1 for work below
// kBusyMinWork while the pool backs off, else get_num_threads().
int threads_for(int64_t work);

// count * each, saturated at kBusyMinWork (all threads_for needs to know).
inline int64_t region_work(int64_t count, int64_t each) {
  if (each < 1) each = 1;
  return count >= kBusyMinWork / each ? kBusyMinWork : count * each;
}

namespace detail {
using PartFn = void (*)(void* ctx, int64_t part);
// Runs fn(ctx, p) once for every p in [0, nparts), on the calling thread and up to nthreads - 1
// pool workers; returns when all parts are done. fn must not throw.
void run_parts(int64_t nparts, int nthreads, PartFn fn, void* ctx);
template <class F>
void call_part(void* ctx, int64_t part) {
  (*static_cast<F*>(ctx))(part);
}

// parallel_for's body: ranges of at least `grain` items, threads for a region of about `work` units.
template <class F>
inline void parallel_ranges(int64_t n, int64_t grain, int64_t work, F&& f) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t max_chunks = (n + grain - 1) / grain;
  if (max_chunks == 1) {  // one range whatever the thread count: no region
    f(int64_t(0), n);
    return;
  }
  int nt = threads_for(work);
  if (nt > max_chunks) nt = static_cast<int>(max_chunks);
  if (nt <= 1) {
    f(int64_t(0), n);
    return;
  }
  RegionErrors errors;
  const int64_t T = nt;
  auto part = [&](int64_t t) {
    int64_t b = n * t / T, e = n * (t + 1) / T;
    if (b < e) errors.run([&] { f(b, e); });
  };
  run_parts(T, nt, &call_part<decltype(part)>, &part);
  errors.rethrow();
}
}  // namespace detail

// Calls f(begin_i, end_i) on disjoint ranges covering [0, n). Ranges are at least `grain` long;
// runs inline when one thread suffices. f must write only outputs owned by its range.
template <class F>
inline void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (grain < 1) grain = 1;
  // Each chunk holds at least kMinParallelWork (grain_for_work): a lower bound of the region's work.
  detail::parallel_ranges(n, grain, region_work((n + grain - 1) / grain, kMinParallelWork), f);
}

// parallel_for over items that each cost about `work_per_item`: ranges of at least kMinParallelWork
// (grain_for_work), and threads_for sees the region's whole work, so a large region (an int8 GEMM of
// 2^27 multiply-adds cut into 32 panels) keeps its threads while the pool backs off.
template <class F>
inline void parallel_for_work(int64_t n, int64_t work_per_item, F&& f) {
  detail::parallel_ranges(n, grain_for_work(work_per_item), region_work(n, work_per_item), f);
}

// Calls f(task) for task in [0, ntasks), spread over threads (tasks are claimed one at a time:
// they may differ in cost). Each task must own its outputs. work_per_task: about what one task
// costs, for threads_for (the two-argument form assumes kMinParallelWork, the least a caller
// should hand out as a task).
template <class F>
inline void parallel_tasks(int64_t ntasks, int64_t work_per_task, F&& f) {
  if (ntasks <= 0) return;
  int nt = threads_for(region_work(ntasks, work_per_task));
  if (nt > ntasks) nt = static_cast<int>(ntasks);
  if (nt <= 1) {
    for (int64_t i = 0; i < ntasks; ++i) f(i);
    return;
  }
  RegionErrors errors;
  auto part = [&](int64_t i) { errors.run([&] { f(i); }); };
  detail::run_parts(ntasks, nt, &detail::call_part<decltype(part)>, &part);
  errors.rethrow();
}

template <class F>
inline void parallel_tasks(int64_t ntasks, F&& f) {
  parallel_tasks(ntasks, kMinParallelWork, std::forward<F>(f));
}

// Number of fixed-size chunks used by deterministic reductions over n elements.
constexpr int64_t kReduceChunk = 16384;
inline int64_t reduce_chunks(int64_t n) { return n <= 0 ? 0 : (n + kReduceChunk - 1) / kReduceChunk; }

}  // namespace fg
