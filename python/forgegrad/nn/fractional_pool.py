"""FractionalMaxPool2d/3d and F.fractional_max_pool2d/3d (Graham, "Fractional Max-Pooling"), as torch's: pooling
windows of kernel_size placed at pseudo-random starts, one sample per (batch, channel) plane and axis.

The window starts are torch's CPU sequence, computed in the input's dtype as torch computes them:
``alpha = (in - k) / (out - 1)``, ``start[i] = int((i + u) * alpha) - int(u * alpha)``, the last start ``in - k``.
u is ``_random_samples[n, c, j]``: in 2-D j = 0 for the width and 1 for the height; in 3-D j = 0, 1, 2 for the
depth (time), height and width (torch's kernels take them in these orders). The samples are drawn from forgegrad's
generator when not given, so pass torch's ``_random_samples`` to get torch's result. Each window's maximum is the
first largest value in row-major order, or its last NaN (torch's scan). The output is a gather of the input at
those positions, so its gradient goes to them (torch's backward); the indices are flat positions in each plane
(h * W + w, or d * H * W + h * W + w)."""
from __future__ import annotations

import numpy as np

from .._args import is_int, pair
from ..tensor import Tensor
from .module import Module

__all__ = ["FractionalMaxPool2d", "FractionalMaxPool3d", "fractional_max_pool2d", "fractional_max_pool3d",
           "fractional_max_pool2d_with_indices", "fractional_max_pool3d_with_indices"]

_AXES = {2: ("height", "width"), 3: ("time", "height", "width")}


def _starts(u, size, out, k, dtype):
    """(planes, out) window starts for the samples u (planes,), in ``dtype`` arithmetic as torch's kernel."""
    u = u.astype(dtype)
    seq = np.empty(u.shape + (out,), np.int64)
    if out > 1:
        alpha = dtype(size - k) / dtype(out - 1)
        i = np.arange(out - 1, dtype=dtype)
        seq[..., :-1] = ((i + u[..., None]) * alpha).astype(np.int64) - (u * alpha).astype(np.int64)[..., None]
    seq[..., -1] = size - k
    return seq


def _sizes(value, nd: int, name: str, who: str):
    """An int or a tuple/list of ``nd`` ints -> an nd-tuple."""
    if nd == 2:
        return pair(value, name, who)
    if is_int(value):
        return (int(value),) * nd
    if isinstance(value, (tuple, list)) and len(value) == nd and all(is_int(v) for v in value):
        return tuple(int(v) for v in value)
    raise TypeError(f"{who}: {name} must be an int or a tuple of {nd} ints, got {value!r}")


def _ratio(output_ratio, nd: int, who: str):
    ratio = tuple(output_ratio) if isinstance(output_ratio, (tuple, list)) else (output_ratio,) * nd
    if len(ratio) != nd or not all(isinstance(r, (int, float, np.number)) and not isinstance(r, bool) and 0 < r < 1
                                   for r in ratio):
        raise ValueError(f"{who}: output_ratio must be a number or a tuple of {nd} numbers in (0, 1), "
                         f"got {output_ratio!r}")
    return ratio


def _output_size(shape, output_size, output_ratio, nd: int, who: str):
    if output_size is None and output_ratio is None:
        raise ValueError(f"{who} requires specifying either an output_size or an output_ratio")
    if output_size is not None:
        return _sizes(output_size, nd, "output_size", who)
    return tuple(int(s * r) for s, r in zip(shape[-nd:], _ratio(output_ratio, nd, who)))


def _draw(rand, n, c, nd, dtype):
    """(n, c, nd) uniform samples in [0, 1) of ``dtype``. forgegrad's generator draws float32 or float64; a float16
    input gets float32 draws rounded to float16, kept below 1 (the rounding can reach it), as torch's rand is."""
    if dtype in (np.float32, np.float64):
        return rand(n, c, nd, dtype=dtype.type).numpy()
    u = rand(n, c, nd).numpy().astype(dtype)
    return np.minimum(u, np.nextafter(dtype.type(1), dtype.type(0)))


