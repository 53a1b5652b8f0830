// The thread pool behind parallel_for / parallel_tasks (see forgegrad/parallel.h).
//
// Why not OpenMP: an OpenMP region ends in a barrier, so the calling thread waits for every team
// member, and libgomp's idle workers spin for a long while (GOMP_SPINCOUNT, fixed at start-up) before
// sleeping. On a machine where another process keeps the cores busy, a region of a few microseconds
// (one RNN step at a small hidden size) then costs a scheduler time slice whenever a worker is not
// running, and the spinning workers take CPU from the caller: 2 threads ran a small LSTM step ~8x
// slower than 1. Here the caller claims parts itself and only waits for parts a worker has started;
// idle workers spin for kSpinNs, yield until kYieldNs, then sleep on a condition variable.
//
// Claiming alone still left 2 threads 2-8 % slower than 1 on small RNN steps with one other process
// spinning on a 2-core machine: a worker that spins or yields between regions is always runnable, so
// three threads share two cores; the worker sat on a run queue for ~80 % of the wall time, ran in ~10 %
// of the regions, and the caller lost time slices to it. So the pool backs off when a thread is found
// descheduled (a waiting worker's clock jumped, a woken worker started late, the caller waited on a
// run queue, or the caller ran every part of regions spanning 2 ms: the worker never got a core):
// regions below kBusyMinWork run on the caller alone (threads_for) and idle workers sleep, for 5 ms,
// doubling while each probe at its end fails (up to 1 s). (The caller measures time lost, not
// involuntary context switches: any thread gets a few short ones a second, 3-7 on a 2-vCPU VM, and
// counting them kept the pool backed off on an idle machine.)
#include "forgegrad/parallel.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

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
thread_local bool t_back_to_back = false;  // a BackToBackScope lives on this thread

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

using Clock = std::chrono::steady_clock;
// An idle worker polls for the next region for kSpinNs (consecutive regions, such as the time steps
// of an RNN, follow each other within microseconds), then polls with sched_yield until kYieldNs (lets
// another runnable thread have the core), then sleeps until woken (a futex wake costs the caller a
// few microseconds, paid only after a pause this long).
constexpr int64_t kSpinNs = 50'000, kYieldNs = 1'000'000;
constexpr int kMaxWorkers = 255;

// Back-off on an oversubscribed machine. A waiting worker reads the clock every ~64 pauses (about a
// microsecond); a gap of kDescheduled means the scheduler gave its core to another thread. A woken
// worker that starts kDescheduled late counts too: that is the signal on a busy machine. (On an idle
// machine a woken worker starts within tens of microseconds; on a 2-vCPU VM, now and then 400-700 us,
// when the hypervisor is slow to wake an idle vCPU: a short back-off, the price of seeing busy machines.)
constexpr int64_t kDescheduledNs = 200'000;
constexpr int64_t kBackoffMinNs = 5'000'000, kBackoffMaxNs = 1'000'000'000;
constexpr int64_t kProbeNs = 50'000'000;  // a descheduling this soon after a back-off ends doubles the next
std::atomic<int64_t> g_busy_until{0};  // steady-clock ns until which the pool backs off; 0: it does not
std::atomic<int64_t> g_backoff_ns{kBackoffMinNs};
std::atomic<int64_t> g_last_backoff_end{0};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

void note_descheduled(int64_t now) {
  int64_t backoff = g_backoff_ns.load(std::memory_order_relaxed);
  // Soon after a back-off ended (the probe failed): back off longer. Else this is news: start short.
  if (now - g_last_backoff_end.load(std::memory_order_relaxed) > kProbeNs) backoff = kBackoffMinNs;
  g_last_backoff_end.store(now + backoff, std::memory_order_relaxed);
  g_busy_until.store(now + backoff, std::memory_order_relaxed);
  g_backoff_ns.store(backoff * 2 < kBackoffMaxNs ? backoff * 2 : kBackoffMaxNs, std::memory_order_relaxed);
}

