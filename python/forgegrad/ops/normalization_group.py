"""Group norm and instance norm (torch.nn.functional.group_norm / instance_norm).

float32 runs the fused kernel forgegrad._C.groupnorm (cpp/kernels/per_isa/groupnorm.cpp): per (n, group) the mean
and rstd as the layer norm kernel computes them, and y = ((x - mean) * rstd) * weight[c] + bias[c] written once;
the backward takes two passes over x and grad per group (per-channel sums, then grad_x), and sums the weight and
bias gradients per (n, c), added over the batch in batch order, so results are bit-identical at any thread count.

Instance norm is group norm with one group per channel. With running statistics it updates them in place as torch
(each instance's mean and unbiased variance blended with momentum, averaged over the batch); the variance is read
back from the saved rstd in float64 (1 / rstd^2 - eps, within an ulp of the variance), so no extra pass over x.
``use_input_stats=False`` normalises with the running statistics: batch norm in evaluation mode.

float64 inputs run the numpy path of the same Functions (``op.float64`` is the Function itself).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._validate import check_bool, check_float, check_int
from ..autograd import Function
from ..devices import MetaArray
from ..kernels import norm as _N
from ..kernels._checks import as_f32
from . import _samples as S
from ._op_rules import with_args
from .registry import BadInput, Sample, register_op

_F32 = np.dtype(np.float32)


def _one_dtype(name, *arrays):
    kinds = {a.dtype for a in arrays if isinstance(a, np.ndarray) and a.dtype.kind == "f"}
    if len(kinds) > 1:  # torch's norms do not promote either
        raise RuntimeError(f"{name}: expected all floating arguments to have the same dtype, found "
                           f"{', '.join(sorted(str(k) for k in kinds))}")


def _decomposition(fn):
    """ops._double_backward.decomposition(fn), imported when first used (that module needs every op loaded)."""

    def rule(ctx, args, kwargs, *grads):
        from ._double_backward import decomposition
        return decomposition(fn)(ctx, args, kwargs, *grads)

    return rule


# ---- argument checks (shared by the Functions and the shape rules) -------------------------------------
def _check_channels(name, x, params):
    if x.ndim < 2:
        raise ValueError(f"{name}: input must have at least 2 dimensions (N, C, *), got shape {tuple(x.shape)}")
    c = x.shape[1]
    for v, pname in params:
        if v is not None and not hasattr(v, "shape"):
            raise TypeError(f"{name}: {pname} must be a Tensor of shape ({c},) or None, got {type(v).__name__}")
        if v is not None and tuple(v.shape) != (c,):
            raise ValueError(f"{name}: {pname} must have shape ({c},) (one value per channel of input), "
                             f"got {tuple(v.shape)}")
    return c


def _group_args(x, num_groups, weight, bias, eps):
    g = check_int(num_groups, "num_groups", low=1)
    c = _check_channels("group_norm", x, ((weight, "weight"), (bias, "bias")))
    if c % g:
        raise ValueError(f"group_norm: num_groups ({g}) must divide the number of channels of input ({c}), "
                         f"got input of shape {tuple(x.shape)}")
    if x.shape[0] * (c // g) * int(np.prod(x.shape[2:], dtype=np.int64)) == 1:
        # torch's condition (F.group_norm's _verify_batch_size over (N * C / G, G, *))
        raise ValueError(f"group_norm: expected more than 1 value per channel when training, got input of shape "
                         f"{tuple(x.shape)} with num_groups={g}")
    return g, _N._eps(eps)


def _instance_args(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps):
    use = check_bool(use_input_stats, "use_input_stats")
    momentum = check_float(momentum, "momentum")
    _check_channels("instance_norm", x, ((weight, "weight"), (bias, "bias"), (running_mean, "running_mean"),
                                         (running_var, "running_var")))
    if (running_mean is None) != (running_var is None):
        raise ValueError("instance_norm: running_mean and running_var must both be given or both be None")
    if use and int(np.prod(x.shape[2:], dtype=np.int64)) == 1:  # torch's check (0 elements pass)
        raise ValueError(f"instance_norm: expected more than 1 spatial element when training (use_input_stats="
                         f"True), got input of shape {tuple(x.shape)}")
    if not use and running_mean is None:
        raise ValueError("instance_norm: running_mean and running_var are required when use_input_stats=False")
    return use, momentum, _N._eps(eps)


def _group_meta(x, num_groups, weight=None, bias=None, eps=1e-5):
    _group_args(x, num_groups, weight, bias, eps)
    return MetaArray(x.shape, x.dtype)


def _instance_meta(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                   momentum=0.1, eps=1e-5):
    _instance_args(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
    return MetaArray(x.shape, x.dtype)


# ---- float32: the fused kernel ------------------------------------------------------------------------
def _f32_param(v):
    return None if v is None else np.ascontiguousarray(v, np.float32)


def _gn_forward32(x, groups, weight, bias, eps):
    """(y, mean, rstd), mean / rstd of shape (N * groups,)."""
    x = np.ascontiguousarray(as_f32(x, "input"))
    n = x.shape[0]
    y = np.empty(x.shape, np.float32)
    mean = np.empty((n, groups), np.float32)
    rstd = np.empty((n, groups), np.float32)
    _C.groupnorm.group_norm_forward(x, groups, _f32_param(weight), _f32_param(bias), eps, y, mean, rstd)
    return y, mean.reshape(-1), rstd.reshape(-1)


def _gn_backward32(g, x, groups, weight, mean, rstd, need):
    x = np.ascontiguousarray(x)
    g = np.ascontiguousarray(as_f32(g, "grad"))
    n, c = x.shape[:2]
    gx = np.empty(x.shape, np.float32) if need[0] else None
    gw = np.empty(c, np.float32) if need[1] else None
    gb = np.empty(c, np.float32) if need[2] else None
    stats = [np.ascontiguousarray(s, np.float32).reshape(n, groups) for s in (mean, rstd)]
    _C.groupnorm.group_norm_backward(g, x, stats[0], stats[1], _f32_param(weight), gx, gw, gb)
    return gx, gw, gb


def _flat3(x):
    """x's shape as (N, C, spatial size) (a -1 cannot stand for it when x is empty)."""
    return x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64))


