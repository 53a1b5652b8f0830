"""``Tensor.unfold(dimension, size, step)`` (op "tensor_unfold"; "unfold" is F.unfold, im2col, in ops/fold.py).

The output is torch's strided window view: ``dimension`` becomes the window count ``(n - size) // step + 1`` and a
new last dim of length ``size`` holds each window. It shares the input's storage (a numpy ``as_strided`` view), so
a write through it reaches the input, as torch's. Windows overlap when ``step < size``: the gradient adds every
window's gradient into the element it read (one strided add per window offset, so the same bits at any thread
count). ONNX: a Gather of the window indices (a constant) along ``dimension`` and a Transpose moving the window
axis last.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..kernels.shape_copy import unfold_backward
from . import _meta as M
from . import _samples as S
from ._util import single_axis
from .registry import BadInput, Sample, register_op

_KERNEL_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _geometry(shape, dimension, size, step):
    """(axis, window count) with torch's checks; a 0-d input is taken as one element."""
    for name, v in (("size", size), ("step", step)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"unfold(): argument {name!r} must be an int, got {type(v).__name__}")
    d = single_axis(dimension, max(len(shape), 1), "unfold(): dimension")
    n = shape[d] if shape else 1
    if size < 0 or size > n:
        raise RuntimeError(f"unfold(): argument 'size' ({size}) must be between 0 and the size of dimension {d} "
                           f"({n})")
    if step <= 0:
        raise RuntimeError(f"unfold(): argument 'step' must be positive, got {step}")
    return d, (n - size) // step + 1


def _strided(a, shape, strides):
    """A view of ``a``'s memory with these shape and strides whose numpy ``.base`` is the array owning that memory
    (as_strided's would be a wrapper object), so forgegrad's view tracking (forgegrad._view_rebase) finds its base:
    an in-place write through the windows reaches the input's graph, or is refused where windows overlap."""
    from .._version_counter import root
    owner = root(a)
    if isinstance(owner, np.ndarray) and owner.size and (owner.flags.c_contiguous or owner.flags.f_contiguous):
        offset = a.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
        try:
            out = np.ndarray(shape, a.dtype, buffer=owner, offset=offset, strides=strides)
        except (TypeError, ValueError, BufferError):
            out = None
        if out is not None:
            if not a.flags.writeable and out.flags.writeable:
                out.flags.writeable = False
            return out
    return np.lib.stride_tricks.as_strided(a, shape, strides, writeable=a.flags.writeable)


def _samples():
    return [Sample((S.rand(4, 11, 3), 1, 3, 2), name="overlapping windows, middle dim"),
            Sample((S.rand(seed=4), 0, 1, 1), name="0-d"),
            Sample((S.rand(2, 7, seed=1), -1, 2, 3), name="gaps between windows, dim -1"),
            Sample((S.rand(9, seed=2), 0, 4, 1), name="1-d, step 1"),
            Sample((S.rand(5, 3, seed=3), 0, 5, 1), name="one window of the whole dim")]


def _bad():
    x = S.rand(3, 4)
    return [BadInput((x, 2, 2, 1), {}, IndexError, "dimension"),
            BadInput((x, 1, 5, 1), {}, RuntimeError, "size"),
            BadInput((x, 1, 2, 0), {}, RuntimeError, "step"),
            BadInput((x, 1, 2.0, 1), {}, TypeError, "size")]


def _onnx(ctx, op):
    x = op.args["a"]
    shape = tuple(x.shape)
    d, count = _geometry(shape, op.attr("dimension"), op.attr("size"), op.attr("step"))
    name = op.input("a")
    idx = np.arange(count)[:, None] * int(op.attr("step")) + np.arange(int(op.attr("size")))[None, :]
    if not shape:  # torch: the element as a (size,) tensor
        flat = ctx.node("Reshape", [name, ctx.const(np.array([1], np.int64))])
        return [ctx.node("Gather", [flat, ctx.const(idx.reshape(-1).astype(np.int64))], axis=0)]
    gathered = ctx.node("Gather", [name, ctx.const(idx.astype(np.int64))], axis=d)  # (..., count, size, ...)
    nd = len(shape) + 1
    perm = [k for k in range(nd) if k != d + 1] + [d + 1]
    return [ctx.node("Transpose", [gathered], perm=perm)]


