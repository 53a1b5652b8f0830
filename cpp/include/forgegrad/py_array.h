// Checking numpy arguments at the Python/C++ boundary: dtype, rank, shape and layout problems
// become TypeError / ValueError naming the argument, never a crash inside a kernel.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace fg::bind {
namespace py = pybind11;

struct ArrayArg {
  void* ptr = nullptr;
  int ndim = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements
  int64_t size = 1;
  float* f32() const { return static_cast<float*>(ptr); }
  double* f64() const { return static_cast<double*>(ptr); }
  int64_t* i64() const { return static_cast<int64_t*>(ptr); }
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
};

enum Layout { kAnyStrides = 0, kContiguous = 1 };

// float32 array; ndim = -1 accepts any rank. writable: the kernel writes into it.
ArrayArg f32_arg(const py::array& a, const char* name, int ndim = -1, Layout layout = kContiguous,
                 bool writable = false);
// float64 array (the kernels that also take double: ctc).
ArrayArg f64_arg(const py::array& a, const char* name, int ndim = -1, Layout layout = kContiguous,
                 bool writable = false);
// int64 array (indices, labels).
ArrayArg i64_arg(const py::array& a, const char* name, int ndim = -1, Layout layout = kContiguous,
                 bool writable = false);

// Whether a's dtype is float32 in native byte order. An equivalence test, not identity: an
// unpickled array (e.g. from a DataLoader worker) has its own descriptor, not numpy's singleton.
inline bool is_float32(const py::array& a) {
  return py::detail::npy_api::get().PyArray_EquivTypes_(a.dtype().ptr(), py::dtype::of<float>().ptr());
}

// One array argument of a call for check_no_overlap: the array (None / a non-array is skipped), its
// name, and whether the kernel writes it.
struct Operand {
  py::handle array;
  const char* name;
  bool written;
};

// Raises ValueError naming both arguments when an array the kernel writes shares memory with another
// array argument of the call, except for the pairs in `in_place` (names, either order) when the two
// are the very same elements (same data pointer, shape and strides): a kernel that writes while it
// reads would otherwise read values it has already overwritten, or race between threads.
void check_no_overlap(const char* op, std::initializer_list<Operand> operands,
                      std::initializer_list<std::pair<const char*, const char*>> in_place = {});

// The same check with the arguments given as two lists: those the kernel reads, and those it
// writes (each with a flag: written only when true, e.g. running statistics while training).
struct Named {
  py::handle array;
  const char* name;
  bool written = true;
};
void check_no_overlap(const char* op, std::initializer_list<Named> reads, std::initializer_list<Named> writes,
                      std::initializer_list<std::pair<const char*, const char*>> in_place = {});

std::string shape_str(const std::vector<int64_t>& shape);
// Throws ValueError "<name> must have shape <expected>, got <actual>".
void expect_shape(const ArrayArg& a, const char* name, const std::vector<int64_t>& expected);

// "list[i]": the name of one item of a list argument, for error messages.
inline std::string item_name(const char* list, size_t i) { return std::string(list) + "[" + std::to_string(i) + "]"; }

// A per-parameter list argument must have one entry per parameter (ValueError naming it otherwise).
inline void expect_count(const char* name, size_t got, size_t want) {
  if (got != want)
    throw py::value_error(std::string(name) + " must have " + std::to_string(want) + " entries (one per param), got " +
                          std::to_string(got));
}

// The list arguments of a multi-tensor Adam step (float32 and float64 bindings alike); max_exp_avg_sqs: its size, or
// -1 without amsgrad.
inline void expect_adam_counts(size_t n, size_t grads, size_t exp_avgs, size_t exp_avg_sqs, int64_t max_exp_avg_sqs,
                               size_t step_sizes, size_t bias_correction2_sqrts) {
  expect_count("grads", grads, n);
  expect_count("exp_avgs", exp_avgs, n);
  expect_count("exp_avg_sqs", exp_avg_sqs, n);
  if (max_exp_avg_sqs >= 0) expect_count("max_exp_avg_sqs", static_cast<size_t>(max_exp_avg_sqs), n);
  expect_count("step_sizes", step_sizes, n);
  expect_count("bias_correction2_sqrts", bias_correction2_sqrts, n);
}

}  // namespace fg::bind
