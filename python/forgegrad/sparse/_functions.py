"""The differentiable sparse ops. Each Function's forward and backward work on numpy arrays and sparse storages
(forgegrad.sparse._storage); gradients follow torch's: torch.sparse.mm / to_dense / sparse.sum give a sparse
input a sparse gradient on its (coalesced) pattern, torch.mm / @ give it a dense one."""
from __future__ import annotations

import numbers

import numpy as np

from ..tensor import Tensor
from . import _kernels
from ._autograd import SparseFunction
from ._storage import COO, CSR, _SparseStorage, dense_to_coo


def _dense_grad(g):
    return g.to_dense() if isinstance(g, _SparseStorage) else g


def _as_csr(s) -> CSR:
    if isinstance(s, CSR):
        return s
    if s.ndim != 2 or s.dense_dim:
        raise RuntimeError(f"sparse mm: the sparse operand must be a 2-D matrix with 2 sparse dims, got shape "
                           f"{s.shape} with dense_dim {s.dense_dim}")
    return s.to_csr()


class ToSparse(SparseFunction):
    name = "to_sparse"

    @staticmethod
    def forward(ctx, x, sparse_dim):
        return dense_to_coo(x, sparse_dim)

    @staticmethod
    def backward(ctx, g):
        return _dense_grad(g), None


class ToSparseCsr(SparseFunction):
    name = "to_sparse_csr"

    @staticmethod
    def forward(ctx, x):
        ctx.from_dense = isinstance(x, np.ndarray)
        return (dense_to_coo(x) if ctx.from_dense else x).to_csr()

    @staticmethod
    def backward(ctx, g):
        if ctx.from_dense:
            return _dense_grad(g)
        return g.to_coo() if isinstance(g, CSR) else g


class CsrToCoo(SparseFunction):
    name = "to_sparse"

    @staticmethod
    def forward(ctx, s):
        return s.to_coo()

    @staticmethod
    def backward(ctx, g):
        return g.to_csr() if isinstance(g, COO) else g


class ToDense(SparseFunction):
    name = "to_dense"

    @staticmethod
    def forward(ctx, s):
        ctx.pattern = s
        return s.to_dense()

    @staticmethod
    def backward(ctx, g):  # torch's to_dense_backward: the gradient at the input's pattern
        return ctx.pattern.sample(g)


class Coalesce(SparseFunction):
    name = "coalesce"

    @staticmethod
    def forward(ctx, s):
        return s.coalesce()

    @staticmethod
    def backward(ctx, g):
        return g


class Clone(SparseFunction):
    name = "clone"

    @staticmethod
    def forward(ctx, s):
        return s.copy()

    @staticmethod
    def backward(ctx, g):
        return g


class Cast(SparseFunction):
    name = "to"

    @staticmethod
    def forward(ctx, s, dtype):
        ctx.dtype = s.dtype
        return s.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype), None


class Transpose(SparseFunction):
    name = "t"

    @staticmethod
    def forward(ctx, s):
        if s.ndim != 2:
            raise RuntimeError(f"t() expects a 2-D sparse tensor, got shape {s.shape}")
        return _transpose(s)

    @staticmethod
    def backward(ctx, g):
        return _transpose(g) if isinstance(g, _SparseStorage) else g.T.copy()


def _transpose(s):
    if isinstance(s, CSR):
        return _kernels.transpose(s)
    return COO(s.indices[::-1].copy(), s.values, s.shape[::-1], False)


