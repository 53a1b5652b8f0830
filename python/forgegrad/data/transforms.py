"""Batch-level image transforms for data augmentation (torchvision.transforms' names and arguments).

Every transform takes a whole batch ``x`` of shape (N, C, H, W) -- or one image (C, H, W) -- as a
numpy array or a Tensor, and returns the same kind (a Tensor comes back as a new Tensor without
gradient history; augmentation happens on data, not inside the graph). The work is vectorised over
the batch: one random draw per image, then one gather for the whole batch.

Randomness: each random transform takes ``generator=`` (a numpy Generator, or an int seed) or
``seed=``; with neither it draws from forgegrad's global generator at call time, so
``forgegrad.manual_seed(s)`` makes a run repeatable. A seeded transform keeps its own stream: two
calls give different (but repeatable) results.

    from forgegrad.data import DataLoader, transforms as T
    aug = T.Compose([T.RandomShift(1), T.RandomRotation(10), T.Normalize([0.5], [0.25])])
    loader = DataLoader(ds, batch_size=64, shuffle=True, transform=aug)   # applied to each batch's x
"""
from __future__ import annotations

import numbers
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import random as _random
from ..tensor import Tensor

__all__ = ["Compose", "RandomCrop", "RandomHorizontalFlip", "RandomShift", "RandomRotation", "GaussianNoise",
           "Normalize", "Transform"]


def _pair(value, what: str, where: str, minimum: int) -> Tuple[int, int]:
    """An int or (h, w) pair of ints >= minimum."""
    vals = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(vals) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum
                             for v in vals):
        raise ValueError(f"{where}: {what} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(vals[0]), int(vals[1])


class Transform:
    """Base class: converts the input to a (N, C, H, W) numpy array, calls ``apply``, converts back.

    Subclasses implement ``apply(x, gen)`` on a 4-d array (gen: the numpy Generator to draw from).
    """

    def __init__(self, generator=None, seed: Optional[int] = None):
        name = type(self).__name__
        if generator is not None and seed is not None:
            raise ValueError(f"{name}: pass either generator or seed, not both")
        if seed is not None:
            generator = seed
        if generator is None or isinstance(generator, np.random.Generator):
            self._generator = generator
        elif isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
            self._generator = np.random.default_rng(int(generator))
        else:
            raise TypeError(f"{name}: generator must be None, an int seed or a numpy.random.Generator, "
                            f"got {type(generator).__name__}")

    def _gen(self) -> np.random.Generator:
        return self._generator if self._generator is not None else _random.generator()

    def apply(self, x: np.ndarray, gen: np.random.Generator) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x):
        is_tensor = isinstance(x, Tensor)
        arr = x._data if is_tensor else np.asarray(x)
        if arr.ndim not in (3, 4):
            raise ValueError(f"{type(self).__name__}: expected a batch (N, C, H, W) or an image (C, H, W), "
                             f"got shape {arr.shape}")
        single = arr.ndim == 3
        out = self.apply(arr[None] if single else arr, self._gen())
        if single:
            out = out[0]
        if is_tensor and arr.dtype == np.float64:  # a float64 batch stays float64
            return Tensor._wrap_exact(np.ascontiguousarray(out, dtype=np.float64))
        return Tensor._wrap(np.ascontiguousarray(out)) if is_tensor else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Compose:
    """Applies ``transforms`` in order (any callables batch -> batch)."""

    def __init__(self, transforms: Sequence[Callable]):
        transforms = list(transforms)
        for t in transforms:
            if not callable(t):
                raise TypeError(f"Compose: every transform must be callable, got {type(t).__name__}")
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


def _crop_at(xp: np.ndarray, top: np.ndarray, left: np.ndarray, h: int, w: int) -> np.ndarray:
    """out[n] = xp[n, :, top[n]:top[n]+h, left[n]:left[n]+w] for the whole batch in one gather.

    xp is (N, C, Hp, Wp); top, left are (N,) int arrays; returns a new (N, C, h, w) array.
    """
    windows = sliding_window_view(xp, (h, w), axis=(2, 3))  # (N, C, Hp-h+1, Wp-w+1, h, w), a view
    # advanced indices around the C slice: the broadcast N axis goes first, then C, h, w
    return windows[np.arange(xp.shape[0]), :, top, left]


