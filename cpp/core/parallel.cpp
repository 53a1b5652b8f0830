// The thread pool behind parallel_for / parallel_tasks (see forgegrad/parallel.h).
//
// Why not OpenMP: an OpenMP region ends in a barrier, so the calling thread waits for every team
// member, and libgomp's idle workers spin for a long while (GOMP_SPINCOUNT, fixed at start-up) before
// sleeping. On a machine where another process keeps the cores busy, a region of a few microseconds
// (one RNN step at a small hidden size) then costs a scheduler time slice whenever a worker is not
// running, and the spinning workers take CPU from the caller: 2 threads ran a small LSTM step ~8x
// slower than 1. Here the caller claims parts itself and only waits for parts a worker has started;
// idle workers spin for kSpin, yield until kYield, then sleep on a condition variable.
#include "forgegrad/parallel.h"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace fg {
namespace {

int initial_threads() {
  if (const char* env = std::getenv("FORGEGRAD_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

std::atomic<int>& threads_slot() {
  static std::atomic<int> slot{initial_threads()};
  return slot;
}

thread_local bool t_in_parallel = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

using Clock = std::chrono::steady_clock;
// An idle worker polls for the next region for kSpin (consecutive regions, such as the time steps
// of an RNN, follow each other within microseconds), then polls with sched_yield until kYield (lets
// another runnable thread have the core), then sleeps until woken (a futex wake costs the caller a
// few microseconds, paid only after a pause this long).
constexpr auto kSpin = std::chrono::microseconds(50);
constexpr auto kYield = std::chrono::microseconds(1000);
constexpr int kMaxWorkers = 255;

struct Pool {
  std::mutex submit;  // one region at a time; a region started while another runs goes inline
  std::mutex m;       // guards the job fields below and sleeping
  std::condition_variable wake;     // workers: a new region
  std::condition_variable all_done;  // caller: remaining reached 0
  std::atomic<uint64_t> gen{0};      // bumped (under m) for every region
  std::atomic<int64_t> remaining{0};  // parts not finished in the current region
  // The current region (under m).
  detail::PartFn fn = nullptr;
  void* ctx = nullptr;
  int64_t nparts = 0, next = 0;
  int helpers = 0;  // workers with index < helpers may claim parts
  int nworkers = 0;  // started (under submit)

  // Claims the next part of region g for worker `index` (-1: the caller); false when none is left
  // or the region does not use this worker.
  bool claim(uint64_t g, int index, detail::PartFn& f, void*& c, int64_t& part) {
    std::lock_guard<std::mutex> lock(m);
    if (index >= helpers || gen.load(std::memory_order_relaxed) != g || next >= nparts) return false;
    part = next++;
    f = fn;
    c = ctx;
    return true;
  }

  void finish_part() {
    if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(m);  // the caller checks `remaining` under m before sleeping
      all_done.notify_one();
    }
  }

  void work(uint64_t g, int index) {
    detail::PartFn f;
    void* c;
    int64_t part;
    while (claim(g, index, f, c, part)) {
      f(c, part);
      finish_part();
    }
  }

  uint64_t wait_for_region(uint64_t seen) {
    const auto start = Clock::now();
    for (unsigned i = 1;; ++i) {
      uint64_t g = gen.load(std::memory_order_acquire);
      if (g != seen) return g;
      if ((i & 63) == 0) {
        const auto waited = Clock::now() - start;
        if (waited >= kYield) break;
        if (waited >= kSpin) std::this_thread::yield();
      }
      cpu_relax();
    }
    std::unique_lock<std::mutex> lock(m);
    wake.wait(lock, [&] { return gen.load(std::memory_order_relaxed) != seen; });
    return gen.load(std::memory_order_relaxed);
  }

  void worker_main(int index, uint64_t seen) {
    t_in_parallel = true;  // kernels called from a part never start nested regions
    for (;;) {
      seen = wait_for_region(seen);
      work(seen, index);
    }
  }

  void ensure_workers(int n) {
    if (n > kMaxWorkers) n = kMaxWorkers;
    while (nworkers < n) {
      const uint64_t seen = gen.load(std::memory_order_relaxed);
      const int index = nworkers;
      try {
        std::thread([this, index, seen] { worker_main(index, seen); }).detach();
      } catch (...) {  // no more threads: run with the ones we have
        return;
      }
      ++nworkers;
    }
  }

  void run(int64_t count, int nthreads, detail::PartFn f, void* c) {
    ensure_workers(nthreads - 1);
    uint64_t g;
    {
      std::lock_guard<std::mutex> lock(m);
      fn = f;
      ctx = c;
      nparts = count;
      next = 0;
      helpers = nthreads - 1;
      remaining.store(count, std::memory_order_relaxed);
      g = gen.load(std::memory_order_relaxed) + 1;
      gen.store(g, std::memory_order_release);
    }
    wake.notify_all();  // only a syscall when a worker sleeps
    t_in_parallel = true;
    detail::PartFn pf;
    void* pc;
    int64_t part;
    while (claim(g, -1, pf, pc, part)) {
      pf(pc, part);
      finish_part();
    }
    // Only parts a worker has claimed are left: wait for them.
    const auto start = Clock::now();
    for (unsigned i = 1; remaining.load(std::memory_order_acquire) != 0; ++i) {
      if ((i & 63) == 0 && Clock::now() - start >= kSpin) {
        std::unique_lock<std::mutex> lock(m);
        all_done.wait(lock, [&] { return remaining.load(std::memory_order_acquire) == 0; });
        break;
      }
      cpu_relax();
    }
    t_in_parallel = false;
  }
};

// The pool is created on first use and never destroyed (its workers are detached and may still be
// sleeping at exit). A child process of fork() has none of the parent's threads: it forgets the
// parent's pool (leaked on purpose; its mutexes may be held) and makes its own when needed.
std::mutex* g_pool_mutex = new std::mutex;
Pool* g_pool = nullptr;

void atfork_prepare() { g_pool_mutex->lock(); }
void atfork_parent() { g_pool_mutex->unlock(); }
void atfork_child() {
  g_pool_mutex = new std::mutex;  // the copy of the parent's is locked: start with a fresh one
  g_pool = nullptr;
  t_in_parallel = false;
}

Pool* pool() {
  std::lock_guard<std::mutex> lock(*g_pool_mutex);
  if (!g_pool) {
    static bool registered = false;
    if (!registered) {
      pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
      registered = true;
    }
    g_pool = new Pool;
  }
  return g_pool;
}

}  // namespace

int get_num_threads() { return threads_slot().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
  threads_slot().store(n, std::memory_order_relaxed);
}

bool in_parallel() { return t_in_parallel; }

namespace detail {

void run_parts(int64_t nparts, int nthreads, PartFn fn, void* ctx) {
  Pool* p = pool();
  std::unique_lock<std::mutex> region(p->submit, std::try_to_lock);
  if (!region.owns_lock()) {
    // Another thread (e.g. a second Python thread calling a kernel) holds the pool: run inline.
    // Same parts, same results.
    t_in_parallel = true;
    for (int64_t i = 0; i < nparts; ++i) fn(ctx, i);
    t_in_parallel = false;
    return;
  }
  p->run(nparts, nthreads, fn, ctx);
}

}  // namespace detail
}  // namespace fg
