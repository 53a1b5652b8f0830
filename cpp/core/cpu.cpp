#include "forgegrad/cpu.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace fg {
namespace {

bool cpu_has(Isa isa) {
  if (isa == Isa::scalar) return true;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (isa == Isa::avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == Isa::avx512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
#endif
  return false;
}

Isa initial_isa() {
  Isa best = detected_isa();
  if (const char* env = std::getenv("FORGEGRAD_SIMD")) {
    if (env[0] != '\0') {
      try {
        Isa want = isa_from_name(env);
        if (static_cast<int>(want) < static_cast<int>(best)) return want;
      } catch (const std::invalid_argument&) {
        // An unknown value keeps the detected path; forgegrad.cpu_info() reports the variable.
      }
    }
  }
  return best;
}

std::atomic<int>& isa_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

Isa detected_isa() {
  static const Isa best = cpu_has(Isa::avx512) ? Isa::avx512 : cpu_has(Isa::avx2) ? Isa::avx2 : Isa::scalar;
  return best;
}

Isa active_isa() { return static_cast<Isa>(isa_slot().load(std::memory_order_relaxed)); }

void set_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(detected_isa()))
    throw std::invalid_argument(std::string("this CPU does not support the '") + isa_name(isa) +
                                "' path (best available: '" + isa_name(detected_isa()) + "')");
  isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

Isa isa_from_name(const std::string& name) {
  if (name == "scalar" || name == "portable") return Isa::scalar;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") return Isa::avx512;
  throw std::invalid_argument("unknown SIMD path '" + name + "' (expected 'avx512', 'avx2' or 'scalar')");
}

}  // namespace fg
