"""forgegrad.linalg's composed functions (norms, pinv, lstsq, matrix_rank, cond, cross, vecdot, multi_dot,
diagonal): made of the registry's linalg ops (svd, eigh, inv) and Tensor ops, so their gradients are those of the
composition (torch's for full-rank / distinct-singular-value inputs, where torch's own formulas agree)."""
from __future__ import annotations

import math

import numpy as np

from .ops._linalg_common import lapack as _lapack
from .ops.registry import get as _op
from .tensor import Tensor

_INF = float("inf")


def _L():
    from . import linalg
    return linalg


def _dims2(A, dim, op):
    if not isinstance(dim, (tuple, list)) or len(dim) != 2:
        raise ValueError(f"{op}: argument 'dim' must be a pair of dims, got {dim!r}")
    nd = A.ndim
    out = []
    for d in dim:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not -nd <= d < nd:
            raise IndexError(f"{op}: dim {d!r} is out of range for a {nd}-d input")
        out.append(int(d) % nd)
    if out[0] == out[1]:
        raise ValueError(f"{op}: the dims in 'dim' must differ, got {dim!r}")
    return tuple(out)


def _to_end(A, d0, d1):
    rest = [i for i in range(A.ndim) if i not in (d0, d1)]
    return A.permute(*rest, d0, d1)


def _keep(r, A, d0, d1, keepdim):
    if not keepdim:
        return r
    shape = [1 if i in (d0, d1) else s for i, s in enumerate(A.shape)]
    return r.reshape(tuple(shape))


def _cast(A, dtype, op):
    if dtype is None:
        return A
    from .dtypes import to_numpy
    want = to_numpy(dtype)
    if np.promote_types(np.dtype(A.dtype), want) != want:
        raise ValueError(f"{op}: dtype={dtype} would narrow the input's {A.dtype}")
    return A.to(dtype)


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim: bool = False, *, dtype=None) -> Tensor:
    """``torch.linalg.matrix_norm``: ord 'fro', 'nuc', inf, -inf, 1, -1, 2, -2 over the two dims ``dim``
    ('nuc', 2, -2 through the singular values)."""
    L = _L()
    A = L._t(A, "A", "linalg.matrix_norm")
    A = _cast(A, dtype, "linalg.matrix_norm")
    d0, d1 = _dims2(A, dim, "linalg.matrix_norm")
    if isinstance(ord, str):
        if ord == "fro":
            return A.norm(2, dim=(d0, d1), keepdim=keepdim)
        if ord != "nuc":
            raise ValueError(f"linalg.matrix_norm: ord must be 'fro', 'nuc', inf, -inf, 1, -1, 2 or -2, got {ord!r}")
    elif isinstance(ord, bool) or ord not in (1, -1, 2, -2, _INF, -_INF):
        raise ValueError(f"linalg.matrix_norm: ord must be 'fro', 'nuc', inf, -inf, 1, -1, 2 or -2, got {ord!r}")
    if ord in ("nuc", 2, -2):
        s = L.svdvals(_to_end(A, d0, d1))
        r = s.sum(dim=-1) if ord == "nuc" else (s.amax(dim=-1) if ord == 2 else s.amin(dim=-1))
        return _keep(r, A, d0, d1, keepdim)
    # 1: the largest column sum (sum over d0, max over d1); inf: the largest row sum
    over, across = (d0, d1) if abs(ord) == 1 else (d1, d0)
    sums = A.abs().sum(dim=over, keepdim=True)
    r = sums.amax(dim=across, keepdim=True) if ord > 0 else sums.amin(dim=across, keepdim=True)
    return r if keepdim else r.reshape(tuple(s for i, s in enumerate(A.shape) if i not in (d0, d1)))


def norm(A, ord=None, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """``torch.linalg.norm``: a vector norm when ``dim`` is an int (or A is 1-d), a matrix norm when ``dim`` is a
    pair (or A is 2-d and ``ord`` given); ``ord=None, dim=None``: the 2-norm of every element."""
    L = _L()
    if not isinstance(A, Tensor):
        L._t(A, "A", "linalg.norm")
    if dim is not None:
        dims = (dim,) if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) else tuple(dim)
        if len(dims) == 1:
            return L.vector_norm(A, 2 if ord is None else ord, dims[0], keepdim, dtype=dtype)
        if len(dims) == 2:
            return matrix_norm(A, "fro" if ord is None else ord, dims, keepdim, dtype=dtype)
        raise ValueError(f"linalg.norm: argument 'dim' must be an int or a pair of ints, got {dim!r}")
    if ord is None:
        return L.vector_norm(A, 2, None, keepdim, dtype=dtype)
    if A.ndim == 1 and not isinstance(ord, str):
        return L.vector_norm(A, ord, None, keepdim, dtype=dtype)
    if A.ndim == 2:
        return matrix_norm(A, ord, (-2, -1), keepdim, dtype=dtype)
    raise ValueError(f"linalg.norm: with ord={ord!r} and no dim, the input must be 1-d (a number ord) or 2-d, got "
                     f"{A.ndim}-d: pass dim")


