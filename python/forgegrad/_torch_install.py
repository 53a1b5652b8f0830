"""What the torch-name modules (_torch_math, _torch_pointwise, _torch_logic, _torch_shape_methods) share: package
functions that call a registry op by name, and Tensor methods made from package functions, in-place forms included."""
from __future__ import annotations

import inspect

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


def method_signature(fn):
    """fn's signature with its first parameter named ``self``: what help() and inspect show for the method made of
    it (tools/signature_audit.py reads the parameter names there)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        params[0] = params[0].replace(name="self")
    return sig.replace(parameters=params)


def positional(sig, self, args, kwargs):
    """(args, kwargs) with the keywords that have a positional slot in ``sig`` moved into args (so an in-place
    method sees a tensor passed by keyword, ``x.heaviside_(values=t)``, as it sees a positional one)."""
    if not kwargs or sig is None:
        return args, kwargs
    bound = sig.bind(self, *args, **kwargs)
    return bound.args[1:], bound.kwargs


def method(fn):
    """``Tensor.<name>(...)`` as ``fn(self, ...)``."""
    def m(self, *args, **kwargs):
        return fn(self, *args, **kwargs)
    m.__name__ = fn.__name__
    m.__doc__ = fn.__doc__
    m.__signature__ = method_signature(fn)
    return m


def inplace_method(fn, name: str):
    """``Tensor.<name>_``: ``fn(self, ...)`` written into self with torch's in-place rules (forgegrad/_inplace.py:
    the leaf and view refusals, the version counter, no float result into an integer tensor)."""
    sig = method_signature(fn)

    def m(self, *args, **kwargs):
        args, kwargs = positional(sig, self, args, kwargs)
        pos = [i for i, a in enumerate(args) if isinstance(a, Tensor)]

        def compute(t, *tensors):
            full = list(args)
            for i, v in zip(pos, tensors):
                full[i] = v
            return fn(t, *full, **kwargs)
        return self._inplace(compute, name + "_", *(args[i] for i in pos))
    m.__name__ = name + "_"
    m.__doc__ = f"In-place {name} (Tensor.{name}_ of torch)."
    m.__signature__ = sig
    return m
