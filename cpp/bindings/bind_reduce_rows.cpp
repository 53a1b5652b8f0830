// forgegrad._C.reduce_rows: sums / means of the R contiguous rows of length L of a float32 (R, L) array and
// their backward fill (cpp/kernels/per_isa/reduce_rows.cpp; the order of a row's sum in reduce_rows.h).
// Arrays are checked here; forgegrad.kernels.reduce_rows shapes them.
#include <cmath>
#include <string>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/py_array.h"
#include "forgegrad/reduce_rows.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

void sum_rows(const py::array& x, const py::array& out, bool mean) {
  ArrayArg X = fg::bind::f32_arg(x, "x", 2);
  ArrayArg Y = fg::bind::f32_arg(out, "out", 1, fg::bind::kContiguous, true);
  if (Y.shape[0] != X.shape[0])
    throw py::value_error("sum_rows: out must have x's " + std::to_string(X.shape[0]) + " rows, got shape " +
                          fg::bind::shape_str(Y.shape));
  if (X.shape[0] == 0) return;
  if (X.shape[1] == 0)
    throw py::value_error("sum_rows: x must have rows of at least one element, got shape " +
                          fg::bind::shape_str(X.shape));
  fg::bind::check_no_overlap("sum_rows", {{x, "x"}}, {{out, "out"}});
  py::gil_scoped_release release;
  fg::sum_rows_f32(X.f32(), X.shape[0], X.shape[1], mean, Y.f32());
}

void sum_lead(const py::array& x, const py::array& out, bool mean) {
  ArrayArg X = fg::bind::f32_arg(x, "x", 3);
  ArrayArg Y = fg::bind::f32_arg(out, "out", 1, fg::bind::kContiguous, true);
  if (Y.shape[0] != X.shape[1])
    throw py::value_error("sum_lead: out must have x's " + std::to_string(X.shape[1]) + " columns, got shape " +
                          fg::bind::shape_str(Y.shape));
  if (X.shape[1] == 0) return;
  if (X.shape[0] == 0 || X.shape[2] == 0)
    throw py::value_error("sum_lead: x (A, B, L) must have A, L >= 1, got shape " + fg::bind::shape_str(X.shape));
  fg::bind::check_no_overlap("sum_lead", {{x, "x"}}, {{out, "out"}});
  py::gil_scoped_release release;
  fg::sum_lead_f32(X.f32(), X.shape[0], X.shape[1], X.shape[2], mean, Y.f32());
}

void sum_mid(const py::array& x, const py::array& out, bool mean) {
  ArrayArg X = fg::bind::f32_arg(x, "x", 3);
  ArrayArg Y = fg::bind::f32_arg(out, "out", 2, fg::bind::kContiguous, true);
  if (Y.shape[0] != X.shape[0] || Y.shape[1] != X.shape[2])
    throw py::value_error("sum_mid: out must have shape (" + std::to_string(X.shape[0]) + ", " +
                          std::to_string(X.shape[2]) + ") for x " + fg::bind::shape_str(X.shape) + ", got " +
                          fg::bind::shape_str(Y.shape));
  if (X.shape[0] == 0 || X.shape[2] == 0) return;
  if (X.shape[1] == 0)
    throw py::value_error("sum_mid: x (O, M, I) must have M >= 1, got shape " + fg::bind::shape_str(X.shape));
  fg::bind::check_no_overlap("sum_mid", {{x, "x"}}, {{out, "out"}});
  py::gil_scoped_release release;
  fg::sum_mid_f32(X.f32(), X.shape[0], X.shape[1], X.shape[2], mean, Y.f32());
}

