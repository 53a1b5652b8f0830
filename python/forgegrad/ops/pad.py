"""``F.pad``: torch's padding, modes constant (with ``value``), reflect, replicate and circular, with torch's pad tuple
(``(left, right)`` of the last axis first, then the axis before it, ...) and its rules: a negative pad crops,
constant mode pads any number of trailing axes, the other modes pad 1 to 3 trailing axes of an input with one or
two more axes (batched or not), reflect needs each pad smaller than its axis, circular at most its axis.

Reflect and replicate index the input as torch's kernels do (the reflection and the clamp are about the input's
own edges, also where the other side is cropped); circular wraps around what is left after the crop, as torch's
``_pad_circular``, and refuses a pad longer than that (torch gives overlapping memory or garbage there).

Constant mode is a copy into a filled array (its gradient: the copied part of the output gradient, which is the
pad with every pad negated, so its double backward is the op itself). The other modes are per-axis index maps
(ops/_resample_maps.py): a gather per padded axis forward, a fixed-order segmented sum backward. float32 (N, C, H, W)
inputs padded along H and W run the C++ kernel forgegrad._C.resample instead (every mode; constant mode as a map
whose -1 entries are the value), with the numpy path's bits.

ONNX: Pad (constant, reflect, edge; wrap from opset 19, else Slice + Concat per axis) after a Slice for the
crops; a reflect pad that reaches into a crop of the other side is a Gather of its index map.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import _C
from ..autograd import Function
from ..devices import MetaArray
from . import _meta as M
from . import _samples as S
from ._resample_maps import AxisMap, adjoint, apply, linear_rule
from .registry import BadInput, Sample, register_op

MODES = ("constant", "reflect", "replicate", "circular")
INT64_MAX = 9223372036854775807


def resolve(shape, pad, mode="constant", value=None):
    """Checks torch's rules; returns ((axis, left, right) per padded axis, last axis first, and the output shape)."""
    if not isinstance(pad, (tuple, list)) or any(
            isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)) for p in pad):
        raise TypeError(f"pad: pad must be a tuple of ints, got {pad!r}")
    if len(pad) % 2:
        raise ValueError(f"pad: pad length must be divisible by 2, got pad={tuple(pad)}")
    if mode not in MODES:
        raise ValueError(f"pad: mode must be one of {', '.join(MODES)}, got {mode!r}")
    k, ndim = len(pad) // 2, len(shape)
    if mode == "constant" and k > ndim:
        raise ValueError(f"pad: pad length should be at most twice the input's dimension, got pad={tuple(pad)} "
                         f"for input of shape {tuple(shape)}")
    if mode != "constant":
        if value is not None and value != 0:
            raise ValueError(f"pad: padding mode {mode!r} doesn't take in value argument, got value={value!r}")
        if k not in (1, 2, 3):
            raise ValueError(f"pad: {mode} padding pads 1 to 3 trailing axes (a pad of length 2, 4 or 6), got "
                             f"pad={tuple(pad)}")
        if ndim not in (k + 1, k + 2):
            axes = "1 axis" if k == 1 else f"{k} axes"
            raise ValueError(f"pad: {mode} padding of {axes} (pad={tuple(pad)}) needs a {k + 1}-D or {k + 2}-D "
                             f"input, got input of shape {tuple(shape)}")
    elif value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating))):
        raise TypeError(f"pad: value must be a number, got {value!r}")
    out, axes = list(shape), []
    for i in range(k):
        axis, left, right = ndim - 1 - i, int(pad[2 * i]), int(pad[2 * i + 1])
        n = shape[axis]
        out[axis] = n + left + right
        if mode == "constant":
            if out[axis] < 0:
                raise ValueError(f"pad: input size {n} of dim {axis} plus negative padding {left} and {right} "
                                 f"resulted in a negative output size")
        else:
            if n < 1 or out[axis] < 1:
                raise ValueError(f"pad: {mode} padding of dim {axis} (size {n}) by pad ({left}, {right}) gives output "
                                 f"size {out[axis]}; it must be at least 1")
            if mode == "reflect" and (left >= n or right >= n):
                raise ValueError(f"pad: reflect padding size should be less than the corresponding input dimension, "
                                 f"got pad ({left}, {right}) at dim {axis} of input of shape {tuple(shape)}")
            kept = n - max(-left, 0) - max(-right, 0)
            if mode == "circular" and (left > kept or right > kept):
                raise ValueError(f"pad: circular padding ({left}, {right}) of dim {axis} wraps around more than once "
                                 f"(size {n}, {kept} after the crop); each pad must be at most that")
        axes.append((axis, left, right))
    return axes, tuple(out)


@functools.lru_cache(maxsize=256)
def axis_map(mode, n, left, right) -> AxisMap:
    p = np.arange(n + left + right) - left  # output position in the input's coordinates
    if mode == "reflect":
        src = np.abs(p)
        src = np.where(src > n - 1, 2 * (n - 1) - src, src)
    elif mode == "replicate":
        src = np.clip(p, 0, n - 1)
    else:  # circular: around what the crops leave, [lo, hi)
        lo, hi = max(-left, 0), n - max(-right, 0)
        src = lo + (p - lo) % (hi - lo)
    return AxisMap(n, src[None])


