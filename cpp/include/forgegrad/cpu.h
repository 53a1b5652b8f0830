// Run-time choice of instruction set. Kernels are compiled once per ISA (cpp/kernels/per_isa/) and
// the dispatcher (dispatch.h) calls the variant named by active_isa().
#pragma once
#include <string>

namespace fg {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

// Best ISA this CPU supports (AVX-512 needs F+BW+VL+DQ; AVX2 needs AVX2+FMA).
Isa detected_isa();
// The ISA kernels use now: detected_isa(), lowered by FORGEGRAD_SIMD or set_isa().
Isa active_isa();
// Force a path (for tests). Throws std::invalid_argument if the CPU lacks it.
void set_isa(Isa isa);
const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);  // throws std::invalid_argument

}  // namespace fg