// x any float32 array (its own strides: every read stays inside it), reduced one flag per axis, out the kept axes.
void sum_axes(const py::array& x, const std::vector<bool>& reduced, const py::array& out, bool mean) {
  ArrayArg X = fg::bind::f32_arg(x, "x", -1, fg::bind::kAnyStrides);
  ArrayArg Y = fg::bind::f32_arg(out, "out", -1, fg::bind::kContiguous, true);
  if (X.ndim < 1 || X.ndim > fg::kSumAxesMaxDims)
    throw py::value_error("sum_axes: x must have 1 to " + std::to_string(fg::kSumAxesMaxDims) + " axes, got shape " +
                          fg::bind::shape_str(X.shape));
  if (reduced.size() != static_cast<size_t>(X.ndim))
    throw py::value_error("sum_axes: reduced must have one flag per axis of x (" + std::to_string(X.ndim) + "), got " +
                          std::to_string(reduced.size()));
  std::vector<int64_t> kept;
  int64_t inner = -1;  // the innermost axis of size > 1
  for (int k = 0; k < X.ndim; ++k) {
    if (!reduced[k]) kept.push_back(X.shape[k]);
    if (X.shape[k] > 1) inner = k;
  }
  if (Y.shape != kept)
    throw py::value_error("sum_axes: out must have x's kept axes " + fg::bind::shape_str(kept) + ", got shape " +
                          fg::bind::shape_str(Y.shape));
  if (Y.size == 0) return;
  if (X.size == 0)
    throw py::value_error("sum_axes: x must have no empty reduced axis, got shape " + fg::bind::shape_str(X.shape));
  if (inner >= 0 && X.strides[inner] != 1)
    throw py::value_error("sum_axes: x's innermost axis of size > 1 (axis " + std::to_string(inner) +
                          ") must be contiguous (stride of one element), got a stride of " +
                          std::to_string(X.strides[inner]) + " elements");
  fg::bind::check_no_overlap("sum_axes", {{x, "x"}}, {{out, "out"}});
  bool red[fg::kSumAxesMaxDims];
  for (int k = 0; k < X.ndim; ++k) red[k] = reduced[k];
  py::gil_scoped_release release;
  fg::sum_axes_f32(X.f32(), X.ndim, X.shape.data(), X.strides.data(), red, mean, Y.f32());
}

void fill_rows(const py::array& g, const py::array& out, double divisor) {
  ArrayArg G = fg::bind::f32_arg(g, "g", 1);
  ArrayArg D = fg::bind::f32_arg(out, "out", 2, fg::bind::kContiguous, true);
  if (D.shape[0] != G.shape[0])
    throw py::value_error("fill_rows: out must have g's " + std::to_string(G.shape[0]) + " rows, got shape " +
                          fg::bind::shape_str(D.shape));
  if (!(std::isfinite(divisor) && divisor > 0))
    throw py::value_error("fill_rows: divisor must be a finite number > 0, got " + std::to_string(divisor));
  if (D.size == 0) return;
  fg::bind::check_no_overlap("fill_rows", {{g, "g"}}, {{out, "out"}});
  py::gil_scoped_release release;
  fg::fill_rows_f32(G.f32(), D.shape[0], D.shape[1], static_cast<float>(divisor), D.f32());
}

void bind(py::module_& m) {
  m.def("sum_rows", &sum_rows, py::arg("x"), py::arg("out"), py::arg("mean"),
        "out[r] = the sum (mean: / L) of row r of float32 x (R, L), accumulated in float64 in a fixed order "
        "(the same bits on every ISA and at any thread count).");
  m.def("sum_lead", &sum_lead, py::arg("x"), py::arg("out"), py::arg("mean"),
        "out[b] = the sum (mean: / (A * L)) of x[:, b, :] for float32 x (A, B, L), accumulated in float64 in a "
        "fixed order (the same bits on every ISA and at any thread count).");
  m.def("sum_mid", &sum_mid, py::arg("x"), py::arg("out"), py::arg("mean"),
        "out[o, i] = the sum (mean: / M) of x[o, :, i] for float32 x (O, M, I), accumulated in float64 in a "
        "fixed order (the same bits on every ISA and at any thread count).");
  m.def("sum_axes", &sum_axes, py::arg("x"), py::arg("reduced"), py::arg("out"), py::arg("mean"),
        "out = the sum (mean: / the count) of float32 x (any strides; its innermost axis of size > 1 contiguous) over "
        "the axes k with reduced[k], out holding the kept axes in x's order; accumulated in float64 in a fixed order "
        "(forgegrad/reduce_rows.h: the same bits on every ISA and at any thread count).");
  m.def("fill_rows", &fill_rows, py::arg("g"), py::arg("out"), py::arg("divisor"),
        "out[r, :] = g[r] / float32(divisor) for float32 g (R,) and out (R, L).");
}

}  // namespace

FG_REGISTER_BINDINGS(reduce_rows, bind)
