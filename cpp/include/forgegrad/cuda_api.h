// Host-side entry points of the CUDA kernels (cuda/*.cu). Declared here so the bindings can call
// them without including CUDA headers; defined only when CMake builds with FORGEGRAD_WITH_CUDA.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace fg::cuda {

// Number of usable devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// Human-readable reason when device_count() == 0 (e.g. "no CUDA-capable device is detected").
std::string unavailable_reason();

}  // namespace fg::cuda
