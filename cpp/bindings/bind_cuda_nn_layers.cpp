// forgegrad._C.cuda_nn (continued): batch / layer / RMS norm, attention and embedding kernels on
// DeviceArrays. Same conventions as bind_cuda_nn.cpp: checked arguments, outputs allocated on the
// inputs' device, kernels queued on its stream with no wait.
#include "forgegrad/bindings.h"
#ifdef FORGEGRAD_WITH_CUDA
#include "cuda_nn_bind.h"
#endif

namespace py = pybind11;

namespace {

#ifdef FORGEGRAD_WITH_CUDA
using namespace fg::cuda::nn_bind;  // NOLINT: the binding helpers of cuda_nn_bind.h

void channel_arg(const OptArr& a, const DeviceArray& x, int64_t C, const char* fn, const char* name) {
  if (!a) return;
  need_dtype(**a, DType::kFloat32, fn, name);
  need_shape(**a, {C}, fn, name);
  same_device(x, **a, fn, name);
}

void bn_input(const DeviceArray& x, const char* fn) {
  need_dtype(x, DType::kFloat32, fn, "input");
  if (x.ndim() < 2 || x.ndim() > 4 || x.shape()[1] < 1)
    throw py::value_error(std::string(fn) + ": input must be (N, C), (N, C, L) or (N, C, H, W) with C >= 1, got " +
                          shape_str(x.shape()));
}

py::tuple batch_norm_forward(const Arr& x, const OptArr& weight, const OptArr& bias, const OptArr& running_mean,
                             const OptArr& running_var, bool training, float momentum, float eps) {
  bn_input(*x, "batch_norm");
  const Shape& s = x->shape();
  int64_t C = s[1];
  channel_arg(weight, *x, C, "batch_norm", "weight");
  channel_arg(bias, *x, C, "batch_norm", "bias");
  channel_arg(running_mean, *x, C, "batch_norm", "running_mean");
  channel_arg(running_var, *x, C, "batch_norm", "running_var");
  if (!training && (!running_mean || !running_var))
    throw py::value_error("batch_norm: running_mean and running_var are required when training=False");
  if (training && x->size() / C < 2)
    throw py::value_error("batch_norm: expected more than 1 value per channel when training, got input of shape " +
                          shape_str(s));
  if (!(eps >= 0.f)) throw py::value_error("batch_norm: eps must be >= 0");
  int dev = x->device();
  Arr y = empty(s, DType::kFloat32, dev), mean = empty({C}, DType::kFloat32, dev),
      invstd = empty({C}, DType::kFloat32, dev);
  fg::cuda::DeviceGuard guard(dev);
  check(nn::batch_norm_forward(x->data(), fptr(weight), fptr(bias), running_mean ? (*running_mean)->data() : nullptr,
                               running_var ? (*running_var)->data() : nullptr, training, momentum, eps, y->data(),
                               mean->data(), invstd->data(), s[0], C, prod(s, 2)),
        "batch_norm_forward");
  return py::make_tuple(y, mean, invstd);
}

py::tuple batch_norm_backward(const Arr& g, const Arr& x, const OptArr& weight, const Arr& mean, const Arr& invstd,
                              bool training, std::tuple<bool, bool, bool> need) {
  bn_input(*x, "batch_norm_backward");
  const Shape& s = x->shape();
  int64_t C = s[1];
  need_dtype(*g, DType::kFloat32, "batch_norm_backward", "grad");
  need_shape(*g, s, "batch_norm_backward", "grad");
  same_device(*x, *g, "batch_norm_backward", "grad");
  channel_arg(weight, *x, C, "batch_norm_backward", "weight");
  channel_arg(mean, *x, C, "batch_norm_backward", "mean");
  channel_arg(invstd, *x, C, "batch_norm_backward", "invstd");
  int dev = x->device();
  Arr gx = std::get<0>(need) ? empty(s, DType::kFloat32, dev) : nullptr;
  Arr gw = std::get<1>(need) ? empty({C}, DType::kFloat32, dev) : nullptr;
  Arr gb = std::get<2>(need) ? empty({C}, DType::kFloat32, dev) : nullptr;
  if (gx || gw || gb) {
    fg::cuda::DeviceGuard guard(dev);
    check(nn::batch_norm_backward(g->data(), x->data(), fptr(weight), mean->data(), invstd->data(), training,
                                  gx ? gx->data() : nullptr, gw ? gw->data() : nullptr, gb ? gb->data() : nullptr, s[0],
                                  C, prod(s, 2)),
          "batch_norm_backward");
  }
  return py::make_tuple(gx ? py::cast(gx) : py::none(), gw ? py::cast(gw) : py::none(), gb ? py::cast(gb) : py::none());
}

// x [..., normalized (k axes)]: the batch shape and the row length.
std::pair<Shape, int64_t> norm_rows(const DeviceArray& x, int k, const char* fn) {
  need_dtype(x, DType::kFloat32, fn, "x");
  if (k < 1 || k > x.ndim())
    throw py::value_error(std::string(fn) + ": normalized_ndim must be in [1, " + std::to_string(x.ndim()) + "], got " +
                          std::to_string(k));
  const Shape& s = x.shape();
  Shape batch(s.begin(), s.end() - k);
  return {batch, prod(s, s.size() - k)};
}

void norm_param(const OptArr& p, const DeviceArray& x, int k, const char* fn, const char* name) {
  if (!p) return;
  need_dtype(**p, DType::kFloat32, fn, name);
  need_shape(**p, Shape(x.shape().end() - k, x.shape().end()), fn, name);
  same_device(x, **p, fn, name);
}

py::tuple layer_norm_forward(const Arr& x, int k, const OptArr& weight, const OptArr& bias, float eps, bool rms) {
  const char* fn = rms ? "rms_norm" : "layer_norm";
  auto [batch, D] = norm_rows(*x, k, fn);
  norm_param(weight, *x, k, fn, "weight");
  norm_param(bias, *x, k, fn, "bias");
  if (rms && bias) throw py::value_error("rms_norm: no bias");
  if (!(eps >= 0.f)) throw py::value_error(std::string(fn) + ": eps must be >= 0");
  int dev = x->device();
  Arr y = empty(x->shape(), DType::kFloat32, dev), rstd = empty(batch, DType::kFloat32, dev);
  Arr mean = rms ? nullptr : empty(batch, DType::kFloat32, dev);
  fg::cuda::DeviceGuard guard(dev);
  check(nn::layer_norm_forward(rms, x->data(), fptr(weight), fptr(bias), eps, y->data(), mean ? mean->data() : nullptr,
                               rstd->data(), prod(batch), D),
        fn);
  return py::make_tuple(y, mean ? py::cast(mean) : py::none(), rstd);
}

py::tuple layer_norm_backward(const Arr& g, const Arr& x, const OptArr& mean, const Arr& rstd, const OptArr& weight,
                              int k, std::tuple<bool, bool, bool> need, bool rms) {
  const char* fn = rms ? "rms_norm_backward" : "layer_norm_backward";
  auto [batch, D] = norm_rows(*x, k, fn);
  need_dtype(*g, DType::kFloat32, fn, "grad");
  need_shape(*g, x->shape(), fn, "grad");
  need_shape(*rstd, batch, fn, "rstd");
  if (!rms && !mean) throw py::value_error("layer_norm_backward: mean is required");
  if (mean) need_shape(**mean, batch, fn, "mean");
  norm_param(weight, *x, k, fn, "weight");
  int dev = x->device();
  Shape ps(x->shape().end() - k, x->shape().end());
  Arr gx = std::get<0>(need) ? empty(x->shape(), DType::kFloat32, dev) : nullptr;
  Arr gw = std::get<1>(need) ? empty(ps, DType::kFloat32, dev) : nullptr;
  Arr gb = std::get<2>(need) && !rms ? empty(ps, DType::kFloat32, dev) : nullptr;
  Arr work = (gw || gb) ? empty({nn::layer_norm_workspace(prod(batch), D)}, DType::kFloat32, dev) : nullptr;
  if (gx || gw || gb) {
    fg::cuda::DeviceGuard guard(dev);
    check(nn::layer_norm_backward(rms, g->data(), x->data(), mean ? (*mean)->data() : nullptr, rstd->data(),
                                  fptr(weight), gx ? gx->data() : nullptr, gw ? gw->data() : nullptr,
                                  gb ? gb->data() : nullptr, prod(batch), D, work ? work->data() : nullptr),
          fn);
  }
  return py::make_tuple(gx ? py::cast(gx) : py::none(), gw ? py::cast(gw) : py::none(), gb ? py::cast(gb) : py::none());
}

// q [B, L, D], k [B, S, D], v [B, S, Dv]; mask None or float32 [1 or B, L, S].
struct AttnDims {
  int64_t B, L, S, D, Dv, mask_bstride;
};

AttnDims attn_dims(const DeviceArray& q, const DeviceArray& k, const DeviceArray& v, const OptArr& mask,
                   const char* fn) {
  for (auto [a, name] : {std::pair<const DeviceArray*, const char*>{&q, "query"}, {&k, "key"}, {&v, "value"}}) {
    need_dtype(*a, DType::kFloat32, fn, name);
    if (a->ndim() != 3) throw py::value_error(std::string(fn) + ": " + name + " must be 3-D [batch, rows, dim]");
    same_device(q, *a, fn, name);
  }
  AttnDims d{q.shape()[0], q.shape()[1], k.shape()[1], q.shape()[2], v.shape()[2], 0};
  need_shape(k, {d.B, d.S, d.D}, fn, "key");
  need_shape(v, {d.B, d.S, d.Dv}, fn, "value");
  if (d.D < 1 || d.D > 128 || d.Dv < 1 || d.Dv > 128)
    throw py::value_error(std::string(fn) + ": head dimensions must be in [1, 128], got " + std::to_string(d.D) +
                          " and " + std::to_string(d.Dv));
  if (mask) {
    need_dtype(**mask, DType::kFloat32, fn, "attn_mask");
    same_device(q, **mask, fn, "attn_mask");
    const Shape& m = (*mask)->shape();
    if (m.size() != 3 || (m[0] != 1 && m[0] != d.B) || m[1] != d.L || m[2] != d.S)
      throw py::value_error(std::string(fn) + ": attn_mask must have shape [1 or " + std::to_string(d.B) + ", " +
                            std::to_string(d.L) + ", " + std::to_string(d.S) + "], got " + shape_str(m));
    d.mask_bstride = m[0] == 1 ? 0 : d.L * d.S;
  }
  return d;
}

py::tuple attention_forward(const Arr& q, const Arr& k, const Arr& v, const OptArr& mask, float scale, bool causal) {
  AttnDims d = attn_dims(*q, *k, *v, mask, "attention_forward");
  int dev = q->device();
  Arr out = empty({d.B, d.L, d.Dv}, DType::kFloat32, dev), lse = empty({d.B, d.L}, DType::kFloat32, dev);
  fg::cuda::DeviceGuard guard(dev);
  check(nn::attention_forward(q->data(), k->data(), v->data(), fptr(mask), d.mask_bstride, out->data(), lse->data(),
                              d.B, d.L, d.S, d.D, d.Dv, scale, causal),
        "attention_forward");
  return py::make_tuple(out, lse);
}

py::tuple attention_backward(const Arr& g, const Arr& q, const Arr& k, const Arr& v, const Arr& out, const Arr& lse,
                             const OptArr& mask, float scale, bool causal) {
  const char* fn = "attention_backward";
  AttnDims d = attn_dims(*q, *k, *v, mask, fn);
  need_shape(*out, {d.B, d.L, d.Dv}, fn, "out");
  need_shape(*g, {d.B, d.L, d.Dv}, fn, "grad");
  need_shape(*lse, {d.B, d.L}, fn, "lse");
  int dev = q->device();
  Arr gq = empty(q->shape(), DType::kFloat32, dev), gk = empty(k->shape(), DType::kFloat32, dev),
      gv = empty(v->shape(), DType::kFloat32, dev), work = empty({d.B * d.L}, DType::kFloat32, dev);
  fg::cuda::DeviceGuard guard(dev);
  check(nn::attention_backward(q->data(), k->data(), v->data(), fptr(mask), d.mask_bstride, out->data(), lse->data(),
                               g->data(), gq->data(), gk->data(), gv->data(), d.B, d.L, d.S, d.D, d.Dv, scale, causal,
                               work->data()),
        fn);
  return py::make_tuple(gq, gk, gv);
}

Arr attention_mask_grad(const Arr& g, const Arr& q, const Arr& k, const Arr& v, const Arr& out, const Arr& lse,
                        const OptArr& mask, float scale, bool causal) {
  const char* fn = "attention_mask_grad";
  AttnDims d = attn_dims(*q, *k, *v, mask, fn);
  need_shape(*out, {d.B, d.L, d.Dv}, fn, "out");
  need_shape(*g, {d.B, d.L, d.Dv}, fn, "grad");
  need_shape(*lse, {d.B, d.L}, fn, "lse");
  Arr ds = empty({d.B, d.L, d.S}, DType::kFloat32, q->device());
  fg::cuda::DeviceGuard guard(q->device());
  check(nn::attention_mask_grad(q->data(), k->data(), v->data(), fptr(mask), d.mask_bstride, out->data(), lse->data(),
                                g->data(), ds->data(), d.B, d.L, d.S, d.D, d.Dv, scale, causal),
        fn);
  return ds;
}

Arr embedding_forward(const Arr& weight, const Arr& index) {
  need_dtype(*weight, DType::kFloat32, "embedding", "weight");
  need_dtype(*index, DType::kInt64, "embedding", "indices");
  same_device(*weight, *index, "embedding", "indices");
  if (weight->ndim() != 2) throw py::value_error("embedding: weight must be 2-D, got " + shape_str(weight->shape()));
  Shape s = index->shape();
  s.push_back(weight->shape()[1]);
  Arr out = empty(s, DType::kFloat32, weight->device());
  fg::cuda::DeviceGuard guard(weight->device());
  check(nn::embedding_forward(weight->data(), index->data_as<int64_t>(), out->data(), index->size(), weight->shape()[0],
                              weight->shape()[1]),
        "embedding_forward");
  return out;
}

Arr embedding_backward(const Arr& g, const Arr& index, int64_t num_weights, int64_t padding_idx) {
  need_dtype(*g, DType::kFloat32, "embedding_backward", "grad");
  need_dtype(*index, DType::kInt64, "embedding_backward", "indices");
  same_device(*g, *index, "embedding_backward", "indices");
  if (g->ndim() != index->ndim() + 1 || Shape(g->shape().begin(), g->shape().end() - 1) != index->shape())
    throw py::value_error("embedding_backward: grad must have shape indices.shape + [dim], got " +
                          shape_str(g->shape()) + " for indices " + shape_str(index->shape()));
  if (num_weights < 0) throw py::value_error("embedding_backward: num_weights must be >= 0");
  int64_t D = g->shape().back();
  int dev = g->device();
  Arr gw = empty({num_weights, D}, DType::kFloat32, dev);
  Arr counts = empty({num_weights}, DType::kInt32, dev);
  fg::cuda::DeviceGuard guard(dev);
  check(nn::embedding_backward(g->data(), index->data_as<int64_t>(), gw->data(), index->size(), num_weights, D,
                               padding_idx, counts->data_as<int32_t>()),
        "embedding_backward");
  return gw;
}
#endif

void bind(py::module_& m) {
#ifdef FORGEGRAD_WITH_CUDA
  m.def("batch_norm_forward", &batch_norm_forward, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("running_mean"), py::arg("running_var"), py::arg("training"), py::arg("momentum") = 0.1f,
        py::arg("eps") = 1e-5f, "(y, save_mean, save_invstd); running stats updated in place when training");
  m.def("batch_norm_backward", &batch_norm_backward, py::arg("g"), py::arg("x"), py::arg("weight"), py::arg("mean"),
        py::arg("invstd"), py::arg("training"), py::arg("need") = std::make_tuple(true, true, true));
  m.def("layer_norm_forward", &layer_norm_forward, py::arg("x"), py::arg("normalized_ndim"), py::arg("weight"),
        py::arg("bias"), py::arg("eps"), py::arg("rms") = false, "(y, mean or None for rms, rstd)");
  m.def("layer_norm_backward", &layer_norm_backward, py::arg("g"), py::arg("x"), py::arg("mean"), py::arg("rstd"),
        py::arg("weight"), py::arg("normalized_ndim"), py::arg("need") = std::make_tuple(true, true, true),
        py::arg("rms") = false);
  m.def("attention_forward", &attention_forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"),
        py::arg("scale"), py::arg("causal"), "(out, lse)");
  m.def("attention_backward", &attention_backward, py::arg("g"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("out"), py::arg("lse"), py::arg("mask"), py::arg("scale"), py::arg("causal"), "(dq, dk, dv)");
  m.def("attention_mask_grad", &attention_mask_grad, py::arg("g"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("out"), py::arg("lse"), py::arg("mask"), py::arg("scale"), py::arg("causal"),
        "the [B, L, S] score gradient (an additive mask's, before summing to its shape)");
  m.def("embedding_forward", &embedding_forward, py::arg("weight"), py::arg("indices"));
  m.def("embedding_backward", &embedding_backward, py::arg("g"), py::arg("indices"), py::arg("num_weights"),
        py::arg("padding_idx") = -1);
#else
  (void)m;
#endif
}

}  // namespace

FG_REGISTER_BINDINGS(cuda_nn, bind)
