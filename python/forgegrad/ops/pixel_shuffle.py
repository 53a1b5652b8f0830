"""``F.pixel_shuffle`` / ``F.pixel_unshuffle`` (sub-pixel convolution's rearrangement, (*, C r^2, H, W) <->
(*, C, H r, W r)) and ``F.channel_shuffle`` (ShuffleNet's: (N, g * k, *) -> channels in the order k, g), with
torch's argument checks. Each is a reshape, a transpose and a copy; the gradient is the inverse rearrangement
(pixel_unshuffle for pixel_shuffle, channel_shuffle with C / g groups for channel_shuffle), which is also each
op's double backward.

ONNX: pixel_shuffle is DepthToSpace (mode CRD), pixel_unshuffle a Reshape / Transpose / Reshape (SpaceToDepth
orders the channels the other way), channel_shuffle a Reshape / Transpose / Reshape; the shapes are read off the
input at run time, so dynamic batch and image sizes export.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..devices import MetaArray
from .._validate import check_int
from . import _meta as M
from . import _samples as S
from .registry import BadInput, Sample, register_op


def _shuffle_shape(shape, r, name):
    r = check_int(r, "upscale_factor" if name == "pixel_shuffle" else "downscale_factor", low=1)
    if len(shape) < 3:
        raise ValueError(f"{name}: input must have at least 3 dimensions (*, C, H, W), got shape {tuple(shape)}")
    c, h, w = shape[-3:]
    if name == "pixel_shuffle":
        if c % (r * r):
            raise ValueError(f"pixel_shuffle: the input's channel dimension ({c}) must be divisible by the square of "
                             f"upscale_factor ({r}^2 = {r * r})")
        return r, tuple(shape[:-3]) + (c // (r * r), h * r, w * r)
    if h % r or w % r:
        raise ValueError(f"pixel_unshuffle: the input's height ({h}) and width ({w}) must be divisible by "
                         f"downscale_factor ({r})")
    return r, tuple(shape[:-3]) + (c * r * r, h // r, w // r)


def _shuffle(x, r):
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c // (r * r), r, r, h, w)
    n = len(lead)
    y = y.transpose(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return np.ascontiguousarray(y).reshape(*lead, c // (r * r), h * r, w * r)


def _unshuffle(x, r):
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c, h // r, r, w // r, r)
    n = len(lead)
    y = y.transpose(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return np.ascontiguousarray(y).reshape(*lead, c * r * r, h // r, w // r)


def _ps_meta(x, upscale_factor):
    return MetaArray(_shuffle_shape(x.shape, upscale_factor, "pixel_shuffle")[1], x.dtype)


def _pu_meta(x, downscale_factor):
    return MetaArray(_shuffle_shape(x.shape, downscale_factor, "pixel_unshuffle")[1], x.dtype)


def _ps_samples():
    return [Sample((S.rand(2, 8, 3, 5), 2), name="r=2"), Sample((S.rand(1, 9, 2, 3, seed=1), 3), name="batch 1 r=3"),
            Sample((S.rand(12, 3, 4, seed=2), 2), name="unbatched"),
            Sample((S.rand(2, 3, 4, 2, 3, seed=3), 2), name="two batch dims"),
            Sample((S.rand(2, 5, 2, 3, seed=4), 1), name="r=1")]


def _pu_samples():
    return [Sample((S.rand(2, 2, 6, 4), 2), name="r=2"), Sample((S.rand(1, 3, 6, 9, seed=1), 3), name="batch 1 r=3"),
            Sample((S.rand(3, 4, 6, seed=2), 2), name="unbatched"),
            Sample((S.rand(2, 3, 1, 4, 2, seed=3), 2), name="two batch dims")]


def _ps_rule(ctx, args, kwargs, g):
    return PixelUnshuffleFunction.op(g, args[1] if len(args) > 1 else kwargs["upscale_factor"]), None


def _pu_rule(ctx, args, kwargs, g):
    return PixelShuffleFunction.op(g, args[1] if len(args) > 1 else kwargs["downscale_factor"]), None


@register_op("pixel_shuffle", meta=_ps_meta, flops=M.no_flops, samples=_ps_samples,
             torch=lambda torch, x, r: torch.nn.functional.pixel_shuffle(x, r),
             bad_inputs=lambda: [BadInput((S.rand(1, 5, 2, 2), 2), {}, ValueError, "upscale_factor"),
                                 BadInput((S.rand(4, 2), 2), {}, ValueError, "3 dimensions"),
                                 BadInput((S.rand(1, 4, 2, 2), 0), {}, ValueError, "upscale_factor"),
                                 BadInput((S.rand(1, 4, 2, 2), 2.0), {}, TypeError, "upscale_factor")],
             differentiable_backward=_ps_rule)
class PixelShuffleFunction(Function):
    @staticmethod
    def forward(ctx, x, upscale_factor):
        ctx.r = _shuffle_shape(x.shape, upscale_factor, "pixel_shuffle")[0]
        return _shuffle(x, ctx.r)

    @staticmethod
    def backward(ctx, g):
        return _unshuffle(g, ctx.r)


def _torch_unshuffle(torch, x, r):
    """torch's pixel_unshuffle; on an empty input torch 2.13's float64 kernel returns the input's shape (its float32
    one the unshuffled shape): the reference is the unshuffled shape there, as forgegrad's and the float32 kernel's."""
    if x.numel() == 0:
        *lead, c, h, w = x.shape
        return x.new_empty((*lead, c * r * r, h // r, w // r))
    return torch.nn.functional.pixel_unshuffle(x, r)


@register_op("pixel_unshuffle", meta=_pu_meta, flops=M.no_flops, samples=_pu_samples,
             torch=_torch_unshuffle,
             bad_inputs=lambda: [BadInput((S.rand(1, 2, 5, 4), 2), {}, ValueError, "downscale_factor"),
                                 BadInput((S.rand(4, 2), 2), {}, ValueError, "3 dimensions"),
                                 BadInput((S.rand(1, 2, 4, 4), -1), {}, ValueError, "downscale_factor")],
             differentiable_backward=_pu_rule)
class PixelUnshuffleFunction(Function):
    @staticmethod
    def forward(ctx, x, downscale_factor):
        ctx.r = _shuffle_shape(x.shape, downscale_factor, "pixel_unshuffle")[0]
        return _unshuffle(x, ctx.r)

    @staticmethod
    def backward(ctx, g):
        return _shuffle(g, ctx.r)


def _groups(shape, groups):
    groups = check_int(groups, "groups")
    if len(shape) < 3:
        raise ValueError(f"channel_shuffle: input must have at least 3 dimensions (N, C, *), got shape {tuple(shape)}")
    if groups < 1:
        raise ValueError(f"channel_shuffle: groups must be positive, got {groups}")
    if shape[1] % groups:
        raise ValueError(f"channel_shuffle: the number of channels ({shape[1]}) must be divisible by groups "
                         f"({groups})")
    return groups


def _channel_shuffle(x, g):
    n, c = x.shape[:2]
    y = x.reshape(n, g, c // g, -1).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(y).reshape(x.shape)


def _cs_rule(ctx, args, kwargs, g):
    groups = args[1] if len(args) > 1 else kwargs["groups"]
    return ChannelShuffleFunction.op(g, g.shape[1] // groups), None


def _cs_meta(x, groups):
    _groups(x.shape, groups)
    return MetaArray(x.shape, x.dtype)


@register_op("channel_shuffle", meta=_cs_meta, flops=M.no_flops,
             samples=lambda: [Sample((S.rand(2, 6, 3, 5), 2), name="groups 2"),
                              Sample((S.rand(1, 12, 5, seed=1), 3), name="3-D batch 1 groups 3"),
                              Sample((S.rand(2, 6, 2, 3, 2, seed=2), 6), name="5-D groups = C"),
                              Sample((S.rand(2, 4, 3, 3, seed=3), 1), name="groups 1")],
             torch=lambda torch, x, groups: torch.nn.functional.channel_shuffle(x, groups),
             bad_inputs=lambda: [BadInput((S.rand(1, 6, 2, 2), 4), {}, ValueError, "groups"),
                                 BadInput((S.rand(1, 6), 2), {}, ValueError, "3 dimensions"),
                                 BadInput((S.rand(1, 6, 2), 0), {}, ValueError, "groups")],
             differentiable_backward=_cs_rule)
class ChannelShuffleFunction(Function):
    @staticmethod
    def forward(ctx, x, groups):
        ctx.groups = _groups(x.shape, groups)
        return _channel_shuffle(x, ctx.groups)

    @staticmethod
    def backward(ctx, g):
        return _channel_shuffle(g, g.shape[1] // ctx.groups)


for _fn in (PixelShuffleFunction, PixelUnshuffleFunction, ChannelShuffleFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype


def pixel_shuffle(input, upscale_factor: int):
    """``torch.nn.functional.pixel_shuffle``: (*, C r^2, H, W) -> (*, C, H r, W r)."""
    from ..nn.functional_conv import _t
    return PixelShuffleFunction.op(_t(input, "input"), upscale_factor)


def pixel_unshuffle(input, downscale_factor: int):
    """``torch.nn.functional.pixel_unshuffle``: (*, C, H r, W r) -> (*, C r^2, H, W)."""
    from ..nn.functional_conv import _t
    return PixelUnshuffleFunction.op(_t(input, "input"), downscale_factor)


def channel_shuffle(input, groups: int):
    """``torch.nn.functional.channel_shuffle``: (N, g k, *) -> the channels read as (k, g)."""
    from ..nn.functional_conv import _t
    return ChannelShuffleFunction.op(_t(input, "input"), groups)


PixelShuffleFunction.op.functional = pixel_shuffle
PixelUnshuffleFunction.op.functional = pixel_unshuffle
ChannelShuffleFunction.op.functional = channel_shuffle


# ---- ONNX --------------------------------------------------------------------------------------------------------
def _dims(ctx, x, start, end=None):
    """x's sizes [start, end) as a 1-D int64 tensor read off its shape at run time."""
    return ctx.node("Slice", [ctx.node("Shape", [x]), ctx.ints([start]), ctx.ints([end if end is not None else
                                                                                   9223372036854775807]),
                              ctx.ints([0])])


