// forgegrad._C.quant: int8 GEMM, dynamic-quantized Linear and the quantize helpers on numpy arrays.
//   pack_weight(w s8 (N, K)) -> (packed s8, colsum s32 (N,))
//   gemm_u8s8s32(a u8 (M, K), packed, N, K) -> s32 (M, N)                 (the exact integer product)
//   linear_dynamic(x f32 (M, K), packed, colsum, w_scale, bias, reduce_range, relu) -> f32 (M, N)
//   linear_u8(a u8 (M, K), a_scale, a_zp, packed, colsum, w_scale, bias, relu, out_scale, out_zp)
//       -> f32 (M, N), or u8 (M, N) requantized when out_scale is given
//   conv2d_f32(x f32 (N, C, H, W), x_scale, x_zp, packed, colsum, w_scale, bias, weight_shape, stride,
//              padding (t, b, l, r), dilation, out_scale, out_zp, relu=False, pool=(1, 1))
//       -> f32 (N, OC, OH / pool[0], OW / pool[1]): static int8 Conv2d, optionally with ReLU and a
//          max-pool (window = stride = pool, floor) fused on its u8 output
//   linear_weight_only(x f32 (M, K), w s8 (N, K), w_scale f32 (N,), bias) -> f32 (M, N)  (weight-only int8)
//   linear_bf16(x f32 (M, K), w u16 (N, K) bfloat16 bits, bias) -> f32 (M, N)  (weight-only bfloat16)
//   rnn_dynamic_layer(mode, gi, packed_hh, colsum, w_scale, bias, h0, c0, reverse, reduce_range)
//       -> (y, h_n, c_n | None): one direction of a dynamic-int8 LSTM (0) / GRU (1) layer
//   choose_qparams(x f32, reduce_range) -> (scale, zero_point); quantize_u8(x, scale, zp, qmin, qmax)
//   path() / set_path(name | None) / paths() / amx_status()
// Every argument is checked here (dtype, rank, shape, contiguity, sizes); a kernel never sees bad input.
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/checked.h"
#include "forgegrad/conv.h"
#include "forgegrad/cpu.h"
#include "forgegrad/gemm.h"
#include "forgegrad/py_array.h"
#include "forgegrad/qconv.h"
#include "forgegrad/qgemm.h"
#include "forgegrad/rnn.h"

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
  // only the AVX2 path has a 7-bit kernel: elsewhere the scan (a pass over A) would buy nothing
  g.a_7bit = fg::active_qpath() == fg::QPath::avx2 && all_7bit(A, M * K);
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