def _given_samples(samples, n, c, nd, dtype, who):
    """torch's checks: (N', C, nd) with N' >= N (the first N rows are used) and the input's dtype."""
    if isinstance(samples, Tensor):
        samples = samples.detach().numpy()
    elif isinstance(samples, np.ndarray):
        pass
    else:
        raise TypeError(f"{who}: _random_samples must be a forgegrad.Tensor, got {type(samples).__name__}")
    if samples.ndim != 3 or samples.shape[0] < n or samples.shape[1:] != (c, nd):
        raise ValueError(f"{who}: _random_samples must have shape (N, C, {nd}) = {(n, c, nd)} (N may be larger: "
                         f"its first rows are used), got {samples.shape}")
    if samples.dtype != dtype:
        raise TypeError(f"{who}: _random_samples must have the input's dtype {dtype}, got {samples.dtype}")
    return samples[:n]


def _fractional_max_pool(input, kernel_size, output_size, output_ratio, return_indices, _random_samples, nd: int):
    from .. import rand
    who = f"fractional_max_pool{nd}d"
    if not isinstance(input, Tensor):
        raise TypeError(f"{who}: input must be a forgegrad.Tensor, got {type(input).__name__}")
    dims = "".join(a[0].upper() for a in _AXES[nd]).replace("T", "D")
    if input.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"{who}: input must be {nd + 1}-D (C, {', '.join(dims)}) or {nd + 2}-D (N, C, "
                         f"{', '.join(dims)}), got shape {tuple(input.shape)}")
    if np.dtype(input.dtype).kind != "f":
        raise TypeError(f"{who}: input must be a floating point tensor, got {input.dtype}")
    ks = _sizes(kernel_size, nd, "kernel_size", who)
    outs = _output_size(input.shape, output_size, output_ratio, nd, who)
    batched = input.ndim == nd + 2
    x = input if batched else input.unsqueeze(0)
    n, c = x.shape[:2]
    sizes = tuple(x.shape[2:])
    for what, k, o, size in zip(_AXES[nd], ks, outs, sizes):
        if o <= 0 or k <= 0:
            raise ValueError(f"{who}(): kernel_size and output_size must be positive, got {what} kernel {k}, "
                             f"output {o}")
        if k + o - 1 > size:
            raise ValueError(f"{who}(): pool {what} {k} too large relative to input {what} {size} (output {what} "
                             f"{o}): kernel_size + output_size - 1 must be at most the input size")
    if _random_samples is None:
        samples = _draw(rand, n, c, nd, np.dtype(input.dtype))
    else:
        samples = _given_samples(_random_samples, n, c, nd, np.dtype(input.dtype), who)
    dtype = np.dtype(input.dtype).type
    # the sample column of each spatial axis: 2-D (height, width) -> (1, 0); 3-D (time, height, width) -> (0, 1, 2)
    cols = (1, 0) if nd == 2 else (0, 1, 2)
    planes = n * c
    strides = [int(np.prod(sizes[a + 1:], dtype=np.int64)) for a in range(nd)]
    window = np.stack(np.meshgrid(*[np.arange(k) for k in ks], indexing="ij"), 0).reshape(nd, -1)  # row-major
    kk = window.shape[1]
    pos = np.zeros((planes,) + outs + (kk,), np.int64)
    for a in range(nd):
        st = _starts(samples[..., cols[a]].reshape(-1), sizes[a], outs[a], ks[a], dtype)  # (planes, out_a)
        shape = [planes] + [1] * nd + [1]
        shape[1 + a] = outs[a]
        pos += (st.reshape(shape) + window[a].reshape([1] * (nd + 1) + [kk])) * strides[a]
    total, flat_out = int(np.prod(sizes, dtype=np.int64)), int(np.prod(outs, dtype=np.int64))
    # every size spelled out (no -1): an empty batch (N * C == 0) is valid, as torch's
    vals = np.take_along_axis(x.detach().numpy().reshape(planes, total),
                              pos.reshape(planes, flat_out * kk), axis=-1).reshape(pos.shape)
    nan = np.isnan(vals)
    first_max = np.argmax(np.where(nan, -np.inf, vals), axis=-1)
    last_nan = kk - 1 - np.argmax(nan[..., ::-1], axis=-1)
    pick = np.where(nan.any(-1), last_nan, first_max)
    idx = np.take_along_axis(pos, pick[..., None], axis=-1)[..., 0].reshape(n, c, flat_out)
    out = x.reshape(n, c, total).gather(2, Tensor._stored(idx)).reshape((n, c) + outs)
    indices = Tensor._stored(idx.reshape((n, c) + outs))
    if not batched:
        out, indices = out.squeeze(0), indices.squeeze(0)
    return (out, indices) if return_indices else out


