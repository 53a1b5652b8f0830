// 2-D convolution (NCHW) as implicit GEMM on gemm_tiles.cuh's SIMT main loop: the im2col matrix
// is never built; the fetchers below compute each element's address (or zero, in the padding)
// from the convolution geometry. One group per blockIdx.z. Ran on an H200 (tests/test_cuda_gemm.py
// passes); not tuned yet: 3x3 forward+backward at 0.43x cuDNN.
//
//   forward:          Y_g[oc, p]   = sum_{k = (c, kh, kw)}   W_g[oc, k] * im2col(X)_g[k, p]     (+ bias)
//   backward-data:    dX_g[c, q]   = sum_{k = (oc, kh, kw)}  W_g[oc, c, kh, kw] * dY_g[oc, (q + pad - kh*dh) / s]
//                     (a gather: each input pixel q sums the outputs whose window covers it; taps whose
//                     offset is not a multiple of the stride read zero), no scatter, no atomics
//   backward-weight:  dW_g[oc, k]  = sum_{p = (n, oh, ow)}   dY_g[oc, p] * im2col(X)_g[k, p]
//                     split over p into a fixed number of chunks (a function of the shapes only)
//                     when the output has too few tiles; the chunks' partial sums are added in chunk
//                     order by a second kernel. Deterministic, and no float atomics.
// Every output is an fmaf chain in a fixed k order (the chunk sums then in chunk order).
#include "common.cuh"
#include "forgegrad/conv.h"
#include "forgegrad/cuda_gemm.h"
#include "gemm_tiles.cuh"
#include "launch.cuh"

namespace fg::cuda {
namespace {

using tiles::Groups;

// The geometry in the ints the fetchers use (spatial sizes fit 32 bits: checked by the callers).
struct Geo {
  int64_t N, C, H, W, OC, OH, OW, HW, OHW;
  int Cg, OCg, KH, KW, KHW, sh, sw, dh, dw, pt, pl;
  explicit Geo(const Conv2dGeom& g)
      : N(g.N),
        C(g.C),
        H(g.H),
        W(g.W),
        OC(g.OC),
        OH(g.OH),
        OW(g.OW),
        HW(g.H * g.W),
        OHW(g.OH * g.OW),
        Cg(static_cast<int>(g.C / g.groups)),
        OCg(static_cast<int>(g.OC / g.groups)),
        KH(static_cast<int>(g.KH)),
        KW(static_cast<int>(g.KW)),
        KHW(static_cast<int>(g.KH * g.KW)),
        sh(static_cast<int>(g.stride_h)),
        sw(static_cast<int>(g.stride_w)),
        dh(static_cast<int>(g.dil_h)),
        dw(static_cast<int>(g.dil_w)),
        pt(static_cast<int>(g.pad_top)),
        pl(static_cast<int>(g.pad_left)) {}
};

// ---- forward ---------------------------------------------------------------------------------
// B[k = (c, kh, kw), p = (n, oh, ow)] = x[n, g*Cg + c, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw]. A thread
// fetches 4 consecutive pixels at one k; their image offsets and window origins are fixed per block.
struct Im2colOperand {
  static constexpr bool kKContig = false;
  const float* x;
  Geo g;
  template <int BMN, int BK>
  struct Fetch {
    using G = Groups<BMN, BK, false>;
    int64_t img[G::kLoads][4];  // offset of x[n, g*Cg]; -1 past the last pixel
    int h0[G::kLoads][4], w0[G::kLoads][4];
    __device__ Fetch(const Im2colOperand& o, int64_t z, int64_t p0) {
      const Geo& g = o.g;
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int64_t p = p0 + G::mn(l) + i, n = p / g.OHW, r = p % g.OHW;
          img[l][i] = n < g.N ? (n * g.C + z * g.Cg) * g.HW : -1;
          h0[l][i] = static_cast<int>(r / g.OW) * g.sh - g.pt;
          w0[l][i] = static_cast<int>(r % g.OW) * g.sw - g.pl;
        }
    }
    __device__ __forceinline__ void operator()(const Im2colOperand& o, int64_t k0, int64_t klim,
                                               float (&r)[G::kLoads][4]) const {
      const Geo& g = o.g;
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l) {
        const int64_t k = k0 + G::k(l);
        const int c = static_cast<int>(k / g.KHW), t = static_cast<int>(k % g.KHW);
        const int dy = (t / g.KW) * g.dh, dx = (t % g.KW) * g.dw;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int ih = h0[l][i] + dy, iw = w0[l][i] + dx;
          const bool in = k < klim && img[l][i] >= 0 && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
          r[l][i] = in ? __ldg(o.x + img[l][i] + c * g.HW + static_cast<int64_t>(ih) * g.W + iw) : 0.f;
        }
      }
    }
  };
};

