// forgegrad._C.quant: int8 GEMM, dynamic-quantized Linear and the quantize helpers on numpy arrays.
//   pack_weight(w s8 (N, K)) -> (packed s8, colsum s32 (N,))
//   gemm_u8s8s32(a u8 (M, K), packed, N, K) -> s32 (M, N)                 (the exact integer product)
//   linear_dynamic(x f32 (M, K), packed, colsum, w_scale, bias, reduce_range, relu) -> f32 (M, N)
//   linear_u8(a u8 (M, K), a_scale, a_zp, packed, colsum, w_scale, bias, relu, out_scale, out_zp)
//       -> f32 (M, N), or u8 (M, N) requantized when out_scale is given
//   linear_weight_only(x f32 (M, K), w s8 (N, K), w_scale f32 (N,), bias) -> f32 (M, N)  (weight-only int8)
//   choose_qparams(x f32, reduce_range) -> (scale, zero_point); quantize_u8(x, scale, zp, qmin, qmax)
//   path() / set_path(name | None) / paths() / amx_status()
// Every argument is checked here (dtype, rank, shape, contiguity, sizes); a kernel never sees bad input.
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/cpu.h"
#include "forgegrad/py_array.h"
#include "forgegrad/qgemm.h"

namespace py = pybind11;
using fg::bind::shape_str;