# ---- float64: numpy ------------------------------------------------------------------------------------
def _bshape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _gn_forward64(x, groups, weight, bias, eps):
    n = x.shape[0]
    xg = x.reshape(n, groups, -1)
    mean = xg.mean(axis=2)
    xc = xg - mean[..., None]
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=2) + eps)
    y = (xc * rstd[..., None]).reshape(x.shape)
    if weight is not None:
        y = y * weight.reshape(_bshape(x))
    if bias is not None:
        y = y + bias.reshape(_bshape(x))
    return y, mean.reshape(-1), rstd.reshape(-1)


def _gn_backward64(g, x, groups, weight, mean, rstd, need):
    n = x.shape[0]
    xhat = ((x.reshape(n, groups, -1) - mean.reshape(n, groups, 1)) * rstd.reshape(n, groups, 1)).reshape(x.shape)
    axes = (0,) + tuple(range(2, x.ndim))
    gx = gw = gb = None
    if need[0]:
        gh = (g if weight is None else g * weight.reshape(_bshape(x))).reshape(n, groups, -1)
        xh = xhat.reshape(n, groups, -1)
        gx = (rstd.reshape(n, groups, 1) * (gh - gh.mean(axis=2, keepdims=True)
                                            - xh * (gh * xh).mean(axis=2, keepdims=True))).reshape(x.shape)
    if need[1]:
        gw = (g * xhat).sum(axis=axes)
    if need[2]:
        gb = g.sum(axis=axes)
    return gx, gw, gb