class SparseMM(SparseFunction):
    """out (M, N) = a (M, K, sparse COO or CSR) @ b (K, N, dense). sampled: a's gradient is (G @ b^T) at a's
    pattern, sparse (torch.sparse.mm); else dense G @ b^T (torch.mm)."""

    name = "sparse.mm"

    @staticmethod
    def forward(ctx, a, b, sampled):
        if not isinstance(a, _SparseStorage):
            raise TypeError("sparse.mm: the first argument must be a sparse tensor")
        if not isinstance(b, np.ndarray) or b.ndim != 2:
            raise TypeError(f"sparse.mm: the second argument must be a dense 2-D tensor, got "
                            f"{'a sparse tensor' if isinstance(b, _SparseStorage) else getattr(b, 'shape', b)}")
        csr = _as_csr(a)
        if csr.shape[1] != b.shape[0]:
            raise RuntimeError(f"sparse.mm: shapes {csr.shape} and {b.shape} cannot be multiplied")
        if csr.values.dtype != b.dtype:
            raise RuntimeError(f"sparse.mm: expected both operands to have one dtype, got {csr.values.dtype} and "
                               f"{b.dtype}")
        if b.dtype.kind != "f":
            raise TypeError(f"sparse.mm: float32 or float64 operands are needed, got {b.dtype}")
        ctx.csr, ctx.a, ctx.sampled = csr, a, sampled
        ctx.save_for_backward(b)
        return _kernels.spmm(csr, b)

    @staticmethod
    def backward(ctx, g):
        (b,) = ctx.saved_tensors
        csr, a = ctx.csr, ctx.a
        g = np.ascontiguousarray(g)
        ga = gb = None
        if ctx.needs_input_grad[1]:  # a^T @ G through the transpose's CSR (no scatter, no atomics)
            gb = _kernels.spmm(_kernels.transpose(csr), g)
        if ctx.needs_input_grad[0]:
            if ctx.sampled:
                vals = _kernels.sddmm(csr, g, b)
                ga = csr.with_values(vals) if isinstance(a, CSR) else COO(
                    np.stack([csr.rows(), csr.col]) if csr.nnz else np.zeros((2, 0), np.int64), vals, a.shape, True)
            else:
                ga = g @ b.T
        return ga, gb, None


    @staticmethod
    def differentiable_backward(ctx, args, kwargs, grad):
        """create_graph: the dense operand's gradient a^T @ G as a sparse op (differentiable in G), and the sparse
        operand's dense one (torch.mm's) as G @ b^T; its sampled one (sparse.mm's) has no such rule yet."""
        a, b, sampled = args
        ga = gb = None
        if b.requires_grad:
            gb = SparseMM.apply(Transpose.apply(a), grad, False)
        if a.requires_grad:
            if sampled:
                raise NotImplementedError("create_graph=True: sparse.mm's sparse-operand gradient (sampled at its "
                                          "pattern) has no differentiable rule yet; use torch.mm semantics (@) or "
                                          "detach the sparse operand")
            ga = grad @ b.t()
        return ga, gb, None


class AddSparse(SparseFunction):
    """a + alpha * b for two sparse tensors of one layout (COO: the entries of both, uncoalesced, as torch's)."""

    name = "add"

    @staticmethod
    def forward(ctx, a, b, alpha):
        if a.shape != b.shape:
            raise RuntimeError(f"sparse add: shapes {a.shape} and {b.shape} differ")
        if type(a) is not type(b):
            raise TypeError(f"sparse add: both operands must have one layout, got {a.layout_name} and {b.layout_name}")
        ctx.alpha = alpha
        return a + (b if alpha == 1 else b.with_values(b.values * np.asarray(alpha, b.values.dtype)))

    @staticmethod
    def backward(ctx, g):
        gb = g if ctx.alpha == 1 else _scale(g, ctx.alpha)
        return g, gb, None


class AddDense(SparseFunction):
    """dense + alpha * sparse (torch: add(dense, sparse)); a dense result."""

    name = "add"

    @staticmethod
    def forward(ctx, d, s, alpha):
        if d.shape != s.shape:
            raise RuntimeError(f"add(dense, sparse): shapes {d.shape} and {s.shape} differ")
        ctx.alpha, ctx.pattern = alpha, s
        return d + alpha * s.to_dense()

    @staticmethod
    def backward(ctx, g):
        return g, ctx.pattern.sample(g * ctx.alpha), None


def _scale(s, c):
    if isinstance(s, _SparseStorage):
        return s.with_values(s.values * np.asarray(c, s.values.dtype))
    return s * c


class MulScalar(SparseFunction):
    name = "mul"

    @staticmethod
    def forward(ctx, s, c):
        ctx.c = c
        return _scale(s, c)

    @staticmethod
    def backward(ctx, g):
        return _scale(g, ctx.c), None


