"""LU factorization with partial pivoting (torch.linalg.lu_factor) and the Cholesky solve (torch.cholesky_solve),
batched over leading dims, float32/float64.

numpy has no LU: ``lu_factor_array`` is getrf's unblocked algorithm (the row of largest |value| as pivot, the first
on ties, a NaN never chosen over a number unless it comes first, as LAPACK's idamax), one column step at a time,
each step vectorised over the whole batch; it keeps the input's dtype. Pivots are 1-based int32, as LAPACK / torch.
An exactly zero pivot is recorded in ``info`` (the 1-based step of the first one, as getrf) and the factorization
goes on, as getrf's. The gradients are torch's (FunctionsManual linalg_lu_backward / lu_factor_ex_backward,
cholesky_solve_backward), each written once over the NP / TS vocabulary of ops/_linalg_common.py so the Tensor form
gives double backward."""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from . import _linalg_common as C
from . import _meta as M
from ._onnx_linalg import cholesky_solve_onnx
from ._util import unbroadcast
from .registry import BadInput, Sample, register_op

NO_ONNX = "ONNX (opset 21) has no {} operator"


def _arg(args, kwargs, i, name, default=None):
    return args[i] if i < len(args) else kwargs.get(name, default)


# ---- the factorization on arrays ---------------------------------------------------------------------------------
_BLOCK = 16  # columns per panel: the trailing update of each panel is one batched matmul


def lu_factor_array(a):
    """(LU, pivots, info) of a (..., m, n) array: P A = L U with L unit lower (its strict part in LU's lower
    triangle), U in LU's upper triangle; pivots (..., min(m, n)) 1-based int32; info (...) int32.

    Right-looking blocked, as getrf: each panel of _BLOCK columns is factored column by column (pivot search, row
    swap across the whole row, rank-1 update within the panel), then the panel's rows of U by forward substitution
    and the trailing matrix by one matmul. The pivots are the unblocked algorithm's (the same values, up to
    rounding, are compared)."""
    *batch, m, n = a.shape
    k = min(m, n)
    flat = np.array(a.reshape((int(np.prod(batch, dtype=np.int64)), m, n)), copy=True)
    count = flat.shape[0]
    piv = np.empty((count, k), np.int32)
    info = np.zeros(count, np.int32)
    rows = np.arange(count)
    tiny = np.finfo(flat.dtype).tiny
    for j0 in range(0, k, _BLOCK):
        j1 = min(j0 + _BLOCK, k)
        for j in range(j0, j1):
            col = np.abs(flat[:, j:, j])
            p = np.argmax(col, axis=1)  # the first NaN if a column has one
            if np.isnan(col[rows, p]).any():  # idamax's |x| > max: a NaN never beats a number, nor is a leading
                nan = np.isnan(col)           # NaN ever replaced
                col = np.where(nan, -1.0, col)
                col[nan[:, 0], 0] = np.inf
                p = np.argmax(col, axis=1)
            p = p + j
            piv[:, j] = p + 1
            top = flat[:, j].copy()  # swap rows j and p of each matrix (p == j: a no-op)
            flat[:, j] = flat[rows, p]
            flat[rows, p] = top
            d = flat[:, j, j]
            if not d.all():
                zero = d == 0
                info[(info == 0) & zero] = j + 1
                # a zero pivot's column is all zeros below it (it was the largest): getrf skips its scaling
                d = np.where(zero, 1, d)
            if j + 1 < m:
                # times the reciprocal, as getf2 (not a division): on exact ties (integer-valued matrices) the
                # rounding decides later pivots, and this rounding is LAPACK's; a subnormal pivot divides, as there
                big = np.abs(d) >= tiny
                if big.all():
                    flat[:, j + 1:, j] *= (1 / d)[:, None]
                else:
                    flat[big, j + 1:, j] *= (1 / d[big])[:, None]
                    flat[~big, j + 1:, j] /= d[~big, None]
                flat[:, j + 1:, j + 1:j1] -= flat[:, j + 1:, j, None] * flat[:, j, None, j + 1:j1]
        if j1 < n:
            # U12 = L11^-1 A12 (A12's rows were swapped, not updated, during the panel), then A22 -= L21 U12
            for j in range(j0, j1 - 1):
                flat[:, j + 1:j1, j1:] -= flat[:, j + 1:j1, j, None] * flat[:, j, None, j1:]
            if j1 < m:
                flat[:, j1:, j1:] -= flat[:, j1:, j0:j1] @ flat[:, j0:j1, j1:]
    return flat.reshape(a.shape), piv.reshape(tuple(batch) + (k,)), info.reshape(tuple(batch))


