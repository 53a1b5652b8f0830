"""forgegrad.linalg's Householder functions (householder_product / torch.orgqr, torch.geqrf, torch.ormqr), the
tensor solves (tensorinv, tensorsolve), vander, eig / eigvals (forgegrad/_linalg_eig.py), and torch's legacy
top-level names (torch.svd, torch.qr, torch.triangular_solve, torch.cholesky, torch.pinverse).

householder_product and ormqr apply the reflectors H_i = I - tau_i v_i v_i^T one at a time with Tensor ops, so
they differentiate (twice too) in A (its strictly lower part, where the v_i are) and tau, as torch's. geqrf is
LAPACK's (numpy.linalg.qr mode 'raw'); torch has no gradient for it either."""
from __future__ import annotations

import numpy as np

from . import return_types as R
from .ops import _linalg_common as _C
from .tensor import Tensor


def _L():
    from . import linalg
    return linalg


def _wrap(a) -> Tensor:
    return Tensor._wrap_exact(np.ascontiguousarray(a))


def _meta(shape, dtype) -> Tensor:
    """A meta result (these compositions read data: tril, the identity), for shape inference."""
    return _wrap(np.zeros(tuple(shape), np.dtype(dtype))).to("meta")


def _same_dtype(a, b, op, na, nb):
    if a.dtype != b.dtype:  # torch refuses to promote here
        raise RuntimeError(f"{op}: expected {na} and {nb} to have the same dtype, got {a.dtype} and {b.dtype}")


def _reflectors(A, k):
    """V (..., m, k): the Householder vectors stored below A's diagonal, with their implicit unit entry."""
    from ._functions import tril
    m = A.shape[-2]
    return tril(A, -1).narrow(-1, 0, k) + _wrap(np.eye(m, k, dtype=np.dtype(A.dtype)))


def _apply(V, tau, C, i, left):
    """H_i C (left) or C H_i, H_i = I - tau_i v_i v_i^T."""
    v = V.narrow(-1, i, 1)
    t = tau.narrow(-1, i, 1).unsqueeze(-1)
    if left:
        return C - (v * t) @ (v.transpose(-2, -1) @ C)
    return C - ((C @ v) * t) @ v.transpose(-2, -1)


def _check_tau(A, tau, op):
    tau = _L()._t(tau, "tau", op, at_least=1)
    _same_dtype(A, tau, op, "input", "tau")
    if tuple(tau.shape[:-1]) != tuple(A.shape[:-2]):
        raise ValueError(f"{op}: argument 'tau' must have the batch dims of input {tuple(A.shape[:-2])}, got shape "
                         f"{tuple(tau.shape)}")
    if tau.shape[-1] > A.shape[-1]:
        raise ValueError(f"{op}: argument 'tau' has {tau.shape[-1]} scalars, more than input's {A.shape[-1]} columns "
                         "of reflectors")
    return tau


def householder_product(A, tau) -> Tensor:
    """``torch.linalg.householder_product`` (``torch.orgqr``): the first n columns of H_1 ... H_k, the reflectors
    stored below A's diagonal (m >= n) with scalars tau (k <= n), as LAPACK orgqr."""
    op = "linalg.householder_product"
    A = _L()._t(A, "input", op)
    if A.shape[-2] < A.shape[-1]:
        raise ValueError(f"{op}: argument 'input' must have at least as many rows as columns (m >= n), got shape "
                         f"{tuple(A.shape)}")
    tau = _check_tau(A, tau, op)
    m, n = A.shape[-2:]
    k = tau.shape[-1]
    if A.is_meta or tau.is_meta:
        return _meta(A.shape, A.dtype)
    V = _reflectors(A, k)
    Q = _wrap(np.broadcast_to(np.eye(m, n, dtype=np.dtype(A.dtype)), A.shape))
    if k == 0:  # no reflector: I, still in A's graph (a zero gradient), as torch's result requires grad
        from .ops.registry import get
        return get("where")(np.zeros(A.shape, bool), A, Q)
    for i in reversed(range(k)):
        Q = _apply(V, tau, Q, i, True)
    return Q


