"""rot90, diff, repeat_interleave and cross as registry ops (torch's semantics; the argument checks, torch's
overloads and the tensor forms live in forgegrad/_torch_shape.py, which calls these).

- ``rot90(x, k, dims)``: a copy (numpy's rot90 is a view); gradient: the rotation back. ONNX: reversing Slices
  (a flip, no size in the graph) and a Transpose.
- ``diff(x, n, dim)``: the n-th forward difference (bool: ``!=``, as torch's); gradient: the adjoint of each
  difference (``g[i-1] - g[i]``). ONNX: n times Sub (Xor for bool) of two Slices.
- ``repeat_interleave(x, repeats, dim)``: ``repeats`` an int or one int per slice along dim (python ints: the
  output shape depends on them); gradient: each slice's repeats summed. ONNX: an int count: Unsqueeze, Tile
  and a Reshape to a shape read from the input (any dim may be dynamic); one count per slice: a Gather of constant
  indices.
- ``cross(a, b, dim)``: the 3-vector cross product along dim, broadcast; gradient ``b x g`` and ``g x a``. ONNX:
  a[[1,2,0]] * b[[2,0,1]] - a[[2,0,1]] * b[[1,2,0]] with Gathers.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..devices import MetaArray
from ..kernels.shape_copy import as_contiguous, diff_backward, diff_forward
from . import _meta as M
from . import _samples as S
from ._util import single_axis, unbroadcast
from .registry import BadInput, Sample, register_op


_I64 = np.iinfo(np.int64)
_KERNEL_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _i64(*v):
    return np.array(v, np.int64)


def _flip_onnx(ctx, name, axis, n):
    """A reversing Slice (step -1): no size in the graph, so it follows a dynamic axis (a Gather of constant
    reversed indices would keep the traced size)."""
    return ctx.node("Slice", [name, ctx.const(_i64(-1)), ctx.const(_i64(_I64.min)), ctx.const(_i64(axis)),
                              ctx.const(_i64(-1))])


# ---- rot90 ------------------------------------------------------------------------------------------------------
def _rot_axes(ndim, k, dims):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"rot90(): argument 'k' must be an int, got {type(k).__name__}")
    dims = tuple(dims)
    if len(dims) != 2:
        raise RuntimeError(f"rot90(): expected total rotation dims == 2, but got dims = {len(dims)}")
    if ndim < 2:
        raise RuntimeError(f"rot90(): expected total dims >= 2, but got total dims = {ndim}")
    d0, d1 = (single_axis(d, ndim, "rot90(): dims") for d in dims)
    if d0 == d1:
        raise RuntimeError(f"rot90(): expected rotation dims to be different, but got dim0 = {d0} and dim1 = {d1}")
    return int(k) % 4, d0, d1


def _rot90_onnx(ctx, op):
    shape = tuple(op.args["a"].shape)
    k, d0, d1 = _rot_axes(len(shape), op.attr("k", 1), op.attr("dims", (0, 1)))
    x = op.input("a")
    if k == 0:
        return [ctx.node("Identity", [x])]
    if k in (1, 2):
        x = _flip_onnx(ctx, x, d1, shape[d1])
    if k in (2, 3):
        x = _flip_onnx(ctx, x, d0, shape[d0])
    if k == 2:
        return [x]
    perm = list(range(len(shape)))
    perm[d0], perm[d1] = d1, d0
    return [ctx.node("Transpose", [x], perm=perm)]


def _rot90_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    k, dims = args[1] if len(args) > 1 else 1, args[2] if len(args) > 2 else (0, 1)
    return _OPS["rot90"](g, -int(k), tuple(dims)), None, None


@register_op("rot90", meta=None, flops=M.no_flops, onnx=_rot90_onnx, differentiable_backward=_rot90_rule,
             samples=lambda: [Sample((S.rand(3, 5), 1, (0, 1))),
                              Sample((S.rand(2, 3, 4, seed=1), -1, (2, 0)), name="k=-1"),
                              Sample((S.rand(4, 1, 3, seed=2), 2, (-1, 0)), name="k=2, negative dim"),
                              Sample((S.rand(2, 3, seed=3), 7, (1, 0)), name="k=7")],
             torch=lambda torch, a, k, dims: torch.rot90(a, k, list(dims)),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), 1, (0, 0)), {}, RuntimeError, "dims"),
                                 BadInput((S.rand(3, 4), 1, (0, 1, 2)), {}, RuntimeError, "dims"),
                                 BadInput((S.rand(3, 4), 1, (0, 2)), {}, IndexError, "dims"),
                                 BadInput((S.rand(3, 4), 1.5, (0, 1)), {}, TypeError, "k")])
class Rot90Function(Function):
    """torch.rot90: k quarter turns in the plane of dims, from the first towards the second (a copy)."""

    @staticmethod
    def forward(ctx, a, k=1, dims=(0, 1)):
        k, d0, d1 = _rot_axes(a.ndim, k, dims)
        ctx.k, ctx.axes = k, (d0, d1)
        if k % 2:  # torch's flip then transposed view: the copy is a contiguous flip, the output its transpose
            return np.flip(a, d1 if k == 1 else d0).copy().swapaxes(d0, d1)
        return np.rot90(a, k, axes=(d0, d1)).copy()  # a copy even for k % 4 == 0 (rot90 then returns a itself)

    @staticmethod
    def backward(ctx, g):
        # odd k: a transposed (and flipped) copy, the C++ tiled transpose's case
        return as_contiguous(np.rot90(g, -ctx.k, axes=ctx.axes)), None, None


# ---- diff -------------------------------------------------------------------------------------------------------
def _diff_args(ndim, n, dim):
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"diff(): argument 'n' must be an int, got {type(n).__name__}")
    if n < 0:
        raise RuntimeError(f"diff(): order must be non-negative but got {n}")
    if ndim == 0:
        raise RuntimeError("diff(): diff expects input to be at least one-dimensional")
    return int(n), single_axis(dim, ndim, "diff(): dim")


def _diff_once(a, d):
    n = a.shape[d]
    if n and a.dtype in _KERNEL_FLOATS:
        return diff_forward(a, d)  # numpy's hi - lo below, in one C++ pass
    hi = a[(slice(None),) * d + (slice(1, None),)]
    lo = a[(slice(None),) * d + (slice(0, max(n - 1, 0)),)]
    return np.not_equal(hi, lo) if a.dtype == bool else hi - lo


def _diff_onnx(ctx, op):
    x_arr = op.args["a"]
    n, d = _diff_args(x_arr.ndim, op.attr("n", 1), op.attr("dim", -1))
    first = x = op.input("a")
    size = x_arr.shape[d]
    kind = "Xor" if x_arr.dtype == bool else "Sub"
    for _ in range(n):
        if size == 0:
            break
        axes = ctx.const(_i64(d))  # ends past the end and -1, not the traced size: d may be a dynamic axis
        hi = ctx.node("Slice", [x, ctx.const(_i64(1)), ctx.const(_i64(_I64.max)), axes])
        lo = ctx.node("Slice", [x, ctx.const(_i64(0)), ctx.const(_i64(-1)), axes])
        x, size = ctx.node(kind, [hi, lo]), size - 1
    return [ctx.node("Identity", [x])] if x == first else [x]


def _diff_rule(ctx, args, kwargs, g):
    """The adjoint of one difference is -diff of g padded with a zero on both sides; applied once per step."""
    from ..factories import cat
    from .registry import _OPS
    a = args[0]
    n, d = _diff_args(a.ndim, args[1] if len(args) > 1 else kwargs.get("n", 1),
                      args[2] if len(args) > 2 else kwargs.get("dim", -1))
    n = min(n, a.shape[d])  # steps past the axis's size change nothing (see DiffFunction.forward)
    sizes = [a.shape[d]]
    for _ in range(n):
        sizes.append(max(sizes[-1] - 1, 0))
    for step in range(n, 0, -1):
        if sizes[step - 1] == 0:
            continue  # this difference changed nothing (an empty dim): its adjoint is the identity
        zero = g.new_zeros(*(g.shape[:d] + (1,) + g.shape[d + 1:]))
        g = -_OPS["diff"](cat([zero, g, zero], dim=d), 1, d)
    return g, None, None


@register_op("diff", meta=None, flops=M.per_output_element(), onnx=_diff_onnx, differentiable_backward=_diff_rule,
             samples=lambda: [Sample((S.rand(3, 7), 1, -1)), Sample((S.rand(5, 3, seed=1), 2, 0), name="n=2, dim 0"),
                              Sample((S.rand(2, 3, seed=2), 4, 1), name="n past the size"),
                              Sample((S.rand(4, 1, 6, seed=3), 3, -1), name="n=3")],
             torch=lambda torch, a, n=1, dim=-1: torch.diff(a, n, dim),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), -1, 0), {}, RuntimeError, "order"),
                                 BadInput((S.rand(3, 4), 1, 2), {}, IndexError, "dim"),
                                 BadInput((S.rand(3, 4), 1.0, 0), {}, TypeError, "n")])
class DiffFunction(Function):
    """torch.diff without prepend / append: the n-th forward difference along dim."""

    @staticmethod
    def forward(ctx, a, n=1, dim=-1):
        n, d = _diff_args(a.ndim, n, dim)
        # the n-th difference of an axis of size m <= n is empty, as are the steps after it: n = 2**63 looped for ever
        n = min(n, a.shape[d])
        ctx.d, ctx.sizes = d, [a.shape[d]]
        out = a
        for _ in range(n):
            out = _diff_once(out, d)
            ctx.sizes.append(out.shape[d])
        return np.ascontiguousarray(out) if n else out.copy()

    @staticmethod
    def backward(ctx, g):
        d = ctx.d
        for before in reversed(ctx.sizes[:-1]):
            if before == 0:
                continue
            if g.dtype in _KERNEL_FLOATS:  # the same bits as the numpy form below, in one pass
                g = diff_backward(g, d)
                continue
            shape = g.shape[:d] + (before,) + g.shape[d + 1:]
            out = np.zeros(shape, g.dtype)
            out[(slice(None),) * d + (slice(1, None),)] += g
            out[(slice(None),) * d + (slice(0, before - 1),)] -= g
            g = out
        return g, None, None


# ---- repeat_interleave --------------------------------------------------------------------------------------
def _repeat_index(n, repeats):
    """The source index of every output slice; repeats an int or one int per slice."""
    if isinstance(repeats, (bool, np.bool_)):
        raise TypeError("repeat_interleave(): argument 'repeats' must be an int or a sequence of ints, got bool")
    if isinstance(repeats, (int, np.integer)):
        if repeats < 0:
            raise RuntimeError(f"repeat_interleave(): repeats can not be negative, got {repeats}")
        return np.repeat(np.arange(n, dtype=np.int64), int(repeats))
    counts = np.asarray(repeats)
    if counts.dtype.kind not in "iu" or counts.ndim != 1:
        raise TypeError(f"repeat_interleave(): argument 'repeats' must be an int or a sequence of ints, got "
                        f"{repeats!r:.60}")
    if counts.size != n:
        raise RuntimeError(f"repeat_interleave(): repeats must have the same size as input along dim, but got "
                           f"repeats.size(0) = {counts.size} and input.size(dim) = {n}")
    if (counts < 0).any():
        raise RuntimeError("repeat_interleave(): repeats can not be negative")
    return np.repeat(np.arange(n, dtype=np.int64), counts)


def _repeat_onnx(ctx, op):
    x = op.args["a"]
    d = single_axis(op.attr("dim", 0), x.ndim, "repeat_interleave(): dim")
    repeats = op.attr("repeats")
    if isinstance(repeats, (int, np.integer)) and repeats > 0:
        # one count for all: (.., n, ..) -> Unsqueeze (.., n, 1, ..) -> Tile (.., n, r, ..) -> Reshape (.., n*r, ..),
        # the target shape read from the input's Shape, so that d (or any other dim) may be a dynamic axis
        name = op.input("a")
        tiled = ctx.node("Tile", [ctx.node("Unsqueeze", [name, ctx.const(_i64(d + 1))]),
                                  ctx.const(np.array([int(repeats) if k == d + 1 else 1 for k in range(x.ndim + 1)],
                                                     np.int64))])
        shape = ctx.node("Shape", [name])
        parts = [ctx.node("Slice", [shape, ctx.const(_i64(0)), ctx.const(_i64(d))])] if d else []
        merged = ctx.node("Slice", [shape, ctx.const(_i64(d)), ctx.const(_i64(d + 1))])
        parts.append(ctx.node("Mul", [merged, ctx.const(_i64(int(repeats)))]))
        if d + 1 < x.ndim:
            parts.append(ctx.node("Slice", [shape, ctx.const(_i64(d + 1)), ctx.const(_i64(_I64.max))]))
        target = ctx.node("Concat", parts, axis=0) if len(parts) > 1 else parts[0]
        # allowzero: a 0 in the shape is a size (an empty input), not "copy the input's dim"
        kw = {"allowzero": 1} if ctx.opset >= 14 else {}
        return [ctx.node("Reshape", [tiled, target], **kw)]
    idx = _repeat_index(x.shape[d], repeats)
    return [ctx.node("Gather", [op.input("a"), ctx.const(idx)], axis=d)]


def _repeat_rule(ctx, args, kwargs, g):
    from .._torch_indexing import _wrap, index_add
    a, repeats = args[0], args[1]
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    d = single_axis(dim, a.ndim)
    idx = _repeat_index(a.shape[d], repeats)
    return index_add(g.new_zeros(*a.shape), d, _wrap(idx), g), None, None


@register_op("repeat_interleave", meta=None, flops=M.no_flops, onnx=_repeat_onnx,
             differentiable_backward=_repeat_rule,
             samples=lambda: [Sample((S.rand(3, 5), 2, 0)), Sample((S.rand(2, 3, 4, seed=1), (1, 0, 3), 1),
                                                                   name="one count per slice, a zero"),
                              Sample((S.rand(4, 3, seed=2), 3, -1), name="dim -1"),
                              Sample((S.rand(7, seed=3), 0, 0), name="zero repeats")],
             torch=lambda torch, a, repeats, dim=0: torch.repeat_interleave(
                 a, repeats if isinstance(repeats, int) else torch.tensor(repeats), dim),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), -1, 0), {}, RuntimeError, "repeats"),
                                 BadInput((S.rand(3, 4), (1, 2), 0), {}, RuntimeError, "repeats"),
                                 BadInput((S.rand(3, 4), 2, 2), {}, IndexError, "dim"),
                                 BadInput((S.rand(3, 4), 1.5, 0), {}, TypeError, "repeats")])
class RepeatInterleaveFunction(Function):
    """torch.repeat_interleave along dim (python-int repeats; the wrapper reads a tensor's)."""

    @staticmethod
    def forward(ctx, a, repeats, dim=0):
        if a.ndim == 0:
            raise RuntimeError("repeat_interleave(): the op takes at least a 1-d input (the function flattens)")
        d = single_axis(dim, a.ndim, "repeat_interleave(): dim")
        idx = _repeat_index(a.shape[d], repeats)
        ctx.d, ctx.n, ctx.repeats, ctx.idx = d, a.shape[d], repeats, idx
        return np.take(a, idx, axis=d)

    @staticmethod
    def backward(ctx, g):
        d, n = ctx.d, ctx.n
        r = ctx.repeats
        if isinstance(r, (int, np.integer)) and r > 0:  # (n * r) -> (n, r), the r copies added in order
            v = g.reshape(g.shape[:d] + (n, int(r)) + g.shape[d + 1:])
            at = (slice(None),) * (d + 1)
            out = v[at + (0,)].copy()
            for j in range(1, int(r)):  # (strided adds: numpy's sum over a short middle axis is ~50x slower)
                out += v[at + (j,)]
            return out, None, None
        out = np.zeros(g.shape[:d] + (n,) + g.shape[d + 1:], g.dtype)
        np.add.at(np.moveaxis(out, d, 0), ctx.idx, np.moveaxis(g, d, 0))  # in index order: deterministic
        return out, None, None


# ---- cross ------------------------------------------------------------------------------------------------------
def _cross_axis(a, b, dim):
    if a.ndim != b.ndim:
        raise RuntimeError(f"cross(): inputs must have the same number of dimensions, got {a.ndim} and {b.ndim}")
    if a.dtype != b.dtype:
        raise RuntimeError(f"cross(): expected input and other to have the same dtype, got {a.dtype} and {b.dtype}")
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise RuntimeError(f"cross(): shapes {a.shape} and {b.shape} do not broadcast") from None
    d = single_axis(dim, max(len(shape), 1), "cross(): dim")
    if a.shape[d] != 3 or b.shape[d] != 3:
        raise RuntimeError(f"cross(): inputs dimension {d} must have length 3, got {a.shape[d]} and {b.shape[d]}")
    return d


def _cross_onnx(ctx, op):
    a, b = op.args["a"], op.args["b"]
    d = _cross_axis(a, b, op.attr("dim", -1))
    i120, i201 = ctx.const(np.array([1, 2, 0], np.int64)), ctx.const(np.array([2, 0, 1], np.int64))
    xa, xb = op.input("a"), op.input("b")

    def g(x, i):
        return ctx.node("Gather", [x, i], axis=d)
    return [ctx.node("Sub", [ctx.node("Mul", [g(xa, i120), g(xb, i201)]),
                             ctx.node("Mul", [g(xa, i201), g(xb, i120)])])]


def _cross_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    a, b = args[0], args[1]
    dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
    ga = _OPS["cross"](b.expand(*g.shape), g, dim).sum_to_size(*a.shape)
    gb = _OPS["cross"](g, a.expand(*g.shape), dim).sum_to_size(*b.shape)
    return ga, gb, None


@register_op("cross", meta=None, flops=M.per_output_element(3), onnx=_cross_onnx, differentiable_backward=_cross_rule,
             samples=lambda: [Sample((S.rand(3, 5), S.rand(3, 5, seed=1), 0)),
                              Sample((S.rand(2, 1, 3, seed=2), S.rand(1, 4, 3, seed=3), -1), name="broadcast"),
                              Sample((S.rand(7, 3, seed=4), S.rand(7, 3, seed=5), 1), name="rows")],
             torch=lambda torch, a, b, dim=-1: torch.cross(a, b, dim=dim),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), S.rand(3, 4, seed=1), 1), {}, RuntimeError, "length 3"),
                                 BadInput((S.rand(3, 4), S.rand(3, 4, seed=1), 2), {}, IndexError, "dim"),
                                 BadInput((S.rand(3, 4), S.rand(3, seed=1), 0), {}, RuntimeError, "dimensions")])
