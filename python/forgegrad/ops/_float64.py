"""float64: every op runs on float64 tensors, in float64; the C++ kernels are the float32 path.

An op whose tensor arguments include a float64 tensor runs its record's ``float64`` Function
(``Function.apply``), and its outputs keep their dtype: float32 with float64 gives float64 (torch's
promotion; Python scalars never promote), and the ops torch does not promote (matrix products,
conv, norms, RNNs, attention, the class losses' weights) raise instead, as torch does. Nothing is
cast down. Three kinds of float64 Function:

- ``_SAME_FUNCTION``: the op's own Function, whose numpy path computes in its inputs' dtype (the
  float32 kernels are taken only for float32 arrays);
- ``_SAME_FUNCTION_ONE_DTYPE``: the op's own Function behind a check that its floating arguments
  share one dtype (binary_cross_entropy: torch raises on a float32 / float64 mix);
- the numpy Functions below (matmul, linear, sigmoid, mse_loss) and in ``_float64_nn`` (conv2d, the
  pools, batch / layer / RMS norm, the recurrent layer): code for ops whose Functions call float32
  kernels. The hot parts of a training step run on float64 C++ kernels (forgegrad.kernels.float64:
  conv2d's im2col / col2im around numpy's dgemm, the LSTM cell, relu, Adam; max_pool2d on _C.pool's
  double instantiation); the rest is numpy.

tests/test_op_registry.py checks every op this way against torch's float64 (check "float64").
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ._util import unbroadcast
from ._float64_nn import FUNCTIONS as _NN_FUNCTIONS
from ._float64_nn import _one_dtype
from .linalg import _save_pair, _saved_pair
from .registry import _OPS

_SAME_FUNCTION = ("abs", "add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "sin", "cos", "clamp",
                  "relu", "tanh", "silu", "leaky_relu", "gelu", "softmax", "log_softmax", "sum", "mean", "amax",
                  "amin", "max_dim", "min_dim", "argmax", "argmin", "cumsum", "var", "std", "cast", "compare", "where",
                  "cat", "stack", "reshape", "permute", "expand", "getitem", "clone", "dropout", "embedding",
                  "scaled_dot_product_attention", "l1_loss", "binary_cross_entropy_with_logits", "kl_div",
                  "cross_entropy", "nll_loss", "fake_quantize_per_tensor_affine",
                  "fake_quantize_per_channel_affine")
# the same Function, but one floating dtype for every array argument (torch raises on a mix)
_SAME_FUNCTION_ONE_DTYPE = ("binary_cross_entropy",)


def _same_dtype(name, a, b):
    # torch's matrix products do not promote: float32 @ float64 is an error there too
    if a.dtype != b.dtype:
        raise RuntimeError(f"{name}: expected both operands to have the same dtype, but found {a.dtype} and {b.dtype}")


def _check_linear(x, weight):
    """linear's operands: x (..., in_features), weight (out_features, in_features), one dtype."""
    if x.ndim < 1 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input (..., {weight.shape[-1]}) expected for weight of shape {weight.shape}, "
                         f"got input of shape {x.shape}")
    _same_dtype("linear", x, weight)


class MatMul64Function(Function):
    """a @ b in numpy (torch.matmul's 1-D and batch rules, as np.matmul's)."""

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: both arguments need at least 1 dimension, got shapes {a.shape} and {b.shape}")
        _same_dtype("matmul", a, b)
        _save_pair(ctx, a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = _saved_pair(ctx)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1 and b.ndim == 1:  # a dot product: g is 0-d
            g2 = np.reshape(g, (1, 1))
        else:
            g2 = g[..., None, :] if a.ndim == 1 else g
            g2 = g2[..., None] if b.ndim == 1 else g2
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(np.matmul(g2, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape).astype(a.dtype)
        if ctx.needs_input_grad[1]:
            gb = unbroadcast(np.matmul(np.swapaxes(a2, -1, -2), g2), b2.shape).reshape(b.shape).astype(b.dtype)
        return ga, gb


class Linear64Function(Function):
    """x @ weight.T + bias in numpy."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        _check_linear(x, weight)
        if bias is not None:  # float32 x and weight with a float64 bias: torch raises, numpy would promote the sum
            _same_dtype("linear", x, bias)
        _save_pair(ctx, x, weight)
        ctx.has_bias = bias is not None
        y = np.matmul(x, weight.T)
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx, g):
        x, weight = _saved_pair(ctx)
        x2, g2 = x.reshape(-1, weight.shape[1]), g.reshape(-1, weight.shape[0])
        gx = (g2 @ weight).reshape(x.shape).astype(x.dtype, copy=False) if ctx.needs_input_grad[0] else None
        gw = (g2.T @ x2).astype(weight.dtype, copy=False) if ctx.needs_input_grad[1] else None
        gb = g2.sum(axis=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


class Sigmoid64Function(Function):
    @staticmethod
    def forward(ctx, a):
        with np.errstate(over="ignore"):  # exp(-a) = inf gives 0, as torch's; 0.5 (1 + tanh(a / 2)) cancelled to
            y = 1.0 / (1.0 + np.exp(-a))  # 1e-17 absolute (4 digits of sigmoid(-28)) where this keeps the bits
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y * (1.0 - y)


class MSELoss64Function(Function):
    @staticmethod
    def forward(ctx, input, target, reduction="mean"):
        if input.shape != target.shape:
            raise ValueError(f"mse_loss: input {input.shape} and target {target.shape} must have the same shape")
        d = input - target
        ctx.save_for_backward(d, input, target)  # input and target for the in-place check only, as torch's
        ctx.reduction = reduction
        sq = d * d
        if reduction == "none":
            return sq
        if reduction == "sum":
            return np.asarray(sq.sum())
        if reduction == "mean":
            return np.asarray(sq.mean())
        raise ValueError(f"mse_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")

    @staticmethod
    def backward(ctx, g):
        d = ctx.saved_tensors[0]
        scale = 2.0 / d.size if ctx.reduction == "mean" else 2.0
        gi = (g * d * scale).astype(d.dtype)
        return gi, (-gi if ctx.needs_input_grad[1] else None)


_NUMPY_FUNCTIONS = {"matmul": MatMul64Function, "linear": Linear64Function, "sigmoid": Sigmoid64Function,
                    "mse_loss": MSELoss64Function}


def _one_dtype_function(op):
    """op's Function, checking first that its floating array arguments share one dtype."""
    base = op.function

    def forward(ctx, *args, **kwargs):
        _one_dtype(op.name, *args, *kwargs.values())
        return base.forward(ctx, *args, **kwargs)

    return type(f"{base.__name__}OneDtype", (base,), {"forward": staticmethod(forward), "__module__": __name__})


_NUMPY_FUNCTIONS.update(_NN_FUNCTIONS)
for _name in _SAME_FUNCTION:
    _OPS[_name].float64 = _OPS[_name].function
for _name in _SAME_FUNCTION_ONE_DTYPE:
    _NUMPY_FUNCTIONS[_name] = _one_dtype_function(_OPS[_name])
for _name, _fn in _NUMPY_FUNCTIONS.items():
    _fn.op = _OPS[_name]
    _OPS[_name].float64 = _fn


def float64_ops():
    """Names of the ops that run on float64 tensors."""
    return sorted(name for name, op in _OPS.items() if op.float64 is not None)