def fractional_max_pool2d(input, kernel_size, output_size=None, output_ratio=None, return_indices: bool = False,
                          _random_samples=None):
    """``torch.nn.functional.fractional_max_pool2d`` over (N, C, H, W) or unbatched (C, H, W)."""
    return _fractional_max_pool(input, kernel_size, output_size, output_ratio, return_indices, _random_samples, 2)


def fractional_max_pool3d(input, kernel_size, output_size=None, output_ratio=None, return_indices: bool = False,
                          _random_samples=None):
    """``torch.nn.functional.fractional_max_pool3d`` over (N, C, D, H, W) or unbatched (C, D, H, W);
    ``_random_samples`` (N, C, 3) holds the depth, height and width samples."""
    return _fractional_max_pool(input, kernel_size, output_size, output_ratio, return_indices, _random_samples, 3)


def fractional_max_pool2d_with_indices(input, kernel_size, output_size=None, output_ratio=None,
                                       return_indices: bool = False, _random_samples=None):
    """(output, indices) of fractional_max_pool2d, as torch's (whatever return_indices says)."""
    return fractional_max_pool2d(input, kernel_size, output_size, output_ratio, True, _random_samples)


def fractional_max_pool3d_with_indices(input, kernel_size, output_size=None, output_ratio=None,
                                       return_indices: bool = False, _random_samples=None):
    """(output, indices) of fractional_max_pool3d, as torch's (whatever return_indices says)."""
    return fractional_max_pool3d(input, kernel_size, output_size, output_ratio, True, _random_samples)


class _FractionalMaxPoolNd(Module):
    _nd = 2

    def __init__(self, kernel_size, output_size=None, output_ratio=None, return_indices: bool = False,
                 _random_samples=None):
        super().__init__()
        cls, nd = type(self).__name__, self._nd
        self.kernel_size = _sizes(kernel_size, nd, "kernel_size", cls)
        self.return_indices = return_indices
        self.register_buffer("_random_samples", _random_samples)  # in the state_dict when given, as torch
        if output_size is None and output_ratio is None:
            raise ValueError(f"{cls} requires specifying either an output size, or a pooling ratio")
        if output_size is not None and output_ratio is not None:
            raise ValueError("only one of output_size and output_ratio may be specified")
        self.output_size = None if output_size is None else _sizes(output_size, nd, "output_size", cls)
        self.output_ratio = None
        if output_ratio is not None:
            ratio = tuple(output_ratio) if isinstance(output_ratio, (tuple, list)) else (output_ratio,) * nd
            if not all(isinstance(r, (int, float, np.number)) and not isinstance(r, bool) for r in ratio):
                raise TypeError(f"{cls}: output_ratio must be a number or a tuple of {nd} numbers, got "
                                f"{output_ratio!r}")
            if len(ratio) != nd or not all(0 < r < 1 for r in ratio):
                raise ValueError(f"output_ratio must be between 0 and 1 (got {output_ratio})")
            self.output_ratio = ratio

    def forward(self, input):
        return _fractional_max_pool(input, self.kernel_size, self.output_size, self.output_ratio,
                                    self.return_indices, self._random_samples, self._nd)


class FractionalMaxPool2d(_FractionalMaxPoolNd):
    """``FractionalMaxPool2d(kernel_size, output_size=None, output_ratio=None, return_indices=False,
    _random_samples=None)``; see fractional_max_pool2d. Each call draws new samples unless _random_samples is set."""

    _nd = 2


class FractionalMaxPool3d(_FractionalMaxPoolNd):
    """``FractionalMaxPool3d(kernel_size, output_size=None, output_ratio=None, return_indices=False,
    _random_samples=None)`` over (N, C, D, H, W); see fractional_max_pool3d."""

    _nd = 3