class SparseSum(SparseFunction):
    """torch.sparse.sum: all elements (a dense 0-d tensor), or over ``dims``: sparse while sparse dims remain,
    else dense. The gradient has the input's coalesced pattern."""

    name = "sparse.sum"

    @staticmethod
    def forward(ctx, s, dims):
        s = s.coalesce() if isinstance(s, COO) else s.to_coo()
        ctx.pattern, ctx.dims = s, dims
        if dims is None:
            return np.asarray(s.values.sum(dtype=s.values.dtype))
        sd = s.sparse_dim
        keep = [d for d in range(sd) if d not in dims]
        vals = s.values.sum(axis=tuple(d - sd + 1 for d in dims if d >= sd)) if any(d >= sd for d in dims) \
            else s.values
        shape = tuple(n for d, n in enumerate(s.shape) if d not in dims)
        if not keep:  # every sparse dim summed: a dense result
            return vals.sum(axis=0).astype(s.values.dtype, copy=False).reshape(shape)
        return COO(s.indices[keep], vals, shape, len(keep) == sd).coalesce()

    @staticmethod
    def backward(ctx, g):
        s, dims = ctx.pattern, ctx.dims
        g = _dense_grad(g)
        if dims is None:
            return s.with_values(np.broadcast_to(g, s.values.shape).copy()), None
        sd = s.sparse_dim
        keep = [d for d in range(sd) if d not in dims]
        # the output gradient at each input entry's kept indices, broadcast over the summed dense dims
        at = g[tuple(s.indices[keep])] if keep else np.broadcast_to(g, (s.nnz,) + g.shape)
        dense_shape = tuple(1 if d in dims else s.shape[d] for d in range(sd, s.ndim))
        vals = np.broadcast_to(at.reshape((s.nnz,) + dense_shape), s.values.shape).copy()
        return s.with_values(vals), None


class SparseSoftmax(SparseFunction):
    """torch.sparse.softmax / log_softmax over ``dim`` of a COO tensor: each group of entries that share every
    other sparse index is normalised on its own; unspecified entries count as -inf (they stay unspecified)."""

    name = "sparse.softmax"

    @staticmethod
    def forward(ctx, s, dim, log):
        if not isinstance(s, COO) or s.dense_dim:
            raise TypeError("sparse.softmax: a COO tensor without dense dims is needed")
        s = s.coalesce()
        other = [d for d in range(s.sparse_dim) if d != dim]
        keys = np.ravel_multi_index(tuple(s.indices[other]), tuple(s.shape[d] for d in other)) if other and s.nnz \
            else np.zeros(s.nnz, np.int64)
        _, group = np.unique(keys, return_inverse=True)
        group = group.reshape(-1)
        ngroups = int(group.max()) + 1 if s.nnz else 0
        peak = np.full(ngroups, -np.inf, s.values.dtype)
        np.maximum.at(peak, group, s.values)
        e = np.exp(s.values - peak[group])
        total = np.zeros(ngroups, s.values.dtype)
        np.add.at(total, group, e)
        out = (s.values - peak[group] - np.log(total)[group]) if log else e / total[group]
        ctx.group, ctx.ngroups, ctx.log, ctx.pattern = group, ngroups, log, s
        ctx.save_for_backward(out)
        return s.with_values(out.astype(s.values.dtype, copy=False))

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        s = ctx.pattern
        gv = g.coalesce().values if isinstance(g, COO) else s.sample(g).values  # the output's pattern is s's
        gsum = np.zeros(ctx.ngroups, y.dtype)
        if ctx.log:
            np.add.at(gsum, ctx.group, gv)
            gx = gv - np.exp(y) * gsum[ctx.group]
        else:
            np.add.at(gsum, ctx.group, gv * y)
            gx = y * (gv - gsum[ctx.group])
        return s.with_values(gx.astype(y.dtype, copy=False)), None, None


# ---- entry points -------------------------------------------------------------------------------------------
def _is_sparse(x) -> bool:
    return isinstance(x, Tensor) and isinstance(x._data, _SparseStorage)


def mm(a, b, sampled: bool = True):
    if _is_sparse(a) and _is_sparse(b):
        from ._spgemm import SparseSparseMM
        return SparseSparseMM.apply(a, b, sampled)
    if not _is_sparse(a):
        if _is_sparse(b):
            return _dense_sparse_mm(a, b, sampled)
        raise TypeError("sparse mm: neither operand is sparse")
    if not isinstance(b, Tensor):
        raise TypeError(f"sparse mm: the second argument must be a Tensor, got {type(b).__name__}")
    if b.ndim == 1:  # matrix @ vector
        return SparseMM.apply(a, b.reshape(-1, 1), sampled).reshape(-1)
    return SparseMM.apply(a, b, sampled)