def _slices(axes, shape, out_shape):
    """(input slices, output slices) of the part constant mode copies."""
    src, dst = [slice(None)] * len(shape), [slice(None)] * len(shape)
    for axis, left, right in axes:
        src[axis] = slice(max(-left, 0), shape[axis] - max(-right, 0))
        dst[axis] = slice(max(left, 0), out_shape[axis] - max(right, 0))
    return tuple(src), tuple(dst)


@functools.lru_cache(maxsize=256)
def _constant_idx(n, left, right) -> np.ndarray:
    """Constant mode's map of one axis for _C.resample: the input position of each output position, -1 (the
    value) outside the input."""
    p = np.arange(n + left + right, dtype=np.int64) - left
    return np.where((p >= 0) & (p < n), p, -1)[None]


def _kernel_ok(x, axes, out_shape) -> bool:
    """Whether constant mode runs _C.resample: float32 (N, C, H, W), padding H and W only, nothing empty."""
    return (x.dtype == np.float32 and x.ndim == 4 and all(axis >= 2 for axis, _, _ in axes) and x.size > 0
            and all(s > 0 for s in out_shape))


def _constant32(x, axes, out_shape, value):
    pads = {axis: (left, right) for axis, left, right in axes}
    idx = [_constant_idx(x.shape[axis], *pads.get(axis, (0, 0))) for axis in (2, 3)]
    y = np.empty(out_shape, np.float32)
    _C.resample.resample2d_forward(np.ascontiguousarray(x), idx[0], None, idx[1], None, float(np.float32(value)), y)
    return y


def _meta(x, pad, mode="constant", value=None):
    return MetaArray(resolve(x.shape, pad, mode, value)[1], x.dtype)


def _torch(torch, x, pad, mode="constant", value=None):
    return torch.nn.functional.pad(x, pad, mode=mode, value=value)


@register_op("pad", meta=_meta, flops=M.no_flops, samples=lambda: _samples(), torch=_torch,
             bad_inputs=lambda: _bad_inputs())
