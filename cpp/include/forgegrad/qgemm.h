// Int8 GEMM: u8 activations x s8 weights -> s32, with fused epilogues, and the quantize helpers
// of dynamic quantization. Kernels in cpp/kernels/per_isa/qgemm.cpp (GEMM) and qquantize.cpp
// (quantize helpers), dispatch in cpp/kernels/qgemm_dispatch.cpp.
//
// Int8 has more paths than the three ISA namespaces: the AVX-512 build holds two (AVX-512 VNNI
// `vpdpbusd`, and AMX-INT8 tiles, each in a function compiled for its own target), so the int8
// dispatcher picks a QPath, capped by the active SIMD path (forgegrad.set_simd / FORGEGRAD_SIMD)
// and by what the CPU and the OS allow. Every path computes the exact integer sums (no saturating
// instruction is used), so results are identical on every path and at any thread count.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

// Ordered: a CPU that can run a path can run every path below it. avx_vnni is the 256-bit vpdpbusd
// kernel, run VEX-encoded (AVX-VNNI) where the CPU has AVX-VNNI and EVEX-encoded (AVX-512 VNNI + VL)
// otherwise, so every CPU with either VNNI can run it.
enum class QPath : int { scalar = 0, avx2 = 1, avx_vnni = 2, vnni = 3, amx = 4 };

// Packed weights: the (N, K) s8 matrix W (row n = output column n) in blocks of 16 columns; in a
// block, for each group of 4 k's, 16 columns x 4 bytes (64 bytes): byte (k4, n, kk) holds W[n][4*k4+kk].
// That is the operand layout of vpdpbusd (one zmm per k4) and of an AMX B tile (16 rows of k4,
// 64 bytes each). K is padded with zeros to a multiple of 64 (one AMX tile), N to a multiple of 32.
constexpr int64_t kQPackK = 64;
constexpr int64_t kQPackN = 32;
inline int64_t qpad_k(int64_t K) { return (K + kQPackK - 1) / kQPackK * kQPackK; }
inline int64_t qpad_n(int64_t N) { return (N + kQPackN - 1) / kQPackN * kQPackN; }
inline int64_t qpacked_bytes(int64_t N, int64_t K) { return qpad_n(N) * qpad_k(K); }
// The bytes of an activation row the GEMM reads on `path`: AMX tiles load qpad_k(K) (64-byte
// blocks); the other paths read the 4-byte groups below K, the AVX2 exact one 16 bytes at a time
// (its widening), so rows of K rounded up to 16 suffice there (conv1 of LeNet: K = 9, 16 not 64).
inline int64_t qrow_bytes(int64_t K, QPath path) { return path == QPath::amx ? qpad_k(K) : (K + 15) / 16 * 16; }
// The largest K whose s32 sums cannot overflow: K * 255 * 128 plus the zero-point correction
// (another K * 255 * 128) stays below 2^31.
constexpr int64_t kQMaxK = 32896;

// What the GEMM writes for each element acc = sum_k A[m][k] * W[n][k] (exact s32).
enum class QOut : int { s32 = 0, f32 = 1, u8 = 2 };

struct QGemmArgs {
  const uint8_t* a = nullptr;  // M rows of lda >= qrow_bytes(K, path) bytes, zero past K
  int64_t lda = 0;
  const int8_t* b = nullptr;  // packed (qpacked_bytes(N, K))
  int64_t M = 0, N = 0, K = 0;
  QOut out = QOut::s32;
  void* c = nullptr;  // int32_t / float / uint8_t rows of ldc elements
  int64_t ldc = 0;
  // Epilogue (f32 and u8): v = float(acc - a_zp * colsum[n]) * scale[n] (+ bias[n]) (ReLU);
  // u8: clamp(nearbyint(v * out_inv_scale) + out_zp, 0, 255).
  int32_t a_zp = 0;
  const int32_t* colsum = nullptr;  // N: sum_k W[n][k]
  const float* scale = nullptr;     // N: a_scale * w_scale[n]
  const float* bias = nullptr;      // N or null
  bool relu = false;
  // Every activation byte is <= 127 (7-bit activations, torch's reduce_range): the AVX2 kernel may
  // then use vpmaddubsw, whose int16 pair sums (at most 2 * 127 * 128) cannot saturate.
  bool a_7bit = false;
  float out_inv_scale = 1.0f;
  int32_t out_zp = 0;
};

