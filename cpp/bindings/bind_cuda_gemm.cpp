// forgegrad._C.cuda_gemm: the GEMM-family CUDA kernels (cuda/gemm.cu, conv.cu, pool.cu) on
// DeviceArrays: matmul with torch.matmul's shape rules, linear, conv2d and 2-D pooling, forward and
// backward. Shapes and geometry are checked here (ValueError naming the argument); the results are
// new DeviceArrays; kernels are queued on the current stream, nothing synchronises. Without a CUDA
// build the module only reports `built = False`. Ran on an H200: tests/test_cuda_gemm.py passes.
#include <pybind11/stl.h>

#include <array>
#include <initializer_list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "forgegrad/bindings.h"
#ifdef FORGEGRAD_WITH_CUDA
#include "forgegrad/conv.h"
#include "forgegrad/cuda_array.h"
#include "forgegrad/cuda_gemm.h"
#include "forgegrad/pool.h"
#endif

namespace py = pybind11;

namespace {

using Shape = std::vector<int64_t>;
using Pair = std::pair<int64_t, int64_t>;
using Quad = std::tuple<int64_t, int64_t, int64_t, int64_t>;

#ifdef FORGEGRAD_WITH_CUDA
using fg::cuda::check;
using fg::cuda::DeviceArray;
using Arr = std::shared_ptr<DeviceArray>;

[[noreturn]] void fail(const std::string& op, const std::string& msg) { throw py::value_error(op + ": " + msg); }

int64_t numel(const Shape& s, size_t from = 0, size_t to = SIZE_MAX) {
  int64_t n = 1;
  for (size_t i = from; i < s.size() && i < to; ++i) n *= s[i];
  return n;
}

// A new float32 array on the current device (the callers hold a DeviceGuard for their inputs' device).
Arr new_array(Shape shape, fg::cuda::DType t = fg::cuda::DType::kFloat32) {
  return std::make_shared<DeviceArray>(std::move(shape), t);
}

// The DeviceArray behind a Python argument (of dtype t); TypeError naming it otherwise.
const DeviceArray& arr(const py::object& o, const std::string& op, const char* name,
                       fg::cuda::DType t = fg::cuda::DType::kFloat32) {
  if (!py::isinstance<DeviceArray>(o))
    throw py::type_error(op + ": " + name + " must be a forgegrad._C.cuda.DeviceArray, got " +
                         std::string(py::str(py::type::of(o).attr("__name__"))));
  const DeviceArray& a = o.cast<const DeviceArray&>();
  if (a.dtype() != t)
    throw py::type_error(op + ": " + name + " must be " + fg::cuda::dtype_name(t) + ", got " +
                         fg::cuda::dtype_name(a.dtype()));
  return a;
}

// The device of the arrays (ValueError naming the first on another device than the first array).
int same_device(const std::string& op, std::initializer_list<std::pair<const DeviceArray*, const char*>> arrays) {
  const auto& first = *arrays.begin();
  for (const auto& a : arrays)
    if (a.first->device() != first.first->device())
      fail(op, std::string(a.second) + " is on cuda:" + std::to_string(a.first->device()) + ", " + first.second +
                   " on cuda:" + std::to_string(first.first->device()));
  return first.first->device();
}

const float* opt_data(const py::object& o, const std::string& op, const char* name, const Shape& shape, int device) {
  if (o.is_none()) return nullptr;
  const DeviceArray& a = arr(o, op, name);
  if (a.shape() != shape)
    fail(op, std::string(name) + " must have shape " + fg::bind::shape_str(shape) + ", got " +
                 fg::bind::shape_str(a.shape()));
  if (a.device() != device)
    fail(op,
         std::string(name) + " is on cuda:" + std::to_string(a.device()) + ", input on cuda:" + std::to_string(device));
  return a.data();
}

void need_ndim(const DeviceArray& a, const std::string& op, const char* name, int ndim) {
  if (static_cast<int>(a.shape().size()) != ndim)
    fail(op,
         std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " + fg::bind::shape_str(a.shape()));
}

// ---- batched GEMM with broadcast batch dimensions ---------------------------------------------------
// Row-major batch strides of `sizes` (in units of `inner` elements), 0 where the size is 1 (broadcast).
Shape batch_strides(const Shape& sizes, int64_t inner) {
  Shape st(sizes.size());
  int64_t s = inner;
  for (size_t d = sizes.size(); d-- > 0;) {
    st[d] = sizes[d] == 1 ? 0 : s;
    s *= sizes[d];
  }
  return st;
}

// The GemmBatch of an output batch `out` whose operands have batch shapes a, b (same length, 1 where
// broadcast): dimensions of size 1 dropped and adjacent ones merged where every operand allows it.
fg::cuda::GemmBatch make_batch(const std::string& op, const Shape& out, const Shape& a, int64_t a_mat, const Shape& b,
                               int64_t b_mat, int64_t c_mat) {
  const Shape sa = batch_strides(a, a_mat), sb = batch_strides(b, b_mat), sc = batch_strides(out, c_mat);
  std::vector<std::array<int64_t, 4>> dims;  // size, stride a, b, c
  for (size_t d = 0; d < out.size(); ++d) {
    if (out[d] == 1) continue;
    if (!dims.empty()) {
      auto& p = dims.back();
      if (p[1] == sa[d] * out[d] && p[2] == sb[d] * out[d] && p[3] == sc[d] * out[d]) {
        p[0] *= out[d], p[1] = sa[d], p[2] = sb[d], p[3] = sc[d];
        continue;
      }
    }
    dims.push_back({out[d], sa[d], sb[d], sc[d]});
  }
  if (dims.size() > static_cast<size_t>(fg::cuda::kGemmMaxBatchDims))
    fail(op, "the batch dimensions " + fg::bind::shape_str(out) + " broadcast in more than " +
                 std::to_string(fg::cuda::kGemmMaxBatchDims) + " separate runs; reshape the operands");
  fg::cuda::GemmBatch gb;
  gb.ndim = static_cast<int>(dims.size());
  for (int d = 0; d < gb.ndim; ++d)
    gb.size[d] = dims[d][0], gb.stride_a[d] = dims[d][1], gb.stride_b[d] = dims[d][2], gb.stride_c[d] = dims[d][3];
  return gb;
}

// torch.matmul's shape rules: 1-D operands promoted (and their axis dropped from the result), the
// batch dimensions broadcast.
struct MatmulPlan {
  Shape batch, a_batch, b_batch, out;
  int64_t M, K, N;
};

MatmulPlan matmul_plan(const Shape& as, const Shape& bs) {
  const std::string op = "matmul";
  if (as.empty() || bs.empty())
    fail(op, "both arguments need at least 1 dimension, got shapes " + fg::bind::shape_str(as) + " and " +
                 fg::bind::shape_str(bs));
  Shape a = as.size() == 1 ? Shape{1, as[0]} : as, b = bs.size() == 1 ? Shape{bs[0], 1} : bs;
  MatmulPlan p;
  p.M = a[a.size() - 2], p.K = a.back(), p.N = b.back();
  if (b[b.size() - 2] != p.K)
    fail(op, "shapes " + fg::bind::shape_str(as) + " and " + fg::bind::shape_str(bs) + " cannot be multiplied (" +
                 std::to_string(p.K) + " != " + std::to_string(b[b.size() - 2]) + ")");
  const size_t nd = std::max(a.size(), b.size()) - 2;
  p.a_batch.assign(nd, 1);
  p.b_batch.assign(nd, 1);
  std::copy(a.begin(), a.end() - 2, p.a_batch.end() - (a.size() - 2));
  std::copy(b.begin(), b.end() - 2, p.b_batch.end() - (b.size() - 2));
  for (size_t d = 0; d < nd; ++d) {
    const int64_t x = p.a_batch[d], y = p.b_batch[d];
    if (x != y && x != 1 && y != 1)
      fail(op,
           "batch dimensions of " + fg::bind::shape_str(as) + " and " + fg::bind::shape_str(bs) + " do not broadcast");
    p.batch.push_back(x == 1 ? y : x);
  }
  p.out = p.batch;
  if (as.size() > 1) p.out.push_back(p.M);
  if (bs.size() > 1) p.out.push_back(p.N);
  return p;
}

void gemm_call(const std::string& op, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
               const float* B, int64_t ldb, float* C, int64_t ldc, const fg::cuda::GemmBatch& gb, bool tf32,
               const float* bias = nullptr, float alpha = 1.f, float beta = 0.f) {
  check(fg::cuda::sgemm_batched(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, gb, tf32, bias), op.c_str());
}

// out (batch x rows x cols) computed into `target` (its batch shape, 1 where reduced): directly when
// nothing is reduced, else into a temporary summed over the broadcast dimensions by sum_to_batch.
template <class F>
void reduced_product(const std::string& op, const Shape& batch, const Shape& target, int64_t inner, float* dst, F f) {
  if (target == batch) return f(dst, batch);
  Arr tmp = new_array({numel(batch) * inner});
  f(tmp->data(), batch);
  check(fg::cuda::sum_to_batch(tmp->data(), dst, static_cast<int>(batch.size()), batch.data(), target.data(), inner),
        op.c_str());
}

Arr matmul(const DeviceArray& a, const DeviceArray& b, bool tf32) {
  const MatmulPlan p = matmul_plan(a.shape(), b.shape());
  Arr out = new_array(p.out);
  if (out->size() == 0) return out;
  gemm_call("matmul", false, false, p.M, p.N, p.K, a.data(), p.K, b.data(), p.N, out->data(), p.N,
            make_batch("matmul", p.batch, p.a_batch, p.M * p.K, p.b_batch, p.K * p.N, p.M * p.N), tf32);
  return out;
}

py::tuple matmul_backward(const DeviceArray& a, const DeviceArray& b, const DeviceArray& g, bool need_a, bool need_b,
                          bool tf32) {
  const std::string op = "matmul backward";
  const MatmulPlan p = matmul_plan(a.shape(), b.shape());
  if (g.shape() != p.out)
    fail(op, "grad_output must have shape " + fg::bind::shape_str(p.out) + ", got " + fg::bind::shape_str(g.shape()));
  py::object ga = py::none(), gb = py::none();
  const int64_t M = p.M, K = p.K, N = p.N;
  const Shape ones(p.batch.size(), 1);
  if (need_a) {
    Arr r = new_array(a.shape());
    if (r->size() > 0)
      reduced_product(op, p.batch, p.a_batch, M * K, r->data(), [&](float* dst, const Shape& batch) {
        // dA = dY @ B^T per batch entry
        gemm_call(op, false, true, M, K, N, g.data(), N, b.data(), N, dst, K,
                  make_batch(op, batch, batch, M * N, p.b_batch, K * N, M * K), tf32);
      });
    ga = py::cast(r);
  }
  if (need_b) {
    Arr r = new_array(b.shape());
    if (r->size() > 0) {
      if (p.b_batch == ones && p.a_batch == p.batch) {
        // B shared by every entry: dB = sum_z A_z^T dY_z is one GEMM over the stacked rows
        gemm_call(op, true, false, K, N, numel(p.batch) * M, a.data(), K, g.data(), N, r->data(), N,
                  fg::cuda::GemmBatch{}, tf32);
      } else {
        reduced_product(op, p.batch, p.b_batch, K * N, r->data(), [&](float* dst, const Shape& batch) {
          gemm_call(op, true, false, K, N, M, a.data(), K, g.data(), N, dst, N,
                    make_batch(op, batch, p.a_batch, M * K, batch, M * N, K * N), tf32);
        });
      }
    }
    gb = py::cast(r);
  }
  return py::make_tuple(ga, gb);
}

// ---- linear -----------------------------------------------------------------------------------------
void linear_shapes(const DeviceArray& x, const DeviceArray& w, const std::string& op) {
  if (x.shape().empty()) fail(op, "input must have at least 1 dimension");
  need_ndim(w, op, "weight", 2);
  if (x.shape().back() != w.shape()[1])
    fail(op, "input (..., " + std::to_string(w.shape()[1]) + ") expected for weight of shape " +
                 fg::bind::shape_str(w.shape()) + ", got input of shape " + fg::bind::shape_str(x.shape()));
}

Arr linear(const DeviceArray& x, const DeviceArray& w, const py::object& bias, bool tf32) {
  const std::string op = "linear";
  linear_shapes(x, w, op);
  const int64_t out_f = w.shape()[0], in_f = w.shape()[1], rows = numel(x.shape(), 0, x.shape().size() - 1);
  const float* bp = opt_data(bias, op, "bias", {out_f}, x.device());
  Shape ys = x.shape();
  ys.back() = out_f;
  Arr y = new_array(ys);
  if (y->size() == 0) return y;
  gemm_call(op, false, true, rows, out_f, in_f, x.data(), in_f, w.data(), in_f, y->data(), out_f, fg::cuda::GemmBatch{},
            tf32, bp);
  return y;
}

py::tuple linear_backward(const DeviceArray& x, const DeviceArray& w, const DeviceArray& g, bool need_x, bool need_w,
                          bool need_b, bool tf32) {
  const std::string op = "linear backward";
  linear_shapes(x, w, op);
  const int64_t out_f = w.shape()[0], in_f = w.shape()[1], rows = numel(x.shape(), 0, x.shape().size() - 1);
  Shape ys = x.shape();
  ys.back() = out_f;
  if (g.shape() != ys)
    fail(op, "grad_output must have shape " + fg::bind::shape_str(ys) + ", got " + fg::bind::shape_str(g.shape()));
  py::object gx = py::none(), gw = py::none(), gb = py::none();
  if (need_x) {
    Arr r = new_array(x.shape());
    if (r->size() > 0)
      gemm_call(op, false, false, rows, in_f, out_f, g.data(), out_f, w.data(), in_f, r->data(), in_f,
                fg::cuda::GemmBatch{}, tf32);
    gx = py::cast(r);
  }
  if (need_w) {
    Arr r = new_array(w.shape());
    if (r->size() > 0)
      gemm_call(op, true, false, out_f, in_f, rows, g.data(), out_f, x.data(), in_f, r->data(), in_f,
                fg::cuda::GemmBatch{}, tf32);
    gw = py::cast(r);
  }
  if (need_b) {
    Arr r = new_array({out_f});
    check(fg::cuda::strided_sum(g.data(), r->data(), out_f, rows, out_f, 1, 1), op.c_str());
    gb = py::cast(r);
  }
  return py::make_tuple(gx, gw, gb);
}

// ---- conv2d -------------------------------------------------------------------------------------------
// The geometry (resolved by forgegrad.kernels.geometry, which validated it against the CPU rules),
// checked again here for what the kernels rely on: 32-bit spatial index arithmetic included.
fg::Conv2dGeom conv_geom(const std::string& op, const Shape& xs, const Shape& ws, Pair stride, Quad pad, Pair dil,
                         int64_t groups) {
  fg::Conv2dGeom g{};
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3];
  g.OC = ws[0], g.KH = ws[2], g.KW = ws[3], g.groups = groups;
  std::tie(g.stride_h, g.stride_w) = stride;
  std::tie(g.dil_h, g.dil_w) = dil;
  std::tie(g.pad_top, g.pad_bottom, g.pad_left, g.pad_right) = pad;
  if (groups < 1) fail(op, "groups must be >= 1, got " + std::to_string(groups));
  if (g.C < 1 || g.H < 1 || g.W < 1) fail(op, "input must have nonzero C, H, W, got " + fg::bind::shape_str(xs));
  if (g.OC < 1 || ws[1] < 1 || g.KH < 1 || g.KW < 1)
    fail(op, "weight must have nonzero sizes, got " + fg::bind::shape_str(ws));
  if (g.C % groups || g.OC % groups || ws[1] != g.C / groups)
    fail(op, "weight " + fg::bind::shape_str(ws) + " does not match input " + fg::bind::shape_str(xs) +
                 " with groups=" + std::to_string(groups));
  if (g.stride_h < 1 || g.stride_w < 1 || g.dil_h < 1 || g.dil_w < 1) fail(op, "stride and dilation must be >= 1");
  if (g.pad_top < 0 || g.pad_bottom < 0 || g.pad_left < 0 || g.pad_right < 0) fail(op, "padding must be >= 0");
  const char* bad = fg::conv_out_size(g.H, g.pad_top, g.pad_bottom, g.KH, g.stride_h, g.dil_h, &g.OH);
  if (!bad) bad = fg::conv_out_size(g.W, g.pad_left, g.pad_right, g.KW, g.stride_w, g.dil_w, &g.OW);
  if (bad) fail(op, std::string(bad) + " is too large");
  if (g.OH < 1 || g.OW < 1) fail(op, "the dilated kernel is larger than the padded input");
  constexpr int64_t kInt = int64_t{1} << 30;  // the kernels' spatial and per-group index arithmetic is 32-bit
  const int64_t KHW = g.KH * g.KW;
  if (g.H + g.pad_top + g.pad_bottom >= kInt || g.W + g.pad_left + g.pad_right >= kInt || g.H * g.W >= kInt ||
      g.OH * g.OW >= kInt || (g.KH - 1) * g.dil_h >= kInt || (g.KW - 1) * g.dil_w >= kInt ||
      g.OH * g.stride_h >= kInt || g.OW * g.stride_w >= kInt || (g.C / groups) * KHW >= kInt ||
      (g.OC / groups) * KHW >= kInt)
    fail(op, "spatial or per-group sizes of 2^30 or more are beyond the CUDA kernels' 32-bit index arithmetic");
  return g;
}

Arr conv2d_forward(const DeviceArray& x, const DeviceArray& w, const py::object& bias, Pair stride, Quad padding,
                   Pair dilation, int64_t groups) {
  const std::string op = "conv2d";
  need_ndim(x, op, "input", 4);
  need_ndim(w, op, "weight", 4);
  const fg::Conv2dGeom g = conv_geom(op, x.shape(), w.shape(), stride, padding, dilation, groups);
  const float* bp = opt_data(bias, op, "bias", {g.OC}, x.device());
  Arr y = new_array({g.N, g.OC, g.OH, g.OW});
  check(fg::cuda::conv2d_forward(g, x.data(), w.data(), bp, y->data()), "conv2d_forward");
  return y;
}

py::tuple conv2d_backward(const DeviceArray& x, const DeviceArray& w, const DeviceArray& gy, Pair stride, Quad padding,
                          Pair dilation, int64_t groups, bool need_x, bool need_w, bool need_b) {
  const std::string op = "conv2d backward";
  need_ndim(x, op, "input", 4);
  need_ndim(w, op, "weight", 4);
  const fg::Conv2dGeom g = conv_geom(op, x.shape(), w.shape(), stride, padding, dilation, groups);
  const Shape ys{g.N, g.OC, g.OH, g.OW};
  if (gy.shape() != ys)
    fail(op, "grad_output must have shape " + fg::bind::shape_str(ys) + ", got " + fg::bind::shape_str(gy.shape()));
  py::object gx = py::none(), gw = py::none(), gb = py::none();
  if (need_x) {
    Arr r = new_array(x.shape());
    check(fg::cuda::conv2d_backward_input(g, w.data(), gy.data(), r->data()), "conv2d_backward_input");
    gx = py::cast(r);
  }
  if (need_w || need_b) {
    Arr rw = need_w ? new_array(w.shape()) : nullptr, rb = need_b ? new_array({g.OC}) : nullptr;
    const int64_t ws = need_w ? fg::cuda::conv2d_backward_weight_workspace(g) : 0;
    Arr work = ws > 0 ? new_array({ws}) : nullptr;  // held until the kernels are queued; the stream orders reuse
    check(fg::cuda::conv2d_backward_weight(g, x.data(), gy.data(), rw ? rw->data() : nullptr, rb ? rb->data() : nullptr,
                                           work ? work->data() : nullptr),
          "conv2d_backward_weight");
    if (rw) gw = py::cast(rw);
    if (rb) gb = py::cast(rb);
  }
  return py::make_tuple(gx, gw, gb);
}

// ---- pooling ------------------------------------------------------------------------------------------
fg::Pool2dGeom pool_geom(const std::string& op, const Shape& xs, Pair k, Pair s, Pair p, Pair d, bool ceil_mode) {
  if (xs.size() != 4) fail(op, "input must be 4-D (N, C, H, W), got shape " + fg::bind::shape_str(xs));
  fg::Pool2dGeom g{};
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3];
  std::tie(g.KH, g.KW) = k;
  std::tie(g.stride_h, g.stride_w) = s;
  std::tie(g.pad_h, g.pad_w) = p;
  std::tie(g.dil_h, g.dil_w) = d;
  if (g.KH < 1 || g.KW < 1 || g.stride_h < 1 || g.stride_w < 1 || g.dil_h < 1 || g.dil_w < 1)
    fail(op, "kernel_size, stride and dilation must be >= 1");
  if (g.pad_h < 0 || g.pad_w < 0 || g.pad_h > g.KH / 2 || g.pad_w > g.KW / 2)
    fail(op, "padding must be >= 0 and at most half of kernel_size");
  if (g.N < 0 || g.C < 1 || g.H < 1 || g.W < 1)
    fail(op, "input must have shape (N, C>=1, H>=1, W>=1), got " + fg::bind::shape_str(xs));
  const char* bad = fg::pool_out_size(g.H, g.KH, g.pad_h, g.stride_h, g.dil_h, ceil_mode, &g.OH);
  if (!bad) bad = fg::pool_out_size(g.W, g.KW, g.pad_w, g.stride_w, g.dil_w, ceil_mode, &g.OW);
  if (bad) fail(op, std::string(bad) + " is too large");
  if (g.OH < 1 || g.OW < 1) fail(op, "kernel_size is larger than the padded input");
  return g;
}

