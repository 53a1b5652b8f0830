"""Statistics over axes: variance (Tensor.var) and standard deviation (Tensor.std).

One op rather than mean/sub/mul/sum/div from Python so that the divisor ``n - 1`` is part of the op:
computed from the input's shape when the op runs, it follows the batch size in an exported graph
instead of being a constant of the example's size.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .._validate import check_bool
from ..autograd import Function
from ._util import normalize_axis
from . import _meta as M
from . import _samples as S
from .reduce import _FLOAT32_EXACT_COUNT, _expand_back
from .registry import BadInput, Sample, register_op


def _var_samples():
    x = S.rand(3, 5, 7)
    return [Sample((x,), {}, "all"), Sample((x,), {"dim": 1}, "dim 1"),
            Sample((x,), {"dim": (0, 2), "unbiased": False, "keepdim": True}, "biased keepdim"),
            Sample((S.rand(*S.LARGE),), {"dim": 0}, "large")]


def _flags(who, unbiased, keepdim):
    """unbiased and keepdim as bools (a string or None is refused, naming the op)."""
    return check_bool(unbiased, f"{who}: unbiased"), check_bool(keepdim, f"{who}: keepdim")


def _torch_var(torch, a, dim=None, unbiased=True, keepdim=False):
    dims = tuple(range(a.ndim)) if dim is None else dim
    return torch.var(a, dims, correction=1 if unbiased else 0, keepdim=keepdim)


def reduced_axes(dim, ndim: int):
    """dim (int, tuple or None) -> tuple of non-negative axes; an empty tuple means all axes (torch)."""
    if dim is not None and not isinstance(dim, (int, np.integer)) and len(tuple(dim)) == 0:
        dim = None
    return normalize_axis(dim, ndim)


@register_op("var", meta=lambda a, dim=None, unbiased=True, keepdim=False: M.float_reduction(
                 a, None if dim is not None and not isinstance(dim, int) and len(tuple(dim)) == 0 else dim, keepdim),
             flops=M.per_input_element(3), samples=_var_samples, torch=_torch_var, tol=(1e-5, 1e-6),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"dim": 5}, IndexError, "dim")])
class VarFunction(Function):
    """Variance over ``dim`` (all axes when None): sum((x - mean)^2) / (n - 1) when unbiased, else / n.

    As in torch, n - 1 <= 0 (one element, unbiased) gives nan with a warning. The result is float32
    (integer input is converted first), float64 for float64 input.
    """

    @staticmethod
    def forward(ctx, a, dim=None, unbiased=True, keepdim=False):
        with np.errstate(over="ignore"):  # a variance past float's range is inf
            return _variance(ctx, a, dim, unbiased, keepdim, "var").astype(ctx.out_dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        # d var / d x_i = 2 (x_i - mean) / dof (the mean's own dependence on x_i sums to zero)
        (d,) = ctx.saved_tensors
        g = _expand_back(g, d.shape, ctx.axes, ctx.keepdim)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (d * (g * d.dtype.type(2.0 / ctx.dof if ctx.dof > 0 else np.nan))).astype(ctx.out_dtype, copy=False)


def _variance(ctx, a, dim, unbiased, keepdim, who):
    """The variance in the dtype it was computed in (float64 where float32 overflowed; ctx.out_dtype is
    the result's), saving what the backward needs on ctx."""
    unbiased, keepdim = _flags(who, unbiased, keepdim)
    axes = reduced_axes(dim, a.ndim)
    x = a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)
    n = 1
    for ax in axes:
        n *= a.shape[ax]
    dof = n - (1 if unbiased else 0)
    # same operation sequence as mean / sub / mul / sum / div, in x's dtype
    with warnings.catch_warnings():  # an empty reduction: numpy warns, the result below is NaN as torch's
        warnings.simplefilter("ignore", RuntimeWarning)
        # long float32 reductions accumulate in float64 (see reduce._float32_sum)
        acc = np.float64 if x.dtype == np.float32 and n > _FLOAT32_EXACT_COUNT else x.dtype
        d = x - np.mean(x, axis=axes, keepdims=True, dtype=acc).astype(x.dtype)
        ss = np.sum(d * d, axis=axes, keepdims=keepdim, dtype=acc).astype(x.dtype)
        out_dtype = x.dtype
        if x.dtype == np.float32 and not np.isfinite(ss).all():
            # deviations near float's limit overflow their squares (or themselves): redo in double,
            # as torch's float64 (std of values near 3e38 is finite); var past float's range is inf. (Rows
            # holding inf or NaN give NaN in double as in float32: one such row must not keep the others at inf)
            x = x.astype(np.float64)
            d = x - np.mean(x, axis=axes, keepdims=True)
            ss = np.sum(d * d, axis=axes, keepdims=keepdim)
    if dof <= 0:
        warnings.warn("var(): degrees of freedom is <= 0 (one element with unbiased=True): the result is nan",
                      UserWarning, stacklevel=5)  # the caller of Tensor.var (through OpDef, apply, forward)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = ss / x.dtype.type(dof)
    if n == 0:  # no elements: the mean is NaN, so is the variance (torch), whatever dof is
        y = np.full_like(y, np.nan)
    ctx.save_for_backward(d)
    ctx.axes, ctx.keepdim, ctx.dof, ctx.out_dtype = axes, keepdim, dof, out_dtype
    return np.asarray(y, dtype=x.dtype)


