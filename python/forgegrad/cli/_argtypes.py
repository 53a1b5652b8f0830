"""argparse ``type=`` converters shared by the subcommands: each takes the argument's text and
returns its value or raises ArgumentTypeError, which argparse reports as a usage error (exit 2)."""
from __future__ import annotations

import argparse
import math


def _converter(convert, ok, expected: str):
    """A type= function: convert(text), then ok(value); either failing reports 'expected <expected>'."""
    def parse(s):
        try:
            v = convert(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}")
        return v
    return parse


positive_int = _converter(int, lambda v: v > 0, "a positive integer")
positive_float = _converter(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
non_negative_int = _converter(int, lambda v: v >= 0, "an integer >= 0")
non_negative_float = _converter(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
fraction = _converter(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
