// forgegrad._C.gemm: SGEMM on numpy arrays.
//   matmul(a, b, out, trans_a, trans_b, alpha, beta): the whole of forgegrad.kernels.matmul (checks,
//       layouts, allocation) in one call, since Python-level checks cost several microseconds,
//       10% of a small layer's GEMM;
//   sgemm(...), bmm(...): the kernels on arrays whose rows have unit stride (sgemm(reference=True)
//       runs the plain-loop oracle).
// Every array is validated here: bad input raises TypeError/ValueError, never reaches a kernel.
#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

#include "forgegrad/activation.h"
#include "forgegrad/bindings.h"
#include "forgegrad/cpu.h"
#include "forgegrad/gemm.h"
#include "forgegrad/memory.h"
#include "forgegrad/packed_weights.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

// Rank check before f32_arg, with the shape in the message.
void check_rank(const py::array& a, const char* name, int ndim) {
  if (a.ndim() == ndim) return;
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got " + std::to_string(a.ndim()) +
                        "-D with shape " + fg::bind::shape_str(shape));
}

// A 2-D operand whose rows may be strided but whose elements within a row are contiguous.
ArrayArg matrix_arg(const py::array& a, const char* name, bool writable) {
  check_rank(a, name, 2);
  ArrayArg r = fg::bind::f32_arg(a, name, 2, fg::bind::kAnyStrides, writable);
  // Also for a single row: the kernel walks a row with unit stride whatever the row count.
  if (r.shape[1] > 1 && r.strides[1] != 1)
    throw py::value_error(std::string(name) + " must have unit stride along its last axis");
  if (r.shape[0] > 1 && r.strides[0] < r.shape[1])
    throw py::value_error(std::string(name) + " has overlapping or negative row strides");
  return r;
}

int64_t leading_dim(const ArrayArg& r) {
  // A single row (or an empty matrix) may carry any row stride; the kernel needs ld >= cols.
  int64_t ld = r.shape[0] > 1 ? r.strides[0] : r.shape[1];
  return ld < 1 ? 1 : ld;
}

void sgemm(const py::array& a, const py::array& b, const py::array& c, bool trans_a, bool trans_b, float alpha,
           float beta, bool reference) {
  ArrayArg A = matrix_arg(a, "a", false), B = matrix_arg(b, "b", false), C = matrix_arg(c, "out", true);
  int64_t M = trans_a ? A.shape[1] : A.shape[0];
  int64_t K = trans_a ? A.shape[0] : A.shape[1];
  int64_t Kb = trans_b ? B.shape[1] : B.shape[0];
  int64_t N = trans_b ? B.shape[0] : B.shape[1];
  if (K != Kb)
    throw py::value_error("matmul: inner dimensions differ: op(a) is " + fg::bind::shape_str({M, K}) + ", op(b) is " +
                          fg::bind::shape_str({Kb, N}));
  fg::bind::expect_shape(C, "out", {M, N});
  py::gil_scoped_release release;
  auto fn = reference ? &fg::sgemm_reference : &fg::sgemm;
  fn(trans_a, trans_b, M, N, K, alpha, A.f32(), leading_dim(A), B.f32(), leading_dim(B), beta, C.f32(), leading_dim(C));
}

// A stack of matrices (batch, rows, cols): rows strided like matrix_arg, the batch axis with any
// stride >= 0 (0 broadcasts one matrix). Returns the batch stride in elements.
int64_t batch_arg(const py::array& a, const char* name, bool writable, ArrayArg& r) {
  check_rank(a, name, 3);
  r = fg::bind::f32_arg(a, name, 3, fg::bind::kAnyStrides, writable);
  if (r.shape[2] > 1 && r.strides[2] != 1)
    throw py::value_error(std::string(name) + " must have unit stride along its last axis");
  if (r.shape[1] > 1 && r.strides[1] < r.shape[2])
    throw py::value_error(std::string(name) + " has overlapping or negative row strides");
  if (r.shape[0] > 1 && r.strides[0] < 0) throw py::value_error(std::string(name) + " has a negative batch stride");
  return r.shape[0] > 1 ? r.strides[0] : 0;
}

