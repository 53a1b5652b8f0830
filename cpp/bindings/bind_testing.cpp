// forgegrad._C.testing: the index math of the CUDA array kernels (strided_index.h), run on the CPU
// over numpy arrays, so tests check it against numpy in every build (no GPU needed). The CUDA
// kernels run the very same functions per element.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/py_array.h"
#include "forgegrad/strided_index.h"

namespace py = pybind11;

namespace {

// A CPU reference for tests: bounded so that a fuzzed shape cannot make it run for minutes.
constexpr int64_t kMaxTestElements = int64_t{1} << 24;

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> st(shape.size());
  int64_t s = 1;
  for (std::size_t k = shape.size(); k-- > 0;) {
    st[k] = s;
    s *= shape[k];
  }
  return st;
}

// What the strided_copy kernel writes: a contiguous array of src's elements at
// offset + sum(i_k * strides[k]) (elements of the flattened, C-contiguous src).
py::array strided_copy(const py::array& a, std::vector<int64_t> shape, std::vector<int64_t> strides, int64_t offset) {
  py::array src = py::array::ensure(a, py::array::c_style);
  if (!src) throw py::error_already_set();  // the copy failed (e.g. MemoryError for a huge broadcast view)
  if (shape.size() != strides.size()) throw py::value_error("strided_copy: shape and strides differ in length");
  const int nd = static_cast<int>(shape.size());
  int64_t count = 1;
  for (int64_t n : shape) {
    if (n < 0) throw py::value_error("strided_copy: negative dimension");
    if (!fg::checked_mul(count, n, &count) || count > kMaxTestElements)
      throw py::value_error("strided_copy (testing): at most 2^24 elements");
  }
  py::array out(src.dtype(), shape);
  fg::strided::CopyGeometry g;
  auto dst_strides = contiguous_strides(shape);
  if (!fg::strided::make_copy_geometry(shape.data(), strides.data(), dst_strides.data(), nd, &g))
    throw py::value_error("strided_copy: at most " + std::to_string(fg::strided::kMaxDims) + " dimensions");
  if (g.count == 0) return out;
  int64_t lo = 0, hi = 0;
  if (!fg::strided::span(shape.data(), strides.data(), nd, offset, &lo, &hi) || lo < 0 ||
      hi >= static_cast<int64_t>(src.size()))
    throw py::index_error("strided_copy: elements lie outside src");
  const auto item = static_cast<std::size_t>(src.itemsize());
  const char* s = static_cast<const char*>(src.data()) + offset * static_cast<int64_t>(item);
  char* d = static_cast<char*>(out.mutable_data());
  for (int64_t i = 0; i < g.count; ++i) {
    int64_t so, dof;
    fg::strided::copy_offsets(g, i, &so, &dof);
    std::memcpy(d + dof * static_cast<int64_t>(item), s + so * static_cast<int64_t>(item), item);
  }
  return out;
}

// What the sum_to_shape kernel computes (float64 here; the kernel's summation order).
py::array_t<double> sum_to_shape(const py::array_t<double, py::array::c_style | py::array::forcecast>& src,
                                 std::vector<int64_t> shape) {
  const int nd = static_cast<int>(src.ndim());
  if (static_cast<int>(shape.size()) > nd) throw py::value_error("sum_to_shape: more output than input dimensions");
  std::vector<int64_t> in_shape(src.shape(), src.shape() + nd);
  std::vector<int64_t> padded(nd - shape.size(), 1);
  padded.insert(padded.end(), shape.begin(), shape.end());
  fg::strided::Reduction r;
  if (!fg::strided::make_reduction(in_shape.data(), padded.data(), nd, &r))
    throw py::value_error("sum_to_shape: cannot sum " + fg::bind::shape_str(in_shape) + " to " +
                          fg::bind::shape_str(shape));
  py::array_t<double> out(shape);
  double* o = out.mutable_data();
  for (int64_t i = 0; i < r.out_count; ++i) o[i] = fg::strided::reduce_one(src.data(), r, i);
  return out;
}

void bind(py::module_& m) {
  m.def("strided_copy", &strided_copy, py::arg("src"), py::arg("shape"), py::arg("strides"), py::arg("offset") = 0);
  m.def("sum_to_shape", &sum_to_shape, py::arg("src"), py::arg("shape"));
}

}  // namespace

FG_REGISTER_BINDINGS(testing, bind)
