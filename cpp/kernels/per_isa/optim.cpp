// Fused optimizer updates (SGD, Adam/AdamW) and norm partials, compiled per ISA.
//
// Each update reads parameter, gradient and state once and writes parameter and state once
// (Adam: 16 bytes read, 12 written per element). The math of one vector is a function of
// registers only; the main loop feeds it full vectors and the tail feeds it a masked vector,
// so every element goes through the same operations wherever block and thread boundaries fall.
// The per-element math is forgegrad/hd/optim.h (shared with cuda/optim.cu): the portable build
// calls it, the AVX builds compute the same operations on vectors.
#include "forgegrad/hd/optim.h"
#include "forgegrad/optim.h"
#include "forgegrad/parallel.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

// Work unit: 8192 elements (32 KB per array). Blocks are handed out in tasks of kGrainBlocks
// (64K elements, ~2 MB of Adam traffic) with a dynamic schedule: on a busy machine a thread that
// gets descheduled does not hold the others back. Which thread runs a block never changes its
// result. A call with a single task runs on the calling thread.
constexpr int64_t kBlock = 8192;
constexpr int64_t kGrainBlocks = 8;

inline int64_t blocks_of(int64_t n, int64_t block) { return n <= 0 ? 0 : (n + block - 1) / block; }

// first[i] = index of tensor i's first block; first[count] = total blocks. A raw array: no std
// containers in per_isa/ files.
struct BlockIndex {
  int64_t* first;
  int64_t count;
  template <class GetN>
  BlockIndex(int64_t n_tensors, int64_t block, GetN&& get_n) : first(new int64_t[n_tensors + 1]), count(n_tensors) {
    first[0] = 0;
    for (int64_t i = 0; i < n_tensors; ++i) first[i + 1] = first[i] + blocks_of(get_n(i), block);
  }
  ~BlockIndex() { delete[] first; }
  BlockIndex(const BlockIndex&) = delete;
  BlockIndex& operator=(const BlockIndex&) = delete;
  int64_t total() const { return first[count]; }
  // The tensor holding block b: the last i with first[i] <= b (empty tensors are skipped).
  int64_t tensor_of(int64_t b) const {
    int64_t lo = 0, hi = count - 1;
    while (lo < hi) {
      int64_t mid = (lo + hi + 1) / 2;
      if (first[mid] <= b)
        lo = mid;
      else
        hi = mid - 1;
    }
    return lo;
  }
};

// Calls body(tensor_index, begin, end) on element ranges covering every tensor, cut into blocks
// of `block` elements; tasks of `grain` blocks are spread over threads. get_n(i): size of tensor i.
template <class GetN, class Body>
void for_each_block(int64_t count, int64_t block, int64_t grain, GetN&& get_n, Body&& body) {
  BlockIndex index(count, block, get_n);
  const int64_t total = index.total();
  parallel_tasks((total + grain - 1) / grain, [&](int64_t task) {
    int64_t b = task * grain, b1 = b + grain < total ? b + grain : total;
    int64_t t = index.tensor_of(b);
    while (b < b1) {
      while (b >= index.first[t + 1]) ++t;
      int64_t first = index.first[t];
      int64_t bend = b1 < index.first[t + 1] ? b1 : index.first[t + 1];
      int64_t n = get_n(t);
      int64_t e0 = (b - first) * block, e1 = (bend - first) * block;
      body(t, e0, e1 < n ? e1 : n);
      b = bend;
    }
  });
}

// ---- Adam / AdamW ------------------------------------------------------------------------------
struct AdamConsts {
  vf lerp_coef, beta2, sq_weight, eps, weight_decay, param_scale, step_size, bc2_sqrt;
  bool lerp_from_start;  // torch's lerp: |w| < 0.5 ? start + w*(end-start) : end + (w-1)*(end-start)
  bool maximize, coupled_wd, decoupled_wd;
  hd::AdamParams scalar;  // the same constants for hd::adam_update (portable build)
};

