"""Views with strides of their own, as torch's: ``diagonal`` (op "diagonal") and ``as_strided`` (op "as_strided").

Both return numpy views of the input's memory (built as window.py's unfold windows are, so that their ``.base`` is
the array owning that memory): a write through them reaches the input, and an inference tensor's diagonal is an
inference tensor (forgegrad._inference_tensors: a view takes the kind of the tensor it views).

``diagonal(input, offset, dim1, dim2)``: the (dim1, dim2) planes' ``offset`` diagonal as a last dim; its stride is
the two dims' strides added. Gradient: the output gradient written on the diagonal of zeros. ONNX: the planes moved
last, flattened, and a Gather of the diagonal's flat positions (dynamic leading dims).

``as_strided(input, size, stride, storage_offset=None)``: a view of the input's *storage* (the array that owns its
memory, forgegrad._version_counter.root) with those sizes and element strides, starting ``storage_offset`` elements
into it (by default where the input starts). Gradient: torch's as_strided_backward: the output's gradient summed
into the storage elements it read (repeated ones add), read back at the input's elements, divided by how many input
elements share one storage element. ONNX: a Gather of constant positions when the input is its storage, contiguous.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from .._version_counter import root
from ..devices import MetaArray
from . import _meta as M
from . import _samples as S
from ._util import single_axis
from .registry import BadInput, Sample, register_op
from .window import _strided


# ---- diagonal -------------------------------------------------------------------------------------------------
def _diagonal_geometry(shape, offset, dim1, dim2):
    """(d1, d2, length) with torch's checks."""
    nd = len(shape)
    if nd < 2:
        raise RuntimeError(f"diagonal(): input must have at least 2 dims, got {nd}")
    if isinstance(offset, (bool, np.bool_)) or not isinstance(offset, (int, np.integer)):
        raise TypeError(f"diagonal(): argument 'offset' must be an int, got {type(offset).__name__}")
    d1, d2 = (single_axis(d, nd, f"diagonal(): dim{i}") for i, d in ((1, dim1), (2, dim2)))
    if d1 == d2:
        raise RuntimeError(f"diagonal(): dim1 and dim2 cannot be the same dim ({d1})")
    n1, n2, offset = shape[d1], shape[d2], int(offset)
    length = max(min(n1, n2 - offset) if offset >= 0 else min(n1 + offset, n2), 0)
    return d1, d2, length


def _diagonal_view(a: np.ndarray, offset: int, d1: int, d2: int, length: int) -> np.ndarray:
    """The diagonal of ``a`` as a view of its memory (writable when ``a`` is)."""
    rest = [k for k in range(a.ndim) if k not in (d1, d2)]
    shape = tuple(a.shape[k] for k in rest) + (length,)
    strides = tuple(a.strides[k] for k in rest) + (a.strides[d1] + a.strides[d2],)
    if length == 0:
        return _strided(a, shape, strides)
    start = [slice(None)] * a.ndim  # the array from the diagonal's first element on
    start[d2 if offset >= 0 else d1] = slice(abs(offset), None)
    return _strided(a[tuple(start)], shape, strides)


def _diagonal_samples():
    return [Sample((S.rand(3, 4), 0, 0, 1), name="main diagonal"),
            Sample((S.rand(4, 3, seed=1), 1, 0, 1), name="above"),
            Sample((S.rand(5, 4, seed=2), -2, 0, 1), name="below"),
            Sample((S.rand(2, 3, 4, seed=3), 0, -1, 0), name="3-d, dims -1 and 0"),
            Sample((S.rand(2, 5, 3, 2, seed=4), -1, 1, 2), name="4-d, middle dims"),
            Sample((S.rand(2, 3, seed=5), 5, 0, 1), name="offset past the end: empty")]


def _diagonal_bad():
    x = S.rand(3, 4)
    return [BadInput((S.rand(3), 0, 0, 1), {}, RuntimeError, "at least 2 dims"),
            BadInput((x, 0, 1, 1), {}, RuntimeError, "same dim"),
            BadInput((x, 0, 0, 2), {}, IndexError, "dim2"),
            BadInput((x, 1.0, 0, 1), {}, TypeError, "offset")]


def _diagonal_onnx(ctx, op):
    x = op.args["a"]
    shape = tuple(x.shape)
    d1, d2, length = _diagonal_geometry(shape, op.attr("offset"), op.attr("dim1"), op.attr("dim2"))
    offset = int(op.attr("offset"))
    n2 = shape[d2]
    nd = len(shape)
    rest = [k for k in range(nd) if k not in (d1, d2)]
    moved = ctx.node("Transpose", [op.input("a")], perm=rest + [d1, d2])
    # Reshape's 0 keeps a dim: the leading dims stay dynamic
    flat = ctx.node("Reshape", [moved, ctx.const(np.array([0] * len(rest) + [shape[d1] * n2], np.int64))])
    pos = (np.arange(length) + max(-offset, 0)) * n2 + np.arange(length) + max(offset, 0)
    return [ctx.node("Gather", [flat, ctx.const(pos.astype(np.int64))], axis=len(rest))]


