"""3-D convolution (NCDHW) and its transpose as autograd Functions: torch's conv3d and conv_transpose3d.

The arithmetic is ops/_window3d.py's: float32 on the C++ 2-D conv kernels with the depth taps unfolded as
channels (ops/_conv3d_planes.py), float64 as numpy vol2col + GEMM (the same Function runs both dtypes). As
conv_transpose2d does with conv2d's kernels, the transposed conv is the conv's adjoint: its output is the conv's
input gradient, its input gradient a conv of the output gradient and its weight gradient the conv's with the
roles swapped; the conv's padding is ``padding`` before and ``padding - output_padding`` after (negative: those
last planes take no tap, bias only). Samples, torch references and bad inputs are in conv3d_samples.py.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np

from .._args import integer
from ..autograd import Function
from ..devices import MetaArray
from . import _conv_transpose3d_disjoint as _disjoint
from . import _window3d as W
from . import conv3d_samples as CS
from ._op_rules import with_args
from .conv_transpose import _onnx_conv_transpose, checked_geometry
from .registry import register_op

__all__ = ["Conv3dFunction", "ConvTranspose3dFunction", "conv3d", "conv_transpose3d", "conv_transpose3d_geometry"]


def _unbatched_call(name, ndim, input, weight, bias, **kwargs):
    """The op `name` on a batched input; an unbatched one (one dim fewer) runs as a batch of one, as torch's."""
    from ..nn.functional_conv import _opt, _t
    from .registry import _OPS
    input, weight = _t(input, "input"), _t(weight, "weight")
    if input.ndim == ndim - 1:
        return _OPS[name](input.unsqueeze(0), weight, _opt(bias), **kwargs).squeeze(0)
    if input.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim - 1}-D (unbatched) or {ndim}-D (batched) input, got input of "
                         f"shape {tuple(input.shape)}")
    return _OPS[name](input, weight, _opt(bias), **kwargs)


def _finish(ctx, y, input, weight, bias, geo):
    """The forward's last steps for both ops: the bias added, what backward needs saved."""
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1, 1)
    ctx.save_for_backward(input, weight)
    ctx.geo, ctx.has_bias = geo, bias is not None
    return y


def _gradients(ctx, g, input_grad, weight_grad):
    """(grad input, grad weight, grad bias), each computed only where needed: input_grad(g, w) and
    weight_grad(x, g, w) give the first two."""
    x, w = ctx.saved_tensors
    needs = ctx.needs_input_grad
    need_b = ctx.has_bias and len(needs) > 2 and needs[2]
    return (input_grad(g, w) if needs[0] else None, weight_grad(x, g, w) if needs[1] else None,
            g.sum(axis=(0, 2, 3, 4)) if need_b else None)


# ---- conv3d -----------------------------------------------------------------------------------------------
def _geometry(x, weight, bias, stride, padding, dilation, groups, owner="conv3d"):
    return checked_geometry(W.conv_geometry, 5, owner, x, weight, bias, stride, padding, dilation, groups)