def _tol(s_max, atol, rtol, m, n, dtype):
    """torch's threshold max(atol, rtol * s_max) (rtol defaults to eps * max(m, n) when atol is not given)."""
    def val(t):
        return 0.0 if t is None else (t.numpy() if isinstance(t, Tensor) else np.asarray(t, np.float64))
    if rtol is None:
        rtol = np.finfo(dtype).eps * max(m, n) if atol is None or not np.any(val(atol) > 0) else 0.0
    return np.maximum(val(atol), val(rtol) * s_max)


def pinv(A, *, atol=None, rtol=None, hermitian: bool = False) -> Tensor:
    """``torch.linalg.pinv``: the pseudo-inverse through the SVD, singular values at or below max(atol, rtol *
    largest) dropped; differentiable where the rank does not change (full-rank inputs: torch's gradient, the
    general one even with ``hermitian``, as torch's pinv_backward). ``hermitian``: A must be square and is taken as
    symmetric (its singular values are its |eigenvalues|); the whole matrix is read."""
    L = _L()
    A = L._t(A, "A", "linalg.pinv", square=bool(hermitian))
    where = _op("where")
    m, n = A.shape[-2:]
    U, S, Vh = L.svd(A, full_matrices=False)
    sv = S.numpy()
    tol = _tol(sv.max(axis=-1, initial=0.0), atol, rtol, m, n, A.numpy().dtype)
    keep = sv > tol[..., None]
    sinv = where(keep, 1.0 / where(keep, S, 1.0), 0.0)
    return (Vh.transpose(-2, -1) * sinv.unsqueeze(-2)) @ U.transpose(-2, -1)


def lstsq(A, B, rcond=None, *, driver=None):
    """``torch.linalg.lstsq``: the least-squares solution of A X = B through pinv(A) (its gradient is torch's for
    full-rank A). ``residuals``/``rank``/``singular_values`` follow the driver as torch's on CPU (default 'gelsy':
    rank only; residuals only for m > n, full rank, a driver other than 'gelsy')."""
    L = _L()
    A = L._t(A, "A", "linalg.lstsq")
    B = L._t(B, "B", "linalg.lstsq", at_least=1)
    if A.dtype != B.dtype:  # torch refuses to promote here
        raise RuntimeError(f"linalg.lstsq: expected A and B to have the same dtype, got {A.dtype} and {B.dtype}")
    driver = "gelsy" if driver is None else driver
    if driver not in ("gels", "gelsy", "gelsd", "gelss"):
        raise ValueError(f"linalg.lstsq: argument 'driver' must be 'gels', 'gelsy', 'gelsd' or 'gelss', got {driver!r}")
    m, n = A.shape[-2:]
    if not 0 <= A.ndim - B.ndim <= 1:  # torch's rule: B is A's rank (matrices) or one less (vectors)
        raise ValueError(f"linalg.lstsq: argument 'B' must have as many dims as A ({A.ndim}) or one fewer (a batch "
                         f"of vectors), got shape {tuple(B.shape)} for A of shape {tuple(A.shape)}")
    vector = B.ndim == A.ndim - 1
    Bm = B.unsqueeze(-1) if vector else B
    if Bm.shape[-2] != m:
        raise ValueError(f"linalg.lstsq: argument 'B' of shape {tuple(B.shape)} must have {m} rows, as A "
                         f"{tuple(A.shape)}")
    dt = A.numpy().dtype
    s = _lapack(np.linalg.svd, A.numpy(), "linalg.lstsq", compute_uv=False)
    rc = np.finfo(dt).eps * max(m, n) if rcond is None else float(rcond)
    X = pinv(A, rtol=rc) @ Bm
    empty = Tensor._wrap_exact(np.zeros((0,), dt))
    rank = (s > rc * s.max(axis=-1, initial=0.0)[..., None]).sum(-1).astype(np.int64)
    residuals = empty
    if driver != "gelsy" and m > n and np.all(rank == n):
        residuals = ((A @ X - Bm) ** 2).sum(dim=-2)
        residuals = residuals.squeeze(-1) if vector else residuals
    from .linalg import linalg_lstsq
    return linalg_lstsq(X.squeeze(-1) if vector else X, residuals,
                        Tensor._wrap_exact(np.zeros((0,), np.int64)) if driver == "gels" else Tensor._wrap_exact(rank),
                        Tensor._wrap_exact(s.astype(dt)) if driver in ("gelsd", "gelss") else empty)


