// Sums of many short contiguous rows (cpp/kernels/per_isa/reduce_rows.cpp): the global average pool of
// NCHW (rows of H * W), mean / sum over the trailing axes of a contiguous tensor, and their backward.
//
// The order of a row's sum is fixed (the same on every ISA, at any thread count, and in cuda/pool.cu's
// global pool). The row, zero-padded to whole blocks of 32, is cut into blocks x[b .. b + 32); 8 float64
// chains c[j], each starting at 0.0, take per block in order
//     c[j] += double((x[b + j] + x[b + 8 + j]) + (x[b + 16 + j] + x[b + 24 + j]))   (the inner sums in float32);
// then the halving tree h[l] = c[l] + c[l + 4] (l < 4), q[l] = h[l] + h[l + 2] (l < 2), sum = q[0] + q[1].
// The error stays at float32 rounding over any row length: two float roundings per four elements (at most
// 2^-23 of their magnitude), float64 after, where a float running sum drifts by the length times the float
// step (torch's float partial sums by their length). The float sums make one float64 conversion and add
// per 32 elements, which keeps a long row at the float adds' speed and a short one at few operations.
#pragma once
#include <cstdint>

#include "forgegrad/dispatch.h"

namespace fg {

// y[r] = float(sum(x[r*L : r*L + L]) / L) when mean, else float(sum); R, L >= 1.
FG_KERNEL(void, sum_rows_f32, (const float* x, int64_t R, int64_t L, bool mean, float* y), (x, R, L, mean, y))
// Sums over leading axes (in reduce_rows.cpp): x contiguous (A, B, L), A, B, L >= 1, y[b] = float(sum / (A * L))
// when mean, else float(sum), of the A * L values x[a][b][l], in float64:
//   L == 1: 0.0 + x[0][b] + x[1][b] + ... in row order (one chain: a column's values are B apart);
//   L > 1:  each row x[a][b][:] gives its 8 chains in the order above, the column's chains are their sums in
//           row order (C[j] = c_0[j] + c_1[j] + ...), then the halving tree.
// The same bits on every ISA and at any thread count (threads split the columns b).
FG_KERNEL(void, sum_lead_f32, (const float* x, int64_t A, int64_t B, int64_t L, bool mean, float* y),
          (x, A, B, L, mean, y))
// Sums over a middle axis (or a block of them, in reduce_rows.cpp): x contiguous (O, M, I), O, M, I >= 1,
// y[o][i] = float(sum / M) when mean, else float(sum), of the M values x[o][m][i] in float64 in sum_lead's
// L == 1 order per outer index: 0.0 + x[o][0][i] + x[o][1][i] + ... (one chain per column). The same bits on
// every ISA and at any thread count (threads split blocks of columns of the outer indices).
FG_KERNEL(void, sum_mid_f32, (const float* x, int64_t O, int64_t M, int64_t I, bool mean, float* y),
          (x, O, M, I, mean, y))
// Sums over any set of axes of a strided layout (in reduce_axes.cpp): x.sum((1, 3)), x.mean((0, 2)) of a 4-D
// tensor, sums of sliced views. x has nd (1..kSumAxesMaxDims) axes, outer to inner, shape[k] >= 1, stride[k] in
// elements (any sign), the innermost axis of size > 1 with stride 1; reduced[k] says which axes are summed.
// y (C-contiguous) holds the kept axes in x's order: float(sum / n) when mean, else float(sum), n the number of
// values each output sums (>= 1). The order, in float64, with axes of size 1 left out:
//   innermost axis reduced: the innermost reduced axes, as far as they are contiguous with each other (stride[k]
//     == shape[k + 1] * stride[k + 1]), make rows of L contiguous values, each row giving its 8 chains as above;
//     an output's chains are their sums over its rows in the lexicographic order of the other reduced axes'
//     indices (C[j] = c_0[j] + c_1[j] + ...), then the halving tree (sum_lead's L > 1 order);
//   innermost axis kept: one chain per output, 0.0 + its values in the lexicographic order of the reduced axes'
//     indices (sum_mid's order).
// Where a layout is sum_rows', sum_lead's or sum_mid's, the bits are theirs. The same bits on every ISA and at
// any thread count (threads split the outputs, or blocks of columns of the outputs).
constexpr int kSumAxesMaxDims = 16;
FG_KERNEL(void, sum_axes_f32,
          (const float* x, int nd, const int64_t* shape, const int64_t* stride, const bool* reduced, bool mean,
           float* y),
          (x, nd, shape, stride, reduced, mean, y))
// gx[r*L + k] = g[r] / divisor for k < L (float32 division, torch's mean / average pool backward).
FG_KERNEL(void, fill_rows_f32, (const float* g, int64_t R, int64_t L, float divisor, float* gx), (g, R, L, divisor, gx))

}  // namespace fg
