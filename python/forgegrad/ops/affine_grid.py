"""``F.affine_grid``: torch's sampling grid of a batch of affine maps, (N, 2, 3) for a 4-D size (N, C, H, W) ->
(N, H, W, 2), (N, 3, 4) for a 5-D size (N, C, D, H, W) -> (N, D, H, W, 3), differentiable in theta.

The grid is base @ theta^T over torch's base grid (x, y[, z], 1), whose axes are torch's ``linspace(-1, 1, n)``
(times (n - 1) / n without align_corners; a one-point axis is 0), computed as torch's CPU linspace computes them
(start + step * i for the first half, end - step * (n - 1 - i) for the second, each one fused multiply-add), so
that the points on pixel centres land on the same floats as torch's (grid_sample's floor / round see them).

ONNX: a MatMul of the constant base grid by theta^T (any batch size); at opset 20 and later a size whose image
sizes follow the input's shape becomes an AffineGrid node instead.
"""
from __future__ import annotations

import functools
import warnings
from fractions import Fraction

import numpy as np

from ..autograd import Function
from ..devices import MetaArray
from . import _samples as S
from .grid_sample import check_align_corners
from .registry import BadInput, Sample, register_op

_MAX_ELEMENTS = 2 ** 34  # a grid past this many values is a mistake in `size` (64 GiB of float32)


def _fma(a, b, c, dt):
    """a * b + c rounded once to dt (a, b, c of dt)."""
    if dt is np.float32:  # exact in float64: the product has at most 48 bits, the sum stays within 53
        return np.float32(np.float64(a) * np.float64(b) + np.float64(c))
    return np.float64(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


@functools.lru_cache(maxsize=128)
def axis_points(n: int, dtype_str: str, align_corners: bool) -> np.ndarray:
    """torch's linspace_from_neg_one(n, align_corners) in the given dtype."""
    dt = np.dtype(dtype_str).type
    if n <= 1:
        return np.zeros(1, dt)
    step = dt(dt(2) / dt(n - 1))
    half = n // 2
    r = np.array([_fma(step, dt(i), dt(-1), dt) if i < half else _fma(-step, dt(n - 1 - i), dt(1), dt)
                  for i in range(n)], dt)
    if not align_corners:
        r = ((r * dt(n - 1)).astype(dt) / dt(n)).astype(dt)
    r.flags.writeable = False
    return r


def base_grid(spatial, dtype, align_corners) -> np.ndarray:
    """(prod(spatial), d + 1): the points (x, y[, z], 1) in row-major order of spatial ((H, W) or (D, H, W))."""
    d = len(spatial)
    axes = [axis_points(n, np.dtype(dtype).str, bool(align_corners)) for n in spatial]
    mesh = np.meshgrid(*axes, indexing="ij")  # ordered like spatial: z, y, x
    cols = [m.reshape(-1) for m in mesh[::-1]] + [np.ones(int(np.prod(spatial)), dtype)]
    return np.stack(cols, axis=1).astype(dtype, copy=False).reshape(-1, d + 1)


def resolve(theta, size, align_corners=None):
    """torch's checks; returns (size as a tuple of ints, align_corners as a bool)."""
    ac = check_align_corners(align_corners, "affine_grid")
    if np.dtype(theta.dtype) not in (np.float32, np.float64):
        raise ValueError(f"affine_grid: theta must be a float32 or float64 tensor, got dtype {theta.dtype}")
    if not isinstance(size, (tuple, list)) or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) for s in size):
        raise TypeError(f"affine_grid: size must be a tuple or list of ints (N, C, H, W) or (N, C, D, H, W), got "
                        f"{size!r}")
    size = tuple(int(s) for s in size)
    if len(size) == 4:
        if theta.ndim != 3 or tuple(theta.shape[1:]) != (2, 3):
            raise ValueError(f"affine_grid: theta must be a batch of 2-D affine matrices of shape (N, 2, 3) for size "
                             f"{size}, got shape {tuple(theta.shape)}")
    elif len(size) == 5:
        if theta.ndim != 3 or tuple(theta.shape[1:]) != (3, 4):
            raise ValueError(f"affine_grid: theta must be a batch of 3-D affine matrices of shape (N, 3, 4) for size "
                             f"{size}, got shape {tuple(theta.shape)}")
    else:
        raise NotImplementedError(f"affine_grid: size must be 4-D (N, C, H, W) or 5-D (N, C, D, H, W), got size "
                                  f"{size}")
    spatial = size[2:]
    if ac and min(spatial) == 1:
        warnings.warn("Since version 1.3.0, affine_grid behavior has changed for unit-size grids when "
                      "align_corners=True. This is not an intended use case of affine_grid. See the documentation "
                      "of affine_grid for details.", stacklevel=4)
    if min(size) <= 0:
        raise ValueError(f"affine_grid: size must be positive, got {size}")
    if theta.shape[0] != size[0]:
        raise ValueError(f"affine_grid: theta's batch size {theta.shape[0]} must equal size[0] = {size[0]}")
    if size[0] * int(np.prod(spatial, dtype=object)) * len(spatial) > _MAX_ELEMENTS:
        raise ValueError(f"affine_grid: size {size} asks for a grid of more than {_MAX_ELEMENTS} values")
    return size, ac


def _meta(theta, size, align_corners=None):
    size, _ = resolve(theta, size, align_corners)
    return MetaArray((size[0],) + size[2:] + (len(size) - 2,), theta.dtype)


def _flops(out, inputs, kwargs):
    """(d + 1) multiply-adds per grid value."""
    return 2 * (out.shape[-1] + 1) * int(np.prod(out.shape))


