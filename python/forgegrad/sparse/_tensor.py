"""SparseTensor: a Tensor whose storage is a COO or CSR matrix (forgegrad.sparse._storage), its layouts and
constructors (torch.sparse_coo_tensor, torch.sparse_csr_tensor, Tensor.to_sparse / to_sparse_csr / to_dense).

A SparseTensor is a Tensor for autograd (requires_grad, .grad, grad_fn, backward) but not for dense ops: an op
without a sparse rule raises TypeError naming the op (forgegrad.sparse._dispatch), as torch refuses a sparse tensor
in an op that has no sparse kernel; nothing densifies silently. Its methods are torch's sparse ones."""
from __future__ import annotations

import numbers

import numpy as np

from .. import dtypes as _dtypes
from ..tensor import Tensor
from . import _functions as F
from ._autograd import accumulate
from ._storage import COO, CSR, _SparseStorage

_I64 = np.dtype(np.int64)


class layout:
    """torch.layout: forgegrad.strided, forgegrad.sparse_coo, forgegrad.sparse_csr."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"forgegrad.{self.name}"

    def __reduce__(self):
        return (_layout_named, (self.name,))


strided, sparse_coo, sparse_csr = layout("strided"), layout("sparse_coo"), layout("sparse_csr")
_LAYOUTS = {"strided": strided, "sparse_coo": sparse_coo, "sparse_csr": sparse_csr}


def _layout_named(name):
    return _LAYOUTS[name]


def _refuse(what: str):
    def method(self, *args, **kwargs):
        raise TypeError(f"{what}: not supported for a sparse tensor (layout {self.layout}); convert it with "
                        ".to_dense() first")
    method.__name__ = what
    return method


class SparseTensor(Tensor):
    """A sparse COO or CSR tensor (see the module docstring); made by sparse_coo_tensor, sparse_csr_tensor,
    Tensor.to_sparse() or Tensor.to_sparse_csr()."""

    __slots__ = ()

    @classmethod
    def _from_storage(cls, storage: _SparseStorage, requires_grad: bool = False) -> "SparseTensor":
        t = cls.__new__(cls)
        t._data, t.grad, t._ctx, t._out_index, t._retains_grad, t.requires_grad = storage, None, None, 0, False, False
        if requires_grad:
            t.requires_grad_(True)
        return t

    # ---- attributes ---------------------------------------------------------------------------------------
    @property
    def layout(self) -> layout:
        return _LAYOUTS[self._data.layout_name]

    @property
    def is_sparse(self) -> bool:  # torch: True for COO only
        return isinstance(self._data, COO)

    @property
    def is_sparse_csr(self) -> bool:
        return isinstance(self._data, CSR)

    def _nnz(self) -> int:
        return self._data.nnz

    def sparse_dim(self) -> int:
        return self._data.sparse_dim

    def dense_dim(self) -> int:
        return self._data.dense_dim

    def is_coalesced(self) -> bool:
        if not isinstance(self._data, COO):
            raise RuntimeError(f"is_coalesced expected a sparse COO tensor, got layout {self.layout}")
        return self._data.coalesced

    def _coo_only(self, what):
        if not isinstance(self._data, COO):
            raise RuntimeError(f"{what}() is for sparse COO tensors, got layout {self.layout} (CSR: crow_indices(), "
                               "col_indices())")
        return self._data

    def indices(self) -> Tensor:
        """The (sparse_dim, nnz) int64 indices of a coalesced COO tensor (torch refuses an uncoalesced one)."""
        d = self._coo_only("indices")
        if not d.coalesced:
            raise RuntimeError("Cannot get indices on an uncoalesced tensor, please call .coalesce() first")
        return Tensor._wrap_exact(d.indices)

    def _indices(self) -> Tensor:
        return Tensor._wrap_exact(self._coo_only("_indices").indices)

    def values(self) -> Tensor:
        """The nonzero values (nnz, *dense_shape), sharing the storage; differentiable (a sparse gradient)."""
        d = self._data
        if isinstance(d, COO) and not d.coalesced:
            raise RuntimeError("Cannot get values on an uncoalesced tensor, please call .coalesce() first")
        return self._values()

    def _values(self) -> Tensor:
        return F.Values.apply(self) if self.requires_grad else Tensor._wrap_exact(self._data.values)

    def crow_indices(self) -> Tensor:
        return Tensor._wrap_exact(self._csr_only("crow_indices").crow)

    def col_indices(self) -> Tensor:
        return Tensor._wrap_exact(self._csr_only("col_indices").col)

    def _csr_only(self, what):
        if not isinstance(self._data, CSR):
            raise RuntimeError(f"{what}() is for sparse CSR tensors, got layout {self.layout}")
        return self._data

    def __repr__(self) -> str:
        d = self._data
        grad = f", grad_fn=<{type(self._ctx).__name__}>" if self._ctx is not None else (
            ", requires_grad=True" if self.requires_grad else "")
        if isinstance(d, CSR):
            body = (f"crow_indices={d.crow.tolist()},\n       col_indices={d.col.tolist()},\n       "
                    f"values={d.values.tolist()}")
        else:
            body = f"indices={d.indices.tolist()},\n       values={d.values.tolist()}"
        return f"tensor({body},\n       size={self.shape}, nnz={d.nnz}, layout={self.layout}{grad})"

    # ---- conversions (differentiable) --------------------------------------------------------------------
    def coalesce(self) -> "SparseTensor":
        d = self._coo_only("coalesce")
        return self if d.coalesced else F.Coalesce.apply(self)

    def to_dense(self, dtype=None) -> Tensor:
        out = F.ToDense.apply(self)
        return out if dtype is None else out.to(dtype)

    def to_sparse(self, sparseDims=None, *, layout=None, blocksize=None, dense_dim=None) -> "SparseTensor":  # noqa: N803
        if layout is sparse_csr:
            return self.to_sparse_csr()
        if isinstance(self._data, COO):
            return self
        return F.CsrToCoo.apply(self)

    def to_sparse_coo(self) -> "SparseTensor":
        return self.to_sparse()

    def to_sparse_csr(self, dense_dim=None) -> "SparseTensor":
        if isinstance(self._data, CSR):
            return self
        return F.ToSparseCsr.apply(self)

    # ---- Tensor methods with a sparse meaning ------------------------------------------------------------
    def detach(self) -> "SparseTensor":
        return SparseTensor._from_storage(self._data)

    def clone(self, *, memory_format=None) -> "SparseTensor":
        return F.Clone.apply(self)

    def to(self, *args, **kwargs):
        target = kwargs.get("dtype", kwargs.get("device", args[0] if args else None))
        if isinstance(target, _dtypes.dtype):
            return self if target.dtype == self._data.dtype else F.Cast.apply(self, target.dtype)
        if target is None or str(target) == "cpu":
            return self
        raise RuntimeError(f"sparse tensors are CPU only in forgegrad, cannot move one to {target}")

    def cpu(self) -> "SparseTensor":
        return self

    def cuda(self, *args, **kwargs):
        raise RuntimeError("sparse tensors are CPU only in forgegrad: there are no CUDA sparse kernels")

    def float(self):
        return self.to(_dtypes.float32)

    def double(self):
        return self.to(_dtypes.float64)

    def __add__(self, other):
        return F.add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return F.add(self, other, alpha=-1)

    def __rsub__(self, other):
        return F.add(-self, other)

    def __mul__(self, other):
        return F.mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        if not isinstance(other, numbers.Number) or isinstance(other, bool):
            raise TypeError(f"sparse tensor / {type(other).__name__}: only division by a number is supported")
        return F.mul(self, 1.0 / other)

    def __neg__(self):
        return F.mul(self, -1.0)

    def __matmul__(self, other):
        return F.mm(self, other, sampled=False)

    def __rmatmul__(self, other):  # dense @ sparse (torch.mm's: a dense result, a dense gradient for self)
        if not isinstance(other, Tensor):
            return NotImplemented
        return F.mm(other, self, sampled=False)

    mm = matmul = __matmul__

    def sum(self, dim=None, keepdim=False, dtype=None):
        if keepdim:
            raise TypeError("sum(keepdim=True) is not supported for a sparse tensor")
        return F.sparse_sum(self, dim)

    def t(self) -> "SparseTensor":
        return F.transpose(self)

    def requires_grad_(self, requires_grad: bool = True) -> "SparseTensor":
        if requires_grad and self._data.dtype.kind not in "fc":
            raise RuntimeError(f"only floating point sparse tensors can require gradients, got dtype {self.dtype}")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad_(False) is only valid on leaf tensors; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def _accumulate_grad(self, g, in_place: bool = True) -> None:
        """A sparse leaf's gradient: a SparseTensor (torch.sparse.mm, to_dense) or a dense Tensor (torch.mm)."""
        accumulate(self, g)

    # a dense tensor's storage and elementwise access do not exist here: say so instead of failing deep inside
    numpy = _refuse("numpy")
    __array__ = _refuse("__array__ (numpy conversion)")
    tolist = _refuse("tolist")
    item = _refuse("item")
    __getitem__ = _refuse("indexing")
    __setitem__ = _refuse("index assignment")
    view = _refuse("view")
    reshape = _refuse("reshape")
    __hash__ = Tensor.__hash__


