// forgegrad._C.int_math: torch.gcd of int32 / int64 arrays (cpp/kernels/per_isa/int_gcd.cpp); the arrays are
// checked here, forgegrad.kernels.int_math broadcasts them first.
#include <string>

#include "forgegrad/bindings.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/py_array.h"

namespace fg {

FG_KERNEL(void, gcd_i64, (const int64_t* a, int64_t sa, const int64_t* b, int64_t sb, int64_t n, int64_t* out),
          (a, sa, b, sb, n, out))
FG_KERNEL(void, gcd_i32, (const int32_t* a, int64_t sa, const int32_t* b, int64_t sb, int64_t n, int32_t* out),
          (a, sa, b, sb, n, out))

}  // namespace fg

namespace py = pybind11;

namespace {

bool is_dtype(const py::array& a, const py::dtype& d) {
  return py::detail::npy_api::get().PyArray_EquivTypes_(a.dtype().ptr(), d.ptr());
}

// 1 for an operand of out's length, 0 for a one-element operand (a broadcast number).
int64_t operand_step(const py::array& x, const char* name, int64_t n) {
  if (x.ndim() != 1) throw py::value_error(std::string("gcd: ") + name + " must be 1-D");
  if (!(x.flags() & py::array::c_style)) throw py::value_error(std::string("gcd: ") + name + " must be C-contiguous");
  if (x.shape(0) == n) return 1;
  if (x.shape(0) == 1) return 0;
  throw py::value_error(std::string("gcd: ") + name + " must have out's length " + std::to_string(n) +
                        " or length 1, got " + std::to_string(x.shape(0)));
}

void gcd(const py::array& a, const py::array& b, const py::array& out) {
  const bool i64 = is_dtype(out, py::dtype::of<int64_t>()), i32 = is_dtype(out, py::dtype::of<int32_t>());
  if (!i64 && !i32)
    throw py::type_error("gcd: out must be an int64 or int32 array, got " + std::string(py::str(out.dtype())));
  if (!is_dtype(a, out.dtype()) || !is_dtype(b, out.dtype()))
    throw py::type_error("gcd: a, b and out must have one dtype, got " + std::string(py::str(a.dtype())) + ", " +
                         std::string(py::str(b.dtype())) + " and " + std::string(py::str(out.dtype())));
  if (out.ndim() != 1 || !(out.flags() & py::array::c_style) || !out.writeable())
    throw py::value_error("gcd: out must be a writeable 1-D C-contiguous array");
  const int64_t n = out.shape(0);
  const int64_t sa = operand_step(a, "a", n), sb = operand_step(b, "b", n);
  const uintptr_t align = static_cast<uintptr_t>(out.itemsize());
  for (const py::array* x : {&a, &b, &out})
    if (reinterpret_cast<uintptr_t>(x->data()) % align != 0)
      throw py::value_error("gcd: arrays must be aligned to their item size");
  fg::bind::check_no_overlap("gcd", {{a, "a"}, {b, "b"}}, {{out, "out"}});
  if (n == 0) return;
  const void *pa = a.data(), *pb = b.data();
  void* po = const_cast<void*>(out.data());  // checked writeable above
  py::gil_scoped_release release;
  if (i64) {
    fg::gcd_i64(static_cast<const int64_t*>(pa), sa, static_cast<const int64_t*>(pb), sb, n, static_cast<int64_t*>(po));
  } else {
    fg::gcd_i32(static_cast<const int32_t*>(pa), sa, static_cast<const int32_t*>(pb), sb, n, static_cast<int32_t*>(po));
  }
}

void bind(py::module_& m) {
  m.def("gcd", &gcd, py::arg("a"), py::arg("b"), py::arg("out"),
        "out[i] = torch.gcd(a[i], b[i]) for int64 / int32 1-D arrays (a or b of length 1: that number for every i); "
        "binary GCD, torch's Euclid loop where an operand is the type's MIN.");
}

}  // namespace

FG_REGISTER_BINDINGS(int_math, bind)