// One step of a dynamic-int8 LSTM (mode 0: gates i, f, g, o) or GRU (mode 1: r, z, n) at batch 1:
// the recurrent product a W^T (W the packed (G*H, H) recurrent weight) dequantized as the f32
// epilogue does (scale a_scale * w_scale[n], plus bias), then rnn_dynamic_cell's gate arithmetic,
// updating h and (LSTM) c in place; the same bits as qgemm followed by rnn_dynamic_cell.
struct QRnnStepArgs {
  int mode = 0;
  int64_t H = 0;
  const uint8_t* a = nullptr;  // h quantized: H bytes, then zeros to qpad_k(H)
  int32_t a_zp = 0;
  float a_scale = 1.0f;
  const int8_t* b = nullptr;        // packed (qpacked_bytes(G*H, H))
  const int32_t* colsum = nullptr;  // G*H
  const float* w_scale = nullptr;   // G*H
  const float* bias = nullptr;      // G*H or null
  const float* gi = nullptr;        // G*H: this step's input projection x W_ih^T + b_ih
  float* c = nullptr;               // H (LSTM)
  float* h = nullptr;               // H
};
// Per-ISA GEMM drivers (the avx512 one runs the VNNI or the AMX microkernel), and the fused RNN
// step (cpp/kernels/per_isa/qrnn_step.cpp), which returns false where it cannot run (no AVX-512
// build, H not a multiple of 16): the caller then runs qgemm and rnn_dynamic_cell.
namespace scalar {
void qgemm(const QGemmArgs& p);
bool qrnn_step_b1(const QRnnStepArgs& s);
}  // namespace scalar
namespace avx2 {
void qgemm(const QGemmArgs& p);
// The avx_vnni path: vex selects the AVX-VNNI encoding of vpdpbusd, else the AVX-512 VNNI (EVEX) one.
void qgemm_dpbusd256(const QGemmArgs& p, bool vex);
bool qrnn_step_b1(const QRnnStepArgs& s);
}  // namespace avx2
namespace avx512 {
void qgemm(const QGemmArgs& p, bool amx);
bool qrnn_step_b1(const QRnnStepArgs& s);  // VNNI: only where the int8 path is vnni or amx
}  // namespace avx512

// Quantize helpers, one per ISA (dispatched on the active SIMD path).
// min and max of x[0..n) (n >= 1); NaN if any element is NaN.
FG_KERNEL(void, qminmax_f32, (const float* x, int64_t n, float* mn, float* mx), (x, n, mn, mx))
// out[m][k] = clamp(nearbyint(x[m][k] * inv_scale) + zp, qmin, qmax) for k < K (rows ldx floats
// apart); out rows are ldo bytes apart and bytes K..pad_to-1 are set to 0.
FG_KERNEL(void, qquantize_u8,
          (const float* x, int64_t M, int64_t K, int64_t ldx, float inv_scale, int32_t zp, int32_t qmin, int32_t qmax,
           uint8_t* out, int64_t ldo, int64_t pad_to),
          (x, M, K, ldx, inv_scale, zp, qmin, qmax, out, ldo, pad_to))

// Weight-only int8 Linear (cpp/kernels/per_isa/qlinear_wo.cpp): y (M, N) = x (M, K) float32 times
// W^T, W (N, K) int8 row-major, times scale[n], plus bias[n] (bias may be null).
FG_KERNEL(void, qlinear_weight_only,
          (const float* x, int64_t M, int64_t K, const int8_t* w, const float* scale, const float* bias, float* y,
           int64_t N),
          (x, M, K, w, scale, bias, y, N))

#ifndef FG_ISA_NS
// The int8 path the GEMM uses now, the best this CPU and OS allow, and a forced path for tests and
// benchmarks (throws std::invalid_argument naming the reason when the CPU or OS lacks it).
QPath active_qpath();
QPath detected_qpath();
void set_qpath(QPath path);
void reset_qpath();  // back to the best available
const char* qpath_name(QPath path);
QPath qpath_from_name(const char* name);  // throws std::invalid_argument
// The encoding the avx_vnni path runs with here: "vex" (the CPU has AVX-VNNI), "evex" (AVX-512 VNNI
// only) or "" (neither: the path is not available).
const char* avx_vnni_encoding();
// Why AMX is not available ("" when it is).
const char* amx_unavailable_reason();

void qgemm(const QGemmArgs& p);  // on active_qpath()
// The fused batch-1 RNN step on active_qpath() (VNNI and AMX paths; false elsewhere, see above).
bool qrnn_step_b1(const QRnnStepArgs& s);
// Packs W (N, K) s8, row-major with row stride ldw, into `packed` (qpacked_bytes(N, K) bytes) and
// writes colsum (N).
void qpack_weight(const int8_t* w, int64_t N, int64_t K, int64_t ldw, int8_t* packed, int32_t* colsum);

struct QParams {
  float scale;
  int32_t zero_point;
};
// torch's (fbgemm's) ChooseQuantizationParams for u8 activations: the range is widened to include
// 0; qmax = 255, or 127 with reduce_range (what torch's x86/fbgemm dynamic Linear uses, to keep
// vpmaddubsw from saturating); zero point from the min or the max, whichever errs less, rounded.
QParams choose_qparams_u8(float mn, float mx, bool reduce_range);
#endif

}  // namespace fg