namespace {

std::vector<int64_t> shape_of(const py::array& a) { return std::vector<int64_t>(a.shape(), a.shape() + a.ndim()); }

// A C-contiguous, aligned array of dtype T and rank ndim (-1: any), or TypeError / ValueError.
template <class T>
const T* typed(const py::handle& h, const char* name, const char* dtype_name, int ndim) {
  if (!py::isinstance<py::array>(h))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray of " + dtype_name + ", got " +
                         std::string(py::str(py::type::of(h).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(h);
  if (!py::detail::npy_api::get().PyArray_EquivTypes_(a.dtype().ptr(), py::dtype::of<T>().ptr()))
    throw py::type_error(std::string(name) + " must have dtype " + dtype_name + ", got " +
                         std::string(py::str(a.dtype())));
  if (ndim >= 0 && a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " +
                          shape_str(shape_of(a)));
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  if (a.size() > 0 && reinterpret_cast<uintptr_t>(a.data()) % sizeof(T) != 0)
    throw py::value_error(std::string(name) +
                          " is not aligned to its item size; pass numpy.require(a, requirements='A')");
  return static_cast<const T*>(a.data());
}

void expect(const py::handle& h, const char* name, const std::vector<int64_t>& want) {
  auto got = shape_of(py::reinterpret_borrow<py::array>(h));
  if (got != want)
    throw py::value_error(std::string(name) + " must have shape " + shape_str(want) + ", got " + shape_str(got));
}

void check_k(int64_t K, const char* what) {
  if (K < 1) throw py::value_error(std::string(what) + " must be >= 1, got " + std::to_string(K));
  if (K > fg::kQMaxK)
    throw py::value_error(std::string(what) + " = " + std::to_string(K) + " is above " + std::to_string(fg::kQMaxK) +
                          ", where int32 sums of u8 x s8 products could overflow");
}

// The packed weights of an (N, K) matrix, its column sums and per-channel scales.
struct Packed {
  const int8_t* b;
  const int32_t* colsum = nullptr;
  const float* w_scale = nullptr;
};

Packed packed_arg(const py::handle& packed, int64_t N, int64_t K) {
  Packed p{typed<int8_t>(packed, "packed", "int8", 1)};
  if (N < 1) throw py::value_error("N must be >= 1, got " + std::to_string(N));
  check_k(K, "K");
  expect(packed, "packed", {fg::qpacked_bytes(N, K)});
  return p;
}

void epilogue_args(Packed& p, const py::handle& colsum, const py::handle& w_scale, const py::handle& bias, int64_t N,
                   const float** bias_ptr) {
  p.colsum = typed<int32_t>(colsum, "colsum", "int32", 1);
  expect(colsum, "colsum", {N});
  p.w_scale = typed<float>(w_scale, "w_scale", "float32", 1);
  expect(w_scale, "w_scale", {N});
  *bias_ptr = nullptr;
  if (!bias.is_none()) {
    *bias_ptr = typed<float>(bias, "bias", "float32", 1);
    expect(bias, "bias", {N});
  }
}

// The activations quantized into rows padded to a multiple of 64 bytes (zeros), as the kernels read them.
struct PaddedA {
  std::vector<uint8_t> buf;
  int64_t lda;
};

// Whether every byte is <= 127 (lets the AVX2 kernel use vpmaddubsw, see QGemmArgs::a_7bit).
bool all_7bit(const uint8_t* a, int64_t n) {
  uint8_t any = 0;
  for (int64_t i = 0; i < n; ++i) any |= a[i];
  return any < 128;
}

// Points g.a at A (M, K) as the kernels read it: rows of qpad_k(K) bytes, zero past K. A itself when
// K is already a multiple of 64; otherwise a padded copy in `buf`.
void set_activations(fg::QGemmArgs& g, const uint8_t* A, int64_t M, int64_t K, std::vector<uint8_t>& buf) {
  const int64_t lda = fg::qpad_k(K);
  if (lda == K) {
    g.a = A;
  } else {
    buf.assign(static_cast<size_t>(M * lda), 0);
    for (int64_t m = 0; m < M; ++m) std::copy(A + m * K, A + (m + 1) * K, buf.begin() + m * lda);
    g.a = buf.data();
  }
  g.lda = lda;
  g.a_7bit = all_7bit(A, M * K);
}

py::tuple pack_weight(const py::handle& w) {
  const int8_t* W = typed<int8_t>(w, "w", "int8", 2);
  auto shape = shape_of(py::reinterpret_borrow<py::array>(w));
  const int64_t N = shape[0], K = shape[1];
  if (N < 1) throw py::value_error("w must have at least one row (output channel), got shape " + shape_str(shape));
  check_k(K, "w.shape[1] (K)");
  py::array_t<int8_t> packed({fg::qpacked_bytes(N, K)});
  py::array_t<int32_t> colsum({N});
  int8_t* P = packed.mutable_data();
  int32_t* S = colsum.mutable_data();
  {
    py::gil_scoped_release release;
    fg::qpack_weight(W, N, K, K, P, S);
  }
  return py::make_tuple(packed, colsum);
}

py::array gemm_u8s8s32(const py::handle& a, const py::handle& packed, int64_t N, int64_t K) {
  const uint8_t* A = typed<uint8_t>(a, "a", "uint8", 2);
  Packed p = packed_arg(packed, N, K);
  const int64_t M = shape_of(py::reinterpret_borrow<py::array>(a))[0];
  expect(a, "a", {M, K});
  py::array_t<int32_t> out({M, N});
  fg::QGemmArgs g;
  g.b = p.b;
  g.M = M;
  g.N = N;
  g.K = K;
  g.out = fg::QOut::s32;
  g.c = out.mutable_data();
  g.ldc = N;
  {
    py::gil_scoped_release release;
    std::vector<uint8_t> buf;
    set_activations(g, A, M, K, buf);
    fg::qgemm(g);
  }
  return out;
}

fg::QParams qparams_of(const float* x, int64_t n, bool reduce_range) {
  if (n == 0) return fg::choose_qparams_u8(0.0f, 0.0f, reduce_range);
  float mn, mx;
  fg::qminmax_f32(x, n, &mn, &mx);
  if (!std::isfinite(mn) || !std::isfinite(mx))
    throw std::domain_error("x contains NaN or infinity: it has no int8 quantization range");
  return fg::choose_qparams_u8(mn, mx, reduce_range);
}

py::array linear_dynamic(const py::handle& x, const py::handle& packed, const py::handle& colsum,
                         const py::handle& w_scale, const py::handle& bias, bool reduce_range, bool relu) {
  const float* X = typed<float>(x, "x", "float32", 2);
  auto xs = shape_of(py::reinterpret_borrow<py::array>(x));
  const int64_t M = xs[0], K = xs[1];
  typed<int32_t>(colsum, "colsum", "int32", 1);  // N is its length
  const int64_t N = shape_of(py::reinterpret_borrow<py::array>(colsum))[0];
  Packed p = packed_arg(packed, N, K);
  const float* B = nullptr;
  epilogue_args(p, colsum, w_scale, bias, N, &B);
  py::array_t<float> out({M, N});
  float* Y = out.mutable_data();
  py::gil_scoped_release release;
  if (M == 0) return out;
  fg::QParams q = qparams_of(X, M * K, reduce_range);  // per batch: the whole x
  const int64_t lda = fg::qpad_k(K);
  std::vector<uint8_t> buf(static_cast<size_t>(M * lda));
  // 7-bit activations are clamped to 127 (their range maps to [0, 127]; rounding could give 128)
  const int32_t qmax = reduce_range ? 127 : 255;
  fg::qquantize_u8(X, M, K, K, 1.0f / q.scale, q.zero_point, 0, qmax, buf.data(), lda, lda);
  std::vector<float> scale(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) scale[n] = q.scale * p.w_scale[n];
  fg::QGemmArgs g;
  g.a = buf.data();
  g.lda = lda;
  g.b = p.b;
  g.M = M;
  g.N = N;
  g.K = K;
  g.out = fg::QOut::f32;
  g.c = Y;
  g.ldc = N;
  g.a_zp = q.zero_point;
  g.colsum = p.colsum;
  g.scale = scale.data();
  g.bias = B;
  g.relu = relu;
  g.a_7bit = reduce_range;
  fg::qgemm(g);
  return out;
}

void check_qparams(double scale, int64_t zp, const char* sname, const char* zname) {
  if (!(scale > 0) || !std::isfinite(scale))
    throw py::value_error(std::string(sname) + " must be a finite number > 0, got " + std::to_string(scale));
  if (zp < 0 || zp > 255) throw py::value_error(std::string(zname) + " must be in [0, 255], got " + std::to_string(zp));
}

py::array linear_u8(const py::handle& a, double a_scale, int64_t a_zp, const py::handle& packed,
                    const py::handle& colsum, const py::handle& w_scale, const py::handle& bias, bool relu,
                    const py::object& out_scale, int64_t out_zp) {
  const uint8_t* A = typed<uint8_t>(a, "a", "uint8", 2);
  auto as = shape_of(py::reinterpret_borrow<py::array>(a));
  const int64_t M = as[0], K = as[1];
  typed<int32_t>(colsum, "colsum", "int32", 1);  // N is its length
  const int64_t N = shape_of(py::reinterpret_borrow<py::array>(colsum))[0];
  Packed p = packed_arg(packed, N, K);
  const float* B = nullptr;
  epilogue_args(p, colsum, w_scale, bias, N, &B);
  check_qparams(a_scale, a_zp, "a_scale", "a_zero_point");
  const bool requant = !out_scale.is_none();
  double os = 1.0;
  if (requant) {
    if (!py::isinstance<py::float_>(out_scale) && !py::isinstance<py::int_>(out_scale))
      throw py::type_error("out_scale must be None or a number, got " +
                           std::string(py::str(py::type::of(out_scale).attr("__name__"))));
    os = out_scale.cast<double>();
    check_qparams(os, out_zp, "out_scale", "out_zero_point");
  }
  py::array out = requant ? py::array(py::array_t<uint8_t>({M, N})) : py::array(py::array_t<float>({M, N}));
  void* C = out.mutable_data();
  py::gil_scoped_release release;
  std::vector<float> scale(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) scale[n] = static_cast<float>(a_scale) * p.w_scale[n];
  fg::QGemmArgs g;
  std::vector<uint8_t> buf;
  set_activations(g, A, M, K, buf);
  g.b = p.b;
  g.M = M;
  g.N = N;
  g.K = K;
  g.out = requant ? fg::QOut::u8 : fg::QOut::f32;
  g.c = C;
  g.ldc = N;
  g.a_zp = static_cast<int32_t>(a_zp);
  g.colsum = p.colsum;
  g.scale = scale.data();
  g.bias = B;
  g.relu = relu;
  g.out_inv_scale = static_cast<float>(1.0 / os);
  g.out_zp = static_cast<int32_t>(out_zp);
  fg::qgemm(g);
  return out;
}

py::array linear_weight_only(const py::handle& x, const py::handle& w, const py::handle& w_scale,
                             const py::handle& bias) {
  const float* X = typed<float>(x, "x", "float32", 2);
  const int8_t* Wq = typed<int8_t>(w, "w", "int8", 2);
  auto xs = shape_of(py::reinterpret_borrow<py::array>(x)), ws = shape_of(py::reinterpret_borrow<py::array>(w));
  const int64_t M = xs[0], K = xs[1], N = ws[0];
  if (ws[1] != K)
    throw py::value_error("w must have shape (N, " + std::to_string(K) + ") to match x " + shape_str(xs) + ", got " +
                          shape_str(ws));
  const float* S = typed<float>(w_scale, "w_scale", "float32", 1);
  expect(w_scale, "w_scale", {N});
  const float* B = nullptr;
  if (!bias.is_none()) {
    B = typed<float>(bias, "bias", "float32", 1);
    expect(bias, "bias", {N});
  }
  py::array_t<float> out({M, N});
  float* Y = out.mutable_data();
  py::gil_scoped_release release;
  if (M > 0 && N > 0) fg::qlinear_weight_only(X, M, K, Wq, S, B, Y, N);
  return out;
}

py::tuple choose_qparams(const py::handle& x, bool reduce_range) {
  const float* X = typed<float>(x, "x", "float32", -1);
  const int64_t n = py::reinterpret_borrow<py::array>(x).size();
  fg::QParams q;
  {
    py::gil_scoped_release release;
    q = qparams_of(X, n, reduce_range);
  }
  return py::make_tuple(q.scale, q.zero_point);
}

py::array quantize_u8(const py::handle& x, double scale, int64_t zp, int64_t qmin, int64_t qmax) {
  const float* X = typed<float>(x, "x", "float32", -1);
  check_qparams(scale, zp, "scale", "zero_point");
  if (qmin < 0 || qmax > 255 || qmin > qmax)
    throw py::value_error("need 0 <= qmin <= qmax <= 255, got qmin=" + std::to_string(qmin) +
                          ", qmax=" + std::to_string(qmax));
  auto xa = py::reinterpret_borrow<py::array>(x);
  std::vector<py::ssize_t> shape(xa.shape(), xa.shape() + xa.ndim());
  py::array_t<uint8_t> out(shape);
  uint8_t* O = out.mutable_data();
  const int64_t n = xa.size();
  py::gil_scoped_release release;
  if (n > 0)
    fg::qquantize_u8(X, 1, n, n, static_cast<float>(1.0 / scale), static_cast<int32_t>(zp), static_cast<int32_t>(qmin),
                     static_cast<int32_t>(qmax), O, n, n);
  return out;
}

void set_path(const py::object& name) {
  if (name.is_none()) {
    fg::reset_qpath();
    return;
  }
  if (!py::isinstance<py::str>(name))
    throw py::type_error("the int8 path must be a str ('amx', 'avx512_vnni', 'avx2', 'scalar') or None");
  try {
    fg::set_qpath(fg::qpath_from_name(name.cast<std::string>().c_str()));
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

py::list paths() {
  py::list out;
  for (int q = static_cast<int>(fg::detected_qpath()); q >= 0; --q)
    out.append(fg::qpath_name(static_cast<fg::QPath>(q)));
  return out;
}

void bind(py::module_& m) {
  m.def("pack_weight", &pack_weight, py::arg("w"));
  m.def("gemm_u8s8s32", &gemm_u8s8s32, py::arg("a"), py::arg("packed"), py::arg("N"), py::arg("K"));
  m.def("linear_dynamic", &linear_dynamic, py::arg("x"), py::arg("packed"), py::arg("colsum"), py::arg("w_scale"),
        py::arg("bias"), py::arg("reduce_range"), py::arg("relu"));
  m.def("linear_u8", &linear_u8, py::arg("a"), py::arg("a_scale"), py::arg("a_zero_point"), py::arg("packed"),
        py::arg("colsum"), py::arg("w_scale"), py::arg("bias"), py::arg("relu"), py::arg("out_scale"),
        py::arg("out_zero_point"));
  m.def("linear_weight_only", &linear_weight_only, py::arg("x"), py::arg("w"), py::arg("w_scale"), py::arg("bias"));
  m.def("choose_qparams", &choose_qparams, py::arg("x"), py::arg("reduce_range"));
  m.def("quantize_u8", &quantize_u8, py::arg("x"), py::arg("scale"), py::arg("zero_point"), py::arg("qmin"),
        py::arg("qmax"));
  m.def("path", [] { return std::string(fg::qpath_name(fg::active_qpath())); });
  m.def("set_path", &set_path, py::arg("name"));
  m.def("paths", &paths);
  m.def("amx_status", [] {
    const std::string r = fg::amx_unavailable_reason();
    return r.empty() ? std::string("available") : r;
  });
}

}  // namespace

FG_REGISTER_BINDINGS(quant, bind)
