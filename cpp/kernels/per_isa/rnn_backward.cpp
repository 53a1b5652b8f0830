// Backward through time for LSTM / GRU / RNN (one layer, one direction). See forgegrad/rnn.h.
//
// Steps run in reverse processing order. Per step: one fused gate-gradient pass (split over panels
// of hidden units) writes dGates_t, then the recurrent matmul dh_{t-1} = dGates_t @ W_hh (split over
// panels of output units). The gate-gradient math is forgegrad/hd/rnn_cells.h (shared with the
// CUDA kernels): the portable build calls it per element, the AVX builds compute the same on vectors. The weight, input
// and bias gradients come after the loop from GEMMs and column sums over all T*B rows of dGates, so their summation
// order is fixed.
#include "forgegrad/gemm.h"
#include "forgegrad/hd/rnn_cells.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "forgegrad/rnn.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {

namespace {

using namespace rnn_detail;

// x * (1 - x) and 1 - x^2: derivatives of sigmoid and tanh from their outputs.
inline vf dsig(vf s) { return vfnmadd(s, s, s); }
inline vf dtanh(vf t) { return vfnmadd(t, t, vset1(1.0f)); }

struct StepIn {
  int64_t B, H, j0;
  int nc;
  const float* gy;  // (B, H) grad of y_t or null
  const float* dh_in;  // (B, H) gradient flowing into h_t from step t+1 (or grad_hn)
};

// The loop every cell gradient runs: for each row b, row(b) sets up that row's pointers and returns
// the per-vector body, called for units [j0, j0 + nc) in vectors of n <= W lanes with dh = dL/dh_t
// (dh_in + gy) of those lanes. A template, so each cell's loop compiles as if written out.
template <class Row>
inline void for_each_unit(const StepIn& s, Row row) {
  for (int64_t b = 0; b < s.B; ++b) {
    auto body = row(b);
    const float* dhb = s.dh_in + b * s.H;
    const float* gyb = s.gy ? s.gy + b * s.H : nullptr;
    for (int64_t j = s.j0; j < s.j0 + s.nc; j += W) {
      int n = s.j0 + s.nc - j < W ? static_cast<int>(s.j0 + s.nc - j) : W;
      vf dh = vload_upto(dhb + j, n);
      if (gyb) dh = vadd(dh, vload_upto(gyb + j, n));
      body(j, n, dh);
    }
  }
}

// LSTM: gates (B, 4H) = i,f,g,o; c (B, H) = c_t; c_prev; dc (B, H) in: dL/dc_t from later steps,
// out: dL/dc_{t-1}. Writes dG (B, 4H) = gradients of the pre-activations.
void lstm_cell_grad(const StepIn& s, const float* gates, const float* c, const float* c_prev, float* dc, float* dG) {
  const int64_t H = s.H, G = 4 * H;
  for_each_unit(s, [&](int64_t b) {
    const float* gi = gates + b * G;
    float* di = dG + b * G;
    const float* cb = c + b * H;
    const float* cpb = c_prev + b * H;
    float* dcb = dc + b * H;
    return [=](int64_t j, int n, vf dh) {
#if defined(FG_SIMD_PORTABLE)
      (void)n;
      hd::lstm_backward(gi[j], gi[H + j], gi[2 * H + j], gi[3 * H + j], cb[j], cpb[j], dh, dcb[j], di[j], di[H + j],
                        di[2 * H + j], di[3 * H + j], dcb[j]);
#else
      vf i = vload_upto(gi + j, n), f = vload_upto(gi + H + j, n);
      vf g = vload_upto(gi + 2 * H + j, n), o = vload_upto(gi + 3 * H + j, n);
      vf tc = vtanh(vload_upto(cb + j, n));
      vf dct = vfmadd(vmul(dh, o), dtanh(tc), vload_upto(dcb + j, n));
      vstore_upto(di + j, vmul(vmul(dct, g), dsig(i)), n);
      vstore_upto(di + H + j, vmul(vmul(dct, vload_upto(cpb + j, n)), dsig(f)), n);
      vstore_upto(di + 2 * H + j, vmul(vmul(dct, i), dtanh(g)), n);
      vstore_upto(di + 3 * H + j, vmul(vmul(dh, tc), dsig(o)), n);
      vstore_upto(dcb + j, vmul(dct, f), n);
#endif
    };
  });
}

// GRU: gates (B, 3H) = r,z,n; hn (B, H) = W_hn h + b_hn; h_prev. Writes dGi (B, 3H) (grad of
// W_i x + b_i), dGh (B, 3H) (grad of W_h h + b_h) and dh_direct = dh * z (B, H).
void gru_cell_grad(const StepIn& s, const float* gates, const float* hn, const float* h_prev, float* dGi, float* dGh,
                   float* dh_direct) {
  const int64_t H = s.H, G = 3 * H;
  for_each_unit(s, [&](int64_t b) {
    const float* gr = gates + b * G;
    float* dxi = dGi + b * G;
    float* dhh = dGh + b * G;
    const float* hnb = hn + b * H;
    const float* hpb = h_prev + b * H;
    float* dd = dh_direct + b * H;
    return [=](int64_t j, int n, vf dh) {
#if defined(FG_SIMD_PORTABLE)
      (void)n;
      float dr, dz, dn, dhn;
      hd::gru_backward(gr[j], gr[H + j], gr[2 * H + j], hnb[j], hpb[j], dh, dr, dz, dn, dhn, dd[j]);
      dxi[j] = dhh[j] = dr;
      dxi[H + j] = dhh[H + j] = dz;
      dxi[2 * H + j] = dn;
      dhh[2 * H + j] = dhn;
#else
      vf r = vload_upto(gr + j, n), z = vload_upto(gr + H + j, n), nn = vload_upto(gr + 2 * H + j, n);
      vf dn = vmul(vmul(dh, vsub(vset1(1.0f), z)), dtanh(nn));    // grad of n's pre-activation
      vf dz = vmul(vmul(dh, vsub(vload_upto(hpb + j, n), nn)), dsig(z));
      vf dr = vmul(vmul(dn, vload_upto(hnb + j, n)), dsig(r));
      vstore_upto(dxi + j, dr, n);
      vstore_upto(dxi + H + j, dz, n);
      vstore_upto(dxi + 2 * H + j, dn, n);
      vstore_upto(dhh + j, dr, n);
      vstore_upto(dhh + H + j, dz, n);
      vstore_upto(dhh + 2 * H + j, vmul(dn, r), n);
      vstore_upto(dd + j, vmul(dh, z), n);
#endif
    };
  });
}

// Elman: h (B, H) = act(pre). Writes dG (B, H) = grad of pre.
void plain_cell_grad(const StepIn& s, bool relu, const float* h, float* dG) {
  const int64_t H = s.H;
  for_each_unit(s, [&](int64_t b) {
    const float* hb = h + b * H;
    float* d = dG + b * H;
    return [=](int64_t j, int n, vf dh) {
#if defined(FG_SIMD_PORTABLE)
      (void)n;
      d[j] = hd::rnn_backward(hb[j], dh, relu);
#else
      vf hv = vload_upto(hb + j, n);
      vf g = relu ? vselect_gt(hv, vzero(), dh, vzero()) : vmul(dh, dtanh(hv));
      vstore_upto(d + j, g, n);
#endif
    };
  });
}

}  // namespace

