"""Containers: Sequential (with Keras-style compile/fit), ModuleList, ModuleDict."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..autograd import graph_free
from ..tensor import Tensor
from .activation import _Activation
from .linear import Linear, _fused_linear, feature_size_after
from .module import Module

__all__ = ["Sequential", "ModuleList", "ModuleDict"]

_NDARRAY = np.ndarray
_F32 = np.dtype(np.float32)  # the fused kernels are float32; float64 runs the modules one by one


def _fusable_activation(m) -> bool:
    """An activation module whose kernel code a Linear can apply in place: one of nn's activations
    whose forward is the op itself (a subclass that overrides forward runs as its own step)."""
    return isinstance(m, _Activation) and type(m).forward is _Activation.forward


def _inference_plan(mods):
    """[(module, act)]: act False runs the module as is; for a Linear, act is None (no epilogue)
    or the activation module fused into its kernel call (that module then takes no step)."""
    plan, i = [], 0
    while i < len(mods):
        m = mods[i]
        if type(m) is Linear:
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if _fusable_activation(nxt):
                plan.append((m, nxt))
                i += 2
                continue
            plan.append((m, None))
        else:
            plan.append((m, False))
        i += 1
    return plan


class _ModuleSequence(Module):
    """Submodules named "0", "1", ... in order: len, iteration, indexing and append."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self._from_items(list(self._modules.items())[idx])
        return list(self._modules.values())[idx]

    def append(self, module: Module):
        self.add_module(str(len(self._modules)), module)
        return self


class Sequential(_ModuleSequence):
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
        self._build_known_sizes()

    def _build_known_sizes(self) -> None:
        # Keras builds every layer when the input size is known (Dense(64, input_dim=100), then
        # Dense(10)): so do we, so that an optimizer created now holds every layer's parameters.
        size = None
        for m in self._modules.values():
            size = feature_size_after(m, size)

    def append(self, module: Module):
        super().append(module)
        self._build_known_sizes()
        return self

    add = append  # Keras spelling

    def forward(self, input):
        if graph_free():
            return self._forward_fused(input)
        for m in self._modules.values():
            input = m(input)
        return input

    def _forward_fused(self, input):
        # Inference without a graph: each Linear is one kernel call (the layer's checks, bias and
        # GEMM in C++), with a following activation module that can run as its epilogue (ReLU,
        # LeakyReLU, GELU, Sigmoid, Tanh) applied inside the same call. Same kernels, so the same
        # results as running the modules one by one. The plan is rebuilt when the modules change.
        mods = tuple(self._modules.values())
        plan = self.__dict__.get("_inference_plan")
        if plan is None or plan[0] != mods:
            plan = (mods, _inference_plan(mods))
            self.__dict__["_inference_plan"] = plan
        for m, act in plan[1]:
            # the fused kernel takes CPU arrays; on another device (meta) the modules run one by one
            # (a module with forward pre-hooks, e.g. a pruned Linear, runs its hooks through m(input))
            if act is not False and isinstance(input, Tensor) and type(input._data) is _NDARRAY \
                    and not m.__dict__.get("_forward_pre_hooks") and type(m.weight._data) is _NDARRAY \
                    and input._data.dtype is _F32 and m.weight._data.dtype is _F32:
                code, alpha = (-1, 0.0) if act is None else act.epilogue()
                input = _fused_linear(input, m.weight, m.bias, code, alpha)
            else:
                input = m(input)
                if act not in (None, False):  # input was not a Tensor: run the activation too
                    input = act(input)
        return input

    def _from_items(self, items):
        return Sequential(OrderedDict(items))

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


class ModuleList(_ModuleSequence):
    def __init__(self, modules=None):
        super().__init__()
        for m in modules or ():
            self.append(m)

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def _from_items(self, items):
        return ModuleList([m for _, m in items])


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
