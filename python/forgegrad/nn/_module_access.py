"""torch 2.13's nn.Module methods for reaching and replacing parts of a model by dotted name (``get_submodule``,
``set_submodule``, ``get_parameter``, ``get_buffer``), extra state in the state_dict (``get_extra_state`` /
``set_extra_state``), whole-model storage changes (``to_empty``, ``type``, ``share_memory``) and the in-place
``compile``. A mixin :class:`~forgegrad.nn.Module` inherits from (kept apart from module.py, which holds
registration, calling and state); names, semantics and error texts follow torch/nn/modules/module.py."""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Dict, TypeVar

import numpy as np

from .. import devices
from ..devices import MetaArray

__all__ = ["ModuleAccess", "EXTRA_STATE_KEY", "extra_state_of", "listing_state_keys"]

EXTRA_STATE_KEY = "_extra_state"  # torch's _EXTRA_STATE_KEY_SUFFIX
_listing = threading.local()


@contextlib.contextmanager
def listing_state_keys():
    """While active (in this thread), ``state_dict()`` lists extra-state keys without calling get_extra_state:
    load_state_dict needs the keys in order, not the values (torch's load calls only set_extra_state)."""
    before = getattr(_listing, "active", False)
    _listing.active = True
    try:
        yield
    finally:
        _listing.active = before


def extra_state_of(module):
    """``module.get_extra_state()``, or None while load_state_dict only lists the keys."""
    return None if getattr(_listing, "active", False) else module.get_extra_state()


