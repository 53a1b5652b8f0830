// forgegrad._C.embedding: the deterministic embedding backward of cpp/kernels/per_isa/embedding.cpp.
// The positions are grouped by row here (a stable counting sort); the kernel sums each row's
// positions in ascending order.
#include <string>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/py_array.h"

namespace fg {

// grad_weight (V, D) from grad (n, D): row v sums grad[order[p]] for p in [starts[v], starts[v+1]).
FG_KERNEL(void, embedding_backward,
          (const float* grad, const int64_t* starts, const int64_t* order, int64_t V, int64_t D, int64_t padding_idx,
           float* grad_weight),
          (grad, starts, order, V, D, padding_idx, grad_weight))

}  // namespace fg

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

void backward(const py::array& grad, const py::array& indices, int64_t padding_idx, const py::array& grad_weight) {
  ArrayArg G = fg::bind::f32_arg(grad, "grad", 2), I = fg::bind::i64_arg(indices, "indices", 1);
  ArrayArg W = fg::bind::f32_arg(grad_weight, "grad_weight", 2, fg::bind::kContiguous, true);
  const int64_t n = I.dim(0), D = G.dim(1), V = W.dim(0);
  fg::bind::expect_shape(G, "grad", {n, W.dim(1)});
  if (padding_idx < -1 || padding_idx >= V)
    throw py::value_error("embedding_backward: padding_idx must be -1 (none) or in [0, " + std::to_string(V) +
                          "), got " + std::to_string(padding_idx));
  fg::bind::check_no_overlap("embedding_backward", {{grad, "grad"}, {indices, "indices"}},
                             {{grad_weight, "grad_weight"}});
  const int64_t* idx = I.i64();
  std::vector<int64_t> starts(static_cast<size_t>(V) + 1, 0), order(static_cast<size_t>(n));
  for (int64_t p = 0; p < n; ++p) {
    if (idx[p] < 0 || idx[p] >= V)
      throw py::index_error("embedding_backward: indices[" + std::to_string(p) + "] = " + std::to_string(idx[p]) +
                            " is out of range [0, " + std::to_string(V) + ")");
    ++starts[idx[p] + 1];
  }
  for (int64_t v = 0; v < V; ++v) starts[v + 1] += starts[v];
  {
    std::vector<int64_t> next(starts.begin(), starts.end() - 1);
    for (int64_t p = 0; p < n; ++p) order[next[idx[p]]++] = p;  // ascending p within a row: stable
  }
  py::gil_scoped_release release;
  fg::embedding_backward(G.f32(), starts.data(), order.data(), V, D, padding_idx, W.f32());
}

void bind(py::module_& m) {
  m.def("embedding_backward", &backward, py::arg("grad"), py::arg("indices"), py::arg("padding_idx"),
        py::arg("grad_weight"),
        "grad_weight[v] = sum of grad[p] over the positions p with indices[p] == v, added in ascending p (the "
        "same bits at any thread count); row padding_idx (-1: none) gets 0. grad (n, D), indices (n,) int64.");
}

}  // namespace

FG_REGISTER_BINDINGS(embedding, bind)
