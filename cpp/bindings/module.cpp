#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "forgegrad/bindings.h"

namespace fg::bind {
namespace {
std::vector<std::pair<const char*, BindFn>>& registry() {
  static std::vector<std::pair<const char*, BindFn>> r;
  return r;
}
}  // namespace

Registrar::Registrar(const char* submodule, BindFn fn) { registry().emplace_back(submodule, fn); }

}  // namespace fg::bind

PYBIND11_MODULE(_C, m) {
  m.doc() = "forgegrad compiled kernels (C++ with run-time AVX-512/AVX2 dispatch, optional CUDA)";
#ifdef FORGEGRAD_VERSION_INFO
  m.attr("__version__") = FORGEGRAD_VERSION_INFO;
#endif
  // In name order, not static-initialisation order (which the linker decides): a submodule's
  // signatures name the types of submodules bound before it (cuda_nn's take _C.cuda.DeviceArray).
  auto bindings = fg::bind::registry();
  std::stable_sort(bindings.begin(), bindings.end(),
                   [](const auto& a, const auto& b) { return std::string(a.first) < std::string(b.first); });
  for (auto& [name, fn] : bindings) {
    pybind11::module_ sub = pybind11::hasattr(m, name) ? pybind11::module_(m.attr(name)) : m.def_submodule(name);
    fn(sub);
  }
}
