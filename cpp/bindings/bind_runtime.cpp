// forgegrad._C.runtime: CPU features, the active SIMD path, and the thread count.
#include <atomic>
#include <cstdlib>

#include "forgegrad/bindings.h"
#include "forgegrad/cpu.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/sbgemm.h"

namespace py = pybind11;

namespace {

py::dict cpu_info() {
  py::dict d;
  d["detected_isa"] = fg::isa_name(fg::detected_isa());
  d["active_isa"] = fg::isa_name(fg::active_isa());
  const char* env = std::getenv("FORGEGRAD_SIMD");
  d["FORGEGRAD_SIMD"] = env ? py::object(py::str(env)) : py::object(py::none());
  d["num_threads"] = fg::get_num_threads();
  d["threads_backend"] = "forgegrad pool";
  d["malloc_tuning"] = fg::malloc_tuning();
  d["avx512_bf16"] = fg::cpu_has_avx512_bf16();  // the CPU's; bf16_gemm: the bfloat16 GEMM's path now
  d["bf16_gemm"] = fg::sbgemm_path();
#ifdef FORGEGRAD_WITH_CUDA
  d["cuda_built"] = true;
#else
  d["cuda_built"] = false;
#endif
  return d;
}

void bind(py::module_& m) {
  fg::tune_malloc();
  m.def("cpu_info", &cpu_info, "Detected and active SIMD path, thread count, build options.");
  m.def(
      "set_isa", [](const std::string& name) { fg::set_isa(fg::isa_from_name(name)); }, py::arg("name"),
      "Force the SIMD path ('avx512', 'avx2' or 'scalar'); raises ValueError if the CPU lacks it.");
  m.def("get_isa", []() { return std::string(fg::isa_name(fg::active_isa())); });
  m.def("set_num_threads", &fg::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &fg::get_num_threads);
  // The pool's thread count for a region of `work` units, as kernels get it (1 while it backs off
  // after finding a thread descheduled, for work below kBusyMinWork): for the back-off's tests.
  m.def("_threads_for", &fg::threads_for, py::arg("work"));
  // Self-test of the threading layer's error path: a scratch allocation of `floats` floats inside
  // every task of a parallel region (what kernels do). An impossible size must come back as
  // MemoryError, not terminate the process. Returns the number of tasks run.
  m.def(
      "_check_region_alloc",
      [](int64_t tasks, std::size_t floats, bool dynamic) {
        py::gil_scoped_release release;
        std::atomic<int64_t> ran{0};
        auto task = [&](int64_t) {
          fg::AlignedBuffer scratch(floats);
          ran.fetch_add(1);
        };
        if (dynamic) {
          fg::parallel_tasks(tasks, task);
        } else {
          fg::parallel_for(tasks, 1, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) task(i);
          });
        }
        return ran.load();
      },
      py::arg("tasks"), py::arg("floats"), py::arg("dynamic") = false);
}

}  // namespace

FG_REGISTER_BINDINGS(runtime, bind)
