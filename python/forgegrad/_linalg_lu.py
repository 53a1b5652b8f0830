"""forgegrad.linalg's LU family (lu_factor, lu_factor_ex, lu, lu_unpack, lu_solve, solve_ex, torch.lu,
torch.lu_solve) and the Cholesky solves (torch.cholesky_solve, torch.cholesky_inverse).

The factorization is the registry op ``linalg_lu_factor`` (ops/linalg_lu.py: getrf's partial pivoting in numpy,
vectorised over the batch; torch's gradient). lu_unpack and lu_solve are made of Tensor ops and the
``linalg_solve_triangular`` op over LU's triangles, with the permutation a constant matrix, so they differentiate
(twice too) as the composition, which is torch's gradient: only the triangles read get one."""
from __future__ import annotations

import numpy as np

from . import return_types as R
from .ops import _linalg_common as _C
from .ops.linalg_lu import check_pivots, lu_factor_array, perm_matrix
from .ops.registry import get as _op
from .tensor import Tensor


def _L():
    from . import linalg
    return linalg


def _wrap(a) -> Tensor:
    return Tensor._wrap_exact(np.ascontiguousarray(a) if np.ndim(a) else np.asarray(a))


def _meta_like(t: Tensor, shape, dtype) -> Tensor:
    return _wrap(np.zeros(shape, dtype)).to("meta") if t.is_meta else _wrap(np.zeros(shape, dtype))


def _tensor(x, name, op) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}(): argument '{name}' must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


def _tri(A, B, *, upper, left=True, unitriangular=False):
    return _op("linalg_solve_triangular")(A, B, upper=upper, left=left, unitriangular=unitriangular)


# ---- factorizations ----------------------------------------------------------------------------------------------
def lu_factor(A, *, pivot: bool = True):
    """``torch.linalg.lu_factor``: (LU, pivots) of a batch of (m, n) matrices, P A = L U with partial pivoting
    (LAPACK getrf's choice of pivots; pivots 1-based int32). A matrix with an exactly zero pivot raises LinAlgError,
    as torch's (lu_factor_ex reports it in ``info`` instead). ``pivot=False`` raises, as torch's on the CPU."""
    A = _L()._t(A, "A", "linalg.lu_factor")
    LU, piv = _op("linalg_lu_factor")(A, pivot=pivot)
    if not A.is_meta:
        info = _pivot_info(LU)
        if np.any(info):
            _raise_singular(info, "linalg.lu_factor")
    return R.linalg_lu_factor(LU, piv)


def _pivot_info(LU: Tensor):
    """getrf's info from a factor: 1 + the first zero on U's diagonal, 0 if none."""
    d = np.diagonal(LU.numpy(), axis1=-2, axis2=-1) == 0
    if d.shape[-1] == 0:  # 0 x n / m x 0: nothing to factor (argmax has no empty axis)
        return np.zeros(d.shape[:-1], np.int32)
    return np.where(d.any(-1), d.argmax(-1) + 1, 0).astype(np.int32)


def _raise_singular(info, op):
    first = int(info.reshape(-1)[np.flatnonzero(info.reshape(-1))[0]])
    raise _C.LinAlgError(f"{op}:{_C.batch_index(info > 0)} U[{first},{first}] is zero (argument 'A' is singular), so "
                         "using it in lu_solve would divide by zero; to factor it anyway call linalg.lu_factor_ex or "
                         "linalg.lu")


def lu_factor_ex(A, *, pivot: bool = True, check_errors: bool = False):
    """``torch.linalg.lu_factor_ex``: (LU, pivots, info); info > 0 is the 1-based step of the first exactly zero
    pivot (the factorization goes on past it, as getrf), 0 for a regular matrix."""
    A = _L()._t(A, "A", "linalg.lu_factor_ex")
    check_errors = _C.check_bool(check_errors, "check_errors", "linalg.lu_factor_ex")
    LU, piv = _op("linalg_lu_factor")(A, pivot=pivot)
    if A.is_meta:
        return R.linalg_lu_factor_ex(LU, piv, _meta_like(A, A.shape[:-2], np.int32))
    info = _pivot_info(LU)
    if check_errors and np.any(info):
        _raise_singular(info, "linalg.lu_factor_ex")
    return R.linalg_lu_factor_ex(LU, piv, _wrap(info))


