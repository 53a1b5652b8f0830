// The one narrow door from Python to C++. Each cpp/bindings/bind_<area>.cpp registers a function
// that fills the submodule forgegrad._C.<area>:
//
//   static void bind(pybind11::module_& m) { m.def("sgemm", ...); }
//   FG_REGISTER_BINDINGS(gemm, bind)
//
// module.cpp creates the submodules and calls every registered function, so adding an area adds
// a file, not an edit to a shared list.
#pragma once
#include <pybind11/pybind11.h>

namespace fg::bind {

using BindFn = void (*)(pybind11::module_&);
struct Registrar {
  Registrar(const char* submodule, BindFn fn);
};

}  // namespace fg::bind

#define FG_REGISTER_BINDINGS(submodule, fn) \
  static ::fg::bind::Registrar fg_bindings_registrar_##submodule(#submodule, fn);