Arr avg_pool2d_forward(const DeviceArray& x, Pair k, Pair s, Pair p, bool ceil_mode, bool cip, int64_t divisor) {
  const fg::Pool2dGeom g = pool_geom("avg_pool2d", x.shape(), k, s, p, {1, 1}, ceil_mode);
  Arr y = new_array({g.N, g.C, g.OH, g.OW});
  check(fg::cuda::avg_pool2d_forward(g, x.data(), y->data(), cip, divisor), "avg_pool2d_forward");
  return y;
}

Arr avg_pool2d_backward(const DeviceArray& gy, const Shape& input_shape, Pair k, Pair s, Pair p, bool ceil_mode,
                        bool cip, int64_t divisor) {
  const std::string op = "avg_pool2d backward";
  const fg::Pool2dGeom g = pool_geom(op, input_shape, k, s, p, {1, 1}, ceil_mode);
  if (gy.shape() != Shape{g.N, g.C, g.OH, g.OW})
    fail(op, "grad_output must have shape " + fg::bind::shape_str({g.N, g.C, g.OH, g.OW}) + ", got " +
                 fg::bind::shape_str(gy.shape()));
  Arr gx = new_array(input_shape);
  check(fg::cuda::avg_pool2d_backward(g, gy.data(), gx->data(), cip, divisor), "avg_pool2d_backward");
  return gx;
}

