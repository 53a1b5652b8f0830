// Forward through time for LSTM / GRU / RNN (one layer, one direction). See forgegrad/rnn.h.
//
// The cell math is forgegrad/hd/rnn_cells.h (shared with the CUDA kernels): the portable build
// calls it per element, the AVX builds compute the same operations on vectors.
//
// Step s processes time t = s (or T-1-s when reverse). Per step the work is split over panels of
// kRnnNR hidden units; a panel task runs the recurrent matmul for its units' columns of every gate
// and then the fused gate pass for those units, so each step is one parallel region.
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

// LSTM cell for rows [0, B), units [j0, j0 + nc). g (B, 4H): pre-activations in, activations out when
// keep (training saves them; inference skips the stores, g being scratch there).
void lstm_cell(int64_t B, int64_t H, int64_t j0, int64_t nc, float* g, const float* c_prev, float* c_out, float* h_out,
               bool keep) {
  (void)keep;  // the portable build stores through hd::lstm_forward's references
  const int64_t G = 4 * H;
  for (int64_t b = 0; b < B; ++b) {
    float* gi = g + b * G;
    float* gf = gi + H;
    float* gg = gi + 2 * H;
    float* go = gi + 3 * H;
    const float* cp = c_prev + b * H;
    float* co = c_out + b * H;
    float* ho = h_out + b * H;
#if defined(FG_SIMD_PORTABLE)
    for (int64_t j = j0; j < j0 + nc; ++j) hd::lstm_forward(gi[j], gf[j], gg[j], go[j], cp[j], co[j], ho[j]);
#else
    for (int64_t j = j0; j < j0 + nc; j += W) {
      int n = j0 + nc - j < W ? static_cast<int>(j0 + nc - j) : W;
      vf i = vsigmoid(vload_upto(gi + j, n));
      vf f = vsigmoid(vload_upto(gf + j, n));
      vf z = vtanh(vload_upto(gg + j, n));
      vf o = vsigmoid(vload_upto(go + j, n));
      vf c = vfmadd(f, vload_upto(cp + j, n), vmul(i, z));
      vf h = vmul(o, vtanh(c));
      if (keep) {
        vstore_upto(gi + j, i, n);
        vstore_upto(gf + j, f, n);
        vstore_upto(gg + j, z, n);
        vstore_upto(go + j, o, n);
      }
      vstore_upto(co + j, c, n);
      vstore_upto(ho + j, h, n);
    }
#endif
  }
}

// GRU cell. xg (B, 3H): W_i x + b_i in, r,z,n out when keep. hp (B, 3H): W_h h + b_h. hn_lin (B, H)
// or null.
void gru_cell(int64_t B, int64_t H, int64_t j0, int64_t nc, float* xg, const float* hp, const float* h_prev,
              float* h_out, float* hn_lin, bool keep) {
  (void)keep;
  const int64_t G = 3 * H;
  for (int64_t b = 0; b < B; ++b) {
    float* xr = xg + b * G;
    float* xz = xr + H;
    float* xn = xr + 2 * H;
    const float* hr = hp + b * G;
    const float* hz = hr + H;
    const float* hn = hr + 2 * H;
    const float* hpv = h_prev + b * H;
    float* ho = h_out + b * H;
    float* save_hn = hn_lin ? hn_lin + b * H : nullptr;
#if defined(FG_SIMD_PORTABLE)
    for (int64_t j = j0; j < j0 + nc; ++j) {
      float hnv = hn[j];
      hd::gru_forward(xr[j], xz[j], xn[j], hr[j], hz[j], hnv, hpv[j], xr[j], xz[j], xn[j], ho[j]);
      if (save_hn) save_hn[j] = hnv;
    }
#else
    for (int64_t j = j0; j < j0 + nc; j += W) {
      int n = j0 + nc - j < W ? static_cast<int>(j0 + nc - j) : W;
      vf r = vsigmoid(vadd(vload_upto(xr + j, n), vload_upto(hr + j, n)));
      vf z = vsigmoid(vadd(vload_upto(xz + j, n), vload_upto(hz + j, n)));
      vf hnv = vload_upto(hn + j, n);
      vf nn = vtanh(vfmadd(r, hnv, vload_upto(xn + j, n)));
      vf hv = vload_upto(hpv + j, n);
      vf h = vfmadd(z, vsub(hv, nn), nn);  // (1 - z) * n + z * h
      if (keep) {
        vstore_upto(xr + j, r, n);
        vstore_upto(xz + j, z, n);
        vstore_upto(xn + j, nn, n);
      }
      vstore_upto(ho + j, h, n);
      if (save_hn) vstore_upto(save_hn + j, hnv, n);
    }
#endif
  }
}