def _dense_sparse_mm(d, s, sampled):
    """dense (M, K) or (K,) @ sparse (K, N) as (s^T @ d^T)^T: SparseMM on s's transpose, so the values, both
    gradients (s's sparse on its pattern when ``sampled``, as torch.sparse.mm's; dense for torch.mm / @) and
    create_graph come from SparseMM and Transpose unchanged."""
    if not isinstance(d, Tensor):
        raise TypeError(f"sparse mm: the first argument must be a Tensor, got {type(d).__name__}")
    if s.ndim != 2 or s._data.dense_dim:
        raise RuntimeError(f"sparse mm: the sparse operand must be a 2-D matrix with 2 sparse dims, got shape "
                           f"{tuple(s.shape)} with dense_dim {s._data.dense_dim}")
    if d.ndim == 0:
        raise RuntimeError("sparse mm: the dense operand must be at least 1-D, got a 0-D tensor")
    k, n = s.shape
    if d.shape[-1] != k:
        m = int(np.prod(d.shape[:-1], dtype=np.int64)) if d.ndim > 1 else 1
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({m}x{d.shape[-1]} and {k}x{n})")
    if d.ndim != 2:  # vector @ matrix, or torch.matmul's batch (..., K) @ (K, N) as one (-1, K) matrix
        flat = SparseMM.apply(Transpose.apply(s), d.reshape(-1, k).t(), sampled).t()
        return flat.reshape(tuple(d.shape[:-1]) + (n,))
    return SparseMM.apply(Transpose.apply(s), d.t(), sampled).t()


def add(a, b, alpha=1):
    if _is_sparse(a) and _is_sparse(b):
        return AddSparse.apply(a, b, alpha)
    if isinstance(b, Tensor) and _is_sparse(a) and alpha == 1:
        return AddDense.apply(b, a, 1)
    if isinstance(a, Tensor) and _is_sparse(b):
        return AddDense.apply(a, b, alpha)
    if isinstance(b, numbers.Number):
        raise TypeError("sparse + number is not supported (it would make every element nonzero); use "
                        ".to_dense() + number")
    raise TypeError(f"add: unsupported operands {type(a).__name__} and {type(b).__name__} for a sparse tensor")


def mul(a, b):
    if _is_sparse(a) and isinstance(b, numbers.Number) and not isinstance(b, bool):
        return MulScalar.apply(a, b)
    if _is_sparse(b) and isinstance(a, numbers.Number) and not isinstance(a, bool):
        return MulScalar.apply(b, a)
    raise TypeError("mul: a sparse tensor can be multiplied by a number only (sparse * tensor is not supported)")


def sparse_sum(s, dim=None):
    if not _is_sparse(s):
        raise TypeError("sparse.sum: input must be a sparse tensor")
    if dim is not None:
        dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
        nd = s.ndim
        norm = tuple(sorted({d + nd if d < 0 else d for d in dims}))
        if any(not 0 <= d < nd for d in norm):
            raise IndexError(f"sparse.sum: dim {dim} is out of range for a {nd}-D tensor")
        dim = norm
    return SparseSum.apply(s, dim)


def transpose(s):
    return Transpose.apply(s)


class EmbeddingSparse(SparseFunction):
    """``weight[indices]`` whose weight gradient is sparse COO (torch's F.embedding(sparse=True)): one entry per
    looked-up position (uncoalesced: a row looked up twice has two entries), rows (1, n), values (n, dim); the
    positions holding padding_idx are left out."""

    name = "embedding"

    @staticmethod
    def forward(ctx, weight, indices, padding_idx, scale_grad_by_freq):
        if scale_grad_by_freq:  # torch raises this at backward; here before any work
            raise RuntimeError("embedding_backward: scale_grad_by_freq not supported with sparse gradients")
        from ..ops.rnn import EmbeddingFunction
        out = EmbeddingFunction.forward(ctx, weight, indices, padding_idx, scale_grad_by_freq)
        ctx.weight_shape = weight.shape
        return out

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        rows = idx.reshape(-1)
        vals = np.array(g.reshape(-1, g.shape[-1]), copy=True)
        if ctx.padding_idx is not None:
            keep = rows != ctx.padding_idx
            rows, vals = rows[keep], vals[keep]
        return COO(rows.reshape(1, -1).astype(np.int64), vals, ctx.weight_shape, rows.size <= 1), None, None, None