def _gn_forward(x, groups, weight, bias, eps):
    if x.size == 0:  # an empty batch or spatial axis: an empty result, as torch
        rows = x.shape[0] * groups
        return np.empty(x.shape, x.dtype), np.zeros(rows, x.dtype), np.ones(rows, x.dtype)
    _one_dtype("group_norm", x, weight, bias)  # float32 too: the kernel would cast a float64 weight silently
    if x.dtype == np.float64:
        return _gn_forward64(x, groups, weight, bias, eps)
    return _gn_forward32(x, groups, weight, bias, eps)


def _gn_backward(g, x, groups, weight, mean, rstd, need):
    if x.size == 0:
        return (np.zeros(x.shape, x.dtype) if need[0] else None,
                np.zeros(x.shape[1], x.dtype) if need[1] else None, np.zeros(x.shape[1], x.dtype) if need[2] else None)
    fn = _gn_backward64 if x.dtype == np.float64 else _gn_backward32
    return fn(g, x, groups, weight, mean, rstd, need)


# ---- group_norm -----------------------------------------------------------------------------------------
def _group_norm_samples():
    return [Sample((S.rand(2, 6, 5), 3, S.rand(6, seed=1), S.rand(6, seed=2)), name="C=6, 3 groups, 1-d"),
            Sample((S.rand(3, 6, 4, 5, seed=1), 1, S.rand(6, seed=3), S.rand(6, seed=4)), name="1 group, 2-d"),
            Sample((S.rand(2, 6, 3, 3, seed=2), 6, S.rand(6, seed=5), None), {"eps": 1e-3}, "C groups, no bias"),
            Sample((S.rand(1, 6, 7, seed=3), 2, None, None), name="batch 1, no affine"),
            Sample((S.rand(2, 6, 1, 1, seed=4), 3, S.rand(6, seed=6), S.rand(6, seed=7)), name="spatial 1"),
            Sample((S.rand(4, 6, seed=5), 3, S.rand(6, seed=8), S.rand(6, seed=9)), name="(N, C) input"),
            Sample((S.rand(2, 8, 40, 41, seed=6) + 1.0, 4, S.rand(8, seed=1), S.rand(8, seed=2)), name="large")]


def _group_norm_onnx(ctx, op):
    """Reshape to (N, G, -1), InstanceNormalization (scale 1, bias 0), reshape back, per-channel scale and shift
    (opset 18's GroupNormalization takes a per-group scale, opset 21's a per-channel one: this runs at any)."""
    x, weight, bias = op.input("x"), op.input("weight"), op.input("bias")
    groups, eps = int(op.attr("num_groups")), float(op.attr("eps", 1e-5))
    rank = len(op.out_dims(0))
    xg = ctx.node("Reshape", [x, ctx.ints([0, groups, -1])])
    ones, zeros = ctx.const(np.ones(groups, np.float32)), ctx.const(np.zeros(groups, np.float32))
    y = ctx.node("Reshape", [ctx.node("InstanceNormalization", [xg, ones, zeros], epsilon=eps),
                             ctx.node("Shape", [x])])
    per_channel = [-1] + [1] * (rank - 2)
    if weight is not None:
        y = ctx.node("Mul", [y, ctx.node("Reshape", [weight, ctx.ints(per_channel)])])
    if bias is not None:
        y = ctx.node("Add", [y, ctx.node("Reshape", [bias, ctx.ints(per_channel)])])
    return [y]


def _group_norm_decomposed(x, num_groups, weight=None, bias=None, eps=1e-5):
    shape = tuple(x.shape)
    xg = x.reshape(shape[0], num_groups, -1)
    d = xg - xg.mean(dim=2, keepdim=True)
    y = (d / ((d * d).mean(dim=2, keepdim=True) + eps).sqrt()).reshape(*shape)
    per_channel = (-1,) + (1,) * (len(shape) - 2)
    if weight is not None:
        y = y * weight.reshape(*per_channel)
    return y + bias.reshape(*per_channel) if bias is not None else y


