"""Shared pieces of the linear-algebra ops (ops/linalg_solve.py, ops/linalg_decomp.py): argument checks, samples,
and each backward formula written once over a small vocabulary (``NP``: numpy arrays, the array rule; ``TS``:
forgegrad Tensors, the differentiable rule for create_graph), so the two rules cannot drift apart.

The formulas are torch's (FunctionsManual.cpp), real case: inverse, det (through the inverse: nonsingular input),
solve, solve_triangular, cholesky (Murray 2016, symmetric gradient), QR (Walter & Lehmann; m < n through the
square block), eigh (V (diag(gL) + skew(V^T gV)/2 / E) V^T, E_ij = L_j - L_i: repeated eigenvalues give inf/NaN
when gV is nonzero, as torch's), SVD (reduced form; full_matrices narrows U and Vh first, as torch's)."""
from __future__ import annotations

import functools

import numpy as np

from .registry import BadInput


class LinAlgError(RuntimeError):
    """A matrix the factorization cannot handle (singular, not positive definite): torch's
    ``torch.linalg.LinAlgError`` (also a RuntimeError)."""


def batch_index(mask) -> str:
    """' (batch element i)' for the first True in a batch mask (torch names the batch element), '' for 2-d."""
    if mask.ndim == 0:
        return ""
    return f" (batch element {int(np.flatnonzero(mask.reshape(-1))[0])})"


def check_matrix(a, name: str, op: str, square: bool = True, at_least: int = 2):
    """A float32/float64 array (..., m, n) (square when asked), else a clear error naming the argument."""
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(f"{op}: complex inputs are not supported (argument '{name}' is {a.dtype}); forgegrad's "
                        "linear algebra is real float32/float64 only")
    if kind != "f":
        raise TypeError(f"{op}: argument '{name}' must be a floating point tensor (float32 or float64), got {a.dtype}")
    if a.ndim < at_least:
        raise ValueError(f"{op}: argument '{name}' must have at least {at_least} dimensions (..., m, n), got shape "
                         f"{tuple(a.shape)}")
    if square and a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{op}: argument '{name}' must be a batch of square matrices, got shape {tuple(a.shape)}")


def lapack(fn, a, op: str, name: str = "A", **kwargs):
    """fn(a, **kwargs) (a numpy.linalg routine); its non-convergence (a NaN / inf in ``a``) raised as torch's
    LinAlgError naming the argument, not numpy's (a ValueError that ``except LinAlgError`` would miss).
    An SVD of a matrix holding inf never returns (LAPACK's gesdd loops), so it is refused first, as torch
    refuses one holding NaN."""
    if fn is np.linalg.svd and not np.isfinite(a).all():
        raise LinAlgError(f"{op}: the algorithm failed to converge on argument '{name}', which holds non-finite "
                          "values (NaN or inf)")
    try:
        return fn(a, **kwargs)
    except np.linalg.LinAlgError:
        finite = bool(np.isfinite(a).all())
        raise LinAlgError(f"{op}: the algorithm failed to converge on argument '{name}'"
                          + ("" if finite else ", which holds non-finite values (NaN or inf)")) from None


