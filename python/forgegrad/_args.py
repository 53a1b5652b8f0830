"""Argument checks shared by the layers and kernels: one definition of an int argument, a positive
int and an int-or-pair, with errors that name the owner (a class or function) and the argument.

Python ints and numpy integers are accepted; bools are not (``True`` is an int to Python, never a
size here).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["is_int", "integer", "positive_int", "pair", "single"]


def is_int(value) -> bool:
    """A Python int or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def integer(value, name: str, owner: str) -> int:
    """``value`` as an int; TypeError ``"<owner>: <name> must be an int, got ..."`` otherwise."""
    if not is_int(value):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}")
    return int(value)


def positive_int(value, name: str, owner: str) -> int:
    """``value`` as an int >= 1; ValueError ``"<owner>: <name> must be a positive int, got ..."``
    otherwise, for a wrong type too (as the layers always raised: model builders and the CLIs catch
    ValueError to report a bad configuration)."""
    if not is_int(value) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def pair(value, name: str, owner: str, minimum: Optional[int] = None) -> Tuple[int, int]:
    """An int ``v`` -> ``(v, v)``; a tuple/list of one or two ints -> a pair.

    TypeError ``"<owner>: <name> must be an int or a pair of ints, got ..."`` for anything else;
    with ``minimum``, ValueError ``"<owner>: <name> must be >= <minimum>, got ..."`` below it.
    """
    if is_int(value):
        out = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) in (1, 2) and all(is_int(v) for v in value):
        out = (int(value[0]), int(value[-1]))
    else:
        raise TypeError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")
    if minimum is not None and min(out) < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value!r}")
    return out


def single(value, name: str, owner: str, minimum: Optional[int] = None) -> int:
    """A 1-D size: an int, or a tuple/list of one int (as torch's 1-D layers take them) -> the int.

    TypeError ``"<owner>: <name> must be an int or a tuple of one int, got ..."`` for anything else; with
    ``minimum``, ValueError ``"<owner>: <name> must be >= <minimum>, got ..."`` below it.
    """
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if not is_int(value):
        raise TypeError(f"{owner}: {name} must be an int or a tuple of one int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value!r}")
    return int(value)