class ModuleAccess:
    """The torch Module methods above; every method here reaches the model only through Module's public
    registries (``_modules``, ``_parameters``, ``_buffers``) and attribute access."""

    # torch's class attributes: dump_patches (deprecated in torch, read by nothing) and call_super_init (True:
    # Module.__init__ passes its arguments on to super().__init__, for cooperative multiple inheritance)
    dump_patches: bool = False
    call_super_init: bool = False
    T_destination = TypeVar("T_destination", bound=Dict[str, Any])
    _compiled_call_impl = None  # Module.compile's compiled call, in the instance's __dict__ once compiled

    def _get_name(self) -> str:
        return type(self).__name__

    # ---- reaching parts by dotted name ---------------------------------------------------------------
    def register_module(self, name: str, module) -> None:
        """Alias for ``add_module`` (torch's)."""
        self.add_module(name, module)

    def get_submodule(self, target: str):
        """The submodule at dotted path ``target`` ("" is this module); AttributeError (torch's text) where a
        name is missing or is not a Module."""
        from .module import Module
        if not isinstance(target, str):
            raise TypeError(f"get_submodule: target must be a str, got {type(target).__name__}")
        if target == "":
            return self
        mod = self
        for item in target.split("."):
            if not hasattr(mod, item):
                raise AttributeError(mod._get_name() + " has no attribute `" + item + "`")
            mod = getattr(mod, item)
            if not isinstance(mod, Module):
                raise AttributeError("`" + item + "` is not an nn.Module")
        return mod

    def set_submodule(self, target: str, module, strict: bool = False) -> None:
        """Put ``module`` at dotted path ``target`` (its parent must exist). ``strict``: the name must exist
        already. Replacing an attribute that is not a Module raises AttributeError (torch's rules and texts)."""
        from .module import Module
        if not isinstance(target, str):
            raise TypeError(f"set_submodule: target must be a str, got {type(target).__name__}")
        if target == "":
            raise ValueError("Cannot set the submodule without a target name!")
        atoms = target.split(".")
        if not isinstance(module, Module):
            raise ValueError("`" + "module" + f"` is not an nn.Module, found {type(module)}")
        parent = self if len(atoms) == 1 else self.get_submodule(".".join(atoms[:-1]))
        if strict and not hasattr(parent, atoms[-1]):
            raise AttributeError(parent._get_name() + " has no attribute `" + atoms[-1] + "`")
        if hasattr(parent, atoms[-1]) and not isinstance(getattr(parent, atoms[-1]), Module):
            raise AttributeError("`" + atoms[-1] + "` is not an nn.Module")
        setattr(parent, atoms[-1], module)

    def get_parameter(self, target: str):
        """The Parameter at dotted path ``target`` (e.g. "net.0.weight")."""
        from .parameter import Parameter
        module_path, _, name = target.rpartition(".")
        mod = self.get_submodule(module_path)
        if not hasattr(mod, name):
            raise AttributeError(mod._get_name() + " has no attribute `" + name + "`")
        param = getattr(mod, name)
        if not isinstance(param, Parameter):
            raise AttributeError("`" + name + "` is not an nn.Parameter")
        return param

    def get_buffer(self, target: str):
        """The buffer at dotted path ``target`` (e.g. "bn.running_mean")."""
        module_path, _, name = target.rpartition(".")
        mod = self.get_submodule(module_path)
        if not hasattr(mod, name):
            raise AttributeError(mod._get_name() + " has no attribute `" + name + "`")
        buffer = getattr(mod, name)
        if name not in mod._buffers:
            raise AttributeError("`" + name + "` is not a buffer")
        return buffer

    # ---- extra state ---------------------------------------------------------------------------------
    def get_extra_state(self) -> Any:
        """Override to put a value under "<prefix>_extra_state" in ``state_dict()`` (torch's protocol). For
        ``forgegrad.save`` it must be what the safetensors checkpoint holds: Tensors, numpy arrays, dicts
        (str / int keys), lists, tuples and int / float / bool / str / None (anything else: save raises
        TypeError naming it; nothing is pickled). After ``forgegrad.load`` its Tensors come back as arrays."""
        raise RuntimeError("Reached a code path in Module.get_extra_state() that should never be called: a "
                           "module only has extra state when its class overrides get_extra_state")

    def set_extra_state(self, state: Any) -> None:
        """Override to take back what ``get_extra_state`` returned, from ``load_state_dict``."""
        raise RuntimeError("Reached a code path in Module.set_extra_state() that should never be called: a "
                           "module only loads extra state when its class overrides set_extra_state")

    def _extra_state_slots(self):
        """(keys of the modules whose class overrides set_extra_state -> module, keys of those overriding
        get_extra_state): the state_dict keys that hold extra state rather than tensors."""
        from .module import Module
        settable, gettable = {}, set()
        for name, m in self.named_modules():
            key = f"{name}.{EXTRA_STATE_KEY}" if name else EXTRA_STATE_KEY
            if type(m).set_extra_state is not Module.set_extra_state:
                settable[key] = m
            if type(m).get_extra_state is not Module.get_extra_state:
                gettable.add(key)
        return settable, gettable

    # ---- storage of every parameter and buffer -------------------------------------------------------
    def _tensors(self, recurse: bool = True):
        seen, out = set(), []
        for m in (self.modules() if recurse else (self,)):
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is not None and id(t) not in seen and not getattr(t, "_is_uninitialized", False):
                    seen.add(id(t))
                    out.append(t)
        return out

    def to_empty(self, *, device, recurse: bool = True):
        """Give every parameter and buffer new, uninitialised storage of its shape and dtype on ``device``
        (None: where it is), in place (each Parameter stays the same object), as torch's; the way to
        materialise a model built on "meta" before loading values into it. ``recurse=False``: this module's own
        tensors only. Gradients get empty storage too (as torch's). Returns self."""
        if not isinstance(recurse, bool):
            raise TypeError(f"to_empty: recurse must be True or False, got {recurse!r}")
        target = None if device is None else devices.device(device).type

        def empty(a):
            where = target or devices.device_of(a)
            if where == "meta":
                return MetaArray(a.shape, a.dtype)
            arr = np.empty(a.shape, a.dtype)
            return arr if where == "cpu" else devices.transfer(arr, where)
        for t in self._tensors(recurse):
            t._data = empty(t._data)
            if t.grad is not None:
                t.grad._data = empty(t.grad._data)
        if target is not None:
            for m in (self.modules() if recurse else (self,)):  # layers that create their weights on first call
                if "_param_device" in m.__dict__:
                    m._param_device = target
        return self

    def type(self, dst_type):
        """Cast every parameter and buffer (integer ones too, as torch's) to ``dst_type`` (a dtype or a name
        such as "torch.DoubleTensor"), in place; gradients are cast too. Returns self."""
        casts = [(t, t.type(dst_type)._data, None if t.grad is None else t.grad.type(dst_type)._data)
                 for t in self._tensors()]  # every cast first: a bad dst_type changes nothing
        for t, data, grad in casts:
            t._data = data
            if grad is not None:
                t.grad._data = grad
        return self

    def share_memory(self):
        """Returns self. torch moves CPU storage into shared memory for worker processes; forgegrad has no
        shared-memory tensors (``is_shared()`` stays False), so processes started after this get copies."""
        return self

    # ---- torch.compile in place ------------------------------------------------------------------------
    def compile(self, *args, **kwargs) -> None:
        """torch's ``Module.compile``: later calls of this module run as ``forgegrad.compile(module, *args,
        **kwargs)`` would (eval-mode calls without a graph run a frozen copy, bit-identical; training runs
        eager), while the module stays this object. Forward pre-hooks run once, on the module. Calling it again
        recompiles with the new arguments; ``disable=True`` undoes it. (Subclasses with their own ``compile``,
        e.g. Sequential's Keras-style one, keep theirs: reach this one as ``nn.Module.compile(model)``.)"""
        from .._compile import compile_in_place
        compile_in_place(self, *args, **kwargs)