// The caller can be the thread that loses its core (the worker alone on the other one); its own clock
// cannot tell (its parts are long). Linux counts the time each thread waits on a run queue, runnable
// but not running (/proc/thread-self/schedstat, second field): at most once a millisecond the caller
// reads it (a pread, ~1 us) and backs off when it grew by kDescheduledNs since the last reading. Where
// the file cannot be read (not Linux, /proc not mounted) only the workers' tests apply.
struct RunDelayFile {
  int fd = -2;  // -2: not opened yet; -1: unavailable
  ~RunDelayFile() { reset(); }
  void reset() {
    if (fd >= 0) close(fd);
    fd = -2;
  }
  // Nanoseconds this thread has waited on a run queue, or -1.
  int64_t read() {
    if (fd == -2) fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[128];
    const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return -1;
    buf[n] = '\0';
    char* rest = buf;
    std::strtoll(buf, &rest, 10);  // time on a CPU
    return std::strtoll(rest, nullptr, 10);
  }
};
thread_local RunDelayFile t_run_delay;

void sample_caller() {
  thread_local int64_t next_sample = 0, last_sample = 0;
  thread_local int64_t last_delay = -1;
  const int64_t now = now_ns();
  if (now < next_sample) return;
  next_sample = now + 1'000'000;
  const int64_t delay = t_run_delay.read(), waited = delay - last_delay;
  // At least 1/20 of the time since the last reading too: the waits of microseconds that any thread
  // gets now and then add up over a long stretch without regions (a second of other work).
  if (delay >= 0 && last_delay >= 0 && waited >= kDescheduledNs && waited * 20 >= now - last_sample)
    note_descheduled(now);
  last_delay = delay;
  last_sample = now;
}

bool backing_off() {
  int64_t until = g_busy_until.load(std::memory_order_relaxed);
  if (until == 0) return false;  // the common case: no clock read
  if (now_ns() < until) return true;
  // Expired: the next region probes the workers (unless a new back-off was noted meanwhile).
  g_busy_until.compare_exchange_strong(until, 0, std::memory_order_relaxed);
  return false;
}

// A region long enough for a running worker to have joined it, yet the caller ran every part: the
// workers were not running (woken too late, or on a core another process holds). kIdleRegions such
// regions in a row count as a descheduling: the second thread only added the cost of waking it.
constexpr int64_t kIdleRegionNs = 20'000;
constexpr int kIdleRegions = 3;
constexpr int64_t kIdleSpanNs = 2'000'000;
// A region published to a sleeping worker says nothing: on a VM waking an idle vCPU alone can take longer than the
// region (so a back-off, whose workers sleep, would never end: every probe would find them late).
void note_idle_workers(bool caller_did_all, bool worker_slept, int64_t begun, int64_t now) {
  thread_local int idle = 0;
  thread_local int64_t first = 0;
  if (worker_slept) return;
  if (!caller_did_all) {
    idle = 0;
    return;
  }
  if (now - begun < kIdleRegionNs) return;
  if (idle++ == 0) first = begun;
  if (idle >= kIdleRegions && now - first >= kIdleSpanNs) {
    idle = 0;
    note_descheduled(now);
  }
}

struct Pool {
  std::mutex submit;  // one region at a time; a region started while another runs goes inline
  std::mutex m;  // guards sleeping on `wake` and `all_done` only: claiming a part takes no lock
  std::condition_variable wake;  // workers: a new region
  std::condition_variable all_done;  // caller: remaining reached 0
  // The current region: (generation << 32) | parts not claimed yet. A part is claimed by one
  // compare-exchange of this word, which also proves that the region read with it is still the
  // current one (the fields below are rewritten only once every part of it was claimed and done).
  // (Two threads taking a mutex for each claim collided at the start of every region: a futex sleep
  // and wake, microseconds each, in every region of a small forward.)
  std::atomic<uint64_t> ticket{0};
  std::atomic<int64_t> remaining{0};  // parts not finished in the current region
  std::atomic<detail::PartFn> fn{nullptr};
  std::atomic<void*> ctx{nullptr};
  std::atomic<int64_t> nparts{0};
  std::atomic<int> helpers{0};  // workers with index < helpers may claim parts
  int nworkers = 0;  // started (under submit)
  std::atomic<int> sleeping{0};  // workers waiting on `wake` (changed under m)
  std::atomic<bool> caller_sleeps{false};  // the caller waits on `all_done` (changed under m)
  std::atomic<int64_t> woken_at{0};  // when the current region was published to sleeping workers

