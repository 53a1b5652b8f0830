"""Registration of forgegrad's conv / pooling / batch-norm ops (forgegrad.ops.conv) with the
emitters in _conv_emit. Imported only when forgegrad.ops.conv exists.

The op classes were written in parallel with this file, so each is looked up by the names it is
likely to have and its arguments are read by name with PyTorch's conventions (x/input, weight,
bias, stride, padding, dilation, groups, kernel_size, ceil_mode, count_include_pad,
divisor_override, output_size, running_mean/var, eps, training). An op found here whose
arguments do not fit fails with UnsupportedOpError naming the op, not with a wrong graph.
"""
from __future__ import annotations

from ...ops import conv as C
from . import _conv_emit as CE
from . import register


def _arg(op, *names, default=None):
    for n in names:
        if n in op.args:
            return op.args[n]
    return default


def _x(op):
    for n in ("x", "input", "a"):
        if n in op.args:
            return n
    raise op.unsupported(f"cannot find the input among the arguments {list(op.args)}")


def _classes(*names):
    return [getattr(C, n) for n in names if isinstance(getattr(C, n, None), type)]


def map_conv(ctx, op):
    xn = _x(op)
    w = op.args.get("weight")
    if w is None or w.ndim != 4:
        raise op.unsupported("only 2-D convolution (weight (C_out, C_in/groups, kH, kW)) is mapped")
    b = op.input("bias") if op.args.get("bias") is not None else None
    return [CE.conv2d(ctx, op.input(xn), op.input("weight"), b, w.shape[2:], _arg(op, "stride", default=1),
                      _arg(op, "padding", default=0), _arg(op, "dilation", default=1),
                      _arg(op, "groups", default=1), tuple(op.args[xn].shape[2:]))]


def map_max_pool(ctx, op):
    xn = _x(op)
    y = CE.max_pool2d(ctx, op.input(xn), tuple(op.args[xn].shape[2:]), _arg(op, "kernel_size"),
                      _arg(op, "stride"), _arg(op, "padding", default=0), _arg(op, "dilation", default=1),
                      bool(_arg(op, "ceil_mode", default=False)))
    if len(op.outputs) == 2:  # (values, indices): indices are not exported
        raise op.unsupported("max pooling that also returns indices is not exported")
    return [y]


def map_avg_pool(ctx, op):
    xn = _x(op)
    return [CE.avg_pool2d(ctx, op.input(xn), tuple(op.args[xn].shape[2:]), _arg(op, "kernel_size"),
                          _arg(op, "stride"), _arg(op, "padding", default=0), bool(_arg(op, "ceil_mode", default=False)),
                          bool(_arg(op, "count_include_pad", default=True)), _arg(op, "divisor_override"),
                          unsupported=op.unsupported)]


def _adaptive(reduce_op):
    def mapping(ctx, op):
        xn = _x(op)
        return [CE.adaptive_pool2d(ctx, op.input(xn), tuple(op.args[xn].shape[2:]), _arg(op, "output_size"),
                                   reduce_op)]
    return mapping


def map_batch_norm(ctx, op):
    xn = _x(op)
    if _arg(op, "training", default=False):
        raise op.unsupported("batch norm ran in training mode (batch statistics) while the model was in eval mode")
    mean_n = next((n for n in ("running_mean", "mean") if n in op.args), None)
    var_n = next((n for n in ("running_var", "var") if n in op.args), None)
    if mean_n is None or var_n is None or op.args[mean_n] is None:
        raise op.unsupported("batch norm without running statistics is not exported")
    w = "weight" if op.args.get("weight") is not None else None
    b = "bias" if op.args.get("bias") is not None else None
    return [CE.batch_norm(ctx, op.input(xn), op.input(mean_n), op.input(var_n), op.input(w) if w else None,
                          op.input(b) if b else None, float(_arg(op, "eps", default=1e-5)),
                          op.args[xn].shape[1])]


for _cls in _classes("Conv2d", "Conv2D", "Conv"):
    register(_cls)(map_conv)
for _cls in _classes("MaxPool2d", "MaxPool2D", "MaxPool"):
    register(_cls)(map_max_pool)
for _cls in _classes("AvgPool2d", "AvgPool2D", "AvgPool"):
    register(_cls)(map_avg_pool)
for _cls in _classes("AdaptiveAvgPool2d", "AdaptiveAvgPool2D", "AdaptiveAvgPool"):
    register(_cls)(_adaptive("ReduceMean"))
for _cls in _classes("AdaptiveMaxPool2d", "AdaptiveMaxPool2D"):
    register(_cls)(_adaptive("ReduceMax"))
for _cls in _classes("BatchNorm2d", "BatchNorm", "BatchNorm2D"):
    register(_cls)(map_batch_norm)
