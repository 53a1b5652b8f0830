"""torch's parameter names where forgegrad's functions had their own (tools/signature_audit.py's ``renamed``):
``torch.det(input)`` where forgegrad.linalg.det takes ``A`` (torch.linalg's name, kept there), ``torch.pow(input,
exponent)`` and torch's scalar-base ``torch.pow(self=2, exponent=t)``, ``torch.split(tensor,
split_size_or_sections, dim)``, ``Tensor.orgqr(input2)``, and Tensor.to's three overloads (``to(device, dtype,
non_blocking, copy)``, ``to(dtype, non_blocking, copy)``, ``to(tensor, non_blocking, copy)``), which torch resolves
by the first argument's type. A keyword call with torch's name means what it means in torch."""
from __future__ import annotations

import inspect

from .tensor import Tensor


def _input(x, name, who):
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}(): argument '{name}' must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


def det(input):
    """torch.det(input): see forgegrad.linalg.det."""
    from .linalg import det as _det
    return _det(_input(input, "input", "det"))


def inverse(input):
    """torch.inverse(input): see forgegrad.linalg.inv."""
    from .linalg import inv
    return inv(_input(input, "input", "inverse"))


def logdet(input):
    """torch.logdet(input): log det, NaN where det < 0 (see forgegrad.linalg.logdet)."""
    from .linalg import logdet as _logdet
    return _logdet(_input(input, "input", "logdet"))


def slogdet(input):
    """torch.slogdet(input): (sign, logabsdet), see forgegrad.linalg.slogdet."""
    from .linalg import slogdet as _slogdet
    return _slogdet(_input(input, "input", "slogdet"))


def matrix_power(input, n):
    """torch.matrix_power(input, n): see forgegrad.linalg.matrix_power."""
    from .linalg import matrix_power as _mp
    return _mp(_input(input, "input", "matrix_power"), n)


def orgqr(input, input2):
    """torch.orgqr(input, input2): the Householder product of geqrf's reflectors ``input`` and scalars ``input2``
    (torch.linalg.householder_product(A, tau))."""
    from ._linalg_house import householder_product
    return householder_product(input, input2)


def _orgqr_method(self, input2):
    return orgqr(self, input2)


_orgqr_method.__name__ = "orgqr"


def pow(input=None, exponent=None, *, self=None, out=None):  # noqa: A001  (torch.pow)
    """torch.pow(input, exponent), or torch's scalar base ``pow(self=number, exponent=tensor)`` (also positional:
    ``torch.pow(2, t)``), with torch's dtype promotion for a Python number."""
    if out is not None:
        raise TypeError("pow(): forgegrad has no out= (results are new tensors): write y = torch.pow(...) or, into "
                        "an existing tensor, y.copy_(torch.pow(...))")
    if self is not None:
        if input is not None:
            raise TypeError("pow(): give the base as input= or self=, not both")
        input = self
    if input is None or exponent is None:
        raise TypeError("pow() missing a required argument: 'input' (or 'self') and 'exponent'")
    if isinstance(input, Tensor):
        return input.pow(exponent)
    if isinstance(exponent, Tensor):  # a number raised to a tensor: Tensor.__rpow__ promotes as torch's
        return exponent.__rpow__(input)
    raise TypeError(f"pow(): argument 'input' or 'exponent' must be a forgegrad.Tensor, got "
                    f"{type(input).__name__} and {type(exponent).__name__}")


def split(tensor, split_size_or_sections, dim=0):
    """torch.split(tensor, split_size_or_sections, dim=0): the same as ``tensor.split(...)``."""
    return _input(tensor, "tensor", "split").split(split_size_or_sections, dim)