// One vector of the update (torch's fused CPU Adam, operation for operation):
//   g = maximize ? -g : g;  Adam: g += wd * p;  AdamW: p *= 1 - lr*wd
//   m = lerp(m, g, 1 - beta1);  v = v * beta2 + (1 - beta2) * g * g;  [vmax = max(vmax, v)]
//   p = p - step_size * m / (sqrt(v or vmax) / sqrt(1 - beta2^t) + eps)
template <bool kAmsgrad>
inline void adam_math(vf& p, vf g, vf& m, vf& v, vf& vm, const AdamConsts& c) {
#if defined(FG_SIMD_PORTABLE)
  hd::adam_update(p, g, m, v, vm, kAmsgrad, c.scalar, c.step_size, c.bc2_sqrt);
#else
  if (c.maximize) g = vneg(g);
  if (c.coupled_wd) g = vfmadd(p, c.weight_decay, g);
  if (c.decoupled_wd) p = vmul(p, c.param_scale);
  vf diff = vsub(g, m);
  m = vfmadd(c.lerp_coef, diff, c.lerp_from_start ? m : g);
  v = vadd(vmul(v, c.beta2), vmul(vmul(c.sq_weight, g), g));
  vf s = v;
  if (kAmsgrad) {
    vm = vmax(vm, v);
    s = vm;
  }
  vf denom = vadd(vdiv(vsqrt(s), c.bc2_sqrt), c.eps);
  p = vsub(p, vdiv(vmul(c.step_size, m), denom));
#endif
}

template <bool kAmsgrad>
void adam_range(const AdamTensor& t, int64_t i0, int64_t i1, const AdamConsts& consts) {
  const AdamConsts c = consts;  // a local copy: its flags stay in registers across the stores
  float* P = t.param;
  const float* G = t.grad;
  float* M = t.exp_avg;
  float* V = t.exp_avg_sq;
  float* X = t.max_exp_avg_sq;
  int64_t i = i0;
  for (; i + W <= i1; i += W) {
    vf p = vload(P + i), m = vload(M + i), v = vload(V + i);
    vf vm = kAmsgrad ? vload(X + i) : vzero();
    adam_math<kAmsgrad>(p, vload(G + i), m, v, vm, c);
    vstore(P + i, p);
    vstore(M + i, m);
    vstore(V + i, v);
    if (kAmsgrad) vstore(X + i, vm);
  }
  if (i < i1) {
    int r = static_cast<int>(i1 - i);
    vf p = vload_n(P + i, r), m = vload_n(M + i, r), v = vload_n(V + i, r);
    vf vm = kAmsgrad ? vload_n(X + i, r) : vzero();
    adam_math<kAmsgrad>(p, vload_n(G + i, r), m, v, vm, c);
    vstore_n(P + i, p, r);
    vstore_n(M + i, m, r);
    vstore_n(V + i, v, r);
    if (kAmsgrad) vstore_n(X + i, vm, r);
  }
}

// ---- SGD -----------------------------------------------------------------------------------------
struct SgdConsts {
  vf neg_lr, momentum, one_minus_dampening, weight_decay;
  bool maximize, use_wd, use_momentum, nesterov;
  hd::SgdParams scalar;  // the same constants for hd::sgd_update (portable build)
};

// torch's single-tensor SGD:  g = maximize ? -g : g;  g = g + wd * p;
//   buf = first ? g : buf * momentum + (1 - dampening) * g;  g = nesterov ? g + momentum * buf : buf
//   p = p + (-lr) * g
inline void sgd_math(vf& p, vf g, vf& buf, bool init, const SgdConsts& c) {
#if defined(FG_SIMD_PORTABLE)
  hd::sgd_update(p, g, buf, init, c.scalar);
#else
  if (c.maximize) g = vneg(g);
  if (c.use_wd) g = vfmadd(p, c.weight_decay, g);
  if (c.use_momentum) {
    buf = init ? g : vfmadd(g, c.one_minus_dampening, vmul(buf, c.momentum));
    g = c.nesterov ? vfmadd(buf, c.momentum, g) : buf;
  }
  p = vfmadd(g, c.neg_lr, p);
#endif
}