  static uint32_t gen_of(uint64_t t) { return static_cast<uint32_t>(t >> 32); }
  static constexpr uint64_t kLeftMask = 0xffffffffu;

  // Claims the next part of region g for worker `index` (-1: the caller); false when none is left
  // or the region does not use this worker.
  bool claim(uint32_t g, int index, detail::PartFn& f, void*& c, int64_t& part) {
    uint64_t t = ticket.load(std::memory_order_acquire);
    // helpers read after the ticket: this region's count or a newer one's
    if (index >= helpers.load(std::memory_order_relaxed)) return false;
    for (;;) {
      if (gen_of(t) != g || (t & kLeftMask) == 0) return false;
      f = fn.load(std::memory_order_relaxed);
      c = ctx.load(std::memory_order_relaxed);
      const int64_t n = nparts.load(std::memory_order_relaxed);
      if (ticket.compare_exchange_weak(t, t - 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        part = n - static_cast<int64_t>(t & kLeftMask);
        return true;
      }
    }
  }

  void finish_part() {
    if (remaining.fetch_sub(1, std::memory_order_seq_cst) == 1 && caller_sleeps.load(std::memory_order_seq_cst)) {
      std::lock_guard<std::mutex> lock(m);  // the caller checks `remaining` under m before sleeping
      all_done.notify_one();
    }
  }

  void work(uint32_t g, int index) {
    detail::PartFn f;
    void* c;
    int64_t part;
    while (claim(g, index, f, c, part)) {
      f(c, part);
      finish_part();
    }
  }

  uint32_t wait_for_region(uint32_t seen) {
    const int64_t start = now_ns();
    int64_t last = start;  // the last clock read: a jump since then is a descheduling
    bool backoff = false;  // sleeping because the pool backs off
    for (unsigned i = 1;; ++i) {
      const uint32_t g = gen_of(ticket.load(std::memory_order_acquire));
      if (g != seen) {
        const int64_t now = now_ns();
        if (now - last >= kDescheduledNs) note_descheduled(now);
        return g;
      }
      if ((i & 63) == 0) {
        const int64_t now = now_ns();
        if (now - last >= kDescheduledNs) {
          note_descheduled(now);
          break;
        }
        if (now - start >= kYieldNs) break;
        if (backing_off()) {
          backoff = true;
          break;
        }
        if (now - start >= kSpinNs) std::this_thread::yield();
        last = now_ns();
      }
      cpu_relax();
    }
    std::unique_lock<std::mutex> lock(m);
    // sleeping before the ticket's re-check, the caller's ticket store before its sleeping check
    // (both seq_cst): one of the two sees the other, so a region is never published unseen
    sleeping.fetch_add(1, std::memory_order_seq_cst);
    if (gen_of(ticket.load(std::memory_order_seq_cst)) == seen) {
      const int64_t slept = now_ns();
      wake.wait(lock, [&] { return gen_of(ticket.load(std::memory_order_seq_cst)) != seen; });
      // late since the wake (stored under m before it); a region published just before the wait, whose caller
      // had not stored woken_at yet, is measured from `slept`. Not after a back-off's sleep: the probe at its end
      // would find the idle vCPU of a VM slow to wake (400-700 us) and renew the back-off on a quiet machine.
      const int64_t now = now_ns(), woken = woken_at.load(std::memory_order_relaxed);
      if (!backoff && now - (woken > slept ? woken : slept) >= kDescheduledNs) note_descheduled(now);
    }
    sleeping.fetch_sub(1, std::memory_order_relaxed);
    return gen_of(ticket.load(std::memory_order_acquire));
  }

  void worker_main(int index, uint32_t seen) {
    t_in_parallel = true;  // kernels called from a part never start nested regions
    for (;;) {
      seen = wait_for_region(seen);
      work(seen, index);
    }
  }

  void ensure_workers(int n) {
    if (n > kMaxWorkers) n = kMaxWorkers;
    while (nworkers < n) {
      const uint32_t seen = gen_of(ticket.load(std::memory_order_relaxed));
      const int index = nworkers;
      try {
        std::thread([this, index, seen] { worker_main(index, seen); }).detach();
      } catch (...) {  // no more threads: run with the ones we have
        return;
      }
      ++nworkers;
    }
  }

  // count < 2^32 (run_parts splits larger regions).
  void run(int64_t count, int nthreads, detail::PartFn f, void* c) {
    ensure_workers(nthreads - 1);
    fn.store(f, std::memory_order_relaxed);
    ctx.store(c, std::memory_order_relaxed);
    nparts.store(count, std::memory_order_relaxed);
    helpers.store(nthreads - 1, std::memory_order_relaxed);
    remaining.store(count, std::memory_order_relaxed);
    const uint32_t g = gen_of(ticket.load(std::memory_order_relaxed)) + 1;
    ticket.store((uint64_t{g} << 32) | static_cast<uint64_t>(count), std::memory_order_seq_cst);
    const bool woke = sleeping.load(std::memory_order_seq_cst) > 0;
    if (woke) {  // a futex wake only when a worker sleeps
      std::lock_guard<std::mutex> lock(m);
      woken_at.store(now_ns(), std::memory_order_relaxed);
      wake.notify_all();
    }
    t_in_parallel = true;
    detail::PartFn pf;
    void* pc;
    int64_t part, mine = 0;
    const int64_t begun = now_ns();
    while (claim(g, -1, pf, pc, part)) {
      pf(pc, part);
      finish_part();
      ++mine;
    }
    // Only parts a worker has claimed are left: wait for them.
    const int64_t start = now_ns();
    note_idle_workers(mine == count, woke, begun, start);
    for (unsigned i = 1; remaining.load(std::memory_order_acquire) != 0; ++i) {
      if ((i & 63) == 0 && now_ns() - start >= kSpinNs) {
        std::unique_lock<std::mutex> lock(m);
        caller_sleeps.store(true, std::memory_order_seq_cst);
        all_done.wait(lock, [&] { return remaining.load(std::memory_order_seq_cst) == 0; });
        caller_sleeps.store(false, std::memory_order_relaxed);
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
  t_run_delay.reset();  // opened in the parent, it reads the parent's thread
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

SerialScope::SerialScope() : previous_(t_in_parallel) { t_in_parallel = true; }
SerialScope::~SerialScope() { t_in_parallel = previous_; }

BackToBackScope::BackToBackScope() : previous_(t_back_to_back) { t_back_to_back = true; }
BackToBackScope::~BackToBackScope() { t_back_to_back = previous_; }

int64_t split_work(int64_t idle) { return t_back_to_back && idle > kBackToBackWork ? kBackToBackWork : idle; }

int threads_for(int64_t work) {
  const int n = get_num_threads();
  if (n <= 1 || t_in_parallel) return 1;
  if (work >= kBusyMinWork) return n;
  // sample_caller's clock read on every 8th call only (it reads the run-queue time once a
  // millisecond at most anyway): for the small regions of an RNN step it cost ~1 % of the step.
  thread_local unsigned calls = 0;
  if ((calls++ & 7) == 0) sample_caller();
  return backing_off() ? 1 : n;
}

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
  constexpr int64_t kMaxParts = int64_t(1) << 31;  // the ticket counts parts in 32 bits
  if (nparts <= kMaxParts) {
    p->run(nparts, nthreads, fn, ctx);
    return;
  }
  for (int64_t base = 0; base < nparts; base += kMaxParts) {
    struct Slice {
      PartFn fn;
      void* ctx;
      int64_t base;
    } slice{fn, ctx, base};
    const PartFn shifted = [](void* s, int64_t part) {
      const Slice* sl = static_cast<const Slice*>(s);
      sl->fn(sl->ctx, sl->base + part);
    };
    p->run(nparts - base < kMaxParts ? nparts - base : kMaxParts, nthreads, shifted, &slice);
  }
}

}  // namespace detail
}  // namespace fg