def _double_backward_rule(ctx, args, kwargs, g):
    """The backward is linear in g: g^T @ base, with Tensor ops (base the forward's constant)."""
    from ..tensor import Tensor
    base = Tensor._wrap_exact(ctx.base)
    d = g.shape[-1]
    return (g.reshape(g.shape[0], -1, d).transpose(1, 2) @ base,) + (None,) * (len(args) - 1)


@register_op("affine_grid", meta=_meta, flops=_flops, samples=lambda: _samples(),
             torch=lambda torch, theta, **kw: torch.nn.functional.affine_grid(theta, **kw),
             bad_inputs=lambda: _bad_inputs(), differentiable_backward=_double_backward_rule)
class AffineGridFunction(Function):
    """torch.nn.functional.affine_grid (see the module docstring)."""

    @staticmethod
    def forward(ctx, theta, size, align_corners=None):
        size, ac = resolve(theta, size, align_corners)
        base = base_grid(size[2:], theta.dtype, ac)
        ctx.base = base
        grid = np.matmul(base[None], np.swapaxes(theta, 1, 2))  # (N, S, d)
        return np.ascontiguousarray(grid.reshape((size[0],) + size[2:] + (len(size) - 2,)))

    @staticmethod
    def backward(ctx, g):
        base = ctx.base
        d = g.shape[-1]
        gf = g.reshape(g.shape[0], -1, d)
        return (np.matmul(np.swapaxes(gf, 1, 2), base[None]).astype(base.dtype, copy=False),)


AffineGridFunction.op.float64 = AffineGridFunction  # numpy in theta's dtype


def affine_grid(theta, size, align_corners=None):
    """``torch.nn.functional.affine_grid`` (see forgegrad.ops.affine_grid)."""
    from ..nn.functional_conv import _t
    return AffineGridFunction.op(_t(theta, "theta"), size=size, align_corners=align_corners)


AffineGridFunction.op.functional = affine_grid


# ---- ONNX ---------------------------------------------------------------------------------------------------------
def _onnx(ctx, op):
    from ..onnx._context import scalar_of
    theta_arr = op.args["theta"]
    size, ac = resolve(theta_arr, op.attr("size"), op.attr("align_corners", False))
    traced = [tuple(v) if v is not None else (None,) * len(size)
              for v in (op.attr("size"), op.attr_b("size"), op.attr_c("size"))]
    dims = [scalar_of(a, b, c) for a, b, c in zip(*traced)]
    theta = op.input("theta")
    d = len(size) - 2
    if not all(isinstance(v, (int, np.integer)) for v in dims[2:]):
        if ctx.opset < 20:
            raise op.unsupported("affine_grid with image sizes that follow the input's shape needs ONNX opset 20 or "
                                 f"later (AffineGrid), exporting at opset {ctx.opset}; export with static image sizes")
        return [ctx.node("AffineGrid", [theta, ctx.shape_tensor(dims, "affine_grid's size")], align_corners=int(ac))]
    base = ctx.const(base_grid(size[2:], theta_arr.dtype, ac), theta_arr.dtype)
    grid = ctx.node("MatMul", [base, ctx.node("Transpose", [theta], perm=[0, 2, 1])])
    return [ctx.node("Reshape", [grid, ctx.ints([-1, *size[2:], d])])]


AffineGridFunction.op.onnx = _onnx


# ---- samples -----------------------------------------------------------------------------------------------------
def _theta(n, rows, seed):
    t = S.rand(n, rows, rows + 1, seed=seed, low=-0.3, high=0.3)
    t[:, :, :rows] += np.eye(rows, dtype=np.float32)
    return t


def _samples():
    return [Sample((_theta(2, 2, 0),), {"size": (2, 3, 5, 7), "align_corners": False}, "2-D"),
            Sample((_theta(3, 2, 1),), {"size": [3, 1, 4, 1], "align_corners": True}, "2-D align_corners, width 1"),
            Sample((_theta(1, 2, 2),), {"size": (1, 2, 1, 6), "align_corners": False}, "2-D height 1"),
            Sample((_theta(2, 3, 3),), {"size": (2, 1, 3, 4, 5), "align_corners": False}, "3-D"),
            Sample((_theta(1, 3, 4),), {"size": (1, 2, 2, 5, 3), "align_corners": True}, "3-D align_corners"),
            Sample((_theta(4, 2, 5),), {"size": (4, 3, 33, 47), "align_corners": False}, "large 2-D")]


def _bad_inputs():
    t2, t3 = _theta(2, 2, 0), _theta(2, 3, 0)
    kw = {"align_corners": False}
    return [BadInput((t3,), {"size": (2, 3, 5, 7), **kw}, ValueError, "theta"),
            BadInput((t2,), {"size": (2, 1, 3, 4, 5), **kw}, ValueError, "theta"),
            BadInput((t2,), {"size": (2, 3, 5), **kw}, NotImplementedError, "size"),
            BadInput((t2,), {"size": (2, 3, 0, 7), **kw}, ValueError, "size"),
            BadInput((t2,), {"size": (3, 3, 5, 7), **kw}, ValueError, "batch size"),
            BadInput((t2,), {"size": (2, 3, 5.0, 7), **kw}, TypeError, "size"),
            BadInput((t2,), {"size": (2, 3, 5, 7), "align_corners": 1}, TypeError, "align_corners"),
            BadInput((t2.astype(np.int64),), {"size": (2, 3, 5, 7), **kw}, ValueError, "theta")]