void sgd_range(const SgdTensor& t, int64_t i0, int64_t i1, const SgdConsts& consts) {
  const SgdConsts c = consts;  // a local copy: its flags stay in registers across the stores
  float* P = t.param;
  const float* G = t.grad;
  float* B = t.momentum_buffer;
  const bool mom = c.use_momentum, init = t.init_buffer;
  int64_t i = i0;
  for (; i + W <= i1; i += W) {
    vf p = vload(P + i);
    vf b = (mom && !init) ? vload(B + i) : vzero();
    sgd_math(p, vload(G + i), b, init, c);
    vstore(P + i, p);
    if (mom) vstore(B + i, b);
  }
  if (i < i1) {
    int r = static_cast<int>(i1 - i);
    vf p = vload_n(P + i, r);
    vf b = (mom && !init) ? vload_n(B + i, r) : vzero();
    sgd_math(p, vload_n(G + i, r), b, init, c);
    vstore_n(P + i, p, r);
    if (mom) vstore_n(B + i, b, r);
  }
}

// ---- norm partials ------------------------------------------------------------------------------
// Pieces of 1024 elements are accumulated in float vectors, reduced, and added to a double: the
// float error stays at ~64 terms per lane.
constexpr int64_t kPiece = 1024;

double chunk_sum(const float* x, int64_t n, bool squares) {
  double total = 0.0;
  for (int64_t p0 = 0; p0 < n; p0 += kPiece) {
    int64_t p1 = p0 + kPiece < n ? p0 + kPiece : n;
    vf acc = vzero();
    int64_t i = p0;
    for (; i + W <= p1; i += W) {
      vf v = vload(x + i);
      acc = squares ? vfmadd(v, v, acc) : vadd(acc, vabs(v));
    }
    if (i < p1) {
      vf v = vload_n(x + i, static_cast<int>(p1 - i));
      acc = squares ? vfmadd(v, v, acc) : vadd(acc, vabs(v));
    }
    total += static_cast<double>(vreduce_add(acc));
  }
  return total;
}

double chunk_max_abs(const float* x, int64_t n) {
  vf acc = vzero();
  vf nan_probe = vzero();  // x * 0 is NaN for NaN and +-inf elements, 0 otherwise
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    vf v = vload(x + i);
    acc = vmax(acc, vabs(v));
    nan_probe = vadd(nan_probe, vmul(v, vzero()));
  }
  if (i < n) {
    vf v = vload_n(x + i, static_cast<int>(n - i));
    acc = vmax(acc, vabs(v));
    nan_probe = vadd(nan_probe, vmul(v, vzero()));
  }
  float probe = vreduce_add(nan_probe);
  if (probe != probe) {  // some element is inf or NaN: vmax may have dropped a NaN, look again
    for (int64_t k = 0; k < n; ++k)
      if (x[k] != x[k]) return static_cast<double>(x[k]);
  }
  return static_cast<double>(vreduce_max(acc));
}

}  // namespace

// A step over more than kStreamElems elements in all runs, in the AVX-512 build, on the AVX2 build's
// 256-bit loop. Its 3-5 arrays then stream from memory, and on Zen 5 (1 thread, 10M parameters at
// the page offsets numpy gave) 512-bit loads and stores ran 7 % (Adam) and 15-25 % (SGD momentum)
// slower there; software prefetching did not close the gap. From the caches (the 235K parameters of
// a 784-256-128-10 MLP) 512-bit vectors stay 25 % faster: sqrt and divide per element. Each element
// goes through the same IEEE operations at either width, so results do not change. Zen 4 splits
// 512-bit accesses into 256-bit halves anyway; elsewhere a stream from DRAM is bound by DRAM.
constexpr int64_t kStreamElems = int64_t(1) << 21;  // 8 MB per array: 40-56 MB a step, past L3

