"""ParameterList and ParameterDict: torch's containers of parameters.

Each entry is registered on the container as a parameter named by its index ("0", "1", ...) or its key, so
``named_parameters``, ``state_dict`` (keys ``params.0``, ``params.left``: torch's), ``load_state_dict``,
optimizers and ``Module.to`` see them. A Tensor (or array) put in is wrapped in a Parameter, as torch does;
any other object is kept as a plain attribute (not a parameter), also as torch.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

import numpy as np

from ..tensor import Tensor
from .module import Module
from .parameter import Parameter

__all__ = ["ParameterList", "ParameterDict"]


def _as_parameter(value):
    if isinstance(value, Parameter):
        return value
    if isinstance(value, (Tensor, np.ndarray)):
        return Parameter(value)
    return value


def _repr_entry(name, value):
    if isinstance(value, Tensor):
        kind = "Parameter" if isinstance(value, Parameter) else "Tensor"
        size = "x".join(str(s) for s in value.shape)
        return f"({name}): {kind} containing: [{value.dtype} of size {size}]"
    return f"({name}): Object of type: {type(value).__name__}"


class ParameterList(Module):
    """``ParameterList(values=None)``: a list of parameters (append, extend, index, slice, iterate, ``+=``)."""

    def __init__(self, values=None):
        super().__init__()
        object.__setattr__(self, "_size", 0)
        if values is not None:
            self += values

    def _index(self, idx) -> int:
        if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
            raise TypeError(f"ParameterList indices must be integers or slices, not {type(idx).__name__}")
        i = int(idx) + (len(self) if idx < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"index {idx} is out of range")
        return i

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ParameterList([self[i] for i in range(len(self))[idx]])
        return getattr(self, str(self._index(idx)))

    def __setitem__(self, idx, param):
        setattr(self, str(self._index(idx)), _as_parameter(param))

    def __len__(self) -> int:
        return self._size

    def __iter__(self):
        return iter(self[i] for i in range(len(self)))

    def __iadd__(self, parameters):
        return self.extend(parameters)

    def append(self, value) -> "ParameterList":
        i = len(self)
        object.__setattr__(self, "_size", i + 1)
        setattr(self, str(i), _as_parameter(value))
        return self

    def extend(self, values) -> "ParameterList":
        if not isinstance(values, Iterable) or isinstance(values, (Tensor, np.ndarray)):
            raise TypeError(f"ParameterList.extend should be called with an iterable, but got "
                            f"{type(values).__name__}")
        for v in values:
            self.append(v)
        return self

    def forward(self, *args, **kwargs):
        raise RuntimeError("ParameterList should not be called (it holds parameters; index it instead)")

    def extra_repr(self) -> str:
        return "\n".join(_repr_entry(i, v) for i, v in enumerate(self))


class ParameterDict(Module):
    """``ParameterDict(parameters=None)``: an ordered dict of parameters with string keys (dict's methods).

    Built or updated from a plain dict, the keys are taken in sorted order; from an OrderedDict, a ParameterDict
    or a sequence of pairs, in their own order (torch's rule)."""

    def __init__(self, parameters=None):
        super().__init__()
        object.__setattr__(self, "_keys", OrderedDict())
        if parameters is not None:
            self.update(parameters)

    def _check_key(self, key) -> str:
        if not isinstance(key, str):
            raise TypeError(f"ParameterDict keys must be strings, got {type(key).__name__} {key!r}")
        if key == "" or "." in key:  # a state_dict key "pd.a.b" would name a submodule 'a' (torch refuses both)
            raise KeyError(f"ParameterDict: a key must be non-empty and contain no '.', got {key!r}")
        if key not in self._keys and (hasattr(type(self), key) or key in self.__dict__):
            raise KeyError(f"ParameterDict: key {key!r} would hide the attribute {key!r} of the module")
        return key

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key, value):
        self._check_key(key)
        setattr(self, key, _as_parameter(value))
        self._keys[key] = None

    def __delitem__(self, key):
        del self._keys[key]
        delattr(self, key)

    def __contains__(self, key) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self):
        return iter(self._keys)

    def __reversed__(self):
        return reversed(list(self._keys))

    def keys(self):
        return list(self._keys)

    def values(self):
        return [self[k] for k in self._keys]

    def items(self):
        return [(k, self[k]) for k in self._keys]

    def get(self, key, default=None):
        return self[key] if key in self else default

    def pop(self, key):
        v = self[key]
        del self[key]
        return v

    def popitem(self):
        if not self._keys:
            raise KeyError("popitem(): ParameterDict is empty")
        k = next(reversed(self._keys))
        return k, self.pop(k)

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def clear(self) -> None:
        for k in list(self._keys):
            del self[k]

    def copy(self) -> "ParameterDict":
        return ParameterDict(OrderedDict((k, self[k]) for k in self._keys))

    def fromkeys(self, keys, default=None) -> "ParameterDict":
        return ParameterDict((k, default) for k in keys)

    def update(self, parameters) -> None:
        if isinstance(parameters, (OrderedDict, ParameterDict)):
            pairs = list(parameters.items())
        elif isinstance(parameters, Mapping):
            pairs = sorted(parameters.items())
        elif isinstance(parameters, Iterable):
            pairs = []
            for j, p in enumerate(parameters):
                if not isinstance(p, Iterable) or len(p) != 2:
                    raise ValueError(f"ParameterDict update sequence element #{j} should be a (key, value) pair, "
                                     f"got {p!r}")
                pairs.append(tuple(p))
        else:
            raise TypeError(f"ParameterDict.update should be called with a mapping or an iterable of key/value "
                            f"pairs, but got {type(parameters).__name__}")
        for k, v in pairs:
            self[k] = v

    def __or__(self, other) -> "ParameterDict":
        out = self.copy()
        out.update(other)
        return out

    def __ior__(self, other) -> "ParameterDict":
        self.update(other)
        return self

    def forward(self, *args, **kwargs):
        raise RuntimeError("ParameterDict should not be called (it holds parameters; index it by key instead)")

    def extra_repr(self) -> str:
        return "\n".join(_repr_entry(k, v) for k, v in self.items())