def view_dtype(t, dtype):
    """Tensor.view(dtype): the same bytes read as ``dtype`` (torch's): a wider element takes several of the last
    dim's (its size must divide), a narrower one splits each; not differentiable (torch's result has no grad_fn).
    It shares the tensor's memory: a write into either is seen in the other, as torch's."""
    import numpy as np

    from .dtypes import to_numpy
    nd = np.dtype(to_numpy(dtype))
    a = t._data
    if not isinstance(a, np.ndarray):
        raise NotImplementedError(f"view(dtype): only for tensors in host memory, got a tensor on {t.device}")
    old, new = a.dtype.itemsize, nd.itemsize
    if old != new:
        if a.ndim == 0:
            raise RuntimeError(f"view(dtype): a 0-d tensor cannot be viewed as {dtype} (element size {new} "
                               f"bytes, the tensor's is {old})")
        if not a.flags["C_CONTIGUOUS"]:
            raise RuntimeError("view(dtype): the last dim must be contiguous to view as a dtype of another size")
        if new > old and (a.shape[-1] * old) % new:
            raise RuntimeError(f"view(dtype): the last dim's size ({a.shape[-1]}) times the element size ({old}) "
                               f"must be divisible by {dtype}'s element size ({new})")
    return Tensor._wrap_exact(a.view(nd))


# ---- Tensor.to ---------------------------------------------------------------------------------------------------
_TO_MORE = ("non_blocking", "copy")


def is_dtype(x) -> bool:
    import numpy as np

    from .dtypes import dtype
    return isinstance(x, (dtype, np.dtype)) or (isinstance(x, type) and issubclass(x, np.generic))


def to_arguments(args, kwargs):
    """(device, dtype, non_blocking, copy) of a Tensor.to call, read as torch reads it: a first positional dtype or
    tensor picks the ``to(dtype, non_blocking, copy)`` / ``to(tensor, non_blocking, copy)`` overload, anything else
    ``to(device, dtype, non_blocking, copy)``; keywords device=, dtype=, tensor=, non_blocking=, copy=."""
    kw = dict(kwargs)
    if "memory_format" in kw:
        raise TypeError("to(): memory_format= is not supported (forgegrad tensors are dense and row-major; see "
                        "docs/torch_compat.md 'Signature gaps')")
    first = args[0] if args else None
    if is_dtype(first) or isinstance(first, Tensor):
        names = ("tensor" if isinstance(first, Tensor) else "dtype",) + _TO_MORE
    else:
        names = ("device", "dtype") + _TO_MORE
    if len(args) > len(names):
        raise TypeError(f"to() takes at most {len(names)} positional arguments here ({', '.join(names)}), got "
                        f"{len(args)}")
    for name, value in zip(names, args):
        if name in kw:
            raise TypeError(f"to() got multiple values for argument '{name}'")
        kw[name] = value
    unknown = set(kw) - {"device", "dtype", "tensor"} - set(_TO_MORE)
    if unknown:
        raise TypeError(f"to() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    device, dtype = kw.get("device"), kw.get("dtype")
    if "tensor" in kw:
        other = kw["tensor"]
        if not isinstance(other, Tensor):
            raise TypeError(f"to(): argument 'tensor' must be a Tensor, got {type(other).__name__}")
        if device is not None or dtype is not None:
            raise TypeError("to(): give a tensor, or a device and / or dtype, not both")
        device, dtype = other.device, other.dtype
    return device, dtype, bool(kw.get("non_blocking", False)), bool(kw.get("copy", False))


TO_SIGNATURE = inspect.Signature([
    inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + [
    inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
    for n, d in (("device", None), ("dtype", None), ("non_blocking", False), ("copy", False))] + [
    inspect.Parameter("tensor", inspect.Parameter.KEYWORD_ONLY, default=None)])


def install(package_namespace: dict) -> None:
    """torch's names on the package (replacing forgegrad.linalg's ``A``-named functions there) and Tensor.orgqr."""
    for fn in (det, inverse, logdet, slogdet, matrix_power, orgqr, pow, split):
        package_namespace[fn.__name__] = fn
    Tensor.orgqr = _orgqr_method
    Tensor.to.__signature__ = TO_SIGNATURE  # what help() and inspect show: torch's device overload
