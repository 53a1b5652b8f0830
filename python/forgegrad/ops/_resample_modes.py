"""The per-axis maps of ``F.interpolate``'s mode ``area`` and of ``antialias=True`` (bilinear / bicubic), and
their ONNX mappings (ops/resample.py builds every other map and owns the op).

area: torch computes it as adaptive average pooling to the output size (adaptive_avg_pool1d/2d/3d), whose
windows are separable: output j of an axis averages input [floor(j * n / o), ceil((j + 1) * n / o)). Here each
axis is an AxisMap of those windows (weights 1 / window length, shorter windows padded with zero weights), so
area shares the op's forward, its fixed-order gradient and its double backward; the values equal torch's to
float rounding (torch divides one window sum by kh * kw, this scales per axis).

antialias (and mode lanczos, antialiased only): torch's _upsample_bilinear2d_aa / _upsample_bicubic2d_aa /
_upsample_lanczos2d_aa, a separable filter per axis (the PIL algorithm): with scale = in / out (or 1 /
scale_factor, or (in - 1) / (out - 1) with align_corners), output i is centred at scale * (i + 0.5)
(align_corners changes the scale only), the filter (triangle; Keys cubic with a = -0.5, not the -0.75 of plain
bicubic; Lanczos-3) is stretched by the scale when downsampling, so its support is (taps / 2) * max(scale, 1),
and the weights of the inputs it covers are normalised to sum 1. An axis whose size
does not change is copied, as torch's kernel skips it. The weights are computed in the input's dtype with torch's
float/double promotions, so float64 matches torch to ~1e-15.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ._resample_maps import AxisMap


@functools.lru_cache(maxsize=256)
def area_map(n_in: int, n_out: int, dtype_str: str) -> AxisMap:
    """Adaptive average pooling along one axis: torch's windows [floor(j n / o), ceil((j + 1) n / o))."""
    dt = np.dtype(dtype_str).type
    j = np.arange(n_out)
    start = (j * n_in) // n_out
    end = -((-(j + 1) * n_in) // n_out)
    length = end - start
    k = np.arange(int(length.max()))[:, None]
    inside = k < length[None]
    idx = np.where(inside, start[None] + k, start[None])  # padding taps read the window's first input, weight 0
    w = np.where(inside, (dt(1) / length.astype(dt))[None], dt(0)).astype(dt)
    return AxisMap(n_in, idx, w)


AA_TAPS = {"bilinear": 2, "bicubic": 4, "lanczos": 6}  # the filters' widths before the downscale stretches them


def _aa_filter(x, mode: str, dt):
    """torch's aa filters on |x| in dtype dt: the triangle (bilinear), Keys cubic with a = -0.5 (bicubic),
    Lanczos-3, sinc(x) sinc(x / 3) on |x| < 3 (lanczos; evaluated in double, then rounded to dt)."""
    x = np.abs(x)
    if mode == "bilinear":
        return np.where(x < 1, dt(1) - x, dt(0)).astype(dt)
    if mode == "lanczos":
        v = x.astype(np.float64)
        px = np.pi * np.where(v == 0, 1.0, v)
        sinc = np.where(v == 0, 1.0, np.sin(px) / px)
        sinc3 = np.where(v == 0, 1.0, np.sin(px / 3) / (px / 3))
        return np.where(v < 3, sinc * sinc3, 0.0).astype(dt)
    a = dt(-0.5)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, dt(0))).astype(dt)


