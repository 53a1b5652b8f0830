// The int8 path choice (AMX / VNNI / AVX2 / portable), weight packing and quantization parameters:
// ISA-neutral code, compiled once. The kernels are in per_isa/qgemm.cpp.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "forgegrad/qgemm.h"

#if defined(__x86_64__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace fg {
namespace {

#if defined(__x86_64__)
bool cpu_has_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni");
}

// AVX-VNNI (the VEX encoding of vpdpbusd on 128/256-bit registers): CPUID.(7,1):EAX bit 4. Its
// register state is AVX's, which detected_isa() >= avx2 has already checked with the OS.
bool cpu_has_avx_vnni() {
  unsigned a, b, c, d;
  return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4));
}

// AMX-INT8 needs the CPU (CPUID.7.0:EDX bits 24 AMX-TILE and 25 AMX-INT8), the OS to manage the
// tile state (XCR0 bits 17-18), and, on Linux >= 5.16, the process's permission for the 8 KB tile
// data state, which is requested once with arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
std::string probe_amx() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return "CPUID leaf 7 is not available";
  if (!(d & (1u << 24)) || !(d & (1u << 25))) return "this CPU has no AMX-INT8 (CPUID AMX-TILE/AMX-INT8)";
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return "the OS has not enabled XSAVE (OSXSAVE)";
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & (3u << 17)) != (3u << 17)) return "the OS does not enable the AMX tile state (XCR0 bits 17-18)";
  if (!cpu_has_vnni()) return "AMX path also needs AVX-512 VNNI for its row tails";
#if defined(__linux__)
  constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0)
    return "Linux refused the AMX tile data permission (arch_prctl ARCH_REQ_XCOMP_PERM failed; kernel < 5.16?)";
  unsigned long long mask = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &mask) != 0 || !(mask & (1ull << kXfeatureXtiledata)))
    return "Linux did not grant the AMX tile data permission (ARCH_GET_XCOMP_PERM)";
  return "";
#else
  return "AMX is only enabled on Linux (the tile state permission is requested from the kernel)";
#endif
}
#endif

const std::string& amx_reason() {
#if defined(__x86_64__)
  static const std::string reason = probe_amx();
#else
  static const std::string reason = "AMX needs an x86-64 CPU";
#endif
  return reason;
}

QPath best_qpath() {
#if defined(__x86_64__)
  if (detected_isa() == Isa::avx512) {
    if (amx_reason().empty()) return QPath::amx;
    if (cpu_has_vnni()) return QPath::vnni;
  }
  if (static_cast<int>(detected_isa()) >= static_cast<int>(Isa::avx2))
    return cpu_has_avx_vnni() ? QPath::avx_vnni : QPath::avx2;
#endif
  return QPath::scalar;
}

// The avx_vnni path's encoding: VEX where the CPU has AVX-VNNI, else EVEX (then the path is available
// only because the CPU has AVX-512 VNNI: detected_qpath() >= vnni).
bool avx_vnni_vex() {
#if defined(__x86_64__)
  static const bool vex = static_cast<int>(detected_isa()) >= static_cast<int>(Isa::avx2) && cpu_has_avx_vnni();
  return vex;
#else
  return false;
#endif
}

// -1: the best available (capped by the SIMD path); otherwise a forced QPath.
std::atomic<int>& forced_slot() {
  static std::atomic<int> slot{[] {
    const char* env = std::getenv("FORGEGRAD_INT8");
    if (env && env[0]) {
      try {
        QPath want = qpath_from_name(env);
        if (static_cast<int>(want) <= static_cast<int>(best_qpath())) return static_cast<int>(want);
      } catch (const std::invalid_argument&) {
        // an unknown name keeps the best path (forgegrad.quantization.int8_path() shows which ran)
      }
    }
    return -1;
  }()};
  return slot;
}

}  // namespace

const char* amx_unavailable_reason() { return amx_reason().c_str(); }

const char* avx_vnni_encoding() {
  if (static_cast<int>(detected_qpath()) < static_cast<int>(QPath::avx_vnni)) return "";
  return avx_vnni_vex() ? "vex" : "evex";
}

QPath detected_qpath() {
  static const QPath best = best_qpath();
  return best;
}

QPath active_qpath() {
  const int forced = forced_slot().load(std::memory_order_relaxed);
  QPath q = forced >= 0 ? static_cast<QPath>(forced) : detected_qpath();
  // forgegrad.set_simd lowers the int8 path too: AVX2 allows the AVX2 kernels (avx_vnni with its VEX
  // encoding, an AVX2-class extension, not the EVEX one), scalar the portable one.
  switch (active_isa()) {
    case Isa::scalar: return QPath::scalar;
    case Isa::avx2: return std::min(q, avx_vnni_vex() ? QPath::avx_vnni : QPath::avx2);
    default: return q;
  }
}

