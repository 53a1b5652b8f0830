"""Mappings for conv / pooling / batch-norm ops that read the op's arguments by PyTorch's names
(x/input, weight, bias, stride, padding, dilation, groups, kernel_size, ceil_mode,
count_include_pad, divisor_override, output_size, running_mean/var, eps, training) and emit with
_conv_emit. Registered for forgegrad.ops.conv's classes in mappings/conv.py; kept apart from it
so they are tested before / independently of those classes (tests/test_onnx_conv.py)."""
from __future__ import annotations

from . import _conv_emit as CE


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


def map_conv(ctx, op):
    xn = _x(op)
    w = op.args.get("weight")
    if w is None or w.ndim != 4:
        raise op.unsupported("only 2-D convolution (weight (C_out, C_in/groups, kH, kW)) is mapped")
    b = op.input("bias") if op.args.get("bias") is not None else None
    return [CE.conv2d(ctx, op.input(xn), op.input("weight"), b, w.shape[2:], _arg(op, "stride", default=1),
                      _arg(op, "padding", default=0), _arg(op, "dilation", default=1),
                      _arg(op, "groups", default=1), tuple(op.args[xn].shape[2:]))]


def map_conv1d(ctx, op):
    xn = _x(op)
    b = op.input("bias") if op.args.get("bias") is not None else None
    return [CE.conv1d(ctx, op.input(xn), op.input("weight"), b, op.args["weight"].shape[2],
                      _arg(op, "stride", default=1), _arg(op, "padding", default=0), _arg(op, "dilation", default=1),
                      _arg(op, "groups", default=1))]


def _dynamic_hw(op, xn):
    """Per spatial axis (H, W) of the input: whether its size can change at run time, so that a pool whose windows
    follow it reads it off the input's shape. True where the traces saw different sizes, and on both axes whenever
    the input is computed from a graph input with a dynamic axis past the second (an image's height or width):
    strided convs and pools map the traced sizes (16, 17, 18) to one size (4 after a stride 4) that only looks
    static. A pool over an image of a static size beside such an input (a mask's dynamic token axis) stays static."""
    shapes = [args[xn].shape[2:] for args in (op.args, op.args_b, op.args_c) if args.get(xn) is not None]
    traced = tuple(len({hw[i] for hw in shapes}) > 1 for i in range(2))
    image_inputs = {name for name, axis in op.ctx.symbols.axes if axis >= 2}
    image_axes = bool(image_inputs) and _reads_any(op.ctx, op.input(xn), image_inputs)
    return tuple(t or image_axes for t in traced)


def _reads_any(ctx, value: str, inputs) -> bool:
    """Whether the ONNX value ``value`` is computed from any of the graph ``inputs``, following the nodes emitted
    so far back from it. A node with a subgraph (a Loop's body reads outer values it does not list) counts as
    reading every input."""
    producer = {out: n for n in ctx.nodes for out in n.output}
    seen, stack = set(), [value]
    while stack:
        v = stack.pop()
        if v in inputs:
            return True
        if v in seen or v not in producer:
            continue
        seen.add(v)
        n = producer[v]
        if any(a.HasField("g") or len(a.graphs) for a in n.attribute):
            return True
        stack.extend(i for i in n.input if i)
    return False


def map_max_pool(ctx, op):
    xn = _x(op)
    hw = tuple(op.args[xn].shape[2:])
    dynamic = any(_dynamic_hw(op, xn))
    from ...ops._pool_onnx import restore_nan

    def pool(x, with_indices):
        return CE.max_pool2d(ctx, x, hw, _arg(op, "kernel_size"), _arg(op, "stride"), _arg(op, "padding", default=0),
                             _arg(op, "dilation", default=1), bool(_arg(op, "ceil_mode", default=False)),
                             with_indices=with_indices, dynamic=dynamic)
    # export(nan_exact_pooling=True): the same pool over IsNaN puts back the NaN windows onnxruntime's MaxPool
    # may skip (ops/_pool_onnx.py); by default a plain MaxPool, as torch.onnx
    x = op.input(xn)
    y = pool(x, len(op.outputs) == 2)
    if len(op.outputs) == 2:  # (values, indices)
        vals, idx = y
        vals = restore_nan(ctx, vals, x, lambda t: pool(t, False))
        # ONNX's indices count over the whole NCHW tensor, torch's within each (H, W) plane
        import numpy as np
        if dynamic:  # H * W read off the input's shape
            plane = ctx.node("Slice", [ctx.node("Shape", [x]), ctx.ints([2]), ctx.ints([4]), ctx.ints([0])])
            area = ctx.reduce("ReduceProd", plane, [0], True)
        else:
            area = ctx.const(np.int64(hw[0] * hw[1]))
        return [vals, ctx.node("Mod", [idx, area])]
    return [restore_nan(ctx, y, x, lambda t: pool(t, False))]


def map_avg_pool(ctx, op):
    xn = _x(op)
    return [CE.avg_pool2d(ctx, op.input(xn), tuple(op.args[xn].shape[2:]), _arg(op, "kernel_size"),
                          _arg(op, "stride"), _arg(op, "padding", default=0),
                          bool(_arg(op, "ceil_mode", default=False)),
                          bool(_arg(op, "count_include_pad", default=True)), _arg(op, "divisor_override"),
                          dynamic=any(_dynamic_hw(op, xn)))]


def _adaptive(reduce_op):
    def mapping(ctx, op):
        xn = _x(op)
        return [CE.adaptive_pool2d(ctx, op.input(xn), tuple(op.args[xn].shape[2:]), _arg(op, "output_size"),
                                   reduce_op, _dynamic_hw(op, xn))]
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