@functools.lru_cache(maxsize=256)
def aa_map(mode: str, n_in: int, n_out: int, scale, dtype_str: str) -> AxisMap:
    """One axis of torch's antialiased resampling (``scale``: area_pixel_compute_scale's value in the dtype)."""
    dt = np.dtype(dtype_str).type
    if n_in == n_out:
        return AxisMap(n_in, np.arange(n_in)[None])
    scale = dt(scale)
    taps = AA_TAPS[mode]
    wide = float(scale) >= 1.0
    support = dt(taps * 0.5 * float(scale)) if wide else dt(taps * 0.5)
    max_taps = int(math.ceil(float(support))) * 2 + 1
    invscale = dt(1.0 / float(scale)) if wide else dt(1.0)
    # torch: center = scale * (i + 0.5) in double, stored in the dtype; the bounds add 0.5 in double and truncate
    center = (np.float64(scale) * (np.arange(n_out) + 0.5)).astype(dt)
    xmin = np.maximum(np.trunc((center - support).astype(np.float64) + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc((center + support).astype(np.float64) + 0.5).astype(np.int64), n_in)
    xsize = np.clip(xmax - xmin, 0, max_taps)
    k = np.arange(max_taps)[:, None]
    src = xmin[None] + k
    inside = k < xsize[None]
    # (src - center) in the dtype, + 0.5 and * invscale in double, the filter's argument in the dtype again
    arg = (((src.astype(dt) - center[None]).astype(np.float64) + 0.5) * np.float64(invscale)).astype(dt)
    w = np.where(inside, _aa_filter(arg, mode, dt), dt(0)).astype(dt)
    total = w[0].copy()
    for q in range(1, max_taps):  # torch's running sum, tap by tap
        total += w[q]
    w = np.where(total != 0, w / np.where(total != 0, total, dt(1)), w).astype(dt)
    idx = np.where(inside, src, np.minimum(xmin, n_in - 1)[None])
    return AxisMap(n_in, idx, w)


# ---- ONNX -------------------------------------------------------------------------------------------------------
AA_MIN_OPSET = 18  # Resize's antialias attribute


def onnx_area(ctx, op, x, spatial, out):
    """area as the adaptive average pools' ONNX (ops/_pool_onnx.py, _pool3d_onnx.py): Global/strided pools where
    the sizes divide, else a ReduceMean per window. Resize has no mode that averages windows."""
    from ..onnx.mappings import _conv_emit as CE
    dyn = [not isinstance(d, (int, np.integer)) for d in op.in_dims("x")[2:]]
    if len(spatial) == 1:
        y = CE.adaptive_pool2d(ctx, ctx.unsqueeze(x, [2]), (1, spatial[0]), (1, out[0]), "ReduceMean",
                               (False, dyn[0]))
        return [ctx.squeeze(y, [2])]
    if len(spatial) == 2:
        return [CE.adaptive_pool2d(ctx, x, tuple(spatial), tuple(out), "ReduceMean", tuple(dyn))]
    if any(dyn):
        raise op.unsupported("interpolate mode='area' on a 5-D input exports with static spatial sizes only (as "
                             "adaptive_avg_pool3d): export without dynamic depth/height/width")
    from ._pool3d_onnx import adaptive_avg3d_nodes
    return [adaptive_avg3d_nodes(ctx, x, tuple(spatial), tuple(out))]


def onnx_antialias(ctx, op, x, mode, spatial, out, scales, align_corners):
    """antialias=True as one Resize with antialias=1 (opset 18+): onnxruntime's antialiased linear / cubic
    (cubic_coeff_a -0.5, half_pixel, exclude_outside 1) is torch's filter (checked in onnxruntime:
    tests/test_interpolate_modes.py); an axis whose size does not change gets scale 1 (torch
    copies it). align_corners=True is refused: torch then keeps the half-pixel centres and only changes the scale,
    which no coordinate_transformation_mode expresses."""
    if mode == "lanczos":
        raise op.unsupported("interpolate mode='lanczos' is not exported: ONNX Resize has no Lanczos filter "
                             "(its modes are nearest, linear and cubic)")
    if ctx.opset < AA_MIN_OPSET:
        raise op.unsupported(f"interpolate with antialias=True needs Resize's antialias attribute, ONNX opset "
                             f"{AA_MIN_OPSET} or later (exporting at opset {ctx.opset}): export with opset="
                             f"{AA_MIN_OPSET}")
    if align_corners:
        raise op.unsupported("interpolate with antialias=True and align_corners=True is not exported: torch's "
                             "antialiased kernels keep half-pixel centres with the (in - 1) / (out - 1) scale, "
                             "which no Resize coordinate_transformation_mode computes")
    dyn = [not isinstance(d, (int, np.integer)) for d in op.in_dims("x")[2:]]
    if any(dyn):
        raise op.unsupported("interpolate with antialias=True exports with static image sizes only (torch copies "
                             "an axis whose size does not change, a shortcut that depends on the size)")
    # exclude_outside=1: the taps outside the image get weight 0 and the rest are renormalised, as torch's (with 0,
    # onnxruntime clamps them to the edge pixel: up to 0.13 off torch at a 17 -> 5 downscale)
    attrs = {"mode": "linear" if mode == "bilinear" else "cubic", "coordinate_transformation_mode": "half_pixel",
             "antialias": 1, "exclude_outside": 1}
    if mode == "bicubic":
        attrs.update(cubic_coeff_a=-0.5)
    if all(s is None for s in scales):  # a size: Resize's sizes (onnxruntime's scale out / in, as torch's in / out)
        from ..onnx._context import scalar_of
        traced = [tuple(v) if isinstance(v, (tuple, list)) else (v,) * len(out) if v is not None else
                  (None,) * len(out) for v in (op.attr("size"), op.attr_b("size"), op.attr_c("size"))]
        # a size that follows the graph's dynamic axes (a patch grid of the image) is computed from them
        hw = ctx.shape_tensor([scalar_of(a, b, c) for a, b, c in zip(*traced)], "interpolate's size")
        sizes = ctx.node("Concat", [ctx.ints(list(op.args["x"].shape[:2])), hw], axis=0)
        return [ctx.node("Resize", [x, "", "", sizes], **attrs)]
    eff = [1.0 if o == n else float(np.float32(s)) for s, n, o in zip(scales, spatial, out)]
    for s, e, n, o in zip(scales, eff, spatial, out):
        if o != n and int(math.floor(np.float32(n) * np.float32(e))) != o:
            raise op.unsupported(f"interpolate with antialias=True and scale_factor {s}: onnxruntime's output size "
                                 f"floor({n} * {e}) in float is not torch's {o} (floor in double); export with "
                                 "size= instead")
    return [ctx.node("Resize", [x, "", ctx.const(np.asarray([1.0, 1.0] + eff, np.float32), exact=True)], **attrs)]