def geqrf(input):
    """``torch.geqrf``: (a, tau), LAPACK geqrf's Householder QR (R on and above a's diagonal, the reflectors below
    it); no gradient (torch neither)."""
    A = _L()._t(input, "input", "geqrf")
    if A.is_meta:
        return R.geqrf(_meta(A.shape, A.dtype), _meta(tuple(A.shape[:-2]) + (min(A.shape[-2:]),), A.dtype))
    a = A.numpy()
    m, n = a.shape[-2:]
    if a.size == 0:
        return R.geqrf(_wrap(a.copy()), _wrap(np.zeros(a.shape[:-2] + (min(m, n),), a.dtype)))
    h, tau = _C.lapack(np.linalg.qr, a, "geqrf", "input", mode="raw")
    return R.geqrf(_wrap(np.swapaxes(h, -1, -2).astype(a.dtype)), _wrap(tau.astype(a.dtype)))


def ormqr(input, input2, input3, left: bool = True, transpose: bool = False) -> Tensor:
    """``torch.ormqr(A, tau, C, left=True, transpose=False)``: Q C, Q^T C, C Q or C Q^T with Q = H_1 ... H_k (m x m)
    from geqrf's (A, tau); differentiable in all three, as torch's."""
    op = "ormqr"
    A = _L()._t(input, "input", op)
    C = _L()._t(input3, "other", op)
    left = _C.check_bool(left, "left", op)
    transpose = _C.check_bool(transpose, "transpose", op)
    _same_dtype(A, C, op, "input", "other")
    tau = _check_tau(A, input2, op)
    m = A.shape[-2]
    if (C.shape[-2] if left else C.shape[-1]) != m:
        raise ValueError(f"{op}: argument 'other' of shape {tuple(C.shape)} must have {m} "
                         f"{'rows' if left else 'columns'} (input's rows) for left={left}")
    if tuple(C.shape[:-2]) != tuple(A.shape[:-2]):
        raise ValueError(f"{op}: argument 'other' must have the batch dims of input {tuple(A.shape[:-2])}, got "
                         f"{tuple(C.shape[:-2])}")
    k = tau.shape[-1]
    if k > m:
        raise ValueError(f"{op}: argument 'tau' has {k} scalars, more than input's {m} rows")
    if A.is_meta or tau.is_meta or C.is_meta:
        return _meta(C.shape, C.dtype)
    V = _reflectors(A, k)
    # Q C = H_1 (... (H_k C)); Q^T C = H_k (... (H_1 C)); C Q = ((C H_1) ...) H_k; C Q^T = ((C H_k) ...) H_1
    order = range(k) if left == transpose else reversed(range(k))
    for i in order:
        C = _apply(V, tau, C, i, left)
    return C


# ---- tensor solves, vander ---------------------------------------------------------------------------------------
def tensorinv(A, ind: int = 2) -> Tensor:
    """``torch.linalg.tensorinv``: the inverse of A seen as a (prod(shape[:ind]), prod(shape[ind:])) matrix, shaped
    shape[ind:] + shape[:ind]."""
    op = "linalg.tensorinv"
    A = _L()._t(A, "A", op, at_least=1)
    if isinstance(ind, bool) or not isinstance(ind, (int, np.integer)) or ind <= 0:
        raise ValueError(f"{op}: argument 'ind' must be a strictly positive int, got {ind!r}")
    head, tail = tuple(A.shape[:ind]), tuple(A.shape[ind:])
    p, q = int(np.prod(head, dtype=np.int64)), int(np.prod(tail, dtype=np.int64))
    if p != q:
        raise ValueError(f"{op}: A of shape {tuple(A.shape)} with ind={ind} is not square as a matrix: "
                         f"prod(shape[:ind]) = {p}, prod(shape[ind:]) = {q}")
    return _L().inv(A.reshape(p, q)).reshape(tail + head)


def tensorsolve(A, B, dims=None) -> Tensor:
    """``torch.linalg.tensorsolve``: X with tensordot(A, X, X.ndim) = B (``dims``: A's dims moved to the end
    first); X has shape A.shape[B.ndim:]."""
    op = "linalg.tensorsolve"
    A = _L()._t(A, "A", op, at_least=1)
    B = _L()._t(B, "B", op, at_least=0)
    _same_dtype(A, B, op, "A", "B")
    if dims is not None:
        dims = [dims] if isinstance(dims, (int, np.integer)) else list(dims)
        nd = A.ndim
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not -nd <= d < nd:
                raise IndexError(f"{op}: dim {d!r} in 'dims' is out of range for a {nd}-d A")
        moved = [int(d) % nd for d in dims]
        A = A.permute(*[i for i in range(nd) if i not in moved], *moved)
    out = tuple(A.shape[B.ndim:])
    rows = int(np.prod(B.shape, dtype=np.int64))
    cols = int(np.prod(out, dtype=np.int64))
    if tuple(A.shape[:B.ndim]) != tuple(B.shape) or rows != cols:
        raise ValueError(f"{op}: A of shape {tuple(A.shape)} must start with B's shape {tuple(B.shape)} and be square "
                         f"as a matrix (prod(A.shape[B.ndim:]) = {cols} must equal B.numel() = {rows})")
    return _L().solve(A.reshape(rows, cols), B.reshape(rows)).reshape(out)