def _conv3d_meta(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return MetaArray(_geometry(input, weight, bias, stride, padding, dilation, groups).output_shape, input.dtype)


def _conv3d_flops(out, input, weight, bias=None, **kwargs):
    """2 * (C / groups) * kD * kH * kW per output element, plus the bias add."""
    return out.size * (2 * int(np.prod(weight.shape[1:])) + (bias is not None))


def _onnx_conv3d(ctx, op):
    from ..onnx.mappings._conv_adapters import _arg
    x, w = op.args["input"], op.args["weight"]
    geo = _geometry(x, w, op.args.get("bias"), *(_arg(op, n, default=d) for n, d in _CONV_ARGS))
    b = op.input("bias") if op.args.get("bias") is not None else None
    pads = [lo for lo, _ in geo.pads] + [hi for _, hi in geo.pads]
    return [ctx.node("Conv", [op.input("input"), op.input("weight"), b], kernel_shape=[int(k) for k in w.shape[2:]],
                     strides=list(geo.stride), pads=pads, dilations=list(geo.dilation), group=int(geo.groups))]


_CONV_ARGS = (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv3d: input (N, C, D, H, W) or unbatched (C, D, H, W), weight (OC, C / groups, kD, kH,
    kW), bias (OC,); padding an int, a triple, 'same' (stride 1) or 'valid'."""
    return _unbatched_call("conv3d", 5, input, weight, bias, stride=stride, padding=padding, dilation=dilation,
                           groups=groups)


@register_op("conv3d", meta=_conv3d_meta, flops=with_args(_conv3d_flops), samples=CS.conv3d_samples,
             torch=CS.conv3d_torch, bad_inputs=CS.conv3d_bad_inputs, tol=CS.CONV_TOL, onnx=_onnx_conv3d,
             functional=conv3d)
class Conv3dFunction(Function):
    """conv3d(input (N, C, D, H, W), weight (OC, C / groups, kD, kH, kW), bias (OC,)), torch's arguments."""

    @staticmethod
    def forward(ctx, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        geo = _geometry(input, weight, bias, stride, padding, dilation, groups)
        return _finish(ctx, W.conv_forward(input, weight, geo), input, weight, bias, geo)

    @staticmethod
    def backward(ctx, g):
        geo, shape = ctx.geo, ctx.saved_tensors[0].shape
        return _gradients(ctx, g, lambda g_, w: W.conv_input_grad(g_, w, geo, shape),
                          lambda x, g_, w: W.conv_weight_grad(x, g_, w.shape, geo))


# ---- conv_transpose3d -------------------------------------------------------------------------------------
class ConvTranspose3dGeometry(NamedTuple):
    stride: Tuple[int, int, int]
    padding: Tuple[int, int, int]
    output_padding: Tuple[int, int, int]
    dilation: Tuple[int, int, int]
    groups: int
    conv: W.ConvGeometry  # the conv whose input gradient this is (output image -> input)
    output_shape: Tuple[int, ...]


def conv_transpose3d_geometry(input_shape, weight_shape, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, owner="conv_transpose3d") -> ConvTranspose3dGeometry:
    """torch's conv_transpose3d geometry: out = (in - 1) * stride - 2 * padding + dilation * (k - 1) +
    output_padding + 1; output_padding below stride or dilation."""
    if isinstance(padding, str):
        raise TypeError(f"{owner}: padding must be an int or a tuple of 3 ints, got {padding!r}")
    stride = W.sizes(stride, 3, "stride", owner, 1)
    padding = W.sizes(padding, 3, "padding", owner, 0)
    output_padding = W.sizes(output_padding, 3, "output_padding", owner, 0)
    dilation = W.sizes(dilation, 3, "dilation", owner, 1)
    groups = integer(groups, "groups", owner)
    if groups < 1:
        raise ValueError(f"{owner}: groups must be >= 1, got {groups}")
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    N, C, spatial = input_shape[0], input_shape[1], input_shape[2:]
    if C < 1 or min(spatial) < 1:
        raise ValueError(f"{owner}: input must have nonzero channels and spatial sizes, got shape {input_shape}")
    if min(weight_shape) < 1:
        raise ValueError(f"{owner}: weight must have nonzero sizes, got {weight_shape}")
    if weight_shape[0] % groups:
        raise ValueError(f"{owner}: groups={groups} must divide the weight's first dimension (in_channels), got "
                         f"weight of shape {weight_shape}")
    if weight_shape[0] != C:
        raise ValueError(f"{owner}: weight must have shape (in_channels={C}, out_channels / groups, kD, kH, kW) for "
                         f"input of shape {input_shape}, got {weight_shape}")
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"{owner}: output_padding must be smaller than either stride or dilation, got "
                         f"output_padding {output_padding}, stride {stride}, dilation {dilation}")
    k = weight_shape[2:]
    out = tuple((n - 1) * s - 2 * p + d * (kk - 1) + o + 1
                for n, s, p, d, kk, o in zip(spatial, stride, padding, dilation, k, output_padding))
    if min(out) < 1:
        raise ValueError(f"{owner}: padding {padding} is too large: input {input_shape}, weight {weight_shape}, "
                         f"stride {stride}, dilation {dilation} and output_padding {output_padding} give an output "
                         f"of size {out}")
    out_shape = (N, weight_shape[1] * groups) + out
    W._check_size(owner, "input", out_shape, (weight_shape[1],) + k + tuple(spatial))
    conv = W.ConvGeometry(stride, tuple((p, p - o) for p, o in zip(padding, output_padding)), dilation, groups,
                          (N, C) + tuple(spatial))
    return ConvTranspose3dGeometry(stride, padding, output_padding, dilation, groups, conv, out_shape)


def _t_geometry(x, weight, bias, stride, padding, output_padding, groups, dilation, owner="conv_transpose3d"):
    return checked_geometry(conv_transpose3d_geometry, 5, owner, x, weight, bias, stride, padding, output_padding,
                            groups, dilation)


def _t_meta(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    geo = _t_geometry(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return MetaArray(geo.output_shape, input.dtype)


def _t_flops(out, input, weight, bias=None, **kwargs):
    return input.size * 2 * int(np.prod(weight.shape[1:])) + (out.size if bias is not None else 0)


_T_ARGS = (("stride", 1), ("padding", 0), ("output_padding", 0), ("groups", 1), ("dilation", 1))


def _onnx_conv_transpose3d(ctx, op):
    from ..onnx.mappings._conv_adapters import _arg
    geo = _t_geometry(op.args["input"], op.args["weight"], op.args.get("bias"),
                      *(_arg(op, n, default=d) for n, d in _T_ARGS))
    return [_onnx_conv_transpose(ctx, op, geo, 3)]


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch.nn.functional.conv_transpose3d: input (N, C_in, D, H, W) or unbatched (C_in, D, H, W), weight (C_in,
    C_out / groups, kD, kH, kW), bias (C_out,)."""
    return _unbatched_call("conv_transpose3d", 5, input, weight, bias, stride=stride, padding=padding,
                           output_padding=output_padding, groups=groups, dilation=dilation)


@register_op("conv_transpose3d", meta=_t_meta, flops=with_args(_t_flops), samples=CS.conv_transpose3d_samples,
             torch=CS.conv_transpose3d_torch, bad_inputs=CS.conv_transpose3d_bad_inputs, tol=CS.CONV_TOL,
             onnx=_onnx_conv_transpose3d, functional=conv_transpose3d)
class ConvTranspose3dFunction(Function):
    """conv_transpose3d(input (N, C_in, D, H, W), weight (C_in, C_out / groups, kD, kH, kW), bias (C_out,))."""

    @staticmethod
    def forward(ctx, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        geo = _t_geometry(input, weight, bias, stride, padding, output_padding, groups, dilation)
        if _disjoint.applies(input, weight, geo):  # kernel == stride: one sgemm per image and a scatter
            return _finish(ctx, _disjoint.forward(input, weight), input, weight, bias, geo)
        return _finish(ctx, W.conv_input_grad(input, weight, geo.conv, geo.output_shape), input, weight, bias, geo)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        if _disjoint.applies(x, w, ctx.geo) and g.dtype == np.float32:
            needs = ctx.needs_input_grad
            gx, gw = _disjoint.backward(g, x, w, needs[0], needs[1])
            return gx, gw, (g.sum(axis=(0, 2, 3, 4)) if ctx.has_bias and len(needs) > 2 and needs[2] else None)
        conv = ctx.geo.conv  # the adjoint's: a conv of g, the conv's weight gradient with the roles swapped
        return _gradients(ctx, g, lambda g_, w: W.conv_forward(g_, w, conv),
                          lambda x, g_, w: W.conv_weight_grad(g_, x, w.shape, conv))


for _fn in (Conv3dFunction, ConvTranspose3dFunction):
    _fn.op.float64 = _fn  # numpy GEMMs in the input's dtype