// Output columns are pixels p = (n, s) of an (N, channels, S) tensor: out[n, ch0 + m, s] = acc (+ bias).
// Forward: channels OC, S = OH*OW, ch0 = g * OCg; backward-data: channels C, S = H*W, ch0 = g * Cg.
struct PixelOut {
  float* out;
  const float* bias;  // per channel, or null
  int64_t channels, S, per_group;
  struct Sink {
    int64_t ch0;
    __device__ Sink(const PixelOut& e, int64_t z, int) : ch0(z * e.per_group) {}
    template <int V>
    __device__ __forceinline__ void put(const PixelOut& e, int64_t m, int64_t p, int64_t Np, float4 v) const {
      const float a[4] = {v.x, v.y, v.z, v.w};
      const int64_t ch = ch0 + m;
      const float b = e.bias ? __ldg(e.bias + ch) : 0.f;
      int64_t n = p / e.S, s = p % e.S;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        if (p + j >= Np) break;
        e.out[(n * e.channels + ch) * e.S + s] = a[j] + b;
        if (++s == e.S) s = 0, ++n;
      }
    }
  };
};

// ---- backward-data ---------------------------------------------------------------------------
// A[c, k = (oc, kh, kw)] = w[g*OCg + oc, c, kh, kw]: a thread fetches 4 consecutive k of one c.
struct WeightTOperand {
  static constexpr bool kKContig = true;
  const float* w;
  Geo g;
  template <int BMN, int BK>
  struct Fetch {
    using G = Groups<BMN, BK, true>;
    int64_t row[G::kLoads];  // offset of w[g*OCg, c]; -1 past the last c
    __device__ Fetch(const WeightTOperand& o, int64_t z, int64_t c0) {
      const Geo& g = o.g;
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l) {
        const int64_t c = c0 + G::mn(l);
        row[l] = c < g.Cg ? (z * g.OCg * g.Cg + c) * g.KHW : -1;
      }
    }
    __device__ __forceinline__ void operator()(const WeightTOperand& o, int64_t k0, int64_t klim,
                                               float (&r)[G::kLoads][4]) const {
      const Geo& g = o.g;
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l) {
        const int64_t k = k0 + G::k(l);
        int oc = static_cast<int>(k / g.KHW), t = static_cast<int>(k % g.KHW);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const bool in = row[l] >= 0 && k + i < klim;
          r[l][i] = in ? __ldg(o.w + row[l] + static_cast<int64_t>(oc) * g.Cg * g.KHW + t) : 0.f;
          if (++t == g.KHW) t = 0, ++oc;
        }
      }
    }
  };
};

// B[k = (oc, kh, kw), q = (n, h, w)] = dy[n, g*OCg + oc, oh, ow] where h = oh*sh - pt + kh*dh (likewise w),
// zero where no such output pixel exists. A thread fetches 4 consecutive input pixels at one k.
struct GradOutGather {
  static constexpr bool kKContig = false;
  const float* gy;
  Geo g;
  template <int BMN, int BK>
  struct Fetch {
    using G = Groups<BMN, BK, false>;
    int64_t img[G::kLoads][4];  // offset of dy[n, g*OCg]; -1 past the last pixel
    int hp[G::kLoads][4], wp[G::kLoads][4];  // h + pt, w + pl
    __device__ Fetch(const GradOutGather& o, int64_t z, int64_t q0) {
      const Geo& g = o.g;
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int64_t q = q0 + G::mn(l) + i, n = q / g.HW, r = q % g.HW;
          img[l][i] = n < g.N ? (n * g.OC + z * g.OCg) * g.OHW : -1;
          hp[l][i] = static_cast<int>(r / g.W) + g.pt;
          wp[l][i] = static_cast<int>(r % g.W) + g.pl;
        }
    }
    __device__ __forceinline__ void operator()(const GradOutGather& o, int64_t k0, int64_t klim,
                                               float (&r)[G::kLoads][4]) const {
      const Geo& g = o.g;
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l) {
        const int64_t k = k0 + G::k(l);
        const int oc = static_cast<int>(k / g.KHW), t = static_cast<int>(k % g.KHW);
        const int dy = (t / g.KW) * g.dh, dx = (t % g.KW) * g.dw;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int th = hp[l][i] - dy, tw = wp[l][i] - dx;  // oh * sh, ow * sw if such outputs exist
          const int oh = th / g.sh, ow = tw / g.sw;
          const bool in = k < klim && img[l][i] >= 0 && th >= 0 && tw >= 0 && oh * g.sh == th && ow * g.sw == tw &&
                          oh < g.OH && ow < g.OW;
          r[l][i] = in ? __ldg(o.gy + img[l][i] + oc * g.OHW + static_cast<int64_t>(oh) * g.OW + ow) : 0.f;
        }
      }
    }
  };
};