def _as_4d(ctx, x):
    """x (*, C, H, W) as (prod(*), C, H, W)."""
    return ctx.node("Reshape", [x, ctx.node("Concat", [ctx.ints([-1]), _dims(ctx, x, -3)], axis=0)])


def _back(ctx, y4, x):
    """y4 (B, C', H', W') back to x's leading dims."""
    return ctx.node("Reshape", [y4, ctx.node("Concat", [_dims(ctx, x, 0, -3), _dims(ctx, y4, 1)], axis=0)])


def _ps_onnx(ctx, op):
    x = op.input("x")
    r = int(op.attr("upscale_factor"))
    return [_back(ctx, ctx.node("DepthToSpace", [_as_4d(ctx, x)], blocksize=r, mode="CRD"), x)]


def _pu_onnx(ctx, op):
    x = op.input("x")
    r = int(op.attr("downscale_factor"))
    c = int(op.args["x"].shape[-3])
    x4 = _as_4d(ctx, x)
    # (B, C, H, W) -> (B, C, H/r, r, W/r, r): H/r and W/r from the shape, so any image size exports
    hw = ctx.node("Div", [_dims(ctx, x4, 2, 4), ctx.ints([r])])
    h, w = (ctx.node("Slice", [hw, ctx.ints([i]), ctx.ints([i + 1]), ctx.ints([0])]) for i in (0, 1))
    six = ctx.node("Concat", [_dims(ctx, x4, 0, 1), ctx.ints([c]), h, ctx.ints([r]), w, ctx.ints([r])], axis=0)
    y = ctx.node("Transpose", [ctx.node("Reshape", [x4, six])], perm=[0, 1, 3, 5, 2, 4])
    y4 = ctx.node("Reshape", [y, ctx.node("Concat", [_dims(ctx, x4, 0, 1), ctx.ints([c * r * r]), hw], axis=0)])
    return [_back(ctx, y4, x)]


def _cs_onnx(ctx, op):
    x = op.input("x")
    g, c = int(op.attr("groups")), int(op.args["x"].shape[1])
    y = ctx.node("Transpose", [ctx.node("Reshape", [x, ctx.ints([0, g, c // g, -1])])], perm=[0, 2, 1, 3])
    return [ctx.node("Reshape", [y, ctx.node("Shape", [x])])]


PixelShuffleFunction.op.onnx = _ps_onnx
PixelUnshuffleFunction.op.onnx = _pu_onnx
ChannelShuffleFunction.op.onnx = _cs_onnx