def group_norm(input, num_groups, weight=None, bias=None, eps: float = 1e-5):
    """``torch.nn.functional.group_norm``: normalise input (N, C, *) over each group of C / num_groups channels
    (and every spatial position), then scale and shift per channel."""
    from ..nn.functional_conv import _opt, _t
    return GroupNormFunction.op(_t(input, "input"), num_groups, _opt(weight), _opt(bias), eps=eps)


def _group_flops(out, x, num_groups, weight=None, bias=None, eps=1e-5):
    return (7 if weight is None and bias is None else 9) * x.size  # statistics (3), normalise (4), affine (2)


def _group_inference(x, num_groups, weight=None, bias=None, eps=1e-5):
    groups, eps = _group_args(x, num_groups, weight, bias, eps)
    return _gn_forward(x, groups, weight, bias, eps)[0]


@register_op("group_norm", meta=_group_meta, flops=with_args(_group_flops), samples=_group_norm_samples,
             # atol: a weight gradient sums 3,280 products in the large sample, to a value near 0
             onnx=_group_norm_onnx, functional=group_norm, tol=(1e-4, 5e-5),
             inference={"cpu": _group_inference},
             differentiable_backward=_decomposition(_group_norm_decomposed),
             torch=lambda torch, x, g, weight=None, bias=None, eps=1e-5: torch.nn.functional.group_norm(
                 x, g, weight, bias, eps),
             bad_inputs=lambda: [
                 BadInput((S.rand(2, 6, 3), 4, None, None), {}, ValueError, "num_groups"),
                 BadInput((S.rand(2, 6, 3), 0, None, None), {}, ValueError, "num_groups"),
                 BadInput((S.rand(2, 6, 3), 2.0, None, None), {}, TypeError, "num_groups"),
                 BadInput((S.rand(2, 6, 3), 3, S.rand(5), None), {}, ValueError, "weight"),
                 BadInput((S.rand(2, 6, 3), 3, None, S.rand(6, 1)), {}, ValueError, "bias"),
                 BadInput((S.rand(6), 3, None, None), {}, ValueError, "input"),
                 BadInput((S.rand(1, 2, 1), 2, None, None), {}, ValueError, "more than 1 value"),
                 BadInput((S.rand(2, 6, 3), 3, None, None), {"eps": -1.0}, ValueError, "eps")])
