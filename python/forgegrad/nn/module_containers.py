"""The indexed containers: ModuleList, ModuleDict (and torch's deprecated Container), with the base they share with
Sequential (submodules named "0", "1", ...). Semantics and error texts follow torch/nn/modules/container.py."""
from __future__ import annotations

import operator
import warnings
from collections import OrderedDict
from collections import abc as _abc
from itertools import chain

from .module import Module

__all__ = ["ModuleList", "ModuleDict", "Container"]


class _ModuleSequence(Module):
    """Submodules named "0", "1", ... in order: len, iteration, indexing, item assignment and deletion, pop,
    append (torch's semantics and error texts: torch/nn/modules/container.py)."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def _abs_index(self, idx) -> int:
        size = len(self._modules)
        idx = operator.index(idx)
        if not -size <= idx < size:
            raise IndexError(f"index {idx} is out of range")
        return idx % size

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self._from_items(list(self._modules.items())[idx])
        return list(self._modules.values())[self._abs_index(idx)]

    def __setitem__(self, idx, module) -> None:
        setattr(self, list(self._modules)[self._abs_index(idx)], module)  # (a non-Module: TypeError there)
        self.__dict__.pop("_inference_plan", None)

    def __delitem__(self, idx) -> None:
        keys = list(self._modules)
        for key in (keys[idx] if isinstance(idx, slice) else [keys[self._abs_index(idx)]]):
            delattr(self, key)
        self._renumber(list(self._modules.values()))

    def _renumber(self, modules) -> None:
        """Make ``modules`` the submodules, named "0", "1", ... (torch renumbers after a deletion). The
        ``_modules`` dict is refilled, not replaced: forgegrad.compile's check of a model holds that dict and
        sees the change through it. The cached inference plan goes too (it is rebuilt at the next call)."""
        d = self.__dict__
        for key in self._modules:
            d.pop(key, None)  # the attribute mirrors of the registry (Module._register)
        self._modules.clear()
        for i, m in enumerate(modules):
            self._modules[str(i)] = m
            d[str(i)] = m
        d.pop("_inference_plan", None)

    def _insert(self, index, module) -> None:
        index = operator.index(index)
        n = len(self._modules)
        if not -n <= index <= n:
            raise IndexError(f"Index out of range: {index}")
        modules = list(self._modules.values())
        modules.insert(index + n if index < 0 else index, module)
        self._renumber(modules)

    def pop(self, key):
        """The module (or, for a slice, the container of modules) at ``key``, removed; the rest renumbered."""
        v = self[key]
        del self[key]
        return v

    def append(self, module: Module):
        self.add_module(str(len(self._modules)), module)
        return self


class ModuleList(_ModuleSequence):
    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def extend(self, modules) -> "ModuleList":
        if not isinstance(modules, _abc.Iterable):
            raise TypeError("ModuleList.extend should be called with an iterable, but got " + type(modules).__name__)
        for m in modules:
            self.append(m)
        return self

    def __iadd__(self, modules) -> "ModuleList":
        return self.extend(modules)

    def __add__(self, other) -> "ModuleList":
        combined = ModuleList()
        for i, module in enumerate(chain(self, other)):
            combined.add_module(str(i), module)
        return combined

    def insert(self, index: int, module: Module) -> None:
        """Put ``module`` before position ``index`` (-len <= index <= len, as Sequential's; torch's own takes
        0..len only); keys renumbered."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._insert(index, module)

    def _from_items(self, items):
        return ModuleList([m for _, m in items])


class ModuleDict(Module):
    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __delitem__(self, key) -> None:
        if key not in self._modules:
            raise KeyError(key)
        delattr(self, key)

    def __contains__(self, key) -> bool:
        return key in self._modules

    def clear(self) -> None:
        for key in list(self._modules):
            delattr(self, key)

    def pop(self, key):
        v = self[key]
        del self[key]
        return v

    def update(self, modules) -> None:
        """Add or replace modules from a mapping (or a ModuleDict) or an iterable of (key, module) pairs."""
        if not isinstance(modules, _abc.Iterable):
            raise TypeError("ModuleDict.update should be called with an iterable of key/value pairs, but got "
                            + type(modules).__name__)
        if isinstance(modules, (OrderedDict, ModuleDict, _abc.Mapping)):
            for key, module in modules.items():
                self[key] = module
            return
        for j, m in enumerate(modules):
            if not isinstance(m, _abc.Iterable):
                raise TypeError("ModuleDict update sequence element #" + str(j) + " should be Iterable; is"
                                + type(m).__name__)
            if not len(m) == 2:
                raise ValueError("ModuleDict update sequence element #" + str(j) + " has length " + str(len(m))
                                 + "; 2 is required")
            self[m[0]] = m[1]

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()


class Container(Module):
    """torch.nn.Container (deprecated in torch, and here): a Module whose keyword arguments become its children."""

    def __init__(self, **kwargs):
        warnings.warn("`nn.Container` is deprecated. All of its functionality is now implemented in `nn.Module`. "
                      "Subclass that instead.", FutureWarning, stacklevel=2)
        super().__init__()
        for key, value in kwargs.items():
            self.add_module(key, value)