py::tuple max_pool2d_forward(const DeviceArray& x, Pair k, Pair s, Pair p, Pair d, bool ceil_mode) {
  const fg::Pool2dGeom g = pool_geom("max_pool2d", x.shape(), k, s, p, d, ceil_mode);
  Arr y = new_array({g.N, g.C, g.OH, g.OW}), idx = new_array({g.N, g.C, g.OH, g.OW}, fg::cuda::DType::kInt64);
  check(fg::cuda::max_pool2d_forward(g, x.data(), y->data(), idx->data_as<int64_t>()), "max_pool2d_forward");
  return py::make_tuple(y, idx);
}

// The gather-form backward reads only indices inside each output's window (where forward puts them);
// an index elsewhere sends no gradient, never an out-of-bounds write.
Arr max_pool2d_backward(const DeviceArray& gy, const DeviceArray& idx, const Shape& input_shape, Pair k, Pair s, Pair p,
                        Pair d, bool ceil_mode) {
  const std::string op = "max_pool2d backward";
  const fg::Pool2dGeom g = pool_geom(op, input_shape, k, s, p, d, ceil_mode);
  const Shape ys{g.N, g.C, g.OH, g.OW};
  if (gy.shape() != ys)
    fail(op, "grad_output must have shape " + fg::bind::shape_str(ys) + ", got " + fg::bind::shape_str(gy.shape()));
  if (idx.shape() != ys)
    fail(op, "indices must have shape " + fg::bind::shape_str(ys) + ", got " + fg::bind::shape_str(idx.shape()));
  Arr gx = new_array(input_shape);
  check(fg::cuda::max_pool2d_backward(g, gy.data(), idx.data_as<int64_t>(), gx->data()), "max_pool2d_backward");
  return gx;
}