def _as_index_array(x, name: str) -> np.ndarray:
    arr = x._data if isinstance(x, Tensor) else np.asarray(x)
    if isinstance(arr, _SparseStorage):
        raise TypeError(f"{name} must be a dense integer tensor, got a sparse tensor")
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a CPU tensor: sparse tensors are CPU only in forgegrad")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers (int64 or int32), got dtype {arr.dtype}")
    return arr.astype(_I64)


def _as_values(x, dtype, name="values") -> np.ndarray:
    if isinstance(x, Tensor):
        if isinstance(x._data, _SparseStorage):
            raise TypeError(f"{name} must be a dense tensor, got a sparse tensor")
        if not isinstance(x._data, np.ndarray):
            raise RuntimeError(f"{name} must be a CPU tensor: sparse tensors are CPU only in forgegrad")
        arr = x._data
    else:
        arr = Tensor._stored(x)._data if not isinstance(x, np.ndarray) else x
    if dtype is not None:
        arr = arr.astype(_dtypes.to_numpy(dtype))
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a numeric tensor, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr).copy()


def sparse_coo_tensor(indices, values, size=None, *, dtype=None, device=None, requires_grad: bool = False,
                      check_invariants=None, is_coalesced=None) -> SparseTensor:
    """torch.sparse_coo_tensor: entries ``values[k]`` at ``indices[:, k]`` of a tensor of ``size`` (inferred as
    max index + 1 when None). Duplicate indices are kept until coalesce() sums them. Indices out of ``size``'s
    range raise IndexError (torch checks them only with check_invariants)."""
    if device is not None and str(device) != "cpu":
        raise RuntimeError(f"sparse_coo_tensor: sparse tensors are CPU only in forgegrad, got device={device}")
    ind = _as_index_array(indices, "indices")
    vals = _as_values(values, dtype)
    if ind.ndim != 2:
        raise ValueError(f"sparse_coo_tensor: indices must be 2-D (sparse_dim, nnz), got shape {ind.shape}")
    if vals.ndim == 0:
        raise ValueError("sparse_coo_tensor: values must have at least 1 dim (nnz, *dense_shape), got a 0-d tensor")
    sd, nnz = ind.shape
    if vals.shape[0] != nnz:
        raise ValueError(f"sparse_coo_tensor: indices has {nnz} entries (shape {ind.shape}) but values has "
                         f"{vals.shape[0]} (shape {vals.shape})")
    if size is None:
        if nnz and ind.min(initial=0) < 0:
            raise IndexError("sparse_coo_tensor: indices must be non-negative")
        size = tuple((ind.max(axis=1) + 1).tolist() if nnz else [0] * sd) + vals.shape[1:]
    size = tuple(int(s) for s in (size if not isinstance(size, numbers.Integral) else (size,)))
    if len(size) != sd + vals.ndim - 1:
        raise ValueError(f"sparse_coo_tensor: size {size} must have sparse_dim + dense_dim = {sd} + {vals.ndim - 1} "
                         f"dims (indices {ind.shape}, values {vals.shape})")
    if tuple(vals.shape[1:]) != size[sd:]:
        raise ValueError(f"sparse_coo_tensor: values' dense shape {tuple(vals.shape[1:])} must match size's dense "
                         f"dims {size[sd:]}")
    if any(s < 0 for s in size):
        raise ValueError(f"sparse_coo_tensor: size must be non-negative, got {size}")
    for d in range(sd):
        if nnz and (ind[d].min() < 0 or ind[d].max() >= size[d]):
            bad = int(ind[d][(ind[d] < 0) | (ind[d] >= size[d])][0])
            raise IndexError(f"sparse_coo_tensor: indices[{d}] has {bad}, out of range for size {size[d]} of dim {d}")
    coalesced = bool(nnz <= 1)
    return _with_values(COO(ind, vals, size, coalesced), values, requires_grad)