template <class T>
bool streams_from_memory(const T* tensors, int64_t count) {
  int64_t total = 0;
  for (int64_t i = 0; i < count; ++i) total += tensors[i].n;
  return total > kStreamElems;
}

void adam_step(const AdamTensor* tensors, int64_t count, const AdamHyper& h) {
  if (count <= 0) return;
#if defined(__AVX512F__)
  if (streams_from_memory(tensors, count)) return avx2::adam_step(tensors, count, h);
#endif
  AdamConsts c;
  c.scalar = hd::adam_params(h.exp_avg_weight, h.beta2, h.exp_avg_sq_weight, h.eps, h.weight_decay, h.param_scale,
                             h.decoupled, h.maximize);
  c.lerp_from_start = c.scalar.lerp_from_start;
  c.lerp_coef = vset1(c.scalar.lerp_coef);
  c.beta2 = vset1(h.beta2);
  c.sq_weight = vset1(h.exp_avg_sq_weight);
  c.eps = vset1(h.eps);
  c.weight_decay = vset1(h.weight_decay);
  c.param_scale = vset1(h.param_scale);
  c.maximize = h.maximize;
  c.coupled_wd = c.scalar.coupled_wd;
  c.decoupled_wd = c.scalar.decoupled_wd;
  for_each_block(
      count, kBlock, kGrainBlocks, [&](int64_t i) { return tensors[i].n; },
      [&](int64_t ti, int64_t e0, int64_t e1) {
        const AdamTensor& t = tensors[ti];
        AdamConsts ct = c;
        ct.step_size = vset1(t.step_size);
        ct.bc2_sqrt = vset1(t.bias_correction2_sqrt);
        if (h.amsgrad)
          adam_range<true>(t, e0, e1, ct);
        else
          adam_range<false>(t, e0, e1, ct);
      });
}

void sgd_step(const SgdTensor* tensors, int64_t count, const SgdHyper& h) {
  if (count <= 0) return;
#if defined(__AVX512F__)
  if (streams_from_memory(tensors, count)) return avx2::sgd_step(tensors, count, h);
#endif
  SgdConsts c;
  c.scalar = hd::sgd_params(h.neg_lr, h.momentum, h.one_minus_dampening, h.weight_decay, h.nesterov, h.maximize);
  c.neg_lr = vset1(h.neg_lr);
  c.momentum = vset1(h.momentum);
  c.one_minus_dampening = vset1(h.one_minus_dampening);
  c.weight_decay = vset1(h.weight_decay);
  c.maximize = h.maximize;
  c.use_wd = c.scalar.use_wd;
  c.use_momentum = c.scalar.use_momentum;
  c.nesterov = h.nesterov;
  for_each_block(
      count, kBlock, kGrainBlocks, [&](int64_t i) { return tensors[i].n; },
      [&](int64_t ti, int64_t e0, int64_t e1) { sgd_range(tensors[ti], e0, e1, c); });
}
void norm_partials(const float* const* xs, const int64_t* ns, int64_t count, int kind, double* out) {
  if (count <= 0) return;
  // Chunk k of tensor i lands at out[offset_i + k]; offsets are recomputed per range (count is
  // small) rather than stored, which keeps this file free of std containers.
  for_each_block(
      count, kReduceChunk, 2, [&](int64_t i) { return ns[i]; },
      [&](int64_t ti, int64_t e0, int64_t e1) {
        int64_t offset = 0;
        for (int64_t j = 0; j < ti; ++j) offset += reduce_chunks(ns[j]);
        for (int64_t s = e0; s < e1; s += kReduceChunk) {
          int64_t len = e1 - s < kReduceChunk ? e1 - s : kReduceChunk;
          const float* x = xs[ti] + s;
          double r = kind == kNormInf ? chunk_max_abs(x, len) : chunk_sum(x, len, kind == kNormL2);
          out[offset + s / kReduceChunk] = r;
        }
      });
}

}  // namespace FG_ISA_NS
}  // namespace fg