// Sizes of 2^30 and more are rejected: the window bounds multiply an output index by an input size.
Arr adaptive_avg_pool2d_forward(const DeviceArray& x, Pair out) {
  const std::string op = "adaptive_avg_pool2d";
  need_ndim(x, op, "input", 4);
  const Shape& xs = x.shape();
  if (xs[1] < 1 || xs[2] < 1 || xs[3] < 1) fail(op, "input must have nonzero C, H, W, got " + fg::bind::shape_str(xs));
  if (out.first < 1 || out.second < 1) fail(op, "output_size entries must be >= 1");
  constexpr int64_t kBig = int64_t{1} << 30;
  if (xs[2] >= kBig || xs[3] >= kBig || out.first >= kBig || out.second >= kBig)
    fail(op, "sizes of 2^30 or more are beyond the CUDA kernel's index arithmetic");
  Arr y = new_array({xs[0], xs[1], out.first, out.second});
  check(fg::cuda::adaptive_avg_pool2d_forward(xs[0], xs[1], xs[2], xs[3], out.first, out.second, x.data(), y->data()),
        "adaptive_avg_pool2d_forward");
  return y;
}

Arr adaptive_avg_pool2d_backward(const DeviceArray& gy, const Shape& input_shape) {
  const std::string op = "adaptive_avg_pool2d backward";
  need_ndim(gy, op, "grad_output", 4);
  const Shape& ys = gy.shape();
  if (input_shape.size() != 4 || input_shape[0] != ys[0] || input_shape[1] != ys[1] || input_shape[2] < 1 ||
      input_shape[3] < 1 || ys[2] < 1 || ys[3] < 1)
    fail(op, "input_shape " + fg::bind::shape_str(input_shape) + " does not match grad_output of shape " +
                 fg::bind::shape_str(ys));
  constexpr int64_t kBig = int64_t{1} << 30;
  if (input_shape[2] >= kBig || input_shape[3] >= kBig || ys[2] >= kBig || ys[3] >= kBig)
    fail(op, "sizes of 2^30 or more are beyond the CUDA kernel's index arithmetic");
  Arr gx = new_array(input_shape);
  check(fg::cuda::adaptive_avg_pool2d_backward(ys[0], ys[1], input_shape[2], input_shape[3], ys[2], ys[3], gy.data(),
                                               gx->data()),
        "adaptive_avg_pool2d_backward");
  return gx;
}
#endif