def _torch_std(torch, a, dim=None, unbiased=True, keepdim=False):
    dims = tuple(range(a.ndim)) if dim is None else dim
    return torch.std(a, dims, correction=1 if unbiased else 0, keepdim=keepdim)


def _std_samples():
    const = np.ones((2, 4), np.float32)  # a zero standard deviation: torch's gradient there is 0, not nan
    return _var_samples() + [Sample((const,), {"dim": 1}, "constant rows (std 0)")]


@register_op("std", meta=lambda a, dim=None, unbiased=True, keepdim=False: M.float_reduction(
                 a, None if dim is not None and not isinstance(dim, int) and len(tuple(dim)) == 0 else dim, keepdim),
             flops=M.per_input_element(3), samples=_std_samples, torch=_torch_std, tol=(1e-5, 1e-6),
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"dim": 5}, IndexError, "dim")])
class StdFunction(Function):
    """Standard deviation: the square root of ``var``. Its own op (not var().sqrt()) for torch's gradient
    where the deviation is 0: torch defines it as 0 there, where d sqrt(v)/dv would be inf (and then nan)."""

    @staticmethod
    def forward(ctx, a, dim=None, unbiased=True, keepdim=False):
        y = np.sqrt(_variance(ctx, a, dim, unbiased, keepdim, "std")).astype(ctx.out_dtype, copy=False)
        ctx.y = y
        return y

    @staticmethod
    def backward(ctx, g):
        y = ctx.y
        with np.errstate(divide="ignore", invalid="ignore"):
            gv = np.where(y == 0, 0, g / y / 2).astype(y.dtype)  # (2 * y overflows near float's limit)
        return VarFunction.backward(ctx, gv)


# ---- cuda ------------------------------------------------------------------------------------------------
# Two passes through cuda/reduce.cu in a fixed order: the mean, then the sum of squared deviations
# from it (no E[x^2] - E[x]^2 cancellation). Saves d = x - mean as the CPU Function does.
from . import _cuda_nn as CN  # noqa: E402


class VarCudaFunction(Function):
    """var on cuda (float32): sum((x - mean)^2) / (n - 1) unbiased, / n biased; nan when n - 1 <= 0."""

    take_sqrt = False

    @staticmethod
    def forward(ctx, a, dim=None, unbiased=True, keepdim=False):
        unbiased, keepdim = _flags("std" if type(ctx).take_sqrt else "var", unbiased, keepdim)
        axes = reduced_axes(dim, a.ndim)
        n = CN.numel(a.shape[ax] for ax in axes)
        dof = n - (1 if unbiased else 0)
        if dof <= 0:
            warnings.warn("var(): degrees of freedom is <= 0 (one element with unbiased=True): the result is nan",
                          UserWarning, stacklevel=4)
        K = CN.kernels()
        mean = K.reduce("sum", a, list(axes), True, 1.0 / n if n else math.nan)
        inv_dof = 1.0 / dof if dof > 0 and n > 0 else math.nan
        y = K.reduce("sum_sq_dev", a, list(axes), keepdim, inv_dof, type(ctx).take_sqrt, center=mean)
        ctx.save_for_backward(CN.pw("sub", a, mean))
        ctx.axes, ctx.keepdim, ctx.dof, ctx.y = axes, keepdim, dof, y
        return y

    @staticmethod
    def backward(ctx, g):
        # d var / d x_i = 2 (x_i - mean) / dof
        (d,) = ctx.saved_tensors
        g = CN.reshape(g, CN.keepdim_shape(d.shape, ctx.axes))
        alpha = 2.0 / ctx.dof if ctx.dof > 0 else math.nan
        return CN.pw("mul_scaled", d, g, alpha=alpha, shape=d.shape)


class StdCudaFunction(VarCudaFunction):
    """std on cuda: sqrt of var in the same launch; the gradient is 0 where the deviation is 0 (torch)."""

    take_sqrt = True

    @staticmethod
    def backward(ctx, g):
        K = CN.kernels()
        gv = K.where(K.compare("eq", ctx.y, 0.0), 0.0, CN.pw("sqrt_grad", g, ctx.y))
        return VarCudaFunction.backward(ctx, gv)


VarFunction.op.add_device("cuda", VarCudaFunction)
StdFunction.op.add_device("cuda", StdCudaFunction)