def sparse_csr_tensor(crow_indices, col_indices, values, size=None, *, dtype=None, device=None,
                      requires_grad: bool = False, check_invariants=None) -> SparseTensor:
    """torch.sparse_csr_tensor (2-D): row i's nonzeros are values[crow[i]:crow[i+1]] at columns col[...]."""
    if device is not None and str(device) != "cpu":
        raise RuntimeError(f"sparse_csr_tensor: sparse tensors are CPU only in forgegrad, got device={device}")
    crow = _as_index_array(crow_indices, "crow_indices")
    col = _as_index_array(col_indices, "col_indices")
    vals = _as_values(values, dtype)
    if crow.ndim != 1 or col.ndim != 1 or vals.ndim != 1:
        raise ValueError(f"sparse_csr_tensor: crow_indices, col_indices and values must be 1-D (batched and hybrid "
                         f"CSR are not supported), got shapes {crow.shape}, {col.shape}, {vals.shape}")
    if col.shape[0] != vals.shape[0]:
        raise ValueError(f"sparse_csr_tensor: col_indices ({col.shape[0]}) and values ({vals.shape[0]}) must have "
                         "the same length")
    if crow.shape[0] < 1 or crow[0] != 0 or crow[-1] != col.shape[0] or np.any(np.diff(crow) < 0):
        raise ValueError(f"sparse_csr_tensor: crow_indices must start at 0, never decrease and end at nnz = "
                         f"{col.shape[0]}, got {crow.tolist()[:8]}{'...' if crow.shape[0] > 8 else ''}")
    if size is None:
        size = (crow.shape[0] - 1, int(col.max()) + 1 if col.size else 0)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"sparse_csr_tensor: size must be 2-D, got {size}")
    if crow.shape[0] != size[0] + 1:
        raise ValueError(f"sparse_csr_tensor: crow_indices must have size[0] + 1 = {size[0] + 1} entries, got "
                         f"{crow.shape[0]}")
    if col.size and (col.min() < 0 or col.max() >= size[1]):
        raise IndexError(f"sparse_csr_tensor: col_indices must be in [0, {size[1]}), got min {col.min()} and max "
                         f"{col.max()}")
    return _with_values(CSR(crow, col, vals, size), values, requires_grad)


