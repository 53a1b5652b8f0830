// Host entry points of the CUDA kernels built on the shared host/device math (forgegrad/hd/):
// activations (cuda/elementwise.cu), LSTM / GRU / Elman layers (cuda/rnn_cells.cu) and the
// multi-tensor optimizer updates (cuda/optim.cu). Every pointer is a device pointer; kernels launch
// on fg::cuda::current_stream() and never synchronise. Each function returns "" on success and the
// CUDA error text otherwise. Defined only in a CUDA build (FORGEGRAD_WITH_CUDA).
#pragma once
#include <cstdint>
#include <string>

#include "forgegrad/optim.h"
#include "forgegrad/rnn.h"

namespace fg::cuda {

// y[i] = act(x[i]) / dx[i] = g[i] act'(saved[i]) for an fg::ActOp code (forgegrad/activation.h);
// saved is y for relu, sigmoid, tanh and x for the others. y may alias x, dx may alias g.
std::string act_forward(int op, const float* x, float* y, int64_t n, float alpha);
std::string act_backward(int op, const float* g, const float* saved, float* dx, int64_t n, float alpha);

// One recurrent layer in one direction, the contract of the CPU fg::rnn_forward / fg::rnn_backward
// (forgegrad/rnn.h, same layouts and saved buffers) on device arrays: the input projection of all
// T*B rows is one SGEMM; each step adds h_{t-1} W_hh^T with an SGEMM (beta = 1) and then runs one
// fused gate kernel (the hd cell functions). Backward runs one gate-gradient kernel and one SGEMM
// per step, and the weight / input / bias gradients as whole-sequence SGEMMs and column sums.
std::string rnn_layer_forward(const RnnForwardArgs& a);
std::string rnn_layer_backward(const RnnBackwardArgs& a);

// The fused gate kernels alone (one time step, rows [0, B), units [0, H)), for tests and callers
// that run their own recurrence. Layouts as forgegrad/hd/rnn_cells.h and the CPU kernel:
// LSTM gates (B, 4H) [i|f|g|o] pre-activations in, activations out; GRU xg (B, 3H) W_i x + b_i in,
// r,z,n out; hp (B, 3H) = W_h h + b_h; hn_save (B, H) or null receives hp's n part.
std::string lstm_cell_forward(int64_t B, int64_t H, float* gates, const float* c_prev, float* c_out, float* h_out);
std::string gru_cell_forward(int64_t B, int64_t H, float* xg, const float* hp, const float* h_prev, float* h_out,
                             float* hn_save);
// dh = dh_in + gy (gy may be null). LSTM: dc (B, H) in dL/dc_t, out dL/dc_{t-1}; dG (B, 4H) out.
// GRU: dGi, dGh (B, 3H) and dh_direct = dh z (B, H) out.
std::string lstm_cell_backward(int64_t B, int64_t H, const float* gates, const float* c, const float* c_prev,
                               const float* dh_in, const float* gy, float* dc, float* dG);
std::string gru_cell_backward(int64_t B, int64_t H, const float* gates, const float* hn, const float* h_prev,
                              const float* dh_in, const float* gy, float* dGi, float* dGh, float* dh_direct);

// One Adam/AdamW (SGD) step over every tensor of the table in one kernel launch (per ~500 tensors):
// tensors are cut into chunks of kOptimChunk elements and each thread block updates one chunk (it
// finds its tensor by a binary search over the chunk offsets). The table of device pointers travels
// as the kernel's parameter, so the host array may be freed on return and nothing synchronises. The
// math is hd::adam_update / hd::sgd_update, with the constants the CPU kernels take (optim.h).
// Every tensor must be on the current device.
constexpr int64_t kOptimChunk = 4096;
std::string adam_multi_tensor(const AdamTensor* tensors, int64_t count, const AdamHyper& h);
std::string sgd_multi_tensor(const SgdTensor* tensors, int64_t count, const SgdHyper& h);

}  // namespace fg::cuda
