"""Small helpers for the shape and FLOP rules of ops/conv.py and ops/rnn.py.

(Kept out of ops/_meta.py, which holds the rules shared by every op family.)
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def with_args(rule: Callable) -> Callable:
    """A FLOP rule written with the op's own parameters, ``rule(out, x, weight, bias=None, ...)``,
    as the registry's ``flops(out, inputs, kwargs)``."""

    def flops(out, inputs, kwargs) -> int:
        return int(rule(out, *inputs, **kwargs))

    return flops


def window(size) -> int:
    """kH * kW of a kernel_size given as an int, (k,) or (kH, kW) (already validated)."""
    return int(np.prod(np.broadcast_to(np.asarray(size, dtype=np.int64), (2,))))
