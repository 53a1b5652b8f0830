"""forgegrad.nn.utils.prune: torch.nn.utils.prune's pruning, with its names, masks and state_dict keys.

Pruning ``module.<name>`` replaces the parameter by ``<name>_orig`` (the parameter, still trained) and
a buffer ``<name>_mask`` (1 keeps, 0 prunes); a forward pre-hook recomputes the plain attribute
``module.<name> = <name>_orig * <name>_mask`` before every forward, so the gradient of the pruned
entries is zero. Pruning the same tensor again combines the masks as torch's PruningContainer does
(an unstructured amount counts the entries still unpruned). ``remove`` makes the pruning permanent.

    prune.l1_unstructured(model[0], "weight", amount=0.5)
    prune.ln_structured(conv, "weight", amount=0.25, n=2, dim=0)
    prune.global_unstructured([(m1, "weight"), (m2, "weight")], prune.L1Unstructured, amount=0.8)
    prune.remove(model[0], "weight")

The masks keep the dense shape (the layer costs as much as before); ``forgegrad.compression.shrink``
removes structurally pruned rows/channels to make the model smaller and faster.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ... import random as _random
from ...tensor import Tensor
from ..parameter import Parameter

__all__ = ["BasePruningMethod", "PruningContainer", "Identity", "RandomUnstructured", "L1Unstructured",
           "RandomStructured", "LnStructured", "CustomFromMask", "identity", "random_unstructured",
           "l1_unstructured", "random_structured", "ln_structured", "global_unstructured",
           "custom_from_mask", "remove", "is_pruned"]


# ---- amounts ------------------------------------------------------------------------------------
def _validate_amount(amount) -> None:
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise TypeError(f"prune: amount must be an int (entries) or a float fraction in [0, 1], got {amount!r}")
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise ValueError(f"prune: amount={amount} should either be a float in the range [0, 1] or a "
                             "non-negative integer")
    elif not 0.0 <= float(amount) <= 1.0:
        raise ValueError(f"prune: amount={amount} should either be a float in the range [0, 1] or a "
                         "non-negative integer")


def _n_to_prune(amount, size: int) -> int:
    """Entries to prune: ``amount`` itself when an int, else round(amount * size) (Python's round,
    as torch). An int larger than ``size`` is an error."""
    if isinstance(amount, numbers.Integral):
        if amount > size:
            raise ValueError(f"prune: amount={amount} should be smaller than the number of parameters to "
                             f"prune={size}")
        return int(amount)
    return round(float(amount) * size)


def _smallest(scores: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the k smallest scores (ties broken by position, so results are deterministic)."""
    return np.argsort(scores, kind="stable")[:k]


def _norm_along(t: np.ndarray, n, dim: int) -> np.ndarray:
    """The n-norm of every slice t[..., i, ...] along ``dim`` (torch.norm over the other dims)."""
    axes = tuple(d for d in range(t.ndim) if d != dim)
    a = np.abs(t.astype(np.float64))
    if n == "fro":
        n = 2
    if not isinstance(n, numbers.Real) or isinstance(n, bool):
        raise ValueError(f"ln_structured: n must be a number, inf, -inf or 'fro', got {n!r}")
    if n == math.inf:
        return a.max(axis=axes)
    if n == -math.inf:
        return a.min(axis=axes)
    if n == 0:
        return (a != 0).sum(axis=axes).astype(np.float64)
    return (a ** n).sum(axis=axes) ** (1.0 / n)


def _validate_dim(t: np.ndarray, dim: int, who: str) -> int:
    if t.ndim <= 1:
        raise ValueError(f"{who}: structured pruning needs a tensor with at least 2 dims, got shape {t.shape}")
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not -t.ndim <= dim < t.ndim:
        raise IndexError(f"{who}: dim {dim!r} is out of range for a tensor with {t.ndim} dims")
    return int(dim) % t.ndim


