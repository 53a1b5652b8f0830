"""Containers: Sequential (with Keras-style compile/fit), ModuleList, ModuleDict."""
from __future__ import annotations

from collections import OrderedDict

from ..autograd import graph_free
from ..tensor import Tensor
from .linear import Linear
from .module import Module


class Sequential(Module):
    """Modules applied in order. ``Sequential(a, b)`` names them "0", "1"; an OrderedDict keeps names.

    Keras sugar: ``model.compile(loss=..., optimizer=..., metrics=[...])`` then
    ``model.fit(X, y, epochs=..., batch_size=..., validation_split=...)``, ``evaluate`` and
    ``predict`` on numpy arrays (implemented in forgegrad.train.keras).
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, m in args[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(args):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a Module")
                self.add_module(str(i), m)

    def forward(self, input):
        if graph_free():
            return self._forward_fused(input)
        for m in self._modules.values():
            input = m(input)
        return input

    def _forward_fused(self, input):
        # Inference without a graph: a Linear followed by an activation module that can run as
        # its epilogue (ReLU, LeakyReLU, GELU, Sigmoid, Tanh) is one kernel call instead of two
        # module calls. Same kernels, so the same results as running them one by one.
        mods = list(self._modules.values())
        n, i = len(mods), 0
        while i < n:
            m = mods[i]
            if i + 1 < n and type(m) is Linear and hasattr(mods[i + 1], "epilogue"):
                if isinstance(input, Tensor):
                    input = m.forward_fused(input, *mods[i + 1].epilogue())
                    i += 2
                    continue
            input = m(input)
            i += 1
        return input

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return mods[idx]

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self

    add = append  # Keras spelling

    # ---- Keras-style training (see forgegrad.train.keras) --------------------------------------
    def compile(self, loss, optimizer="adam", metrics=(), **optimizer_kwargs):
        from ..train import keras
        return keras.compile(self, loss=loss, optimizer=optimizer, metrics=metrics, **optimizer_kwargs)

    def fit(self, x, y, **kwargs):
        from ..train import keras
        return keras.fit(self, x, y, **kwargs)

    def evaluate(self, x, y, **kwargs):
        from ..train import keras
        return keras.evaluate(self, x, y, **kwargs)

    def predict(self, x, **kwargs):
        from ..train import keras
        return keras.predict(self, x, **kwargs)


class ModuleList(Module):
    def __init__(self, modules=None):
        super().__init__()
        for m in modules or ():
            self.append(m)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        mods = list(self._modules.values())
        return ModuleList(mods[idx]) if isinstance(idx, slice) else mods[idx]


class ModuleDict(Module):
    def __init__(self, modules=None):
        super().__init__()
        for k, m in (modules or {}).items():
            self.add_module(k, m)

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