void bmm(const py::array& a, const py::array& b, const py::array& c, bool trans_a, bool trans_b, float alpha,
         float beta) {
  ArrayArg A, B, C;
  int64_t sa = batch_arg(a, "a", false, A), sb = batch_arg(b, "b", false, B), sc = batch_arg(c, "out", true, C);
  int64_t batch = C.shape[0];
  if (A.shape[0] != batch || B.shape[0] != batch)
    throw py::value_error("bmm: batch sizes differ: a has shape " + fg::bind::shape_str(A.shape) + ", b has shape " +
                          fg::bind::shape_str(B.shape) + ", out has shape " + fg::bind::shape_str(C.shape));
  int64_t M = trans_a ? A.shape[2] : A.shape[1];
  int64_t K = trans_a ? A.shape[1] : A.shape[2];
  int64_t Kb = trans_b ? B.shape[2] : B.shape[1];
  int64_t N = trans_b ? B.shape[1] : B.shape[2];
  if (K != Kb)
    throw py::value_error("bmm: inner dimensions differ: op(a) is " + fg::bind::shape_str({batch, M, K}) +
                          ", op(b) is " + fg::bind::shape_str({batch, Kb, N}));
  fg::bind::expect_shape(C, "out", {batch, M, N});
  // Output matrices must not overlap one another (each is written by one sgemm).
  if (batch > 1 && M > 0 && N > 0 && sc < (M - 1) * (M > 1 ? C.strides[1] : 0) + N)
    throw py::value_error("out has overlapping batch entries (batch stride " + std::to_string(sc) + ")");
  auto ld = [](const ArrayArg& r) {
    int64_t v = r.shape[1] > 1 ? r.strides[1] : r.shape[2];
    return v < 1 ? int64_t(1) : v;
  };
  py::gil_scoped_release release;
  fg::sgemm_batched(trans_a, trans_b, batch, M, N, K, alpha, A.f32(), ld(A), sa, B.f32(), ld(B), sb, beta, C.f32(),
                    ld(C), sc);
}

// ---- matmul: any 2-D float32 views --------------------------------------------------------------

// A 2-D float32 view as the kernel reads it: row-major with leading dimension ld, or, for a
// column-major view, the row-major transpose (transposed = true).
struct Operand {
  py::array keep;  // owns a copy when the view had to be made contiguous
  float* ptr = nullptr;
  int64_t ld = 1;
  bool transposed = false;
  bool direct = true;  // false: copied
};