// A static-quantized Conv2d (groups = 1) from float x to the float values of its u8 output; see
// forgegrad/qconv.h. weight_shape (OC, C, kh, kw) is the shape the packed weights came from.
py::array conv2d_f32(const py::handle& x, double x_scale, int64_t x_zp, const py::handle& packed,
                     const py::handle& colsum, const py::handle& w_scale, const py::handle& bias,
                     const std::vector<int64_t>& weight_shape, const std::vector<int64_t>& stride,
                     const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation, double out_scale,
                     int64_t out_zp, bool relu, const std::vector<int64_t>& pool) {
  const float* X = typed<float>(x, "x", "float32", 4);
  auto xs = shape_of(py::reinterpret_borrow<py::array>(x));
  auto pair = [](const std::vector<int64_t>& v, size_t n, const char* name, int64_t lo) {
    if (v.size() != n) throw py::value_error(std::string(name) + " must have " + std::to_string(n) + " entries");
    for (int64_t e : v)
      if (e < lo)
        throw py::value_error(std::string(name) + " entries must be >= " + std::to_string(lo) + ", got " +
                              shape_str(v));
  };
  pair(weight_shape, 4, "weight_shape", 1);
  pair(stride, 2, "stride", 1);
  pair(padding, 4, "padding (top, bottom, left, right)", 0);
  pair(dilation, 2, "dilation", 1);
  pair(pool, 2, "pool", 1);
  fg::QConvGeom g{};
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3];
  g.OC = weight_shape[0], g.kh = weight_shape[2], g.kw = weight_shape[3];
  if (weight_shape[1] != g.C)
    throw py::value_error("x must have " + std::to_string(weight_shape[1]) + " channels (weight_shape " +
                          shape_str(weight_shape) + "), got shape " + shape_str(xs));
  g.sh = stride[0], g.sw = stride[1], g.dh = dilation[0], g.dw = dilation[1];
  g.pt = padding[0], g.pb = padding[1], g.pl = padding[2], g.pr = padding[3];
  int64_t K = 0;
  if (!fg::checked_mul(g.kh, g.kw, &K) || !fg::checked_mul(K, g.C, &K))
    throw py::value_error("weight_shape " + shape_str(weight_shape) + " is too large");
  Packed p = packed_arg(packed, g.OC, K);
  const float* B = nullptr;
  epilogue_args(p, colsum, w_scale, bias, g.OC, &B);
  check_qparams(x_scale, x_zp, "x_scale", "x_zero_point");
  check_qparams(out_scale, out_zp, "out_scale", "out_zero_point");
  if (const char* bad = fg::conv_out_size(g.H, g.pt, g.pb, g.kh, g.sh, g.dh, &g.OH))
    throw py::value_error(std::string("conv2d_f32: the ") + bad + " (height) gives no valid output geometry");
  if (const char* bad = fg::conv_out_size(g.W, g.pl, g.pr, g.kw, g.sw, g.dw, &g.OW))
    throw py::value_error(std::string("conv2d_f32: the ") + bad + " (width) gives no valid output geometry");
  if (g.OH < 1 || g.OW < 1)
    throw py::value_error("conv2d_f32: kernel size (" + std::to_string(g.kh) + ", " + std::to_string(g.kw) +
                          ") with dilation " + shape_str(dilation) + " is larger than the padded input (" +
                          std::to_string(g.H + g.pt + g.pb) + ", " + std::to_string(g.W + g.pl + g.pr) + ")");
  g.ph = pool[0], g.pw = pool[1], g.relu = relu;
  if (g.ph > g.OH || g.pw > g.OW)
    throw py::value_error("conv2d_f32: pool " + shape_str(pool) + " is larger than the convolution's output (" +
                          std::to_string(g.OH) + ", " + std::to_string(g.OW) + ")");
  // the scratch of the kernel: the im2col matrix and the padded channels-last input
  int64_t cols = 0, padded = 0;
  if (!fg::checked_mul(g.OH, g.OW, &cols) || !fg::checked_mul(cols, g.N, &cols) ||
      !fg::checked_mul(cols, fg::qpad_k(K), &cols) || !fg::checked_mul(g.H + g.pt + g.pb, g.W + g.pl + g.pr, &padded) ||
      !fg::checked_mul(padded, g.N * g.C, &padded))
    throw py::value_error("conv2d_f32: the im2col matrix of x " + shape_str(xs) + " would not fit in memory");
  py::array_t<float> out({g.N, g.OC, g.OH / g.ph, g.OW / g.pw});
  float* Y = out.mutable_data();
  py::gil_scoped_release release;
  std::vector<float> scale(static_cast<size_t>(g.OC));
  for (int64_t n = 0; n < g.OC; ++n) scale[n] = static_cast<float>(x_scale) * p.w_scale[n];
  fg::QConvArgs a{};
  a.x_inv_scale = static_cast<float>(1.0 / x_scale);
  a.x_zp = static_cast<int32_t>(x_zp);
  a.packed = p.b;
  a.colsum = p.colsum;
  a.scale = scale.data();
  a.bias = B;
  a.out_scale = static_cast<float>(out_scale);
  a.out_inv_scale = static_cast<float>(1.0 / out_scale);
  a.out_zp = static_cast<int32_t>(out_zp);
  fg::qconv2d_f32(g, a, X, Y);
  return out;
}

// The checked arguments of a weight-only Linear: x (M, K) float32, w (N, K) of T, bias (N,) float32 or None.
template <class T>
struct WeightOnlyArgs {
  const float* x;
  const T* w;
  const float* bias = nullptr;
  int64_t M, K, N;
};

