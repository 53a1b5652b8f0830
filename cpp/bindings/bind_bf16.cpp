// forgegrad._C.bf16: float32 <-> bfloat16 conversions of whole arrays (cpp/kernels/per_isa/bf16_convert.cpp), what
// forgegrad.dtypes.astype runs in place of ml_dtypes' numpy casts. bfloat16 arrays are given as ml_dtypes bfloat16
// arrays or as their uint16 bit patterns; every array 1-D, C-contiguous and aligned (the caller ravels them).
#include <cstdint>
#include <string>
#include <vector>

#include "forgegrad/bf16_convert.h"
#include "forgegrad/bindings.h"
#include "forgegrad/gemm.h"
#include "forgegrad/memory.h"
#include "forgegrad/py_array.h"
#include "forgegrad/sbgemm.h"

namespace py = pybind11;

namespace {

bool is_dtype(const py::array& a, const py::dtype& d) {
  return py::detail::npy_api::get().PyArray_EquivTypes_(a.dtype().ptr(), d.ptr());
}

// ml_dtypes' bfloat16 descriptor, once an array of it was seen (one object for the process: a reference is kept),
// so later calls compare a pointer instead of the dtype's name (a string per call cost ~2 us).
PyObject* g_bf16_descr = nullptr;

bool is_bf16_bits(const py::array& a) {
  PyObject* descr = a.dtype().ptr();
  if (descr == g_bf16_descr) return true;
  if (is_dtype(a, py::dtype::of<uint16_t>())) return true;
  const py::dtype d = a.dtype();
  if (d.kind() == 'V' && d.itemsize() == 2 && std::string(py::str(d)) == "bfloat16") {
    if (g_bf16_descr == nullptr) {  // (the GIL is held: no race)
      Py_INCREF(descr);
      g_bf16_descr = descr;
    }
    return true;
  }
  return false;
}

bool aligned(const py::array& a) {
  return reinterpret_cast<uintptr_t>(a.data()) % static_cast<uintptr_t>(a.itemsize()) == 0;
}

py::array as_array(const py::handle& h, const char* op, const char* name) {
  if (!py::isinstance<py::array>(h))
    throw py::type_error(std::string(op) + ": " + name + " must be a numpy array, got " +
                         std::string(py::str(py::type::of(h).attr("__name__"))));
  return py::reinterpret_borrow<py::array>(h);
}

void check_layout(const py::array& a, const char* op, const char* name, bool written) {
  if (a.ndim() != 1 || !(a.flags() & py::array::c_style) || !aligned(a))
    throw py::value_error(std::string(op) + ": " + name + " must be a 1-D C-contiguous aligned array, got " +
                          std::to_string(a.ndim()) + "-D" +
                          ((a.flags() & py::array::c_style) ? "" : " non-contiguous"));
  if (written && !a.writeable()) throw py::value_error(std::string(op) + ": " + name + " must be writeable");
}

// src and out checked: dtypes (src_f32: src is the float32 one), layouts, lengths, no overlap. Returns the length.
int64_t checked(const char* op, const py::array& src, const py::array& out, bool src_f32) {
  const py::array& f = src_f32 ? src : out;
  const py::array& h = src_f32 ? out : src;
  const char* fname = src_f32 ? "src" : "out";
  const char* hname = src_f32 ? "out" : "src";
  if (!is_dtype(f, py::dtype::of<float>()))
    throw py::type_error(std::string(op) + ": " + fname + " must be a float32 array, got " +
                         std::string(py::str(f.dtype())));
  if (!is_bf16_bits(h))
    throw py::type_error(std::string(op) + ": " + hname +
                         " must be a bfloat16 or uint16 (bfloat16 bit patterns) "
                         "array, got " +
                         std::string(py::str(h.dtype())));
  check_layout(src, op, "src", false);
  check_layout(out, op, "out", true);
  if (src.shape(0) != out.shape(0))
    throw py::value_error(std::string(op) + ": out must have src's length " + std::to_string(src.shape(0)) + ", got " +
                          std::to_string(out.shape(0)));
  fg::bind::check_no_overlap(op, {{src, "src"}}, {{out, "out"}});
  return src.shape(0);
}

void round_from_float32(const py::handle& src_h, const py::handle& out_h) {
  const py::array src = as_array(src_h, "round_from_float32", "src"),
                  out = as_array(out_h, "round_from_float32", "out");
  const int64_t n = checked("round_from_float32", src, out, true);
  const float* in = static_cast<const float*>(src.data());
  uint16_t* o = static_cast<uint16_t*>(const_cast<void*>(out.data()));  // checked writeable
  py::gil_scoped_release release;
  fg::f32_to_bf16(in, o, n);
}

void widen_to_float32(const py::handle& src_h, const py::handle& out_h) {
  const py::array src = as_array(src_h, "widen_to_float32", "src"), out = as_array(out_h, "widen_to_float32", "out");
  const int64_t n = checked("widen_to_float32", src, out, false);
  const uint16_t* in = static_cast<const uint16_t*>(src.data());
  float* o = static_cast<float*>(const_cast<void*>(out.data()));  // checked writeable
  py::gil_scoped_release release;
  fg::bf16_to_f32(in, o, n);
}

// A C-contiguous bfloat16 (or uint16) array's bit patterns and its last two dimensions, checked: 2-D, or also 3-D
// where batch is given (*batch: the leading dimension, -1 for a 2-D array).
const uint16_t* bf16_matrix(const char* op, const py::handle& h, const char* name, int64_t* rows, int64_t* cols,
                            int64_t* batch = nullptr) {
  const py::array a = as_array(h, op, name);
  if (!is_bf16_bits(a))
    throw py::type_error(std::string(op) + ": " + name + " must be a bfloat16 or uint16 array, got " +
                         std::string(py::str(a.dtype())));
  const bool dims_ok = a.ndim() == 2 || (batch && a.ndim() == 3);
  if (!dims_ok || !(a.flags() & py::array::c_style) || !aligned(a))
    throw py::value_error(std::string(op) + ": " + name + " must be a " + (batch ? "2-D or 3-D" : "2-D") +
                          " C-contiguous aligned array, got " + std::to_string(a.ndim()) + "-D" +
                          ((a.flags() & py::array::c_style) ? "" : " non-contiguous"));
  if (batch) *batch = a.ndim() == 3 ? a.shape(0) : -1;
  *rows = a.shape(a.ndim() - 2);
  *cols = a.shape(a.ndim() - 1);
  return static_cast<const uint16_t*>(a.data());
}

// A bfloat16 bias of length n (or None: null), widened into bf. what: whose n entries it must have ("w's", "rows").
const float* widened_bias(const char* op, const py::handle& bias_h, int64_t n, const char* whose, const char* what,
                          fg::AlignedBuffer* bf) {
  if (bias_h.is_none()) return nullptr;
  const py::array b = as_array(bias_h, op, "bias");
  if (!is_bf16_bits(b))
    throw py::type_error(std::string(op) + ": bias must be a bfloat16 or uint16 array, got " +
                         std::string(py::str(b.dtype())));
  check_layout(b, op, "bias", false);
  if (b.shape(0) != n)
    throw py::value_error(std::string(op) + ": bias must have " + whose + " " + std::to_string(n) + " " + what +
                          ", got length " + std::to_string(b.shape(0)));
  bf->reset(static_cast<size_t>(n > 0 ? n : 1));
  fg::bf16_to_f32(static_cast<const uint16_t*>(b.data()), bf->data(), n);
  return bf->data();
}

constexpr int64_t kNativeMinRows = 8;

// y = x w^T + bias, every operand bfloat16, the float32 result rounded once. Where fg::sbgemm_path() is
// "avx512_bf16" and x has 8 rows or more: the vdpbf16ps GEMM (its contract: forgegrad/sbgemm.h). Elsewhere x and bias
// are widened exactly into float32 scratch and w as the weight-only bfloat16 GEMM reads it (linear_bf16w: the bits of
// a float32 Linear on the widened weight): the bits of the float32 Linear on the widened operands, rounded.
py::array linear(const py::handle& x_h, const py::handle& w_h, const py::handle& bias_h) {
  int64_t M, K, N, K2;
  const uint16_t* x = bf16_matrix("linear", x_h, "x", &M, &K);
  const uint16_t* w = bf16_matrix("linear", w_h, "w", &N, &K2);
  if (K2 != K)
    throw py::value_error("linear: w must have shape (N, " + std::to_string(K) + ") to match x's " + std::to_string(K) +
                          " columns, got (" + std::to_string(N) + ", " + std::to_string(K2) + ")");
  fg::AlignedBuffer bf;
  const float* bias = widened_bias("linear", bias_h, N, "w's", "rows", &bf);
  py::array_t<uint16_t> out({M, N});
  uint16_t* y = out.mutable_data();
  py::gil_scoped_release release;
  if (M > 0 && N > 0) {
    fg::AlignedBuffer yf(static_cast<size_t>(M * N));
    // (fewer than 8 rows, a decode step: the weight-only kernel's dot form, which reads the weight once; the
    // packed GEMM would read and write it once more to pack it: 1 x 896 -> 4864 in 311 us against 83, 8 rows alike)
    if (M >= kNativeMinRows && std::string(fg::sbgemm_path()) == "avx512_bf16") {
      fg::sbgemm(false, true, M, N, K, x, K, w, K, bias, yf.data(), N);
    } else {
      fg::AlignedBuffer xf(static_cast<size_t>(M * K > 0 ? M * K : 1));
      fg::bf16_to_f32(x, xf.data(), M * K);
      fg::linear_bf16w(xf.data(), M, K, w, bias, yf.data(), N);
    }
    fg::f32_to_bf16(yf.data(), y, M * N);
  }
  return out;
}

// out = op(a) op(b) (+ bias), bfloat16 in, rounded once to bfloat16 bits: fg::sbgemm per batch entry. a and b 2-D,
// or 3-D with one batch (a 2-D operand is shared by every entry).
py::array gemm(const py::handle& a_h, const py::handle& b_h, bool trans_a, bool trans_b, const py::handle& bias_h) {
  int64_t ar, ac, ab, br, bc, bb;
  const uint16_t* a = bf16_matrix("gemm", a_h, "a", &ar, &ac, &ab);
  const uint16_t* b = bf16_matrix("gemm", b_h, "b", &br, &bc, &bb);
  const int64_t M = trans_a ? ac : ar, K = trans_a ? ar : ac, Kb = trans_b ? bc : br, N = trans_b ? br : bc;
  if (Kb != K)
    throw py::value_error("gemm: op(b) must have op(a)'s " + std::to_string(K) + " columns as its rows, got " +
                          std::to_string(Kb) + " (a " + std::to_string(ar) + "x" + std::to_string(ac) +
                          (trans_a ? " transposed" : "") + ", b " + std::to_string(br) + "x" + std::to_string(bc) +
                          (trans_b ? " transposed" : "") + ")");
  if (ab >= 0 && bb >= 0 && ab != bb)
    throw py::value_error("gemm: a and b must have the same batch size, got " + std::to_string(ab) + " and " +
                          std::to_string(bb));
  fg::AlignedBuffer bf;
  const float* bias = widened_bias("gemm", bias_h, N, "op(b)'s", "columns", &bf);
  const int64_t batch = ab > bb ? ab : bb;
  const std::vector<py::ssize_t> shape =
      batch >= 0 ? std::vector<py::ssize_t>{batch, M, N} : std::vector<py::ssize_t>{M, N};
  py::array_t<uint16_t> out(shape);
  uint16_t* y = out.mutable_data();
  py::gil_scoped_release release;
  if (M > 0 && N > 0) {
    fg::AlignedBuffer yf(static_cast<size_t>(M * N));
    for (int64_t e = 0; e < (batch >= 0 ? batch : 1); ++e) {
      fg::sbgemm(trans_a, trans_b, M, N, K, a + (ab >= 0 ? e * ar * ac : 0), ac, b + (bb >= 0 ? e * br * bc : 0), bc,
                 bias, yf.data(), N);
      fg::f32_to_bf16(yf.data(), y + e * M * N, M * N);
    }
  }
  return out;
}

void bind(py::module_& m) {
  m.def("linear", &linear, py::arg("x"), py::arg("w"), py::arg("bias"),
        "y (M, N) = x (M, K) w (N, K)^T + bias (N or None), bfloat16 (or uint16 bit pattern) arrays in, uint16 bit "
        "patterns out, the float32 result rounded once to nearest even: the vdpbf16ps GEMM where gemm_path() is "
        "'avx512_bf16' and M >= 8, else the float32 Linear of the exactly widened operands.");
  m.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
        py::arg("bias") = py::none(),
        "out = op(a) op(b) + bias: a (M, K) or (K, M) with trans_a, b (K, N) or (N, K) with trans_b, each 2-D or 3-D "
        "(batch, ...; a 2-D one is shared by the batch), bias (N) or None; bfloat16 (or uint16 bit pattern) arrays "
        "in, the float32 result rounded once to uint16 bit patterns out. The vdpbf16ps kernel where gemm_path() is "
        "'avx512_bf16' (denormal bfloat16 inputs and products flushed; the same bits at any thread count), else the "
        "widened operands through the float32 sgemm.");
  m.def(
      "gemm_path", [] { return std::string(fg::sbgemm_path()); },
      "The path linear and gemm take now: 'avx512_bf16' (vdpbf16ps; the CPU has AVX512_BF16 and the SIMD path is "
      "avx512) or 'float32' (the operands widened, float32 kernels).");
  m.def("set_gemm_native", &fg::set_sbgemm_native, py::arg("allow"),
        "allow=False keeps linear and gemm on the 'float32' path even where vdpbf16ps runs (A/B comparisons); True "
        "(the default) takes the best path the SIMD setting allows.");
  m.def("round_from_float32", &round_from_float32, py::arg("src"), py::arg("out"),
        "out[i] = src[i] (float32) rounded to bfloat16, to nearest even (a NaN: the quiet NaN of its sign, as "
        "ml_dtypes); out a bfloat16 or uint16 array of src's length. Threads over large arrays; the same bits "
        "on every ISA and thread count.");
  m.def("widen_to_float32", &widen_to_float32, py::arg("src"), py::arg("out"),
        "out[i] = src[i] (bfloat16, or its uint16 bit pattern) as float32, exactly.");
}

}  // namespace

FG_REGISTER_BINDINGS(bf16, bind)