def lu_unpack(LU_data, LU_pivots, unpack_data: bool = True, unpack_pivots: bool = True):
    """``torch.lu_unpack``: (P, L, U) with A = P L U from lu_factor's output; L (..., m, k) unit lower, U (..., k, n)
    (gradient to LU's triangles, as torch's). A part not asked for is an empty tensor, as torch's."""
    op = "lu_unpack"
    LU = _L()._t(LU_data, "LU_data", op)
    piv = _tensor(LU_pivots, "LU_pivots", op)
    unpack_data = _C.check_bool(unpack_data, "unpack_data", op)
    unpack_pivots = _C.check_bool(unpack_pivots, "unpack_pivots", op)
    dt = np.dtype(LU.dtype)
    m, n = LU.shape[-2:]
    k = min(m, n)
    empty = _meta_like(LU, (0,), dt)
    P = L = U = empty
    if unpack_pivots:
        if LU.is_meta or piv.is_meta:
            P = _meta_like(LU, tuple(LU.shape[:-2]) + (m, m), dt)
        else:
            check_pivots(piv.numpy(), LU.shape, op, "LU_pivots")
            P = _wrap(perm_matrix(piv.numpy(), m, dt))
    if unpack_data:
        from .ops.linalg_lu import unpack
        L, U = unpack(_C.TS, LU, k) if not LU.is_meta else (
            _meta_like(LU, tuple(LU.shape[:-2]) + (m, k), dt), _meta_like(LU, tuple(LU.shape[:-2]) + (k, n), dt))
    return R.lu_unpack(P, L, U)


def lu(A, *, pivot: bool = True):
    """``torch.linalg.lu``: (P, L, U) with A = P L U, any (m, n) (singular matrices included, as torch's);
    gradient torch's linalg_lu_backward."""
    LU, piv, _ = lu_factor_ex(A, pivot=pivot)
    return R.linalg_lu(*lu_unpack(LU, piv))


def _check_lu_solve(LU, piv, B, op, names):
    nl, np_, nb = names
    LU = _L()._t(LU, nl, op, square=True)
    B = _L()._t(B, nb, op)
    piv = _tensor(piv, np_, op)
    if not (LU.is_meta or piv.is_meta):
        check_pivots(piv.numpy(), LU.shape, op, np_)
    if LU.dtype != B.dtype:  # torch refuses to promote here
        raise RuntimeError(f"{op}: expected {nl} and {nb} to have the same dtype, got {LU.dtype} and {B.dtype}")
    return LU, piv, B


def lu_solve(LU, pivots, B, *, left: bool = True, adjoint: bool = False) -> Tensor:
    """``torch.linalg.lu_solve``: X with A X = B (``adjoint``: A^T X = B; ``left=False``: X A = B / X A^T = B) from
    A's lu_factor; batch dims broadcast. Differentiable in LU (its triangles) and B, as torch's."""
    return _lu_solve(LU, pivots, B, left, adjoint, "linalg.lu_solve", ("LU", "pivots", "B"))


def _lu_solve(LU, pivots, B, left, adjoint, op, names):
    """lu_solve, its errors naming the caller's arguments (torch.lu_solve's are b, LU_data, LU_pivots)."""
    LU, piv, B = _check_lu_solve(LU, pivots, B, op, names)
    nl, _, nb = names
    left = _C.check_bool(left, "left", op)
    adjoint = _C.check_bool(adjoint, "adjoint", op)
    n = LU.shape[-1]
    if (B.shape[-2] if left else B.shape[-1]) != n:
        raise ValueError(f"{op}: argument '{nb}' of shape {tuple(B.shape)} does not fit {nl} of shape "
                         f"{tuple(LU.shape)} ({'rows' if left else 'columns'} must be {n})")
    try:
        np.broadcast_shapes(tuple(LU.shape[:-2]), tuple(B.shape[:-2]))
    except ValueError:
        raise ValueError(f"{op}: the batch dims of {nl} {tuple(LU.shape[:-2])} and {nb} {tuple(B.shape[:-2])} do not "
                         "broadcast") from None
    if LU.is_meta or B.is_meta:
        return _tri(LU, B, upper=True, left=left)
    if not np.diagonal(LU.numpy(), axis1=-2, axis2=-1).all():
        raise _C.LinAlgError(f"{op}: argument '{nl}' has a zero on U's diagonal (A is singular); torch returns "
                             "inf/NaN there, forgegrad refuses it")
    P = _wrap(perm_matrix(piv.numpy(), n, np.dtype(LU.dtype)))
    Pt, LUt = P.transpose(-2, -1), LU.transpose(-2, -1)
    if left and not adjoint:  # U^-1 L^-1 P^T B
        return _tri(LU, _tri(LU, Pt @ B, upper=False, unitriangular=True), upper=True)
    if left:  # A^T = U^T L^T P^T: P L^-T U^-T B
        return P @ _tri(LUt, _tri(LUt, B, upper=False), upper=True, unitriangular=True)
    if not adjoint:  # B U^-1 L^-1 P^T
        return _tri(LU, _tri(LU, B, upper=True, left=False), upper=False, left=False, unitriangular=True) @ Pt
    return _tri(LUt, _tri(LUt, B @ P, upper=True, left=False, unitriangular=True), upper=False, left=False)


