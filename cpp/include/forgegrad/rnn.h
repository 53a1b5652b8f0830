// Recurrent layers (LSTM, GRU, Elman RNN with tanh/relu): one layer, one direction, a whole
// sequence per call, forward and backward through time.
//
// Layout follows PyTorch so a state_dict loads unchanged (G gates: LSTM 4 = i,f,g,o; GRU 3 = r,z,n;
// RNN 1):  x (T, B, I) time-major, h0/c0 (B, H), w_ih (G*H, I), w_hh (G*H, H), b_ih/b_hh (G*H).
// GRU places the reset gate as torch does: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
//
// Forward: the input projection of all T*B rows is one GEMM (fg::sgemm); each step then runs the
// recurrent matmul on weights packed once per call (panels of kNR hidden units) and, for the same
// hidden units, one fused SIMD pass over the gates and the cell update. Backward mirrors it: per
// step one fused gate-gradient pass, then the recurrent matmul; dW, dX and db come at the end from
// big GEMMs / column sums over all T*B rows, so every summation order is fixed. Work is split over
// hidden-unit panels whose size depends only on the ISA: bit-identical for any thread count.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"
#include "forgegrad/memory.h"

namespace fg {

enum class RnnMode : int { lstm = 0, gru = 1, rnn_tanh = 2, rnn_relu = 3 };

inline int rnn_num_gates(RnnMode m) { return m == RnnMode::lstm ? 4 : m == RnnMode::gru ? 3 : 1; }

struct RnnForwardArgs {
  RnnMode mode;
  int64_t T, B, I, H;
  bool reverse;          // process t = T-1 .. 0; y[t] stays at time index t
  const float* x;        // (T, B, I)
  const float* h0;       // (B, H)
  const float* c0;       // (B, H), LSTM only
  const float* w_ih;     // (G*H, I)
  const float* w_hh;     // (G*H, H)
  const float* b_ih;     // (G*H) or nullptr
  const float* b_hh;     // (G*H) or nullptr
  float* y;              // (T, B, H) out
  float* h_n;            // (B, H) out
  float* c_n;            // (B, H) out, LSTM only
  // Saved for backward (all nullptr in inference mode; RNN needs none: y is its activation).
  float* gates;          // (T, B, G*H) gate activations: LSTM i,f,g,o; GRU r,z,n
  float* cells;          // (T, B, H) LSTM cell state c_t
  float* hn_lin;         // (T, B, H) GRU W_hn h_{t-1} + b_hn
};

struct RnnBackwardArgs {
  RnnMode mode;
  int64_t T, B, I, H;
  bool reverse;
  const float* x;        // (T, B, I)
  const float* h0;       // (B, H)
  const float* c0;       // (B, H), LSTM only
  const float* w_ih;     // (G*H, I)
  const float* w_hh;     // (G*H, H)
  const float* y;        // (T, B, H) forward output
  const float* gates;    // saved by forward (LSTM, GRU)
  const float* cells;    // LSTM
  const float* hn_lin;   // GRU
  const float* grad_y;   // (T, B, H) or nullptr (zero)
  const float* grad_hn;  // (B, H) or nullptr
  const float* grad_cn;  // (B, H) or nullptr, LSTM only
  float* gx;             // (T, B, I) out
  float* gh0;            // (B, H) out
  float* gc0;            // (B, H) out, LSTM only
  float* gw_ih;          // (G*H, I) out
  float* gw_hh;          // (G*H, H) out
  float* gb_ih;          // (G*H) out or nullptr (no bias)
  float* gb_hh;          // (G*H) out or nullptr
};

FG_KERNEL(void, rnn_forward, (const RnnForwardArgs& a), (a))
FG_KERNEL(void, rnn_backward, (const RnnBackwardArgs& a), (a))
// The activations the gate passes use, exposed for accuracy tests: kind 0 = sigmoid, 1 = tanh,
// 2 = exp. y[i] = f(x[i]) for i < n.
FG_KERNEL(void, rnn_activation, (int kind, const float* x, float* y, int64_t n), (kind, x, y, n))
// The gate pass of the dynamic-int8 LSTM (mode 0) / GRU (mode 1) for one batch row, after the recurrent
// product: a (G*H) = W_i x + b_i, r (G*H) = W_h h + b_h; c (H, LSTM only) and h (H) are updated in
// place. Plain multiplies and adds (no FMA), the sigmoid / tanh of rnn_activation: the same bits on
// every ISA path. LSTM: i, f, o = sigmoid, z = tanh of a + r; c = f * c + i * z; h = o * tanh(c). GRU:
// r_, u = sigmoid(a + r); n = tanh(a_n + r_ * r_n); h = (1 - u) * n + u * h.
FG_KERNEL(void, rnn_dynamic_cell, (int mode, int64_t H, const float* a, const float* r, float* c, float* h),
          (mode, H, a, r, c, h))

#ifdef FG_ISA_NS
// Pieces shared by the per-ISA sources cpp/kernels/per_isa/rnn_*.cpp.
namespace FG_ISA_NS {
namespace rnn_detail {

// Recurrent matmul on a packed right-hand side. A panel holds kNR consecutive output columns of
// B(K, N) as P[k * kNR + c] (zero past the matrix edge), so the inner loop reads it contiguously.
int panel_width();  // kNR of this ISA
int64_t num_panels(int64_t n);
// P = panels of B where B(k, n) = W[n * ldw + k] (transposed source), n in [0, N), k in [0, K).
void pack_transposed(const float* W, int64_t ldw, int64_t K, int64_t N, float* P);
// P = panels of B where B(k, n) = W[k * ldw + n].
void pack_plain(const float* W, int64_t ldw, int64_t K, int64_t N, float* P);
// For rows r < M and the first ncols (<= kNR) columns of one panel:
//   C[r * ldc + c] = (init ? init[r * ldi + c] : 0) + sum_k A[r * lda + k] * P[k * kNR + c]
// with k summed in order 0..K-1 (init may alias C; ldi = 0 broadcasts one row, e.g. a bias).
void panel_matmul(const float* A, int64_t lda, int64_t M, const float* P, int64_t K, int ncols, const float* init,
                  int64_t ldi, float* C, int64_t ldc);
// Small-batch variants that read W_hh as stored (no packing: at B <= kSmallBatch a step is bound by
// streaming the weights once, and packing them would cost as much as several steps).
constexpr int64_t kSmallBatch = 4;
// C[r * ldc + c] = (init ? init[r * ldi + c] : 0) + dot(A row r, W row c) for r < M <= kSmallBatch,
// c < ncols; W rows have K contiguous elements and stride ldw. Fixed lane-then-tree sum order.
void rowdot_matmul(const float* A, int64_t lda, int64_t M, const float* W, int64_t ldw, int64_t K, int64_t ncols,
                   const float* init, int64_t ldi, float* C, int64_t ldc);
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// Batch 1, all rows in one sweep: C[c] = (init ? init[c] : 0) + dot(A, W row c) for c < rows, the
// same arithmetic per output as rowdot_matmul with M = 1 (so the same bits). Rows are taken 8 at a
// time in groups of 64, the groups from last to first when reverse (the step-to-step zig-zag).
// AVX2 build only: rnn_forward's batch-1 single-thread path.
void rowdot_sweep(const float* A, const float* W, int64_t ldw, int64_t K, int64_t rows, const float* init, float* C,
                  bool reverse);
#endif
#if defined(__AVX512F__)
// Batch 1 on weights packed once per call, the same bits as rowdot_matmul with M = 1. pack_rows16
// stores W (N rows of K, stride ldw) as blocks of 16 rows, each K x 16 with row c of the block in
// lane c: P[(b * K + k) * 16 + c] = W[(16 * b + c) * ldw + k] (zero past row N); one thread.
// rowdot_packed: C[c] = (init ? init[c] : 0) + dot(A, W row c) for c < ncols, from P = the block
// holding row 0 (blocks taken last to first when reverse). A step then makes one FMA per weight
// vector and no horizontal sums (rowdot_rows reduces 4 rows at a time, lane by lane).
void pack_rows16(const float* W, int64_t ldw, int64_t K, int64_t N, float* P);
void rowdot_packed(const float* A, const float* P, int64_t K, int64_t ncols, const float* init, float* C, bool reverse);
// Batch-1 calls of at least this many steps pack W_hh (the first step packs the rows it reads, ~3
// packed steps' time: 16x16 transposes). Zen 5, T1-T16 against rowdot_rows: H256 1.17x the time at
// T4, 1.03x at T8, 0.95x at T16; H64 0.90x at T16. The packed rows are the same bits either way.
constexpr int64_t kPack16Steps = 16;
#endif
// As panel_matmul for M <= kSmallBatch, reading B(k, c) = W[k * ldw + c] directly (c < ncols <= kNR).
void strided_matmul(const float* A, int64_t lda, int64_t M, const float* W, int64_t ldw, int64_t K, int ncols,
                    const float* init, int64_t ldi, float* C, int64_t ldc);
// The small-batch kernels stream W_hh (G*H x H) from L2 every step with vector loads; rows that do
// not start on a 64-byte boundary (numpy aligns arrays to 16 bytes) make every load straddle two
// cache lines, which cost 1.5x the time of the whole LSTM at T50 B1 H256. Returns W (rows x cols,
// stride ld) itself when its rows are aligned or a call has too few steps to repay a copy, else a
// copy in buf with aligned rows; ld_out is the stride of what is returned. Same values, so the
// same results.
const float* aligned_rows(const float* W, int64_t rows, int64_t cols, int64_t ld, int64_t steps, AlignedBuffer& buf,
                          int64_t& ld_out);
// How many row chunks to split a step's B rows into so that every thread has work when there are
// fewer hidden-unit panels than the threads a step of about `step_work` multiply-adds gets (chunks of
// at least kMR rows). Any split gives the same results: no output's arithmetic depends on which rows
// share a task.
int64_t row_chunks(int64_t panels, int64_t rows, int64_t step_work);
// out[n] = sum over rows r (in order) of X[r * N + n]; parallel over columns.
void column_sums(const float* X, int64_t R, int64_t N, float* out);

}  // namespace rnn_detail
}  // namespace FG_ISA_NS
#endif

}  // namespace fg