class PadFunction(Function):
    """torch.nn.functional.pad (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, pad, mode="constant", value=None):
        axes, out_shape = resolve(x.shape, pad, mode, value)
        ctx.mode = mode
        if mode == "constant":
            ctx.in_shape = x.shape
            ctx.axes = axes
            if _kernel_ok(x, axes, out_shape):
                return _constant32(x, axes, out_shape, 0 if value is None else value)
            ctx.slices = _slices(axes, x.shape, out_shape)
            out = np.full(out_shape, 0 if value is None else value, dtype=x.dtype)
            if all(s > 0 for s in out_shape):
                out[ctx.slices[1]] = x[ctx.slices[0]]
            return out
        ctx.maps = [(axis, axis_map(mode, x.shape[axis], left, right)) for axis, left, right in axes]
        return apply(x, ctx.maps)

    @staticmethod
    def backward(ctx, g):
        if ctx.mode == "constant":
            if _kernel_ok(g, ctx.axes, ctx.in_shape):  # the crop of g: the pad with every pad negated
                back = [(axis, -left, -right) for axis, left, right in ctx.axes]
                return _constant32(g, back, ctx.in_shape, 0)
            ctx.slices = _slices(ctx.axes, ctx.in_shape, g.shape)
            out = np.zeros(ctx.in_shape, g.dtype)
            if g.size:
                out[ctx.slices[0]] = g[ctx.slices[1]]
            return out
        return adjoint(g, ctx.maps)


def _rule(ctx, args, kwargs, g):
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    if mode != "constant":
        return linear_rule(ctx, args, kwargs, g)
    pad = args[1] if len(args) > 1 else kwargs["pad"]
    return (PadFunction.op(g, tuple(-p for p in pad)),) + (None,) * (len(args) - 1)


PadFunction.op.differentiable_backward = _rule
PadFunction.op.float64 = PadFunction  # numpy in the input's dtype


def pad(input, pad, mode: str = "constant", value=None):
    """``torch.nn.functional.pad`` (see forgegrad.ops.pad)."""
    from ..nn.functional_conv import _t
    return PadFunction.op(_t(input, "input"), tuple(pad) if isinstance(pad, list) else pad, mode=mode, value=value)


PadFunction.op.functional = pad


# ---- ONNX --------------------------------------------------------------------------------------------------------
def _onnx(ctx, op):
    x_arr = op.args["x"]
    mode, value = op.attr("mode", "constant"), op.attr("value")
    axes, _ = resolve(x_arr.shape, op.attr("pad"), mode, value)
    for other in (op.attr_b("pad"), op.attr_c("pad")):
        if other is not None and tuple(other) != tuple(op.attr("pad")):
            raise op.unsupported(f"pad amounts that change with the input's dynamic sizes ({tuple(op.attr('pad'))} "
                                 f"at the example's sizes, {tuple(other)} at others) cannot be exported; export "
                                 "with those axes static (dynamic_axes naming only the others)")
    x, ndim = op.input("x"), x_arr.ndim
    if mode == "reflect" and any(left >= x_arr.shape[a] - max(-right, 0) or right >= x_arr.shape[a] - max(-left, 0)
                                 for a, left, right in axes):  # reflects into a crop: gather the index map
        for a, left, right in axes:
            x = ctx.node("Gather", [x, ctx.ints(axis_map(mode, x_arr.shape[a], left, right).idx[0])], axis=a)
        return [x]
    crops = [(a, max(-left, 0), max(-right, 0)) for a, left, right in axes if left < 0 or right < 0]
    if crops:
        ends = [-c[2] if c[2] else INT64_MAX for c in crops]
        x = ctx.node("Slice", [x, ctx.ints([c[1] for c in crops]), ctx.ints(ends), ctx.ints([c[0] for c in crops])])
    grow = [(a, max(left, 0), max(right, 0)) for a, left, right in axes if left > 0 or right > 0]
    if not grow:
        return [x if crops else ctx.node("Identity", [x])]
    if mode == "circular" and ctx.opset < 19:  # Pad's wrap mode exists from opset 19
        for a, left, right in grow:
            parts = [x]
            if left:
                parts.insert(0, ctx.node("Slice", [x, ctx.ints([-left]), ctx.ints([INT64_MAX]), ctx.ints([a])]))
            if right:
                parts.append(ctx.node("Slice", [x, ctx.ints([0]), ctx.ints([right]), ctx.ints([a])]))
            x = ctx.node("Concat", parts, axis=a)
        return [x]
    pads = [0] * (2 * ndim)
    for a, left, right in grow:
        pads[a], pads[ndim + a] = left, right
    onnx_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    inputs = [x, ctx.ints(pads)]
    if mode == "constant":
        inputs.append(ctx.const(np.asarray(0 if value is None else value, dtype=x_arr.dtype)))
    return [ctx.node("Pad", inputs, mode=onnx_mode)]


PadFunction.op.onnx = _onnx


# ---- samples -----------------------------------------------------------------------------------------------------
def _samples():
    x4, x3 = S.rand(2, 3, 5, 7), S.rand(2, 3, 6, seed=1)
    one = S.rand(1, 2, 4, 3, seed=2)
    out = [Sample((x4, (1, 2)), name="constant last axis"),
           Sample((x4, (1, 2, 3, 0)), {"value": 1.5}, "constant value 1.5, two axes"),
           Sample((x4, (-1, 2, 1, -2)), {"mode": "constant"}, "constant negative pads crop"),
           Sample((x3, (0, 1, 2, 1, 1, 0)), {"value": -2.0}, "constant three axes"),
           Sample((S.rand(3, 4, seed=4), (2, 2)), name="constant 2-D")]
    for mode in ("reflect", "replicate", "circular"):
        out += [Sample((x4, (2, 3, 1, 4)), {"mode": mode}, f"{mode} 2-D"),
                Sample((x3, (3, 2)), {"mode": mode}, f"{mode} 1-D"),
                Sample((one, (1, 0, 0, 2)), {"mode": mode}, f"{mode} batch 1"),
                Sample((S.rand(3, 5, 6, seed=5), (2, 1, 1, 3)), {"mode": mode}, f"{mode} unbatched 3-D"),
                Sample((x4, (-1, 3, 2, -2)), {"mode": mode}, f"{mode} negative pads"),
                Sample((S.rand(1, 2, 3, 4, 5, seed=6), (1, 2, 2, 1, 1, 1)), {"mode": mode}, f"{mode} 3 axes")]
    out.append(Sample((S.rand(2, 8, 60, 70, seed=3), (3, 3, 3, 3)), {"mode": "reflect"}, "large reflect"))
    return out


def _bad_inputs():
    x = S.rand(1, 2, 4, 5)
    return [BadInput((x, (5, 1, 0, 0)), {"mode": "reflect"}, ValueError, "reflect padding size"),
            BadInput((x, (1, 1, 4, 0)), {"mode": "reflect"}, ValueError, "pad"),
            BadInput((x, (1, 2, 3)), {}, ValueError, "pad length"),
            BadInput((x, (1, 1)), {"mode": "wrap"}, ValueError, "mode"),
            BadInput((S.rand(5), (1, 1)), {"mode": "reflect"}, ValueError, "input"),
            BadInput((x, (1, 1) * 5), {}, ValueError, "pad length"),
            BadInput((x, (1, 1) * 5), {"mode": "circular"}, ValueError, "1 to 3 trailing axes"),
            BadInput((S.rand(2, 3), (1, 1) * 3), {"mode": "replicate"}, ValueError, "4-D or 5-D input"),
            BadInput((x, (1, 1)), {"mode": "replicate", "value": 2.0}, ValueError, "value"),
            BadInput((x, (-3, -3)), {}, ValueError, "negative output size"),
            BadInput((x, (1.5, 1)), {}, TypeError, "pad"),
            BadInput((x, (6, -3)), {"mode": "circular"}, ValueError, "circular")]
