"""torch's window functions: hann_window, hamming_window, blackman_window, bartlett_window and kaiser_window, with
torch's arguments (window_length, periodic, alpha / beta, and the keywords dtype, layout, device, requires_grad).

Values are computed in float64 and cast to the requested dtype (torch computes in that dtype; the float32 results
agree to a few ulps). ``periodic=True`` (the default, the window for spectral analysis: stft) is the symmetric
window of length window_length + 1 with its last sample dropped. ``pin_memory`` is accepted and has no effect (CPU
tensors). ``install()`` puts them on the package."""
from __future__ import annotations

import builtins

import numpy as np

from . import dtypes as _dtypes
from .factories import placed
from .tensor import Tensor

__all__ = ["hann_window", "hamming_window", "blackman_window", "bartlett_window", "kaiser_window", "FUNCTIONS",
           "install"]


def _options(who: str, window_length, periodic, dtype, layout) -> np.dtype:
    """The numpy dtype of the window after torch's argument checks (TypeError for a wrong type, RuntimeError for a
    negative length, a non-floating dtype or a sparse layout, as torch)."""
    if isinstance(window_length, (builtins.bool, np.bool_)) or not isinstance(window_length,
                                                                              (builtins.int, np.integer)):
        raise TypeError(f"{who}(): argument 'window_length' (position 1) must be int, not "
                        f"{type(window_length).__name__}")
    if not isinstance(periodic, (builtins.bool, np.bool_)):
        raise TypeError(f"{who}(): argument 'periodic' (position 2) must be bool, not {type(periodic).__name__}")
    if window_length < 0:
        raise RuntimeError(f"{who} requires non-negative window_length, got window_length={window_length}")
    if layout is not None and str(layout).split(".")[-1] != "strided":
        raise RuntimeError(f"{who} is not implemented for sparse types (argument 'layout' must be strided, "
                           f"got {layout})")
    d = _dtypes._DEFAULT_FLOAT if dtype is None else dtype
    if not isinstance(d, _dtypes.dtype):
        raise TypeError(f"{who}(): argument 'dtype' must be a forgegrad dtype, not {type(dtype).__name__}")
    if not d.is_floating_point:
        raise RuntimeError(f"{who} expects floating point dtypes, got: argument 'dtype' = {d}")
    return _dtypes.to_numpy(d)


def _window(who, window_length, periodic, dtype, layout, device, requires_grad, symmetric) -> Tensor:
    """``symmetric(n)``: the symmetric window of n >= 2 samples as float64; the special cases are torch's."""
    dt = _options(who, window_length, periodic, dtype, layout)
    n = builtins.int(window_length)
    if n <= 1:
        values = np.ones(n, np.float64)
    elif periodic:
        values = symmetric(n + 1)[:-1]
    else:
        values = symmetric(n)
    t = Tensor(np.ascontiguousarray(values.astype(dt)), dtype=dt)
    if requires_grad:
        t.requires_grad_(True)
    return placed(t, device)


def _cosine_sum(n: int, *coefficients) -> np.ndarray:
    """sum_k (-1)^k a_k cos(2 pi k i / (n - 1)): the generalised cosine window (hann, hamming, blackman)."""
    phase = 2.0 * np.pi * np.arange(n, dtype=np.float64) / (n - 1)
    return builtins.sum((-1) ** k * a * np.cos(k * phase) for k, a in enumerate(coefficients))


def _number(v, name: str, who: str) -> float:
    if isinstance(v, (builtins.bool, np.bool_)) or not isinstance(v, (builtins.int, builtins.float, np.number)):
        raise TypeError(f"{who}(): argument {name!r} must be float, not {type(v).__name__}")
    return builtins.float(v)


def hann_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, pin_memory=False,
                requires_grad=False) -> Tensor:
    """0.5 - 0.5 cos(2 pi n / (N - 1)) (torch.hann_window)."""
    return _window("hann_window", window_length, periodic, dtype, layout, device, requires_grad,
                   lambda n: _cosine_sum(n, 0.5, 0.5))


def hamming_window(window_length, periodic=True, alpha=0.54, beta=0.46, *, dtype=None, layout=None, device=None,
                   pin_memory=False, requires_grad=False) -> Tensor:
    """alpha - beta cos(2 pi n / (N - 1)) (torch.hamming_window)."""
    a, b = _number(alpha, "alpha", "hamming_window"), _number(beta, "beta", "hamming_window")
    return _window("hamming_window", window_length, periodic, dtype, layout, device, requires_grad,
                   lambda n: _cosine_sum(n, a, b))


def blackman_window(window_length, periodic=True, *, dtype=None, layout=None, device=None,
                    pin_memory=False, requires_grad=False) -> Tensor:
    """0.42 - 0.5 cos(2 pi n / (N - 1)) + 0.08 cos(4 pi n / (N - 1)) (torch.blackman_window)."""
    return _window("blackman_window", window_length, periodic, dtype, layout, device, requires_grad,
                   lambda n: _cosine_sum(n, 0.42, 0.5, 0.08))


def bartlett_window(window_length, periodic=True, *, dtype=None, layout=None, device=None,
                    pin_memory=False, requires_grad=False) -> Tensor:
    """The triangular window 1 - |2 n / (N - 1) - 1| (torch.bartlett_window)."""
    return _window("bartlett_window", window_length, periodic, dtype, layout, device, requires_grad,
                   lambda n: 1.0 - np.abs(2.0 * np.arange(n, dtype=np.float64) / (n - 1) - 1.0))


def kaiser_window(window_length, periodic=True, beta=12.0, *, dtype=None, layout=None, device=None,
                  pin_memory=False, requires_grad=False) -> Tensor:
    """I0(beta sqrt(1 - ((n - a) / a)^2)) / I0(beta), a = (N - 1) / 2 (torch.kaiser_window)."""
    b = _number(beta, "beta", "kaiser_window")
    return _window("kaiser_window", window_length, periodic, dtype, layout, device, requires_grad,
                   lambda n: np.kaiser(n, b))


FUNCTIONS = {f.__name__: f for f in (hann_window, hamming_window, blackman_window, bartlett_window, kaiser_window)}


def install(package_namespace: dict) -> None:
    for name, fn in FUNCTIONS.items():
        package_namespace.setdefault(name, fn)
