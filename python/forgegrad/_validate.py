"""Argument checks for public functions and kernel wrappers: a wrong type or value raises a
TypeError / ValueError that names the parameter, instead of being coerced by truthiness (``bool("abc")``),
truncated (``int(1.5)``) or failing later with Python's generic ``float() argument must be ...``.

    training = check_bool(training, "training")
    ignore_index = check_int(ignore_index, "ignore_index")
    beta1 = check_float(beta1, "beta1", low=0.0, high=1.0, high_open=True)

numpy scalars are accepted like their Python counterparts (``np.bool_`` as a bool, ``np.int64`` as an
int, any real number as a float); bools are not ints or floats here (``lr=True`` is a mistake).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np

__all__ = ["check_bool", "check_flag", "check_int", "check_float"]


def _type_name(value) -> str:
    return type(value).__name__


def is_array_or_number(value, real: bool = False) -> bool:
    """Whether ``value`` can be an op's other operand: a numpy array or scalar, or a Python number
    (a real one when ``real``). numpy would also take a list or a string as an array, torch does not."""
    return isinstance(value, (np.ndarray, np.generic, numbers.Real if real else numbers.Number))


def check_bool(value, name: str) -> bool:
    """``value`` as a Python bool; only bool and numpy.bool_ are accepted. For the flags torch's C++
    argument parser reads (``training``, ``ceil_mode``, ``keepdim``, ...), which refuse anything but a bool
    (torch refuses numpy.bool_ too; forgegrad takes it, numpy being its array type)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {_type_name(value)} {value!r}")


def check_flag(value, name: str) -> bool:
    """``value``'s truth value, for the flags torch reads in Python with ``if flag:`` (``inplace``,
    ``return_indices``, modules' ``bias`` / ``affine`` / ``track_running_stats`` ...): torch takes 0, 1,
    None, 1.5 there, and so does forgegrad. A string is refused, unlike torch: ``affine="False"`` would be
    True by truth value, which is never what was meant."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a bool, got {_type_name(value)} {value!r}")
    try:
        return bool(value)
    except (TypeError, ValueError, RuntimeError) as e:  # an array of several elements has no truth value
        raise TypeError(f"{name} must be a bool, got {_type_name(value)} without a truth value ({e})") from None


def check_int(value, name: str, *, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """``value`` as a Python int: an int or numpy integer (not a bool, not a float such as 1.5 or
    1.0), optionally within [low, high]."""
    if type(value) is not int:  # int itself skips the (abc) Integral check: this runs per op call
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
            raise TypeError(f"{name} must be an int, got {_type_name(value)} {value!r}")
        value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_float(value, name: str, *, low: Optional[float] = None, high: Optional[float] = None,
                low_open: bool = False, high_open: bool = False, finite: bool = False) -> float:
    """``value`` as a Python float: any real number but a bool (ints and numpy scalars included; a
    0-d array through its ``__float__``), optionally within a range (closed unless ``low_open`` /
    ``high_open``) and finite. NaN fails any range check."""
    kind = type(value)
    if kind is float or kind is int:  # the common case, cheaply (optimizer steps check every call)
        value = float(value)
    elif isinstance(value, (bool, np.bool_)) or getattr(getattr(value, "dtype", None), "kind", "") == "b":
        raise TypeError(f"{name} must be a number (float), got {_type_name(value)} {value!r}")
    elif isinstance(value, (numbers.Real, np.integer, np.floating)):
        value = float(value)
    elif hasattr(type(value), "__float__"):  # e.g. a 0-d numpy array
        try:
            value = float(value)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a number (float), got {_type_name(value)}: {e}") from None
    else:
        raise TypeError(f"{name} must be a number (float), got {_type_name(value)} {value!r}")
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None or high is not None:
        ok = not math.isnan(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            lo = "(" if low_open else "["
            hi = ")" if high_open else "]"
            raise ValueError(f"{name} must be in {lo}{'-inf' if low is None else low}, "
                             f"{'inf' if high is None else high}{hi}, got {value}")
    return value