void set_qpath(QPath path) {
  if (static_cast<int>(path) > static_cast<int>(detected_qpath())) {
    std::string why = std::string("this machine cannot run the '") + qpath_name(path) + "' int8 path (best: '" +
                      qpath_name(detected_qpath()) + "')";
    if (path == QPath::amx) why += ": " + amx_reason();
    throw std::invalid_argument(why);
  }
  forced_slot().store(static_cast<int>(path), std::memory_order_relaxed);
}

void reset_qpath() { forced_slot().store(-1, std::memory_order_relaxed); }

const char* qpath_name(QPath path) {
  switch (path) {
    case QPath::scalar: return "scalar";
    case QPath::avx2: return "avx2";
    case QPath::avx_vnni: return "avx_vnni";
    case QPath::vnni: return "avx512_vnni";
    case QPath::amx: return "amx";
  }
  return "unknown";
}

QPath qpath_from_name(const char* name) {
  const std::string n = name;
  if (n == "scalar" || n == "portable") return QPath::scalar;
  if (n == "avx2") return QPath::avx2;
  if (n == "avx_vnni") return QPath::avx_vnni;
  if (n == "avx512_vnni" || n == "vnni") return QPath::vnni;
  if (n == "amx") return QPath::amx;
  throw std::invalid_argument("unknown int8 path '" + n +
                              "' (expected 'amx', 'avx512_vnni', 'avx_vnni', 'avx2' or 'scalar')");
}

void qgemm(const QGemmArgs& p) {
  switch (active_qpath()) {
    case QPath::amx: return avx512::qgemm(p, true);
    case QPath::vnni: return avx512::qgemm(p, false);
    case QPath::avx_vnni: return avx2::qgemm_dpbusd256(p, avx_vnni_vex());
    case QPath::avx2: return avx2::qgemm(p);
    default: return scalar::qgemm(p);
  }
}

bool qrnn_step_b1(const QRnnStepArgs& s) {
  const QPath path = active_qpath();
  // The AMX path runs rows this short on its VNNI microkernel too.
  return (path == QPath::vnni || path == QPath::amx) && avx512::qrnn_step_b1(s);
}

void qpack_weight(const int8_t* w, int64_t N, int64_t K, int64_t ldw, int8_t* packed, int32_t* colsum) {
  const int64_t Kp = qpad_k(K), Np = qpad_n(N), K4 = Kp / 4;
  std::memset(packed, 0, static_cast<size_t>(Np * Kp));
  for (int64_t n = 0; n < N; ++n) {
    int8_t* blk = packed + (n / 16) * K4 * 64 + (n % 16) * 4;
    const int8_t* row = w + n * ldw;
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) {
      blk[(k / 4) * 64 + k % 4] = row[k];
      s += row[k];
    }
    colsum[n] = s;
  }
}

QParams choose_qparams_u8(float mn, float mx, bool reduce_range) {
  // fbgemm's ChooseQuantizationParams (torch.ops.quantized.linear_dynamic), in the same precision.
  int32_t qmin = 0, qmax = 255;
  if (reduce_range) {
    qmin /= 2;
    qmax /= 2;
  }
  mn = std::min(mn, 0.0f);
  mx = std::max(mx, 0.0f);
  double scale = (static_cast<double>(mx) - mn) / (qmax - qmin);
  if (static_cast<float>(scale) == 0.0f || std::isinf(1.0f / static_cast<float>(scale))) scale = 0.1;
  constexpr float kSmallScale = 6.1e-5f;  // tiny ranges are widened (fbgemm's SMALL_SCALE_THRESHOLD)
  if (scale < kSmallScale) {
    const double org = scale;
    scale = kSmallScale;
    if (mn == 0.0f)
      mx = static_cast<float>(kSmallScale * (qmax - qmin));
    else if (mx == 0.0f)
      mn = static_cast<float>(-kSmallScale * (qmax - qmin));
    else {
      const float amplifier = static_cast<float>(kSmallScale / org);
      mn *= amplifier;
      mx *= amplifier;
    }
  }
  const double zp_from_min = qmin - mn / scale, zp_from_max = qmax - mx / scale;
  const double err_min = std::abs(qmin) + std::abs(mn / scale), err_max = std::abs(qmax) + std::abs(mx / scale);
  const double zp0 = err_min < err_max ? zp_from_min : zp_from_max;
  int32_t zp;
  if (zp0 < qmin)
    zp = qmin;
  else if (zp0 > qmax)
    zp = qmax;
  else
    zp = static_cast<int32_t>(std::nearbyint(zp0));
  return {static_cast<float>(scale), zp};
}

}  // namespace fg
