"""forgegrad.linalg.ldl_factor / ldl_factor_ex / ldl_solve: the Bunch-Kaufman LDL^T factorization of symmetric
matrices, as LAPACK sytrf / sytrs with uplo 'L' (what torch calls), written in numpy.

numpy has no sytrf: ``ldl_factor_array`` is LAPACK's unblocked dsytf2 (lower), the same pivot decisions as the
blocked dsytrf, one matrix at a time (each matrix takes its own 1x1 / 2x2 steps, so the batch is a Python loop;
the row operations inside are numpy). Pivots as LAPACK's: k (1-based) for a 1x1 block that swapped rows k and
pivots[k]; -p on both rows of a 2x2 block. Only A's lower triangle is read; LD's upper triangle is zero, as
torch's. No gradient: torch has none either ("derivative for linalg_ldl_factor_ex is not implemented")."""
from __future__ import annotations

import numpy as np

from . import return_types as R
from .ops import _linalg_common as _C
from .tensor import Tensor

_ALPHA = (1.0 + np.sqrt(17.0)) / 8.0


def _L():
    from . import linalg
    return linalg


def _wrap(a) -> Tensor:
    return Tensor._wrap_exact(np.ascontiguousarray(a) if np.ndim(a) else np.asarray(a))


def _dsytf2(a):
    """(LD, pivots, info) of one n x n matrix (its lower triangle), in place on a copy."""
    a = np.tril(a)
    n = a.shape[0]
    piv = np.zeros(n, np.int32)
    info = 0
    k = 0
    while k < n:
        kstep = 1
        absakk = abs(a[k, k])
        if k < n - 1:
            imax = k + 1 + int(np.argmax(np.abs(a[k + 1:, k])))
            colmax = abs(a[imax, k])
        else:
            imax, colmax = k, 0.0
        if max(absakk, colmax) == 0 or np.isnan(absakk):
            info = info or k + 1
            kp = k
        else:
            if absakk >= _ALPHA * colmax:
                kp = k
            else:
                jmax = k + int(np.argmax(np.abs(a[imax, k:imax])))
                rowmax = abs(a[imax, jmax])
                if imax < n - 1:
                    rowmax = max(rowmax, float(np.max(np.abs(a[imax + 1:, imax]))))
                if absakk >= _ALPHA * colmax * (colmax / rowmax):
                    kp = k
                elif abs(a[imax, imax]) >= _ALPHA * rowmax:
                    kp = imax
                else:
                    kp, kstep = imax, 2
            kk = k + kstep - 1
            if kp != kk:  # swap rows and columns kk and kp of the trailing block (its lower triangle)
                if kp < n - 1:
                    a[kp + 1:, [kk, kp]] = a[kp + 1:, [kp, kk]]
                seg = a[kk + 1:kp, kk].copy()
                a[kk + 1:kp, kk] = a[kp, kk + 1:kp]
                a[kp, kk + 1:kp] = seg
                a[kk, kk], a[kp, kp] = a[kp, kp], a[kk, kk]
                if kstep == 2:
                    a[k + 1, k], a[kp, k] = a[kp, k], a[k + 1, k]
            if kstep == 1:
                if k < n - 1:
                    d11 = 1.0 / a[k, k]
                    x = a[k + 1:, k].copy()
                    a[k + 1:, k + 1:] -= np.tril(d11 * np.outer(x, x))
                    a[k + 1:, k] *= d11
            elif k < n - 2:
                d21 = a[k + 1, k]
                d11 = a[k + 1, k + 1] / d21
                d22 = a[k, k] / d21
                t = 1.0 / (d11 * d22 - 1.0)
                d21 = t / d21
                ck, ck1 = a[k + 2:, k].copy(), a[k + 2:, k + 1].copy()
                wk = d21 * (d11 * ck - ck1)
                wkp1 = d21 * (d22 * ck1 - ck)
                a[k + 2:, k + 2:] -= np.tril(np.outer(ck, wk) + np.outer(ck1, wkp1))
                a[k + 2:, k], a[k + 2:, k + 1] = wk, wkp1
        if kstep == 1:
            piv[k] = kp + 1
        else:
            piv[k] = piv[k + 1] = -(kp + 1)
        k += kstep
    return np.tril(a), piv, info