def matrix_rank(A, *, atol=None, rtol=None, hermitian: bool = False) -> Tensor:
    """``torch.linalg.matrix_rank``: the count of singular values (|eigenvalues| when ``hermitian``) above
    max(atol, rtol * largest); int64, no gradient."""
    A = _L()._t(A, "A", "linalg.matrix_rank", square=bool(hermitian))
    a = A.numpy()
    s = np.abs(_lapack(np.linalg.eigvalsh, a, "linalg.matrix_rank")) if hermitian else _lapack(
        np.linalg.svd, a, "linalg.matrix_rank", compute_uv=False)
    tol = _tol(s.max(axis=-1, initial=0.0), atol, rtol, *a.shape[-2:], a.dtype)
    return Tensor._wrap_exact((s > np.asarray(tol)[..., None]).sum(-1).astype(np.int64))


def cond(A, p=None) -> Tensor:
    """``torch.linalg.cond``: the condition number in norm ``p`` (None / 2: s_max / s_min, -2: s_min / s_max,
    others: matrix_norm(A, p) * matrix_norm(inv(A), p), square A)."""
    L = _L()
    A = L._t(A, "A", "linalg.cond", square=p not in (None, 2, -2))
    if A.numel() == 0:  # torch: 0 for each (empty) matrix
        return Tensor._wrap_exact(np.zeros(A.shape[:-2], A.numpy().dtype))
    if p in (None, 2, -2):
        s = L.svdvals(A)
        hi, lo = s.amax(dim=-1), s.amin(dim=-1)
        return hi / lo if p != -2 else lo / hi
    inverse, info = L.inv_ex(A)
    singular = np.asarray(info.numpy() > 0)
    if not np.any(singular):
        return matrix_norm(A, p) * matrix_norm(inverse, p)
    # a singular matrix's condition number is inf, as torch's (inv would raise); its NaN inverse is not normed
    where = _op("where")
    r = matrix_norm(A, p) * matrix_norm(where(singular[..., None, None], 0.0, inverse), p)
    return where(singular, _INF, r)


def cross(input, other, *, dim: int = -1) -> Tensor:
    """``torch.linalg.cross``: the cross product of 3-vectors along ``dim`` (the two broadcast)."""
    for name, t in (("input", input), ("other", other)):
        if not isinstance(t, Tensor):
            raise TypeError(f"linalg.cross(): argument '{name}' must be a forgegrad.Tensor, got {type(t).__name__}")
    if input.dtype != other.dtype:  # torch refuses to promote here
        raise RuntimeError(f"linalg.cross: expected input and other to have the same dtype, got {input.dtype} and "
                           f"{other.dtype}")
    if input.ndim != other.ndim:  # torch refuses this too
        raise ValueError(f"linalg.cross: inputs must have the same number of dimensions, got shapes "
                         f"{tuple(input.shape)} and {tuple(other.shape)}")
    try:
        shape = np.broadcast_shapes(tuple(input.shape), tuple(other.shape))
    except ValueError:
        raise ValueError(f"linalg.cross: shapes {tuple(input.shape)} and {tuple(other.shape)} do not broadcast") \
            from None
    nd = len(shape)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not -nd <= dim < nd:
        raise IndexError(f"linalg.cross: argument 'dim' {dim!r} is out of range for {nd}-d inputs")
    d = int(dim) % nd
    if input.shape[d - nd] != 3 or other.shape[d - nd] != 3:
        raise ValueError(f"linalg.cross: inputs must have size 3 along dim {dim}, got {tuple(input.shape)} and "
                         f"{tuple(other.shape)}")
    x = input.expand(*shape) if tuple(input.shape) != shape else input
    y = other.expand(*shape) if tuple(other.shape) != shape else other
    xs = [x.narrow(d, i, 1) for i in range(3)]
    ys = [y.narrow(d, i, 1) for i in range(3)]
    from .factories import cat
    return cat([xs[1] * ys[2] - xs[2] * ys[1], xs[2] * ys[0] - xs[0] * ys[2], xs[0] * ys[1] - xs[1] * ys[0]], d)


