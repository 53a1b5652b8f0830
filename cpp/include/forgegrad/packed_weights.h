// Weights packed once for inference (nn.utils.freeze), as onnxruntime prepacks at session creation:
// the Python classes _C.gemm.PackedWeight and _C.conv.PackedConvWeight, shared with _C.plan, which
// runs a frozen Sequential's layers in one call. Each is a snapshot of `source` under the ISA active
// when it was made; a kernel uses it only with that same array and that ISA.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

#include "forgegrad/conv.h"
#include "forgegrad/cpu.h"
#include "forgegrad/memory.h"

namespace fg::bind {

// A Linear weight (N, K) packed for sgemm_prepacked_b (see gemm.h).
struct PackedLinearWeight {
  pybind11::object source;
  int64_t N = 0, K = 0;
  fg::Isa isa = fg::Isa::scalar;
  fg::AlignedBuffer buf;
};

// A conv weight's Winograd transform (empty for kernels that never run Winograd).
struct PackedConvWeight {
  pybind11::object source;
  int64_t groups = 1;
  fg::Isa isa = fg::Isa::scalar;
  fg::AlignedBuffer buf;
};

// conv2d's geometry with every check conv2d_forward makes (bind_conv.cpp); padding is (top, bottom,
// left, right). Throws ValueError naming the argument.
fg::Conv2dGeom conv2d_geom(const std::vector<int64_t>& input_shape, const std::vector<int64_t>& weight_shape,
                           std::pair<int64_t, int64_t> stride, std::tuple<int64_t, int64_t, int64_t, int64_t> padding,
                           std::pair<int64_t, int64_t> dilation, int64_t groups);

}  // namespace fg::bind