// The module's functions take and return Python objects (DeviceArrays, None) so that their
// signatures, and _C.pyi, are the same in a CPU-only build, where they raise RuntimeError.
#ifdef FORGEGRAD_WITH_CUDA
#define FG_CUDA_ONLY(op, ...) __VA_ARGS__
#else
#define FG_CUDA_ONLY(op, ...) no_cuda(op)
[[noreturn]] void no_cuda(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": forgegrad was built without CUDA (no CUDA compiler found, or "
                           "FORGEGRAD_CUDA=OFF)");
}
#endif

// (The DeviceArray arguments are checked one statement at a time, so the first bad one is named.)
py::object py_matmul(const py::object& a, const py::object& b, bool tf32) {
  FG_CUDA_ONLY("matmul", const DeviceArray& A = arr(a, "matmul", "a"); const DeviceArray& B = arr(b, "matmul", "b");
               fg::cuda::DeviceGuard guard(same_device("matmul", {{&A, "a"}, {&B, "b"}}));
               return py::cast(matmul(A, B, tf32)));
}
py::object py_matmul_backward(const py::object& a, const py::object& b, const py::object& g, bool need_a, bool need_b,
                              bool tf32) {
  FG_CUDA_ONLY("matmul backward", const std::string op = "matmul backward"; const DeviceArray& A = arr(a, op, "a");
               const DeviceArray& B = arr(b, op, "b"); const DeviceArray& G = arr(g, op, "grad_output");
               fg::cuda::DeviceGuard guard(same_device(op, {{&A, "a"}, {&B, "b"}, {&G, "grad_output"}}));
               return matmul_backward(A, B, G, need_a, need_b, tf32));
}
py::object py_linear(const py::object& x, const py::object& w, const py::object& bias, bool tf32) {
  FG_CUDA_ONLY("linear", const DeviceArray& X = arr(x, "linear", "input");
               const DeviceArray& W = arr(w, "linear", "weight");
               fg::cuda::DeviceGuard guard(same_device("linear", {{&X, "input"}, {&W, "weight"}}));
               return py::cast(linear(X, W, bias, tf32)));
}
py::object py_linear_backward(const py::object& x, const py::object& w, const py::object& g, bool need_x, bool need_w,
                              bool need_b, bool tf32) {
  FG_CUDA_ONLY("linear backward", const std::string op = "linear backward"; const DeviceArray& X = arr(x, op, "input");
               const DeviceArray& W = arr(w, op, "weight"); const DeviceArray& G = arr(g, op, "grad_output");
               fg::cuda::DeviceGuard guard(same_device(op, {{&X, "input"}, {&W, "weight"}, {&G, "grad_output"}}));
               return linear_backward(X, W, G, need_x, need_w, need_b, tf32));
}
py::object py_conv2d_forward(const py::object& x, const py::object& w, const py::object& bias, Pair stride,
                             Quad padding, Pair dilation, int64_t groups) {
  FG_CUDA_ONLY("conv2d", const DeviceArray& X = arr(x, "conv2d", "input");
               const DeviceArray& W = arr(w, "conv2d", "weight");
               fg::cuda::DeviceGuard guard(same_device("conv2d", {{&X, "input"}, {&W, "weight"}}));
               return py::cast(conv2d_forward(X, W, bias, stride, padding, dilation, groups)));
}
py::object py_conv2d_backward(const py::object& x, const py::object& w, const py::object& g, Pair stride, Quad padding,
                              Pair dilation, int64_t groups, bool need_x, bool need_w, bool need_b) {
  FG_CUDA_ONLY("conv2d backward", const std::string op = "conv2d backward"; const DeviceArray& X = arr(x, op, "input");
               const DeviceArray& W = arr(w, op, "weight"); const DeviceArray& G = arr(g, op, "grad_output");
               fg::cuda::DeviceGuard guard(same_device(op, {{&X, "input"}, {&W, "weight"}, {&G, "grad_output"}}));
               return conv2d_backward(X, W, G, stride, padding, dilation, groups, need_x, need_w, need_b));
}
py::object py_avg_pool2d_forward(const py::object& x, Pair k, Pair s, Pair p, bool ceil_mode, bool cip,
                                 int64_t divisor) {
  FG_CUDA_ONLY("avg_pool2d", const DeviceArray& X = arr(x, "avg_pool2d", "input");
               fg::cuda::DeviceGuard guard(X.device());
               return py::cast(avg_pool2d_forward(X, k, s, p, ceil_mode, cip, divisor)));
}
py::object py_avg_pool2d_backward(const py::object& g, const std::vector<int64_t>& input_shape, Pair k, Pair s, Pair p,
                                  bool ceil_mode, bool cip, int64_t divisor) {
  FG_CUDA_ONLY("avg_pool2d backward", const DeviceArray& G = arr(g, "avg_pool2d backward", "grad_output");
               fg::cuda::DeviceGuard guard(G.device());
               return py::cast(avg_pool2d_backward(G, input_shape, k, s, p, ceil_mode, cip, divisor)));
}
py::object py_max_pool2d_forward(const py::object& x, Pair k, Pair s, Pair p, Pair d, bool ceil_mode) {
  FG_CUDA_ONLY("max_pool2d", const DeviceArray& X = arr(x, "max_pool2d", "input");
               fg::cuda::DeviceGuard guard(X.device()); return max_pool2d_forward(X, k, s, p, d, ceil_mode));
}
py::object py_max_pool2d_backward(const py::object& g, const py::object& indices,
                                  const std::vector<int64_t>& input_shape, Pair k, Pair s, Pair p, Pair d,
                                  bool ceil_mode) {
  FG_CUDA_ONLY("max_pool2d backward", const std::string op = "max_pool2d backward";
               const DeviceArray& G = arr(g, op, "grad_output");
               const DeviceArray& I = arr(indices, op, "indices", fg::cuda::DType::kInt64);
               fg::cuda::DeviceGuard guard(same_device(op, {{&G, "grad_output"}, {&I, "indices"}}));
               return py::cast(max_pool2d_backward(G, I, input_shape, k, s, p, d, ceil_mode)));
}
py::object py_adaptive_avg_pool2d_forward(const py::object& x, Pair output_size) {
  FG_CUDA_ONLY("adaptive_avg_pool2d", const DeviceArray& X = arr(x, "adaptive_avg_pool2d", "input");
               fg::cuda::DeviceGuard guard(X.device()); return py::cast(adaptive_avg_pool2d_forward(X, output_size)));
}
py::object py_adaptive_avg_pool2d_backward(const py::object& g, const std::vector<int64_t>& input_shape) {
  FG_CUDA_ONLY("adaptive_avg_pool2d backward",
               const DeviceArray& G = arr(g, "adaptive_avg_pool2d backward", "grad_output");
               fg::cuda::DeviceGuard guard(G.device()); return py::cast(adaptive_avg_pool2d_backward(G, input_shape)));
}
#undef FG_CUDA_ONLY