def vecdot(x, y, *, dim: int = -1) -> Tensor:
    """``torch.linalg.vecdot``: sum(x * y, dim) (the two broadcast)."""
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"linalg.vecdot(): argument '{name}' must be a forgegrad.Tensor, got {type(t).__name__}")
    if x.dtype != y.dtype:  # torch refuses to promote here
        raise RuntimeError(f"linalg.vecdot: expected x and y to have the same dtype, got {x.dtype} and {y.dtype}")
    return (x * y).sum(dim=dim)


def multi_dot(tensors) -> Tensor:
    """``torch.linalg.multi_dot``: the product of the matrices in ``tensors`` (the first may be a 1-d row, the
    last a 1-d column), multiplied in the order that costs the fewest multiply-adds."""
    tensors = list(tensors)
    if len(tensors) < 2:
        raise ValueError(f"linalg.multi_dot: argument 'tensors' must hold at least 2 tensors, got {len(tensors)}")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"linalg.multi_dot: tensors[{i}] must be a forgegrad.Tensor, got {type(t).__name__}")
        ok = t.ndim == 2 or (t.ndim == 1 and i in (0, len(tensors) - 1))
        if not ok:
            raise ValueError(f"linalg.multi_dot: tensors[{i}] must be 2-d (1-d allowed first and last), got shape "
                             f"{tuple(t.shape)}")
        if t.dtype != tensors[0].dtype:  # torch refuses to promote here
            raise RuntimeError(f"linalg.multi_dot: all tensors must have the same dtype, but tensors[0] is "
                               f"{tensors[0].dtype} and tensors[{i}] is {t.dtype}")
    first, last = tensors[0].ndim == 1, tensors[-1].ndim == 1
    mats = [tensors[0].unsqueeze(0) if first else tensors[0]] + tensors[1:-1] + [
        tensors[-1].unsqueeze(-1) if last else tensors[-1]]
    for i in range(len(mats) - 1):
        if mats[i].shape[1] != mats[i + 1].shape[0]:
            raise ValueError(f"linalg.multi_dot: tensors[{i}] and tensors[{i + 1}] cannot be multiplied "
                             f"({tuple(tensors[i].shape)} and {tuple(tensors[i + 1].shape)})")
    out = _chain(mats)
    if first:
        out = out.squeeze(0)
    if last:
        out = out.squeeze(-1)
    return out


def _chain(mats):
    """The matrix-chain order (dynamic programming over split points), as torch's multi_dot."""
    dims = [m.shape[0] for m in mats] + [mats[-1].shape[1]]
    k = len(mats)
    cost = [[0] * k for _ in range(k)]
    split = [[0] * k for _ in range(k)]
    for length in range(1, k):
        for i in range(k - length):
            j = i + length
            cost[i][j] = math.inf
            for s in range(i, j):
                c = cost[i][s] + cost[s + 1][j] + dims[i] * dims[s + 1] * dims[j + 1]
                if c < cost[i][j]:
                    cost[i][j], split[i][j] = c, s

    def build(i, j):
        return mats[i] if i == j else build(i, split[i][j]) @ build(split[i][j] + 1, j)
    return build(0, k - 1)


def diagonal(A, *, offset: int = 0, dim1: int = -2, dim2: int = -1) -> Tensor:
    """``torch.linalg.diagonal``: the diagonal (``offset`` above it when > 0) of the matrices over dims
    (dim1, dim2), as the last dim."""
    A = _L()._t(A, "A", "linalg.diagonal", at_least=2)
    d1, d2 = _dims2(A, (dim1, dim2), "linalg.diagonal")
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
        raise TypeError(f"linalg.diagonal: argument 'offset' must be an int, got {type(offset).__name__}")
    B = _to_end(A, d1, d2)
    r, c = B.shape[-2:]
    count = max(0, min(r, c - offset) if offset >= 0 else min(r + offset, c))
    i = np.arange(count)
    rows, cols = (i, i + offset) if offset >= 0 else (i - offset, i)
    return B[..., rows, cols]