def _diagonal_rule(ctx, args, kwargs, g):
    """The gradient with Tensor ops: g written on the diagonal of zeros (diagonal_scatter)."""
    from .._torch_shape_more import diagonal_scatter
    a, offset, dim1, dim2 = args[:4]
    return diagonal_scatter(g.new_zeros(*a.shape), g, offset, dim1, dim2), None, None, None


@register_op("diagonal", meta=None, flops=M.no_flops, samples=_diagonal_samples, bad_inputs=_diagonal_bad,
             onnx=_diagonal_onnx, torch=lambda torch, a, offset, dim1, dim2: torch.diagonal(a, offset, dim1, dim2),
             differentiable_backward=_diagonal_rule)
class DiagonalFunction(Function):
    """torch.diagonal: the ``offset`` diagonal of the (dim1, dim2) planes, a view of the input."""

    is_view = True

    @staticmethod
    def forward(ctx, a, offset, dim1, dim2):
        d1, d2, length = _diagonal_geometry(a.shape, offset, dim1, dim2)
        ctx.shape, ctx.geometry = a.shape, (int(offset), d1, d2, length)
        return _diagonal_view(a, int(offset), d1, d2, length)

    @staticmethod
    def backward(ctx, g):
        out = np.zeros(ctx.shape, g.dtype)
        _diagonal_view(out, *ctx.geometry)[...] = g
        return out, None, None, None


DiagonalFunction.op.meta = M.structural(DiagonalFunction)
DiagonalFunction.op.float64 = DiagonalFunction  # numpy in the input's dtype


# ---- as_strided -----------------------------------------------------------------------------------------------
def _ints(value, name: str):
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in value):
        raise TypeError(f"as_strided(): argument '{name}' must be a tuple of ints, got {value!r}")
    return tuple(int(v) for v in value)


def _storage(a: np.ndarray):
    """(the memory owning array a views, flat in a's dtype, and a's offset into it in elements)."""
    owner = root(a)
    if not (isinstance(owner, np.ndarray) and (owner.flags.c_contiguous or owner.flags.f_contiguous)
            and owner.nbytes % a.itemsize == 0):
        raise NotImplementedError("as_strided(): the input's memory is not a contiguous CPU array (forgegrad needs "
                                  "one to address its storage)")
    flat = owner.ravel(order="K")  # (a view: the memory in its order)
    if flat.dtype != a.dtype:
        flat = flat.view(np.uint8).view(a.dtype)
    start = a.__array_interface__["data"][0] - owner.__array_interface__["data"][0] if a.size else 0
    return flat, start // a.itemsize


def _geometry(a: np.ndarray, size, stride, storage_offset):
    """(storage, size, stride, offset), checked as torch's."""
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride):
        raise RuntimeError(f"mismatch in length of strides and shape: {len(stride)} strides for {len(size)} sizes")
    if any(n < 0 for n in size):
        raise RuntimeError(f"as_strided(): negative size in {size}")
    if any(s < 0 for s in stride):
        raise RuntimeError("as_strided: Negative strides are not supported at the moment, got strides: "
                           f"{list(stride)}")
    storage, start = _storage(a)
    if storage_offset is None:
        offset = start
    else:
        offset = _ints(storage_offset, "storage_offset")
        if len(offset) != 1 or offset[0] < 0:
            raise RuntimeError(f"as_strided(): storage_offset must be a non-negative int, got {storage_offset!r}")
        offset = offset[0]
    if all(size):
        needed = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
        if needed > storage.size:
            raise RuntimeError(f"setStorage: sizes {list(size)}, strides {list(stride)}, storage offset {offset}, "
                               f"and itemsize {a.itemsize} requiring a storage size of {needed * a.itemsize} are "
                               f"out of bounds for storage of size {storage.size * a.itemsize}")
    return storage, size, stride, offset


def _positions(size, stride, offset) -> np.ndarray:
    """The storage index of each element of a (size, stride, offset) geometry, in that shape."""
    pos = np.full(size, offset, np.int64)
    for k, (n, s) in enumerate(zip(size, stride)):
        pos += (np.arange(n, dtype=np.int64) * s).reshape((n,) + (1,) * (len(size) - k - 1))
    return pos


