"""sparse @ sparse (torch.sparse.mm / torch.mm of two 2-D sparse tensors of one layout): a sparse result of that
layout, every structural product kept (an entry whose products cancel stays, as 0, as torch's). float32 and float64
run the C++ kernel forgegrad._C.sparse.spgemm (cpp/kernels/spgemm.cpp: Gustavson row by row, a symbolic pass then a
numeric one, threaded over row blocks). Other dtypes (float16, integers, ...) run spgemm_reference below, numpy only,
which is also the tests' oracle: Gustavson's expansion (each nonzero a_ik times row k of b, all at once), then the
products summed by (row, col): into a dense block of rows at a time while the output is small next to the products,
else by sorting the keys; memory is O(number of products).

Both round each product to the values' dtype and sum a (row, col)'s products in product order (a's nonzeros in the
row, then b's); the kernel sums in float64, as the reference's dense-rows path does, so the two give the same bits
whenever the reference takes that path; its sort path sums in the values' dtype (np.add.reduceat), which can differ
from the kernel's float32 results in the last bits.

Gradients as torch's for COO: torch.mm gives a the full sparse product G @ b^T and b the full a^T @ G;
torch.sparse.mm gives them at a's and b's coalesced patterns (both products through spgemm, so the kernel too).
torch 2.13 has no backward for CSR @ CSR; here CSR gets the same rules in CSR."""
from __future__ import annotations

import numpy as np

from . import _kernels
from ._autograd import SparseFunction
from ._storage import CSR, _SparseStorage

_I64 = np.dtype(np.int64)


def spgemm(a: CSR, b: CSR) -> CSR:
    """a (M, K) @ b (K, N) as CSR with sorted, distinct columns per row; duplicates summed in product order. The C++
    kernel for float32 / float64, else the numpy reference."""
    if a.values.dtype == b.values.dtype and a.values.dtype in _kernels.SPGEMM_DTYPES:
        return _kernels.spgemm(a, b)
    return spgemm_reference(a, b)


def spgemm_reference(a: CSR, b: CSR) -> CSR:
    """spgemm in numpy (any dtype): the products all at once, then summed by (row, col)."""
    m, n = a.shape[0], b.shape[1]
    dtype = np.result_type(a.values.dtype, b.values.dtype)
    counts = np.diff(b.crow)[a.col]  # the products each nonzero of a makes
    total = int(counts.sum())
    if total == 0:
        return CSR(np.zeros(m + 1, _I64), np.zeros(0, _I64), np.zeros(0, dtype), (m, n))
    # the position in b of every product: b.crow[k] + 0, 1, ... for each nonzero a_ik
    first = np.cumsum(counts) - counts
    pos = np.repeat(b.crow[a.col] - first, counts) + np.arange(total, dtype=_I64)
    rows = np.repeat(a.rows(), counts)  # ascending: the products come row by row
    keys = rows * n + b.col[pos]
    vals = np.repeat(a.values, counts) * b.values[pos]
    if m * n <= DENSE_ACCUMULATOR_RATIO * total:
        keys, summed = _sum_by_dense_rows(keys, rows, vals, m, n)
    else:
        keys, summed = _sum_by_sort(keys, vals)
    rows, cols = np.divmod(keys, n)
    crow = np.zeros(m + 1, _I64)
    np.cumsum(np.bincount(rows, minlength=m), out=crow[1:])
    return CSR(crow, cols.astype(_I64, copy=False), summed.astype(dtype, copy=False), (m, n))


# the dense accumulator (O(M N + products)) replaces the sort (O(products log products)) while the output holds at
# most this many elements per product; its blocks of rows stay within _BLOCK elements (8 MiB of float64)
DENSE_ACCUMULATOR_RATIO = 16
_BLOCK = 1 << 20


