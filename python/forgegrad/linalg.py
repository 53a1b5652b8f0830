"""forgegrad.linalg: torch.linalg for real float32/float64 matrices, batched over leading dims.

Factorizations and solves (inv, det, slogdet, solve, solve_triangular, cholesky, qr, eigh, svd, matrix_exp) are
ops in the op registry (ops/linalg_solve.py, ops/linalg_decomp.py): numpy.linalg (LAPACK) computes the forward,
the gradients are torch's formulas (derivatives.yaml / FunctionsManual), double backward included. The rest
(norms, pinv, lstsq, matrix_rank, cond, matrix_power, cross, vecdot, multi_dot, diagonal) is composed of those
ops and Tensor ops, so it differentiates (and exports, where its parts do) the same way.

LU (lu_factor, lu, lu_solve, lu_unpack) is the registry op ``linalg_lu_factor`` (ops/linalg_lu.py: LAPACK getrf's
partial pivoting written in numpy, vectorised over the batch) plus compositions; householder_product, ormqr,
tensorinv, tensorsolve and vander are compositions too (_linalg_lu.py, _linalg_house.py).

ldl_factor / ldl_solve are LAPACK sytrf / sytrs (Bunch-Kaufman) written in numpy, without gradient (torch has none).

Not here: complex inputs (refused, but eig/eigvals take them; their results are complex),
``out=``. Singular inputs to inv/solve and non-positive-definite ones to cholesky raise
:class:`LinAlgError` (a RuntimeError), as torch; inv_ex/cholesky_ex return ``info`` instead. Eigenvector /
singular-vector signs are LAPACK's (numpy's build), which torch does not promise to match: compare invariant
quantities.

Vector norms (``vector_norm``) are made of ops (abs, powers, sums, amax), so they are differentiable any number of
times, and the gradient of a zero vector's norm is 0, as torch's (see ``Tensor.norm``, which this shares)."""
from __future__ import annotations

import numpy as np

from .ops import _linalg_common as _C
from .ops.registry import get as _op
from .return_types import (linalg_cholesky_ex, linalg_eigh, linalg_inv_ex, linalg_lstsq,  # noqa: F401
                           linalg_qr, linalg_slogdet, linalg_svd)
from .tensor import Tensor

LinAlgError = _C.LinAlgError

__all__ = ["vector_norm", "matrix_norm", "norm", "inv", "inv_ex", "det", "slogdet", "logdet", "solve",
           "solve_triangular", "cholesky", "cholesky_ex", "qr", "eigh", "eigvalsh", "svd", "svdvals", "pinv", "lstsq",
           "matrix_rank", "matrix_power", "matrix_exp", "cross", "vecdot", "multi_dot", "diagonal", "cond",
           "LinAlgError", "lu", "lu_factor", "lu_factor_ex", "lu_solve", "solve_ex", "householder_product",
           "tensorinv", "tensorsolve", "vander", "matmul", "eig", "eigvals", "ldl_factor",
           "ldl_factor_ex", "ldl_solve"]


def _t(x, name: str, op: str, square: bool = False, at_least: int = 2) -> Tensor:
    """``x`` checked: a float32/float64 forgegrad Tensor with at least ``at_least`` dims (square if asked)."""
    if not isinstance(x, Tensor):
        if np.iscomplexobj(x):
            raise TypeError(f"{op}: complex inputs are not supported (argument '{name}'): forgegrad's linear algebra "
                            "is real float32/float64 only")
        raise TypeError(f"{op}(): argument '{name}' must be a forgegrad.Tensor, got {type(x).__name__}")
    if not x.is_meta:
        _C.check_matrix(x._data, name, op, square=square, at_least=at_least)
    return x


def _wrap(arr) -> Tensor:
    a = np.asarray(arr)  # (np.ascontiguousarray would make a 0-d info / logdet 1-d)
    return Tensor._wrap_exact(a if a.flags.c_contiguous else np.ascontiguousarray(a))


def _info_like(A) -> Tensor:
    """Zero ``info`` (int32, A's batch shape) on A's device."""
    info = _wrap(np.zeros(A.shape[:-2], np.int32))
    return info.to("meta") if A.is_meta else info


