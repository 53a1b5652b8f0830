"""Tensor repr's options (torch.set_printoptions; forgegrad._torch_globals sets them), kept apart so that
tensor.py reads them without importing the package-level functions."""
from __future__ import annotations

import sys

import numpy as np

DEFAULTS = {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80, "sci_mode": None}
OPTIONS = dict(DEFAULTS)


def array_body(host: np.ndarray, prefix: str = "tensor(") -> str:
    """The values part of a tensor's repr, under the current options."""
    o = OPTIONS
    threshold = o["threshold"]
    threshold = sys.maxsize if threshold == float("inf") else int(threshold)
    kw = {}
    if o["sci_mode"] is True and host.dtype.kind == "f":
        p = o["precision"]
        width = max((len(f"{v:.{p}e}") for v in host.flat), default=0)  # right-aligned, as numpy's own modes
        kw["formatter"] = {"float_kind": lambda v: f"{v:.{p}e}".rjust(width)}
    elif o["sci_mode"] is False:
        kw["suppress_small"] = True
    if host.dtype.kind == "f" and "formatter" not in kw:
        finite = host[np.isfinite(host)]
        if finite.size and np.any(finite != np.round(finite)):
            kw["floatmode"] = "fixed"  # torch's: every value with `precision` digits unless all are integral
    return np.array2string(host, separator=", ", precision=o["precision"], threshold=threshold,
                           edgeitems=o["edgeitems"], max_line_width=o["linewidth"], prefix=prefix, **kw)