// ---- backward-weight -------------------------------------------------------------------------
// A[oc, k = p = (n, oh, ow)] = dy[n, g*OCg + oc, oh, ow]: a thread fetches 4 consecutive pixels of one oc.
struct GradOutRows {
  static constexpr bool kKContig = true;
  const float* gy;
  Geo g;
  template <int BMN, int BK>
  struct Fetch {
    using G = Groups<BMN, BK, true>;
    int64_t row[G::kLoads];  // offset of dy[0, g*OCg + oc]; -1 past the last oc
    __device__ Fetch(const GradOutRows& o, int64_t z, int64_t oc0) {
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l) {
        const int64_t oc = oc0 + G::mn(l);
        row[l] = oc < o.g.OCg ? (z * o.g.OCg + oc) * o.g.OHW : -1;
      }
    }
    __device__ __forceinline__ void operator()(const GradOutRows& o, int64_t k0, int64_t klim,
                                               float (&r)[G::kLoads][4]) const {
      const Geo& g = o.g;
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l) {
        const int64_t p = k0 + G::k(l);
        int64_t n = p / g.OHW, s = p % g.OHW;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const bool in = row[l] >= 0 && p + i < klim;
          r[l][i] = in ? __ldg(o.gy + row[l] + n * g.OC * g.OHW + s) : 0.f;
          if (++s == g.OHW) s = 0, ++n;
        }
      }
    }
  };
};

// B[k = p = (n, oh, ow), col = (c, kh, kw)] = x[n, g*Cg + c, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw]: a thread
// fetches 4 consecutive pixels of one column.
struct Im2colTOperand {
  static constexpr bool kKContig = true;
  const float* x;
  Geo g;
  template <int BMN, int BK>
  struct Fetch {
    using G = Groups<BMN, BK, true>;
    int64_t plane[G::kLoads];  // offset of x[0, g*Cg + c]; -1 past the last column
    int dy[G::kLoads], dx[G::kLoads];  // kh*dh - pt, kw*dw - pl
    __device__ Fetch(const Im2colTOperand& o, int64_t z, int64_t col0) {
      const Geo& g = o.g;
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l) {
        const int64_t col = col0 + G::mn(l);
        const int c = static_cast<int>(col / g.KHW), t = static_cast<int>(col % g.KHW);
        plane[l] = col < static_cast<int64_t>(g.Cg) * g.KHW ? (z * g.Cg + c) * g.HW : -1;
        dy[l] = (t / g.KW) * g.dh - g.pt;
        dx[l] = (t % g.KW) * g.dw - g.pl;
      }
    }
    __device__ __forceinline__ void operator()(const Im2colTOperand& o, int64_t k0, int64_t klim,
                                               float (&r)[G::kLoads][4]) const {
      const Geo& g = o.g;
#pragma unroll
      for (int l = 0; l < G::kLoads; ++l) {
        const int64_t p = k0 + G::k(l);
        int64_t n = p / g.OHW;
        int s = static_cast<int>(p % g.OHW), oh = s / static_cast<int>(g.OW), ow = s % static_cast<int>(g.OW);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int ih = oh * g.sh + dy[l], iw = ow * g.sw + dx[l];
          const bool in = plane[l] >= 0 && p + i < klim && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
          r[l][i] = in ? __ldg(o.x + plane[l] + n * g.C * g.HW + static_cast<int64_t>(ih) * g.W + iw) : 0.f;
          if (++ow == g.OW) {
            ow = 0;
            if (++oh == g.OH) oh = 0, ++n;
          }
        }
      }
    }
  };
};

// Backward-weight writes through tiles::RowsOut: out[(split * OC + g*OCg + m) * cols + col] = acc. With
// one split this is grad_weight itself (OC, Cg, KH, KW); with several, the splits' partial sums.
using tiles::RowsOut;

// grad_weight[i] = sum over splits s (in order) of partial[s][i].
__global__ void sum_splits(const float* __restrict__ partial, float* __restrict__ out, int64_t n, int64_t splits) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int64_t k = 0; k < splits; ++k) s += partial[k * n + i];
    out[i] = s;
  }
}

// The tile configuration for an M x N output per group: big tiles once they fill the GPU ~twice.
bool use_big(int64_t M, int64_t N, int64_t groups) { return ((M + 127) / 128) * ((N + 127) / 128) * groups >= 256; }