def _zero_pad(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


class RandomCrop(Transform):
    """Crop a random ``size`` window of each image after zero-padding it by ``padding`` on every side.

    Args:
        size: output (h, w), or an int for a square crop.
        padding: zeros added on each side (int or (pad_h, pad_w)) before cropping.
    """

    def __init__(self, size: Union[int, Tuple[int, int]], padding: Union[int, Tuple[int, int]] = 0,
                 generator=None, seed: Optional[int] = None):
        super().__init__(generator, seed)
        self.size = _pair(size, "size", "RandomCrop", 1)
        self.padding = _pair(padding, "padding", "RandomCrop", 0)

    def apply(self, x, gen):
        n, _, hgt, wid = x.shape
        (h, w), (ph, pw) = self.size, self.padding
        hp, wp = hgt + 2 * ph, wid + 2 * pw
        if h > hp or w > wp:
            raise ValueError(f"RandomCrop: crop size {(h, w)} is larger than the padded image {(hp, wp)} "
                             f"(image {(hgt, wid)}, padding {(ph, pw)})")
        top = gen.integers(0, hp - h + 1, n)
        left = gen.integers(0, wp - w + 1, n)
        return _crop_at(_zero_pad(x, ph, pw), top, left, h, w)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomShift(Transform):
    """Translate each image by a random whole number of pixels, filling the uncovered border with zeros.

    Shifts (dy, dx) are drawn uniformly from [-max_shift, max_shift] per image and axis:
    ``out[n, :, i, j] = x[n, :, i - dy, j - dx]`` (0 where that falls outside the image).

    Args:
        max_shift: largest shift in pixels, an int or (max_dy, max_dx).
    """

    def __init__(self, max_shift: Union[int, Tuple[int, int]], generator=None, seed: Optional[int] = None):
        super().__init__(generator, seed)
        self.max_shift = _pair(max_shift, "max_shift", "RandomShift", 0)

    def apply(self, x, gen):
        n, _, h, w = x.shape
        my, mx = self.max_shift
        dy = gen.integers(-my, my + 1, n)
        dx = gen.integers(-mx, mx + 1, n)
        # padding by max_shift and cropping at (my - dy, mx - dx) is the shift by (dy, dx)
        return _crop_at(_zero_pad(x, my, mx), my - dy, mx - dx, h, w)

    def __repr__(self):
        return f"RandomShift(max_shift={self.max_shift})"


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, generator=None, seed: Optional[int] = None):
        super().__init__(generator, seed)
        if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def apply(self, x, gen):
        flip = gen.random(x.shape[0]) < self.p
        out = x.copy()
        out[flip] = x[flip][..., ::-1]
        return out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class RandomRotation(Transform):
    """Rotate each image by a random angle about its centre (counter-clockwise for positive angles,
    as torchvision), filling what comes from outside the image with ``fill``.

    Args:
        degrees: angles are drawn uniformly from (-degrees, degrees), or from (lo, hi) for a pair.
        interpolation: "bilinear" (default) or "nearest".
        fill: value for pixels whose source lies outside the image.

    Resampling is done with numpy: each output pixel's source position is computed for the whole
    batch at once and the 1 (nearest) or 4 (bilinear) neighbours are gathered with one fancy index.
    """

    def __init__(self, degrees: Union[float, Tuple[float, float]], interpolation: str = "bilinear",
                 fill: float = 0.0, generator=None, seed: Optional[int] = None):
        super().__init__(generator, seed)
        if isinstance(degrees, (tuple, list)):
            if len(degrees) != 2 or not all(isinstance(d, numbers.Real) for d in degrees) or degrees[0] > degrees[1]:
                raise ValueError(f"RandomRotation: degrees must be a number >= 0 or a pair (lo, hi) with lo <= hi, "
                                 f"got {degrees!r}")
            self.degrees = (float(degrees[0]), float(degrees[1]))
        elif isinstance(degrees, numbers.Real) and not isinstance(degrees, bool) and degrees >= 0:
            self.degrees = (-float(degrees), float(degrees))
        else:
            raise ValueError(f"RandomRotation: degrees must be a number >= 0 or a pair (lo, hi), got {degrees!r}")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"RandomRotation: interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        self.interpolation = interpolation
        self.fill = float(fill)

    def apply(self, x, gen):
        n = x.shape[0]
        lo, hi = self.degrees
        angles = gen.uniform(lo, hi, n) if hi > lo else np.full(n, lo)
        return rotate(x, angles, self.interpolation, self.fill)

    def __repr__(self):
        return f"RandomRotation(degrees={self.degrees}, interpolation={self.interpolation!r})"


