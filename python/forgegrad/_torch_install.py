"""What the torch-name modules (_torch_math, _torch_pointwise, _torch_logic, _torch_shape_methods) share: package
functions that call a registry op by name, and Tensor methods made from package functions, in-place forms included."""
from __future__ import annotations

from .ops.registry import _OPS
from .tensor import Tensor


def op_function(name: str, n_inputs: int, alias: str = None, doc: str = None):
    """``forgegrad.<alias or name>(input[, other])``: the registry op ``name`` on one or two inputs."""
    if n_inputs == 1:
        def fn(input):
            return _OPS[name](input)
    else:
        def fn(input, other):
            return _OPS[name](input, other)
    fn.__name__ = alias or name
    fn.__doc__ = doc or (f"torch.{alias or name}(input{', other' if n_inputs == 2 else ''}), "
                         f"see the registry op {name!r} in forgegrad/ops.")
    return fn


def method(fn):
    """``Tensor.<name>(...)`` as ``fn(self, ...)``."""
    def m(self, *args, **kwargs):
        return fn(self, *args, **kwargs)
    m.__name__ = fn.__name__
    m.__doc__ = fn.__doc__
    return m


def inplace_method(fn, name: str):
    """``Tensor.<name>_``: ``fn(self, ...)`` written into self with torch's in-place rules (forgegrad/_inplace.py:
    the leaf and view refusals, the version counter, no float result into an integer tensor)."""
    def m(self, *args, **kwargs):
        pos = [i for i, a in enumerate(args) if isinstance(a, Tensor)]

        def compute(t, *tensors):
            full = list(args)
            for i, v in zip(pos, tensors):
                full[i] = v
            return fn(t, *full, **kwargs)
        return self._inplace(compute, name + "_", *(args[i] for i in pos))
    m.__name__ = name + "_"
    m.__doc__ = f"In-place {name} (Tensor.{name}_ of torch)."
    return m