template <class C, class PA, class PB, class PE>
std::string run(int64_t M, int64_t N, int64_t K, int64_t k_chunk, int64_t splits, int64_t groups, const PA& pa,
                const PB& pb, const PE& pe) {
  FG_LAUNCH(tiles::gemm_simt<C>, tiles::grid_for<C>(M, N, splits, groups), tiles::kThreads, M, N, K, k_chunk,
            (N + C::BN - 1) / C::BN, groups, pa, pb, pe);
  return launch_status();
}

template <class PA, class PB, class PE>
std::string run_any(int64_t M, int64_t N, int64_t K, int64_t groups, const PA& pa, const PB& pb, const PE& pe) {
  if (use_big(M, N, groups)) return run<tiles::Big>(M, N, K, K, 1, groups, pa, pb, pe);
  return run<tiles::Small>(M, N, K, K, 1, groups, pa, pb, pe);
}

// Split-K plan of backward-weight (tiles::k_split over its pixels) and the tile size it runs with.
struct SplitPlan {
  bool big;
  int64_t chunk, splits;
};

SplitPlan split_plan(const Conv2dGeom& cg) {
  const Geo g(cg);
  const int64_t M = g.OCg, N = static_cast<int64_t>(g.Cg) * g.KHW, K = g.N * g.OHW;
  const bool big = use_big(M, N, cg.groups);
  const int64_t bm = big ? 128 : 64;
  const tiles::KSplit ks = tiles::k_split(((M + bm - 1) / bm) * ((N + bm - 1) / bm) * cg.groups, K);
  return SplitPlan{big, ks.chunk, ks.splits};
}

}  // namespace

std::string conv2d_forward(const Conv2dGeom& cg, const float* x, const float* weight, const float* bias, float* y) {
  const Geo g(cg);
  const int64_t M = g.OCg, N = g.N * g.OHW, K = static_cast<int64_t>(g.Cg) * g.KHW;
  if (N == 0) return std::string();
  tiles::MatrixOperand<true> pa{weight, K, M, {}, false};
  pa.batch.ndim = 1, pa.batch.size[0] = cg.groups, pa.batch.stride[0] = M * K;
  pa.vec = K % 4 == 0 && (reinterpret_cast<uintptr_t>(weight) & 15) == 0;
  const Im2colOperand pb{x, g};
  const PixelOut pe{y, bias, g.OC, g.OHW, g.OCg};
  return run_any(M, N, K, cg.groups, pa, pb, pe);
}

std::string conv2d_backward_input(const Conv2dGeom& cg, const float* weight, const float* grad_y, float* grad_x) {
  const Geo g(cg);
  const int64_t M = g.Cg, N = g.N * g.HW, K = static_cast<int64_t>(g.OCg) * g.KHW;
  if (N == 0) return std::string();
  const WeightTOperand pa{weight, g};
  const GradOutGather pb{grad_y, g};
  const PixelOut pe{grad_x, nullptr, g.C, g.HW, g.Cg};
  return run_any(M, N, K, cg.groups, pa, pb, pe);
}

int64_t conv2d_backward_weight_workspace(const Conv2dGeom& cg) {
  const SplitPlan p = split_plan(cg);
  return p.splits > 1 ? p.splits * cg.OC * (cg.C / cg.groups) * cg.KH * cg.KW : 0;
}

std::string conv2d_backward_weight(const Conv2dGeom& cg, const float* x, const float* grad_y, float* grad_weight,
                                   float* grad_bias, float* workspace) {
  const Geo g(cg);
  if (grad_bias) {
    std::string err = strided_sum(grad_y, grad_bias, g.OC, g.N, g.OC * g.OHW, g.OHW, g.OHW);
    if (!err.empty()) return err;
  }
  if (!grad_weight) return std::string();
  const int64_t M = g.OCg, N = static_cast<int64_t>(g.Cg) * g.KHW, K = g.N * g.OHW, total = g.OC * N;
  const SplitPlan p = split_plan(cg);
  if (p.splits > 1 && !workspace) return "conv2d_backward_weight: workspace missing";
  const GradOutRows pa{grad_y, g};
  const Im2colTOperand pb{x, g};
  const RowsOut pe{p.splits > 1 ? workspace : grad_weight, N, M, total};
  std::string err = p.big ? run<tiles::Big>(M, N, K, p.chunk, p.splits, cg.groups, pa, pb, pe)
                          : run<tiles::Small>(M, N, K, p.chunk, p.splits, cg.groups, pa, pb, pe);
  if (!err.empty() || p.splits == 1) return err;
  FG_LAUNCH(sum_splits, blocks_for(total, 256), 256, workspace, grad_weight, total, p.splits);
  return launch_status();
}

}  // namespace fg::cuda