def pivots_to_perm(piv, m):
    """The row permutation (..., m) that getrf's pivots apply: (P^T A)[i] = A[perm[i]]."""
    batch = piv.shape[:-1]
    count = int(np.prod(batch, dtype=np.int64))  # (reshape(-1, 0) is ambiguous for a 0 x 0 matrix)
    perm = np.broadcast_to(np.arange(m), batch + (m,)).reshape(count, m).copy()
    p = piv.reshape(count, piv.shape[-1]).astype(np.int64) - 1
    rows = np.arange(perm.shape[0])
    for i in range(p.shape[1]):
        a, b = perm[:, i].copy(), perm[rows, p[:, i]].copy()
        perm[:, i], perm[rows, p[:, i]] = b, a
    return perm.reshape(batch + (m,))


def perm_matrix(piv, m, dtype):
    """P (..., m, m) with A = P L U: P[perm[i], i] = 1."""
    perm = pivots_to_perm(piv, m)
    return np.swapaxes(np.eye(m, dtype=dtype)[perm], -1, -2)


def check_pivots(piv, lu_shape, op, name="pivots"):
    """pivots: an int32 array (..., min(m, n)) matching LU's batch, each in 1..m."""
    if piv.dtype != np.int32:
        raise TypeError(f"{op}: argument '{name}' must be an int32 tensor (as linalg.lu_factor returns), got "
                        f"{piv.dtype}")
    m, n = lu_shape[-2:]
    want = tuple(lu_shape[:-2]) + (min(m, n),)
    if tuple(piv.shape) != want:
        raise ValueError(f"{op}: argument '{name}' must have shape {want} for LU of shape {tuple(lu_shape)}, got "
                         f"{tuple(piv.shape)}")
    if piv.size and (piv.min() < 1 or piv.max() > m):
        raise ValueError(f"{op}: argument '{name}' holds values outside 1..{m} (1-based row indices, as "
                         "linalg.lu_factor returns)")


# ---- the backward formula (torch's linalg_lu_backward, real case) -------------------------------------------------
def unpack(B, LU, k):
    """(L (..., m, k) unit lower, U (..., k, n) upper) from a packed LU."""
    m, n = LU.shape[-2:]
    L = B.narrow(B.tril(LU, -1), -1, 0, k) + B.const(np.eye(m, k), LU)
    U = B.narrow(B.triu(LU), -2, 0, k)
    return L, U


def _zeros(B, shape, like):
    return B.const(np.zeros(tuple(shape)), like)


def lu_backward(B, gL, gU, P, L, U):
    """A = P L U: the gradient of A from gL (..., m, k) and gU (..., k, n) (either may be None)."""
    m, n = L.shape[-2], U.shape[-1]
    k = min(m, n)
    if m == n:
        ga = None if gL is None else B.tril(B.mT(L) @ gL, -1)
        if gU is not None:
            t = B.triu(gU @ B.mT(U))
            ga = t if ga is None else ga + t
        ga = B.solve_tri(B.mT(U), ga, False, False)
        ga = B.solve_tri(B.mT(L), ga, True, True)
    elif m < n:
        U1 = B.narrow(U, -1, 0, k)
        ga = None if gL is None else B.mT(L) @ gL
        if gU is not None:
            t = B.triu(gU) @ B.mT(U)
            ga = -t if ga is None else ga - t
        ga = B.solve_tri(B.mT(U1), B.tril(ga, -1), False, False)
        if gU is not None:
            ga = B.cat([ga + B.triu(B.narrow(gU, -1, 0, k)), B.narrow(gU, -1, k, n - k)], -1)
        ga = B.solve_tri(B.mT(L), ga, True, True)
        if gU is None:
            ga = B.cat([ga, _zeros(B, tuple(U.shape[:-1]) + (n - k,), U)], -1)
    else:
        L1 = B.narrow(L, -2, 0, k)
        ga = None if gU is None else gU @ B.mT(U)
        if gL is not None:
            t = B.mT(L) @ B.tril(gL, -1)
            ga = -t if ga is None else ga - t
        ga = B.solve_tri(B.mT(L1), B.triu(ga), True, True)
        if gL is not None:
            ga = B.cat([ga + B.tril(B.narrow(gL, -2, 0, k), -1), B.narrow(gL, -2, k, m - k)], -2)
        ga = B.solve_tri(B.mT(U), ga, False, False)
        if gL is None:
            ga = B.cat([ga, _zeros(B, tuple(ga.shape[:-2]) + (m - k, k), L)], -2)
    return P @ ga


def lu_factor_backward(B, LU, P, g):
    """torch's lu_factor_ex_backward: the packed gradient split into L's (first k columns) and U's (first k
    rows) parts."""
    m, n = LU.shape[-2:]
    k = min(m, n)
    L, U = unpack(B, LU, k)
    return lu_backward(B, B.narrow(g, -1, 0, k), B.narrow(g, -2, 0, k), P, L, U)


