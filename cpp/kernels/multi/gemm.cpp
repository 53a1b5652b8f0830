// SGEMM driver, compiled per ISA (BLIS-style):
//   for each NC-wide block of columns (jc) and KC-deep slice of K (pc):
//     pack op(B)[pc:pc+kc, jc:jc+nc] into NR-wide panels        (shared, split over threads)
//     each thread owns a contiguous range of MR-row panels of C; for each MC rows of its range:
//       pack op(A)[ic:ic+mc, pc:pc+kc] into MR-high panels      (thread-local, L2-resident)
//       for each B panel (jr), for each A panel (ir): microkernel -> MR x NR tile of C
// Threads never split K: every element of C is the same fma chain over each KC slice, the slices
// added in order (C = alpha*acc + beta*C, then C = alpha*acc + C), whatever thread computes it.
// KC depends on K only, so results are bit-identical for any thread count.
// Skinny shapes (M or N <= 8) go to gemm_skinny.cpp, which reads B in place.
#include "forgegrad/gemm.h"
#include "forgegrad/memory.h"
#include "forgegrad/parallel.h"
#include "gemm_internal.h"

namespace fg {
namespace FG_ISA_NS {

using namespace gemm_detail;

namespace {


// C = beta * C (beta == 0 writes zeros, ignoring NaNs in C).
void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  if (beta == 1.0f) return;
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      for (int64_t j = 0; j < N; ++j) c[j] = 0.0f;
    } else {
      for (int64_t j = 0; j < N; ++j) c[j] = beta * c[j];
    }
  }
}

// KC: K split into equal slices of at most kKCMax (a function of K alone).
int64_t choose_kc(int64_t K) {
  int64_t slices = (K + kKCMax - 1) / kKCMax;
  int64_t kc = (K + slices - 1) / slices;
  return (kc + 7) / 8 * 8 < kKCMax ? (kc + 7) / 8 * 8 : kKCMax;
}

// Scratch that lives as long as the thread: packing buffers are reused across calls.
float* scratch(AlignedBuffer& buf, std::size_t floats) {
  if (buf.size() < floats) buf.reset(floats);
  return buf.data();
}

void sgemm_packed(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc) {
  // op(A)(i, k) = A[i * rsa + k * csa]; op(B)(k, j) = B[k * rsb + j * csb].
  const int64_t rsa = trans_a ? 1 : lda, csa = trans_a ? lda : 1;
  const int64_t rsb = trans_b ? 1 : ldb, csb = trans_b ? ldb : 1;
  const int64_t KC = choose_kc(K);
  const int64_t NC = N < kNCMax ? N : kNCMax;
  const int64_t m_panels = (M + kMR - 1) / kMR;
  const int nt = get_num_threads();
  // Row panels of balanced height (M = 64 is 6 panels of 10-11 rows, not 5 x 12 + 4): panel p
  // holds rows [row0(p), row0(p + 1)), at most kMR.
  auto row0 = [&](int64_t p) { return p * M / m_panels; };

  static thread_local AlignedBuffer b_buf;
  float* bpack = scratch(b_buf, static_cast<std::size_t>(KC * ((NC + kNR - 1) / kNR * kNR)));

  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = N - jc < NC ? N - jc : NC;
    const int64_t n_panels = (nc + kNR - 1) / kNR;
    // Split the C block over threads by rows when there are enough row panels, else by columns.
    const bool split_rows = m_panels >= 2 * nt || m_panels >= n_panels;
    // A thread that owns all the row panels of a B panel packs it just before first use (still
    // in L1/L2 for the microkernel); otherwise B is packed up front, shared by all threads.
    const bool fuse_b = nt <= 1 || omp_in_parallel() || !split_rows;
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = K - pc < KC ? K - pc : KC;
      const float beta_k = pc == 0 ? beta : 1.0f;

      auto pack_b = [&](int64_t q) {
        int64_t j = jc + q * kNR;
        int cols = static_cast<int>(N - j < kNR ? N - j : kNR);
        pack_panel(B + pc * rsb + j * csb, csb, rsb, cols, kc, kNR, bpack + q * kNR * kc);
      };
      if (!fuse_b)
        parallel_for(n_panels, 4, [&](int64_t q0, int64_t q1) {
          for (int64_t q = q0; q < q1; ++q) pack_b(q);
        });

      // Rows [p0, p1) and columns panels [q0, q1) of this block, done by one thread.
      auto compute = [&](int64_t p0, int64_t p1, int64_t q0, int64_t q1) {
        static thread_local AlignedBuffer a_buf;
        float* apack = scratch(a_buf, static_cast<std::size_t>(kMCMax * kc));
        for (int64_t pb = p0; pb < p1; pb += kMCMax / kMR) {
          const int64_t pe = p1 - pb < kMCMax / kMR ? p1 : pb + kMCMax / kMR;
          for (int64_t p = pb; p < pe; ++p) {
            int64_t i = row0(p);
            int rows = static_cast<int>(row0(p + 1) - i);
            pack_panel(A + i * rsa + pc * csa, rsa, csa, rows, kc, kMR, apack + (p - pb) * kMR * kc);
          }
          for (int64_t q = q0; q < q1; ++q) {
            const int64_t j = jc + q * kNR;
            const int cols = static_cast<int>(N - j < kNR ? N - j : kNR);
            if (fuse_b && pb == p0) pack_b(q);
            const float* bp = bpack + q * kNR * kc;
            for (int64_t p = pb; p < pe; ++p) {
              const int64_t i = row0(p);
              const int rows = static_cast<int>(row0(p + 1) - i);
              micro_tile(rows, cols, kc, apack + (p - pb) * kMR * kc, bp, kNR, C + i * ldc + j, ldc, alpha, beta_k);
            }
          }
        }
      };
      if (split_rows) {
        parallel_for(m_panels, 1, [&](int64_t p0, int64_t p1) { compute(p0, p1, 0, n_panels); });
      } else {
        parallel_for(n_panels, 1, [&](int64_t q0, int64_t q1) { compute(0, m_panels, q0, q1); });
      }
    }
  }
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  const int64_t rsa = trans_a ? 1 : lda, csa = trans_a ? lda : 1;
  const int64_t rsb = trans_b ? 1 : ldb, csb = trans_b ? ldb : 1;
  if (M <= kSkinnyMax) {
    sgemm_skinny(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, ldc, 1);
  } else if (N <= kSkinnyMax) {
    // C^T (N x M) = op(B)^T . op(A)^T, with C^T read through swapped strides.
    sgemm_skinny(N, M, K, alpha, B, csb, rsb, A, csa, rsa, beta, C, 1, ldc);
  } else {
    sgemm_packed(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

void sgemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                   float alpha, const float* A, int64_t lda, int64_t stride_a, const float* B,
                   int64_t ldb, int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  auto one = [&](int64_t b) {
    sgemm(trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b, ldb, beta,
          C + b * stride_c, ldc);
  };
  // Small products: one batch entry per task (each sgemm then runs on its thread). Large ones:
  // entries in order, each split over threads inside sgemm. Same results either way.
  const double flops = 2.0 * static_cast<double>(M) * N * (K > 0 ? K : 1);
  if (get_num_threads() > 1 && batch > 1 && flops < 4.0e6) {
    parallel_tasks(batch, one);
  } else {
    for (int64_t b = 0; b < batch; ++b) one(b);
  }
}

}  // namespace FG_ISA_NS
}  // namespace fg
