"""Checks for decompositions whose factors are not unique, where an element-wise comparison with torch has no
meaning: the singular vectors of repeated (or zero) singular values, the QR factors of a rank-deficient matrix, and
the factors LAPACK builds from a non-finite column (reference LAPACK, which numpy and forgegrad run, applies a
reflector with a NaN tau only to the rows its vector reaches; torch's LAPACK spreads the NaN over the whole trailing
block). Used by fuzz_worker.run_op after the element-wise comparison failed: the factors must then satisfy what
defines them (orthonormal, triangular, their product A), and those computed before a non-finite column must equal
torch's."""
from __future__ import annotations

import numpy as np


def _arrays(got):
    return [np.asarray(getattr(t, "_data", t), np.float64) for t in got]


def _tol(A):
    # float32 factors (forgegrad computes in float64 and rounds; torch in float32): a few thousand ulps of the
    # matrix's largest entry times its size
    finite = np.abs(A[np.isfinite(A)])
    scale = max(1.0, float(np.max(finite, initial=0.0)))
    return 1e-4 * scale * max(A.shape[-2:], default=1)


def _orthonormal(Q, what, fail):
    eye = np.eye(Q.shape[-1])
    err = float(np.max(np.abs(np.swapaxes(Q, -1, -2) @ Q - eye), initial=0.0))
    if not err <= 1e-4:
        fail(f"{what} has no orthonormal columns (|Q^T Q - I| = {err:.3g})")


def _svd(A, got, full_matrices, fail):
    U, S, Vh = _arrays(got)
    ref = np.linalg.svd(A, compute_uv=False)
    if not np.allclose(S, ref, rtol=1e-4, atol=_tol(A) * 1e-2):
        fail(f"singular values {S.reshape(-1)[:4]} vs float64 {ref.reshape(-1)[:4]}")
    k = S.shape[-1]
    _orthonormal(U, "U", fail)
    _orthonormal(np.swapaxes(Vh, -1, -2), "Vh^T", fail)
    back = (U[..., :, :k] * S[..., None, :]) @ Vh[..., :k, :]
    err = float(np.max(np.abs(back - A), initial=0.0))
    if not err <= _tol(A):
        fail(f"U diag(S) Vh differs from A by {err:.3g}")
    return "equal", "non-unique singular vectors: orthonormal, U diag(S) Vh = A, S equal to float64's"


def _qr_finite(A, got, mode, fail):
    Q, R = _arrays(got)
    if np.any(np.tril(R, -1) != 0):
        fail("R is not upper triangular")
    if mode == "r":  # A^T A = R^T R whatever Q is
        gram, want = np.swapaxes(R, -1, -2) @ R, np.swapaxes(A, -1, -2) @ A
        err, tol = float(np.max(np.abs(gram - want), initial=0.0)), _tol(A) * max(1.0, float(np.max(np.abs(A),
                                                                                                     initial=0.0)))
    else:
        _orthonormal(Q, "Q", fail)
        err, tol = float(np.max(np.abs(Q[..., :, :R.shape[-2]] @ R - A), initial=0.0)), _tol(A)
    if not err <= tol:
        fail(f"the factors' product differs from A by {err:.3g}")
    return "equal", "non-unique QR factors (rank-deficient A): orthonormal Q, triangular R, their product A"


def _qr_nonfinite(A, got, want, fail):
    """Per matrix: the factors' columns before the first non-finite column of A equal torch's, and the factors at
    that column hold a non-finite value (no finite answer made up from the infinity)."""
    Q, R = _arrays(got)
    tQ, tR = (np.asarray(t.detach().numpy(), np.float64) for t in want)
    batch = A.shape[:-2]
    for idx in np.ndindex(*batch):
        a, q, r, wq, wr = A[idx], Q[idx] if Q.size else Q, R[idx], tQ[idx] if tQ.size else tQ, tR[idx]
        bad_cols = np.flatnonzero(~np.isfinite(a).all(axis=0))
        if bad_cols.size == 0:
            if not (np.allclose(r, wr, rtol=1e-4, atol=_tol(a), equal_nan=True) and
                    (q.size == 0 or np.allclose(q, wq, rtol=1e-4, atol=1e-4, equal_nan=True))):
                fail(f"matrix {idx} (finite) differs from torch's factors")
            continue
        c = int(bad_cols[0])
        if c >= r.shape[-2]:  # a wide matrix's column past the diagonal: only R's column c reads it
            c = r.shape[-2]
        if not (np.allclose(r[:c, :c], wr[:c, :c], rtol=1e-4, atol=_tol(a), equal_nan=True) and
                (q.size == 0 or np.allclose(q[:, :c], wq[:, :c], rtol=1e-4, atol=1e-4, equal_nan=True))):
            fail(f"matrix {idx}: the factors before its first non-finite column {c} differ from torch's")
        col = r[:min(c + 1, r.shape[-2]), c] if c < r.shape[-1] else r[:, -1]
        if np.isfinite(col).all() and (q.size == 0 or c >= q.shape[-1] or np.isfinite(q[:, c]).all()):
            fail(f"matrix {idx}: column {c} holds inf / NaN, its factors are all finite")
    return "equal", ("a non-finite column: the factors before it equal torch's, non-finite at it (LAPACKs spread "
                     "the NaN differently after it)")