# ---- inverses, determinants, solves ------------------------------------------------------------------------------
def inv(A) -> Tensor:
    """``torch.linalg.inv``: A^-1 for a batch of square matrices; a singular one raises LinAlgError."""
    return _op("linalg_inv")(_t(A, "A", "linalg.inv", square=True))


def inv_ex(A, *, check_errors: bool = False):
    """``torch.linalg.inv_ex``: (inverse, info); info > 0 marks a singular matrix (its inverse is NaN here: torch
    leaves LAPACK's partial result) unless ``check_errors``, which raises as inv."""
    A = _t(A, "A", "linalg.inv_ex", square=True)
    if check_errors or A.is_meta:
        return linalg_inv_ex(inv(A), _info_like(A))
    a = A._data
    try:
        np.linalg.inv(a)
    except np.linalg.LinAlgError:
        from ._linalg_lu import regular_lu_solve
        from .ops.linalg_lu import lu_factor_array
        info = lu_factor_array(a)[2]  # getrf's info, as torch's
        # the regular matrices' inverses through this LU (in A's graph, as torch's), the singular ones NaN; not
        # through inv, which fails on a matrix where numpy's LAPACK meets an exact zero pivot and this LU does not
        ok = (info == 0)[..., None, None]
        eye = _wrap(np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape))
        return linalg_inv_ex(_op("where")(ok, regular_lu_solve(A, ok, eye), np.nan), _wrap(info))
    return linalg_inv_ex(inv(A), _wrap(np.zeros(a.shape[:-2], np.int32)))


def det(A) -> Tensor:
    """``torch.linalg.det``; its gradient is det * A^-T (the cofactor matrix, through the SVD, for an exactly
    singular A: torch's create_graph result; torch's plain backward returns 0 there)."""
    return _op("linalg_det")(_t(A, "A", "linalg.det", square=True))


def slogdet(A):
    """``torch.linalg.slogdet``: (sign, logabsdet) with det = sign * exp(logabsdet); logabsdet's gradient is
    A^-T."""
    sign, logabs = _op("linalg_slogdet")(_t(A, "A", "linalg.slogdet", square=True))
    return linalg_slogdet(sign.detach(), logabs)


def logdet(A) -> Tensor:
    """``torch.logdet``: log det A; NaN where det < 0, -inf where det == 0 (as torch)."""
    sign, logabs = _op("linalg_slogdet")(_t(A, "A", "logdet", square=True))
    if A.is_meta:
        return logabs
    return logabs + _wrap(np.where(sign._data < 0, np.nan, 0.0).astype(logabs._data.dtype))


def solve(A, B, *, left: bool = True) -> Tensor:
    """``torch.linalg.solve``: X with A X = B (``left=False``: X A = B). B: (..., n, k), or a batch of vectors
    (..., n) (torch's rule: 1-d, or A's shape without its last dim); batch dims broadcast."""
    _t(B, "B", "linalg.solve", at_least=1)
    return _op("linalg_solve")(_t(A, "A", "linalg.solve", square=True), B, left=left)


def solve_triangular(A, B, *, upper: bool, left: bool = True, unitriangular: bool = False) -> Tensor:
    """``torch.linalg.solve_triangular``: X with A X = B (left) or X A = B, A upper or lower triangular (the other
    triangle is not read; ``unitriangular``: nor the diagonal, taken as ones)."""
    _t(B, "B", "linalg.solve_triangular")
    return _op("linalg_solve_triangular")(_t(A, "A", "linalg.solve_triangular", square=True), B, upper=upper,
                                          left=left, unitriangular=unitriangular)


def matrix_exp(A) -> Tensor:
    """``torch.linalg.matrix_exp``: e^A (Pade 13, scaling and squaring); gradient as torch's."""
    return _op("linalg_matrix_exp")(_t(A, "A", "linalg.matrix_exp", square=True))


