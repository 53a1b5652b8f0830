"""forgegrad.sparse: torch.sparse's COO and CSR tensors, CPU only.

    s = forgegrad.sparse_coo_tensor(indices, values, size)      # or x.to_sparse(), x.to_sparse_csr()
    y = forgegrad.sparse.mm(s, dense)                            # s's gradient: sparse, on s's pattern
    y = s @ dense                                                # torch.mm: s's gradient is dense

The tensor class is forgegrad.sparse.SparseTensor (_tensor.py); its storages are in _storage.py, the differentiable
ops in _functions.py, the CSR float32 kernels in forgegrad._C.sparse (cpp/kernels/per_isa/spmm.cpp). Dense ops
refuse a sparse tensor with a TypeError naming the op (_dispatch.py); docs/torch_compat.md lists what works.
"""
from __future__ import annotations

from ..tensor import Tensor
from . import _dispatch, _functions as _F
from ._tensor import (SparseTensor, install as _install, layout, sparse_coo, sparse_coo_tensor, sparse_csr,
                      sparse_csr_tensor, strided)

__all__ = ["SparseTensor", "sparse_coo_tensor", "sparse_csr_tensor", "layout", "strided", "sparse_coo",
           "sparse_csr", "mm", "addmm", "sampled_addmm", "sum", "softmax", "log_softmax"]


def mm(mat1, mat2) -> Tensor:
    """torch.sparse.mm: sparse @ dense or dense @ sparse -> dense, sparse @ sparse -> sparse (one layout); the
    sparse operands' gradients are sparse, on their patterns."""
    return _F.mm(mat1, mat2, sampled=True)


def addmm(mat, mat1, mat2, *, beta=1, alpha=1) -> Tensor:
    """torch.sparse.addmm: beta * mat + alpha * (mat1 @ mat2), mat1 sparse, mat and mat2 dense."""
    prod = _F.mm(mat1, mat2, sampled=True)
    prod = prod if alpha == 1 else prod * alpha
    return prod + (mat if beta == 1 else mat * beta)


def sampled_addmm(input, mat1, mat2, *, beta=1.0, alpha=1.0) -> SparseTensor:
    """torch.sparse.sampled_addmm: beta * input + alpha * (mat1 @ mat2) computed at input's nonzeros only (input
    a 2-D CSR tensor; the product by the SDDMM kernel); a CSR result, differentiable in all three."""
    return _F.SampledAddmm.apply(input, mat1, mat2, float(beta), float(alpha))


def sum(input, dim=None, dtype=None):  # noqa: A001  (torch.sparse.sum)
    """torch.sparse.sum: every element (a dense 0-d tensor), or over ``dim`` (sparse while sparse dims remain)."""
    out = _F.sparse_sum(input, dim)
    return out if dtype is None else out.to(dtype)


def softmax(input, dim, *, dtype=None):
    """torch.sparse.softmax: softmax over ``dim`` of the specified entries (unspecified ones count as -inf)."""
    x = input if dtype is None else input.to(dtype)
    return _F.SparseSoftmax.apply(x, _dim(x, dim), False)


def log_softmax(input, dim, *, dtype=None):
    """torch.sparse.log_softmax (see softmax)."""
    x = input if dtype is None else input.to(dtype)
    return _F.SparseSoftmax.apply(x, _dim(x, dim), True)


def _dim(x, dim):
    if not isinstance(x, SparseTensor):
        raise TypeError("sparse.softmax: input must be a sparse COO tensor")
    d = dim + x.ndim if dim < 0 else dim
    if not 0 <= d < x.ndim:
        raise IndexError(f"sparse.softmax: dim {dim} is out of range for a {x.ndim}-D tensor")
    return d


_install()
_dispatch.install()