def _rescaled(name, A, dtype, got, kwargs, fail):
    """Factors that overflowed float32 (a finite A near float's largest values: singular values or R's diagonal
    past 3.4e38): forgegrad's factors of A / 2^e, an exact scaling in floating point, must be the same factors
    scaled by 2^-e (Q, U, Vh unchanged); the definitions are then checked on that A / 2^e. None where A / 2^e is
    not exact (values that would underflow)."""
    import forgegrad as fg
    # the least power of two that brings every factor into range (|S|, |R| <= sqrt(m n) max |A|): the small
    # entries stay normal numbers, so the scaling is exact
    big = float(np.max(np.abs(A))) * np.sqrt(A.shape[-1] * A.shape[-2]) * 4.0
    e = max(1, int(np.ceil(np.log2(big / float(np.finfo(dtype).max)))))
    small = np.ldexp(A, -e).astype(dtype)
    if not np.array_equal(np.ldexp(small.astype(np.float64), e), A):
        return None
    fn = fg.linalg.svd if name == "linalg_svd" else fg.linalg.qr
    scaled = fn(fg.tensor(small), **kwargs)
    for i, (g, s) in enumerate(zip(_arrays(got), _arrays(scaled))):
        with np.errstate(over="ignore"):  # the factors that overflow: inf, as got's
            want = np.ldexp(s, e).astype(dtype).astype(np.float64) if i == 1 else s  # S / R carry the scale
        # values below the largest's rounding (a zero singular value's noise) are equal within it
        noise = 1e-5 * max(1.0, float(np.max(np.abs(want[np.isfinite(want)]), initial=0.0)))
        if not np.allclose(g, want, rtol=1e-5, atol=noise, equal_nan=True):
            fail(f"the factors of A / 2^{e} scaled back are not A's (factor {i})")
    return small.astype(np.float64), scaled


def check(name, args, kwargs, got, want, failure):
    """(outcome, detail) for linalg_svd / linalg_qr outputs that pass the checks above; raises
    ``failure("mismatch", ...)`` where one fails; None for other ops or inputs these do not cover."""
    if name not in ("linalg_svd", "linalg_qr") or not args or not isinstance(args[0], np.ndarray) or \
            args[0].dtype not in (np.float32, np.float64) or args[0].ndim < 2 or not isinstance(got, (tuple, list)):
        return None
    A, dtype = np.asarray(args[0], np.float64), args[0].dtype

    def fail(detail):
        raise failure("mismatch", f"op {name}: {detail}")

    if name == "linalg_svd":
        if len(got) != 3:
            return None
        options = {"full_matrices": bool(kwargs.get("full_matrices", args[1] if len(args) > 1 else True))}
    else:
        options = {"mode": kwargs.get("mode", args[1] if len(args) > 1 else "reduced")}
        if len(got) != 2 or options["mode"] not in ("reduced", "complete", "r"):
            return None
    if not np.isfinite(A).all():
        return _qr_nonfinite(A, got, want, fail) if name == "linalg_qr" else None
    if not all(np.isfinite(a).all() for a in _arrays(got)) and A.size:  # factors past float32's range
        rescaled = _rescaled(name, A, dtype, got, options, fail)
        if rescaled is None:
            return None
        A, got = rescaled
    if name == "linalg_svd":
        return _svd(A, got, options["full_matrices"], fail)
    return _qr_finite(A, got, options["mode"], fail)
