// float32 <-> bfloat16 conversions (cpp/kernels/per_isa/bf16_convert.cpp; forgegrad._C.bf16). bfloat16 values
// are their uint16 bit patterns. f32_to_bf16 rounds to nearest even (a NaN: the quiet NaN of its sign, 0x7FC0 /
// 0xFFC0, as ml_dtypes); bf16_to_f32 widens exactly. in and out must not overlap; threads over large n.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

FG_KERNEL(void, f32_to_bf16, (const float* in, uint16_t* out, int64_t n), (in, out, n))
FG_KERNEL(void, bf16_to_f32, (const uint16_t* in, float* out, int64_t n), (in, out, n))

}  // namespace fg
