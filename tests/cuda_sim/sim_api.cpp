// C entry points over the host functions of cuda_nn.h for tests/test_cuda_sim.py (ctypes), built
// with the kernels' source against the CPU stand-in of cuda_runtime.h: "device" pointers are host
// memory here. Each returns NULL on success or the error text.
#include <string>

#include "common.cuh"
#include "forgegrad/cuda_nn.h"

namespace fg::cuda {
cudaStream_t current_stream() { return nullptr; }
bool launch_blocking() { return false; }
}  // namespace fg::cuda

using namespace fg::cuda::nn;

namespace {
thread_local std::string last;
const char* ret(const std::string& s) {
  last = s.empty() ? fg_sim::failure : s;
  fg_sim::failure.clear();
  return last.empty() ? nullptr : last.c_str();
}
Broadcast broadcast(int ndim, const int64_t* shape, const int64_t* strides) {
  Broadcast g;
  g.ndim = ndim;
  for (int d = 0; d < ndim; ++d) {
    g.shape[d] = shape[d];
    for (int k = 0; k < kMaxInputs; ++k) g.stride[k][d] = strides[k * kMaxDims + d];
  }
  return g;
}
Reduction reduction(int kn, const int64_t* ks, const int64_t* kst, int rn, const int64_t* rs, const int64_t* rst) {
  Reduction r;
  r.keep_ndim = kn;
  r.red_ndim = rn;
  for (int d = 0; d < kn; ++d) r.keep_shape[d] = ks[d], r.keep_stride[d] = kst[d];
  for (int d = 0; d < rn; ++d) r.red_shape[d] = rs[d], r.red_stride[d] = rst[d];
  return r;
}
}  // namespace