# ---- linalg_lu_factor --------------------------------------------------------------------------------------------
def _check_pivot(pivot, op):
    pivot = C.check_bool(pivot, "pivot", op)
    if not pivot:
        raise RuntimeError(f"{op}: LU without pivoting is not implemented on the CPU (torch neither; pivot=False is "
                           "CUDA-only there)")


def _lu_meta(a, pivot=True):
    C.check_matrix(a, "A", "linalg.lu_factor", square=False)
    m, n = a.shape[-2:]
    return M.MetaArray(a.shape, a.dtype), M.MetaArray(tuple(a.shape[:-2]) + (min(m, n),), np.int32)


def _lu_flops(out, inputs, kwargs):
    a = inputs[0]
    m, n = a.shape[-2:]
    k = min(m, n)
    return int(np.prod(a.shape[:-2], dtype=np.int64)) * (m * n * k - (m + n) * k * k // 2 + k ** 3 // 3)


def _lu_samples():
    rng = np.random.default_rng(0)

    def m(*s):
        return rng.uniform(-1, 1, s).astype(np.float32)
    return [Sample((m(4, 4),), name="square"), Sample((m(6, 4),), name="tall"), Sample((m(3, 5),), name="wide"),
            Sample((m(2, 3, 5, 5),), name="batched (2,3,5,5)"), Sample((m(2, 1, 7, 3),), name="batched tall"),
            Sample((m(3, 2, 6),), name="batched wide"), Sample((m(1, 1),), name="1x1")]


def _lu_rule(ctx, args, kwargs, g, gpiv):
    from .registry import _OPS
    LU, piv = _OPS["linalg_lu_factor"](args[0])
    P = C.TS.const(perm_matrix(piv.numpy(), LU.shape[-2], np.float64), LU)
    return (lu_factor_backward(C.TS, LU, P, g),)


@register_op("linalg_lu_factor", meta=_lu_meta, flops=_lu_flops, samples=_lu_samples,
             torch=lambda torch, A, pivot=True: tuple(torch.linalg.lu_factor(A, pivot=pivot)),
             differentiable_backward=_lu_rule,
             bad_inputs=lambda: [BadInput((np.ones(3, np.float32),), {}, ValueError, "'A'"),
                                 BadInput((np.ones((3, 3), np.int64),), {}, TypeError, "'A'"),
                                 BadInput((np.eye(3, dtype=np.float32),), {"pivot": False}, RuntimeError, "pivot"),
                                 BadInput((np.eye(3, dtype=np.float32),), {"pivot": 1}, TypeError, "pivot")],
             gaps={"onnx": NO_ONNX.format("LU factorization")}, tol=(1e-4, 1e-5))
class LinalgLuFactorFunction(Function):
    """(LU, pivots) with partial pivoting, as LAPACK getrf; gradient torch's (through L and U, pivots fixed)."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, A, pivot=True):
        _check_pivot(pivot, "linalg.lu_factor")
        C.check_matrix(A, "A", "linalg.lu_factor", square=False)
        LU, piv, _ = lu_factor_array(A)  # info: lu_factor / lu_factor_ex read it off U's diagonal
        ctx.save_for_backward(LU, piv)
        return LU, piv

    @staticmethod
    def backward(ctx, g, gpiv):
        LU, piv = ctx.saved_tensors
        P = perm_matrix(piv, LU.shape[-2], LU.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            return lu_factor_backward(C.NP, LU, P, g.astype(LU.dtype, copy=False)).astype(g.dtype, copy=False)


# ---- cholesky_solve ----------------------------------------------------------------------------------------------
def chol_solve_shape(b_shape, l_shape, op="cholesky_solve"):
    if len(b_shape) < 2:
        raise ValueError(f"{op}: argument 'input' (B) must have at least 2 dimensions (..., n, k), got shape "
                         f"{tuple(b_shape)}")
    n = l_shape[-1]
    if b_shape[-2] != n:
        raise ValueError(f"{op}: argument 'input' of shape {tuple(b_shape)} must have {n} rows, as the factor "
                         f"'input2' of shape {tuple(l_shape)}")
    try:
        return np.broadcast_shapes(tuple(b_shape[:-2]), tuple(l_shape[:-2])) + tuple(b_shape[-2:])
    except ValueError:
        raise ValueError(f"{op}: the batch dims of input {tuple(b_shape[:-2])} and input2 {tuple(l_shape[:-2])} do "
                         "not broadcast") from None


def chol_solve_array(b, L, upper):
    """(L L^T)^-1 b (upper: (U^T U)^-1 b), reading only L's triangle."""
    lt = np.triu(L) if upper else np.tril(L)
    first, second = (np.swapaxes(lt, -1, -2), lt) if upper else (lt, np.swapaxes(lt, -1, -2))
    try:
        # two triangular solves (torch's potrs): an inf in b reaches only what depends on it
        return C.NP.solve_tri(second, C.NP.solve_tri(first, np.broadcast_to(
            b, np.broadcast_shapes(b.shape[:-2], L.shape[:-2]) + b.shape[-2:]), False), True)
    except np.linalg.LinAlgError:
        raise C.LinAlgError("cholesky_solve: the factor (argument 'input2') has a zero on its diagonal (singular); "
                            "torch returns inf/NaN there, forgegrad refuses it") from None


def chol_solve_backward(B, L, x, g, upper, solve):
    """torch's cholesky_solve_backward: gB = cholesky_solve(g, L); gL = -(gB X^T + X gB^T) L (upper: -L (...))."""
    gb = solve(g)
    common = gb @ B.mT(x)
    common = common + B.mT(common)
    return gb, (-(L @ common) if upper else -(common @ L))


def _chol_solve_meta(b, L, upper=False):
    C.check_matrix(L, "input2", "cholesky_solve")
    return M.MetaArray(chol_solve_shape(b.shape, L.shape), b.dtype)


def _chol_solve_samples():
    rng = np.random.default_rng(0)

    def m(*s):
        return rng.uniform(-1, 1, s).astype(np.float32)

    def fac(*s, seed=0):
        return np.linalg.cholesky(C.spd(*s, seed=seed)).astype(np.float32)
    return [Sample((m(4, 3), fac(4, 4))), Sample((m(4, 2), np.swapaxes(fac(4, 4, seed=1), -1, -2)), {"upper": True},
                                                 "upper"),
            Sample((m(2, 3, 5, 2), fac(3, 5, 5, seed=2)), name="batched, L broadcast"),
            Sample((m(5, 1), fac(2, 5, 5, seed=3)), name="B broadcast"), Sample((m(1, 1), fac(1, 1, seed=4)),
                                                                               name="1x1")]


def _chol_solve_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    from ._double_backward import _sum_to
    b, L = args[0], args[1]
    upper = _arg(args, kwargs, 2, "upper", False)
    op = _OPS["cholesky_solve"]
    x = op(b, L, upper=upper)
    gb, gl = chol_solve_backward(C.TS, L, x, g, upper, lambda t: op(t, L, upper=upper))
    return _sum_to(gb, b.shape), _sum_to(gl, L.shape)


@register_op("cholesky_solve", meta=_chol_solve_meta, flops=lambda o, i, k: 2 * int(np.prod(o[0].shape if isinstance(
             o, tuple) else o.shape, dtype=np.int64)) * i[1].shape[-1], samples=_chol_solve_samples,
             torch=lambda torch, b, L, upper=False: torch.cholesky_solve(b, L, upper=upper),
             differentiable_backward=_chol_solve_rule,
             bad_inputs=lambda: [BadInput((np.ones(3, np.float32), np.eye(3, dtype=np.float32)), {}, ValueError,
                                          "'input'"),
                                 BadInput((np.ones((3, 1), np.float32), np.ones((3, 2), np.float32)), {}, ValueError,
                                          "'input2'"),
                                 BadInput((np.ones((3, 1), np.float32), np.eye(3, dtype=np.float32)), {"upper": 1},
                                          TypeError, "upper")],
             onnx=cholesky_solve_onnx, tol=(1e-4, 1e-5))
class CholeskySolveFunction(Function):
    """X with (L L^T) X = B (upper: U^T U), only L's triangle read; gradients torch's (gL is the full-matrix
    formula, as torch's: not masked to the triangle)."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, B, L, upper=False):
        upper = C.check_bool(upper, "upper", "cholesky_solve")
        C.check_matrix(L, "input2", "cholesky_solve")
        C.check_matrix(B, "input", "cholesky_solve", square=False, at_least=1)
        chol_solve_shape(B.shape, L.shape)
        if B.dtype != L.dtype:  # torch refuses to promote here
            raise RuntimeError(f"cholesky_solve: expected input and input2 to have the same dtype, got {B.dtype} and "
                               f"{L.dtype}")
        x = chol_solve_array(B, L, upper)
        ctx.save_for_backward(L, x)
        ctx.info = (upper, B.shape)
        return x

    @staticmethod
    def backward(ctx, g):
        L, x = ctx.saved_tensors
        upper, b_shape = ctx.info
        gb, gl = chol_solve_backward(C.NP, L, x, g, upper, lambda t: chol_solve_array(t, L, upper))
        return (unbroadcast(gb, b_shape).astype(g.dtype, copy=False),
                unbroadcast(gl, L.shape).astype(g.dtype, copy=False))


for _fn in (LinalgLuFactorFunction, CholeskySolveFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype

C.name_memory_errors(LinalgLuFactorFunction, CholeskySolveFunction)