def check_bool(value, name: str, op: str) -> bool:
    """A bool flag (torch refuses anything else: a string 'True' is no bool)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: argument '{name}' must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def spd(*shape, seed=0):
    """A well-conditioned symmetric positive definite float32 batch."""
    a = np.random.default_rng(seed).uniform(-1, 1, size=shape)
    n = shape[-1]
    return (a @ np.swapaxes(a, -1, -2) / n + np.eye(n)).astype(np.float32)


def wellcond(*shape, seed=0):
    """A random float32 batch of square matrices, diagonally dominant enough to be well conditioned."""
    a = np.random.default_rng(seed).uniform(-1, 1, size=shape)
    return (a + 2.0 * np.eye(shape[-1]) * np.sign(a[..., :1, :1] + 0.5)).astype(np.float32)


def square_bad(fn_args=lambda a: (a,), name="A", kwargs=None):
    """A non-square matrix: the error names the argument."""
    return BadInput(fn_args(np.ones((2, 3), np.float32)), dict(kwargs or {}), ValueError, name)


# ---- the vocabulary: the same formula on arrays (NP) and on Tensors (TS) ------------------------------------------
def _tri_solve_left(a, b, upper):
    """a^-1 b for triangular a (zeros off its triangle). Finite input: LAPACK's LU solve. A NaN / inf: substitution,
    as torch's trsm, so it reaches only the entries that depend on it (an LU solve's eliminations spread it)."""
    if np.isfinite(a).all() and np.isfinite(b).all():
        return np.linalg.solve(a, b)
    n = a.shape[-1]
    d = np.diagonal(a, axis1=-2, axis2=-1)
    if (d == 0).any():
        raise np.linalg.LinAlgError("Singular matrix")
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, shape + a.shape[-2:])
    x = np.array(np.broadcast_to(b, shape + b.shape[-2:]), dtype=np.result_type(a, b))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for i in (range(n - 1, -1, -1) if upper else range(n)):
            lo, hi = (i + 1, n) if upper else (0, i)
            r = x[..., i, :]
            if hi > lo:
                r = r - (a[..., i:i + 1, lo:hi] @ x[..., lo:hi, :])[..., 0, :]
            x[..., i, :] = r / a[..., i, i:i + 1]
    return x


class NP:
    @staticmethod
    def mT(x):
        return np.swapaxes(x, -1, -2)

    @staticmethod
    def tril(x, k=0):
        return np.tril(x, k)

    @staticmethod
    def triu(x, k=0):
        return np.triu(x, k)

    @staticmethod
    def inv(x):
        return np.linalg.inv(x)

    @staticmethod
    def solve_tri(a, b, upper, left=True):
        """a^-1 b (left) or b a^-1, a triangular (only that triangle read)."""
        a = np.triu(a) if upper else np.tril(a)
        if left:
            return _tri_solve_left(a, b, upper)
        return np.swapaxes(_tri_solve_left(np.swapaxes(a, -1, -2), np.swapaxes(b, -1, -2), not upper), -1, -2)

    @staticmethod
    def diag(x):
        return np.diagonal(x, axis1=-2, axis2=-1)

    @staticmethod
    def diag_embed(v):
        return v[..., :, None] * np.eye(v.shape[-1], dtype=v.dtype)

    @staticmethod
    def col(v):  # (..., n) -> (..., n, 1)
        return v[..., :, None]

    @staticmethod
    def row(v):  # (..., n) -> (..., 1, n)
        return v[..., None, :]

    @staticmethod
    def scalar_mat(v):  # (...) -> (..., 1, 1)
        return v[..., None, None]

    @staticmethod
    def const(arr, like):
        return np.asarray(arr, dtype=like.dtype)

    @staticmethod
    def nonzero(g):
        return g is not None and bool(np.any(g))

    @staticmethod
    def narrow(x, dim, start, length):
        idx = [slice(None)] * x.ndim
        idx[dim] = slice(start, start + length)
        return x[tuple(idx)]

    @staticmethod
    def cat(xs, dim):
        return np.concatenate(xs, axis=dim)


class TS:
    @staticmethod
    def mT(x):
        return x.transpose(-2, -1)

    @staticmethod
    def tril(x, k=0):
        from .._functions import tril
        return tril(x, k)

    @staticmethod
    def triu(x, k=0):
        from .._functions import triu
        return triu(x, k)

    @staticmethod
    def inv(x):
        from .registry import _OPS
        return _OPS["linalg_inv"](x)

    @staticmethod
    def solve_tri(a, b, upper, left=True):
        from .registry import _OPS
        return _OPS["linalg_solve_triangular"](a, b, upper=upper, left=left)

    @staticmethod
    def diag(x):
        return (x * TS.const(np.eye(x.shape[-1]), x)).sum(dim=-1)

    @staticmethod
    def diag_embed(v):
        return v.unsqueeze(-1) * TS.const(np.eye(v.shape[-1]), v)

    @staticmethod
    def col(v):
        return v.unsqueeze(-1)

    @staticmethod
    def row(v):
        return v.unsqueeze(-2)

    @staticmethod
    def scalar_mat(v):
        return v.reshape(tuple(v.shape) + (1, 1))

    @staticmethod
    def const(arr, like):
        from ..tensor import Tensor
        return Tensor._wrap_exact(np.asarray(arr, dtype=like._data.dtype))

    @staticmethod
    def nonzero(g):
        return g is not None and bool(np.any(g._data))

    @staticmethod
    def narrow(x, dim, start, length):
        return x.narrow(dim, start, length)

    @staticmethod
    def cat(xs, dim):
        from ..factories import cat
        return cat(xs, dim)


# ---- the backward formulas ----------------------------------------------------------------------------------------
def inv_backward(B, ainv, g):
    """d(A^-1): -A^-T g A^-T."""
    t = B.mT(ainv)
    return -(t @ g @ t)


def det_backward(B, ainv, det, g):
    """g det A^-T (nonsingular A)."""
    return B.scalar_mat(g * det) * B.mT(ainv)


def solve_backward(B, a, x, g, left, need_a=True):
    """X = A^-1 B (left) / B A^-1: gB = A^-T g (g A^-T), gA = -gB X^T (-X^T gB)."""
    if left:
        gb = B.inv(B.mT(a)) @ g
        return gb, (-(gb @ B.mT(x)) if need_a else None)
    gb = g @ B.inv(B.mT(a))
    return gb, (-(B.mT(x) @ gb) if need_a else None)


def solve_tri_backward(B, a, x, g, upper, left, unitriangular, need_a=True):
    """torch's linalg_solve_triangular backward: gB by the transposed triangular solve, gA = -gB X^T (left) or
    -X^T gB masked to the triangle read (strictly, when unitriangular)."""
    at = B.mT(a)
    if unitriangular:  # the diagonal read as ones
        n = a.shape[-1]
        mask = np.triu(np.ones((n, n)), 1) if upper else np.tril(np.ones((n, n)), -1)
        at = B.mT(a * B.const(mask, a) + B.const(np.eye(n), a))
    gb = B.solve_tri(at, g, not upper, left)
    if not need_a:
        return gb, None
    ga = -(gb @ B.mT(x)) if left else -(B.mT(x) @ gb)
    k = 1 if unitriangular else 0
    ga = B.triu(ga, k) if upper else B.tril(ga, -k)
    return gb, ga


def cholesky_backward(B, L, g, upper):
    """torch's cholesky_backward: L^-T Phi(L^T gL) L^-1 with Phi = (tril + tril(-1)^T) / 2: symmetric."""
    if upper:
        L, g = B.mT(L), B.mT(g)
    ga = B.tril(B.mT(L) @ g)
    ga = (ga + B.mT(B.tril(ga, -1))) * 0.5
    ga = B.solve_tri(B.mT(L), ga, True, True)
    return B.solve_tri(L, ga, False, False)


