// forgegrad._C.topk: top-k and stable sort of float32 rows (rows, n) along the last axis (forgegrad.topk / sort /
// argsort / kthvalue, generation's top-k filter). Every array is checked here before a kernel runs.
#include <string>

#include "forgegrad/bindings.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/py_array.h"

// The kernels of cpp/kernels/per_isa/topk.cpp (order, ties and thread contract there).
namespace fg {

FG_KERNEL(void, topk_rows_f32,
          (const float* x, int64_t rows, int64_t n, int64_t k, bool largest, float* vals, int64_t* idx),
          (x, rows, n, k, largest, vals, idx))

FG_KERNEL(void, sort_rows_f32, (const float* x, int64_t rows, int64_t n, bool descending, float* vals, int64_t* idx),
          (x, rows, n, descending, vals, idx))

}  // namespace fg

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

// The kernels key an element by its index in 32 bits (0xFFFFFFFF is never an index).
constexpr int64_t kMaxRow = 0xFFFFFFFFll;

struct Outs {
  ArrayArg X, V, I;
};

Outs check(const char* fn, const py::array& x, int64_t k, const py::array& values, const py::array& indices) {
  Outs o;
  o.X = fg::bind::f32_arg(x, "x", 2);
  const int64_t rows = o.X.shape[0], n = o.X.shape[1];
  if (n >= kMaxRow)
    throw py::value_error(std::string(fn) + ": rows of x must be shorter than 2**32 - 1 elements, got " +
                          std::to_string(n));
  if (k < 0 || k > n)
    throw py::value_error(std::string(fn) + ": k must be in [0, " + std::to_string(n) + "] (x's row length), got " +
                          std::to_string(k));
  o.V = fg::bind::f32_arg(values, "values", 2, fg::bind::kContiguous, true);
  o.I = fg::bind::i64_arg(indices, "indices", 2, fg::bind::kContiguous, true);
  fg::bind::expect_shape(o.V, "values", {rows, k});
  fg::bind::expect_shape(o.I, "indices", {rows, k});
  fg::bind::check_no_overlap(fn, {{x, "x"}}, {{values, "values"}, {indices, "indices"}});
  return o;
}

void topk(const py::array& x, int64_t k, bool largest, const py::array& values, const py::array& indices) {
  Outs o = check("topk_f32", x, k, values, indices);
  if (o.V.size == 0) return;
  py::gil_scoped_release release;
  fg::topk_rows_f32(o.X.f32(), o.X.shape[0], o.X.shape[1], k, largest, o.V.f32(), o.I.i64());
}

void sort(const py::array& x, bool descending, const py::array& values, const py::array& indices) {
  ArrayArg X = fg::bind::f32_arg(x, "x", 2);
  Outs o = check("sort_f32", x, X.shape[1], values, indices);
  if (o.V.size == 0) return;
  py::gil_scoped_release release;
  fg::sort_rows_f32(o.X.f32(), o.X.shape[0], o.X.shape[1], descending, o.V.f32(), o.I.i64());
}

void bind(py::module_& m) {
  m.def("topk_f32", &topk, py::arg("x"), py::arg("k"), py::arg("largest"), py::arg("values"), py::arg("indices"),
        "values, indices (rows, k) = the k largest (largest=False: smallest) of each row of float32 x (rows, n), "
        "best first: NaN the largest, -0.0 equal to 0.0, equal values in index order (the first k of a stable "
        "sort). Bit-identical for any thread count.");
  m.def("sort_f32", &sort, py::arg("x"), py::arg("descending"), py::arg("values"), py::arg("indices"),
        "values, indices (rows, n) = each row of float32 x (rows, n) sorted stably (equal values in index order), "
        "ascending with NaN last, or descending with NaN first. Bit-identical for any thread count.");
}

}  // namespace

FG_REGISTER_BINDINGS(topk, bind)
