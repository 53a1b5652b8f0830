"""``F.interpolate``: torch's resampling of 3-D (N, C, L), 4-D (N, C, H, W) and 5-D (N, C, D, H, W) inputs, modes
nearest, nearest-exact, linear, bilinear, bicubic, trilinear, area and lanczos, with torch's arguments (size or
scale_factor, align_corners, recompute_scale_factor, antialias for bilinear / bicubic / lanczos), its output sizes
and its source coordinates, computed as torch's CPU kernels compute them (nearest in float32 whatever the input's
dtype, the others in the input's dtype; linear axes whose size does not change are copied, as torch's kernel does).
area (adaptive average pooling to the output size, as torch computes it) and the antialiased filters (lanczos is
antialiased only) build their maps in _resample_modes.py.

The op is separable: each resized axis is an :class:`~forgegrad.ops._resample_maps.AxisMap` (which input
positions, with which weights, make each output position), built once per (sizes, scale, mode) and cached; the
forward applies them axis by axis, the backward applies their transposes in a fixed order (see _resample_maps for
the order; float32 4-D maps of at most two taps run the C++ kernel forgegrad._C.resample there, numpy the rest).

Differences from torch, on purpose: torch's 2-D nearest kernels copy an axis whose size does not change and
take i // 2 on one that doubles, whatever the scale_factor (1.1 and 2.1 give those sizes too), and forgegrad does
the same; its 1-D and 3-D nearest forwards do not, but their backwards do, so there torch's gradient is not the
gradient of its forward. Likewise torch's antialiased forward copies an axis whose size does not change, but its
backward resamples it with the scale_factor's filter. forgegrad's gradients are those of the forward (torch's
forward) in every case.

ONNX: one Resize node (coordinate_transformation_mode asymmetric + floor for nearest, half_pixel +
round_prefer_ceil for nearest-exact, half_pixel or align_corners for linear (trilinear too) and cubic with
cubic_coeff_a -0.75; antialias=True: antialias=1 at opset 18+, _resample_modes.onnx_antialias; area: the adaptive
average pools' nodes, _resample_modes.onnx_area);
a scale_factor becomes Resize's scales, so the graph takes any image size (a nearest scale_factor that is not an
integer becomes torch's own index formula, computed from the input's shape and gathered: Resize's float
coordinates round differently there); a size (or a recomputed scale factor)
becomes its sizes, computed from the input's shape where it follows it (``size=skip.shape[2:]``, a recomputed
scale factor: floor(in * s) in double, as torch's Python computes it).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..autograd import Function
from ..devices import MetaArray
from . import _samples as S
from ._resample_maps import AxisMap, apply, adjoint, linear_rule
from ._resample_modes import aa_map, area_map, onnx_antialias, onnx_area
from .registry import BadInput, Sample, register_op

MODES = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area", "lanczos")
_RANK = {"linear": 3, "bilinear": 4, "bicubic": 4, "trilinear": 5, "lanczos": 4}  # the interpolating modes' ranks
_LINEAR = ("linear", "bilinear", "trilinear")
_CUBIC_A = -0.75


class InterpolateRankError(ValueError, NotImplementedError):
    """An input rank the mode does not take: torch raises NotImplementedError, forgegrad's earlier releases
    ValueError; this is both."""


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _per_axis(value, dims: int, name: str, in_spatial):
    """A number, or a tuple/list with one entry per spatial axis, as a tuple of ``dims`` entries."""
    if isinstance(value, (tuple, list)):
        if len(value) != dims:
            raise ValueError(f"interpolate: {name} must have one entry per spatial dimension of input (input has "
                             f"spatial dimensions {list(in_spatial)}), got {name}={tuple(value)}")
        return tuple(value)
    return (value,) * dims


def resolve(shape, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None,
            antialias=False):
    """torch.nn.functional.interpolate's argument rules: (output spatial sizes, the scales the kernel's
    coordinates use (None per axis: in / out), mode, align_corners as a bool). Raises naming the argument."""
    if mode not in MODES:
        raise ValueError(f"interpolate: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if len(shape) not in (3, 4, 5):
        raise InterpolateRankError(f"interpolate: input must be 3-D (N, C, L), 4-D (N, C, H, W) or 5-D "
                                   f"(N, C, D, H, W), got a {len(shape)}-D input of shape {tuple(shape)} (mode "
                                   f"{mode!r})")
    want = _RANK.get(mode)
    if want is not None and len(shape) != want:
        raise InterpolateRankError(f"interpolate: mode {mode!r} needs a {want}-D input, got input of shape "
                                   f"{tuple(shape)}")
    if antialias not in (False, None, np.False_, True, np.True_):
        raise TypeError(f"interpolate: antialias must be a bool, got {antialias!r}")
    if mode in ("nearest", "nearest-exact", "area"):
        if align_corners is not None:
            raise ValueError("interpolate: align_corners option can only be set with the interpolating modes: "
                             f"linear | bilinear | bicubic | trilinear (got mode {mode!r}, "
                             f"align_corners={align_corners!r})")
        align_corners = False
    elif align_corners is None:
        align_corners = False
    elif not isinstance(align_corners, (bool, np.bool_)):
        raise TypeError(f"interpolate: align_corners must be a bool or None, got {align_corners!r}")
    if recompute_scale_factor is not None and not isinstance(recompute_scale_factor, (bool, np.bool_)):
        raise TypeError(f"interpolate: recompute_scale_factor must be a bool or None, got {recompute_scale_factor!r}")
    dims, spatial = len(shape) - 2, tuple(shape[2:])
    if size is not None and scale_factor is not None:
        raise ValueError("interpolate: only one of size or scale_factor should be defined, got both "
                         f"size={size!r} and scale_factor={scale_factor!r}")
    if size is None and scale_factor is None:
        raise ValueError("interpolate: either size or scale_factor should be defined")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("interpolate: recompute_scale_factor is not meaningful with an explicit size")
        out = _per_axis(size, dims, "size", spatial)
        if not all(_is_int(s) for s in out):
            raise TypeError(f"interpolate: size must be an int or a tuple of ints, got {size!r}")
        out, scales = tuple(int(s) for s in out), (None,) * dims
    else:
        scales = _per_axis(scale_factor, dims, "scale_factor", spatial)
        if not all(isinstance(s, (int, float, np.integer, np.floating)) and not isinstance(s, (bool, np.bool_))
                   for s in scales):
            raise TypeError(f"interpolate: scale_factor must be a number or a tuple of numbers, got {scale_factor!r}")
        scales = tuple(float(s) for s in scales)
        if not all(math.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f"interpolate: scale_factor must be positive and finite, got {scale_factor!r}")
        out = tuple(int(math.floor(float(n) * s)) for n, s in zip(spatial, scales))
        if recompute_scale_factor or mode == "area":  # torch recomputes area's (adaptive pooling has no scale)
            scales = (None,) * dims
    if antialias and not (mode in ("bilinear", "bicubic", "lanczos") and len(shape) == 4):
        raise ValueError(f"interpolate: antialias=True is restricted to the bilinear, bicubic and lanczos modes and "
                         f"requires a 4-D input, got mode {mode!r} and input of shape {tuple(shape)}")
    if mode == "lanczos":
        if align_corners:
            raise ValueError("interpolate: mode 'lanczos' does not support align_corners=True")
        if not antialias:
            raise ValueError("interpolate: mode 'lanczos' requires antialias=True")
    if min(spatial) < 1 or min(out) < 1:
        raise ValueError(f"interpolate: input and output sizes should be greater than 0, but got input "
                         f"(spatial sizes) {list(spatial)} and output {list(out)} (size={size!r}, "
                         f"scale_factor={scale_factor!r})")
    return out, scales, mode, bool(align_corners)


# ---- the per-axis maps, as torch's CPU kernels compute their coordinates ----------------------------------------
def _area_scale(dt, n_in, n_out, align_corners, scale):
    """area_pixel_compute_scale in dtype dt."""
    if align_corners:
        return dt(n_in - 1) / dt(n_out - 1) if n_out > 1 else dt(0)
    if scale is not None and scale > 0:
        return dt(1.0 / scale)
    return dt(n_in) / dt(n_out)


@functools.lru_cache(maxsize=256)
def axis_map(mode, n_in, n_out, align_corners, scale, dtype_str, rank=4) -> AxisMap:
    dt = np.dtype(dtype_str).type
    j = np.arange(n_out)
    if mode == "nearest" and rank == 4 and n_out in (n_in, 2 * n_in):
        return AxisMap(n_in, (j if n_out == n_in else j >> 1)[None])  # torch's 2-D kernel's shortcuts
    if mode in ("nearest", "nearest-exact"):  # float32 coordinates for every dtype, as torch's
        s32 = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(n_in) / np.float32(n_out)
        if mode == "nearest":
            src = np.floor(j.astype(np.float32) * s32)
        else:  # (j + 0.5) is a double in torch's formula, rounded to float by floorf
            src = np.floor(((j + 0.5) * np.float64(s32)).astype(np.float32))
        return AxisMap(n_in, np.minimum(src.astype(np.int64), n_in - 1)[None])
    if mode in _LINEAR and n_in == n_out:  # torch's linear kernels copy such an axis
        return AxisMap(n_in, j[None])
    s = _area_scale(dt, n_in, n_out, align_corners, scale)
    jf = j.astype(dt)
    src = s * jf if align_corners else s * (jf + dt(0.5)) - dt(0.5)
    cubic = mode == "bicubic"
    if not cubic and not align_corners:
        src = np.maximum(src, dt(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    t = np.clip(src - i0.astype(dt), dt(0), dt(1)).astype(dt)
    if not cubic:
        i1 = i0 + (i0 < n_in - 1)
        return AxisMap(n_in, np.stack([i0, i1]), np.stack([dt(1) - t, t]).astype(dt))
    a = dt(_CUBIC_A)

    def conv1(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def conv2(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    w = np.stack([conv2(t + 1), conv1(t), conv1(1 - t), conv2(2 - t)]).astype(dt)
    idx = np.clip(i0[None] + np.arange(-1, 3)[:, None], 0, n_in - 1)
    return AxisMap(n_in, idx, w)


def maps_for(shape, dtype, size=None, scale_factor=None, mode="nearest", align_corners=None,
             recompute_scale_factor=None, antialias=False):
    out, scales, mode, ac = resolve(shape, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias)
    dtype = np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float32)
    ndim = len(shape)

    def one(n_in, n_out, scale):
        if mode == "area":
            return area_map(n_in, n_out, dtype.str)
        if antialias or mode == "lanczos":
            return aa_map(mode, n_in, n_out, float(_area_scale(dtype.type, n_in, n_out, ac, scale)), dtype.str)
        return axis_map(mode, n_in, n_out, ac, scale, dtype.str, ndim)

    # last axis first: the width sum inside the height sum, as torch's kernels
    return [(ndim - 1 - k, one(shape[ndim - 1 - k], out[-1 - k], scales[-1 - k])) for k in range(len(out))]


def _check_input(x):
    if x.dtype.kind not in "fiub":
        raise TypeError(f"interpolate: input must be a real tensor, got dtype {x.dtype}")


def _meta(x, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None,
          antialias=False):
    out = resolve(x.shape, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias)[0]
    return MetaArray(tuple(x.shape[:2]) + out, x.dtype)


def _flops(out, inputs, kwargs):
    """A multiply-add per tap and output element of each resized axis (nearest: none)."""
    x = inputs[0]
    names = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias")
    kw = dict(zip(names, inputs[1:]), **kwargs)
    if kw.get("mode", "nearest") in ("nearest", "nearest-exact"):
        return 0
    total, shape = 0, list(x.shape)
    for axis, m in maps_for(x.shape, x.dtype, **kw):
        shape[axis] = m.n_out
        total += 0 if m.is_identity() else 2 * m.taps * int(np.prod(shape))
    return total


@register_op("interpolate", meta=_meta, flops=_flops,
             samples=lambda: _samples(), torch=lambda torch, x, **kw: torch.nn.functional.interpolate(x, **kw),
             bad_inputs=lambda: _bad_inputs(), differentiable_backward=linear_rule, tol=(2e-5, 2e-5))
class InterpolateFunction(Function):
    """torch.nn.functional.interpolate (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
        _check_input(x)
        if mode not in ("nearest", "nearest-exact") and x.dtype.kind != "f":
            raise TypeError(f"interpolate: mode {mode!r} needs a floating-point input, got dtype {x.dtype}")
        maps = maps_for(x.shape, x.dtype, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias)
        ctx.maps = maps
        return apply(x, maps)

    @staticmethod
    def backward(ctx, g):
        return adjoint(g, ctx.maps)


InterpolateFunction.op.float64 = InterpolateFunction  # numpy in the input's dtype


def interpolate(input, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                recompute_scale_factor=None, antialias: bool = False):
    """``torch.nn.functional.interpolate`` for 3-D, 4-D and 5-D inputs (see forgegrad.ops.resample)."""
    from ..nn.functional_conv import _t
    return InterpolateFunction.op(_t(input, "input"), size=size, scale_factor=scale_factor, mode=mode,
                                  align_corners=align_corners, recompute_scale_factor=recompute_scale_factor,
                                  antialias=antialias)


InterpolateFunction.op.functional = interpolate


# ---- ONNX ---------------------------------------------------------------------------------------------------------
def _torch_sizes(ctx, x, axes, scales):
    """floor(in * s) of x's ``axes`` in double, as torch's Python computes an output size (1-D int64)."""
    spatial = ctx.node("Gather", [ctx.node("Shape", [x]), ctx.ints(axes)], axis=0)
    ctx.dtypes[spatial] = np.dtype(np.int64)
    prod = ctx.node("Mul", [ctx.cast(spatial, np.float64), ctx.const(np.asarray(scales, np.float64), np.float64)])
    return ctx.node("Cast", [ctx.node("Floor", [prod])], to=7)  # INT64


def _onnx_scales(ctx, op, x, attrs, out, scales, mode):
    """Resize by scales, which takes any image size (the linear modes; nearest by an integer factor). Where torch's
    linear kernels copy an axis (an unchanged size) the scale is made exactly 1; a scale float32 cannot hold is
    rounded up and the output sliced to torch's size (floor(in * s) in double: onnxruntime and onnx's shape
    inference compute it in float)."""
    spatial = op.args["x"].shape[2:]
    dynamic = [not isinstance(d, (int, np.integer)) for d in op.in_dims("x")[2:]]
    eff, slices = [], []
    for k, (s, n, o) in enumerate(zip(scales, spatial, out)):
        e = 1.0 if mode in _LINEAR and o == n else s
        if e != s and dynamic[k]:
            raise op.unsupported(f"interpolate with scale_factor {s} keeps the size {n} of an axis, which torch's "
                                 "linear kernels then copy, a shortcut that depends on the size; export with static "
                                 "image sizes, or a scale_factor of exactly 1 there")
        f = np.float32(e)
        if float(f) != e:
            f = np.nextafter(f, np.float32(np.inf)) if float(f) < e else f
            slices.append(k)
        eff.append(f)
    y = ctx.node("Resize", [x, "", ctx.const(np.asarray([1.0, 1.0] + eff, np.float32), exact=True)], **attrs)
    if slices:
        axes = [2 + k for k in slices]
        if any(dynamic[k] for k in slices):
            ends = _torch_sizes(ctx, x, axes, [scales[k] for k in slices])
        else:
            ends = ctx.ints([out[k] for k in slices])
        y = ctx.node("Slice", [y, ctx.ints([0] * len(axes)), ends, ctx.ints(axes)])
    return [y]


def _onnx_nearest_gather(ctx, op, x, scales, mode):
    """Nearest resampling by a non-integer scale_factor as torch computes it, at any image size: per axis the
    source index min(floor(j * float32(1 / s)), in - 1) (nearest-exact: (j + 0.5) in double), with torch's 2-D
    shortcuts (an unchanged size copied, a doubled one i // 2), gathered. Resize's float coordinates j / s round
    differently where j / s is an integer."""
    rank = op.args["x"].ndim
    y = x
    for k, s in enumerate(scales):
        axis = 2 + k
        n = ctx.node("Gather", [ctx.node("Shape", [x]), ctx.ints([axis])], axis=0)
        o = _torch_sizes(ctx, x, [axis], [s])
        j = ctx.node("Range", [ctx.const(np.int64(0)), ctx.squeeze(o, [0]), ctx.const(np.int64(1))])
        s32 = np.float32(1.0 / s)
        if mode == "nearest":
            src = ctx.node("Mul", [ctx.node("Cast", [j], to=1), ctx.const(np.float32(s32))])
        else:
            half = ctx.node("Add", [ctx.node("Cast", [j], to=11), ctx.const(np.float64(0.5), np.float64)])
            src = ctx.node("Cast", [ctx.node("Mul", [half, ctx.const(np.float64(s32), np.float64)])], to=1)
        idx = ctx.node("Min", [ctx.node("Cast", [ctx.node("Floor", [src])], to=7),
                               ctx.node("Sub", [n, ctx.ints([1])])])
        if mode == "nearest" and rank == 4:
            halved = ctx.node("Div", [j, ctx.const(np.int64(2))])
            doubled = ctx.node("Equal", [o, ctx.node("Mul", [n, ctx.ints([2])])])
            idx = ctx.node("Where", [ctx.node("Equal", [o, n]), j, ctx.node("Where", [doubled, halved, idx])])
        y = ctx.node("Gather", [y, idx], axis=axis)
    return [y]


def _onnx(ctx, op):
    x_arr = op.args["x"]
    out, scales, mode, ac = resolve(x_arr.shape, op.attr("size"), op.attr("scale_factor"), op.attr("mode", "nearest"),
                                    op.attr("align_corners"), op.attr("recompute_scale_factor"),
                                    op.attr("antialias", False))
    x = op.input("x")
    if mode == "area":
        return onnx_area(ctx, op, x, x_arr.shape[2:], out)
    if op.attr("antialias", False):
        return onnx_antialias(ctx, op, x, mode, x_arr.shape[2:], out, scales, ac)
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    if mode == "nearest-exact":
        attrs.update(coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil")
    elif mode != "nearest":
        attrs = {"mode": "linear" if mode != "bicubic" else "cubic",
                 "coordinate_transformation_mode": "align_corners" if ac else "half_pixel"}
        if mode == "bicubic":
            attrs.update(cubic_coeff_a=_CUBIC_A, exclude_outside=0)
    dims = len(out)
    if all(s is not None for s in scales):
        if mode in ("nearest", "nearest-exact") and not all(float(s).is_integer() for s in scales):
            return _onnx_nearest_gather(ctx, op, x, scales, mode)
        return _onnx_scales(ctx, op, x, attrs, out, scales, mode)
    nc = ctx.node("Slice", [ctx.node("Shape", [x]), ctx.ints([0]), ctx.ints([2]), ctx.ints([0])])
    if op.attr("size") is None:  # a recomputed scale factor: floor(in * s) in double, as torch's Python
        hw = _torch_sizes(ctx, x, list(range(2, 2 + dims)), _per_axis(op.attr("scale_factor"), dims, "", ()))
    else:  # a size that follows the input's sizes (size=skip.shape[2:]) is computed from them
        from ..onnx._context import scalar_of
        traced = [_per_axis(v, dims, "size", ()) if v is not None else (None,) * dims
                  for v in (op.attr("size"), op.attr_b("size"), op.attr_c("size"))]
        hw = ctx.shape_tensor([scalar_of(a, b, c) for a, b, c in zip(*traced)], "interpolate's size")
    sizes = ctx.node("Concat", [nc, hw], axis=0)
    return [ctx.node("Resize", [x, "", "", sizes], **attrs)]


InterpolateFunction.op.onnx = _onnx


# ---- samples -----------------------------------------------------------------------------------------------------
def _samples():
    x4, x3 = S.rand(2, 3, 5, 7), S.rand(2, 3, 7, seed=1)
    one = S.rand(1, 2, 4, 3, seed=2)
    out = []
    for mode in ("nearest", "nearest-exact"):
        out += [Sample((x4,), {"scale_factor": 2.0, "mode": mode}, f"{mode} x2"),
                Sample((x4,), {"scale_factor": (1.5, 3.0), "mode": mode}, f"{mode} x(1.5, 3)"),
                Sample((x4,), {"size": (3, 4), "mode": mode}, f"{mode} size (3, 4), down"),
                Sample((x3,), {"size": 11, "mode": mode}, f"{mode} 3-D size 11"),
                Sample((one,), {"scale_factor": 3, "mode": mode}, f"{mode} batch 1 x3")]
    out += [Sample((x3,), {"scale_factor": 1.5, "mode": "linear"}, "linear x1.5"),
            Sample((x3,), {"size": 4, "mode": "linear", "align_corners": True}, "linear size 4 align_corners"),
            Sample((x3,), {"size": 1, "mode": "linear"}, "linear to 1")]
    for mode in ("bilinear", "bicubic"):
        out += [Sample((x4,), {"scale_factor": 2, "mode": mode}, f"{mode} x2"),
                Sample((x4,), {"scale_factor": (1.5, 3.0), "mode": mode, "align_corners": False}, f"{mode} x(1.5, 3)"),
                Sample((x4,), {"scale_factor": 1.5, "mode": mode, "align_corners": True}, f"{mode} x1.5 align_corners"),
                Sample((x4,), {"size": (3, 9), "mode": mode}, f"{mode} size (3, 9)"),
                Sample((x4,), {"size": (8, 4), "mode": mode, "align_corners": True}, f"{mode} size (8, 4) ac"),
                Sample((one,), {"scale_factor": 2.5, "mode": mode, "recompute_scale_factor": True},
                       f"{mode} batch 1 x2.5 recomputed"),
                Sample((x4,), {"scale_factor": (0.5, 0.7), "mode": mode}, f"{mode} down x(0.5, 0.7)")]
    out.append(Sample((S.rand(2, 4, 40, 48, seed=3),), {"scale_factor": 2, "mode": "bilinear"}, "large bilinear"))
    return out + _samples_more()


def _samples_more():
    """trilinear, area, antialias and 5-D nearest, on odd shapes."""
    x5, x4, x3 = S.rand(2, 3, 5, 7, 4, seed=4), S.rand(2, 3, 17, 23, seed=5), S.rand(2, 3, 17, seed=6)
    out = [Sample((x5,), {"size": (3, 8, 9), "mode": "trilinear"}, "trilinear size (3, 8, 9)"),
           Sample((x5,), {"size": (3, 8, 9), "mode": "trilinear", "align_corners": True}, "trilinear size ac"),
           Sample((x5,), {"scale_factor": 0.37, "mode": "trilinear"}, "trilinear x0.37"),
           Sample((x5,), {"scale_factor": 2.5, "mode": "trilinear", "align_corners": True}, "trilinear x2.5 ac"),
           Sample((x5,), {"scale_factor": (1.1, 2.0, 0.5), "mode": "trilinear"}, "trilinear x(1.1, 2, 0.5): copy"),
           Sample((x5,), {"scale_factor": 1.5, "mode": "trilinear", "recompute_scale_factor": True},
                  "trilinear x1.5 recomputed")]
    for mode in ("nearest", "nearest-exact"):
        out += [Sample((x5,), {"scale_factor": 2, "mode": mode}, f"{mode} 5-D x2"),
                Sample((x5,), {"size": (3, 8, 9), "mode": mode}, f"{mode} 5-D size (3, 8, 9)")]
    out += [Sample((x3,), {"size": 5, "mode": "area"}, "area 3-D 17 -> 5"),
            Sample((x4,), {"size": (5, 9), "mode": "area"}, "area size (5, 9)"),
            Sample((x4,), {"scale_factor": 0.37, "mode": "area"}, "area x0.37"),
            Sample((x4,), {"scale_factor": (2.5, 0.5), "mode": "area"}, "area x(2.5, 0.5)"),
            Sample((x5,), {"size": (3, 8, 2), "mode": "area"}, "area 5-D size (3, 8, 2)")]
    out += [Sample((x4,), {"size": (5, 9), "mode": "lanczos", "antialias": True}, "lanczos down (5, 9): no ONNX",
                   onnx=False),
            Sample((x4,), {"scale_factor": 2.5, "mode": "lanczos", "antialias": True}, "lanczos up x2.5: no ONNX",
                   onnx=False)]
    for mode in ("bilinear", "bicubic"):  # Resize's antialias needs opset 18: tests/test_interpolate_modes.py
        out += [Sample((x4,), {"size": (5, 9), "mode": mode, "antialias": True}, f"{mode} aa down (5, 9)",
                       onnx=False),
                Sample((x4,), {"scale_factor": 0.37, "mode": mode, "antialias": True}, f"{mode} aa x0.37",
                       onnx=False),
                Sample((x4,), {"scale_factor": 2.5, "mode": mode, "antialias": True}, f"{mode} aa up x2.5",
                       onnx=False),
                Sample((x4,), {"size": (40, 6), "mode": mode, "antialias": True, "align_corners": True},
                       f"{mode} aa size (40, 6) ac", onnx=False)]
    return out


def _bad_inputs():
    x = S.rand(1, 2, 4, 5)
    return [BadInput((x,), {"size": 3, "scale_factor": 2.0}, ValueError, "size or scale_factor"),
            BadInput((x,), {}, ValueError, "size or scale_factor"),
            BadInput((x,), {"size": 3, "align_corners": True}, ValueError, "align_corners"),
            BadInput((x,), {"scale_factor": 2.0, "mode": "linear"}, ValueError, "input"),
            BadInput((S.rand(2, 5),), {"scale_factor": 2.0}, ValueError, "input"),
            BadInput((x,), {"size": (3, 4, 5)}, ValueError, "size"),
            BadInput((x,), {"scale_factor": -1.0}, ValueError, "scale_factor"),
            BadInput((x,), {"scale_factor": 2.0, "mode": "nearest", "antialias": True}, ValueError, "antialias"),
            BadInput((x,), {"scale_factor": 2.0, "mode": "bilinear", "antialias": "yes"}, TypeError, "antialias"),
            BadInput((x,), {"scale_factor": 2.0, "mode": "trilinear"}, NotImplementedError, "mode 'trilinear'"),
            BadInput((x,), {"size": 2, "mode": "area", "align_corners": False}, ValueError, "align_corners"),
            BadInput((x,), {"scale_factor": 2.0, "mode": "lanczos"}, ValueError, "antialias"),
            BadInput((x,), {"size": 2, "mode": "lanczos", "antialias": True, "align_corners": True}, ValueError,
                     "align_corners"),
            BadInput((x,), {"scale_factor": 2.0, "mode": "cubic"}, ValueError, "mode"),
            BadInput((x,), {"size": 4, "scale_factor": None, "recompute_scale_factor": True}, ValueError,
                     "recompute_scale_factor")]
