// One step of a dynamic-int8 LSTM or GRU at batch 1 with the gate arithmetic fused into the
// recurrent product (AVX-512 VNNI build; the other builds have no fused step and the caller runs
// qgemm + rnn_dynamic_cell instead).
//
// Why: the product h W_hh^T streams the whole packed W_hh from L2 every step (256 KB at H = 256,
// ~2.3 us at the ~115 GB/s Zen 4 reads from L2) and leaves the FP units idle, while the gates (five
// sigmoid/tanh per unit) then run alone. Here the product is computed 16 hidden units at a time, all
// of their gate columns at once (the 16-column blocks g*H + j of the packed weight, H % 16 == 0), and
// those 16 units' gates are computed straight from the accumulators, so the out-of-order core runs
// the gate arithmetic of one group under the weight loads of the next.
//
// Same bits as the unfused path: the sums are exact integers, the dequantization is the epilogue's
// operations in its order (acc - a_zp * colsum, to float, times a_scale * w_scale, plus bias), and
// the gates are rnn_dynamic_cell's operations in its order.
#include <cstdint>
#include <cstring>

#include "forgegrad/qgemm.h"
#include "forgegrad/simd.h"

namespace fg {
namespace FG_ISA_NS {

#if defined(__AVX512F__)
namespace {

inline int32_t load_u32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The 16 dequantized recurrent pre-activations of gate column block n (16 columns from n).
__attribute__((target("avx512vnni"))) inline __m512 dequant(const QRnnStepArgs& s, int64_t n, __m512i acc) {
  const __m512i zc = _mm512_mullo_epi32(_mm512_set1_epi32(s.a_zp), _mm512_loadu_si512(s.colsum + n));
  const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(s.a_scale), _mm512_loadu_ps(s.w_scale + n));
  __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, zc)), scale);
  if (s.bias) v = _mm512_add_ps(v, _mm512_loadu_ps(s.bias + n));
  return v;
}

// G = 4 (LSTM: i, f, g, o) or 3 (GRU: r, z, n).
template <int G>
__attribute__((target("avx512vnni"))) void step(const QRnnStepArgs& s) {
  const int64_t H = s.H, K4 = H / 4;                           // H % 16 == 0: K4 is even
  const int64_t block = qpad_k(H) / 4 * 64;                    // bytes of one packed 16-column block
  const int64_t gate_stride = H / 16 * block;                  // gate g's block j sits g * H / 16 blocks on
  for (int64_t j = 0; j < H; j += 16) {
    const int8_t* w0 = s.b + j / 16 * block;
    const int8_t* w1 = w0 + gate_stride;
    const int8_t* w2 = w1 + gate_stride;
    const int8_t* w3 = G == 4 ? w2 + gate_stride : w2;
    // Named accumulators (an __m512i array makes GCC 12 copy each one around every vpdpbusd); two
    // chains per gate (even and odd k4) so consecutive vpdpbusd on one register do not wait on each other.
    const __m512i z = _mm512_setzero_si512();
    __m512i g0e = z, g0o = z, g1e = z, g1o = z, g2e = z, g2o = z, g3e = z, g3o = z;
    for (int64_t k4 = 0; k4 < K4; k4 += 2) {
      const __m512i xe = _mm512_set1_epi32(load_u32(s.a + 4 * k4));
      const __m512i xo = _mm512_set1_epi32(load_u32(s.a + 4 * k4 + 4));
      const int64_t o = k4 * 64;
      g0e = _mm512_dpbusd_epi32(g0e, xe, _mm512_loadu_si512(w0 + o));
      g1e = _mm512_dpbusd_epi32(g1e, xe, _mm512_loadu_si512(w1 + o));
      g2e = _mm512_dpbusd_epi32(g2e, xe, _mm512_loadu_si512(w2 + o));
      if constexpr (G == 4) g3e = _mm512_dpbusd_epi32(g3e, xe, _mm512_loadu_si512(w3 + o));
      g0o = _mm512_dpbusd_epi32(g0o, xo, _mm512_loadu_si512(w0 + o + 64));
      g1o = _mm512_dpbusd_epi32(g1o, xo, _mm512_loadu_si512(w1 + o + 64));
      g2o = _mm512_dpbusd_epi32(g2o, xo, _mm512_loadu_si512(w2 + o + 64));
      if constexpr (G == 4) g3o = _mm512_dpbusd_epi32(g3o, xo, _mm512_loadu_si512(w3 + o + 64));
    }
    const float* a = s.gi + j;
    const vf r0 = dequant(s, j, _mm512_add_epi32(g0e, g0o));
    const vf r1 = dequant(s, H + j, _mm512_add_epi32(g1e, g1o));
    const vf r2 = dequant(s, 2 * H + j, _mm512_add_epi32(g2e, g2o));
    vf hn;
    if constexpr (G == 4) {  // rnn_dynamic_cell's LSTM
      const vf r3 = dequant(s, 3 * H + j, _mm512_add_epi32(g3e, g3o));
      const vf i = vsigmoid(vadd(vload(a), r0));
      const vf f = vsigmoid(vadd(vload(a + H), r1));
      const vf g = vtanh(vadd(vload(a + 2 * H), r2));
      const vf o = vsigmoid(vadd(vload(a + 3 * H), r3));
      const vf cn = vadd(vmul(f, vload(s.c + j)), vmul(i, g));
      vstore(s.c + j, cn);
      hn = vmul(o, vtanh(cn));
    } else {  // rnn_dynamic_cell's GRU
      const vf rg = vsigmoid(vadd(vload(a), r0));
      const vf u = vsigmoid(vadd(vload(a + H), r1));
      const vf n = vtanh(vadd(vload(a + 2 * H), vmul(rg, r2)));
      hn = vadd(vmul(vsub(vset1(1.0f), u), n), vmul(u, vload(s.h + j)));
    }
    vstore(s.h + j, hn);  // the product reads the quantized copy s.a, never h
  }
}

}  // namespace

bool qrnn_step_b1(const QRnnStepArgs& s) {
  if (s.H < 16 || s.H % 16 != 0) return false;
  if (s.mode == 0)
    step<4>(s);
  else
    step<3>(s);
  return true;
}
#else
bool qrnn_step_b1(const QRnnStepArgs&) { return false; }
#endif

}  // namespace FG_ISA_NS
}  // namespace fg
