// forgegrad._C.grid_sample: F.grid_sample of float32 (N, C, H, W) inputs by (N, Ho, Wo, 2) grids, bilinear and
// nearest, forward and backward. Every array is checked here before a kernel runs.
#include <string>

#include "forgegrad/bindings.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/py_array.h"

// The kernels of cpp/kernels/per_isa/grid_sample.cpp (formulas, order of the sums and thread contract there).
namespace fg {

FG_KERNEL(void, grid_sample2d_forward,
          (const float* x, const float* grid, int64_t N, int64_t C, int64_t H, int64_t W, int64_t P, int mode, int pad,
           bool ac, float* y),
          (x, grid, N, C, H, W, P, mode, pad, ac, y))

FG_KERNEL(void, grid_sample2d_backward,
          (const float* g, const float* x, const float* grid, int64_t N, int64_t C, int64_t H, int64_t W, int64_t P,
           int mode, int pad, bool ac, float* gx, float* ggrid),
          (g, x, grid, N, C, H, W, P, mode, pad, ac, gx, ggrid))

}  // namespace fg

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

void check_modes(int mode, int pad) {
  if (mode != 0 && mode != 1)
    throw py::value_error("mode must be 0 (bilinear) or 1 (nearest), got " + std::to_string(mode));
  if (pad < 0 || pad > 2)
    throw py::value_error("padding must be 0 (zeros), 1 (border) or 2 (reflection), got " + std::to_string(pad));
}

// x (N, C, H, W) with H, W >= 1, grid (N, Ho, Wo, 2): P = Ho * Wo.
int64_t check_pair(const ArrayArg& X, const ArrayArg& G) {
  if (G.shape[0] != X.shape[0] || G.shape[3] != 2)
    throw py::value_error("grid must have shape (N, Ho, Wo, 2) with N = x's " + std::to_string(X.shape[0]) + ", got " +
                          fg::bind::shape_str(G.shape));
  if (X.shape[2] < 1 || X.shape[3] < 1)
    throw py::value_error("x must have non-empty spatial dimensions, got " + fg::bind::shape_str(X.shape));
  if (X.shape[2] * X.shape[3] >= (int64_t(1) << 31))  // the kernel's offsets within a plane are int32
    throw py::value_error("x's planes must have fewer than 2**31 elements, got shape " + fg::bind::shape_str(X.shape));
  return G.shape[1] * G.shape[2];
}

void forward(const py::array& x, const py::array& grid, int mode, int pad, bool ac, const py::array& out) {
  check_modes(mode, pad);
  ArrayArg X = fg::bind::f32_arg(x, "x", 4);
  ArrayArg G = fg::bind::f32_arg(grid, "grid", 4);
  const int64_t P = check_pair(X, G);
  ArrayArg Y = fg::bind::f32_arg(out, "out", 4, fg::bind::kContiguous, true);
  fg::bind::expect_shape(Y, "out", {X.shape[0], X.shape[1], G.shape[1], G.shape[2]});
  fg::bind::check_no_overlap("grid_sample2d_forward", {{x, "x"}, {grid, "grid"}}, {{out, "out"}});
  if (Y.size == 0) return;
  py::gil_scoped_release release;
  fg::grid_sample2d_forward(X.f32(), G.f32(), X.shape[0], X.shape[1], X.shape[2], X.shape[3], P, mode, pad, ac,
                            Y.f32());
}

void backward(const py::array& grad, const py::array& x, const py::array& grid, int mode, int pad, bool ac,
              const py::object& grad_x, const py::object& grad_grid) {
  check_modes(mode, pad);
  ArrayArg X = fg::bind::f32_arg(x, "x", 4);
  ArrayArg G = fg::bind::f32_arg(grid, "grid", 4);
  const int64_t P = check_pair(X, G);
  ArrayArg GO = fg::bind::f32_arg(grad, "grad", 4);
  fg::bind::expect_shape(GO, "grad", {X.shape[0], X.shape[1], G.shape[1], G.shape[2]});
  float* gx = nullptr;
  float* gg = nullptr;
  py::array gx_arr, gg_arr;
  if (!grad_x.is_none()) {
    if (!py::isinstance<py::array>(grad_x)) throw py::type_error("grad_x must be None or a numpy.ndarray of float32");
    gx_arr = grad_x.cast<py::array>();
    ArrayArg GX = fg::bind::f32_arg(gx_arr, "grad_x", 4, fg::bind::kContiguous, true);
    fg::bind::expect_shape(GX, "grad_x", X.shape);
    gx = GX.f32();
  }
  if (!grad_grid.is_none()) {
    if (!py::isinstance<py::array>(grad_grid))
      throw py::type_error("grad_grid must be None or a numpy.ndarray of float32");
    gg_arr = grad_grid.cast<py::array>();
    ArrayArg GG = fg::bind::f32_arg(gg_arr, "grad_grid", 4, fg::bind::kContiguous, true);
    fg::bind::expect_shape(GG, "grad_grid", G.shape);
    gg = GG.f32();
  }
  fg::bind::check_no_overlap("grid_sample2d_backward", {{grad, "grad"}, {x, "x"}, {grid, "grid"}},
                             {{grad_x, "grad_x"}, {grad_grid, "grad_grid"}});
  if (GO.size == 0 || X.size == 0) {  // no output or no input elements: zero gradients
    if (gx != nullptr) gx_arr.attr("fill")(0.0f);
    if (gg != nullptr) gg_arr.attr("fill")(0.0f);
    return;
  }
  py::gil_scoped_release release;
  fg::grid_sample2d_backward(GO.f32(), X.f32(), G.f32(), X.shape[0], X.shape[1], X.shape[2], X.shape[3], P, mode, pad,
                             ac, gx, gg);
}

void bind(py::module_& m) {
  m.def("grid_sample2d_forward", &forward, py::arg("x"), py::arg("grid"), py::arg("mode"), py::arg("padding"),
        py::arg("align_corners"), py::arg("out"),
        "out (N, C, Ho, Wo) = F.grid_sample(x, grid) for float32 x (N, C, H, W), grid (N, Ho, Wo, 2); mode 0 "
        "bilinear, 1 nearest; padding 0 zeros, 1 border, 2 reflection.");
  m.def("grid_sample2d_backward", &backward, py::arg("grad"), py::arg("x"), py::arg("grid"), py::arg("mode"),
        py::arg("padding"), py::arg("align_corners"), py::arg("grad_x"), py::arg("grad_grid"),
        "The gradients of grid_sample2d_forward into grad_x (x's shape) and grad_grid (grid's shape), either None "
        "to skip it; bit-identical for any thread count.");
}

}  // namespace

FG_REGISTER_BINDINGS(grid_sample, bind)
