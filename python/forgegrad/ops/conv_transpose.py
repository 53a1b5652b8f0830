"""Transposed convolution (torch's conv_transpose2d and conv_transpose1d) as autograd Functions on conv2d's kernels.

A transposed convolution is the adjoint of a convolution: with conv(a, w) the conv2d of an image ``a``
(C_out channels, the transposed conv's output size) by ``w`` (C_in, C_out / groups, kH, kW), read as a conv
weight), ``conv_transpose(x, w)`` is conv's input gradient for the output gradient ``x``. So

- forward:         _C.conv.conv2d_backward_input(x, w) into the output;
- input gradient:  _C.conv.conv2d_forward(g, w) (a conv of the output gradient);
- weight gradient: _C.conv.conv2d_backward_weight(input=g, grad_output=x) (conv's, roles swapped);
- bias gradient:   g summed over batch and space.

The kernels take groups and dilation as they are (the weight layouts agree group by group). The conv's padding is
``padding`` at the top/left and ``padding - output_padding`` at the bottom/right, so that the conv of an image of the
output size has exactly the input's size. Where output_padding exceeds padding that would be negative: those last
``output_padding - padding`` rows (columns) are beyond every tap's reach (0 + bias), so the kernel computes the rows
before them and the rest is filled. 1-D runs as 2-D on a height of 1 (as conv1d). float64 runs the same
geometry through numpy (correct, not fast). Samples, torch references and bad inputs: conv_transpose_samples.py.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np

from .. import _C
from .._args import integer, pair, single
from ..autograd import Function
from ..devices import MetaArray
from . import conv_transpose_samples as CS
from ._op_rules import with_args
from .registry import register_op

__all__ = ["ConvTranspose2dFunction", "ConvTranspose1dFunction", "conv_transpose2d_geometry",
           "conv_transpose_output_padding"]


class ConvTransposeGeometry(NamedTuple):
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    output_padding: Tuple[int, int]
    dilation: Tuple[int, int]
    groups: int
    conv_padding: Tuple[int, int, int, int]  # the conv's (top, bottom, left, right)
    inner: Tuple[int, int]  # the rows and columns the kernel computes (the rest is bias only)
    output_shape: Tuple[int, int, int, int]  # (N, C_out, H_out, W_out)


def _shape(a, name: str, ndim: int, owner: str):
    shape = tuple(a.shape)
    if len(shape) != ndim:
        raise ValueError(f"{owner}: {name} must be {ndim}-D, got {len(shape)}-D with shape {shape}")
    return shape


def conv_transpose2d_geometry(input_shape, weight_shape, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, owner: str = "conv_transpose2d") -> ConvTransposeGeometry:
    """Validated geometry of ``conv_transpose2d(input, weight)`` (torch's rules); ValueError / TypeError name the
    argument."""
    stride = pair(stride, "stride", owner, minimum=1)
    padding = pair(padding, "padding", owner, minimum=0)
    output_padding = pair(output_padding, "output_padding", owner, minimum=0)
    dilation = pair(dilation, "dilation", owner, minimum=1)
    groups = integer(groups, "groups", owner)
    if groups < 1:
        raise ValueError(f"{owner}: groups must be >= 1, got {groups}")
    N, C, H, W = input_shape
    if C < 1 or H < 1 or W < 1 or N < 0:
        raise ValueError(f"{owner}: input must have shape (N, C_in >= 1, H >= 1, W >= 1), got {tuple(input_shape)}")
    if weight_shape[0] % groups:
        raise ValueError(f"{owner}: groups={groups} must divide the weight's first dimension (in_channels), got "
                         f"weight of shape {tuple(weight_shape)}")
    if min(weight_shape[1:]) < 1:
        raise ValueError(f"{owner}: weight must have nonzero sizes, got {tuple(weight_shape)}")
    if weight_shape[0] != C:
        raise ValueError(f"{owner}: weight must have shape (in_channels={C}, out_channels / groups, kH, kW) for input "
                         f"of shape {tuple(input_shape)}, got {tuple(weight_shape)}")
    for i in range(2):
        if output_padding[i] >= stride[i] and output_padding[i] >= dilation[i]:
            raise ValueError(f"{owner}: output_padding must be smaller than either stride or dilation, got "
                             f"output_padding {output_padding}, stride {stride}, dilation {dilation}")
    k = weight_shape[2:]
    out = tuple((n - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + output_padding[i] + 1
                for i, n in enumerate((H, W)))
    if min(out) < 1:
        raise ValueError(f"{owner}: padding {padding} is too large: input {tuple(input_shape)}, weight "
                         f"{tuple(weight_shape)}, stride {stride}, dilation {dilation} and output_padding "
                         f"{output_padding} give an output of size {out}")
    inner = tuple(out[i] - max(0, output_padding[i] - padding[i]) for i in range(2))
    cpad = tuple(max(0, padding[i] - output_padding[i]) for i in range(2))
    conv_padding = (padding[0], cpad[0], padding[1], cpad[1])
    out_shape = (N, weight_shape[1] * groups, out[0], out[1])
    if min(inner) >= 1:  # the conv's own checks (sizes that would overflow the kernels' workspaces)
        _, s = _C.conv.geometry((N, out_shape[1], inner[0], inner[1]), tuple(weight_shape), stride, conv_padding,
                                dilation, groups, owner)
        assert tuple(s[2:]) == (H, W), (s, input_shape)
    return ConvTransposeGeometry(stride, padding, output_padding, dilation, groups, conv_padding, inner, out_shape)


def conv_transpose_output_padding(input_hw, output_size, kernel_size, stride, padding, dilation,
                                  owner: str = "ConvTranspose2d", batched: bool = True):
    """torch's ``_ConvTransposeNd._output_padding``: the output_padding that gives ``output_size`` (its spatial
    sizes, or with the input's non-spatial sizes in front: batch and channel if ``batched``, else channel),
    which must lie within ``stride - 1`` of the smallest."""
    n = len(input_hw)
    if isinstance(output_size, (str, bytes)) or not hasattr(output_size, "__len__"):
        raise TypeError(f"{owner}: output_size must be a list or tuple of ints, got {output_size!r}")
    size = [integer(v, "output_size", owner) for v in output_size]
    lead = 2 if batched else 1
    if len(size) == n + lead:
        size = size[lead:]
    if len(size) != n:
        raise ValueError(f"{owner}: for {n + lead}-D input, output_size must have {n} or {n + lead} elements (the "
                         f"spatial sizes, or with the {'batch and channel' if batched else 'channel'} sizes in "
                         f"front), got {tuple(output_size)}")
    lo = [(input_hw[d] - 1) * stride[d] - 2 * padding[d] + dilation[d] * (kernel_size[d] - 1) + 1 for d in range(n)]
    hi = [lo[d] + stride[d] - 1 for d in range(n)]
    if any(not lo[d] <= size[d] <= hi[d] for d in range(n)):
        raise ValueError(f"{owner}: requested an output_size of {tuple(size)}, but valid sizes range from "
                         f"{tuple(lo)} to {tuple(hi)} (for an input of {tuple(input_hw)})")
    return tuple(size[d] - lo[d] for d in range(n))


# ---- the three array products, float32 (C++ kernels) and float64 (numpy) ----------------------------------
def _window(start, step, count):
    return slice(start, start + step * (count - 1) + 1, step)


def _taps(geo, kshape, out_hw):
    """(i, j, rows, cols): per kernel tap, the slices of the conv's padded image that it reads."""
    (sh, sw), (dh, dw) = geo.stride, geo.dilation
    for i in range(kshape[0]):
        for j in range(kshape[1]):
            yield i, j, _window(i * dh, sh, out_hw[0]), _window(j * dw, sw, out_hw[1])


def _np_conv(a, w, geo):
    """conv2d(a, w) (no bias) in numpy, on the conv's padding: a is (N, C_out, Hc, Wc) -> (N, C_in, H, W)."""
    t, b, le, r = geo.conv_padding
    G, N, (OC, Cg, KH, KW) = geo.groups, a.shape[0], w.shape
    ap = np.pad(a, ((0, 0), (0, 0), (t, b), (le, r)))
    OH = (ap.shape[2] - geo.dilation[0] * (KH - 1) - 1) // geo.stride[0] + 1
    OW = (ap.shape[3] - geo.dilation[1] * (KW - 1) - 1) // geo.stride[1] + 1
    ag = ap.reshape(N, G, Cg, *ap.shape[2:])
    wg = w.reshape(G, OC // G, Cg, KH, KW)
    y = np.zeros((N, G, OC // G, OH * OW), np.result_type(a, w))
    for i, j, rows, cols in _taps(geo, (KH, KW), (OH, OW)):
        y += np.matmul(wg[..., i, j], ag[..., rows, cols].reshape(N, G, Cg, OH * OW))
    return y.reshape(N, OC, OH, OW)


def _np_conv_input_grad(x, w, geo):
    """conv2d's input gradient for output gradient x: the transposed conv, (N, C_out, Hc, Wc)."""
    t, b, le, r = geo.conv_padding
    G, (OC, Cg, KH, KW) = geo.groups, w.shape
    N, _, H, W = x.shape
    Hc, Wc = geo.inner
    wg = w.reshape(G, OC // G, Cg, KH, KW)
    xg = x.reshape(N, G, OC // G, H * W)
    out = np.zeros((N, G, Cg, Hc + t + b, Wc + le + r), np.result_type(x, w))
    for i, j, rows, cols in _taps(geo, (KH, KW), (H, W)):
        out[..., rows, cols] += np.matmul(np.swapaxes(wg[..., i, j], -1, -2), xg).reshape(N, G, Cg, H, W)
    return out.reshape(N, G * Cg, *out.shape[3:])[:, :, t:t + Hc, le:le + Wc]


def _np_conv_weight_grad(a, x, w_shape, geo):
    """conv2d's weight gradient for input a (N, C_out, Hc, Wc) and output gradient x (N, C_in, H, W)."""
    t, b, le, r = geo.conv_padding
    G, (OC, Cg, KH, KW) = geo.groups, w_shape
    N, _, H, W = x.shape
    ap = np.pad(a, ((0, 0), (0, 0), (t, b), (le, r)))
    ag = ap.reshape(N, G, Cg, *ap.shape[2:])
    xg = x.reshape(N, G, OC // G, H * W)
    gw = np.zeros((G, OC // G, Cg, KH, KW), np.result_type(a, x))
    for i, j, rows, cols in _taps(geo, (KH, KW), (H, W)):
        gw[..., i, j] = np.matmul(xg, np.swapaxes(ag[..., rows, cols].reshape(N, G, Cg, H * W), -1, -2)).sum(axis=0)
    return gw.reshape(w_shape)


def _c(a):
    return np.ascontiguousarray(a)


def _forward(x, w, b, geo):
    """The transposed conv's output (N, C_out, H_out, W_out), bias added."""
    N, Co, Ho, Wo = geo.output_shape
    Hc, Wc = geo.inner
    if min(Hc, Wc) < 1 or N == 0:
        inner = None
    elif x.dtype == np.float32:
        inner = np.empty((N, Co, Hc, Wc), np.float32)
        _C.conv.conv2d_backward_input(_c(x), _c(w), inner, geo.stride, geo.conv_padding, geo.dilation, geo.groups)
    else:
        inner = _c(_np_conv_input_grad(x, w, geo))
    if inner is not None and (Hc, Wc) == (Ho, Wo):
        y = inner
    else:  # the rows and columns past every tap's reach: 0, then the bias
        y = np.zeros(geo.output_shape, x.dtype)
        if inner is not None:
            y[:, :, :Hc, :Wc] = inner
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def _backward(x, w, g, geo, need):
    """(grad_input, grad_weight, grad_bias), each None unless ``need`` asks for it."""
    need_x, need_w, need_b = need
    Hc, Wc = geo.inner
    gb = g.sum(axis=(0, 2, 3)) if need_b else None
    gx = gw = None
    empty = min(Hc, Wc) < 1 or x.shape[0] == 0
    if need_x:
        gx = np.zeros(x.shape, g.dtype) if empty else None
    if need_w:
        gw = np.zeros(w.shape, g.dtype) if empty else None
    if empty or not (need_x or need_w):
        return gx, gw, gb
    gc = _c(g[:, :, :Hc, :Wc])
    if g.dtype == np.float32:
        w = _c(w)
        if need_x:
            gx = np.empty(x.shape, np.float32)
            _C.conv.conv2d_forward(gc, w, None, gx, geo.stride, geo.conv_padding, geo.dilation, geo.groups)
        if need_w:
            gw = np.empty(w.shape, np.float32)
            _C.conv.conv2d_backward_weight(gc, _c(x), gw, None, list(w.shape), geo.stride, geo.conv_padding,
                                           geo.dilation, geo.groups)
    else:
        gx = _np_conv(gc, w, geo) if need_x else None
        gw = _np_conv_weight_grad(gc, x, w.shape, geo) if need_w else None
    return gx, gw, gb


def _check_arrays(owner, x, weight, bias, ndim):
    for name, a in (("input", x), ("weight", weight), ("bias", bias)):
        if a is not None and not (hasattr(a, "shape") and hasattr(a, "dtype")):  # a number at a tensor argument
            raise TypeError(f"{owner}: {name} must be a tensor, got {type(a).__name__}")
    _shape(x, "input", ndim, owner)
    _shape(weight, "weight", ndim, owner)
    kinds = {a.dtype for a in (x, weight, bias) if a is not None and a.dtype.kind == "f"}
    if any(a is not None and a.dtype.kind != "f" for a in (x, weight, bias)):
        raise TypeError(f"{owner}: input, weight and bias must be floating tensors, got "
                        f"{', '.join(str(a.dtype) for a in (x, weight, bias) if a is not None)}")
    if len(kinds) > 1:
        raise RuntimeError(f"{owner}: expected all floating arguments to have the same dtype (torch does not "
                           f"promote here), found {', '.join(sorted(str(k) for k in kinds))}")


def _check_bias(owner, bias, out_channels):
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"{owner}: bias must have shape (out_channels,) = ({out_channels},), got "
                         f"{tuple(bias.shape)}")


def checked_geometry(geometry, ndim, owner, x, weight, bias, *args):
    """geometry(x.shape, weight.shape, *args, owner=owner) after checking the arrays (rank ndim, one floating
    dtype), and the bias against its output channels."""
    _check_arrays(owner, x, weight, bias, ndim)
    geo = geometry(x.shape, weight.shape, *args, owner=owner)
    _check_bias(owner, bias, geo.output_shape[1])
    return geo


# ---- conv_transpose2d ---------------------------------------------------------------------------------------
def _geometry2d(x, weight, bias, stride, padding, output_padding, groups, dilation, owner="conv_transpose2d"):
    return checked_geometry(conv_transpose2d_geometry, 4, owner, x, weight, bias, stride, padding, output_padding,
                            groups, dilation)


def _meta2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    geo = _geometry2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return MetaArray(geo.output_shape, np.dtype(np.float32))


def _flops(out, input, weight, bias=None, **kwargs):
    """A multiply-add per input element and weight element of its group (C_out / groups * kernel), plus the bias
    add per output element."""
    per_input = 2 * int(np.prod(weight.shape[1:]))
    return input.size * per_input + (out.size if bias is not None else 0)


def _onnx_conv_transpose(ctx, op, geo, rank):
    """ConvTranspose with torch's padding and output_padding: ONNX's output size is stride * (in - 1) +
    output_padding + dilated kernel - pads, torch's. onnxruntime refuses an output_padding >= stride (which torch
    allows below the dilation): there the end pads shrink by output_padding instead, and the rows still missing
    (beyond every tap: bias only) are padded on, the bias added after."""
    s = slice(len(geo.stride) - rank, None)  # the last `rank` axes (1-D runs on a 2-D geometry)
    w = op.args["weight"]
    b = op.input("bias") if op.args.get("bias") is not None else None
    attrs = dict(kernel_shape=[int(k) for k in w.shape[2:]], strides=list(geo.stride[s]),
                 dilations=list(geo.dilation[s]), group=int(geo.groups))
    p, out_pad = list(geo.padding[s]), list(geo.output_padding[s])
    if all(o < st for o, st in zip(out_pad, geo.stride[s])):
        return ctx.node("ConvTranspose", [op.input("input"), op.input("weight"), b], pads=p + p,
                        output_padding=out_pad, **attrs)
    end = [max(0, pi - o) for pi, o in zip(p, out_pad)]
    extra = [max(0, o - pi) for pi, o in zip(p, out_pad)]
    if not any(extra):
        return ctx.node("ConvTranspose", [op.input("input"), op.input("weight"), b], pads=p + end, **attrs)
    y = ctx.node("ConvTranspose", [op.input("input"), op.input("weight")], pads=p + end, **attrs)
    y = ctx.node("Pad", [y, ctx.ints([0] * (2 + rank) + [0, 0] + extra)], mode="constant")
    if b is None:
        return y
    return ctx.node("Add", [y, ctx.node("Reshape", [b, ctx.ints([1, -1] + [1] * rank)])])


def _onnx2d(ctx, op):
    geo = _geometry2d(op.args["input"], op.args["weight"], op.args.get("bias"),
                      *(op.attr(n, d) for n, d in _GEO_ARGS))
    return [_onnx_conv_transpose(ctx, op, geo, 2)]


_GEO_ARGS = (("stride", 1), ("padding", 0), ("output_padding", 0), ("groups", 1), ("dilation", 1))


def _rule(ctx, args, kwargs, g):
    from ._double_backward_conv_transpose import conv_transpose_rule
    return conv_transpose_rule(ctx, args, kwargs, g)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch.nn.functional.conv_transpose2d: input (N, C_in, H, W) or unbatched (C_in, H, W), weight
    (C_in, C_out / groups, kH, kW), bias (C_out,) -> (N, C_out, H_out, W_out) with
    H_out = (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1."""
    return _functional("conv_transpose2d", 4, input, weight, bias, stride, padding, output_padding, groups, dilation)


def _functional(name, ndim, input, weight, bias, stride, padding, output_padding, groups, dilation):
    from ..nn.functional_conv import _opt, _t
    from .registry import _OPS
    input, weight = _t(input, "input"), _t(weight, "weight")
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    if input.ndim == ndim - 1:  # unbatched, as torch
        return _OPS[name](input.unsqueeze(0), weight, _opt(bias), **kwargs).squeeze(0)
    if input.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim - 1}-D (unbatched) or {ndim}-D (batched) input, got input of "
                         f"shape {tuple(input.shape)}")
    return _OPS[name](input, weight, _opt(bias), **kwargs)


@register_op("conv_transpose2d", meta=_meta2d, flops=with_args(_flops), samples=CS.conv_transpose2d_samples,
             torch=CS.conv_transpose2d_torch, bad_inputs=CS.conv_transpose2d_bad_inputs, tol=CS.CONV_TOL,
             onnx=_onnx2d, differentiable_backward=_rule, functional=conv_transpose2d)
class ConvTranspose2dFunction(Function):
    """conv_transpose2d(input (N, C_in, H, W), weight (C_in, C_out / groups, kH, kW), bias (C_out,)), torch's
    arguments; float32 on conv2d's C++ kernels, float64 in numpy."""

    @staticmethod
    def forward(ctx, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        geo = _geometry2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
        ctx.save_for_backward(input, weight)
        ctx.geo, ctx.has_bias = geo, bias is not None
        return _forward(input, weight, bias, geo)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need = (needs[0], needs[1], ctx.has_bias and len(needs) > 2 and needs[2])
        return _backward(x, w, g, ctx.geo, need)


# ---- conv_transpose1d: the 2-D geometry on a height of 1 ----------------------------------------------------
def _as_2d(stride, padding, output_padding, groups, dilation, owner="conv_transpose1d"):
    """The 1-D arguments (ints or tuples of one int) as the 2-D op's on a height of 1."""
    return ((1, single(stride, "stride", owner, minimum=1)), (0, single(padding, "padding", owner, minimum=0)),
            (0, single(output_padding, "output_padding", owner, minimum=0)), groups,
            (1, single(dilation, "dilation", owner, minimum=1)))


def _geometry1d(x, weight, bias, stride, padding, output_padding, groups, dilation, owner="conv_transpose1d"):
    _check_arrays(owner, x, weight, bias, 3)
    geo = conv_transpose2d_geometry((x.shape[0], x.shape[1], 1, x.shape[2]), weight.shape[:2] + (1,) + weight.shape[2:],
                                    *_as_2d(stride, padding, output_padding, groups, dilation, owner), owner=owner)
    _check_bias(owner, bias, geo.output_shape[1])
    return geo


def _meta1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    geo = _geometry1d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    N, C, _, L = geo.output_shape
    return MetaArray((N, C, L), np.dtype(np.float32))


def _onnx1d(ctx, op):
    geo = _geometry1d(op.args["input"], op.args["weight"], op.args.get("bias"),
                      *(op.attr(n, d) for n, d in _GEO_ARGS))
    return [_onnx_conv_transpose(ctx, op, geo, 1)]


def _h1(a):
    return a.reshape(a.shape[:2] + (1,) + a.shape[2:])


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch.nn.functional.conv_transpose1d: input (N, C_in, L) or unbatched (C_in, L), weight
    (C_in, C_out / groups, k), bias (C_out,) -> (N, C_out, L_out); sizes are ints or tuples of one int."""
    return _functional("conv_transpose1d", 3, input, weight, bias, stride, padding, output_padding, groups, dilation)


@register_op("conv_transpose1d", meta=_meta1d, flops=with_args(_flops), samples=CS.conv_transpose1d_samples,
             torch=CS.conv_transpose1d_torch, bad_inputs=CS.conv_transpose1d_bad_inputs, tol=CS.CONV_TOL,
             onnx=_onnx1d, differentiable_backward=_rule, functional=conv_transpose1d)
class ConvTranspose1dFunction(Function):
    """conv_transpose1d(input (N, C_in, L), weight (C_in, C_out / groups, k), bias (C_out,)): the 2-D op's
    kernels on a height of 1."""

    @staticmethod
    def forward(ctx, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        geo = _geometry1d(input, weight, bias, stride, padding, output_padding, groups, dilation)
        ctx.save_for_backward(input, weight)
        ctx.geo, ctx.has_bias = geo, bias is not None
        y = _forward(_h1(input), _h1(weight), bias, geo)
        return y.reshape(y.shape[:2] + y.shape[3:])

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need = (needs[0], needs[1], ctx.has_bias and len(needs) > 2 and needs[2])
        gx, gw, gb = _backward(_h1(x), _h1(w), _h1(g), ctx.geo, need)
        return (None if gx is None else gx.reshape(x.shape), None if gw is None else gw.reshape(w.shape), gb)


ConvTranspose2dFunction.op.float64 = ConvTranspose2dFunction  # the same Function: numpy where dtype is float64
ConvTranspose1dFunction.op.float64 = ConvTranspose1dFunction