def _sum_by_sort(keys, vals):
    """The distinct keys (ascending) and the sums of their values, in product order."""
    order = np.argsort(keys, kind="stable")
    keys, vals = keys[order], vals[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.add.reduceat(vals, starts)


def _sum_by_dense_rows(keys, rows, vals, m, n):
    """As _sum_by_sort, by accumulating blocks of output rows densely (bincount, float64) and reading back the
    positions some product hit (a structural entry even when its products cancel)."""
    step = max(1, _BLOCK // max(n, 1))
    out_keys, out_vals = [], []
    bounds = np.searchsorted(rows, np.arange(0, m + step, step))
    for i, r0 in enumerate(range(0, m, step)):
        lo, hi = bounds[i], bounds[i + 1]
        if lo == hi:
            continue
        size = min(step, m - r0) * n
        local = keys[lo:hi] - r0 * n
        acc = np.bincount(local, weights=vals[lo:hi], minlength=size)
        hit = np.zeros(size, bool)
        hit[local] = True
        at = np.flatnonzero(hit)
        out_keys.append(at + r0 * n)
        out_vals.append(acc[at])
    return np.concatenate(out_keys), np.concatenate(out_vals)


def _csr(s) -> CSR:
    return s if isinstance(s, CSR) else s.to_csr()


def _keys(c: CSR) -> np.ndarray:
    return c.rows() * c.shape[1] + c.col


def _at_pattern(prod: CSR, pattern: CSR) -> np.ndarray:
    """prod's values at pattern's entries (0 where prod has none); both CSR with sorted columns."""
    pk, qk = _keys(pattern), _keys(prod)
    at = np.minimum(np.searchsorted(qk, pk), max(qk.size - 1, 0))
    found = (qk[at] == pk) if qk.size else np.zeros(pk.size, bool)
    return np.where(found, prod.values[at] if qk.size else 0, 0).astype(prod.values.dtype, copy=False)


def _as_layout(c: CSR, like):
    return c if isinstance(like, CSR) else c.to_coo()


class SparseSparseMM(SparseFunction):
    name = "sparse.mm"

    @staticmethod
    def forward(ctx, a, b, sampled):
        if type(a) is not type(b):
            raise RuntimeError(f"sparse mm: both sparse operands must have one layout, got {a.layout_name} and "
                               f"{b.layout_name} (torch has no CPU kernel for mixed layouts either)")
        for name, s in (("mat1", a), ("mat2", b)):
            if s.ndim != 2 or s.dense_dim:
                raise RuntimeError(f"sparse mm: {name} must be a 2-D matrix with 2 sparse dims, got shape {s.shape} "
                                   f"with dense_dim {s.dense_dim}")
        if a.shape[1] != b.shape[0]:
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({a.shape[0]}x{a.shape[1]} and "
                               f"{b.shape[0]}x{b.shape[1]})")
        if a.dtype != b.dtype:
            raise RuntimeError(f"mat1 dtype {a.dtype} does not match mat2 dtype {b.dtype}")
        ac, bc = _csr(a), _csr(b)
        ctx.ac, ctx.bc, ctx.a, ctx.b, ctx.sampled = ac, bc, a, b, sampled
        return _as_layout(spgemm(ac, bc), a)

    @staticmethod
    def backward(ctx, g):
        ac, bc = ctx.ac, ctx.bc
        ga = gb = None
        if isinstance(g, _SparseStorage):
            gc = _csr(g)
            if ctx.needs_input_grad[0]:
                ga = spgemm(gc, _kernels.transpose(bc))
            if ctx.needs_input_grad[1]:
                gb = spgemm(_kernels.transpose(ac), gc)
        else:  # a dense output gradient: dense products through the SpMM kernel
            g = np.ascontiguousarray(g)
            if ctx.needs_input_grad[0]:
                ga = _kernels.spmm(bc, np.ascontiguousarray(g.T)).T.copy()
            if ctx.needs_input_grad[1]:
                gb = _kernels.spmm(_kernels.transpose(ac), g)
        out = []
        for grad, pattern, like in ((ga, ac, ctx.a), (gb, bc, ctx.b)):
            if grad is None:
                out.append(None)
            elif ctx.sampled:  # torch.sparse.mm: at the operand's coalesced pattern
                vals = _at_pattern(grad, pattern) if isinstance(grad, CSR) else grad[pattern.rows(), pattern.col]
                out.append(_as_layout(pattern.with_values(np.ascontiguousarray(vals)), like))
            else:
                out.append(_as_layout(grad, like) if isinstance(grad, CSR) else grad)
        return out[0], out[1], None
