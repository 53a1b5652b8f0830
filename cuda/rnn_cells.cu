// LSTM / GRU / Elman layers on the GPU: the host runs the time loop; per step an SGEMM adds the
// recurrent product h_{t-1} W_hh^T (beta = 1) to the precomputed input projections, then one fused
// gate kernel applies the cell update. The gate math is forgegrad/hd/rnn_cells.h, the functions the
// CPU kernel's portable build calls, with the CPU kernel's layouts (forgegrad/rnn.h), so the saved
// buffers mean the same on both devices.
//
// Scratch buffers come from the device's caching allocator; nothing here synchronises. An allocation
// that fails throws (fg::OutOfMemoryError when the device is full), like every device allocation.
#include "common.cuh"
#include "forgegrad/cuda_api.h"
#include "forgegrad/cuda_pointwise.h"
#include "forgegrad/hd/rnn_cells.h"

namespace fg::cuda {
namespace {

constexpr int kThreads = 256;

#define FG_GRID_STRIDE(i, n)                                                             \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// ---- gate kernels: one thread per (row, unit) ---------------------------------------------------------
__global__ void lstm_fwd(int64_t B, int64_t H, float* __restrict__ g, const float* __restrict__ c_prev,
                         float* __restrict__ c_out, float* __restrict__ h_out) {
  FG_GRID_STRIDE(k, B * H) {
    const int64_t b = k / H, j = k - b * H;
    float* r = g + b * 4 * H;
    float i = r[j], f = r[H + j], z = r[2 * H + j], o = r[3 * H + j], c, h;
    hd::lstm_forward(i, f, z, o, c_prev[k], c, h);
    r[j] = i;
    r[H + j] = f;
    r[2 * H + j] = z;
    r[3 * H + j] = o;
    c_out[k] = c;
    h_out[k] = h;
  }
}

__global__ void gru_fwd(int64_t B, int64_t H, float* __restrict__ xg, const float* __restrict__ hp,
                        const float* __restrict__ h_prev, float* __restrict__ h_out, float* __restrict__ hn_save) {
  FG_GRID_STRIDE(k, B * H) {
    const int64_t b = k / H, j = k - b * H;
    float* x = xg + b * 3 * H;
    const float* p = hp + b * 3 * H;
    const float hn = p[2 * H + j];
    float r, z, n, h;
    hd::gru_forward(x[j], x[H + j], x[2 * H + j], p[j], p[H + j], hn, h_prev[k], r, z, n, h);
    x[j] = r;
    x[H + j] = z;
    x[2 * H + j] = n;
    h_out[k] = h;
    if (hn_save) hn_save[k] = hn;
  }
}

__global__ void plain_fwd(int64_t n, bool relu, const float* __restrict__ pre, float* __restrict__ h_out) {
  FG_GRID_STRIDE(k, n) h_out[k] = hd::rnn_forward(pre[k], relu);
}

__global__ void lstm_bwd(int64_t B, int64_t H, const float* __restrict__ gates, const float* __restrict__ c,
                         const float* __restrict__ c_prev, const float* __restrict__ dh_in,
                         const float* __restrict__ gy, float* __restrict__ dc, float* __restrict__ dG) {
  FG_GRID_STRIDE(k, B * H) {
    const int64_t b = k / H, j = k - b * H;
    const float* g = gates + b * 4 * H;
    float* d = dG + b * 4 * H;
    float dh = dh_in[k];
    if (gy) dh = dh + gy[k];
    float di, df, dz, d_o, dcp;
    hd::lstm_backward(g[j], g[H + j], g[2 * H + j], g[3 * H + j], c[k], c_prev[k], dh, dc[k], di, df, dz, d_o, dcp);
    d[j] = di;
    d[H + j] = df;
    d[2 * H + j] = dz;
    d[3 * H + j] = d_o;
    dc[k] = dcp;
  }
}

__global__ void gru_bwd(int64_t B, int64_t H, const float* __restrict__ gates, const float* __restrict__ hn,
                        const float* __restrict__ h_prev, const float* __restrict__ dh_in, const float* __restrict__ gy,
                        float* __restrict__ dGi, float* __restrict__ dGh, float* __restrict__ dh_direct) {
  FG_GRID_STRIDE(k, B * H) {
    const int64_t b = k / H, j = k - b * H;
    const float* g = gates + b * 3 * H;
    float dh = dh_in[k];
    if (gy) dh = dh + gy[k];
    float dr, dz, dn, dhn, dd;
    hd::gru_backward(g[j], g[H + j], g[2 * H + j], hn[k], h_prev[k], dh, dr, dz, dn, dhn, dd);
    float* xi = dGi + b * 3 * H;
    float* hh = dGh + b * 3 * H;
    xi[j] = dr;
    xi[H + j] = dz;
    xi[2 * H + j] = dn;
    hh[j] = dr;
    hh[H + j] = dz;
    hh[2 * H + j] = dhn;
    dh_direct[k] = dd;
  }
}

__global__ void plain_bwd(int64_t n, bool relu, const float* __restrict__ h, const float* __restrict__ dh_in,
                          const float* __restrict__ gy, float* __restrict__ dG) {
  FG_GRID_STRIDE(k, n) {
    float dh = dh_in[k];
    if (gy) dh = dh + gy[k];
    dG[k] = hd::rnn_backward(h[k], dh, relu);
  }
}

// ---- helpers ------------------------------------------------------------------------------------------
// out (rows, N) = b1 + b2 broadcast over rows (null = 0), added in the CPU kernel's order.
__global__ void bias_rows(int64_t rows, int64_t N, const float* b1, const float* b2, float* out) {
  FG_GRID_STRIDE(k, rows * N) {
    const int64_t n = k % N;
    float v = b1 ? b1[n] : 0.0f;
    if (b2) v = v + b2[n];
    out[k] = v;
  }
}

// out[n] = sum over rows r (in order) of X[r * N + n]: one thread per column, a fixed order.
__global__ void column_sums(const float* __restrict__ X, int64_t R, int64_t N, float* __restrict__ out) {
  FG_GRID_STRIDE(n, N) {
    float s = 0.0f;
    for (int64_t r = 0; r < R; ++r) s += X[r * N + n];
    out[n] = s;
  }
}

unsigned grid(int64_t n) { return blocks_for(n, kThreads); }

// Scratch of n floats from the device's caching allocator (forgegrad/cuda_api.h device_alloc),
// returned to it when it goes out of scope. The block may be handed out again while kernels queued
// here still use it: its next owner's work runs on the same stream, so after them.
class Scratch {
 public:
  explicit Scratch(int64_t n) {
    if (n <= 0) return;
    err_ = status(cudaGetDevice(&device_));
    if (err_.empty()) p_ = static_cast<float*>(device_alloc(device_, sizeof(float) * static_cast<size_t>(n)));
  }
  ~Scratch() {
    if (p_) device_free(device_, p_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* get() const { return p_; }
  const std::string& error() const { return err_; }

 private:
  float* p_ = nullptr;
  int device_ = 0;
  std::string err_;
};

std::string copy_d2d(float* dst, const float* src, int64_t n) {
  return copy_device_to_device(dst, src, sizeof(float) * static_cast<size_t>(n));
}
std::string zero(float* dst, int64_t n) { return status(cudaMemsetAsync(dst, 0, sizeof(float) * n, current_stream())); }

#define FG_TRY(expr)                      \
  do {                                    \
    std::string fg_err_ = (expr);         \
    if (!fg_err_.empty()) return fg_err_; \
  } while (0)

}  // namespace

// ---- one step ---------------------------------------------------------------------------------------------
std::string lstm_cell_forward(int64_t B, int64_t H, float* gates, const float* c_prev, float* c_out, float* h_out) {
  if (B <= 0 || H <= 0) return std::string();
  lstm_fwd<<<grid(B * H), kThreads, 0, current_stream()>>>(B, H, gates, c_prev, c_out, h_out);
  return launch_status();
}

std::string gru_cell_forward(int64_t B, int64_t H, float* xg, const float* hp, const float* h_prev, float* h_out,
                             float* hn_save) {
  if (B <= 0 || H <= 0) return std::string();
  gru_fwd<<<grid(B * H), kThreads, 0, current_stream()>>>(B, H, xg, hp, h_prev, h_out, hn_save);
  return launch_status();
}

std::string lstm_cell_backward(int64_t B, int64_t H, const float* gates, const float* c, const float* c_prev,
                               const float* dh_in, const float* gy, float* dc, float* dG) {
  if (B <= 0 || H <= 0) return std::string();
  lstm_bwd<<<grid(B * H), kThreads, 0, current_stream()>>>(B, H, gates, c, c_prev, dh_in, gy, dc, dG);
  return launch_status();
}

std::string gru_cell_backward(int64_t B, int64_t H, const float* gates, const float* hn, const float* h_prev,
                              const float* dh_in, const float* gy, float* dGi, float* dGh, float* dh_direct) {
  if (B <= 0 || H <= 0) return std::string();
  gru_bwd<<<grid(B * H), kThreads, 0, current_stream()>>>(B, H, gates, hn, h_prev, dh_in, gy, dGi, dGh, dh_direct);
  return launch_status();
}

// ---- a whole layer ------------------------------------------------------------------------------------------
std::string rnn_layer_forward(const RnnForwardArgs& a) {
  const int64_t T = a.T, B = a.B, I = a.I, H = a.H;
  const int G = rnn_num_gates(a.mode);
  const int64_t GH = G * H;
  const bool lstm = a.mode == RnnMode::lstm, gru = a.mode == RnnMode::gru;
  if (T <= 0 || B <= 0 || H <= 0) return std::string();
  cudaStream_t s = current_stream();

  Scratch gate_scratch(a.gates ? 0 : T * B * GH);
  FG_TRY(gate_scratch.error());
  float* xg = a.gates ? a.gates : gate_scratch.get();
  // bias rows (LSTM / RNN fold b_hh in; GRU adds b_hh with the recurrent product), then x W_ih^T
  bias_rows<<<grid(T * B * GH), kThreads, 0, s>>>(T * B, GH, a.b_ih, gru ? nullptr : a.b_hh, xg);
  FG_TRY(launch_status());
  FG_TRY(sgemm(false, true, T * B, GH, I, 1.0f, a.x, I, a.w_ih, I, 1.0f, xg, GH));

  Scratch hp_buf(gru ? B * GH : 0), c_ring(lstm && !a.cells ? 2 * B * H : 0);
  FG_TRY(hp_buf.error());
  FG_TRY(c_ring.error());
  for (int64_t st = 0; st < T; ++st) {
    const int64_t t = a.reverse ? T - 1 - st : st;
    const int64_t tp = a.reverse ? t + 1 : t - 1;
    const float* h_prev = st == 0 ? a.h0 : a.y + tp * B * H;
    float* g_t = xg + t * B * GH;
    float* y_t = a.y + t * B * H;
    if (gru) {  // hp = b_hh + h_prev W_hh^T
      bias_rows<<<grid(B * GH), kThreads, 0, s>>>(B, GH, a.b_hh, nullptr, hp_buf.get());
      FG_TRY(launch_status());
      FG_TRY(sgemm(false, true, B, GH, H, 1.0f, h_prev, H, a.w_hh, H, 1.0f, hp_buf.get(), GH));
      FG_TRY(gru_cell_forward(B, H, g_t, hp_buf.get(), h_prev, y_t, a.hn_lin ? a.hn_lin + t * B * H : nullptr));
    } else {  // gates += h_prev W_hh^T
      FG_TRY(sgemm(false, true, B, GH, H, 1.0f, h_prev, H, a.w_hh, H, 1.0f, g_t, GH));
      if (lstm) {
        const float* c_prev;
        float* c_out;
        if (a.cells) {
          c_prev = st == 0 ? a.c0 : a.cells + tp * B * H;
          c_out = a.cells + t * B * H;
        } else {
          c_prev = st == 0 ? a.c0 : c_ring.get() + ((st - 1) & 1) * B * H;
          c_out = c_ring.get() + (st & 1) * B * H;
        }
        FG_TRY(lstm_cell_forward(B, H, g_t, c_prev, c_out, y_t));
      } else {
        plain_fwd<<<grid(B * H), kThreads, 0, s>>>(B * H, a.mode == RnnMode::rnn_relu, g_t, y_t);
        FG_TRY(launch_status());
      }
    }
  }
  const int64_t t_last = a.reverse ? 0 : T - 1;
  FG_TRY(copy_d2d(a.h_n, a.y + t_last * B * H, B * H));
  if (lstm) {
    const float* c_last = a.cells ? a.cells + t_last * B * H : c_ring.get() + ((T - 1) & 1) * B * H;
    FG_TRY(copy_d2d(a.c_n, c_last, B * H));
  }
  return std::string();
}

std::string rnn_layer_backward(const RnnBackwardArgs& a) {
  const int64_t T = a.T, B = a.B, I = a.I, H = a.H;
  const int G = rnn_num_gates(a.mode);
  const int64_t GH = G * H;
  const bool lstm = a.mode == RnnMode::lstm, gru = a.mode == RnnMode::gru;
  if (T <= 0 || B <= 0 || H <= 0) return std::string();
  cudaStream_t s = current_stream();

  Scratch dgi_buf(T * B * GH), dgh_buf(gru ? T * B * GH : 0), state((lstm ? 3 : 2) * B * H), hp_all(T * B * H);
  for (const Scratch* b : {&dgi_buf, &dgh_buf, &state, &hp_all}) FG_TRY(b->error());
  float* dGi = dgi_buf.get();
  float* dGh = gru ? dgh_buf.get() : dGi;
  float* dh_in = state.get();
  float* dh_out = dh_in + B * H;
  float* dc = lstm ? dh_out + B * H : nullptr;
  FG_TRY(a.grad_hn ? copy_d2d(dh_in, a.grad_hn, B * H) : zero(dh_in, B * H));
  if (lstm) FG_TRY(a.grad_cn ? copy_d2d(dc, a.grad_cn, B * H) : zero(dc, B * H));

  auto h_prev_of = [&](int64_t t) {  // the (B, H) block consumed at time t
    const int64_t st = a.reverse ? T - 1 - t : t;
    const int64_t tp = a.reverse ? t + 1 : t - 1;
    return st == 0 ? a.h0 : a.y + tp * B * H;
  };
  for (int64_t st = T - 1; st >= 0; --st) {
    const int64_t t = a.reverse ? T - 1 - st : st;
    const int64_t tp = a.reverse ? t + 1 : t - 1;
    const float* h_prev = h_prev_of(t);
    const float* gy = a.grad_y ? a.grad_y + t * B * H : nullptr;
    float* dgi_t = dGi + t * B * GH;
    float* dgh_t = dGh + t * B * GH;
    if (lstm) {
      const float* c_prev = st == 0 ? a.c0 : a.cells + tp * B * H;
      FG_TRY(lstm_cell_backward(B, H, a.gates + t * B * GH, a.cells + t * B * H, c_prev, dh_in, gy, dc, dgi_t));
    } else if (gru) {
      FG_TRY(
          gru_cell_backward(B, H, a.gates + t * B * GH, a.hn_lin + t * B * H, h_prev, dh_in, gy, dgi_t, dgh_t, dh_out));
    } else {
      plain_bwd<<<grid(B * H), kThreads, 0, s>>>(B * H, a.mode == RnnMode::rnn_relu, a.y + t * B * H, dh_in, gy, dgi_t);
      FG_TRY(launch_status());
    }
    // dh_{t-1} = (GRU: dh z) + dGh_t W_hh
    FG_TRY(sgemm(false, false, B, H, GH, 1.0f, dgh_t, GH, a.w_hh, H, gru ? 1.0f : 0.0f, dh_out, H));
    float* tmp = dh_in;
    dh_in = dh_out;
    dh_out = tmp;
  }
  FG_TRY(copy_d2d(a.gh0, dh_in, B * H));
  if (lstm) FG_TRY(copy_d2d(a.gc0, dc, B * H));

  // Whole-sequence gradients: gx = dGi W_ih; gw_ih = dGi^T x; gw_hh = dGh^T H_prev.
  FG_TRY(sgemm(false, false, T * B, I, GH, 1.0f, dGi, GH, a.w_ih, I, 0.0f, a.gx, I));
  FG_TRY(sgemm(true, false, GH, I, T * B, 1.0f, dGi, GH, a.x, I, 0.0f, a.gw_ih, I));
  for (int64_t t = 0; t < T; ++t) FG_TRY(copy_d2d(hp_all.get() + t * B * H, h_prev_of(t), B * H));
  FG_TRY(sgemm(true, false, GH, H, T * B, 1.0f, dGh, GH, hp_all.get(), H, 0.0f, a.gw_hh, H));
  if (a.gb_ih) {
    column_sums<<<grid(GH), kThreads, 0, s>>>(dGi, T * B, GH, a.gb_ih);
    FG_TRY(launch_status());
  }
  if (a.gb_hh) {
    column_sums<<<grid(GH), kThreads, 0, s>>>(dGh, T * B, GH, a.gb_hh);
    FG_TRY(launch_status());
  }
  return std::string();
}

}  // namespace fg::cuda