def _input_geometry(a: np.ndarray):
    """(size, element strides, offset) of the input in its storage."""
    _, start = _storage(a)
    if any(s % a.itemsize for s in a.strides):
        raise NotImplementedError("as_strided(): input strides that are not whole elements")
    return a.shape, tuple(s // a.itemsize for s in a.strides), start


def _input_positions(a: np.ndarray) -> np.ndarray:
    return _positions(*_input_geometry(a))


def _as_strided_samples():
    x = S.rand(4, 5)
    return [Sample((x, (3, 3), (5, 1)), name="a window, storage strides"),
            Sample((x, (2, 2), (1, 2), 3), name="storage_offset, transposed strides"),
            Sample((x, (3, 4), (1, 1)), name="overlapping: repeated elements add in the gradient"),
            Sample((S.rand(6, seed=1), (2, 3), (0, 2), 1), name="stride 0 (broadcast)"),
            Sample((S.rand(2, 3, 4, seed=2), (4, 2), (6, 3)), name="3-d input"),
            Sample((x, (0, 3), (1, 1)), name="empty")]


def _as_strided_bad():
    x = S.rand(3, 4)
    return [BadInput((x, (2, 2), (1,)), {}, RuntimeError, "mismatch in length"),
            BadInput((x, (4, 4), (4, 1)), {}, RuntimeError, "out of bounds"),
            BadInput((x, (2, 2), (-1, 1)), {}, RuntimeError, "Negative strides"),
            BadInput((x, (2.0, 2), (1, 1)), {}, TypeError, "size")]


def _as_strided_onnx(ctx, op):
    x = op.args["a"]
    arr = x._data if hasattr(x, "_data") else x
    storage, size, stride, offset = _geometry(arr, op.attr("size"), op.attr("stride"), op.attr("storage_offset"))
    _, start = _storage(arr)
    if not arr.flags.c_contiguous:
        raise NotImplementedError("as_strided: exported only on a contiguous input (its storage order is the graph's)")
    pos = _positions(size, stride, offset) - start
    if pos.size and (pos.min() < 0 or pos.max() >= arr.size):
        raise NotImplementedError("as_strided: exported only when the view reads within the input's own elements")
    flat = ctx.node("Reshape", [op.input("a"), ctx.const(np.array([-1], np.int64))])
    return [ctx.node("Gather", [flat, ctx.const(pos.astype(np.int64))], axis=0)]


def _as_strided_rule(ctx, args, kwargs, g):
    """The gradient with Tensor ops (index_add into the storage span, index_select back, as the array rule)."""
    from .._torch_indexing import _wrap
    a, size, stride = args[:3]
    storage_offset = args[3] if len(args) > 3 else kwargs.get("storage_offset")
    arr = a._data
    _, size, stride, offset = _geometry(arr, size, stride, storage_offset)
    out_pos, in_pos = _positions(size, stride, offset).reshape(-1), _input_positions(arr).reshape(-1)
    low = int(min(out_pos.min(initial=0), in_pos.min(initial=0)))
    span = int(max(out_pos.max(initial=0), in_pos.max(initial=0))) - low + 1
    summed = g.new_zeros(span).index_add(0, _wrap(out_pos - low), g.reshape(-1))
    count = np.bincount(in_pos - low, minlength=span)[in_pos - low]
    grad = summed.index_select(0, _wrap(in_pos - low))
    if count.max(initial=1) > 1:
        grad = grad / _wrap(count.astype(arr.dtype))
    return grad.reshape(tuple(arr.shape)), None, None, None


@register_op("as_strided", meta=None, flops=M.no_flops, samples=_as_strided_samples, bad_inputs=_as_strided_bad,
             onnx=_as_strided_onnx, differentiable_backward=_as_strided_rule,
             torch=lambda torch, a, size, stride, storage_offset=None: torch.as_strided(a, size, stride,
                                                                                         storage_offset))
class AsStridedFunction(Function):
    """torch.as_strided: a view of the input's storage with the given sizes, element strides and offset."""

    is_view = True

    @staticmethod
    def forward(ctx, a, size, stride, storage_offset=None):
        storage, size, stride, offset = _geometry(a, size, stride, storage_offset)
        ctx.a_shape, ctx.geometry = a.shape, (size, stride, offset)
        ctx.input_geometry = _input_geometry(a)
        if not storage.size:
            return np.zeros(size, a.dtype)
        view = _strided(storage[offset:] if offset < storage.size else storage[:0], size,
                        tuple(s * a.itemsize for s in stride))
        if not a.flags.writeable and view.flags.writeable:
            view.flags.writeable = False
        return view

    @staticmethod
    def backward(ctx, g):
        size, stride, offset = ctx.geometry
        out_pos, in_pos = _positions(size, stride, offset).reshape(-1), _positions(*ctx.input_geometry).reshape(-1)
        low = int(min(out_pos.min(initial=0), in_pos.min(initial=0)))
        span = int(max(out_pos.max(initial=0), in_pos.max(initial=0))) - low + 1
        summed = np.zeros(span, g.dtype)
        np.add.at(summed, out_pos - low, g.reshape(-1))  # repeated storage elements add (torch's)
        grad = summed[in_pos - low]
        count = np.bincount(in_pos - low, minlength=span)[in_pos - low]
        if count.max(initial=1) > 1:  # input elements sharing storage split its gradient (torch's)
            grad = (grad / count).astype(g.dtype)
        return grad.reshape(ctx.a_shape), None, None, None


def _as_strided_meta(a, size, stride, storage_offset=None):
    """On the meta device (no storage to bound): the checked sizes."""
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride):
        raise RuntimeError(f"mismatch in length of strides and shape: {len(stride)} strides for {len(size)} sizes")
    return MetaArray(size, a.dtype)


AsStridedFunction.op.meta = _as_strided_meta
AsStridedFunction.op.float64 = AsStridedFunction