class GroupNormFunction(Function):
    """Layer norm over each (n, group) of x (N, C, *), then weight and bias per channel (None: none)."""

    @staticmethod
    def forward(ctx, x, num_groups, weight=None, bias=None, eps=1e-5):
        groups, eps = _group_args(x, num_groups, weight, bias, eps)
        y, mean, rstd = _gn_forward(x, groups, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups, ctx.has_bias = groups, bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need = (needs[0], weight is not None and needs[2], ctx.has_bias and needs[3])
        if not any(need):
            return None, None, None, None
        gx, gw, gb = _gn_backward(g, x, ctx.groups, weight, mean, rstd, need)
        return gx, None, gw, gb


GroupNormFunction.op.float64 = GroupNormFunction


# ---- instance_norm --------------------------------------------------------------------------------------
def _instance_norm_samples():
    rm, rv = S.rand(6, seed=11), S.positive(6, seed=12)
    keep = (0, 3, 4)  # the running statistics are buffers: no gradient
    return [Sample((S.rand(2, 6, 5), None, None, S.rand(6, seed=1), S.rand(6, seed=2)), name="1-d, affine"),
            Sample((S.rand(1, 6, 4, 3, seed=1), None, None, None, None), name="2-d, batch 1, no affine"),
            Sample((S.rand(3, 6, 5, seed=2), rm, rv, S.rand(6, seed=3), S.rand(6, seed=4)), {"momentum": 0.3},
                   "running stats, training", grad=keep),
            Sample((S.rand(2, 6, 3, 4, seed=3), rm, rv, S.rand(6, seed=5), S.rand(6, seed=6)),
                   {"use_input_stats": False, "eps": 1e-3}, "running stats, eval", grad=keep),
            Sample((S.rand(2, 6, 2, 2, seed=4), rm, rv, None, None), {"use_input_stats": False},
                   "running stats, eval, no affine", grad=(0,)),
            Sample((S.rand(2, 16, 30, 31, seed=5) - 5.0, None, None, S.rand(16, seed=7), S.rand(16, seed=8)),
                   name="large")]


def _instance_norm_onnx(ctx, op):
    from ..onnx.mappings._conv_emit import batch_norm
    x, weight, bias = op.input("x"), op.input("weight"), op.input("bias")
    eps = float(op.attr("eps", 1e-5))
    c = int(op.out_dims(0)[1])
    if not op.attr("use_input_stats", True):  # the running statistics: batch norm in inference
        return [batch_norm(ctx, x, op.input("running_mean"), op.input("running_var"), weight, bias, eps, c)]
    # the running statistics' update is training state, which an inference graph does not carry
    weight = weight if weight is not None else ctx.const(np.ones(c, np.float32))
    bias = bias if bias is not None else ctx.const(np.zeros(c, np.float32))
    return [ctx.node("InstanceNormalization", [x, weight, bias], epsilon=eps)]


def _instance_norm_decomposed(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                              momentum=0.1, eps=1e-5):
    """Batch-free statistics per (n, c), or the running ones (constants); the running buffers are read, never
    updated: the forward did that."""
    from ._double_backward import _const
    per_channel = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if use_input_stats:
        y = _group_norm_decomposed(x, x.shape[1], None, None, eps)
    else:
        mean = _const(running_mean._data.reshape(per_channel), x)
        y = (x - mean) / _const(np.sqrt(running_var._data.reshape(per_channel) + eps), x)
    if weight is not None:
        y = y * weight.reshape(*per_channel)
    return y + bias.reshape(*per_channel) if bias is not None else y


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5):
    """``torch.nn.functional.instance_norm``: normalise each channel of each sample of input (N, C, *) over its
    spatial positions (``use_input_stats=False``: with the running statistics instead). Given running statistics
    and use_input_stats, updates them in place as torch."""
    from ..nn.functional_conv import _opt, _t
    return InstanceNormFunction.op(_t(input, "input"), _opt(running_mean), _opt(running_var), _opt(weight),
                                   _opt(bias), use_input_stats=use_input_stats, momentum=momentum, eps=eps)


def _update_running(x, mean, rstd, running_mean, running_var, momentum, eps):
    """torch's update: each instance's statistics blended into the running ones, averaged over the batch."""
    n, c = x.shape[:2]
    count = x.size // (n * c)
    mean = mean.astype(np.float64).reshape(n, c)
    var = np.maximum(1.0 / np.square(rstd.astype(np.float64)) - eps, 0.0).reshape(n, c) if x.dtype != np.float64 \
        else (1.0 / np.square(rstd) - eps).reshape(n, c)
    running_mean[...] = ((1.0 - momentum) * running_mean + momentum * mean).mean(axis=0)
    running_var[...] = ((1.0 - momentum) * running_var + momentum * var * (count / (count - 1))).mean(axis=0)


def _running_forward(x, running_mean, running_var, weight, bias, eps):
    """Batch norm in evaluation mode: (y, mean, invstd) per channel."""
    if x.dtype == np.float64:
        shape = _bshape(x)
        invstd = 1.0 / np.sqrt(running_var + eps)
        # torch's (and the float32 kernel's) x * alpha + beta, alpha = invstd * weight, beta = bias - mean * alpha
        alpha = invstd if weight is None else invstd * weight
        beta = -running_mean * alpha if bias is None else bias - running_mean * alpha
        return x * alpha.reshape(shape) + beta.reshape(shape), running_mean.copy(), invstd
    x3 = x.reshape(_flat3(x))
    y, mean, invstd = _N.batch_norm_forward(x3, weight, bias, running_mean, running_var, False, 0.0, eps)
    return y.reshape(x.shape), mean, invstd


