"""FractionalMaxPool2d / F.fractional_max_pool2d (Graham, "Fractional Max-Pooling"), as torch's: pooling windows
of kernel_size placed at pseudo-random starts, one sample per (batch, channel) plane and axis.

The window starts are torch's CPU sequence, computed in the input's dtype as torch computes them:
``alpha = (in - k) / (out - 1)``, ``start[i] = int((i + u) * alpha) - int(u * alpha)``, the last start ``in - k``;
u is ``_random_samples[n, c, 0]`` for the width and ``[n, c, 1]`` for the height (drawn from forgegrad's generator
when not given, so pass torch's ``_random_samples`` to get torch's result). Each window's maximum is the first
largest value in row-major order, or its last NaN (torch's scan). The output is a gather of the input at those
positions, so its gradient goes to them (torch's backward); the indices are h * W + w in each plane."""
from __future__ import annotations

import numpy as np

from .._args import pair
from ..tensor import Tensor
from .module import Module

__all__ = ["FractionalMaxPool2d", "fractional_max_pool2d"]


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


def _output_size(shape, output_size, output_ratio):
    if output_size is None and output_ratio is None:
        raise ValueError("fractional_max_pool2d requires specifying either an output_size or an output_ratio")
    if output_size is not None:
        return pair(output_size, "output_size", "fractional_max_pool2d")
    ratio = output_ratio if isinstance(output_ratio, (tuple, list)) else (output_ratio, output_ratio)
    if len(ratio) != 2 or not all(isinstance(r, (int, float, np.number)) and not isinstance(r, bool) and 0 < r < 1
                                  for r in ratio):
        raise ValueError(f"fractional_max_pool2d: output_ratio must be a number or a pair of numbers in (0, 1), "
                         f"got {output_ratio!r}")
    return int(shape[-2] * ratio[0]), int(shape[-1] * ratio[1])


def fractional_max_pool2d(input, kernel_size, output_size=None, output_ratio=None, return_indices: bool = False,
                          _random_samples=None):
    """``torch.nn.functional.fractional_max_pool2d`` over (N, C, H, W) or unbatched (C, H, W)."""
    from .. import rand
    if not isinstance(input, Tensor):
        raise TypeError(f"fractional_max_pool2d: input must be a forgegrad.Tensor, got {type(input).__name__}")
    if input.ndim not in (3, 4):
        raise ValueError(f"fractional_max_pool2d: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape "
                         f"{tuple(input.shape)}")
    if np.dtype(input.dtype).kind != "f":
        raise TypeError(f"fractional_max_pool2d: input must be a floating point tensor, got {input.dtype}")
    kh, kw = pair(kernel_size, "kernel_size", "fractional_max_pool2d")
    oh, ow = _output_size(input.shape, output_size, output_ratio)
    batched = input.ndim == 4
    x = input if batched else input.unsqueeze(0)
    n, c, h, w = x.shape
    for what, k, o, size in (("height", kh, oh, h), ("width", kw, ow, w)):
        if k + o - 1 > size:
            raise ValueError(f"fractional_max_pool2d(): pool {what} {k} too large relative to input {what} {size} "
                             f"(output {what} {o}): kernel_size + output_size - 1 must be at most the input size")
        if o <= 0 or k <= 0:
            raise ValueError(f"fractional_max_pool2d(): kernel_size and output_size must be positive, got {what} "
                             f"kernel {k}, output {o}")
    if _random_samples is None:
        samples = rand(n, c, 2).numpy()
    else:
        samples = _random_samples.numpy() if isinstance(_random_samples, Tensor) else np.asarray(_random_samples)
        if samples.shape != (n, c, 2):
            raise ValueError(f"fractional_max_pool2d: _random_samples must have shape (N, C, 2) = {(n, c, 2)}, got "
                             f"{samples.shape}")
    dtype = np.dtype(input.dtype).type
    sw = _starts(samples[..., 0].reshape(-1), w, ow, kw, dtype)  # (N*C, ow)
    sh = _starts(samples[..., 1].reshape(-1), h, oh, kh, dtype)  # (N*C, oh)
    di, dj = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")  # the window, row-major
    pos = ((sh[:, :, None, None] + di.reshape(-1)[None, None, None, :]) * w
           + sw[:, None, :, None] + dj.reshape(-1)[None, None, None, :])  # (N*C, oh, ow, kh*kw)
    # every size spelled out (no -1): an empty batch (N * C == 0) is valid, as torch's
    vals = np.take_along_axis(x.detach().numpy().reshape(n * c, 1, 1, h * w),
                              pos.reshape(n * c, 1, 1, oh * ow * kh * kw), axis=-1).reshape(pos.shape)
    nan = np.isnan(vals)
    first_max = np.argmax(np.where(nan, -np.inf, vals), axis=-1)
    last_nan = pos.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    pick = np.where(nan.any(-1), last_nan, first_max)
    idx = np.take_along_axis(pos, pick[..., None], axis=-1)[..., 0].reshape(n, c, oh * ow)
    out = x.reshape(n, c, h * w).gather(2, Tensor(idx)).reshape(n, c, oh, ow)
    indices = Tensor(idx.reshape(n, c, oh, ow))
    if not batched:
        out, indices = out.squeeze(0), indices.squeeze(0)
    return (out, indices) if return_indices else out


class FractionalMaxPool2d(Module):
    """``FractionalMaxPool2d(kernel_size, output_size=None, output_ratio=None, return_indices=False,
    _random_samples=None)``; see fractional_max_pool2d. Each call draws new samples unless _random_samples is set."""

    def __init__(self, kernel_size, output_size=None, output_ratio=None, return_indices: bool = False,
                 _random_samples=None):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", "FractionalMaxPool2d")
        self.return_indices = return_indices
        self.register_buffer("_random_samples", _random_samples)  # in the state_dict when given, as torch
        if output_size is None and output_ratio is None:
            raise ValueError("FractionalMaxPool2d requires specifying either an output size, or a pooling ratio")
        if output_size is not None and output_ratio is not None:
            raise ValueError("only one of output_size and output_ratio may be specified")
        self.output_size = None if output_size is None else pair(output_size, "output_size", "FractionalMaxPool2d")
        self.output_ratio = None
        if output_ratio is not None:
            ratio = output_ratio if isinstance(output_ratio, (tuple, list)) else (output_ratio, output_ratio)
            if not all(0 < r < 1 for r in ratio):
                raise ValueError(f"output_ratio must be between 0 and 1 (got {output_ratio})")
            self.output_ratio = tuple(ratio)

    def forward(self, input):
        return fractional_max_pool2d(input, self.kernel_size, self.output_size, self.output_ratio,
                                     self.return_indices, _random_samples=self._random_samples)