# ---- methods ------------------------------------------------------------------------------------
class BasePruningMethod:
    """A pruning method: ``compute_mask(t, default_mask)`` on numpy arrays; the instance is the
    forward pre-hook that applies the mask (its ``_tensor_name`` is the pruned tensor's name)."""

    PRUNING_TYPE = "unstructured"  # "unstructured", "structured" (with a .dim) or "global"
    _tensor_name = None

    def __call__(self, module, inputs):
        setattr(module, self._tensor_name, self.apply_mask(module))

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply_mask(self, module) -> Tensor:
        """``<name>_orig * <name>_mask``, differentiable with respect to ``<name>_orig``."""
        orig = getattr(module, self._tensor_name + "_orig")
        mask = getattr(module, self._tensor_name + "_mask")
        return orig * mask

    @classmethod
    def apply(cls, module, name: str, *args, importance_scores=None, **kwargs):
        """Prune ``module.<name>`` with ``cls(*args, **kwargs)`` (combined with earlier pruning of the same
        tensor); returns the method (the hook)."""
        from ..module import Module

        if not isinstance(module, Module):
            raise TypeError(f"prune: module must be a forgegrad Module, got {type(module).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"prune: name must be a str, got {type(name).__name__}")
        hooks = module._forward_pre_hooks
        old = [(k, h) for k, h in hooks.items() if isinstance(h, BasePruningMethod) and h._tensor_name == name]
        if len(old) > 1:
            raise RuntimeError(f"prune: {name!r} of {type(module).__name__} has {len(old)} pruning hooks; expected one")
        method = cls(*args, **kwargs)
        method._tensor_name = name
        old_method = old[0][1] if old else None
        if old_method is None:
            orig = module._parameters.get(name)
            if not isinstance(orig, Parameter):
                have = sorted(k for k, v in module._parameters.items() if v is not None)
                raise ValueError(f"prune: {type(module).__name__} has no parameter {name!r} to prune "
                                 f"(its parameters: {have})")
        current = getattr(module, name)  # the pruned tensor so far: re-pruning ranks what is left
        scores = current._data if importance_scores is None else _as_array(importance_scores, "importance_scores")
        if scores.shape != tuple(current.shape):
            raise ValueError(f"prune: importance_scores must have the shape of {name} {tuple(current.shape)}, "
                             f"got {scores.shape}")
        if old_method is None:
            default_mask = np.ones(current.shape, np.float32)
        else:
            container = old_method if isinstance(old_method, PruningContainer) else PruningContainer(old_method)
            container.add_pruning_method(method)
            method = container
            default_mask = np.array(getattr(module, name + "_mask")._data, dtype=np.float32)
        # the mask in the parameter's dtype (0 / 1: exact), as torch's
        mask = np.ascontiguousarray(method.compute_mask(scores, default_mask), dtype=current._data.dtype)
        if old_method is None:
            delattr(module, name)
            module.register_parameter(name + "_orig", orig)
        else:
            del hooks[old[0][0]]
        module.register_buffer(name + "_mask", Tensor._stored(mask))
        setattr(module, name, method.apply_mask(module))
        module.register_forward_pre_hook(method)
        return method

    def prune(self, t):
        """``t * compute_mask(t)`` (a numpy array; no module involved)."""
        a = _as_array(t, "t")
        return a * self.compute_mask(a, np.ones_like(a, dtype=np.float32))

    def remove(self, module) -> None:
        """Make the pruning permanent: ``<name>`` becomes a Parameter holding orig * mask again."""
        name = self._tensor_name
        pruned = self.apply_mask(module)._data
        if name in module.__dict__ and name not in module._parameters:
            object.__delattr__(module, name)
        orig = module._parameters[name + "_orig"]
        delattr(module, name + "_orig")
        delattr(module, name + "_mask")
        orig._data = np.ascontiguousarray(pruned, dtype=orig._data.dtype)  # a float64 parameter stays float64
        module.register_parameter(name, orig)


def _as_array(t, what: str) -> np.ndarray:
    a = t._data if isinstance(t, Tensor) else t
    if not isinstance(a, np.ndarray):
        raise TypeError(f"prune: {what} must be a Tensor or numpy array, got {type(t).__name__}")
    return a


class PruningContainer(BasePruningMethod):
    """The successive pruning methods of one tensor; the newest acts on what the earlier ones kept."""

    def __init__(self, *methods):
        self._pruning_methods = ()
        for m in methods:
            self.add_pruning_method(m)

    def add_pruning_method(self, method) -> None:
        if not isinstance(method, BasePruningMethod) and method is not None:
            raise TypeError(f"{type(method).__name__} is not a BasePruningMethod subclass")
        if method is not None and self._tensor_name is not None and method._tensor_name != self._tensor_name:
            raise ValueError(f"can only add pruning methods acting on the parameter named '{self._tensor_name}' "
                             f"to PruningContainer; found '{method._tensor_name}'")
        if method is not None:
            if self._tensor_name is None:
                self._tensor_name = method._tensor_name
            self._pruning_methods += (method,)

    def __len__(self):
        return len(self._pruning_methods)

    def __iter__(self):
        return iter(self._pruning_methods)

    def __getitem__(self, i):
        return self._pruning_methods[i]

    def compute_mask(self, t, default_mask):
        method = self._pruning_methods[-1]
        new_mask = np.array(default_mask, dtype=np.float32)
        if method.PRUNING_TYPE == "unstructured":
            slc = new_mask == 1
        elif method.PRUNING_TYPE == "structured":
            dim = _validate_dim(t, method.dim, type(method).__name__)
            other = tuple(d for d in range(t.ndim) if d != dim)
            keep = new_mask.sum(axis=other) != 0
            slc = tuple(keep if d == dim else slice(None) for d in range(t.ndim))
        elif method.PRUNING_TYPE == "global":
            slc = tuple(slice(None) for _ in range(t.ndim))
        else:
            raise ValueError(f"unrecognized PRUNING_TYPE {method.PRUNING_TYPE!r}")
        new_mask[slc] = method.compute_mask(t[slc], new_mask[slc])
        return new_mask


class Identity(BasePruningMethod):
    """Prunes nothing (the mask is all ones): gives a tensor the pruned form."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        return np.array(default_mask, dtype=np.float32)

    @classmethod
    def apply(cls, module, name):
        return super().apply(module, name)


class RandomUnstructured(BasePruningMethod):
    """Prunes ``amount`` entries chosen uniformly at random (forgegrad's generator: fg.manual_seed)."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount):
        _validate_amount(amount)
        self.amount = amount

    def compute_mask(self, t, default_mask):
        k = _n_to_prune(self.amount, t.size)
        mask = np.array(default_mask, dtype=np.float32)
        if k:
            prob = _random.generator().random(t.size)
            mask.reshape(-1)[np.argsort(-prob, kind="stable")[:k]] = 0
        return mask

    @classmethod
    def apply(cls, module, name, amount):
        return super().apply(module, name, amount=amount)


class L1Unstructured(BasePruningMethod):
    """Prunes the ``amount`` entries of smallest absolute value."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount):
        _validate_amount(amount)
        self.amount = amount

    def compute_mask(self, t, default_mask):
        k = _n_to_prune(self.amount, t.size)
        mask = np.array(default_mask, dtype=np.float32)
        if k:
            mask.reshape(-1)[_smallest(np.abs(t).reshape(-1), k)] = 0
        return mask

    @classmethod
    def apply(cls, module, name, amount, importance_scores=None):
        return super().apply(module, name, amount=amount, importance_scores=importance_scores)


def _structured_mask(t, dim, keep_idx, default_mask):
    mask = np.zeros(t.shape, np.float32)
    slc = tuple(keep_idx if d == dim else slice(None) for d in range(t.ndim))
    mask[slc] = 1
    return mask * default_mask


class RandomStructured(BasePruningMethod):
    """Prunes ``amount`` whole slices along ``dim`` chosen at random."""

    PRUNING_TYPE = "structured"

    def __init__(self, amount, dim=-1):
        _validate_amount(amount)
        self.amount, self.dim = amount, dim

    def compute_mask(self, t, default_mask):
        dim = _validate_dim(t, self.dim, "random_structured")
        size = t.shape[dim]
        k = _n_to_prune(self.amount, size)
        if k == 0:
            return np.array(default_mask, dtype=np.float32)
        keep = np.sort(np.argsort(_random.generator().random(size), kind="stable")[k:])
        return _structured_mask(t, dim, keep, default_mask)

    @classmethod
    def apply(cls, module, name, amount, dim=-1):
        return super().apply(module, name, amount=amount, dim=dim)


class LnStructured(BasePruningMethod):
    """Prunes the ``amount`` slices along ``dim`` of smallest ``n``-norm (e.g. dim=0: a Linear's output
    rows, a Conv2d's output channels)."""

    PRUNING_TYPE = "structured"

    def __init__(self, amount, n, dim=-1):
        _validate_amount(amount)
        self.amount, self.n, self.dim = amount, n, dim

    def compute_mask(self, t, default_mask):
        dim = _validate_dim(t, self.dim, "ln_structured")
        size = t.shape[dim]
        k = _n_to_prune(self.amount, size)
        norms = _norm_along(t, self.n, dim)
        if k == 0:
            return np.array(default_mask, dtype=np.float32)
        keep = _smallest(norms, size)[k:]  # the size - k largest norms
        return _structured_mask(t, dim, keep, default_mask)

    @classmethod
    def apply(cls, module, name, amount, n, dim, importance_scores=None):
        return super().apply(module, name, amount=amount, n=n, dim=dim, importance_scores=importance_scores)


class CustomFromMask(BasePruningMethod):
    PRUNING_TYPE = "global"

    def __init__(self, mask):
        self.mask = np.asarray(_as_array(mask, "mask"), dtype=np.float32)

    def compute_mask(self, t, default_mask):
        if self.mask.shape != default_mask.shape:
            raise ValueError(f"custom_from_mask: mask shape {self.mask.shape} differs from the tensor's "
                             f"{default_mask.shape}")
        return default_mask * self.mask

    @classmethod
    def apply(cls, module, name, mask):
        return super().apply(module, name, mask=mask)


# ---- functional API -------------------------------------------------------------------------------
def identity(module, name):
    Identity.apply(module, name)
    return module


def random_unstructured(module, name, amount):
    RandomUnstructured.apply(module, name, amount)
    return module


def l1_unstructured(module, name, amount, importance_scores=None):
    L1Unstructured.apply(module, name, amount=amount, importance_scores=importance_scores)
    return module


def random_structured(module, name, amount, dim):
    RandomStructured.apply(module, name, amount, dim)
    return module


def ln_structured(module, name, amount, n, dim, importance_scores=None):
    LnStructured.apply(module, name, amount, n, dim, importance_scores=importance_scores)
    return module


def custom_from_mask(module, name, mask):
    CustomFromMask.apply(module, name, mask)
    return module


def global_unstructured(parameters, pruning_method, importance_scores=None, **kwargs):
    """Prune ``(module, name)`` pairs together as one tensor: e.g. L1Unstructured with amount=0.8 zeroes
    the 80 % smallest entries across all of them (entries already pruned count as pruned)."""
    parameters = list(parameters)
    if not parameters:
        raise ValueError("global_unstructured: parameters must be a non-empty iterable of (module, name)")
    if not (isinstance(pruning_method, type) and issubclass(pruning_method, BasePruningMethod)):
        raise TypeError(f"global_unstructured: pruning_method must be a BasePruningMethod subclass, "
                        f"got {pruning_method!r}")
    importance_scores = importance_scores or {}
    scores, masks = [], []
    for item in parameters:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(f"global_unstructured: parameters must be (module, name) pairs, got {item!r}")
        module, name = item
        t = getattr(module, name)
        s = importance_scores.get((module, name), t)
        scores.append(np.asarray(_as_array(s, "importance_scores"), np.float32).reshape(-1))
        m = getattr(module, name + "_mask", None)
        masks.append(np.ones(t.numel(), np.float32) if m is None else np.asarray(m._data, np.float32).reshape(-1))
    method = pruning_method(**kwargs)
    method._tensor_name = "temp"
    if method.PRUNING_TYPE != "unstructured":
        raise TypeError(f"global_unstructured only supports unstructured methods; {pruning_method.__name__} "
                        f"is {method.PRUNING_TYPE!r}")
    container = PruningContainer(method)
    final = container.compute_mask(np.concatenate(scores), np.concatenate(masks))
    at = 0
    for module, name in parameters:
        t = getattr(module, name)
        n = t.numel()
        custom_from_mask(module, name, final[at:at + n].reshape(t.shape))
        at += n


def remove(module, name):
    """Make ``module.<name>``'s pruning permanent: drop ``<name>_orig``, ``<name>_mask`` and the hook;
    ``<name>`` is a Parameter again (holding the pruned values)."""
    for k, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, BasePruningMethod) and hook._tensor_name == name:
            hook.remove(module)
            del module._forward_pre_hooks[k]
            return module
    raise ValueError(f"Parameter '{name}' of module {type(module).__name__} has to be pruned before pruning "
                     "can be removed")


def is_pruned(module) -> bool:
    """Whether any submodule of ``module`` has a pruning hook."""
    return any(isinstance(h, BasePruningMethod) for m in module.modules()
               for h in m.__dict__.get("_forward_pre_hooks", {}).values())