class FromValues(SparseFunction):
    """A sparse tensor made of a values tensor that requires grad (sparse_coo_tensor / sparse_csr_tensor): values'
    gradient is the output's gradient at each entry's position (each duplicate entry gets it whole, as torch's)."""

    name = "sparse_coo_tensor"

    @staticmethod
    def forward(ctx, values, pattern):
        ctx.pattern = pattern
        return pattern.with_values(values.copy())

    @staticmethod
    def backward(ctx, g):
        p = ctx.pattern
        if isinstance(g, type(p)) and _same_pattern(g, p):
            return g.values, None
        dense = g.to_dense() if isinstance(g, _SparseStorage) else g
        at = tuple(p.indices) if isinstance(p, COO) else (p.rows(), p.col)
        return np.ascontiguousarray(dense[at]), None


def _same_pattern(a, b) -> bool:
    if isinstance(a, COO):
        return a.indices is b.indices or (a.indices.shape == b.indices.shape and np.array_equal(a.indices, b.indices))
    return (a.crow is b.crow and a.col is b.col) or (np.array_equal(a.crow, b.crow) and np.array_equal(a.col, b.col))


class Values(SparseFunction):
    """``s.values()`` inside the graph: the values array itself (shared, as torch's), its gradient a sparse tensor
    of s's pattern."""

    name = "values"

    @staticmethod
    def forward(ctx, s):
        ctx.pattern = s
        return s.values

    @staticmethod
    def backward(ctx, g):
        return ctx.pattern.with_values(np.ascontiguousarray(g))


class SampledAddmm(SparseFunction):
    """torch.sparse.sampled_addmm: beta * s + alpha * (m1 @ m2) at s's (CSR) pattern, a CSR result; the product
    at the nonzeros only, by the SDDMM kernel. Gradients: s's is beta * G (its pattern), m1's alpha * G @ m2^T and
    m2's alpha * (G^T @ m1)^T, both through the SpMM kernel."""

    name = "sparse.sampled_addmm"

    @staticmethod
    def forward(ctx, s, m1, m2, beta, alpha):
        if not isinstance(s, CSR):
            raise TypeError("sparse.sampled_addmm: input must be a sparse CSR tensor")
        if not (isinstance(m1, np.ndarray) and isinstance(m2, np.ndarray) and m1.ndim == 2 and m2.ndim == 2):
            raise TypeError("sparse.sampled_addmm: mat1 and mat2 must be dense 2-D tensors")
        if m1.shape[1] != m2.shape[0] or (m1.shape[0], m2.shape[1]) != s.shape:
            raise RuntimeError(f"sparse.sampled_addmm: mat1 {m1.shape} @ mat2 {m2.shape} must have input's shape "
                               f"{s.shape}")
        if not m1.dtype == m2.dtype == s.dtype or m1.dtype.kind != "f":
            raise RuntimeError(f"sparse.sampled_addmm: expected one floating dtype, got input {s.dtype}, mat1 "
                               f"{m1.dtype}, mat2 {m2.dtype}")
        m2t = np.ascontiguousarray(m2.T)
        ctx.s, ctx.beta, ctx.alpha = s, beta, alpha
        ctx.save_for_backward(m1, m2t)
        dt = s.dtype.type
        return s.with_values(dt(beta) * s.values + dt(alpha) * _kernels.sddmm(s, np.ascontiguousarray(m1), m2t))

    @staticmethod
    def backward(ctx, g):
        m1, m2t = ctx.saved_tensors
        s, dt = ctx.s, ctx.s.dtype.type
        gv = g.values if isinstance(g, CSR) else g[s.rows(), s.col]  # the output's pattern is s's
        g_csr = s.with_values(np.ascontiguousarray(gv))
        out = [None] * 5
        if ctx.needs_input_grad[0]:
            out[0] = s.with_values(dt(ctx.beta) * gv)
        if ctx.needs_input_grad[1]:
            out[1] = dt(ctx.alpha) * _kernels.spmm(g_csr, m2t)
        if ctx.needs_input_grad[2]:
            out[2] = dt(ctx.alpha) * _kernels.spmm(_kernels.transpose(g_csr), np.ascontiguousarray(m1)).T.copy()
        return tuple(out)


class SparseMask(SparseFunction):
    """torch's ``dense.sparse_mask(mask)``: dense's values at mask's coalesced pattern, as a sparse tensor of mask's
    layout; dense's gradient is the (densified) output gradient at those positions."""

    name = "sparse_mask"

    @staticmethod
    def forward(ctx, dense, mask):
        if dense.shape != mask.shape:
            raise RuntimeError(f"sparse_mask: shapes {dense.shape} and {mask.shape} differ")
        return mask.sample(dense)

    @staticmethod
    def backward(ctx, g):
        return _dense_grad(g), None
