"""Tensor repr's options (torch.set_printoptions; forgegrad._torch_globals sets them), kept apart so that
tensor.py reads them without importing the package-level functions."""
from __future__ import annotations

import math
import sys

import numpy as np

DEFAULTS = {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80, "sci_mode": None}
OPTIONS = dict(DEFAULTS)


def _summarized(host: np.ndarray, edgeitems: int) -> np.ndarray:
    """The elements a summarized repr shows (torch's formatter measures those alone)."""
    for axis, n in enumerate(host.shape):
        if n > 2 * edgeitems:
            keep = np.r_[0:edgeitems, n - edgeitems:n]
            host = np.take(host, keep, axis=axis)
    return host


def _float_formatter(host: np.ndarray, summarize: bool):
    """torch's _Formatter for a floating tensor: integral values print as ``1.`` (int mode), scientific notation
    (unless set_printoptions' sci_mode says) when the nonzero finite magnitudes span more than 1000x, exceed 1e8
    or go below 1e-4, every element right-aligned to the widest nonzero finite one (NaN / inf / 0 do not widen
    the column). With no nonzero finite value: int mode, no padding."""
    p = OPTIONS["precision"]
    shown = _summarized(host, OPTIONS["edgeitems"]) if summarize else host
    vals = shown.reshape(-1).astype(np.float64)
    vals = vals[np.isfinite(vals) & (vals != 0)]
    int_mode, sci, width = True, False, 1
    if vals.size:
        mag = np.abs(vals)
        lo, hi = float(mag.min()), float(mag.max())
        int_mode = bool(np.all(vals == np.ceil(vals)))
        sci = OPTIONS["sci_mode"]
        if sci is None:  # torch 2.13 tests lo < 1e-4 in int mode too (a nonzero integer never is)
            sci = hi / lo > 1000.0 or hi > 1.0e8 or lo < 1.0e-4
        if sci:
            width = max(len(f"{v:.{p}e}") for v in vals.tolist())
        elif int_mode:
            width = max(len(f"{v:.0f}") + 1 for v in vals.tolist())
        else:
            width = max(len(f"{v:.{p}f}") for v in vals.tolist())

    def fmt(v) -> str:
        v = float(v)
        if sci:
            s = f"{v:{width}.{p}e}"
        elif int_mode:
            s = f"{v:.0f}" + ("" if math.isinf(v) or math.isnan(v) else ".")
        else:
            s = f"{v:.{p}f}"
        return s.rjust(width)
    return fmt


def array_body(host: np.ndarray, prefix: str = "tensor(") -> str:
    """The values part of a tensor's repr, under the current options."""
    o = OPTIONS
    threshold = o["threshold"]
    threshold = sys.maxsize if threshold == float("inf") else int(threshold)
    kw = {}
    if host.dtype.kind == "f":
        kw["formatter"] = {"float_kind": _float_formatter(host, host.size > threshold)}
    elif host.dtype.kind == "c":  # torch's: the real parts and the imaginary parts formatted as two float tensors
        re, im = _float_formatter(host.real, host.size > threshold), _float_formatter(host.imag, host.size > threshold)
        kw["formatter"] = {"complex_kind": lambda z: f"{re(z.real)}{'-' if math.copysign(1, z.imag) < 0 else '+'}"
                                                     f"{im(abs(z.imag)).strip()}j"}
    body = np.array2string(host, separator=", ", precision=o["precision"], threshold=threshold,
                           edgeitems=o["edgeitems"], max_line_width=o["linewidth"], prefix=prefix, **kw)
    return body.replace(", ..., ", ",  ..., ")  # torch's elision inside a row: " ..."