def _copyltu(B, m):
    return B.tril(m) + B.mT(B.tril(m, -1))


def _qr_tall(B, q, r, gq, gr):
    """A = QR, m >= n (reduced): gA = (gQ + Q copyltu(M)) R^-T, M = R gR^T - gQ^T Q."""
    m = r @ B.mT(gr) - B.mT(gq) @ q
    return B.solve_tri(B.mT(r), gq + q @ _copyltu(B, m), False, False)


def qr_backward(B, q, r, gq, gr):
    """The QR gradient for any m, n (m < n: A = [X|Y], R = [U|V], X = QU; gY = Q gV)."""
    m, n = q.shape[-2], r.shape[-1]
    if m >= n:
        return _qr_tall(B, q, r, gq, gr)
    u, v = B.narrow(r, -1, 0, m), B.narrow(r, -1, m, n - m)
    gu, gv = B.narrow(gr, -1, 0, m), B.narrow(gr, -1, m, n - m)
    y = q @ v
    gx = _qr_tall(B, q, u, gq + y @ B.mT(gv), gu)
    return B.cat([gx, q @ gv], -1)


def _off_diagonal_div(B, x, e, n):
    """x / e off the diagonal, 0 on it (a repeated eigen/singular value gives inf/NaN there, as torch's)."""
    eye = np.eye(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = x / (e + B.const(eye, e))
    # the diagonal dropped by selection, not by * 0: a NaN / inf eigenvalue's E_ii = L_i - L_i is NaN (torch fills it)
    return B.tril(q, -1) + B.triu(q, 1)


def eigh_backward(B, L, V, gL, gV):
    """torch's linalg_eig_backward for Hermitian input: V (diag(gL) + (skew(V^T gV) / 2) / E) V^T."""
    if not B.nonzero(gV):
        return V @ (B.col(gL) * B.mT(V))
    x = B.mT(V) @ gV
    x = (x - B.mT(x)) * 0.5
    n = L.shape[-1]
    e = B.row(L) - B.col(L)  # E_ij = L_j - L_i (a function of A too: create_graph differentiates through it)
    mid = _off_diagonal_div(B, x, e, n) + B.diag_embed(gL)
    with np.errstate(invalid="ignore"):  # inf * 0 for repeated eigenvalues: NaN, as torch's
        return V @ mid @ B.mT(V)


def svd_backward(B, U, S, Vh, gU, gS, gVh):
    """torch's svd_backward (real, reduced U (m, k), Vh (k, n)):
    U [(skew(U^T gU) S_k + S_j skew(V^T gV)) / E + diag(gS)] V^T plus the projections out of the column spaces."""
    m, n, k = U.shape[-2], Vh.shape[-1], S.shape[-1]
    has_u, has_v = B.nonzero(gU), B.nonzero(gVh)
    if not has_u and not has_v:
        return U @ (B.col(gS) * Vh)
    V = B.mT(Vh)
    s2 = S * S
    e = B.row(s2) - B.col(s2)  # E_jk = S_k^2 - S_j^2
    ga = None
    if has_u:
        uh = B.mT(U) @ gU
        ga = (uh - B.mT(uh)) * B.row(S)
    if has_v:
        gV = B.mT(gVh)
        vh = B.mT(V) @ gV
        t = B.col(S) * (vh - B.mT(vh))
        ga = t if ga is None else ga + t
    ga = _off_diagonal_div(B, ga, e, k) + B.diag_embed(gS)
    if m > k and has_u:
        ga = U @ ga
        gus = gU / B.row(S)
        ga = (ga + gus - U @ (B.mT(U) @ gus)) @ Vh
    elif n > k and has_v:
        ga = ga @ Vh
        gvs = B.mT(gVh) / B.row(S)
        ga = U @ (ga + B.mT(gvs) - (B.mT(gvs) @ V) @ Vh)
    else:
        ga = U @ ga @ Vh
    return ga


def name_memory_errors(*functions) -> None:
    """Each Function's forward re-raises a bare MemoryError (LAPACK's workspace allocation inside numpy.linalg
    gives one with no message) as a MemoryError naming the op and its input's shape."""
    for fn in functions:
        forward = fn.forward

        def guarded(ctx, *args, _forward=forward, _op=fn.op.name.replace("linalg_", "linalg."), **kwargs):
            try:
                return _forward(ctx, *args, **kwargs)
            except MemoryError as e:
                if str(e).strip():
                    raise
                shape = tuple(getattr(args[0], "shape", ())) if args else ()
                raise MemoryError(f"{_op}: not enough memory to factor argument 'A' of shape {shape}") from None

        # functools.wraps: the signature stays the forward's (the ONNX mappings and meta rules bind by its names)
        fn.forward = staticmethod(functools.wraps(forward)(guarded))
