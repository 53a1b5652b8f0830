// One place that turns a kernel signature into its three per-ISA declarations and a dispatcher.
//
//   namespace fg { FG_KERNEL(void, relu_forward, (const float* x, float* y, int64_t n), (x, y, n)) }
//
// declares fg::scalar::relu_forward, fg::avx2::relu_forward, fg::avx512::relu_forward (defined
// once in a cpp/kernels/per_isa/ file, compiled per ISA) and, outside per_isa/ files, the dispatcher
// fg::relu_forward(...) that calls the variant of fg::active_isa(). Inside a per_isa/ file call the
// same-ISA variant directly: FG_ISA_NS::relu_forward(...).
#pragma once
#include "forgegrad/cpu.h"

#define FG_KERNEL_DECLS_(ret, name, params) \
  namespace scalar {                        \
  ret name params;                          \
  }                                         \
  namespace avx2 {                          \
  ret name params;                          \
  }                                         \
  namespace avx512 {                        \
  ret name params;                          \
  }

#ifdef FG_ISA_NS
#define FG_KERNEL(ret, name, params, args) FG_KERNEL_DECLS_(ret, name, params)
#else
#define FG_KERNEL(ret, name, params, args)              \
  FG_KERNEL_DECLS_(ret, name, params)                   \
  inline ret name params {                              \
    switch (::fg::active_isa()) {                       \
      case ::fg::Isa::avx512: return avx512::name args; \
      case ::fg::Isa::avx2: return avx2::name args;     \
      default: return scalar::name args;                \
    }                                                   \
  }
#endif
