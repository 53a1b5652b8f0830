// Multi-tensor fused optimizer updates: one launch updates every parameter. Tensors are cut into
// chunks of kOptimChunk elements; block k updates chunk k, finding its tensor by a binary search over
// the table's chunk offsets (as the CPU kernel's BlockIndex). The per-element math is the shared
// host/device code of forgegrad/hd/optim.h, the same functions the CPU kernel's portable build calls.
//
// The table (device pointers, sizes, per-tensor step scalars) is the kernel's parameter
// (__grid_constant__, up to 32 KB: CUDA 12.1+ on sm_70+), so a launch needs no device allocation
// and no host-to-device copy, and nothing synchronises. A table holds kSlots tensors (499 Adam
// tensors, 665 SGD): larger models take one launch per kSlots parameters.
#include <vector>

#include "common.cuh"
#include "forgegrad/cuda_api.h"
#include "forgegrad/cuda_pointwise.h"
#include "forgegrad/hd/optim.h"

namespace fg::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kParamBytes = 32000;  // under the 32764-byte kernel parameter limit

// A tensor of the launch: the caller's entry plus the index of its first chunk in this launch.
template <class Entry>
struct Slot {
  Entry t;
  int64_t first_chunk;
};

template <class Entry>
struct Table {
  static constexpr int kSlots = static_cast<int>((kParamBytes - 64) / sizeof(Slot<Entry>));
  int count;
  Slot<Entry> slots[kSlots];
};
static_assert(sizeof(Table<AdamTensor>) <= kParamBytes && sizeof(Table<SgdTensor>) <= kParamBytes,
              "optimizer tables must fit the kernel parameter space");

// The tensor holding chunk c: the last i with slots[i].first_chunk <= c (empty tensors, whose first
// chunk equals the next one's, are skipped this way).
template <class Entry>
__device__ const Slot<Entry>& slot_of(const Table<Entry>& table, int64_t c) {
  int lo = 0, hi = table.count - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (table.slots[mid].first_chunk <= c)
      lo = mid;
    else
      hi = mid - 1;
  }
  return table.slots[lo];
}

template <bool kAmsgrad>
__global__ void __launch_bounds__(kThreads)
    adam_chunks(const __grid_constant__ Table<AdamTensor> table, const hd::AdamParams c) {
  const Slot<AdamTensor>& s = slot_of(table, blockIdx.x);
  const AdamTensor& t = s.t;
  const int64_t e0 = (static_cast<int64_t>(blockIdx.x) - s.first_chunk) * kOptimChunk;
  const int64_t e1 = e0 + kOptimChunk < t.n ? e0 + kOptimChunk : t.n;
  for (int64_t i = e0 + threadIdx.x; i < e1; i += kThreads) {
    float p = t.param[i], m = t.exp_avg[i], v = t.exp_avg_sq[i];
    float vm = kAmsgrad ? t.max_exp_avg_sq[i] : 0.0f;
    hd::adam_update(p, t.grad[i], m, v, vm, kAmsgrad, c, t.step_size, t.bias_correction2_sqrt);
    t.param[i] = p;
    t.exp_avg[i] = m;
    t.exp_avg_sq[i] = v;
    if (kAmsgrad) t.max_exp_avg_sq[i] = vm;
  }
}

__global__ void __launch_bounds__(kThreads)
    sgd_chunks(const __grid_constant__ Table<SgdTensor> table, const hd::SgdParams c) {
  const Slot<SgdTensor>& s = slot_of(table, blockIdx.x);
  const SgdTensor& t = s.t;
  const int64_t e0 = (static_cast<int64_t>(blockIdx.x) - s.first_chunk) * kOptimChunk;
  const int64_t e1 = e0 + kOptimChunk < t.n ? e0 + kOptimChunk : t.n;
  const bool mom = c.use_momentum;
  for (int64_t i = e0 + threadIdx.x; i < e1; i += kThreads) {
    float p = t.param[i];
    float buf = (mom && !t.init_buffer) ? t.momentum_buffer[i] : 0.0f;
    hd::sgd_update(p, t.grad[i], buf, t.init_buffer, c);
    t.param[i] = p;
    if (mom) t.momentum_buffer[i] = buf;
  }
}

// Fills tables of up to kSlots non-empty tensors and calls launch(table, chunks) for each.
template <class Entry, class Launch>
std::string run_chunked(const Entry* tensors, int64_t count, Launch&& launch) {
  constexpr int64_t kMaxChunks = 0x7fffffff;  // grid.x limit
  Table<Entry> table;
  table.count = 0;
  int64_t chunks = 0;
  auto flush = [&]() -> std::string {
    if (table.count == 0) return std::string();
    launch(table, static_cast<unsigned>(chunks));
    table.count = 0;
    chunks = 0;
    return launch_status();
  };
  for (int64_t i = 0; i < count; ++i) {
    const int64_t n = tensors[i].n > 0 ? (tensors[i].n + kOptimChunk - 1) / kOptimChunk : 0;
    if (n == 0) continue;
    if (n > kMaxChunks) return "a tensor of " + std::to_string(tensors[i].n) + " elements is too large for one launch";
    if (table.count == Table<Entry>::kSlots || chunks + n > kMaxChunks) {
      std::string err = flush();
      if (!err.empty()) return err;
    }
    table.slots[table.count++] = Slot<Entry>{tensors[i], chunks};
    chunks += n;
  }
  return flush();
}

}  // namespace

std::string adam_multi_tensor(const AdamTensor* tensors, int64_t count, const AdamHyper& h) {
  const hd::AdamParams c = hd::adam_params(h.exp_avg_weight, h.beta2, h.exp_avg_sq_weight, h.eps, h.weight_decay,
                                           h.param_scale, h.decoupled, h.maximize);
  return run_chunked(tensors, count, [&](const Table<AdamTensor>& table, unsigned blocks) {
    if (h.amsgrad)
      adam_chunks<true><<<blocks, kThreads, 0, current_stream()>>>(table, c);
    else
      adam_chunks<false><<<blocks, kThreads, 0, current_stream()>>>(table, c);
  });
}

std::string sgd_multi_tensor(const SgdTensor* tensors, int64_t count, const SgdHyper& h) {
  const hd::SgdParams c =
      hd::sgd_params(h.neg_lr, h.momentum, h.one_minus_dampening, h.weight_decay, h.nesterov, h.maximize);
  return run_chunked(tensors, count, [&](const Table<SgdTensor>& table, unsigned blocks) {
    sgd_chunks<<<blocks, kThreads, 0, current_stream()>>>(table, c);
  });
}

// The single-tensor entry point of cuda_api.h (forgegrad.cuda.adam_step): the same kernel, with
// its scalars in the form the multi-tensor table takes.
std::string adam_step(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, bool decoupled, float bias_correction1,
                      float bias_correction2_sqrt) {
  AdamTensor t{param, grad, exp_avg, exp_avg_sq, nullptr, n, lr / bias_correction1, bias_correction2_sqrt};
  AdamHyper h;
  h.exp_avg_weight = 1.0f - beta1;
  h.beta2 = beta2;
  h.exp_avg_sq_weight = 1.0f - beta2;
  h.eps = eps;
  h.weight_decay = decoupled ? 0.0f : weight_decay;
  h.param_scale = decoupled ? 1.0f - lr * weight_decay : 1.0f;
  h.decoupled = decoupled;
  h.maximize = false;
  h.amsgrad = false;
  return adam_multi_tensor(&t, 1, h);
}

}  // namespace fg::cuda