def solve_ex(A, B, *, left: bool = True, check_errors: bool = False):
    """``torch.linalg.solve_ex``: (result, info); info as lu_factor_ex's (> 0: singular; that matrix's result is
    NaN here, torch leaves LAPACK's partial one) unless ``check_errors``, which raises as solve. Never raises for a
    singular A otherwise: where numpy's LAPACK meets an exact zero pivot that this LU does not (rounding on a
    numerically singular A), the result comes from this LU, as torch's from its own."""
    L = _L()
    A = L._t(A, "A", "linalg.solve_ex", square=True)
    check_errors = _C.check_bool(check_errors, "check_errors", "linalg.solve_ex")
    if check_errors or A.is_meta:
        X = L.solve(A, B, left=left)
        return R.linalg_solve_ex(X, _meta_like(A, A.shape[:-2], np.int32))
    info = lu_factor_array(A.numpy())[2]
    if not np.any(info):
        try:
            return R.linalg_solve_ex(L.solve(A, B, left=left), _wrap(info))
        except _C.LinAlgError:
            pass
    L._t(B, "B", "linalg.solve_ex", at_least=1)
    from .ops.linalg_solve import solve_shapes
    vector = solve_shapes(A.shape, B.shape, left, "linalg.solve_ex")[0]
    if A.dtype != B.dtype:  # torch refuses to promote here
        raise RuntimeError(f"linalg.solve_ex: expected A and B to have the same dtype, got {A.dtype} and {B.dtype}")
    ok = (info == 0)[..., None, None]
    X = regular_lu_solve(A, ok, B.unsqueeze(-1) if vector else B, left)
    if vector:
        X = X.squeeze(-1)
    return R.linalg_solve_ex(_op("where")(ok[..., 0] if vector else ok, X, np.nan), _wrap(info))


def regular_lu_solve(A, ok, B, left=True):
    """solve(A, B) through linalg_lu_factor and lu_solve (differentiable as torch's solve), the matrices not ``ok``
    (info > 0) swapped for the identity first: inv_ex's and solve_ex's path when a matrix is singular to LAPACK."""
    eye = np.broadcast_to(np.eye(A.shape[-1], dtype=np.dtype(A.dtype)), A.shape)
    LU, piv = _op("linalg_lu_factor")(_op("where")(ok, A, _wrap(eye)))
    return lu_solve(LU, piv, B, left=left)


# ---- torch's legacy names ----------------------------------------------------------------------------------------
def torch_lu(A, pivot: bool = True, get_infos: bool = False):
    """``torch.lu`` (deprecated in torch for linalg.lu_factor / lu_factor_ex): the plain tuple (LU, pivots) or, with
    ``get_infos``, the named tuple (LU, pivots, info) (torch.return_types._lu_with_info). A singular matrix does not
    raise either way, as torch's (its factorization is still P L U = A; info says which step hit a zero)."""
    get_infos = _C.check_bool(get_infos, "get_infos", "lu")
    LU, piv, info = lu_factor_ex(A, pivot=pivot)
    return R._lu_with_info(LU, piv, info) if get_infos else (LU, piv)


def torch_lu_solve(b, LU_data, LU_pivots) -> Tensor:
    """``torch.lu_solve(b, LU_data, LU_pivots)`` (deprecated in torch): linalg.lu_solve(LU_data, LU_pivots, b)."""
    return _lu_solve(LU_data, LU_pivots, b, True, False, "lu_solve", ("LU_data", "LU_pivots", "b"))


# ---- Cholesky solves ---------------------------------------------------------------------------------------------
def cholesky_solve(input, input2, upper: bool = False) -> Tensor:
    """``torch.cholesky_solve(B, L, upper=False)``: X with (L L^T) X = B (``upper``: U^T U), reading only the
    factor's triangle; batch dims broadcast. Gradients torch's (the factor's is not masked to its triangle, as
    torch's)."""
    L = _L()
    B = L._t(input, "input", "cholesky_solve", at_least=1)
    F = L._t(input2, "input2", "cholesky_solve", square=True)
    return _op("cholesky_solve")(B, F, upper=upper)


def cholesky_inverse(input, upper: bool = False) -> Tensor:
    """``torch.cholesky_inverse(L, upper=False)``: (L L^T)^-1 (``upper``: (U^T U)^-1); its gradient is torch's
    (-(A^-1 (g + g^T) A^-1) L), as cholesky_solve of the identity."""
    F = _L()._t(input, "input", "cholesky_inverse", square=True)
    if not F.is_meta and F.shape[-1]:
        zero = np.diagonal(F.numpy(), axis1=-2, axis2=-1) == 0
        if zero.any():  # (cholesky_solve's own message would name its arguments, not this one's)
            first = int(zero.reshape(-1, zero.shape[-1])[np.flatnonzero(zero.any(-1).reshape(-1))[0]].argmax()) + 1
            raise _C.LinAlgError(f"cholesky_inverse:{_C.batch_index(zero.any(-1))} the diagonal element {first} of "
                                 "argument 'input' is zero: the factor is singular, so (L L^T) has no inverse")
    eye = np.broadcast_to(np.eye(F.shape[-1], dtype=np.dtype(F.dtype)), F.shape)
    I = _wrap(eye).to("meta") if F.is_meta else _wrap(eye)  # noqa: E741
    return _op("cholesky_solve")(I, F, upper=upper)
