"""export()'s argument checks: each bad argument is a TypeError or ValueError naming it before anything is traced
or written (a tolerance of "x" had failed inside the verification's numpy after the file was written, a negative
one as a verification error; ``dynamic_axes=[0]`` as an AttributeError; ``input_names="input"`` as five names)."""
from __future__ import annotations

import math
import numbers
from typing import Dict, List

__all__ = ["check_tolerance", "check_names", "check_dynamic_axes", "check_verify_sizes", "check_flag"]


def check_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"export: {name} must be True or False, got {value!r}")
    return value


def check_tolerance(value, name: str):
    """None (the default tolerance) or a finite real number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"export: {name} must be None or a number >= 0, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"export: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_names(names, name: str):
    """None or a list / tuple of str (a str itself would be read as one name per character)."""
    if names is None:
        return None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"export: {name} must be a list of non-empty strs, got {names!r}")
    return list(names)


def _axis(a, where: str) -> int:
    if isinstance(a, str) and a.lstrip("-").isdigit():  # a JSON object's key ("0"), as the CLI's --dynamic-axes gives
        return int(a)
    if isinstance(a, bool) or not isinstance(a, numbers.Integral):
        raise TypeError(f"export: dynamic_axes[{where!r}] axes must be ints, got {a!r}")
    return int(a)


def check_dynamic_axes(dynamic_axes):
    """None or {graph name: {axis: symbol} or a list / tuple of axes}, axes ints and symbols non-empty strs."""
    if dynamic_axes is None:
        return None
    if not isinstance(dynamic_axes, dict):
        raise TypeError("export: dynamic_axes must be a dict {input or output name: {axis: 'symbol'} or [axes]}, "
                        f"got {type(dynamic_axes).__name__}")
    for name, spec in dynamic_axes.items():
        if not isinstance(name, str):
            raise TypeError(f"export: dynamic_axes keys must be input or output names (strs), got {name!r}")
        if isinstance(spec, dict):
            for a, sym in spec.items():
                _axis(a, name)
                if not isinstance(sym, str) or not sym:
                    raise TypeError(f"export: dynamic_axes[{name!r}][{a}] must be a non-empty str (the axis' "
                                    f"symbol), got {sym!r}")
        elif isinstance(spec, (list, tuple)):
            for a in spec:
                _axis(a, name)
        else:
            raise TypeError(f"export: dynamic_axes[{name!r}] must be a dict {{axis: 'symbol'}} or a list of axes, "
                            f"got {spec!r}")
    return dynamic_axes


def check_verify_sizes(verify_sizes) -> List[Dict[str, int]]:
    """None or a list / tuple of {dynamic axis symbol: size (an int >= 0)}."""
    if verify_sizes is None:
        return None
    if not isinstance(verify_sizes, (list, tuple)):
        raise TypeError(f"export: verify_sizes must be a list of {{'axis symbol': size}} dicts, got {verify_sizes!r}")
    for sizes in verify_sizes:
        if not isinstance(sizes, dict):
            raise TypeError(f"export: verify_sizes must be a list of {{'axis symbol': size}} dicts, got an entry "
                            f"{sizes!r}")
        for sym, n in sizes.items():
            if isinstance(n, bool) or not isinstance(n, numbers.Integral):
                raise TypeError(f"export: verify_sizes[...][{sym!r}] must be an int, got {n!r}")
            if n < 0:
                raise ValueError(f"export: verify_sizes[...][{sym!r}] must be >= 0, got {n}")
    return list(verify_sizes)
