#include "forgegrad/parallel.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <thread>

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

}  // namespace

int get_num_threads() { return threads_slot().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
  threads_slot().store(n, std::memory_order_relaxed);
}

}  // namespace fg