def matrix_power(A, n: int) -> Tensor:
    """``torch.linalg.matrix_power``: A^n by repeated squaring (matmuls: differentiable, exportable to ONNX for
    n >= 0); n < 0 is inv(A)^-n; n == 0 the identity."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"linalg.matrix_power: argument 'n' must be an int, got {type(n).__name__}")
    A = _t(A, "A", "linalg.matrix_power", square=True)
    if n == 0:
        eye = np.broadcast_to(np.eye(A.shape[-1], dtype=A.numpy().dtype), A.shape)
        # the identity even for a non-finite A (A * 0 would be NaN there), in A's graph with a zero gradient, as
        # torch's
        return _op("where")(np.zeros(A.shape, bool), A, _wrap(eye))
    base = inv(A) if n < 0 else A
    n = abs(int(n))
    result = None
    while n:
        if n & 1:
            result = base if result is None else result @ base
        n >>= 1
        if n:
            base = base @ base
    return result


# ---- factorizations ----------------------------------------------------------------------------------------------
def cholesky(A, *, upper: bool = False) -> Tensor:
    """``torch.linalg.cholesky``: L (lower, A = L L^T; ``upper``: U, A = U^T U), reading only that triangle of A;
    a matrix that is not positive definite raises LinAlgError naming the failing leading minor."""
    return _op("linalg_cholesky")(_t(A, "A", "linalg.cholesky", square=True), upper=upper)


def cholesky_ex(A, *, upper: bool = False, check_errors: bool = False):
    """``torch.linalg.cholesky_ex``: (L, info); info > 0 is the order of the first leading minor that is not
    positive definite (that matrix's L holds the columns computed before it; no gradient then)."""
    from .ops.linalg_decomp import cholesky_array
    A = _t(A, "A", "linalg.cholesky_ex", square=True)
    if A.is_meta:
        return linalg_cholesky_ex(cholesky(A, upper=upper), _info_like(A))
    L, info = cholesky_array(A._data, _C.check_bool(upper, "upper", "linalg.cholesky_ex"), check_errors)
    if not np.any(info):
        return linalg_cholesky_ex(cholesky(A, upper=upper), _wrap(info))
    return linalg_cholesky_ex(_wrap(L), _wrap(info))


def qr(A, mode: str = "reduced"):
    """``torch.linalg.qr``: (Q, R); mode 'reduced', 'complete' or 'r' (Q empty). Signs are LAPACK's (R's
    diagonal may be negative). Gradient as torch's (none for mode 'r', nor 'complete' with more rows than
    columns)."""
    return linalg_qr(*_op("linalg_qr")(_t(A, "A", "linalg.qr"), mode=mode))


def eigh(A, UPLO: str = "L"):
    """``torch.linalg.eigh``: (eigenvalues ascending, eigenvectors as columns) of a symmetric matrix, reading its
    UPLO triangle. The eigenvectors' gradient is defined only for distinct eigenvalues (inf/NaN otherwise, as
    torch's), and only for losses that do not depend on their signs."""
    return linalg_eigh(*_op("linalg_eigh")(_t(A, "A", "linalg.eigh", square=True), UPLO=UPLO))


def eigvalsh(A, UPLO: str = "L") -> Tensor:
    """``torch.linalg.eigvalsh``: the eigenvalues of a symmetric matrix, ascending (gradient V diag(g) V^T)."""
    return eigh(A, UPLO)[0]


def svd(A, full_matrices: bool = True, *, driver=None):
    """``torch.linalg.svd``: (U, S, Vh), S descending. Gradient: torch's for the reduced form (with
    ``full_matrices`` the extra columns of U / rows of Vh get none); singular vectors' signs are LAPACK's."""
    if driver is not None:
        raise ValueError("linalg.svd: argument 'driver' is for CUDA in torch; forgegrad's svd runs LAPACK gesdd")
    return linalg_svd(*_op("linalg_svd")(_t(A, "A", "linalg.svd"), full_matrices=full_matrices))


def svdvals(A, *, driver=None) -> Tensor:
    """``torch.linalg.svdvals``: the singular values, descending (gradient U diag(g) Vh)."""
    return svd(A, False, driver=driver)[1]


def vector_norm(x, ord=2, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """``torch.linalg.vector_norm``: the ``ord``-norm of ``x`` over ``dim`` (an int, a tuple, or None: every
    element, whatever the shape). ``ord``: a number, ``inf`` (max |x|), ``-inf`` (min |x|) or 0 (the count of
    non-zeros). ``x`` must be floating, as torch's; ``dtype``: it is cast to that first (float32 -> float64)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"vector_norm(): argument 'x' must be a forgegrad.Tensor, got {type(x).__name__}")
    if np.dtype(x.dtype).kind not in "fc":  # dtype= does not make an integer tensor acceptable (torch)
        raise TypeError(f"vector_norm: expected a floating point or complex tensor as input, got {x.dtype}; cast "
                        "it first")
    if dtype is not None:
        from .dtypes import to_numpy
        want = to_numpy(dtype)
        if np.promote_types(np.dtype(x.dtype), want) != want:  # torch refuses a narrowing dtype= too
            raise ValueError(f"vector_norm: dtype={dtype} would narrow the input's {x.dtype}; pass a dtype at least "
                             "as wide (or cast the input first)")
        x = x.to(dtype)
    if isinstance(ord, (bool, str)) or not isinstance(ord, (int, float, np.number)):
        raise ValueError(f"vector_norm: ord must be a number (inf, -inf and 0 included), got {ord!r}")
    if x.ndim == 0 and dim is not None:  # a 0-d tensor has dims 0 and -1 (size 1), as torch
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d not in (0, -1):
                raise IndexError(f"vector_norm: dim {d!r} is out of range for a 0-d tensor (expected 0 or -1)")
        dim = None
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):  # every element, as torch's dim=()
        out = x.reshape(-1).norm(ord, dim=0)
        return out.reshape((1,) * x.ndim) if keepdim else out
    return x.norm(ord, dim=dim, keepdim=keepdim)


from ._linalg_more import (cond, cross, diagonal, lstsq, matrix_norm, matrix_rank, multi_dot, norm,  # noqa: E402
                           pinv, vecdot)
from ._linalg_lu import (cholesky_inverse, cholesky_solve, lu, lu_factor, lu_factor_ex, lu_solve,  # noqa: E402
                        solve_ex)
from ._linalg_house import (eig, eigvals, geqrf, householder_product, ormqr, tensorinv, tensorsolve,  # noqa: E402
                            vander)
from ._linalg_ldl import ldl_factor, ldl_factor_ex, ldl_solve  # noqa: E402
from ._functions import matmul  # noqa: E402  (torch.linalg.matmul is torch.matmul)


# torch's Tensor methods for these (added only where Tensor has none of its own)
def _cholesky_method(self, upper: bool = False):
    return cholesky(self, upper=upper)


def _pinverse_method(self, rcond: float = 1e-15):
    return pinv(self, rtol=rcond)


def _lu_method(self, pivot: bool = True, get_infos: bool = False):
    from ._linalg_lu import torch_lu
    return torch_lu(self, pivot, get_infos)


def _lu_solve_method(self, LU_data, LU_pivots):
    return lu_solve(LU_data, LU_pivots, self)


def _cholesky_solve_method(self, input2, upper: bool = False):
    return cholesky_solve(self, input2, upper)


def _cholesky_inverse_method(self, upper: bool = False):
    return cholesky_inverse(self, upper)


def _ormqr_method(self, input2, input3, left: bool = True, transpose: bool = False):
    return ormqr(self, input2, input3, left, transpose)


def _svd_method(self, some: bool = True, compute_uv: bool = True):
    from ._linalg_house import torch_svd
    return torch_svd(self, some, compute_uv)


def _qr_method(self, some: bool = True):
    from ._linalg_house import torch_qr
    return torch_qr(self, some)


def _triangular_solve_method(self, A, upper: bool = True, transpose: bool = False, unitriangular: bool = False):
    from ._linalg_house import triangular_solve
    return triangular_solve(self, A, upper, transpose, unitriangular)


for _name, _fn in (("det", det), ("inverse", inv), ("logdet", logdet), ("slogdet", slogdet),
                   ("cholesky", _cholesky_method), ("matrix_exp", matrix_exp), ("matrix_power", matrix_power),
                   ("pinverse", _pinverse_method), ("lu", _lu_method), ("lu_solve", _lu_solve_method),
                   ("cholesky_solve", _cholesky_solve_method), ("cholesky_inverse", _cholesky_inverse_method),
                   ("orgqr", householder_product), ("geqrf", geqrf), ("ormqr", _ormqr_method), ("svd", _svd_method),
                   ("qr", _qr_method), ("triangular_solve", _triangular_solve_method)):
    if not hasattr(Tensor, _name):
        setattr(Tensor, _name, _fn)