py::array checked_matrix(py::handle h, const char* name) {
  if (!py::isinstance<py::array>(h))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray of float32, got " +
                         std::string(py::str(py::type::of(h).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(h);
  if (!fg::bind::is_float32(a))
    throw py::type_error(std::string(name) + " must have dtype float32, got " + std::string(py::str(a.dtype())));
  check_rank(a, name, 2);
  return a;
}

// Row-major with unit inner stride and non-overlapping rows (strides in elements)?
bool rows_ok(int64_t r, int64_t c, int64_t rs, int64_t cs) { return (c <= 1 || cs == 1) && (r <= 1 || rs >= c); }

// An aligned C-contiguous float32 version of `a` (a copy unless `a` already is one), made by numpy:
// a failed allocation raises numpy's MemoryError (array_t::ensure would return a null handle with
// the error cleared, and the kernel would then read through a null pointer).
py::array contiguous_copy(const py::array& a) {
  // Leaked on purpose: a static py::object would be released after the interpreter is gone.
  static const py::object* require = new py::object(py::module_::import("numpy").attr("require"));
  return (*require)(a, py::dtype::of<float>(), "CA");
}

bool aligned(const py::array& a) { return reinterpret_cast<uintptr_t>(a.data()) % alignof(float) == 0; }

Operand operand(const py::array& a) {
  Operand o;
  const int64_t r = a.shape(0), c = a.shape(1);
  // Unaligned data (numpy allows it) is copied: the kernels load floats through float pointers.
  const bool whole = a.strides(0) % 4 == 0 && a.strides(1) % 4 == 0 && aligned(a);
  const int64_t rs = a.strides(0) / 4, cs = a.strides(1) / 4;
  if (whole && rows_ok(r, c, rs, cs)) {
    o.ld = r > 1 ? rs : c;
  } else if (whole && rows_ok(c, r, cs, rs)) {
    o.transposed = true;
    o.ld = c > 1 ? cs : r;
  } else {
    o.keep = contiguous_copy(a);
    o.direct = false;
    o.ld = c;
  }
  if (o.ld < 1) o.ld = 1;
  o.ptr = static_cast<float*>(const_cast<void*>(o.direct ? a.data() : o.keep.data()));
  return o;
}

// Byte range [lo, hi) spanned by a 2-D array.
std::pair<intptr_t, intptr_t> extent(const py::array& a) {
  intptr_t lo = reinterpret_cast<intptr_t>(a.data()), hi = lo + a.itemsize();
  for (int i = 0; i < 2; ++i) {
    intptr_t span = static_cast<intptr_t>(a.shape(i) - 1) * a.strides(i);
    (span < 0 ? lo : hi) += span;
  }
  return {lo, hi};
}

bool overlaps(const py::array& x, const py::array& y) {
  if (x.size() == 0 || y.size() == 0) return false;
  auto [xl, xh] = extent(x);
  auto [yl, yh] = extent(y);
  if (xh <= yl || yh <= xl) return false;
  // The byte ranges meet (e.g. two slices of one buffer): ask numpy for the exact answer.
  return py::module_::import("numpy").attr("shares_memory")(x, y).cast<bool>();
}

py::array matmul(py::handle a_in, py::handle b_in, py::handle out_in, bool trans_a, bool trans_b, float alpha,
                 float beta) {
  py::array a = checked_matrix(a_in, "a"), b = checked_matrix(b_in, "b");
  const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const int64_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
  if (K != Kb)
    throw py::value_error("matmul: inner dimensions differ: op(a) has shape " + fg::bind::shape_str({M, K}) +
                          " and op(b) has shape " + fg::bind::shape_str({Kb, N}) + " (a is " +
                          fg::bind::shape_str({a.shape(0), a.shape(1)}) + ", b is " +
                          fg::bind::shape_str({b.shape(0), b.shape(1)}) + ", trans_a=" + (trans_a ? "True" : "False") +
                          ", trans_b=" + (trans_b ? "True" : "False") + ")");
  py::array out;
  if (out_in.is_none()) {
    if (beta != 0.0f) throw py::value_error("matmul: beta != 0 needs an out array to accumulate into");
    out = py::array_t<float>({M, N});
  } else {
    out = checked_matrix(out_in, "out");
    if (out.shape(0) != M || out.shape(1) != N)
      throw py::value_error("out must have shape " + fg::bind::shape_str({M, N}) + ", got " +
                            fg::bind::shape_str({out.shape(0), out.shape(1)}));
    if (!out.writeable()) throw py::value_error("out must be writeable");
    if (overlaps(out, a) || overlaps(out, b)) throw py::value_error("matmul: out must not overlap a or b");
  }
  if (M == 0 || N == 0) return out;
  Operand A = operand(a), B = operand(b), C = operand(out);
  const bool ta = trans_a != A.transposed, tb = trans_b != B.transposed;
  if (!C.direct) {
    // out cannot be written through a leading dimension: compute into C.keep (a contiguous copy
    // of out), then copy back.
    {
      py::gil_scoped_release release;
      fg::sgemm(ta, tb, M, N, K, alpha, A.ptr, A.ld, B.ptr, B.ld, beta, C.ptr, C.ld);
    }
    out[py::make_tuple(py::ellipsis())] = C.keep;
    return out;
  }
  py::gil_scoped_release release;
  if (C.transposed)  // out.T = op(b).T @ op(a).T, written row-major into out's transpose
    fg::sgemm(!tb, !ta, N, M, K, alpha, B.ptr, B.ld, A.ptr, A.ld, beta, C.ptr, C.ld);
  else
    fg::sgemm(ta, tb, M, N, K, alpha, A.ptr, A.ld, B.ptr, B.ld, beta, C.ptr, C.ld);
  return out;
}

// ---- bmm_plain: forgegrad.kernels.bmm's common case in one call ---------------------------------
// For a batch of small products (64 x (32 x 64 x 32) takes ~80 us) the Python-level broadcasting,
// layout and overlap checks cost ~5 us, so the plain case is handled here: a and b 3-D float32
// arrays with one batch size, each stack readable in place (rows or columns of every matrix
// evenly spaced, batch stride >= 0), out None or a 3-D float32 array of the result's shape whose
// rows can be written in place, no byte of out within a's or b's range. Anything else returns
// None and the Python wrapper takes its general path (which also raises the errors).

// A (batch, rows, cols) stack as the kernel reads it: row-major matrices (ld apart rows), or their
// row-major transposes (transposed), batch_stride elements apart. False when not readable in place.
struct Stack {
  float* ptr = nullptr;
  int64_t ld = 1, batch_stride = 0;
  bool transposed = false;
};

bool stack_view(const py::array& a, Stack& s) {
  if (!aligned(a)) return false;
  for (int i = 0; i < 3; ++i)
    if (a.strides(i) % 4 != 0) return false;
  const int64_t r = a.shape(1), c = a.shape(2), rs = a.strides(1) / 4, cs = a.strides(2) / 4;
  s.batch_stride = a.shape(0) > 1 ? a.strides(0) / 4 : 0;
  if (s.batch_stride < 0) return false;
  if (rows_ok(r, c, rs, cs)) {
    s.ld = r > 1 ? rs : c;
  } else if (rows_ok(c, r, cs, rs)) {
    s.transposed = true;
    s.ld = c > 1 ? cs : r;
  } else {
    return false;
  }
  if (s.ld < 1) s.ld = 1;
  s.ptr = static_cast<float*>(const_cast<void*>(a.data()));
  return true;
}

// Byte range [lo, hi) spanned by an array of any rank (non-empty).
std::pair<intptr_t, intptr_t> extent_nd(const py::array& a) {
  intptr_t lo = reinterpret_cast<intptr_t>(a.data()), hi = lo + a.itemsize();
  for (int i = 0; i < a.ndim(); ++i) {
    intptr_t span = static_cast<intptr_t>(a.shape(i) - 1) * a.strides(i);
    (span < 0 ? lo : hi) += span;
  }
  return {lo, hi};
}

bool ranges_meet(const py::array& x, const py::array& y) {
  auto [xl, xh] = extent_nd(x);
  auto [yl, yh] = extent_nd(y);
  return xl < yh && yl < xh;
}

py::object bmm_plain(py::handle a_in, py::handle b_in, py::handle out_in) {
  auto plain = [&](py::handle h) {
    return py::isinstance<py::array>(h) && py::reinterpret_borrow<py::array>(h).ndim() == 3 &&
           fg::bind::is_float32(py::reinterpret_borrow<py::array>(h));
  };
  if (!plain(a_in) || !plain(b_in)) return py::none();
  py::array a = py::reinterpret_borrow<py::array>(a_in), b = py::reinterpret_borrow<py::array>(b_in);
  const int64_t batch = a.shape(0), M = a.shape(1), K = a.shape(2), N = b.shape(2);
  if (b.shape(0) != batch || b.shape(1) != K || batch == 0 || M == 0 || N == 0) return py::none();
  Stack A, B, C;
  if (!stack_view(a, A) || !stack_view(b, B)) return py::none();
  py::array out;
  if (out_in.is_none()) {
    out = py::array_t<float>({batch, M, N});
  } else {
    if (!plain(out_in)) return py::none();
    out = py::reinterpret_borrow<py::array>(out_in);
    if (out.shape(0) != batch || out.shape(1) != M || out.shape(2) != N || !out.writeable()) return py::none();
    if ((a.size() > 0 && ranges_meet(out, a)) || (b.size() > 0 && ranges_meet(out, b))) return py::none();
  }
  if (!stack_view(out, C) || C.transposed) return py::none();
  // Output matrices must not overlap one another (each is written by one sgemm).
  if (batch > 1 && C.batch_stride < (M - 1) * (M > 1 ? C.ld : 0) + N) return py::none();
  {
    py::gil_scoped_release release;
    fg::sgemm_batched(A.transposed, B.transposed, batch, M, N, K, 1.0f, A.ptr, A.ld, A.batch_stride, B.ptr, B.ld,
                      B.batch_stride, 0.0f, C.ptr, C.ld, C.batch_stride);
  }
  return std::move(out);
}

// ---- linear: y = x @ weight.T + bias, the whole of a Linear layer's forward in one call ------------
// At batch 1 a layer's GEMV takes a few microseconds; Python-level checks, the reshape, the output
// allocation and the bias broadcast cost as much again, so they all happen here. `activation` (an
// fg::ActOp, -1 for none) is applied by the GEMM to each output tile as it finishes it: the fused
// Linear -> activation that inference without a graph uses (see forgegrad.nn.Sequential).
// A linear layer's weight (N, K) packed once for sgemm_prepacked_b (see gemm.h): a snapshot of
// `source`, which linear() requires to be the weight it is passed with.
using PackedWeight = fg::bind::PackedLinearWeight;  // forgegrad/packed_weights.h (shared with _C.plan)

std::unique_ptr<PackedWeight> pack_weight(py::handle w_in) {
  py::array w = checked_matrix(w_in, "PackedWeight: weight");
  auto p = std::make_unique<PackedWeight>();
  p->source = py::reinterpret_borrow<py::object>(w_in);
  p->N = w.shape(0);
  p->K = w.shape(1);
  p->isa = fg::active_isa();
  const int64_t floats = fg::sgemm_prepacked_b_floats(p->N, p->K);
  if (floats > 0) {
    Operand W = operand(w);
    p->buf.reset(static_cast<std::size_t>(floats));
    py::gil_scoped_release release;
    fg::sgemm_prepack_b(!W.transposed, p->N, p->K, W.ptr, W.ld, p->buf.data());
  }
  return p;
}

py::array linear(py::handle x_in, py::handle w_in, py::handle b_in, int activation, float alpha,
                 const PackedWeight* packed) {
  if (activation < -1 || activation >= fg::kActCount)
    throw py::value_error("linear: activation must be -1 (none) or an activation code, got " +
                          std::to_string(activation));
  if (!py::isinstance<py::array>(x_in))
    throw py::type_error("linear: input must be a numpy.ndarray of float32, got " +
                         std::string(py::str(py::type::of(x_in).attr("__name__"))));
  py::array x = py::reinterpret_borrow<py::array>(x_in);
  if (!fg::bind::is_float32(x))
    throw py::type_error("linear: input must be float32, got " + std::string(py::str(x.dtype())));
  py::array w = checked_matrix(w_in, "linear: weight");
  const int64_t N = w.shape(0), K = w.shape(1);
  if (packed && !packed->source.is(w_in))
    throw py::value_error("linear: packed was made from another array than weight (pack the weight passed)");
  std::vector<int64_t> xshape(x.shape(), x.shape() + x.ndim());
  if (x.ndim() == 0 || xshape.back() != K)
    throw py::value_error("linear: input has shape " + fg::bind::shape_str(xshape) + ", expected (..., " +
                          std::to_string(K) + ") for weight of shape " + fg::bind::shape_str({N, K}));
  py::array bias;  // a default py::array is an empty array, not a null handle: test has_bias
  const bool has_bias = !b_in.is_none();
  if (has_bias) {
    if (!py::isinstance<py::array>(b_in))
      throw py::type_error("linear: bias must be a numpy.ndarray of float32 or None");
    bias = py::reinterpret_borrow<py::array>(b_in);
    if (!fg::bind::is_float32(bias))
      throw py::type_error("linear: bias must be float32, got " + std::string(py::str(bias.dtype())));
    if (bias.ndim() != 1 || bias.shape(0) != N) {
      std::vector<int64_t> bshape(bias.shape(), bias.shape() + bias.ndim());
      throw py::value_error("linear: bias must have shape (" + std::to_string(N) + ",), got " +
                            fg::bind::shape_str(bshape));
    }
    if (!(bias.flags() & py::array::c_style) || !aligned(bias)) bias = contiguous_copy(bias);
  }
  // x as an (M, K) row-major matrix: a copy only when its rows cannot be addressed in place.
  py::array x2 = (x.flags() & py::array::c_style) && aligned(x) ? x : contiguous_copy(x);
  int64_t M = 1;
  for (std::size_t i = 0; i + 1 < xshape.size(); ++i) M *= xshape[i];
  std::vector<int64_t> oshape(xshape);
  oshape.back() = N;
  py::array_t<float> out(oshape);
  if (M == 0 || N == 0) return std::move(out);
  Operand W = operand(w);
  const float* xp = static_cast<const float*>(x2.data());
  const float* bp = has_bias ? static_cast<const float*>(bias.data()) : nullptr;
  float* yp = out.mutable_data();
  // Release the GIL only for work worth a thread switch (a batch-1 layer is a few microseconds,
  // and the release/reacquire pair costs ~0.1 us of it).
  std::optional<py::gil_scoped_release> release;
  if (M * N * K >= (int64_t(1) << 16)) release.emplace();
  // op(weight) = weight.T: the (N, K) weight read transposed (or a transposed view read directly).
  // The bias and the activation go on each tile of the output as the GEMM reaches it (in cache; the
  // same bits as filling the output with the bias rows first and a pass of the activation after).
  const bool use_packed = packed && packed->isa == fg::active_isa() && packed->buf.size() > 0;
  fg::sgemm_prepacked_b(false, !W.transposed, M, N, K, 1.0f, xp, K > 0 ? K : 1, W.ptr, W.ld,
                        use_packed ? packed->buf.data() : nullptr, 0.0f, yp, N, activation, alpha, bp);
  return std::move(out);
}

// ---- training: Linear backward in one call ------------------------------------------------------------

// x (..., K) float32 (any layout) as a C-contiguous aligned array (a copy only when needed) and its row count
// M = prod(shape[:-1]); `what` names it in messages.
py::array rows_of(py::handle h, const char* what, int64_t K, int64_t& M) {
  if (!py::isinstance<py::array>(h))
    throw py::type_error(std::string(what) + " must be a numpy.ndarray of float32, got " +
                         std::string(py::str(py::type::of(h).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(h);
  if (!fg::bind::is_float32(a))
    throw py::type_error(std::string(what) + " must be float32, got " + std::string(py::str(a.dtype())));
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  if (a.ndim() == 0 || shape.back() != K)
    throw py::value_error(std::string(what) + " has shape " + fg::bind::shape_str(shape) + ", expected (..., " +
                          std::to_string(K) + ")");
  M = 1;
  for (std::size_t i = 0; i + 1 < shape.size(); ++i) M *= shape[i];
  return (a.flags() & py::array::c_style) && aligned(a) ? a : contiguous_copy(a);
}

// (gx, gw, gb) of y = x @ weight.T + b for grad dy (..., N): gx = dy @ weight, gw = dy^T x, gb = the column
// sums of dy (taken while the gw product packs dy: no pass of its own over dy). Each is None when not asked
// for. The same bits as matmul(dy, weight), matmul(dy, x, trans_a=True) and column_sums(dy).
py::tuple linear_backward(py::handle g_in, py::handle x_in, py::handle w_in, bool need_x, bool need_w, bool need_b) {
  py::array w = checked_matrix(w_in, "linear_backward: weight");
  const int64_t N = w.shape(0), K = w.shape(1);
  int64_t M = 0, Mx = 0;
  py::array g = rows_of(g_in, "linear_backward: grad", N, M);
  py::array x = rows_of(x_in, "linear_backward: input", K, Mx);
  if (Mx != M)
    throw py::value_error("linear_backward: grad has " + std::to_string(M) + " rows and input " + std::to_string(Mx) +
                          " (expected one gradient row per input row)");
  py::object gx = py::none(), gw = py::none(), gb = py::none();
  const float* gp = static_cast<const float*>(g.data());
  const float* xp = static_cast<const float*>(x.data());
  float *gxp = nullptr, *gwp = nullptr, *gbp = nullptr;
  if (need_x) {
    py::array_t<float> a(std::vector<int64_t>(x.shape(), x.shape() + x.ndim()));
    gxp = a.mutable_data();
    gx = a;
  }
  if (need_w) {
    py::array_t<float> a({N, K});
    gwp = a.mutable_data();
    gw = a;
  }
  if (need_b) {
    py::array_t<float> a({N});
    gbp = a.mutable_data();
    gb = a;
  }
  Operand W = operand(w);
  {
    py::gil_scoped_release release;
    // op(weight) = weight (N x K): read as stored, or through its transpose's leading dimension
    if (gxp && K > 0) fg::sgemm(false, W.transposed, M, K, N, 1.0f, gp, N > 0 ? N : 1, W.ptr, W.ld, 0.0f, gxp, K);
    if (gwp && N > 0 && K > 0) {
      fg::GemmEpilogue ep;
      ep.a_sums = gbp;
      fg::sgemm_epilogue(true, false, N, K, M, gp, N, xp, K, nullptr, gwp, K, ep);
    } else if (gbp && N > 0) {
      fg::column_sums(gp, M, N, gbp);
    }
  }
  return py::make_tuple(gx, gw, gb);
}

void bind(py::module_& m) {
  py::class_<PackedWeight>(m, "PackedWeight",
                           "A linear weight packed once for the GEMM (a snapshot); pass it to linear() with it.")
      .def(py::init(&pack_weight), py::arg("weight"))
      // A deep copy of a frozen model holds new, writeable weight arrays, which a packed snapshot
      // would not follow: the copy gets no packed weight (it reads its weights as they are).
      .def(
          "__deepcopy__", [](const PackedWeight&, py::dict) { return py::none(); }, py::arg("memo"))
      .def_property_readonly("shape", [](const PackedWeight& p) { return py::make_tuple(p.N, p.K); })
      .def_property_readonly("source", [](const PackedWeight& p) { return p.source; })
      .def_property_readonly("nbytes", [](const PackedWeight& p) { return p.buf.size() * sizeof(float); });
  m.def("linear", &linear, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("activation") = -1,
        py::arg("alpha") = 0.0f, py::arg("packed") = py::none(),
        "act(x @ weight.T + bias) for x (..., in_features) float32, weight (out_features, "
        "in_features), bias (out_features,) or None, activation an activation code (-1: none; "
        "alpha: leaky_relu's slope), packed a PackedWeight of this weight array or None (same "
        "result, without packing the weight); returns a new (..., out_features) array.");
  m.def("linear_backward", &linear_backward, py::arg("grad"), py::arg("x"), py::arg("weight"), py::arg("need_x") = true,
        py::arg("need_weight") = true, py::arg("need_bias") = true,
        "(gx, gw, gb) of x @ weight.T + bias for grad (..., out_features): gx = grad @ weight, gw = grad^T x, "
        "gb = grad's column sums (each None when not needed); one call, the bias gradient taken while gw's "
        "product reads grad (the same bits as matmul and column_sums).");
  m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out") = py::none(), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f,
        "out = alpha * op(a) @ op(b) + beta * out on 2-D float32 arrays of any layout (see "
        "forgegrad.kernels.matmul); returns out, allocated when None.");
  m.def("bmm", &bmm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false, py::arg("trans_b") = false,
        py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f,
        "out[i] = alpha * op(a[i]) @ op(b[i]) + beta * out[i] on float32 3-D arrays; a batch "
        "stride of 0 broadcasts (rows may be strided).");
  m.def("bmm_plain", &bmm_plain, py::arg("a"), py::arg("b"), py::arg("out") = py::none(),
        "a @ b for 3-D float32 stacks of one batch size readable in place (see forgegrad.kernels.bmm); "
        "returns out (allocated when None), or None when the inputs need the general path.");
  m.def("sgemm", &sgemm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f, py::arg("reference") = false,
        "out = alpha * op(a) @ op(b) + beta * out on float32 2-D arrays (rows may be strided).");
}

}  // namespace

FG_REGISTER_BINDINGS(gemm, bind)
