#include "forgegrad/py_array.h"

namespace fg::bind {
namespace {

ArrayArg checked(const py::array& a, const char* name, int ndim, Layout layout, bool writable, const py::dtype& want,
                 const char* want_name) {
  // Equivalence, not identity (see is_float32); a byte-swapped dtype is not equivalent.
  if (!py::detail::npy_api::get().PyArray_EquivTypes_(a.dtype().ptr(), want.ptr()))
    throw py::type_error(std::string(name) + " must be a " + want_name + " array, got dtype " +
                         std::string(py::str(a.dtype())));
  if (ndim >= 0 && a.ndim() != ndim)
    throw py::value_error(
        std::string(name) + " must be " + std::to_string(ndim) + "-D, got " + std::to_string(a.ndim()) +
        "-D with shape " +
        std::string(py::str(py::tuple(py::cast(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()))))));
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
  if (layout == kContiguous && !(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous");
  ArrayArg r;
  r.ptr = const_cast<void*>(a.data());
  r.ndim = static_cast<int>(a.ndim());
  const py::ssize_t item = a.itemsize();
  for (int i = 0; i < r.ndim; ++i) {
    r.shape.push_back(a.shape(i));
    if (a.strides(i) % item != 0)
      throw py::value_error(std::string(name) + " has strides that are not a multiple of its item size");
    r.strides.push_back(a.strides(i) / item);
    r.size *= a.shape(i);
  }
  // Kernels load and store through typed pointers, which must be aligned; numpy can hand over an
  // unaligned buffer (np.frombuffer(buf, offset=1)). Refused here, so no kernel ever sees one; the
  // Python wrappers (forgegrad.kernels) pass aligned copies of unaligned inputs, and matmul/linear
  // copy in their bindings.
  if (r.size > 0 && reinterpret_cast<uintptr_t>(r.ptr) % static_cast<uintptr_t>(item) != 0)
    throw py::value_error(std::string(name) + " is not aligned to its " + std::to_string(item) +
                          "-byte item size (numpy flags.aligned is False); pass an aligned copy, e.g. "
                          "numpy.require(a, requirements='A')");
  return r;
}

}  // namespace

ArrayArg f32_arg(const py::array& a, const char* name, int ndim, Layout layout, bool writable) {
  return checked(a, name, ndim, layout, writable, py::dtype::of<float>(), "float32");
}

ArrayArg f64_arg(const py::array& a, const char* name, int ndim, Layout layout, bool writable) {
  return checked(a, name, ndim, layout, writable, py::dtype::of<double>(), "float64");
}

ArrayArg i64_arg(const py::array& a, const char* name, int ndim, Layout layout, bool writable) {
  return checked(a, name, ndim, layout, writable, py::dtype::of<int64_t>(), "int64");
}

namespace {

// [lo, hi) bytes an array spans (empty for a 0-size array); strides may be negative.
std::pair<uintptr_t, uintptr_t> extent(const py::array& a) {
  if (a.size() == 0) return {0, 0};
  intptr_t lo = 0, hi = 0;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    const intptr_t span = static_cast<intptr_t>(a.shape(i) - 1) * static_cast<intptr_t>(a.strides(i));
    (span < 0 ? lo : hi) += span;
  }
  const auto base = reinterpret_cast<uintptr_t>(a.data());
  return {base + lo, base + hi + static_cast<uintptr_t>(a.itemsize())};
}

bool same_view(const py::array& a, const py::array& b) {
  if (a.data() != b.data() || a.ndim() != b.ndim() || a.itemsize() != b.itemsize()) return false;
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    if (a.shape(i) != b.shape(i) || (a.shape(i) > 1 && a.strides(i) != b.strides(i))) return false;
  return true;
}

}  // namespace

namespace {

void check_operands(const char* op, const std::vector<const Operand*>& ops,
                    std::initializer_list<std::pair<const char*, const char*>> in_place) {
  for (size_t i = 0; i < ops.size(); ++i) {
    for (size_t j = i + 1; j < ops.size(); ++j) {
      if (!ops[i]->written && !ops[j]->written) continue;
      auto a = py::reinterpret_borrow<py::array>(ops[i]->array), b = py::reinterpret_borrow<py::array>(ops[j]->array);
      auto ea = extent(a), eb = extent(b);
      if (ea.first >= ea.second || eb.first >= eb.second || ea.second <= eb.first || eb.second <= ea.first) continue;
      bool allowed = false;
      for (const auto& p : in_place) {
        const std::string x = p.first, y = p.second;
        if ((x == ops[i]->name && y == ops[j]->name) || (y == ops[i]->name && x == ops[j]->name)) allowed = true;
      }
      if (allowed && same_view(a, b)) continue;
      throw py::value_error(std::string(op) + ": " + ops[i]->name + " and " + ops[j]->name +
                            " overlap in memory; pass separate arrays" +
                            (allowed ? " (or the very same array, to work in place)" : ""));
    }
  }
}

}  // namespace

void check_no_overlap(const char* op, std::initializer_list<Operand> operands,
                      std::initializer_list<std::pair<const char*, const char*>> in_place) {
  std::vector<const Operand*> ops;
  for (const Operand& o : operands)
    if (py::isinstance<py::array>(o.array)) ops.push_back(&o);
  check_operands(op, ops, in_place);
}

void check_no_overlap(const char* op, std::initializer_list<Named> reads, std::initializer_list<Named> writes,
                      std::initializer_list<std::pair<const char*, const char*>> in_place) {
  std::vector<Operand> all;
  for (const Named& r : reads) all.push_back({r.array, r.name, false});
  for (const Named& w : writes) all.push_back({w.array, w.name, w.written});
  std::vector<const Operand*> ops;
  for (const Operand& o : all)
    if (py::isinstance<py::array>(o.array)) ops.push_back(&o);
  check_operands(op, ops, in_place);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

void expect_shape(const ArrayArg& a, const char* name, const std::vector<int64_t>& expected) {
  if (a.shape != expected)
    throw py::value_error(std::string(name) + " must have shape " + shape_str(expected) + ", got " +
                          shape_str(a.shape));
}

}  // namespace fg::bind