def _rule(ctx, args, kwargs, g):
    """The gradient with Tensor ops: the window axis put next to the count axis, both merged, and index_add of
    every window element's gradient at the element it read (repeated elements add)."""
    from .._torch_indexing import index_add
    from .._torch_indexing import _wrap
    a, dimension, size, step = args[:4]
    shape = tuple(a.shape)
    d, count = _geometry(shape, dimension, size, step)
    if not shape:
        return g.sum(), None, None, None
    full = shape or (1,)
    moved = g.movedim(-1, d + 1)
    merged = moved.reshape(full[:d] + (count * size,) + full[d + 1:])
    idx = (np.arange(count)[:, None] * step + np.arange(size)[None, :]).reshape(-1)
    out = index_add(g.new_zeros(*full), d, _wrap(idx), merged)
    return out.reshape(shape), None, None, None


@register_op("tensor_unfold", meta=None, flops=M.no_flops, samples=_samples, bad_inputs=_bad, onnx=_onnx,
             torch=lambda torch, a, dimension, size, step: a.unfold(dimension, size, step),
             differentiable_backward=_rule)
class TensorUnfoldFunction(Function):
    """Tensor.unfold: windows of ``size`` every ``step`` along ``dimension``, a view of the input."""

    is_view = True

    @staticmethod
    def forward(ctx, a, dimension, size, step):
        d, count = _geometry(a.shape, dimension, size, step)
        ctx.shape, ctx.d, ctx.count, ctx.size, ctx.step = a.shape, d, count, int(size), int(step)
        if a.ndim == 0:  # torch: the element as a (size,) tensor (size 0 or 1)
            return _strided(a, (int(size),), (a.itemsize,))
        shape = a.shape[:d] + (count,) + a.shape[d + 1:] + (int(size),)
        strides = a.strides[:d] + (a.strides[d] * int(step),) + a.strides[d + 1:] + (a.strides[d],)
        return _strided(a, shape, strides)

    @staticmethod
    def backward(ctx, g):
        d, count, size, step = ctx.d, ctx.count, ctx.size, ctx.step
        if not ctx.shape:
            return g.sum().astype(g.dtype).reshape(()), None, None, None
        full = ctx.shape
        if g.dtype in _KERNEL_FLOATS:  # the C++ overlap-add: the same order of additions as the numpy form below
            return unfold_backward(g, full, d, size, step), None, None, None
        # Window w's element j is input element w*step + j. With j = q*step + r that is element r of block w + q
        # (blocks of ``step`` along ``d``): for each q, blocks q .. q+count-1 take the windows' slice q*step .. +step
        # in one add with contiguous runs. q runs down: an input element then receives its terms in decreasing j, i.e.
        # increasing window index, which is the order of torch's unfold_backward (the same bits as torch's).
        n, nq = full[d], -(-size // step)
        blocks = max(count + nq - 1, -(-n // step))  # covers every window and every input element
        buf = np.zeros(full[:d] + (blocks, step) + full[d + 1:], g.dtype)
        moved = np.moveaxis(g, -1, d + 1)  # full[:d] + (count, size) + full[d + 1:]
        lead = (slice(None),) * d
        if nq > 1 and size % step == 0:
            # overlapping windows: the gradient copied once to full[:d] + (nq, count, step) + full[d + 1:], so that
            # each add runs over count * step contiguous elements (numpy's strided copy is cheaper than a strided add)
            chunks = moved.reshape(full[:d] + (count, nq, step) + full[d + 1:])
            chunks = np.ascontiguousarray(np.moveaxis(chunks, d + 1, d))
            for q in reversed(range(nq)):
                buf[lead + (slice(q, q + count),)] += chunks[lead + (q,)]
        else:
            for q in reversed(range(nq)):
                width = min(step, size - q * step)
                buf[lead + (slice(q, q + count), slice(0, width))] += moved[lead + (slice(None),
                                                                                    slice(q * step, q * step + width))]
        out = buf.reshape(full[:d] + (blocks * step,) + full[d + 1:])
        if blocks * step != n:
            out = np.ascontiguousarray(out[lead + (slice(0, n),)])
        return out.reshape(ctx.shape), None, None, None


TensorUnfoldFunction.op.meta = M.structural(TensorUnfoldFunction)
TensorUnfoldFunction.op.float64 = TensorUnfoldFunction  # numpy in the input's dtype
