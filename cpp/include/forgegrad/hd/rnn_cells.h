// Shared host/device math: the LSTM, GRU and Elman cell updates of one hidden unit, forward and
// backward, exactly as cpp/kernels/per_isa/rnn_forward.cpp / rnn_backward.cpp compute them (gate
// order, formulas and operation order). Those kernels call these in their portable build and
// compute the same on vectors in their AVX paths; cuda/rnn_cells.cu calls them per thread.
//
// Layout (torch's): a row of LSTM gates is [i | f | g | o] (4H), of GRU gates [r | z | n] (3H).
#pragma once
#include "forgegrad/hd/common.h"

FG_HD_BEGIN

// ---- LSTM ----------------------------------------------------------------------------------------
// In: the pre-activations of unit j (input projection + recurrent product + biases) and c_{t-1}.
// Out: the activations i, f, g, o (saved for backward), c_t and h_t.
//   i = sigmoid, f = sigmoid, g = tanh, o = sigmoid;  c = f c_prev + i g;  h = o tanh(c)
FG_HD void lstm_forward(float& i, float& f, float& g, float& o, float c_prev, float& c, float& h) {
  i = hd::sigmoid(i);
  f = hd::sigmoid(f);
  g = hd::tanh(g);
  o = hd::sigmoid(o);
  c = fmadd(f, c_prev, i * g);
  h = o * hd::tanh(c);
}

// In: the saved activations i, f, g, o, c_t, c_{t-1}, dh = dL/dh_t (all paths) and dc = dL/dc_t
// from step t+1. Out: the gradients of the four pre-activations and dL/dc_{t-1}.
FG_HD void lstm_backward(float i, float f, float g, float o, float c, float c_prev, float dh, float dc, float& di,
                         float& df, float& dg, float& d_o, float& dc_prev) {
  float tc = hd::tanh(c);
  float dct = fmadd(dh * o, dtanh_from_y(tc), dc);
  di = (dct * g) * dsigmoid_from_y(i);
  df = (dct * c_prev) * dsigmoid_from_y(f);
  dg = (dct * i) * dtanh_from_y(g);
  d_o = (dh * tc) * dsigmoid_from_y(o);
  dc_prev = dct * f;
}

// ---- GRU (torch's formula: r scales the recurrent n term including b_hn) -------------------------
// In: x_r, x_z, x_n = W_i x + b_i of unit j; h_r, h_z, h_n = W_h h_{t-1} + b_h; h_{t-1}.
// Out: r, z, n (saved for backward) and h_t.
//   r = sigmoid(x_r + h_r);  z = sigmoid(x_z + h_z);  n = tanh(x_n + r h_n);  h = (1 - z) n + z h_prev
FG_HD void gru_forward(float xr, float xz, float xn, float hr, float hz, float hn, float h_prev, float& r, float& z,
                       float& n, float& h) {
  r = hd::sigmoid(xr + hr);
  z = hd::sigmoid(xz + hz);
  n = hd::tanh(fmadd(r, hn, xn));
  h = fmadd(z, h_prev - n, n);  // (1 - z) n + z h_prev with one rounding fewer
}

// In: saved r, z, n, h_n = W_hn h_{t-1} + b_hn, h_{t-1}, dh = dL/dh_t. Out: the gradients of the
// input-side pre-activations (dr, dz, dn: W_i x + b_i), of the hidden-side n term (dhn: W_hn h +
// b_hn; the r and z terms equal dr and dz), and the direct path dL/dh_{t-1} = dh z.
FG_HD void gru_backward(float r, float z, float n, float hn, float h_prev, float dh, float& dr, float& dz, float& dn,
                        float& dhn, float& dh_direct) {
  dn = (dh * (1.0f - z)) * dtanh_from_y(n);
  dz = (dh * (h_prev - n)) * dsigmoid_from_y(z);
  dr = (dn * hn) * dsigmoid_from_y(r);
  dhn = dn * r;
  dh_direct = dh * z;
}

// ---- Elman RNN -----------------------------------------------------------------------------------
FG_HD float rnn_forward(float pre, bool relu) { return relu ? vmax1(0.0f, pre) : hd::tanh(pre); }
// from the output h
FG_HD float rnn_backward(float h, float dh, bool relu) {
  return relu ? select_gt(h, 0.0f, dh, 0.0f) : dh * dtanh_from_y(h);
}

FG_HD_END