void bind(py::module_& m) {
#ifdef FORGEGRAD_WITH_CUDA
  m.attr("built") = true;
#else
  m.attr("built") = false;
#endif
  m.def("matmul", &py_matmul, py::arg("a"), py::arg("b"), py::arg("allow_tf32") = false,
        "a @ b with torch.matmul's shape rules (1-D promotion, broadcast batches) -> new DeviceArray.");
  m.def("matmul_backward", &py_matmul_backward, py::arg("a"), py::arg("b"), py::arg("grad_output"), py::arg("need_a"),
        py::arg("need_b"), py::arg("allow_tf32") = false,
        "(grad_a, grad_b) of matmul; an entry not needed is None. Broadcast batches are summed.");
  m.def("linear", &py_linear, py::arg("input"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("allow_tf32") = false, "input @ weight.T + bias -> new DeviceArray.");
  m.def("linear_backward", &py_linear_backward, py::arg("input"), py::arg("weight"), py::arg("grad_output"),
        py::arg("need_input"), py::arg("need_weight"), py::arg("need_bias"), py::arg("allow_tf32") = false,
        "(grad_input, grad_weight, grad_bias) of linear; entries not needed are None.");
  m.def("conv2d_forward", &py_conv2d_forward, py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        "conv2d (NCHW; padding as (top, bottom, left, right)) -> new DeviceArray.");
  m.def("conv2d_backward", &py_conv2d_backward, py::arg("input"), py::arg("weight"), py::arg("grad_output"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("need_input"),
        py::arg("need_weight"), py::arg("need_bias"),
        "(grad_input, grad_weight, grad_bias); entries not needed are None.");
  m.def("max_pool2d_forward", &py_max_pool2d_forward, py::arg("input"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"),
        "(values, int64 indices h * W + w in each plane) of max_pool2d -> new DeviceArrays.");
  m.def("max_pool2d_backward", &py_max_pool2d_backward, py::arg("grad_output"), py::arg("indices"),
        py::arg("input_shape"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
        py::arg("ceil_mode"), "grad_input of max_pool2d (a gather over the windows: no atomics).");
  m.def("adaptive_avg_pool2d_forward", &py_adaptive_avg_pool2d_forward, py::arg("input"), py::arg("output_size"),
        "adaptive_avg_pool2d to output_size (oh, ow) -> new DeviceArray.");
  m.def("adaptive_avg_pool2d_backward", &py_adaptive_avg_pool2d_backward, py::arg("grad_output"),
        py::arg("input_shape"), "grad_input of adaptive_avg_pool2d.");
  m.def("avg_pool2d_forward", &py_avg_pool2d_forward, py::arg("input"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("divisor_override"),
        "avg_pool2d (divisor_override 0: none) -> new DeviceArray.");
  m.def("avg_pool2d_backward", &py_avg_pool2d_backward, py::arg("grad_output"), py::arg("input_shape"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("ceil_mode"),
        py::arg("count_include_pad"), py::arg("divisor_override"), "grad_input of avg_pool2d.");
}

}  // namespace

FG_REGISTER_BINDINGS(cuda_gemm, bind)