// Elman cell: h = tanh(pre) or relu(pre). pre (B, H).
void plain_cell(int64_t B, int64_t H, int64_t j0, int64_t nc, bool relu, const float* pre, float* h_out) {
  for (int64_t b = 0; b < B; ++b) {
    const float* p = pre + b * H;
    float* ho = h_out + b * H;
#if defined(FG_SIMD_PORTABLE)
    for (int64_t j = j0; j < j0 + nc; ++j) ho[j] = hd::rnn_forward(p[j], relu);
#else
    for (int64_t j = j0; j < j0 + nc; j += W) {
      int n = j0 + nc - j < W ? static_cast<int>(j0 + nc - j) : W;
      vf v = vload_upto(p + j, n);
      vstore_upto(ho + j, relu ? vmax(vzero(), v) : vtanh(v), n);  // NaN-propagating operand order
    }
#endif
  }
}

}  // namespace

void rnn_forward(const RnnForwardArgs& a) {
  const int64_t T = a.T, B = a.B, I = a.I, H = a.H;
  const int G = rnn_num_gates(a.mode);
  const int64_t GH = G * H;
  const bool lstm = a.mode == RnnMode::lstm, gru = a.mode == RnnMode::gru;
  const bool keep = a.gates != nullptr;  // training: the gate activations are saved for backward
  if (T <= 0 || B <= 0 || H <= 0) return;

  // Gate pre-activations of every step: training writes them into the saved buffer (turned into
  // activations in place), inference into scratch.
  AlignedBuffer scratch_gates;
  float* xg = a.gates;
  if (!xg) {
    scratch_gates.reset(static_cast<size_t>(T * B * GH));
    xg = scratch_gates.data();
  }
  // Bias rows first, then the input projection of all T*B rows as one GEMM accumulating into them.
  // LSTM/RNN fold b_hh in here too; GRU adds b_hh with the recurrent product (r scales b_hn).
  {
    AlignedBuffer bias(static_cast<size_t>(GH));
    float* bv = bias.data();
    for (int64_t n = 0; n < GH; ++n) {
      float v = a.b_ih ? a.b_ih[n] : 0.0f;
      if (!gru && a.b_hh) v += a.b_hh[n];
      bv[n] = v;
    }
    parallel_for_work(T * B, GH, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) std::memcpy(xg + r * GH, bv, sizeof(float) * GH);
    });
  }
  // x (T*B, I) @ w_ih^T (I, GH)
  FG_ISA_NS::sgemm(false, true, T * B, GH, I, 1.0f, a.x, I, a.w_ih, I, 1.0f, xg, GH);

  // W_hh^T packed per gate: panels of gate g cover columns [g*H, (g+1)*H), so a unit panel holds the
  // same hidden units in every gate. Small batches read W_hh rows directly instead.
  const bool small = B <= kSmallBatch;
  const int64_t np = num_panels(H);
  const int64_t panel = H * panel_width();  // floats per panel (K = H)
  AlignedBuffer packed(static_cast<size_t>(small ? 0 : G * np * panel));
  if (!small)
    for (int g = 0; g < G; ++g) pack_transposed(a.w_hh + g * H * H, H, H, H, packed.data() + g * np * panel);
#if defined(__AVX512F__)
  // Batch 1 over kPack16Steps steps or more: W_hh as blocks of 16 rows (rowdot_packed), packed by the
  // first step's tasks as they reach each block. The same arithmetic as rowdot_matmul, so the same
  // bits whether or not a call packs.
  const int64_t nb16 = (H + 15) / 16;
  const bool packed16 = B == 1 && T >= kPack16Steps;
  AlignedBuffer packed_rows(static_cast<size_t>(packed16 ? G * nb16 * 16 * H : 0));
#else
  const bool packed16 = false;
#endif
  AlignedBuffer whh_copy;
  int64_t ldw = H;
  const float* w_hh = small && !packed16 ? aligned_rows(a.w_hh, GH, H, H, T, whh_copy, ldw) : a.w_hh;

  AlignedBuffer scratch(static_cast<size_t>((gru ? B * GH : 0) + (lstm && !a.cells ? 2 * B * H : 0)));
  float* hp = gru ? scratch.data() : nullptr;              // GRU: W_hh h + b_hh of this step
  float* c_ring = lstm && !a.cells ? scratch.data() : nullptr;  // LSTM inference: c ping-pong

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
  // Batch 1 on one thread: per step, one sweep over all G*H rows of W_hh in storage order (alternating
  // direction, as the panel tasks below), then one cell pass over all H units. Measured on the Zen 4
  // test machine (AVX2, interleaved A/B in one process, one thread, LSTM T50 B1): 0.92-0.98x the time
  // of the panel tasks at H64 to H256, which make 4 short row runs and a cell call per 16 units.
  // Every output is computed as in the panel tasks (rowdot_matmul's arithmetic, then lstm / gru /
  // plain_cell per unit), so the results are the same bits; at more threads the panel tasks run.
  const bool sweep = small && B == 1 && threads_for(G * H * H) == 1;
