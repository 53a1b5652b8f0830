"""The differentiable backward rule of conv_transpose2d / conv_transpose1d (see _double_backward.py).

The transposed conv's gradients are conv2d's own products (ops/conv_transpose.py): its input gradient is the conv2d
op of the output gradient (cropped to the rows a tap reaches), its weight gradient conv2d's weight gradient with the
roles swapped (_double_backward_conv.ConvWeightGradFunction, itself differentiable), its bias gradient a sum. So the
rule is made of ops whose derivatives are recorded, and every order follows.
"""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor
from ._double_backward import _arg, _is_t
from ._double_backward_conv import ConvWeightGradFunction
from .registry import _OPS


def conv_transpose_rule(ctx, args, kwargs, g):
    from .conv_transpose import _GEO_ARGS, _geometry1d, _geometry2d
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    one_d = type(ctx).op.name == "conv_transpose1d"
    values = [_arg(args, kwargs, 3 + i, n, d) for i, (n, d) in enumerate(_GEO_ARGS)]
    xa, wa = (a._data if _is_t(a) else a for a in (x, w))
    geo = (_geometry1d if one_d else _geometry2d)(xa, wa, None, *values)

    def h1(a):  # (N, C, L) -> (N, C, 1, L), a Tensor or an array
        return a.reshape(tuple(a.shape[:2]) + (1,) + tuple(a.shape[2:])) if one_d else a

    x4, w4, g4 = h1(x), h1(w), h1(g)
    Hc, Wc = geo.inner
    if min(Hc, Wc) < 1 or geo.output_shape[0] == 0:  # no tap reaches the output: only the bias has a gradient
        gx = Tensor._wrap_exact(np.zeros(x.shape, xa.dtype)) if _is_t(x) else None
        gw = Tensor._wrap_exact(np.zeros(w.shape, wa.dtype)) if _is_t(w) else None
    else:
        gc = g4 if (Hc, Wc) == geo.output_shape[2:] else g4[:, :, :Hc, :Wc]
        conv = dict(stride=geo.stride, padding=geo.conv_padding, dilation=geo.dilation, groups=geo.groups)
        gx = _OPS["conv2d"](gc, w4, None, **conv).reshape(tuple(x.shape)) if _is_t(x) else None
        gw = ConvWeightGradFunction.apply(gc, x4, w4._data, "conv2d", conv).reshape(tuple(w.shape)) \
            if _is_t(w) else None
    gb = g.sum(dim=(0,) + tuple(range(2, g.ndim))) if _is_t(b) else None
    return gx, gw, gb