def _with_values(storage, values, requires_grad: bool) -> SparseTensor:
    """The constructed tensor: a leaf, or, when ``values`` is a tensor that requires grad (learned edge weights of
    a graph), a node whose backward hands values their gradient (torch's)."""
    if isinstance(values, Tensor) and values.requires_grad and values.dtype == _dtypes._BY_NUMPY[storage.dtype]:
        from ..grad_mode import records_graph
        if records_graph():
            return F.FromValues.apply(values, storage)
    return SparseTensor._from_storage(storage, requires_grad)


# ---- the dense Tensor's side: torch's layout attributes and conversions --------------------------------------
def _dense_to_sparse(self, sparseDims=None, *, layout=None, blocksize=None, dense_dim=None):  # noqa: N803 (torch's)
    """torch's Tensor.to_sparse: COO (sparseDims: how many leading dims are sparse) or, with layout=sparse_csr,
    CSR. blocksize (BSR/BSC) and dense_dim (hybrid CSR) are not supported."""
    if blocksize is not None or dense_dim is not None:
        raise NotImplementedError("to_sparse: blocksize (BSR/BSC) and dense_dim (hybrid CSR) are not supported")
    if layout is sparse_csr:
        return _dense_to_sparse_csr(self)
    if layout not in (None, sparse_coo):
        raise ValueError(f"to_sparse: layout must be forgegrad.sparse_coo or forgegrad.sparse_csr, got {layout}")
    return F.ToSparse.apply(self, sparseDims)


def _dense_to_sparse_csr(self, dense_dim=None):
    if self.ndim != 2:
        raise RuntimeError(f"to_sparse_csr: a 2-D tensor is needed (batched CSR is not supported), got shape "
                           f"{self.shape}")
    return F.ToSparseCsr.apply(self)


def _sparse_mask(self, mask):
    if not isinstance(mask, SparseTensor):
        raise TypeError(f"sparse_mask: mask must be a sparse tensor, got {type(mask).__name__}")
    return F.SparseMask.apply(self, mask)


def install() -> None:
    Tensor.layout = property(lambda self: strided)
    Tensor.is_sparse = property(lambda self: False)
    Tensor.is_sparse_csr = property(lambda self: False)
    Tensor.to_sparse = _dense_to_sparse
    Tensor.to_sparse_coo = lambda self: _dense_to_sparse(self)
    Tensor.to_sparse_csr = _dense_to_sparse_csr
    Tensor.to_dense = lambda self, dtype=None: self if dtype is None else self.to(dtype)
    Tensor.sparse_mask = _sparse_mask
