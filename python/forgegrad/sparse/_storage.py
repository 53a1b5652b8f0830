"""The storage of a sparse tensor: what ``SparseTensor._data`` holds in place of a dense numpy array.

COO (torch.sparse_coo): ``indices`` int64 (sparse_dim, nnz), ``values`` (nnz, *dense_shape), ``shape`` =
sparse sizes + dense sizes (hybrid tensors have dense dims after the sparse ones), ``coalesced``: indices sorted in
row-major order without duplicates. CSR (torch.sparse_csr, 2-D): ``crow`` int64 (rows + 1), ``col`` int64 (nnz),
``values`` (nnz,). Both are plain numpy (CPU only). They carry ``shape``, ``dtype``, ``ndim`` and ``size`` like an
array, so the autograd engine can check a gradient's shape and dtype against them, and ``+`` (how the engine sums
two gradients of one tensor). Dense ops never see one: forgegrad._op_dispatch refuses a tensor whose storage has
``_is_sparse_storage`` (see forgegrad.sparse._dispatch).
"""
from __future__ import annotations

import math

import numpy as np

_I64 = np.dtype(np.int64)


class _SparseStorage:
    _is_sparse_storage = True
    layout_name = ""

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    def __radd__(self, other):
        return self.__add__(other)


class COO(_SparseStorage):
    # _csr: the CSR of a coalesced 2-D COO, made once (patterns are never written in place; it shares values)
    __slots__ = ("indices", "values", "shape", "coalesced", "_csr")
    layout_name = "sparse_coo"

    def __init__(self, indices: np.ndarray, values: np.ndarray, shape, coalesced: bool = False):
        self.indices, self.values, self.shape, self.coalesced = indices, values, tuple(int(s) for s in shape), coalesced
        self._csr = None

    @property
    def sparse_dim(self) -> int:
        return int(self.indices.shape[0])

    @property
    def dense_dim(self) -> int:
        return self.values.ndim - 1

    def with_values(self, values: np.ndarray) -> "COO":
        """The same pattern with other values (indices shared: patterns are never written in place)."""
        return COO(self.indices, values, self.shape, self.coalesced)

    def astype(self, dtype) -> "COO":
        return self.with_values(self.values.astype(dtype))

    def copy(self) -> "COO":
        return COO(self.indices.copy(), self.values.copy(), self.shape, self.coalesced)

    def zeroed(self) -> "COO":
        """No entries (torch's zero_() of a sparse tensor)."""
        return COO(np.zeros((self.sparse_dim, 0), _I64), np.zeros((0,) + self.values.shape[1:], self.dtype),
                   self.shape, True)

    def coalesce(self) -> "COO":
        """Indices sorted row-major, duplicates summed (in their order of appearance)."""
        if self.coalesced:
            return self
        sd = self.sparse_dim
        if self.nnz == 0:
            return COO(self.indices.reshape(sd, 0), self.values.copy(), self.shape, True)
        keys = np.ravel_multi_index(tuple(self.indices), self.shape[:sd]) if sd else np.zeros(self.nnz, _I64)
        uniq, inverse = np.unique(keys, return_inverse=True)
        values = np.zeros((uniq.size,) + self.values.shape[1:], self.values.dtype)
        np.add.at(values, inverse.reshape(-1), self.values)
        indices = np.stack(np.unravel_index(uniq, self.shape[:sd])).astype(_I64) if sd else np.zeros((0, 1), _I64)
        return COO(indices.reshape(sd, -1), values, self.shape, True)

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.shape, self.values.dtype)
        if self.nnz:
            np.add.at(out, tuple(self.indices), self.values)
        return out

    def sample(self, dense: np.ndarray) -> "COO":
        """``dense`` at this (coalesced) pattern: torch's ``dense.sparse_mask(self)``."""
        c = self.coalesce()
        return COO(c.indices, np.ascontiguousarray(dense[tuple(c.indices)]).astype(dense.dtype, copy=False),
                   self.shape, True)

    def __add__(self, other):
        if isinstance(other, COO):
            if other.shape != self.shape or other.dense_dim != self.dense_dim:
                raise RuntimeError(f"sparse add: shapes {self.shape} (sparse_dim {self.sparse_dim}) and {other.shape} "
                                   f"(sparse_dim {other.sparse_dim}) differ")
            dtype = np.result_type(self.values.dtype, other.values.dtype)
            return COO(np.concatenate([self.indices, other.indices], axis=1),
                       np.concatenate([self.values, other.values]).astype(dtype, copy=False), self.shape, False)
        if isinstance(other, CSR):
            return self + other.to_coo()
        return self.to_dense() + other  # a dense gradient meets a sparse one: dense, as torch's accumulation

    def to_csr(self) -> "CSR":
        if self.ndim != 2 or self.sparse_dim != 2:
            raise RuntimeError(f"to_sparse_csr: a 2-D tensor with 2 sparse dims is needed, got shape {self.shape} "
                               f"with sparse_dim {self.sparse_dim}")
        if self._csr is not None and self._csr.values is self.values:
            return self._csr
        c = self.coalesce()
        crow = np.zeros(self.shape[0] + 1, _I64)
        np.cumsum(np.bincount(c.indices[0], minlength=self.shape[0]), out=crow[1:])
        csr = CSR(crow, np.ascontiguousarray(c.indices[1]), c.values, self.shape)
        if self.coalesced:
            self._csr = csr
        return csr