template <class T>
WeightOnlyArgs<T> weight_only_args(const py::handle& x, const py::handle& w, const py::handle& bias,
                                   const char* w_dtype) {
  WeightOnlyArgs<T> a;
  a.x = typed<float>(x, "x", "float32", 2);
  a.w = typed<T>(w, "w", w_dtype, 2);
  auto xs = shape_of(py::reinterpret_borrow<py::array>(x)), ws = shape_of(py::reinterpret_borrow<py::array>(w));
  a.M = xs[0], a.K = xs[1], a.N = ws[0];
  if (ws[1] != a.K)
    throw py::value_error("w must have shape (N, " + std::to_string(a.K) + ") to match x " + shape_str(xs) + ", got " +
                          shape_str(ws));
  if (!bias.is_none()) {
    a.bias = typed<float>(bias, "bias", "float32", 1);
    expect(bias, "bias", {a.N});
  }
  return a;
}

py::array linear_weight_only(const py::handle& x, const py::handle& w, const py::handle& w_scale,
                             const py::handle& bias) {
  const auto a = weight_only_args<int8_t>(x, w, bias, "int8");
  const float* S = typed<float>(w_scale, "w_scale", "float32", 1);
  expect(w_scale, "w_scale", {a.N});
  py::array_t<float> out({a.M, a.N});
  float* Y = out.mutable_data();
  py::gil_scoped_release release;
  if (a.M > 0 && a.N > 0) fg::qlinear_weight_only(a.x, a.M, a.K, a.w, S, a.bias, Y, a.N);
  return out;
}

py::array linear_bf16(const py::handle& x, const py::handle& w, const py::handle& bias) {
  const auto a = weight_only_args<uint16_t>(x, w, bias, "uint16 (bfloat16 bit patterns)");
  py::array_t<float> out({a.M, a.N});
  float* Y = out.mutable_data();
  py::gil_scoped_release release;
  if (a.M > 0 && a.N > 0) fg::linear_bf16w(a.x, a.M, a.K, a.w, a.bias, Y, a.N);
  return out;
}