class CrossFunction(Function):
    """torch.cross(a, b, dim): the cross product of the 3-vectors along dim (a and b broadcast)."""

    @staticmethod
    def forward(ctx, a, b, dim=-1):
        d = _cross_axis(a, b, dim)
        ctx.d, ctx.shapes = d, (a.shape, b.shape)
        ctx.save_for_backward(a, b)
        return np.cross(a, b, axis=d).astype(np.result_type(a, b), copy=False)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        d = ctx.d
        ga = unbroadcast(np.cross(b, g, axis=d), ctx.shapes[0]).astype(g.dtype, copy=False)
        gb = unbroadcast(np.cross(g, a, axis=d), ctx.shapes[1]).astype(g.dtype, copy=False)
        return ga, gb, None


def _diff_meta(a, n=1, dim=-1):
    n, d = _diff_args(a.ndim, n, dim)
    return MetaArray(a.shape[:d] + (max(a.shape[d] - n, 0),) + a.shape[d + 1:], a.dtype)


def _cross_meta(a, b, dim=-1):
    _cross_axis(a, b, dim)
    return MetaArray(np.broadcast_shapes(a.shape, b.shape), np.result_type(a.dtype, b.dtype))


for _fn in (Rot90Function, RepeatInterleaveFunction):
    _fn.op.meta = M.structural(_fn)
DiffFunction.op.meta, CrossFunction.op.meta = _diff_meta, _cross_meta
for _fn in (Rot90Function, DiffFunction, RepeatInterleaveFunction, CrossFunction):
    _fn.op.float64 = _fn  # numpy in the inputs' dtype