def vander(x, N=None) -> Tensor:
    """``torch.linalg.vander``: (..., n, N) with columns x^0, x^1, ..., x^(N-1) (N defaults to n; N > 1, as
    torch's), made of products: differentiable."""
    op = "linalg.vander"
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}(): argument 'x' must be a forgegrad.Tensor, got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{op}: argument 'x' must have at least 1 dimension, got a 0-d tensor")
    if np.dtype(x.dtype).kind not in "iuf":  # torch: floating, complex or integer, not bool
        raise TypeError(f"{op}: argument 'x' must be a floating point or integer tensor, got {x.dtype}")
    N = x.shape[-1] if N is None else N
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N <= 1:
        raise ValueError(f"{op}: argument 'N' must be an int greater than 1, got {N!r}")
    if x.is_meta:
        return _meta(tuple(x.shape) + (int(N),), x.dtype)
    from .factories import stack
    cols = [_wrap(np.ones(x.shape, np.dtype(x.dtype)))]
    for _ in range(1, int(N)):
        cols.append(x if len(cols) == 1 else cols[-1] * x)
    return stack(cols, -1)


from ._linalg_eig import eig, eigvals  # noqa: E402,F401  (complex results: forgegrad/_linalg_eig.py)


# ---- torch's legacy top-level names ------------------------------------------------------------------------------
def torch_svd(input, some: bool = True, compute_uv: bool = True):
    """``torch.svd`` (deprecated in torch for linalg.svd): (U, S, V), V not transposed; ``some=False``: full U, V;
    ``compute_uv=False``: U and V zero-filled (m x m, n x n), as torch's."""
    L = _L()
    A = L._t(input, "input", "svd")
    some = _C.check_bool(some, "some", "svd")
    if not _C.check_bool(compute_uv, "compute_uv", "svd"):
        m, n = A.shape[-2:]
        dt = np.dtype(A.dtype)
        return R.svd(_wrap(np.zeros(tuple(A.shape[:-2]) + (m, m), dt)), L.svdvals(A),
                     _wrap(np.zeros(tuple(A.shape[:-2]) + (n, n), dt)))
    U, S, Vh = L.svd(A, full_matrices=not some)
    return R.svd(U, S, Vh.transpose(-2, -1))


def torch_qr(input, some: bool = True):
    """``torch.qr`` (deprecated in torch): linalg.qr(input, 'reduced' if some else 'complete')."""
    return R.qr(*_L().qr(input, "reduced" if _C.check_bool(some, "some", "qr") else "complete"))


def triangular_solve(input, A, upper: bool = True, transpose: bool = False, unitriangular: bool = False):
    """``torch.triangular_solve(b, A)`` (deprecated in torch; by keyword ``input=`` and ``A=``, torch's names):
    (solution of op(A) X = b, a copy of A broadcast to the solution's batch dims, as torch's), op(A) = A or A^T;
    upper=True by default, as torch's."""
    L = _L()
    op = "triangular_solve"
    b = L._t(input, "input", op)
    A = L._t(A, "A", op, square=True)
    upper = _C.check_bool(upper, "upper", op)
    unitriangular = _C.check_bool(unitriangular, "unitriangular", op)
    if _C.check_bool(transpose, "transpose", op):
        X = L.solve_triangular(A.transpose(-2, -1), b, upper=not upper, unitriangular=unitriangular)
    else:
        X = L.solve_triangular(A, b, upper=upper, unitriangular=unitriangular)
    n = A.shape[-1]
    return R.triangular_solve(X, A.expand(*X.shape[:-2], n, n).clone())


def torch_cholesky(input, upper: bool = False) -> Tensor:
    """``torch.cholesky`` (deprecated in torch): linalg.cholesky(input, upper=upper)."""
    return _L().cholesky(input, upper=upper)


def pinverse(input, rcond: float = 1e-15) -> Tensor:
    """``torch.pinverse``: linalg.pinv(input, rtol=rcond)."""
    return _L().pinv(input, rtol=rcond)