void rnn_backward(const RnnBackwardArgs& a) {
  const int64_t T = a.T, B = a.B, I = a.I, H = a.H;
  const int G = rnn_num_gates(a.mode);
  const int64_t GH = G * H;
  const bool lstm = a.mode == RnnMode::lstm, gru = a.mode == RnnMode::gru;
  if (T <= 0 || B <= 0 || H <= 0) return;

  // dGi: gradient of the input projections (T, B, GH); GRU also needs dGh for the hidden ones
  // (they differ only in the n gate, where dGh = dGi * r).
  AlignedBuffer dgi_buf(static_cast<size_t>(T * B * GH));
  AlignedBuffer dgh_buf(static_cast<size_t>(gru ? T * B * GH : 0));
  float* dGi = dgi_buf.data();
  float* dGh = gru ? dgh_buf.data() : dGi;

  // W_hh (GH, H) packed as the right operand of dG_t (B, GH) @ W_hh: panels of output units.
  const int64_t np = num_panels(H);
  const int NR = panel_width();
  const int64_t panel = GH * NR;
  const bool small = B <= kSmallBatch;  // small batches read W_hh as stored
  AlignedBuffer packed(static_cast<size_t>(small ? 0 : np * panel));
  if (!small) pack_plain(a.w_hh, H, GH, H, packed.data());
  AlignedBuffer whh_copy;
  int64_t ldw = H;
  const float* w_hh = small ? aligned_rows(a.w_hh, GH, H, H, T, whh_copy, ldw) : a.w_hh;

  // dh ping-pong (2, B, H), dc (B, H).
  AlignedBuffer state(static_cast<size_t>((lstm ? 3 : 2) * B * H));
  float* dh_in = state.data();
  float* dh_out = dh_in + B * H;
  float* dc = lstm ? dh_out + B * H : nullptr;
  if (a.grad_hn)
    std::memcpy(dh_in, a.grad_hn, sizeof(float) * B * H);
  else
    std::memset(dh_in, 0, sizeof(float) * B * H);
  if (lstm) {
    if (a.grad_cn)
      std::memcpy(dc, a.grad_cn, sizeof(float) * B * H);
    else
      std::memset(dc, 0, sizeof(float) * B * H);
  }

  const int64_t nrc = small ? 1 : row_chunks(np, B, region_work(G * B * H, H));
  // Tasks: the cell gradient of (B / nrc) rows x NR units (~ 16 operations an element), and the
  // product of those rows with a GH x NR panel.
  const int64_t rows = (B + nrc - 1) / nrc;
  const int64_t cell_grain = grain_for_work(16 * G * rows * NR), matmul_grain = grain_for_work(rows * NR * GH);
  for (int64_t s = T - 1; s >= 0; --s) {
    const int64_t t = a.reverse ? T - 1 - s : s;
    const int64_t tp = a.reverse ? t + 1 : t - 1;
    const float* h_prev = s == 0 ? a.h0 : a.y + tp * B * H;
    const float* gy = a.grad_y ? a.grad_y + t * B * H : nullptr;
    float* dgi_t = dGi + t * B * GH;
    float* dgh_t = dGh + t * B * GH;
    // Tasks are (hidden-unit panel, row chunk) pairs, as in the forward pass.
    parallel_for(np * nrc, cell_grain, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t u = i / nrc, rc = i % nrc;
        const int64_t r0 = B * rc / nrc, nb = B * (rc + 1) / nrc - r0;
        StepIn in{nb,
                  H,
                  u * NR,
                  static_cast<int>(H - u * NR < NR ? H - u * NR : NR),
                  gy ? gy + r0 * H : nullptr,
                  dh_in + r0 * H};
        const float* gates_t = a.gates ? a.gates + (t * B + r0) * GH : nullptr;
        if (lstm) {
          const float* c_prev = s == 0 ? a.c0 : a.cells + tp * B * H;
          lstm_cell_grad(in, gates_t, a.cells + (t * B + r0) * H, c_prev + r0 * H, dc + r0 * H, dgi_t + r0 * GH);
        } else if (gru) {
          gru_cell_grad(in, gates_t, a.hn_lin + (t * B + r0) * H, h_prev + r0 * H, dgi_t + r0 * GH, dgh_t + r0 * GH,
                        dh_out + r0 * H);
        } else {
          plain_cell_grad(in, a.mode == RnnMode::rnn_relu, a.y + (t * B + r0) * H, dgi_t + r0 * GH);
        }
      }
    });
    // dh_{t-1} = (GRU: dh * z) + dGh_t @ W_hh
    parallel_for(np * nrc, matmul_grain, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t u = i / nrc, rc = i % nrc;
        const int64_t r0 = B * rc / nrc, nb = B * (rc + 1) / nrc - r0;
        const int64_t j0 = u * NR;
        const int nc = static_cast<int>(H - j0 < NR ? H - j0 : NR);
        float* out = dh_out + r0 * H + j0;
        const float* dg = dgh_t + r0 * GH;
        if (small)
          strided_matmul(dg, GH, nb, w_hh + j0, ldw, GH, nc, gru ? out : nullptr, H, out, H);
        else
          panel_matmul(dg, GH, nb, packed.data() + u * panel, GH, nc, gru ? out : nullptr, H, out, H);
      }
    });
    float* tmp = dh_in;
    dh_in = dh_out;
    dh_out = tmp;
  }
  std::memcpy(a.gh0, dh_in, sizeof(float) * B * H);
  if (lstm) std::memcpy(a.gc0, dc, sizeof(float) * B * H);

  // Whole-sequence gradients from GEMMs over all T*B rows.
  // gx (TB, I) = dGi (TB, GH) @ w_ih (GH, I)
  FG_ISA_NS::sgemm(false, false, T * B, I, GH, 1.0f, dGi, GH, a.w_ih, I, 0.0f, a.gx, I);
  // Weight gradients: gw_ih (GH, I) = dGi^T @ x (TB, I) and gw_hh (GH, H) = dGh^T @ H_prev, where
  // H_prev (TB, H) holds the h_{t-1} each step consumed. LSTM and RNN have dGh == dGi, so both come
  // from one GEMM against [x | H_prev] (TB, I + H): dG^T is then read (and packed) once.
  auto h_prev_row = [&](int64_t t) {  // (B, H) block consumed at time t
    const int64_t s = a.reverse ? T - 1 - t : t;
    const int64_t tp = a.reverse ? t + 1 : t - 1;
    return s == 0 ? a.h0 : a.y + tp * B * H;
  };
  if (!gru) {
    const int64_t N = I + H;
    AlignedBuffer xh(static_cast<size_t>(T * B * N));
    AlignedBuffer gw(static_cast<size_t>(GH * N));
    parallel_for_work(T, B * (I + H), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const float* hp = h_prev_row(t);
        for (int64_t b = 0; b < B; ++b) {
          float* row = xh.data() + (t * B + b) * N;
          std::memcpy(row, a.x + (t * B + b) * I, sizeof(float) * I);
          std::memcpy(row + I, hp + b * H, sizeof(float) * H);
        }
      }
    });
    FG_ISA_NS::sgemm(true, false, GH, N, T * B, 1.0f, dGi, GH, xh.data(), N, 0.0f, gw.data(), N);
    parallel_for_work(GH, I + H, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        std::memcpy(a.gw_ih + r * I, gw.data() + r * N, sizeof(float) * I);
        std::memcpy(a.gw_hh + r * H, gw.data() + r * N + I, sizeof(float) * H);
      }
    });
  } else {
    FG_ISA_NS::sgemm(true, false, GH, I, T * B, 1.0f, dGi, GH, a.x, I, 0.0f, a.gw_ih, I);
    AlignedBuffer hp(static_cast<size_t>(T * B * H));
    for (int64_t t = 0; t < T; ++t) std::memcpy(hp.data() + t * B * H, h_prev_row(t), sizeof(float) * B * H);
    FG_ISA_NS::sgemm(true, false, GH, H, T * B, 1.0f, dGh, GH, hp.data(), H, 0.0f, a.gw_hh, H);
  }
  if (a.gb_ih) column_sums(dGi, T * B, GH, a.gb_ih);
  if (a.gb_hh) column_sums(dGh, T * B, GH, a.gb_hh);
}

}  // namespace FG_ISA_NS
}  // namespace fg
