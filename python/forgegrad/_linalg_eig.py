"""``torch.linalg.eig`` / ``eigvals``: the eigendecomposition of a general square matrix (complex results: complex64
for float32 / complex64 input, complex128 for float64 / complex128), numpy's LAPACK geev (unit-norm eigenvectors, as
torch's), torch's gradient (FunctionsManual ``linalg_eig_backward``); a real input gets the real part."""
from __future__ import annotations

import numpy as np

from . import return_types as R
from .ops._complex import ComplexFunction
from .tensor import Tensor

_COMPLEX = {np.dtype(np.float32): np.dtype(np.complex64), np.dtype(np.float64): np.dtype(np.complex128),
            np.dtype(np.complex64): np.dtype(np.complex64), np.dtype(np.complex128): np.dtype(np.complex128)}


def _mH(a):
    return np.conj(np.swapaxes(a, -1, -2))


class EigFunction(ComplexFunction):
    @staticmethod
    def forward(ctx, A):
        dt = _COMPLEX[A.dtype]
        if not np.isfinite(A).all():
            raise RuntimeError("linalg.eig: input tensor should not contain infs or NaNs")
        w, v = np.linalg.eig(A)
        w, v = w.astype(dt), v.astype(dt)
        ctx.save_for_backward(w, v)
        return w, v

    @staticmethod
    def backward(ctx, gL, gV):
        L, V = ctx.saved_tensors
        VhgV = _mH(V) @ gV
        diag = np.diagonal(VhgV, 0, -2, -1)
        scale = max(1.0, float(np.abs(VhgV).max(initial=0.0)))
        if np.abs(diag.imag).max(initial=0.0) > 1e-4 * scale * (1 if V.dtype == np.complex64 else 1e-6):
            raise RuntimeError("linalg_eig_backward: The eigenvectors in the complex case are specified up to "
                               "multiplication by e^{i phi}. The specified loss function depends on this quantity, so "
                               "it is ill-defined.")
        # onto the skew-Hermitian tangent space (the eigenvectors' unit norm), as torch's
        VhgV = VhgV - _mH(V) @ (V * diag.real[..., None, :])
        Lc = np.conj(L)
        E = Lc[..., None, :] - Lc[..., :, None]
        n = E.shape[-1]
        E[..., np.arange(n), np.arange(n)] = 1
        gA = VhgV / E
        gA[..., np.arange(n), np.arange(n)] = gL
        return np.linalg.solve(_mH(V), gA @ _mH(V))


def _square(A, op):
    if not isinstance(A, Tensor):
        raise TypeError(f"{op}(): argument 'A' must be a forgegrad.Tensor, got {type(A).__name__}")
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise RuntimeError(f"{op}: A must be batches of square matrices, but they are {tuple(A.shape[-2:])} matrices")
    if A._data.dtype not in _COMPLEX:
        raise RuntimeError(f"{op}: Expected a floating point or complex tensor as input. Got {A.dtype}")
    return A


def eig(A, *, out=None):
    """``torch.linalg.eig(A)`` -> (eigenvalues, eigenvectors), complex, eigenvectors of unit norm; differentiable
    (a loss must not depend on the eigenvectors' phases, as torch checks)."""
    if out is not None:
        raise TypeError("linalg.eig(): out= is not supported by forgegrad; use the returned tensors")
    return R.linalg_eig(*EigFunction.apply(_square(A, "linalg.eig")))


def eigvals(A, *, out=None):
    """``torch.linalg.eigvals(A)``: the eigenvalues (complex), differentiable (gradient V^-H diag(g) V^H)."""
    if out is not None:
        raise TypeError("linalg.eigvals(): out= is not supported by forgegrad; use the returned tensor")
    return EigFunction.apply(_square(A, "linalg.eigvals"))[0]