#endif
  const int NR = panel_width();
  const int64_t nrc = small ? 1 : row_chunks(np, B, region_work(G * B * H, H));
  // A task: G gate products of (B / nrc) rows x NR columns x H, plus the cell.
  const int64_t step_grain = grain_for_work(G * ((B + nrc - 1) / nrc) * NR * H);
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = a.reverse ? T - 1 - s : s;
    const int64_t tp = a.reverse ? t + 1 : t - 1;
    const float* h_prev = s == 0 ? a.h0 : a.y + tp * B * H;
    float* g_t = xg + t * B * GH;
    float* y_t = a.y + t * B * H;
    const float* c_prev = nullptr;
    float* c_out = nullptr;
    if (lstm) {
      if (a.cells) {
        c_prev = s == 0 ? a.c0 : a.cells + tp * B * H;
        c_out = a.cells + t * B * H;
      } else {
        c_prev = s == 0 ? a.c0 : c_ring + ((s - 1) & 1) * B * H;
        c_out = c_ring + (s & 1) * B * H;
      }
    }
    float* hn_save = gru && a.hn_lin ? a.hn_lin + t * B * H : nullptr;
    // Tasks are (hidden-unit panel, row chunk) pairs. Odd steps walk them backwards: the weights
    // the previous step read last are still in cache (packed W_hh is 1 MiB at H = 256, the size of a
    // Zen 4 L2). Only the order of independent tasks changes; each output is computed the same way.
    const bool backwards = s & 1;
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
    if (sweep) {
      if (gru) {  // hp = W_hh h + b_hh
        rowdot_sweep(h_prev, w_hh, ldw, H, GH, a.b_hh, hp, backwards);
        gru_cell(1, H, 0, H, g_t, hp, h_prev, y_t, hn_save, keep);
      } else {  // gates += W_hh h
        rowdot_sweep(h_prev, w_hh, ldw, H, GH, g_t, g_t, backwards);
        if (lstm)
          lstm_cell(1, H, 0, H, g_t, c_prev, c_out, y_t, keep);
        else
          plain_cell(1, H, 0, H, a.mode == RnnMode::rnn_relu, g_t, y_t);
      }
      continue;
    }
#endif
    parallel_for(np * nrc, step_grain, [&](int64_t i0, int64_t i1) {
      for (int64_t ii = i0; ii < i1; ++ii) {
        const int64_t i = backwards ? i0 + i1 - 1 - ii : ii;
        const int64_t u = i / nrc, rc = i % nrc;
        const int64_t r0 = B * rc / nrc, nb = B * (rc + 1) / nrc - r0;
        const int64_t j0 = u * NR;
        const int nc = static_cast<int>(H - j0 < NR ? H - j0 : NR);
        const float* hprev = h_prev + r0 * H;
        for (int gi = 0; gi < G; ++gi) {
          const int g = backwards ? G - 1 - gi : gi;
          const float* init;
          int64_t ldi;
          float* c;
          if (gru) {  // hp = W_hh h + b_hh
            init = a.b_hh ? a.b_hh + g * H + j0 : nullptr;
            ldi = 0;
            c = hp + r0 * GH + g * H + j0;
          } else {  // gates += W_hh h
            c = g_t + r0 * GH + g * H + j0;
            init = c;
            ldi = GH;
          }
#if defined(__AVX512F__)
          if (packed16) {
            // Task-major (panel u: gate 0's blocks, gate 1's, ...): a step reads the packed rows
            // front to back (back to front on odd steps), one stream for the prefetchers.
            const int64_t ub = (nc + 15) / 16;  // blocks per gate of this panel (the last may have fewer)
            float* pk = packed_rows.data() + (j0 / 16 * G + g * ub) * 16 * H;
            if (s == 0) pack_rows16(a.w_hh + (g * H + j0) * H, H, H, nc, pk);
            rowdot_packed(hprev, pk, H, nc, init, c, backwards);
            continue;
          }
#endif
          if (small)
            rowdot_matmul(hprev, H, nb, w_hh + (g * H + j0) * ldw, ldw, H, nc, init, ldi, c, GH);
          else
            panel_matmul(hprev, H, nb, packed.data() + (g * np + u) * panel, H, nc, init, ldi, c, GH);
        }
        float* gt = g_t + r0 * GH;
        float* yt = y_t + r0 * H;
        if (lstm)
          lstm_cell(nb, H, j0, nc, gt, c_prev + r0 * H, c_out + r0 * H, yt, keep);
        else if (gru)
          gru_cell(nb, H, j0, nc, gt, hp + r0 * GH, hprev, yt, hn_save ? hn_save + r0 * H : nullptr, keep);
        else
          plain_cell(nb, H, j0, nc, a.mode == RnnMode::rnn_relu, gt, yt);
      }
    });
  }
  const int64_t t_last = a.reverse ? 0 : T - 1;
  std::memcpy(a.h_n, a.y + t_last * B * H, sizeof(float) * B * H);
  if (lstm) {
    const float* c_last = a.cells ? a.cells + t_last * B * H : c_ring + ((T - 1) & 1) * B * H;
    std::memcpy(a.c_n, c_last, sizeof(float) * B * H);
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