// One direction of a dynamic-quantized LSTM (mode 0) or GRU (mode 1) layer over T steps, given the
// input projection gi (T, B, G*H) (x W_ih^T + b_ih, computed by the caller on the int8 kernel). Each
// step quantizes h over the batch (as DynamicQuantizedLinear would), runs h W_hh^T + b_hh on the
// int8 kernel and the gate arithmetic (torch's gate order; sigmoid/tanh: the RNN kernels' SIMD ones).
py::tuple rnn_dynamic_layer(int mode, const py::handle& gi, const py::handle& packed, const py::handle& colsum,
                            const py::handle& w_scale, const py::handle& bias, const py::handle& h0,
                            const py::handle& c0, bool reverse, bool reduce_range) {
  if (mode != 0 && mode != 1) throw py::value_error("mode must be 0 (LSTM) or 1 (GRU), got " + std::to_string(mode));
  const int G = mode == 0 ? 4 : 3;
  const float* GI = typed<float>(gi, "gi", "float32", 3);
  auto gs = shape_of(py::reinterpret_borrow<py::array>(gi));
  const int64_t T = gs[0], B = gs[1], GH = gs[2], H = GH / G;
  if (H < 1 || GH != G * H)
    throw py::value_error("gi.shape[2] must be " + std::to_string(G) + " * hidden_size, got " + shape_str(gs));
  typed<int32_t>(colsum, "colsum", "int32", 1);
  expect(colsum, "colsum", {GH});
  Packed p = packed_arg(packed, GH, H);
  const float* Bh = nullptr;
  epilogue_args(p, colsum, w_scale, bias, GH, &Bh);
  const float* H0 = typed<float>(h0, "h0", "float32", 2);
  expect(h0, "h0", {B, H});
  const float* C0 = nullptr;
  if (mode == 0) {
    C0 = typed<float>(c0, "c0", "float32", 2);
    expect(c0, "c0", {B, H});
  }
  py::array_t<float> y({T, B, H}), hn({B, H});
  py::object cn = py::none();
  float* Y = y.mutable_data();
  float* HN = hn.mutable_data();
  float* CN = nullptr;
  if (mode == 0) {
    py::array_t<float> c({B, H});
    CN = c.mutable_data();
    cn = c;
  }
  {
    py::gil_scoped_release release;
    std::vector<float> h(H0, H0 + B * H), c, gh(static_cast<size_t>(B * GH)), scale(static_cast<size_t>(GH));
    if (C0) c.assign(C0, C0 + B * H);
    const int64_t lda = fg::qpad_k(H);
    std::vector<uint8_t> buf(static_cast<size_t>(B * lda));
    fg::QGemmArgs q;
    q.a = buf.data();
    q.lda = lda;
    q.b = p.b;
    q.M = B;
    q.N = GH;
    q.K = H;
    q.out = fg::QOut::f32;
    q.c = gh.data();
    q.ldc = GH;
    q.colsum = p.colsum;
    q.scale = scale.data();
    q.bias = Bh;
    q.a_7bit = reduce_range;
    // Batch 1 on the VNNI kernels: the recurrent product and the gates in one fused step.
    fg::QRnnStepArgs fused;
    fused.mode = mode;
    fused.H = H;
    fused.a = buf.data();
    fused.b = p.b;
    fused.colsum = p.colsum;
    fused.w_scale = p.w_scale;
    fused.bias = Bh;
    fused.c = c.data();
    fused.h = h.data();
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const fg::QParams qp = qparams_of(h.data(), B * H, reduce_range);
      fg::qquantize_u8(h.data(), B, H, H, 1.0f / qp.scale, qp.zero_point, 0, reduce_range ? 127 : 255, buf.data(), lda,
                       lda);
      fused.a_zp = qp.zero_point;
      fused.a_scale = qp.scale;
      fused.gi = GI + t * GH;
      if (B == 1 && fg::qrnn_step_b1(fused)) {
        std::copy(h.begin(), h.end(), Y + t * H);
        continue;
      }
      for (int64_t n = 0; n < GH; ++n) scale[n] = qp.scale * p.w_scale[n];
      q.a_zp = qp.zero_point;
      fg::qgemm(q);
      for (int64_t b = 0; b < B; ++b)
        fg::rnn_dynamic_cell(mode, H, GI + (t * B + b) * GH, gh.data() + b * GH, mode == 0 ? c.data() + b * H : nullptr,
                             h.data() + b * H);
      std::copy(h.begin(), h.end(), Y + t * B * H);
    }
    std::copy(h.begin(), h.end(), HN);
    if (CN) std::copy(c.begin(), c.end(), CN);
  }
  return py::make_tuple(y, hn, cn);
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
    throw py::type_error("the int8 path must be a str ('amx', 'avx512_vnni', 'avx_vnni', 'avx2', 'scalar') or None");
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
  m.def("conv2d_f32", &conv2d_f32, py::arg("x"), py::arg("x_scale"), py::arg("x_zero_point"), py::arg("packed"),
        py::arg("colsum"), py::arg("w_scale"), py::arg("bias"), py::arg("weight_shape"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("out_scale"), py::arg("out_zero_point"),
        py::arg("relu") = false, py::arg("pool") = std::vector<int64_t>{1, 1});
  m.def("linear_weight_only", &linear_weight_only, py::arg("x"), py::arg("w"), py::arg("w_scale"), py::arg("bias"));
  m.def("linear_bf16", &linear_bf16, py::arg("x"), py::arg("w"), py::arg("bias"),
        "x @ widen(w).T + bias for x (M, K) float32 and w (N, K) uint16 bfloat16 bit patterns: the same bits "
        "as a float32 linear over the widened weight.");
  m.def("rnn_dynamic_layer", &rnn_dynamic_layer, py::arg("mode"), py::arg("gi"), py::arg("packed"), py::arg("colsum"),
        py::arg("w_scale"), py::arg("bias"), py::arg("h0"), py::arg("c0"), py::arg("reverse"), py::arg("reduce_range"));
  m.def("choose_qparams", &choose_qparams, py::arg("x"), py::arg("reduce_range"));
  m.def("quantize_u8", &quantize_u8, py::arg("x"), py::arg("scale"), py::arg("zero_point"), py::arg("qmin"),
        py::arg("qmax"));
  m.def("path", [] { return std::string(fg::qpath_name(fg::active_qpath())); });
  m.def("set_path", &set_path, py::arg("name"));
  m.def("paths", &paths);
  m.def("avx_vnni_encoding", [] { return std::string(fg::avx_vnni_encoding()); });
  m.def("amx_status", [] {
    const std::string r = fg::amx_unavailable_reason();
    return r.empty() ? std::string("available") : r;
  });
}

}  // namespace

FG_REGISTER_BINDINGS(quant, bind)