def _running_backward(g, x, weight, mean, invstd, need):
    if x.dtype == np.float64:
        shape, axes = _bshape(x), (0,) + tuple(range(2, x.ndim))
        gx = g * (invstd * (weight if weight is not None else 1.0)).reshape(shape) if need[0] else None
        gw = (g * (x - mean.reshape(shape)) * invstd.reshape(shape)).sum(axis=axes) if need[1] else None
        gb = g.sum(axis=axes) if need[2] else None
        return gx, gw, gb
    gx, gw, gb = _N.batch_norm_backward(g.reshape(_flat3(x)), x.reshape(_flat3(x)), weight, mean, invstd, False, need)
    return (gx.reshape(x.shape) if gx is not None else None), gw, gb


def _instance_inference(x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                        momentum=0.1, eps=1e-5):
    return InstanceNormFunction.forward(_NoGrad(), x, running_mean, running_var, weight, bias, use_input_stats,
                                        momentum, eps)


class _NoGrad:
    """The ctx of a forward that no backward follows."""

    def save_for_backward(self, *arrays):
        pass


@register_op("instance_norm", meta=_instance_meta, flops=with_args(lambda out, x, *a, **k: 9 * x.size),
             samples=_instance_norm_samples, onnx=_instance_norm_onnx, functional=instance_norm, tol=(1e-4, 1e-5),
             inference={"cpu": _instance_inference},
             differentiable_backward=_decomposition(_instance_norm_decomposed),
             torch=lambda torch, x, rm=None, rv=None, weight=None, bias=None, use_input_stats=True, momentum=0.1,
             eps=1e-5: torch.nn.functional.instance_norm(x, rm, rv, weight, bias, use_input_stats, momentum, eps),
             bad_inputs=lambda: [
                 BadInput((S.rand(2, 6, 1), None, None, None, None), {}, ValueError, "spatial"),
                 BadInput((S.rand(2, 6, 3), None, None, S.rand(5), None), {}, ValueError, "weight"),
                 BadInput((S.rand(2, 6, 3), S.rand(4), S.rand(4), None, None), {}, ValueError, "running_mean"),
                 BadInput((S.rand(2, 6, 3), S.rand(6), None, None, None), {}, ValueError, "running_var"),
                 BadInput((S.rand(2, 6, 3), None, None, None, None), {"use_input_stats": False}, ValueError,
                          "running_mean"),
                 BadInput((S.rand(6), None, None, None, None), {}, ValueError, "input"),
                 BadInput((S.rand(2, 6, 3), None, None, None, None), {"momentum": "0.1"}, TypeError, "momentum")])
class InstanceNormFunction(Function):
    """Per-(n, c) statistics over the spatial axes (group norm with a group per channel), running statistics
    updated in place; or, use_input_stats=False, the running statistics (batch norm in evaluation)."""

    @staticmethod
    def forward(ctx, x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                momentum=0.1, eps=1e-5):
        use, momentum, eps = _instance_args(x, running_mean, running_var, weight, bias, use_input_stats, momentum,
                                            eps)
        # torch takes float32 input with float64 running statistics, never with a float64 weight / bias
        _one_dtype("instance_norm", x, *((running_mean, running_var) if x.dtype == np.float64 else ()), weight, bias)
        if use:
            y, mean, rstd = _gn_forward(x, x.shape[1], weight, bias, eps)
            if running_mean is not None and x.size:
                _update_running(x, mean, rstd, running_mean, running_var, momentum, eps)
        else:
            y, mean, rstd = _running_forward(x, running_mean, running_var, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.use, ctx.has_bias = use, bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need = (needs[0], weight is not None and needs[3], ctx.has_bias and needs[4])
        if not any(need):
            return None, None, None, None, None
        if ctx.use:
            gx, gw, gb = _gn_backward(g, x, x.shape[1], weight, mean, rstd, need)
        else:
            gx, gw, gb = _running_backward(g, x, weight, mean, rstd, need)
        return gx, None, None, gw, gb


InstanceNormFunction.op.float64 = InstanceNormFunction
