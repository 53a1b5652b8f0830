// forgegrad._C.resample: separable 2-d resampling of float32 (N, C, H, W) arrays by per-axis index
// maps (F.interpolate's nearest / bilinear, F.pad), forward and its transpose. Every array is checked
// here before a kernel runs.
#include <string>

#include "forgegrad/bindings.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/py_array.h"

// The kernels of cpp/kernels/per_isa/resample.cpp (map layout, order of the sums and thread contract there).
namespace fg {

FG_KERNEL(void, resample2d_forward,
          (const float* x, int64_t P, int64_t Hi, int64_t Wi, const int64_t* ih, const float* wh, int64_t Th,
           int64_t Ho, const int64_t* iw, const float* ww, int64_t Tw, int64_t Wo, float fill, float* y),
          (x, P, Hi, Wi, ih, wh, Th, Ho, iw, ww, Tw, Wo, fill, y))

FG_KERNEL(void, resample2d_backward,
          (const float* g, int64_t P, int64_t Ho, int64_t Wo, const int64_t* ih, const float* wh, int64_t Th,
           int64_t Hi, const int64_t* iw, const float* ww, int64_t Tw, int64_t Wi, float* gx),
          (g, P, Ho, Wo, ih, wh, Th, Hi, iw, ww, Tw, Wi, gx))

}  // namespace fg

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

constexpr int64_t kMaxTaps = 4;

struct AxisArgs {
  const int64_t* idx = nullptr;
  const float* w = nullptr;
  int64_t taps = 0, n_out = 0;
};

// idx (T, n_out) int64 with entries in [0, n_in) (-1 too where allow_fill: an unweighted one-tap map's
// fill positions); w None or float32 (T, n_out).
AxisArgs axis_args(const py::array& idx, const py::object& w, const char* idx_name, const char* w_name, int64_t n_in,
                   bool allow_fill) {
  AxisArgs a;
  ArrayArg I = fg::bind::i64_arg(idx, idx_name, 2);
  a.taps = I.shape[0];
  a.n_out = I.shape[1];
  if (a.taps < 1 || a.taps > kMaxTaps)
    throw py::value_error(std::string(idx_name) + " must have 1 to " + std::to_string(kMaxTaps) +
                          " rows (taps), got shape " + fg::bind::shape_str(I.shape));
  if (!w.is_none()) {
    if (!py::isinstance<py::array>(w))
      throw py::type_error(std::string(w_name) + " must be None or a numpy.ndarray of float32");
    ArrayArg W = fg::bind::f32_arg(w.cast<py::array>(), w_name, 2);
    fg::bind::expect_shape(W, w_name, I.shape);
    a.w = W.f32();
  }
  const int64_t lo = (allow_fill && a.taps == 1 && a.w == nullptr) ? -1 : 0;
  a.idx = I.i64();
  for (int64_t e = 0; e < I.size; ++e)
    if (a.idx[e] < lo || a.idx[e] >= n_in)
      throw py::value_error(std::string(idx_name) + " entries must be in [" + std::to_string(lo) + ", " +
                            std::to_string(n_in) + ") (the input axis' length), got " + std::to_string(a.idx[e]) +
                            " at flat position " + std::to_string(e));
  return a;
}

ArrayArg plane_arg(const py::array& a, const char* name, bool writable) {
  return fg::bind::f32_arg(a, name, 4, fg::bind::kContiguous, writable);
}

void forward(const py::array& x, const py::array& idx_h, const py::object& w_h, const py::array& idx_w,
             const py::object& w_w, float fill, const py::array& out) {
  ArrayArg X = plane_arg(x, "x", false);
  const int64_t N = X.shape[0], C = X.shape[1], Hi = X.shape[2], Wi = X.shape[3];
  AxisArgs h = axis_args(idx_h, w_h, "idx_h", "w_h", Hi, true);
  AxisArgs w = axis_args(idx_w, w_w, "idx_w", "w_w", Wi, true);
  ArrayArg Y = plane_arg(out, "out", true);
  fg::bind::expect_shape(Y, "out", {N, C, h.n_out, w.n_out});
  fg::bind::check_no_overlap(
      "resample2d_forward", {{x, "x"}, {idx_h, "idx_h"}, {w_h, "w_h"}, {idx_w, "idx_w"}, {w_w, "w_w"}}, {{out, "out"}});
  if (Y.size == 0) return;
  if (X.size == 0)
    throw py::value_error("x must not be empty when out is not, got shape " + fg::bind::shape_str(X.shape));
  py::gil_scoped_release release;
  fg::resample2d_forward(X.f32(), N * C, Hi, Wi, h.idx, h.w, h.taps, h.n_out, w.idx, w.w, w.taps, w.n_out, fill,
                         Y.f32());
}

void backward(const py::array& grad, const py::array& idx_h, const py::object& w_h, const py::array& idx_w,
              const py::object& w_w, const py::array& grad_x) {
  ArrayArg G = plane_arg(grad, "grad", false);
  ArrayArg GX = plane_arg(grad_x, "grad_x", true);
  const int64_t N = GX.shape[0], C = GX.shape[1], Hi = GX.shape[2], Wi = GX.shape[3];
  AxisArgs h = axis_args(idx_h, w_h, "idx_h", "w_h", Hi, false);
  AxisArgs w = axis_args(idx_w, w_w, "idx_w", "w_w", Wi, false);
  fg::bind::expect_shape(G, "grad", {N, C, h.n_out, w.n_out});
  fg::bind::check_no_overlap("resample2d_backward",
                             {{grad, "grad"}, {idx_h, "idx_h"}, {w_h, "w_h"}, {idx_w, "idx_w"}, {w_w, "w_w"}},
                             {{grad_x, "grad_x"}});
  if (GX.size == 0) return;
  py::gil_scoped_release release;
  fg::resample2d_backward(G.f32(), N * C, h.n_out, w.n_out, h.idx, h.w, h.taps, Hi, w.idx, w.w, w.taps, Wi, GX.f32());
}

void bind(py::module_& m) {
  m.def("resample2d_forward", &forward, py::arg("x"), py::arg("idx_h"), py::arg("w_h"), py::arg("idx_w"),
        py::arg("w_w"), py::arg("fill"), py::arg("out"),
        "out[n, c, i, j] = sum_a w_h[a, i] * (sum_b w_w[b, j] * x[n, c, idx_h[a, i], idx_w[b, j]]), the width sum "
        "first; idx_* int64 (taps, out size), w_* None (ones) or float32 of that shape. An unweighted one-tap "
        "map may hold -1: fill there.");
  m.def("resample2d_backward", &backward, py::arg("grad"), py::arg("idx_h"), py::arg("w_h"), py::arg("idx_w"),
        py::arg("w_w"), py::arg("grad_x"),
        "grad_x = the transpose of resample2d_forward's map applied to grad (no -1 entries); each source sums its "
        "contributions in increasing output position, so the bits do not depend on the thread count.");
}

}  // namespace

FG_REGISTER_BINDINGS(resample, bind)
