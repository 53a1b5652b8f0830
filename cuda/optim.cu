// Multi-tensor fused optimizer updates: one launch updates every parameter. Tensors are cut into
// chunks of kOptimChunk elements; block k updates chunk k, finding its tensor by a binary search over
// the table's chunk offsets (as the CPU kernel's BlockIndex). The per-element math is the shared
// host/device code of forgegrad/hd/optim.h, the same functions the CPU kernel's portable build calls.
//
// The table (device pointers, sizes, per-tensor step scalars) is copied to a stream-ordered device
// allocation (cudaMallocAsync) and freed the same way after the launch: nothing synchronises.
#include <vector>

#include "common.cuh"
#include "forgegrad/cuda_api.h"
#include "forgegrad/cuda_pointwise.h"
#include "forgegrad/hd/optim.h"

namespace fg::cuda {
namespace {

constexpr int kThreads = 256;

// A tensor of the launch: the caller's entry plus the index of its first chunk.
template <class Entry>
struct Slot {
  Entry t;
  int64_t first_chunk;
};

// The tensor holding chunk c: the last i with slots[i].first_chunk <= c (empty tensors, whose first
// chunk equals the next one's, are skipped this way).
template <class Entry>
__device__ const Slot<Entry>& slot_of(const Slot<Entry>* slots, int64_t count, int64_t c) {
  int64_t lo = 0, hi = count - 1;
  while (lo < hi) {
    int64_t mid = (lo + hi + 1) / 2;
    if (slots[mid].first_chunk <= c)
      lo = mid;
    else
      hi = mid - 1;
  }
  return slots[lo];
}

template <bool kAmsgrad>
__global__ void __launch_bounds__(kThreads)
    adam_chunks(const Slot<AdamTensor>* slots, int64_t count, hd::AdamParams c) {
  const Slot<AdamTensor>& s = slot_of(slots, count, blockIdx.x);
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

__global__ void __launch_bounds__(kThreads) sgd_chunks(const Slot<SgdTensor>* slots, int64_t count, hd::SgdParams c) {
  const Slot<SgdTensor>& s = slot_of(slots, count, blockIdx.x);
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

// Builds the slot table on the host, copies it to the device on the stream and launches
// launch(device_slots, count, total_chunks); frees the device table stream-ordered.
template <class Entry, class Launch>
std::string run_chunked(const Entry* tensors, int64_t count, Launch&& launch) {
  if (count <= 0) return std::string();
  std::vector<Slot<Entry>> slots(static_cast<size_t>(count));
  int64_t total = 0;
  for (int64_t i = 0; i < count; ++i) {
    slots[i] = Slot<Entry>{tensors[i], total};
    total += tensors[i].n > 0 ? (tensors[i].n + kOptimChunk - 1) / kOptimChunk : 0;
  }
  if (total == 0) return std::string();
  if (total > 0x7fffffff) return "too many elements for one launch (" + std::to_string(total) + " chunks)";
  cudaStream_t stream = current_stream();
  void* dev = nullptr;
  const size_t bytes = sizeof(Slot<Entry>) * slots.size();
  std::string err = status(cudaMallocAsync(&dev, bytes, stream));
  if (!err.empty()) return err;
  // From pageable memory the copy is staged before the call returns, so `slots` may go away.
  err = status(cudaMemcpyAsync(dev, slots.data(), bytes, cudaMemcpyHostToDevice, stream));
  if (err.empty()) {
    launch(static_cast<const Slot<Entry>*>(dev), count, static_cast<unsigned>(total), stream);
    err = launch_status();
  }
  std::string freed = status(cudaFreeAsync(dev, stream));
  return err.empty() ? freed : err;
}

}  // namespace

std::string adam_multi_tensor(const AdamTensor* tensors, int64_t count, const AdamHyper& h) {
  const hd::AdamParams c = hd::adam_params(h.exp_avg_weight, h.beta2, h.exp_avg_sq_weight, h.eps, h.weight_decay,
                                           h.param_scale, h.decoupled, h.maximize);
  return run_chunked(tensors, count, [&](const Slot<AdamTensor>* slots, int64_t n, unsigned blocks, cudaStream_t s) {
    if (h.amsgrad)
      adam_chunks<true><<<blocks, kThreads, 0, s>>>(slots, n, c);
    else
      adam_chunks<false><<<blocks, kThreads, 0, s>>>(slots, n, c);
  });
}

std::string sgd_multi_tensor(const SgdTensor* tensors, int64_t count, const SgdHyper& h) {
  const hd::SgdParams c =
      hd::sgd_params(h.neg_lr, h.momentum, h.one_minus_dampening, h.weight_decay, h.nesterov, h.maximize);
  return run_chunked(tensors, count, [&](const Slot<SgdTensor>* slots, int64_t n, unsigned blocks, cudaStream_t s) {
    sgd_chunks<<<blocks, kThreads, 0, s>>>(slots, n, c);
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