def rotate(x: np.ndarray, angles_deg: np.ndarray, interpolation: str = "bilinear", fill: float = 0.0) -> np.ndarray:
    """Rotate each image x[n] (x is (N, C, H, W)) by angles_deg[n] degrees counter-clockwise about
    its centre ((H-1)/2, (W-1)/2); returns a new array of x's dtype."""
    n, c, h, w = x.shape
    theta = np.deg2rad(np.asarray(angles_deg, dtype=np.float64)).reshape(n, 1, 1)
    cos, sin = np.cos(theta), np.sin(theta)
    # exact multiples of 90 degrees: cos/sin of pi/2 are off by ~1e-16, which must not flip a
    # nearest-neighbour rounding or leak tiny bilinear weights
    cos, sin = np.where(np.abs(cos) < 1e-12, 0.0, cos), np.where(np.abs(sin) < 1e-12, 0.0, sin)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy = np.arange(h, dtype=np.float64).reshape(1, h, 1) - cy
    xx = np.arange(w, dtype=np.float64).reshape(1, 1, w) - cx
    # inverse map (output pixel -> source position); rows point down, so a counter-clockwise turn
    # on screen is a clockwise one in (row, col) coordinates
    src_x = cos * xx - sin * yy + cx   # (N, H, W)
    src_y = sin * xx + cos * yy + cy
    flat = x.reshape(n, c, h * w)
    batch_idx = np.arange(n).reshape(n, 1, 1)
    chan_idx = np.arange(c).reshape(1, c, 1)

    def gather(iy, ix):
        """x[n, :, iy, ix] with fill outside the image; iy, ix are (N, H, W) ints -> (N, C, H*W) float."""
        inside = ((iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)).reshape(n, 1, h * w)
        idx = (np.clip(iy, 0, h - 1) * w + np.clip(ix, 0, w - 1)).reshape(n, 1, h * w)
        vals = flat[batch_idx, chan_idx, idx].astype(np.float64 if x.dtype == np.float64 else np.float32)
        return np.where(inside, vals, vals.dtype.type(fill))

    if interpolation == "nearest":
        out = gather(np.rint(src_y).astype(np.int64), np.rint(src_x).astype(np.int64))
    else:
        y0f, x0f = np.floor(src_y), np.floor(src_x)
        wy, wx = (src_y - y0f).reshape(n, 1, h * w), (src_x - x0f).reshape(n, 1, h * w)
        y0, x0 = y0f.astype(np.int64), x0f.astype(np.int64)
        top = gather(y0, x0) * (1 - wx) + gather(y0, x0 + 1) * wx
        bottom = gather(y0 + 1, x0) * (1 - wx) + gather(y0 + 1, x0 + 1) * wx
        out = top * (1 - wy) + bottom * wy
    out = out.reshape(n, c, h, w)
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(x.dtype)
    return out.astype(x.dtype, copy=False)


class GaussianNoise(Transform):
    """Add independent N(mean, std^2) noise to every element (float inputs)."""

    def __init__(self, std: float, mean: float = 0.0, generator=None, seed: Optional[int] = None):
        super().__init__(generator, seed)
        if not isinstance(std, numbers.Real) or std < 0:
            raise ValueError(f"GaussianNoise: std must be a number >= 0, got {std!r}")
        self.std, self.mean = float(std), float(mean)

    def apply(self, x, gen):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"GaussianNoise: expected floating-point images, got dtype {x.dtype}")
        dtype = np.float64 if x.dtype == np.float64 else np.float32
        noise = gen.standard_normal(x.shape, dtype=dtype)
        return (x + (noise * dtype(self.std) + dtype(self.mean))).astype(x.dtype, copy=False)

    def __repr__(self):
        return f"GaussianNoise(std={self.std}, mean={self.mean})"


class Normalize(Transform):
    """``(x - mean[c]) / std[c]`` per channel c (deterministic).

    Args:
        mean, std: one number per channel (a sequence of length C), or a single number for all.
    """

    def __init__(self, mean, std):
        super().__init__()
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise ValueError("Normalize: mean and std must be numbers or 1-d sequences (one per channel)")
        if np.any(self.std == 0):
            raise ValueError(f"Normalize: std must be non-zero, got {self.std.tolist()}")

    def apply(self, x, gen):
        c = x.shape[1]
        for what, v in (("mean", self.mean), ("std", self.std)):
            if v.size not in (1, c):
                raise ValueError(f"Normalize: {what} has {v.size} values but the images have {c} channels")
        dtype = np.float64 if x.dtype == np.float64 else np.float32
        mean = self.mean.astype(dtype).reshape(1, -1, 1, 1)
        std = self.std.astype(dtype).reshape(1, -1, 1, 1)
        return (x.astype(dtype, copy=False) - mean) / std

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"
