"""What the logic ops (ops/logic.py, ops/logic_more.py) and the comparisons (ops/compare.py) share: torch's dtype
promotion with its 0-d and Python-number rules, a cast that wraps out-of-range Python ints as torch's does, and the
check that an argument is a tensor or a number."""
from __future__ import annotations

import numpy as np

from .. import dtypes as _dtypes
from . import _meta as M

_NUM = (int, float, bool, np.number)


def is_arr(a) -> bool:
    return isinstance(a, (np.ndarray, M.MetaArray))


def _category(dt: np.dtype) -> int:
    return 0 if dt.kind == "b" else (1 if dt.kind in "iu" else 2)


def _number_dtype(n) -> np.dtype:
    if isinstance(n, (bool, np.bool_)):
        return np.dtype(np.bool_)
    if isinstance(n, (int, np.integer)):
        return np.dtype(np.int64)
    return _dtypes.default_float()  # torch's default dtype for a Python float


def _tier_dtype(dtypes) -> np.dtype:
    """numpy's promotion within one category; across categories the highest decides (float32 with int64 is float32,
    where numpy gives float64)."""
    top = max(_category(d) for d in dtypes)
    return np.result_type(*[d for d in dtypes if _category(d) == top])


def promote(*args) -> np.dtype:
    """torch.result_type of tensors (arrays) and numbers: tensors with dimensions decide, a 0-d tensor only where its
    category (bool < integer < float) is higher, a Python number only where its category is higher still (then a
    float is float32 and an int int64). ``uint8 & int8`` is int16, ``int8 > 300`` compares in int8."""
    tiers = ([a.dtype for a in args if is_arr(a) and len(a.shape) > 0],
             [a.dtype for a in args if is_arr(a) and len(a.shape) == 0],
             [_number_dtype(a) for a in args if not is_arr(a) and a is not None])
    result = None
    for tier in tiers:
        if not tier:
            continue
        dt = _tier_dtype(tier)
        if result is None:
            result = dt
        elif _category(dt) > _category(result):
            result = dt
    return np.dtype(result if result is not None else np.float32)


def cast(a, dt: np.dtype):
    """``a`` in dtype ``dt``; a Python int out of the dtype's range wraps (uint8 > -1 compares with 255, as torch)."""
    if isinstance(a, np.ndarray):
        return a if a.dtype == dt else a.astype(dt)
    if isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_)) and dt.kind in "iu":
        info = np.iinfo(dt)
        a = int(a) & ((1 << info.bits) - 1)
        if info.min < 0 and a > info.max:
            a -= 1 << info.bits
    return np.asarray(a, dtype=dt)


def operand(a, who: str, name: str, numbers: bool = True):
    """``a`` itself if it is an array (a tensor's data) or, where ``numbers``, a real number; else a TypeError naming
    the argument."""
    if is_arr(a) or (numbers and isinstance(a, _NUM) and not isinstance(a, complex)):
        return a
    what = "a forgegrad.Tensor or a number" if numbers else "a forgegrad.Tensor"
    raise TypeError(f"{who}(): argument {name!r} must be {what}, got {type(a).__name__}")


def dtype_name(dt: np.dtype) -> str:
    return {"b": "bool"}.get(dt.kind, str(dt))
