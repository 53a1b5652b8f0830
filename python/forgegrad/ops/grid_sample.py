"""``F.grid_sample``: torch's sampling of a 4-D (N, C, H, W) input at the points of an (N, Ho, Wo, 2) grid (modes
bilinear, nearest, bicubic) or of a 5-D (N, C, D, H, W) input at an (N, Do, Ho, Wo, 3) grid (bilinear, nearest),
padding zeros, border or reflection, align_corners as torch: its argument checks, its coordinates, its clipping
and reflection, its gradients for the input and the grid (nearest: a zero grid gradient, as torch's).

Kernels: float32 4-D bilinear / nearest run forgegrad._C.grid_sample (cpp/kernels/per_isa/grid_sample.cpp, every
result bit-identical at any thread count); the rest runs the numpy reference (_grid_sample_math, which says where
torch's 4-D and 5-D kernels differ and follows each), in the input's dtype (float64 too).

ONNX: one GridSample node (from opset 16; 4-D only below opset 20, where its modes are named linear / cubic and it
takes 5-D inputs too).
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import _C
from ..autograd import Function
from ..devices import MetaArray
from . import _grid_sample_math as M
from . import _samples as S
from .registry import BadInput, Sample, register_op

INTERPOLATION_MODES = {"bilinear": 0, "nearest": 1, "bicubic": 2}  # torch's F.GRID_SAMPLE_INTERPOLATION_MODES
PADDING_MODES = {"zeros": 0, "border": 1, "reflection": 2}  # torch's F.GRID_SAMPLE_PADDING_MODES

_AC_WARNING = ("Default grid_sample and affine_grid behavior has changed to align_corners=False since 1.3.0. Please "
               "specify align_corners=True if the old behavior is desired. See the documentation of grid_sample for "
               "details.")


def check_align_corners(align_corners, fn: str) -> bool:
    """torch's rule: a bool, or None (False, with torch's warning)."""
    if align_corners is None:
        warnings.warn(_AC_WARNING, stacklevel=4)
        return False
    if not isinstance(align_corners, (bool, np.bool_)):
        raise TypeError(f"{fn}: align_corners must be a bool or None, got {type(align_corners).__name__} "
                        f"{align_corners!r}")
    return bool(align_corners)


def resolve(x, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """torch's checks on (input, grid, mode, padding_mode, align_corners), in torch's order; returns
    (mode, padding_mode, align_corners as a bool). ``x`` and ``grid`` need only shape and dtype (meta arrays too)."""
    if not isinstance(mode, str) or mode not in INTERPOLATION_MODES:
        raise ValueError(f"grid_sample: mode must be 'bilinear', 'nearest' or 'bicubic', got {mode!r}")
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"grid_sample: padding_mode must be 'zeros', 'border' or 'reflection', got {padding_mode!r}")
    ac = check_align_corners(align_corners, "grid_sample")
    for name, a in (("input", x), ("grid", grid)):
        if np.dtype(a.dtype) not in (np.float32, np.float64):
            raise TypeError(f"grid_sample: {name} must be a float32 or float64 tensor, got dtype {a.dtype}")
    if x.dtype != grid.dtype:
        raise TypeError(f"grid_sample: input and grid must have the same dtype, got input {x.dtype} and grid "
                        f"{grid.dtype}")
    if x.ndim not in (4, 5):
        raise ValueError(f"grid_sample: input must be 4-D (N, C, H, W) or 5-D (N, C, D, H, W), got shape "
                         f"{tuple(x.shape)}")
    if grid.ndim != x.ndim:
        raise ValueError(f"grid_sample: grid must have as many dimensions as input ({x.ndim}), got grid of shape "
                         f"{tuple(grid.shape)} for input of shape {tuple(x.shape)}")
    if grid.shape[0] != x.shape[0]:
        raise ValueError(f"grid_sample: grid and input must have the same batch size, got input of shape "
                         f"{tuple(x.shape)} and grid of shape {tuple(grid.shape)}")
    if grid.shape[-1] != x.ndim - 2:
        raise ValueError(f"grid_sample: grid's last dimension must be {x.ndim - 2} (the coordinates of a point in "
                         f"{x.ndim - 2}-D), got grid of shape {tuple(grid.shape)}")
    if min(x.shape[2:]) < 1:
        raise ValueError(f"grid_sample: input must have non-empty spatial dimensions, got shape {tuple(x.shape)}")
    if x.ndim == 5 and mode == "bicubic":
        raise ValueError("grid_sample: mode 'bicubic' only supports 4-D inputs, got a 5-D input of shape "
                         f"{tuple(x.shape)}")
    return mode, padding_mode, ac


def _kernel(x, mode):
    """forgegrad._C.grid_sample where it serves (float32 4-D bilinear / nearest), else None."""
    if x.dtype != np.float32 or x.ndim != 4 or mode == "bicubic" or x.shape[2] * x.shape[3] >= 2 ** 31:
        return None  # (the kernel's offsets within a plane are int32)
    return getattr(_C, "grid_sample", None)


def _meta(x, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    resolve(x, grid, mode, padding_mode, align_corners)
    return MetaArray(tuple(x.shape[:2]) + tuple(grid.shape[1:-1]), x.dtype)


def _flops(out, inputs, kwargs):
    """A multiply-add per corner (bicubic: 16 taps and 4 row sums) and output element; nearest: none."""
    x = inputs[0]
    mode = kwargs.get("mode", inputs[2] if len(inputs) > 2 else "bilinear")
    taps = {"bilinear": 2 ** (x.ndim - 2), "bicubic": 20}.get(mode, 0)
    return 2 * taps * int(np.prod(out.shape))


def _torch(torch, input, grid, **kw):
    return torch.nn.functional.grid_sample(input, grid, **kw)


@register_op("grid_sample", meta=_meta, flops=_flops, samples=lambda: _samples(), torch=_torch,
             bad_inputs=lambda: _bad_inputs(), tol=(2e-5, 2e-5))
class GridSampleFunction(Function):
    """torch.nn.functional.grid_sample (see the module docstring)."""

    @staticmethod
    def forward(ctx, input, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
        mode, padding, ac = resolve(input, grid, mode, padding_mode, align_corners)
        ctx.args = (mode, padding, ac)
        ctx.save_for_backward(input, grid)
        k = _kernel(input, mode)
        if k is None:
            return M.forward(input, grid, mode, padding, ac)
        x, g = np.ascontiguousarray(input), np.ascontiguousarray(grid)
        y = np.empty(x.shape[:2] + g.shape[1:3], np.float32)
        k.grid_sample2d_forward(x, g, INTERPOLATION_MODES[mode], PADDING_MODES[padding], ac, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, grid = ctx.saved_tensors
        mode, padding, ac = ctx.args
        need_x, need_grid = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        k = _kernel(x, mode)
        if k is None:
            return M.backward(x, grid, g, mode, padding, ac, need_x, need_grid)
        x, grid = np.ascontiguousarray(x), np.ascontiguousarray(grid)
        gx = np.empty(x.shape, np.float32) if need_x else None
        gg = np.empty(grid.shape, np.float32) if need_grid else None
        k.grid_sample2d_backward(np.ascontiguousarray(g, np.float32), x, grid, INTERPOLATION_MODES[mode],
                                 PADDING_MODES[padding], ac, gx, gg)
        return gx, gg


GridSampleFunction.op.float64 = GridSampleFunction  # numpy in the input's dtype


def grid_sample(input, grid, mode: str = "bilinear", padding_mode: str = "zeros", align_corners=None):
    """``torch.nn.functional.grid_sample`` (see forgegrad.ops.grid_sample)."""
    from ..nn.functional_conv import _t
    return GridSampleFunction.op(_t(input, "input"), _t(grid, "grid"), mode=mode, padding_mode=padding_mode,
                                 align_corners=align_corners)


GridSampleFunction.op.functional = grid_sample


# ---- ONNX ---------------------------------------------------------------------------------------------------------
def _onnx(ctx, op):
    x_arr, g_arr = op.args["input"], op.args["grid"]
    mode, padding, ac = resolve(x_arr, g_arr, op.attr("mode", "bilinear"), op.attr("padding_mode", "zeros"),
                                op.attr("align_corners", False))
    if ctx.opset < 16:
        raise op.unsupported(f"grid_sample needs ONNX opset 16 or later (GridSample), exporting at opset {ctx.opset}")
    if x_arr.ndim == 5 and ctx.opset < 20:
        raise op.unsupported(f"grid_sample of a 5-D input needs ONNX opset 20 or later (GridSample is 4-D only "
                             f"before), exporting at opset {ctx.opset}")
    grid = op.input("grid")
    if padding == "zeros" or (padding == "border" and mode != "bicubic"):
        # onnxruntime's GridSample goes wrong past about 1e8 (its indices overflow); every point past +-8 lies as far
        # out as any other in these modes (all taps outside, or clamped to the border), so clamping there is exact
        bound = np.asarray(_GRID_BOUND, np.dtype(g_arr.dtype))
        grid = ctx.node("Clip", [grid, ctx.const(-bound, dtype=bound.dtype), ctx.const(bound, dtype=bound.dtype)])
    if ctx.opset >= 20:
        mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    return [ctx.node("GridSample", [op.input("input"), grid], mode=mode, padding_mode=padding,
                     align_corners=int(ac))]


_GRID_BOUND = 8.0


GridSampleFunction.op.onnx = _onnx


# ---- samples -----------------------------------------------------------------------------------------------------
def _grid(*shape, seed, reach=1.25):
    """Points over the image and past its borders (uniform in [-reach, reach])."""
    return S.rand(*shape, seed=seed, low=-reach, high=reach)


def _samples():
    x = S.rand(2, 3, 5, 7)
    g = _grid(2, 4, 6, 2, seed=1)
    x5, g5 = S.rand(2, 2, 3, 4, 5, seed=4), _grid(2, 2, 3, 4, 3, seed=5)
    no_onnx5 = " (5-D: GridSample is 4-D only below opset 20)"
    return [
        Sample((x, g), {"mode": "bilinear", "padding_mode": "zeros", "align_corners": False}, "bilinear zeros"),
        Sample((x, g), {"mode": "bilinear", "padding_mode": "reflection", "align_corners": True},
               "bilinear reflection align_corners"),
        Sample((x, g), {"mode": "nearest", "padding_mode": "border", "align_corners": True}, "nearest border ac"),
        Sample((x, _grid(2, 3, 5, 2, seed=2, reach=2.5)), {"mode": "nearest", "padding_mode": "reflection",
                                                           "align_corners": False}, "nearest reflection far"),
        Sample((x, g), {"mode": "bicubic", "padding_mode": "zeros", "align_corners": True}, "bicubic zeros ac"),
        Sample((S.rand(1, 2, 4, 3, seed=3), _grid(1, 5, 2, 2, seed=6, reach=2.0)),
               {"mode": "bicubic", "padding_mode": "reflection", "align_corners": False}, "bicubic reflection"),
        Sample((x5, g5), {"mode": "bilinear", "padding_mode": "border", "align_corners": False},
               "5-D bilinear border" + no_onnx5, onnx=False),
        Sample((x5, g5), {"mode": "nearest", "padding_mode": "zeros", "align_corners": True},
               "5-D nearest zeros ac" + no_onnx5, onnx=False),
        Sample((S.rand(2, 4, 40, 48, seed=7), _grid(2, 33, 37, 2, seed=8)),
               {"mode": "bilinear", "padding_mode": "border", "align_corners": False}, "large bilinear border"),
    ]


def _bad_inputs():
    x, g = S.rand(2, 3, 5, 7), _grid(2, 4, 6, 2, seed=1)
    kw = {"align_corners": False}
    return [BadInput((x, _grid(2, 4, 6, 3, seed=1)), kw, ValueError, "grid's last dimension"),
            BadInput((x, _grid(3, 4, 6, 2, seed=1)), kw, ValueError, "batch size"),
            BadInput((x, g), {"mode": "linear", **kw}, ValueError, "mode"),
            BadInput((x, g), {"padding_mode": "constant", **kw}, ValueError, "padding_mode"),
            BadInput((x, g), {"align_corners": "yes"}, TypeError, "align_corners"),
            BadInput((S.rand(2, 3, 5), g), kw, ValueError, "input"),
            BadInput((x, _grid(2, 4, 6, 2, 2, seed=1)), kw, ValueError, "grid"),
            BadInput((S.rand(2, 1, 3, 4, 5), _grid(2, 2, 2, 2, 3, seed=1)), {"mode": "bicubic", **kw}, ValueError,
                     "bicubic"),
            BadInput((S.rand(2, 3, 0, 7), g), kw, ValueError, "non-empty"),
            BadInput((x, g.astype(np.int64)), kw, TypeError, "grid")]
