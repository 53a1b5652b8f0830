"""Shared helpers of the ops' cuda Functions (the kernels of forgegrad._C.cuda_nn on DeviceArrays).

The Functions themselves sit next to their CPU versions in each op's file and register with
``OpDef.add_device("cuda", ...)``; they take and return ``forgegrad._C.cuda.DeviceArray``s (Python
numbers stay numbers: the kernels read them as scalars). Every kernel is queued on the device's
stream without waiting. Ran on an H200: tests/test_cuda_nn.py passes (CI has no GPU).
"""
from __future__ import annotations

import math

from .. import _C


def kernels():
    """forgegrad._C.cuda_nn (empty in a build without CUDA)."""
    return _C.cuda_nn


def is_array(x) -> bool:
    return hasattr(x, "shape") and not isinstance(x, (int, float))


def shape_of(x):
    return tuple(x.shape) if is_array(x) else ()


def pw(op, *inputs, alpha=1.0, shape=None):
    """The pointwise kernel ``op`` over broadcast inputs (DeviceArrays, numbers or None)."""
    return kernels().pointwise(op, list(inputs), float(alpha), None if shape is None else list(shape))


def sum_to(g, shape):
    """g summed over the axes broadcasting added or stretched, to ``shape`` (the CPU's unbroadcast)."""
    shape = tuple(shape)
    return g if tuple(g.shape) == shape else kernels().sum_to(g, list(shape))


def reshape(a, shape):
    """A view of a with a new shape (DeviceArray.reshape shares the memory)."""
    shape = tuple(int(s) for s in shape)
    return a if tuple(a.shape) == shape else a.reshape(shape)


def keepdim_shape(in_shape, axes):
    """in_shape with the reduced axes set to 1 (the shape a reduced gradient broadcasts from)."""
    return tuple(1 if i in axes else s for i, s in enumerate(in_shape))


def numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def scalar_or_nan(v):
    """A clamp bound: None becomes NaN (the kernel's 'no bound')."""
    return math.nan if v is None else v