def ldl_factor_array(A):
    """(LD, pivots, info) of a (..., n, n) array, matrix by matrix (in its dtype)."""
    *batch, n, _ = A.shape
    flat = A.reshape((int(np.prod(batch, dtype=np.int64)), n, n))
    LD = np.zeros_like(flat)
    piv = np.zeros(flat.shape[:2], np.int32)
    info = np.zeros(flat.shape[0], np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, m in enumerate(flat):
            LD[i], piv[i], info[i] = _dsytf2(m)
    return LD.reshape(A.shape), piv.reshape(tuple(batch) + (n,)), info.reshape(tuple(batch))


def _dsytrs(a, piv, b):
    """X with A X = b for one factored matrix (LAPACK dsytrs, lower); b (n, k), solved in place on a copy."""
    n = a.shape[0]
    b = b.copy()
    k = 0
    while k < n:  # L D Y = B
        if piv[k] > 0:
            kp = piv[k] - 1
            b[[k, kp]] = b[[kp, k]]
            b[k + 1:] -= np.outer(a[k + 1:, k], b[k])
            b[k] /= a[k, k]
            k += 1
        else:
            kp = -piv[k] - 1
            b[[k + 1, kp]] = b[[kp, k + 1]]
            if k < n - 2:
                b[k + 2:] -= np.outer(a[k + 2:, k], b[k]) + np.outer(a[k + 2:, k + 1], b[k + 1])
            akm1k = a[k + 1, k]
            akm1, ak = a[k, k] / akm1k, a[k + 1, k + 1] / akm1k
            denom = akm1 * ak - 1.0
            bkm1, bk = b[k] / akm1k, b[k + 1] / akm1k
            b[k], b[k + 1] = (ak * bkm1 - bk) / denom, (akm1 * bk - bkm1) / denom
            k += 2
    k = n - 1
    while k >= 0:  # L^T X = Y
        if piv[k] > 0:
            b[k] -= a[k + 1:, k] @ b[k + 1:]
            kp = piv[k] - 1
            b[[k, kp]] = b[[kp, k]]
            k -= 1
        else:
            b[k] -= a[k + 1:, k] @ b[k + 1:]
            b[k - 1] -= a[k + 1:, k - 1] @ b[k + 1:]
            kp = -piv[k] - 1
            b[[k, kp]] = b[[kp, k]]
            k -= 2
    return b


def _check_pivot_values(piv, op):
    """sytrf's pivots: each in +-1..n, and a negative one (a 2x2 block) on two consecutive rows alike."""
    n = piv.shape[-1]
    if piv.size and (np.abs(piv).min() < 1 or np.abs(piv).max() > n):
        raise ValueError(f"{op}: argument 'pivots' holds values outside +-1..{n} (as linalg.ldl_factor returns)")
    for row in piv.reshape(-1, n) if (piv < 0).any() else ():
        k = 0
        while k < n:
            if row[k] < 0:
                if k + 1 == n or row[k + 1] != row[k]:
                    raise ValueError(f"{op}: argument 'pivots' is not sytrf's: the negative pivot {row[k]} at "
                                     f"index {k} (a 2x2 block) must be repeated at the next index")
                k += 1
            k += 1


def _check_hermitian(hermitian, op):
    _C.check_bool(hermitian, "hermitian", op)  # real matrices: symmetric and Hermitian are the same


def ldl_factor_ex(A, *, hermitian: bool = False, check_errors: bool = False):
    """``torch.linalg.ldl_factor_ex``: (LD, pivots, info) of symmetric matrices (their lower triangle read), LAPACK
    sytrf's Bunch-Kaufman pivoting; info > 0: D[info-1, info-1] is exactly zero (a singular matrix). No gradient
    (torch neither)."""
    op = "linalg.ldl_factor_ex"
    A = _L()._t(A, "A", op, square=True)
    _check_hermitian(hermitian, op)
    check_errors = _C.check_bool(check_errors, "check_errors", op)
    if A.is_meta:
        n = A.shape[-1]
        return R.linalg_ldl_factor_ex(A.detach(), _wrap(np.zeros(tuple(A.shape[:-2]) + (n,), np.int32)).to("meta"),
                                      _wrap(np.zeros(A.shape[:-2], np.int32)).to("meta"))
    LD, piv, info = ldl_factor_array(A.numpy())
    if check_errors and np.any(info):
        _raise_singular(info, op)
    return R.linalg_ldl_factor_ex(_wrap(LD), _wrap(piv), _wrap(info))


def _raise_singular(info, op):
    first = int(info.reshape(-1)[np.flatnonzero(info.reshape(-1))[0]])
    raise _C.LinAlgError(f"{op}:{_C.batch_index(info > 0)} D[{first},{first}] is zero (argument 'A' is singular), so "
                         "ldl_solve would divide by zero; linalg.ldl_factor_ex reports it in 'info' instead")


def ldl_factor(A, *, hermitian: bool = False):
    """``torch.linalg.ldl_factor``: (LD, pivots); a singular matrix raises LinAlgError (torch's CPU build hits an
    internal assert there)."""
    LD, piv, info = ldl_factor_ex(A, hermitian=hermitian)
    if not LD.is_meta and np.any(info.numpy()):
        _raise_singular(info.numpy(), "linalg.ldl_factor")
    return R.linalg_ldl_factor(LD, piv)


def ldl_solve(LD, pivots, B, *, hermitian: bool = False) -> Tensor:
    """``torch.linalg.ldl_solve``: X with A X = B from A's ldl_factor (LAPACK sytrs); B (..., n, k), batch dims
    broadcast. No gradient (torch neither)."""
    op = "linalg.ldl_solve"
    LD = _L()._t(LD, "LD", op, square=True)
    B = _L()._t(B, "B", op)
    _check_hermitian(hermitian, op)
    if not isinstance(pivots, Tensor):
        raise TypeError(f"{op}(): argument 'pivots' must be a forgegrad.Tensor, got {type(pivots).__name__}")
    n = LD.shape[-1]
    if np.dtype(pivots.dtype) != np.int32:
        raise TypeError(f"{op}: argument 'pivots' must be an int32 tensor (as linalg.ldl_factor returns), got "
                        f"{pivots.dtype}")
    if tuple(pivots.shape) != tuple(LD.shape[:-1]):
        raise ValueError(f"{op}: argument 'pivots' must have shape {tuple(LD.shape[:-1])} for LD of shape "
                         f"{tuple(LD.shape)}, got {tuple(pivots.shape)}")
    if LD.dtype != B.dtype:  # torch refuses to promote here
        raise RuntimeError(f"{op}: expected LD and B to have the same dtype, got {LD.dtype} and {B.dtype}")
    if B.shape[-2] != n:
        raise ValueError(f"{op}: argument 'B' of shape {tuple(B.shape)} must have {n} rows, as LD {tuple(LD.shape)}")
    try:
        batch = np.broadcast_shapes(tuple(LD.shape[:-2]), tuple(B.shape[:-2]))
    except ValueError:
        raise ValueError(f"{op}: the batch dims of LD {tuple(LD.shape[:-2])} and B {tuple(B.shape[:-2])} do not "
                         "broadcast") from None
    if LD.is_meta or B.is_meta or pivots.is_meta:
        return _wrap(np.zeros(batch + tuple(B.shape[-2:]), np.dtype(B.dtype))).to("meta")
    piv = pivots.numpy()
    _check_pivot_values(piv, op)
    a = np.broadcast_to(LD.numpy(), batch + (n, n)).reshape(-1, n, n)
    p = np.broadcast_to(piv, batch + (n,)).reshape(-1, n)
    b = np.broadcast_to(B.numpy(), batch + tuple(B.shape[-2:])).reshape((-1,) + tuple(B.shape[-2:]))
    with np.errstate(divide="ignore", invalid="ignore"):  # a singular factor gives inf/NaN, as torch's
        x = np.stack([_dsytrs(a[i], p[i], b[i]) for i in range(a.shape[0])]) if a.shape[0] else b.copy()
    return _wrap(x.reshape(batch + tuple(B.shape[-2:])))