extern "C" {
const char* sim_pointwise(int op, int ndim, const int64_t* shape, const int64_t* strides, float* out,
                          const float* const* in, const float* scalars, float alpha) {
  return ret(pointwise(static_cast<Pointwise>(op), broadcast(ndim, shape, strides), out, in, scalars, alpha));
}
const char* sim_compare(int op, int ndim, const int64_t* shape, const int64_t* strides, bool* out, const float* a,
                        const float* b, float sa, float sb) {
  return ret(compare(static_cast<Compare>(op), broadcast(ndim, shape, strides), out, a, b, sa, sb));
}
const char* sim_where(int ndim, const int64_t* shape, const int64_t* strides, float* out, const bool* c, const float* a,
                      const float* b, float sa, float sb) {
  return ret(where(broadcast(ndim, shape, strides), out, c, a, b, sa, sb));
}
int64_t sim_reduce_workspace(int kn, const int64_t* ks, const int64_t* kst, int rn, const int64_t* rs,
                             const int64_t* rst) {
  return reduce_workspace(reduction(kn, ks, kst, rn, rs, rst));
}
const char* sim_reduce(int op, int kn, const int64_t* ks, const int64_t* kst, int rn, const int64_t* rs,
                       const int64_t* rst, const float* x, const float* center, float* out, float scale, bool sq,
                       float* ws) {
  return ret(reduce(static_cast<Reduce>(op), reduction(kn, ks, kst, rn, rs, rst), x, center, out, scale, sq, ws));
}
const char* sim_reduce_int(int op, int kn, const int64_t* ks, const int64_t* kst, int rn, const int64_t* rs,
                           const int64_t* rst, const void* x, bool is_bool, int64_t* out, int64_t* ws) {
  return ret(reduce_int(static_cast<Reduce>(op), reduction(kn, ks, kst, rn, rs, rst), x, is_bool, out, ws));
}
const char* sim_compare_i64(int op, int ndim, const int64_t* shape, const int64_t* strides, bool* out, const int64_t* a,
                            const int64_t* b, int64_t sa, int64_t sb) {
  return ret(compare_i64(static_cast<Compare>(op), broadcast(ndim, shape, strides), out, a, b, sa, sb));
}
const char* sim_arg_reduce(bool is_max, int kn, const int64_t* ks, const int64_t* kst, int rn, const int64_t* rs,
                           const int64_t* rst, const float* x, int64_t* index, float* values) {
  return ret(arg_reduce(is_max, reduction(kn, ks, kst, rn, rs, rst), x, index, values));
}
const char* sim_scatter_axis(const float* g, const int64_t* idx, float* out, int64_t o, int64_t n, int64_t i) {
  return ret(scatter_axis(g, idx, out, o, n, i));
}
const char* sim_softmax_forward(bool log, const float* x, float* y, int64_t o, int64_t n, int64_t i) {
  return ret(softmax_forward(log, x, y, o, n, i));
}
const char* sim_softmax_backward(bool log, const float* y, const float* g, float* gx, int64_t o, int64_t n, int64_t i) {
  return ret(softmax_backward(log, y, g, gx, o, n, i));
}
const char* sim_cross_entropy_forward(const float* z, const int64_t* t, const float* w, float* prob, float* per,
                                      float* wy, int64_t o, int64_t C, int64_t i, int64_t ignore, float ls) {
  return ret(cross_entropy_forward(z, t, w, prob, per, wy, o, C, i, ignore, ls));
}
const char* sim_cross_entropy_backward(const float* prob, const int64_t* t, const float* w, const float* g, int64_t gs,
                                       const float* denom, float* grad, int64_t o, int64_t C, int64_t i, int64_t ignore,
                                       float ls) {
  return ret(cross_entropy_backward(prob, t, w, g, gs, denom, grad, o, C, i, ignore, ls));
}
const char* sim_nll_forward(const float* lp, const int64_t* t, const float* w, float* per, float* wy, int64_t o,
                            int64_t C, int64_t i, int64_t ignore) {
  return ret(nll_forward(lp, t, w, per, wy, o, C, i, ignore));
}
const char* sim_nll_backward(const int64_t* t, const float* w, const float* g, int64_t gs, const float* denom,
                             float* grad, int64_t o, int64_t C, int64_t i, int64_t ignore) {
  return ret(nll_backward(t, w, g, gs, denom, grad, o, C, i, ignore));
}
const char* sim_batch_norm_forward(const float* x, const float* w, const float* b, float* rm, float* rv, bool train,
                                   float mom, float eps, float* y, float* mean, float* invstd, int64_t N, int64_t C,
                                   int64_t inner) {
  return ret(batch_norm_forward(x, w, b, rm, rv, train, mom, eps, y, mean, invstd, N, C, inner));
}
const char* sim_batch_norm_backward(const float* g, const float* x, const float* w, const float* mean,
                                    const float* invstd, bool train, float* gx, float* gw, float* gb, int64_t N,
                                    int64_t C, int64_t inner) {
  return ret(batch_norm_backward(g, x, w, mean, invstd, train, gx, gw, gb, N, C, inner));
}
const char* sim_layer_norm_forward(bool rms, const float* x, const float* w, const float* b, float eps, float* y,
                                   float* mean, float* rstd, int64_t rows, int64_t D) {
  return ret(layer_norm_forward(rms, x, w, b, eps, y, mean, rstd, rows, D));
}
int64_t sim_layer_norm_workspace(int64_t rows, int64_t D) { return layer_norm_workspace(rows, D); }
const char* sim_layer_norm_backward(bool rms, const float* g, const float* x, const float* mean, const float* rstd,
                                    const float* w, float* gx, float* gw, float* gb, int64_t rows, int64_t D,
                                    float* ws) {
  return ret(layer_norm_backward(rms, g, x, mean, rstd, w, gx, gw, gb, rows, D, ws));
}
const char* sim_attention_forward(const float* q, const float* k, const float* v, const float* mask, int64_t mbs,
                                  float* out, float* lse, int64_t B, int64_t L, int64_t S, int64_t D, int64_t Dv,
                                  float scale, bool causal) {
  return ret(attention_forward(q, k, v, mask, mbs, out, lse, B, L, S, D, Dv, scale, causal));
}
const char* sim_attention_backward(const float* q, const float* k, const float* v, const float* mask, int64_t mbs,
                                   const float* out, const float* lse, const float* g, float* gq, float* gk, float* gv,
                                   int64_t B, int64_t L, int64_t S, int64_t D, int64_t Dv, float scale, bool causal,
                                   float* ws) {
  return ret(attention_backward(q, k, v, mask, mbs, out, lse, g, gq, gk, gv, B, L, S, D, Dv, scale, causal, ws));
}
const char* sim_attention_mask_grad(const float* q, const float* k, const float* v, const float* mask, int64_t mbs,
                                    const float* out, const float* lse, const float* g, float* ds, int64_t B, int64_t L,
                                    int64_t S, int64_t D, int64_t Dv, float scale, bool causal) {
  return ret(attention_mask_grad(q, k, v, mask, mbs, out, lse, g, ds, B, L, S, D, Dv, scale, causal));
}
const char* sim_embedding_forward(const float* w, const int64_t* idx, float* out, int64_t n, int64_t V, int64_t D) {
  return ret(embedding_forward(w, idx, out, n, V, D));
}
const char* sim_embedding_backward(const float* g, const int64_t* idx, float* gw, int64_t n, int64_t V, int64_t D,
                                   int64_t pad, int* ws) {
  return ret(embedding_backward(g, idx, gw, n, V, D, pad, ws));
}
}
