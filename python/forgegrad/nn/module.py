"""nn.Module: parameters, buffers and submodules registered by attribute assignment, with
PyTorch's names (named_parameters, state_dict keys like "0.weight", train/eval, zero_grad), moving
between devices (``to("meta")``) and a Keras-like ``summary``. :class:`ModuleCallStack` (which module is running,
for ``summary`` and the ONNX exporter) lives in module_calls.py and is re-exported here."""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Iterator, Optional, Tuple

import numpy as np

from .. import _version_counter as _vc
from .. import devices
from .. import dtypes as _dtypes
from ..devices import MetaArray
from ..tensor import Tensor
from . import hooks as _hooks
from ._module_access import EXTRA_STATE_KEY, ModuleAccess, extra_state_of, listing_state_keys
from .hooks import call_with_hooks, note_hooks
from .module_hooks import ModuleHookRegistration
from .parameter import Parameter

__all__ = ["Module"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
_HOOK_STORES = _hooks.HOOK_STORES
_G_FORWARD_PRE, _G_FORWARD, _G_BACKWARD_PRE, _G_BACKWARD = _hooks.GLOBAL_CALL_HOOKS
# False until a forward / backward hook is registered anywhere (nn/hooks.py's note_hooks sets it)
_hooks_seen = False
_hooks.watch_hooks_flag(globals())


class Module(ModuleHookRegistration, ModuleAccess):
    """Base class of every layer and model. Subclasses define ``forward``."""

    training: bool

    def __init__(self, *args, **kwargs):
        # torch's: extra arguments are refused unless the class sets call_super_init = True, which passes them
        # on to the next __init__ in the MRO (cooperative multiple inheritance, e.g. class M(nn.Module, Mixin))
        if not self.call_super_init and (args or kwargs):
            name = type(self).__name__
            if kwargs:
                raise TypeError(f"{name}.__init__() got an unexpected keyword argument '{next(iter(kwargs))}'")
            raise TypeError(f"{name}.__init__() takes 1 positional argument but {len(args) + 1} were given")
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        for store in _HOOK_STORES:  # torch's hook dicts (nn/hooks.py)
            object.__setattr__(self, store, OrderedDict())
        object.__setattr__(self, "training", True)
        if self.call_super_init:
            super().__init__(*args, **kwargs)

    # ---- registration ------------------------------------------------------------------------
    # Parameters, buffers and submodules live in their registries (_parameters, _buffers,
    # _modules) and are mirrored into the instance __dict__, so reading `self.weight` in a forward
    # pass is a plain attribute lookup instead of a __getattr__ fallback (measurable at batch 1).
    # Every registration goes through _register, which keeps the two in step.
    def _register(self, store: dict, name: str, value) -> None:
        for d in (self._parameters, self._buffers, self._modules):
            if d is not store:
                d.pop(name, None)
        store[name] = value
        self.__dict__[name] = value

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            # torch's: a plain attribute may be set before Module.__init__ (a mixin's __init__ that runs first);
            # a parameter, buffer or submodule has no registry to go to yet
            kind = ("parameters" if isinstance(value, Parameter) else "buffer" if getattr(value, "_is_buffer", False)
                    else "module" if isinstance(value, Module) else None)
            if kind is not None:
                raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
            object.__setattr__(self, name, value)
            return
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self._register(params, name, value)
        elif getattr(value, "_is_buffer", False):  # nn.Buffer: registered as a buffer, persistent as it says
            self.register_buffer(name, value, persistent=value.persistent)
        elif isinstance(value, Module):
            self._register(modules, name, value)
        elif name in params or name in modules:
            if value is not None:
                kind = "parameter" if name in params else "child module"
                raise TypeError(f"cannot assign '{type(value).__name__}' as {kind} '{name}' "
                                f"(a {'forgegrad.nn.Parameter' if name in params else 'Module'} or None is required)")
            self._register(params if name in params else modules, name, None)
        elif name in buffers:
            self._register(buffers, name,
                           value if (value is None or isinstance(value, Tensor)) else Tensor._stored(value))
        else:
            if name == "forward":  # a patched forward: the fast paths that skip Module.__call__ must see it
                note_hooks()
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self.__dict__.pop(name, None)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Optional[Parameter]) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                            "(forgegrad.nn.Parameter or None required)")
        self._register(self._parameters, name, param)

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        if getattr(tensor, "_is_buffer", False):  # nn.Buffer: a plain Tensor on its storage; the persistence is
            tensor = tensor.as_tensor()           # this call's argument (as torch's; __setattr__ passes the Buffer's)
        value = None if tensor is None else (tensor if isinstance(tensor, Tensor) else Tensor._stored(tensor))
        self._register(self._buffers, name, value)
        if not persistent:
            self._non_persistent.add(name)
        else:
            self._non_persistent.discard(name)

    def add_module(self, name: str, module: Optional["Module"]) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._register(self._modules, name, module)

    # ---- calling -----------------------------------------------------------------------------
    def __setstate__(self, state) -> None:
        # a module unpickled (or deep-copied) with forward or backward hooks: Module.__call__ must look for them
        self.__dict__.update(state)
        if any(state.get(store) for store in _hooks.CALL_HOOK_STORES[1:]) or "forward" in state:
            note_hooks()

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"Module [{type(self).__name__}] is missing the required \"forward\" function")

    def __call__(self, *args, **kwargs):
        # every layer's path: without hooks (the usual case) forward runs straight away, with them the
        # call goes as torch's _call_impl (nn/hooks.py)
        d = self.__dict__
        if d.get("_forward_pre_hooks") or (_hooks_seen and (
                d.get("_forward_hooks") or d.get("_backward_hooks") or d.get("_backward_pre_hooks")
                or _G_FORWARD_PRE or _G_FORWARD or _G_BACKWARD or _G_BACKWARD_PRE)):
            return call_with_hooks(self, args, kwargs)
        return self.forward(*args, **kwargs)

    # ---- traversal ---------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = "") -> Iterator[Tuple[str, "Module"]]:
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            yield from m.named_modules(memo, prefix + ("." if prefix else "") + name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, get, prefix="", recurse=True):
        seen = set()
        mods = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mp, m in mods:
            for k, v in get(m):
                if v is None or id(v) in seen:
                    continue
                seen.add(id(v))
                yield mp + ("." if mp else "") + k, v

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        return self._named_members(lambda m: m._parameters.items(), prefix, recurse)

    def parameters(self, recurse: bool = True):
        return _Parameters(self, recurse)

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        return self._named_members(lambda m: m._buffers.items(), prefix, recurse)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ---- modes and gradients -----------------------------------------------------------------
    def train(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False) -> "OrderedDict[str, Tensor]":
        """Parameters and persistent buffers by dotted name (PyTorch's keys), sharing storage."""
        out = OrderedDict() if destination is None else destination
        d = self.__dict__
        pre, post = d.get("_state_dict_pre_hooks"), d.get("_state_dict_hooks")
        for hook in (pre or {}).values():
            hook(self, prefix, keep_vars)
        for name, p in self._parameters.items():
            if p is not None:  # a lazy module's placeholder as itself (as torch's): loading it keeps a lazy one lazy
                out[prefix + name] = p if keep_vars or getattr(p, "_is_uninitialized", False) else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                out[prefix + name] = b if keep_vars or getattr(b, "_is_uninitialized", False) else b.detach()
        if type(self).get_extra_state is not Module.get_extra_state:  # torch's "_extra_state" entry
            out[prefix + EXTRA_STATE_KEY] = extra_state_of(self)
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(out, prefix + name + ".", keep_vars)
        for hook in (post or {}).values():
            if hook(self, out, prefix, {"version": getattr(self, "_version", 1)}) is not None:
                raise RuntimeError("state_dict post-hook must return None")
        return out

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values (forgegrad Tensors or numpy arrays, e.g. a torch state_dict converted with
        .numpy()) into this module's parameters and buffers, in place.

        Raises RuntimeError listing missing/unexpected keys (when strict) and any shape mismatch;
        nothing is modified when an error is raised.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict).__name__}")
        # extra state (get_extra_state / set_extra_state overridden): any value, handed to set_extra_state
        settable, gettable = self._extra_state_slots()
        nested = [k for k, v in state_dict.items() if hasattr(v, "items") and k not in settable
                  and k not in gettable]
        if nested:  # e.g. a resumable checkpoint {"model": ..., "optimizer": ..., "epoch": ...}
            raise TypeError(f"load_state_dict expects a flat name -> array mapping, but entries {nested[:4]} are "
                            f"dicts: for a nested checkpoint pass its model part, e.g. ckpt[{nested[0]!r}]")
        named = list(self.named_modules())
        hook_errors, hook_missing, hook_unexpected = [], [], []
        if any(m.__dict__.get("_load_state_dict_pre_hooks") for _, m in named):
            state_dict = OrderedDict(state_dict)  # the hooks edit a copy (torch's), each module's from the root down
            for name, m in named:
                for hook in list(m.__dict__.get("_load_state_dict_pre_hooks", {}).values()):
                    hook(m, state_dict, name + "." if name else "", {}, strict, hook_missing, hook_unexpected,
                         hook_errors)
        post_hooks = [(m, h) for _, m in named for h in m.__dict__.get("_load_state_dict_post_hooks", {}).values()]
        with listing_state_keys():  # (no get_extra_state call: only the keys are needed)
            own = self.state_dict(keep_vars=True)
        order = {k: i for i, k in enumerate(own)}  # (missing extra state is listed where torch lists it)
        for k in gettable:
            own.pop(k, None)
        # keys a layer may lack in older checkpoints (torch's BatchNorm before num_batches_tracked): kept as they are
        optional = {f"{name}.{key}" if name else key for name, m in named
                    for key in getattr(m, "_optional_state_keys", ())}
        missing = hook_missing + sorted([k for k in own if k not in state_dict and k not in optional] +
                                        [k for k in settable if k not in state_dict],
                                        key=lambda k: order.get(k, len(order)))
        unexpected = hook_unexpected + [k for k in state_dict if k not in own and k not in settable]
        errors = hook_errors
        staged = []
        for k, target in own.items():
            if k not in state_dict:
                continue
            v = state_dict[k]
            if getattr(v, "_is_uninitialized", False):  # from an uninitialised lazy module: no shape, no values
                if not getattr(target, "_is_uninitialized", False):
                    errors.append(f"{k} is an uninitialized parameter or buffer of a lazy module, which cannot be "
                                  "loaded into an initialized one: run the lazy module's forward first")
                continue  # an uninitialised target stays so, as torch's
            arr = v._data if isinstance(v, Tensor) else np.asarray(v)
            if devices.has_data(arr):
                arr = devices.to_host(arr)  # values from any device; copied to the target's below
            else:
                errors.append(f"no values for {k}: the state_dict holds a meta tensor (shape and dtype only)")
                continue
            if getattr(target, "_is_uninitialized", False):  # a lazy module's placeholder takes the loaded shape
                staged.append((target, arr))
                continue
            if arr.shape != target.shape:
                errors.append(f"size mismatch for {k}: copying a param with shape {arr.shape} from checkpoint, "
                              f"the shape in current model is {target.shape}.")
                continue
            staged.append((target, arr))
        extra = [(m, state_dict[k]) for k, m in settable.items() if k in state_dict]
        if post_hooks and not errors:
            # torch's order: the values are copied, the post-hooks may edit the incompatible keys, then the strict
            # check (which may raise with the values loaded, as torch's)
            self._copy_staged(staged, extra)
            staged, extra = [], []
            keys = IncompatibleKeys(missing, unexpected)
            for m, hook in post_hooks:
                if hook(m, keys) is not None:
                    raise AssertionError("Hooks registered with ``register_load_state_dict_post_hook`` are not "
                                         "expected to return new values, if incompatible_keys need to be modified, "
                                         "it should be done inplace.")
        if strict and (missing or unexpected):
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        self._copy_staged(staged, extra)
        return IncompatibleKeys(missing, unexpected)

    def _copy_staged(self, staged, extra) -> None:
        """Writes the checked values (and hands each module its extra state) once nothing can fail."""
        for target, arr in staged:  # each an in-place write (torch's copy_), counted in target._version
            if getattr(target, "_is_uninitialized", False):
                target.materialize(arr.shape)
            if isinstance(target._data, np.ndarray):
                target._data[...] = arr if arr.dtype == target._data.dtype else \
                    _dtypes.astype(arr, target._data.dtype)  # (to bfloat16 through float32, as torch)
                _vc.bump(target)
            elif not devices.has_data(target._data):
                # a meta tensor has no storage to copy into: loading gives it its values (on the CPU)
                _vc.rebind(target, np.array(arr, dtype=target._data.dtype, copy=True))
            else:  # on another device: the values copied there (the tensor object stays the same)
                _vc.rebind(target, devices.transfer(np.ascontiguousarray(arr, dtype=target._data.dtype),
                                                   devices.device_of(target._data)))
        for m, value in extra:
            m.set_extra_state(value)
        for m in self.modules():  # layers that cache a form of their values (quantized: packed weights)
            m._post_load_state_dict()

    def _post_load_state_dict(self) -> None:
        """Called on every submodule after load_state_dict copied new values in: a module that caches
        a derived form of its parameters or buffers drops it here."""

    # ---- devices -------------------------------------------------------------------------------
    def to(self, device=None, dtype=None, non_blocking: bool = False) -> "Module":
        """Move every parameter and buffer to ``device`` ("cpu", "meta", "cuda", any registered device or a
        ``forgegrad.device``), in place: as torch's, each Parameter stays the same object (optimizers that
        hold it keep working) and its storage, and its gradient's, moves.

        Moving to "meta" drops the values (each tensor keeps its shape and dtype; gradients are
        dropped), e.g. to summarise or shape-check a model without holding its weights. A meta
        tensor has no values to copy back, so moving a meta module to the CPU raises; give it values
        with ``load_state_dict`` instead (which fills meta tensors). Layers that create their weights on
        the first call (Dense, Conv2D without an input size) create them on the device they were built
        on or last moved to.
        ``to(dtype)`` (``double()``, ``float()``, ``half()``, ``bfloat16()``): float parameters and buffers become
        that dtype (their gradients are dropped); a float64 model runs every op in float64 (numpy code where the
        C++ kernels are float32: correct, not fast; see docs/torch_compat.md) and the optimizers step
        it in float64; a float16 / bfloat16 model computes each op in float32, rounded back. ``to(tensor)``
        takes that tensor's dtype (a float one) and device, as torch's. Returns self.
        """
        from ..tensor import Tensor
        if isinstance(device, Tensor):
            if dtype is not None:
                raise TypeError("Module.to(tensor) takes no dtype: the tensor gives it")
            other = device
            if not other.dtype.is_floating_point:
                raise TypeError(f"Module.to: parameters take a floating dtype, but the tensor is {other.dtype}")
            device, dtype = other.device, other.dtype
        if device is not None and not isinstance(device, (str, devices.device)):
            if dtype is not None:
                raise TypeError(f"Module.to: device must be a str such as 'cpu' or 'meta', got {device!r}")
            device, dtype = None, device
        if dtype is not None:
            try:
                want = _dtypes.of(dtype)
            except TypeError:
                raise TypeError(f"Module.to: expected a device ('cpu', 'meta') or a dtype, got {dtype!r}") from None
            if not want.is_floating_point:
                raise TypeError(f"Module.to: parameters take a floating dtype (float32, float64, float16, bfloat16), "
                                f"not {want}")
            want = want.dtype
            for t in list(self.parameters()) + list(self.buffers()):
                if _dtypes.is_floating(t._data.dtype) and t._data.dtype != want:
                    # on another device the cast op runs there (no graph: a fresh leaf's storage)
                    t._data = _dtypes.astype(t._data, want) if isinstance(t._data, np.ndarray) else \
                        t._data.astype(want) if isinstance(t._data, MetaArray) else \
                        Tensor._wrap_exact(t._data)._cast(want)._data
                    t.grad = None
        if device is None:
            return self
        target = devices.device(device).type  # clear errors for unknown names and for cuda
        moving = []
        for name, t in list(self.named_parameters()) + list(self.named_buffers()):
            here = devices.device_of(t._data)
            if here == target:
                continue
            if here == "meta":
                raise RuntimeError(
                    f"Module.to({target!r}): {name!r} is on the meta device, which holds shapes and dtypes but no "
                    f"values to copy; build the model on {target!r}, or load values with load_state_dict")
            moving.append(t)
        if target == "meta":
            for t in moving:  # nothing changes unless every tensor can move
                t._data = MetaArray(t._data.shape, t.dtype)  # (_data: a lazy module's placeholder has no shape)
                t.grad = None
        else:
            # copy everything first: a failing copy leaves every tensor where it was
            moved = [(t, devices.transfer(t._data, target),
                      None if t.grad is None else devices.transfer(t.grad._data, target)) for t in moving]
            for t, data, grad in moved:
                t._data = data
                if grad is not None:
                    t.grad._data = grad
        for m in self.modules():  # layers that create their weights on first call (Dense, Conv2D)
            if "_param_device" in m.__dict__:
                m._param_device = target
        return self

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self, device=None) -> "Module":
        return self.to("cuda" if device is None else device)

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    def half(self) -> "Module":
        return self.to(np.float16)

    def bfloat16(self) -> "Module":
        return self.to(_dtypes.load_bfloat16())

    # ---- summary -----------------------------------------------------------------------------------
    def summary(self, input_shape, batch_size: Optional[int] = 1, dtypes=None, print_summary: bool = True):
        """Keras-like summary: every module's output shape(s), parameter count and FLOPs.

        The model runs once (eval mode, no_grad) on meta inputs, so no activation is allocated and
        no kernel runs; its parameters may be on the CPU or on meta (a model built under
        ``with forgegrad.device("meta")`` allocates no weights at all).

        Args:
            input_shape: the shape of one input without the batch dim, e.g. ``(1, 28, 28)``, or a list
                of shapes for a model with several inputs.
            batch_size: the batch size put in front of every input shape (None: the shapes are full).
            dtypes: the inputs' dtype (default float32), one for all inputs or a list (e.g. int64 for
                token ids).
            print_summary: print the table (default True).

        Returns:
            ModelSummary (``forgegrad.nn.summary``): ``rows`` (one LayerSummary per module: name, type,
            output shapes, own parameter count, FLOPs of the ops that ran directly in it),
            ``total_params``, ``trainable_params``, ``total_flops``; ``str()`` is the table.
        """
        from .summary import summarize
        result = summarize(self, input_shape, batch_size=batch_size, dtypes=dtypes)
        if print_summary:
            print(result)
        return result

    # ---- printing ----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, m in self._modules.items():
            mod = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {mod}")
        main = type(self).__name__ + "("
        if not lines:
            return main + ")"
        if len(lines) == 1 and not self._modules:
            return main + lines[0] + ")"
        return main + "\n  " + "\n  ".join(lines) + "\n)"

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))


class _Parameters:
    """The iterator Module.parameters() returns: a generator of the parameters, as torch's, that also
    carries ``unbuilt_lazy`` (the lazy layers without parameters yet) so that an optimizer given it
    can refuse instead of silently never updating those layers."""

    __slots__ = ("_it", "_module", "_unbuilt")

    def __init__(self, module, recurse):
        self._module, self._unbuilt = module, None if recurse else []
        self._it = (p for _, p in module.named_parameters(recurse=recurse))

    @property
    def unbuilt_lazy(self):
        # looked for when first asked (an optimizer's check), not on every parameters() call: the models' forwards
        # take their device from the first parameter, and a walk over every module cost ~0.4 ms a forward on a
        # 2-layer mixture of experts of 32 experts a layer
        if self._unbuilt is None:
            from .linear import unbuilt_lazy_modules
            self._unbuilt = unbuilt_lazy_modules(self._module)
        return self._unbuilt

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)


from .module_calls import ModuleCall, ModuleCallStack  # noqa: E402,F401  (re-exported; they need Module)
