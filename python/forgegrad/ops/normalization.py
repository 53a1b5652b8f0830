"""Normalisation ops: batch norm (over dim 1, with running statistics), and layer norm and RMS norm
over the trailing ``normalized_shape`` axes.

All run on the C++ kernels of forgegrad.kernels.norm (rows split over threads, column sums of the
weight gradient in a fixed order); the records below hold everything else about them: shape rule,
FLOPs, ONNX mapping, the torch.nn.functional entry point and the samples of the generated checks.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..devices import MetaArray
from ..kernels import norm as _N

from ..kernels._checks import check_ndim
from . import _meta as M
from . import _samples as S
from . import conv_samples as CS
from ._op_rules import with_args
from .registry import BadInput, Sample, register_op

_F32 = np.dtype(np.float32)


def _trailing(x, normalized_shape):
    shape = _N._normalized_shape(normalized_shape)
    if x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape):]) != shape:
        raise ValueError(f"x's trailing dimensions must equal normalized_shape {shape}, got x of shape {x.shape}")
    return shape


def _norm_meta(x, normalized_shape, weight=None, *args, **kwargs):
    shape = _trailing(x, normalized_shape)
    if weight is not None and tuple(weight.shape) != shape:
        raise ValueError(f"weight must have the normalized shape {shape}, got {tuple(weight.shape)}")
    return M.MetaArray(x.shape, np.float32)


def _reduced_axes(op, normalized_shape):
    rank = len(op.out_dims(0))
    return list(range(rank - len(_N._normalized_shape(normalized_shape)), rank))


def _torch_F():
    import torch.nn.functional as F
    return F


# ---- layer_norm ------------------------------------------------------------------------------------------
def _layer_norm_samples():
    return [Sample((S.rand(3, 7), 7, S.rand(7, seed=1), S.rand(7, seed=2))),
            Sample((S.rand(2, 5, 9), (5, 9), S.rand(5, 9, seed=1), None), {"eps": 1e-3}, "2 axes, no bias"),
            Sample((S.rand(4, 1), 1, None, None), name="one element per row, no affine"),
            Sample((S.rand(6, 33) + 50.0, 33, S.rand(33, seed=1), S.rand(33, seed=2)), name="offset rows"),
            Sample((S.rand(*S.LARGE), S.LARGE[1], S.rand(S.LARGE[1], seed=1), S.rand(S.LARGE[1], seed=2)),
                   name="large")]


def _onnx_layer_norm(ctx, op):
    x, weight, bias = op.input("x"), op.input("weight"), op.input("bias")
    ns, eps = op.attr("normalized_shape"), float(op.attr("eps", 1e-5))
    axes = _reduced_axes(op, ns)
    if ctx.opset >= 17:  # LayerNormalization needs a scale: ones when the op has no weight
        if weight is None:
            weight = ctx.const(np.ones(_N._normalized_shape(ns), np.float32))
        inputs = [x, weight] + ([bias] if bias is not None else [])
        return [ctx.node("LayerNormalization", inputs, axis=axes[0], epsilon=eps)]
    d = ctx.node("Sub", [x, ctx.reduce("ReduceMean", x, axes, True)])
    var = ctx.reduce("ReduceMean", ctx.node("Mul", [d, d]), axes, True)
    y = ctx.node("Div", [d, ctx.node("Sqrt", [ctx.node("Add", [var, ctx.const(eps, "float32")])])])
    if weight is not None:
        y = ctx.node("Mul", [y, weight])
    if bias is not None:
        y = ctx.node("Add", [y, bias])
    return [y]


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """``torch.nn.functional.layer_norm``: normalise over the trailing ``normalized_shape`` axes."""
    return LayerNormFunction.op(input, normalized_shape, weight, bias, eps=eps)


@register_op("layer_norm", meta=_norm_meta, flops=M.per_output_element(8), samples=_layer_norm_samples,
             onnx=_onnx_layer_norm, functional=layer_norm, tol=(1e-4, 1e-5),
             inference={"cpu": lambda x, ns, weight=None, bias=None, eps=1e-5:
                        _N.layer_norm_forward(x, ns, weight, bias, eps)[0]},
             torch=lambda torch, x, ns, weight=None, bias=None, eps=1e-5: _torch_F().layer_norm(
                 x, (ns,) if isinstance(ns, int) else ns, weight, bias, eps),
             bad_inputs=lambda: [BadInput((S.rand(3, 7), 6, None, None), {}, ValueError, "normalized_shape"),
                                 BadInput((S.rand(3, 7), 7, S.rand(6), None), {}, ValueError, "weight"),
                                 BadInput((S.rand(3, 7), 7, None, S.rand(7, 1)), {}, ValueError, "bias"),
                                 BadInput((S.rand(3, 7), 7, None, None), {"eps": "big"}, TypeError, "eps")])
class LayerNormFunction(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, statistics over the trailing axes."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight=None, bias=None, eps=1e-5):
        y, mean, rstd = _N.layer_norm_forward(x, normalized_shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        gx, gw, gb = _N.layer_norm_backward(g, x, mean, rstd, weight,
                                            needs=(needs[0], weight is not None and needs[2],
                                                   ctx.has_bias and needs[3]))
        return gx, None, gw, gb


# ---- rms_norm --------------------------------------------------------------------------------------------
def _rms_norm_samples():
    return [Sample((S.rand(3, 7), 7, S.rand(7, seed=1))),
            Sample((S.rand(2, 5, 9), (5, 9), None), {"eps": 1e-3}, "2 axes, no weight"),
            Sample((S.rand(4, 1), 1, S.rand(1, seed=1)), name="one element per row"),
            Sample((S.rand(*S.LARGE), S.LARGE[1], S.rand(S.LARGE[1], seed=1)), name="large")]


def _onnx_rms_norm(ctx, op):
    x, weight = op.input("x"), op.input("weight")
    ns, eps = op.attr("normalized_shape"), op.attr("eps")
    eps = float(np.finfo(ctx.float_dtype).eps) if eps is None else float(eps)  # torch: the input dtype's
    ms = ctx.reduce("ReduceMean", ctx.node("Mul", [x, x]), _reduced_axes(op, ns), True)
    y = ctx.node("Div", [x, ctx.node("Sqrt", [ctx.node("Add", [ms, ctx.const(eps, "float32")])])])
    return [y if weight is None else ctx.node("Mul", [y, weight])]  # RMSNormalization is opset 23


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """``torch.nn.functional.rms_norm``: x / sqrt(mean(x^2) + eps) * weight over the trailing axes
    (eps None: float32's machine epsilon, as torch)."""
    return RMSNormFunction.op(input, normalized_shape, weight, eps=eps)


@register_op("rms_norm", meta=_norm_meta, flops=M.per_output_element(5), samples=_rms_norm_samples,
             onnx=_onnx_rms_norm, functional=rms_norm, tol=(1e-4, 1e-5),
             inference={"cpu": lambda x, ns, weight=None, eps=None: _N.rms_norm_forward(x, ns, weight, eps)[0]},
             torch=lambda torch, x, ns, weight=None, eps=None: _torch_F().rms_norm(
                 x, (ns,) if isinstance(ns, int) else ns, weight, eps),
             bad_inputs=lambda: [BadInput((S.rand(3, 7), (3, 6), None), {}, ValueError, "normalized_shape"),
                                 BadInput((S.rand(3, 7), 7, S.rand(7, 2)), {}, ValueError, "weight"),
                                 BadInput((S.rand(3, 7), 7, None), {"eps": -1.0}, ValueError, "eps")])
class RMSNormFunction(Function):
    """y = x / sqrt(mean(x^2) + eps) * weight, over the trailing axes."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight=None, eps=None):
        y, rstd = _N.rms_norm_forward(x, normalized_shape, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        gx, gw = _N.rms_norm_backward(g, x, rstd, weight, needs=(needs[0], weight is not None and needs[2]))
        return gx, None, gw


# ---- batch_norm -------------------------------------------------------------------------------------------
def _batch_norm_meta(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                     momentum=0.1, eps=1e-5):
    check_ndim(x, "input", (2, 3, 4, 5))
    c = x.shape[1]
    if c < 1:
        raise ValueError(f"input must have at least one channel, got shape {x.shape}")
    for v, name in ((weight, "weight"), (bias, "bias"), (running_mean, "running_mean"), (running_var, "running_var")):
        if v is not None and v.shape != (c,):
            raise ValueError(f"{name} must have shape ({c},), got {v.shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: running_mean and running_var are required when training=False")
    if training and x.size // c < 2:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input of shape "
                         f"{x.shape}")
    return MetaArray(x.shape, _F32)


def _batch_norm_flops(out, x, *args, training=False, **kwargs):
    """(x - mean) * invstd * weight + bias: 4 per element; training first sums x and x*x per
    channel (3 more per element)."""
    return (7 if training else 4) * x.size


@register_op("batch_norm", meta=_batch_norm_meta, flops=with_args(_batch_norm_flops), samples=CS.batch_norm_samples,
             torch=CS.batch_norm_torch, bad_inputs=CS.batch_norm_bad_inputs, tol=CS.BATCH_NORM_TOL)
class BatchNormFunction(Function):
    """Positional inputs: x, running_mean, running_var, weight, bias (each may be None but x).

    running_mean / running_var are updated in place when training (they are buffers: no gradient).
    """

    @staticmethod
    def forward(ctx, x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
        y, mean, invstd = _N.batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum,
                                                   eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.training = bool(training)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, invstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need = (needs[0], weight is not None and needs[3], ctx.has_bias and needs[4])
        if not any(need):
            return None, None, None, None, None
        gx, gw, gb = _N.batch_norm_backward(g, x, weight, mean, invstd, ctx.training, need=need)
        return gx, None, None, gw, gb


# ---- cuda ------------------------------------------------------------------------------------------------
# The norms on DeviceArrays (cuda/norm.cu): one thread block per row (layer / RMS norm) or per channel
# (batch norm), two-pass statistics in a fixed order, the same saved statistics as the CPU Functions.
from . import _cuda_nn as CN  # noqa: E402


class LayerNormCudaFunction(Function):
    """layer_norm on cuda; saves x, weight, mean and rstd (batch shape) as the CPU Function."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight=None, bias=None, eps=1e-5):
        shape = _trailing(x, normalized_shape)
        y, mean, rstd = CN.kernels().layer_norm_forward(x, len(shape), weight, bias, _N._eps(eps), False)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.k, ctx.has_bias = len(shape), bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need = (bool(needs[0]), weight is not None and bool(needs[2]), ctx.has_bias and bool(needs[3]))
        gx, gw, gb = CN.kernels().layer_norm_backward(g, x, mean, rstd, weight, ctx.k, need, False)
        return gx, None, gw, gb


LayerNormFunction.op.add_device("cuda", LayerNormCudaFunction)


class RMSNormCudaFunction(Function):
    """rms_norm on cuda (eps None: float32's machine epsilon, as torch); saves x, weight and rstd."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight=None, eps=None):
        shape = _trailing(x, normalized_shape)
        eps = float(np.finfo(np.float32).eps) if eps is None else _N._eps(eps)
        y, _, rstd = CN.kernels().layer_norm_forward(x, len(shape), weight, None, eps, True)
        ctx.save_for_backward(x, weight, rstd)
        ctx.k = len(shape)
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need = (bool(needs[0]), weight is not None and bool(needs[2]), False)
        gx, gw, _ = CN.kernels().layer_norm_backward(g, x, None, rstd, weight, ctx.k, need, True)
        return gx, None, gw


RMSNormFunction.op.add_device("cuda", RMSNormCudaFunction)


def _as_4d(x):
    """(N, C, D, H, W) as the view (N, C, D * H, W): the statistics are per channel over every other
    axis, so BatchNorm3d runs on the kernel of (N, C, H, W)."""
    return CN.reshape(x, tuple(x.shape[:2]) + (CN.numel(x.shape[2:-1]), x.shape[-1])) if len(x.shape) > 4 else x


class BatchNormCudaFunction(Function):
    """batch_norm on cuda: running stats updated in place when training; saves x, weight, mean, invstd.
    A 5-D input runs as a 4-D view."""

    @staticmethod
    def forward(ctx, x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
        ctx.shape = tuple(x.shape)
        x = _as_4d(x)
        y, mean, invstd = CN.kernels().batch_norm_forward(x, weight, bias, running_mean, running_var, bool(training),
                                                          float(momentum), float(eps))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.training, ctx.has_bias = bool(training), bias is not None
        return CN.reshape(y, ctx.shape)

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, invstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need = (bool(needs[0]), weight is not None and bool(needs[3]), ctx.has_bias and bool(needs[4]))
        if not any(need):
            return None, None, None, None, None
        gx, gw, gb = CN.kernels().batch_norm_backward(CN.reshape(g, tuple(x.shape)), x, weight, mean, invstd,
                                                      ctx.training, need)
        return None if gx is None else CN.reshape(gx, ctx.shape), None, None, gw, gb


BatchNormFunction.op.add_device("cuda", BatchNormCudaFunction)