class CSR(_SparseStorage):
    __slots__ = ("crow", "col", "values", "shape")
    layout_name = "sparse_csr"

    def __init__(self, crow: np.ndarray, col: np.ndarray, values: np.ndarray, shape):
        self.crow, self.col, self.values, self.shape = crow, col, values, tuple(int(s) for s in shape)

    sparse_dim = 2
    dense_dim = 0

    def with_values(self, values: np.ndarray) -> "CSR":
        return CSR(self.crow, self.col, values, self.shape)

    def astype(self, dtype) -> "CSR":
        return self.with_values(self.values.astype(dtype))

    def copy(self) -> "CSR":
        return CSR(self.crow.copy(), self.col.copy(), self.values.copy(), self.shape)

    def zeroed(self) -> "CSR":
        return CSR(np.zeros(self.shape[0] + 1, _I64), np.zeros(0, _I64), np.zeros(0, self.dtype), self.shape)

    def rows(self) -> np.ndarray:
        """The row of every nonzero (nnz,)."""
        return np.repeat(np.arange(self.shape[0], dtype=_I64), np.diff(self.crow))

    def to_coo(self) -> COO:
        """COO with the same entries; coalesced when no (row, col) repeats within a row in sorted order."""
        rows = self.rows()
        ind = np.stack([rows, self.col]) if self.nnz else np.zeros((2, 0), _I64)
        coalesced = bool(self.nnz == 0 or np.all(np.diff(rows * max(self.shape[1], 1) + self.col) > 0))
        return COO(ind.astype(_I64, copy=False), self.values, self.shape, coalesced)

    def to_dense(self) -> np.ndarray:
        return self.to_coo().to_dense()

    def sample(self, dense: np.ndarray) -> "CSR":
        return CSR(self.crow, self.col, np.ascontiguousarray(dense[self.rows(), self.col]), self.shape)

    def __add__(self, other):
        if isinstance(other, CSR):
            return (self.to_coo() + other.to_coo()).to_csr()
        if isinstance(other, COO):
            return self.to_coo() + other
        return self.to_dense() + other


def dense_to_coo(arr: np.ndarray, sparse_dim: int | None = None) -> COO:
    """The nonzeros of a dense array (row-major: a coalesced COO); with sparse_dim < ndim, a hybrid tensor whose
    entries are the positions of the first sparse_dim dims where any element of the dense part is nonzero."""
    sd = arr.ndim if sparse_dim is None else int(sparse_dim)
    if not 0 <= sd <= arr.ndim:
        raise RuntimeError(f"to_sparse: sparse_dim must be in [0, {arr.ndim}] for a {arr.ndim}-D tensor, got {sd}")
    if sd == 0:
        return COO(np.zeros((0, 1), _I64), arr.reshape((1,) + arr.shape).copy(), arr.shape, True)
    mask = arr != 0 if sd == arr.ndim else np.any(arr.reshape(arr.shape[:sd] + (-1,)) != 0, axis=-1)
    where = np.nonzero(mask)
    indices = np.stack(where).astype(_I64) if where else np.zeros((sd, 0), _I64)
    return COO(indices.reshape(sd, -1), np.ascontiguousarray(arr[where]), arr.shape, True)


def csr_transpose(s: CSR) -> CSR:
    """The CSR of s^T (a stable counting sort of the nonzeros by column: deterministic, no atomics)."""
    m, k = s.shape
    order = np.argsort(s.col, kind="stable")
    crow = np.zeros(k + 1, _I64)
    np.cumsum(np.bincount(s.col, minlength=k), out=crow[1:])
    return CSR(crow, np.ascontiguousarray(s.rows()[order]), np.ascontiguousarray(s.values[order]), (k, m))
