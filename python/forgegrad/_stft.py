"""torch.stft / torch.istft, made of forgegrad ops (framing by indexing, forgegrad.fft, overlap-add by scatter_add), so
that gradients flow through them as torch's do. torch 2.x's arguments and rules: return_complex must be given for a
real input (True; False gives view_as_real's layout with torch's deprecation warning), the window is centred in
n_fft, center pads by n_fft // 2 with pad_mode, normalized scales by n_fft ** -0.5, onesided keeps n_fft // 2 + 1
bins of a real signal; istft checks the window's overlap-add envelope (NOLA) as torch's."""
from __future__ import annotations

import warnings

import numpy as np

from . import fft as _fft
from .tensor import Tensor

__all__ = ["stft", "istft"]


def _int(v, name, fn, low=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{fn}: expected {name} to be an int >= {low}, got {v!r}")
    return int(v)


def _window(window, n_fft, win_length, real_dtype, fn):
    """The window (ones when None) zero-padded in the middle of n_fft points, as a numpy-free Tensor."""
    from .factories import ones
    if window is None:
        window = ones(win_length, dtype=real_dtype)
    elif not isinstance(window, Tensor):
        raise TypeError(f"{fn}(): argument 'window' must be a Tensor, got {type(window).__name__}")
    elif window.ndim != 1 or window.shape[0] != win_length:
        raise RuntimeError(f"{fn}: expected a 1D window tensor of size equal to win_length={win_length}, but got "
                           f"window with size {tuple(window.shape)}")
    if win_length < n_fft:
        from .nn import functional as F
        left = (n_fft - win_length) // 2
        window = F.pad(window, (left, n_fft - win_length - left))
    return window


def _lengths(n_fft, hop_length, win_length, fn):
    n_fft = _int(n_fft, "n_fft", fn)
    hop = n_fft // 4 if hop_length is None else _int(hop_length, "hop_length", fn)
    win = n_fft if win_length is None else _int(win_length, "win_length", fn)
    if hop <= 0:
        raise RuntimeError(f"{fn}: expected hop_length > 0, but got hop_length={hop}")
    if win > n_fft:
        raise RuntimeError(f"{fn}: expected 0 < win_length <= n_fft, but got win_length={win}")
    return n_fft, hop, win


def stft(input, n_fft, hop_length=None, win_length=None, window=None, center=True, pad_mode="reflect",
         normalized=False, onesided=None, return_complex=None):
    """torch.stft: the short-time Fourier transform of a 1-D (L) or 2-D (B, L) signal: (B?, n_freq, n_frames)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"stft(): argument 'input' must be a Tensor, got {type(input).__name__}")
    is_complex = input._data.dtype.kind == "c"
    if return_complex is None:
        if not is_complex and not (window is not None and window._data.dtype.kind == "c"):
            raise RuntimeError("stft requires the return_complex parameter be given for real inputs, and will "
                               "further require that return_complex=True in a future PyTorch release.")
        return_complex = True
    if input.ndim not in (1, 2):
        raise RuntimeError(f"stft: expected a 1D or 2D tensor, got a tensor of shape {tuple(input.shape)}")
    n_fft, hop, win = _lengths(n_fft, hop_length, win_length, "stft")
    x = input if input.ndim == 2 else input.unsqueeze(0)
    if x._data.dtype.kind in "iub":
        x = x.float()
    if center:
        from .nn import functional as F
        pad = n_fft // 2
        x = F.pad(x.unsqueeze(1), (pad, pad), mode=pad_mode).squeeze(1)
    length = x.shape[-1]
    if not 0 < n_fft <= length:
        raise RuntimeError(f"stft: expected 0 < n_fft <= {length}, but got n_fft={n_fft}")
    n_frames = 1 + (length - n_fft) // hop
    idx = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    frames = x[:, Tensor._stored(idx)]  # (B, n_frames, n_fft)
    real_dtype = np.float64 if x._data.dtype in (np.float64, np.complex128) else np.float32
    w = _window(window, n_fft, win, real_dtype, "stft")
    frames = frames * w
    real = frames._data.dtype.kind != "c"
    if onesided is None:
        onesided = real
    if onesided and not real:
        raise RuntimeError("Cannot have onesided output if window or input is complex")
    norm = "ortho" if normalized else "backward"
    spec = _fft.rfft(frames, norm=norm) if onesided else _fft.fft(frames, norm=norm)
    spec = spec.transpose(1, 2)
    if input.ndim == 1:
        spec = spec.squeeze(0)
    if not return_complex:
        warnings.warn("stft with return_complex=False is deprecated. In a future pytorch release, stft will return "
                      "complex tensors for all inputs, and return_complex=False will raise an error.", UserWarning,
                      stacklevel=2)
        from ._complex_tensor import view_as_real
        return view_as_real(spec)
    return spec


def istft(input, n_fft, hop_length=None, win_length=None, window=None, center=True, normalized=False,
          onesided=None, length=None, return_complex=False):
    """torch.istft: the inverse of stft by overlap-add, divided by the window's squared overlap-add envelope."""
    from .factories import zeros
    if not isinstance(input, Tensor):
        raise TypeError(f"istft(): argument 'input' must be a Tensor, got {type(input).__name__}")
    if input._data.dtype.kind != "c":
        raise RuntimeError("istft requires a complex-valued input tensor matching the output from stft with "
                           "return_complex=True.")
    if input.ndim not in (2, 3):
        raise RuntimeError(f"istft: expected a tensor with 2 or 3 dimensions of complex dtype, got shape "
                           f"{tuple(input.shape)}")
    n_fft, hop, win = _lengths(n_fft, hop_length, win_length, "istft")
    spec = input if input.ndim == 3 else input.unsqueeze(0)
    n_freq, n_frames = spec.shape[1], spec.shape[2]
    if onesided is None:
        onesided = n_freq != n_fft
    if onesided and n_fft // 2 + 1 != n_freq:
        raise RuntimeError(f"istft: expected the frequency dimension (2nd from last) of the input tensor to equal "
                           f"n_fft / 2 + 1 when onesided=True, but got {n_freq}")
    if not onesided and n_freq != n_fft:
        raise RuntimeError(f"istft: expected the frequency dimension (2nd from last) of the input tensor to equal "
                           f"n_fft when onesided=False, but got {n_freq}")
    if onesided and return_complex:
        raise RuntimeError("cannot have onesided output if window or input is complex")
    norm = "ortho" if normalized else "backward"
    frames = spec.transpose(1, 2)  # (B, n_frames, n_freq)
    if return_complex:
        frames = _fft.ifft(frames, n=n_fft, norm=norm)
    else:  # a real signal: the half spectrum's inverse, as torch's (a full spectrum is cut to n_fft // 2 + 1 bins)
        frames = _fft.irfft(frames if onesided else frames[..., :n_fft // 2 + 1], n=n_fft, norm=norm)
    real_dtype = np.float64 if input._data.dtype == np.complex128 else np.float32
    w = _window(window, n_fft, win, real_dtype, "istft")
    frames = frames * w
    expected = n_fft + hop * (n_frames - 1)
    idx = (np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]).reshape(-1)
    batch = frames.shape[0]
    flat = frames.reshape(batch, -1)
    spots = Tensor._stored(np.broadcast_to(idx, (batch, idx.size)).copy())
    y = zeros(batch, expected, dtype=flat.dtype).scatter_add(1, spots, flat)
    wsq = (w * w).detach().numpy()
    envelope = np.zeros(expected, wsq.dtype)
    np.add.at(envelope, idx, np.tile(wsq, n_frames))
    start = n_fft // 2 if center else 0
    end = expected if length is None else start + int(length)
    if length is None and center:
        end = expected - n_fft // 2
    end = min(end, expected)
    y = y[:, start:end]
    envelope = envelope[start:end]
    if envelope.size and np.abs(envelope).min() < 1e-11:
        raise RuntimeError(f"istft: window overlap add min: {float(np.abs(envelope).min()):g} (the window fails the "
                           "NOLA condition)")
    y = y / Tensor(envelope, dtype=real_dtype)
    if length is not None and y.shape[-1] < length:
        from .nn import functional as F
        y = F.pad(y, (0, int(length) - y.shape[-1]))
    return y if input.ndim == 3 else y.squeeze(0)
