"""The Optimizer base class with torch.optim.Optimizer's API and state_dict layout.

``param_groups`` is a list of dicts (``"params"`` plus hyper-parameters), ``state`` maps each
parameter to a dict of its buffers under torch's names (``step``, ``exp_avg``, ``exp_avg_sq``,
``max_exp_avg_sq``, ``momentum_buffer``), held as forgegrad Tensors (``step`` is a 0-d float32
tensor, like torch's). ``state_dict()`` keys state by parameter index and stores index lists in
each group's ``"params"``, so a torch optimizer's state_dict converted with ``.numpy()`` loads here.
"""
from __future__ import annotations

import copy
import functools
import threading
from collections import defaultdict
from itertools import chain
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .. import _version_counter as _vc
from .. import devices as _devices
from .. import dtypes as _dtypes
from ..autograd import enable_grad
from ..tensor import Tensor

__all__ = ["Optimizer", "required", "register_optimizer_step_pre_hook"]


class _RequiredParameter:
    """Marks a hyper-parameter without default that every param group must give."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()

# State entries that are per-element buffers (cast to the parameter's dtype and shape on load).
_SCALAR_STATE_KEYS = ("step",)


def _type_name(x) -> str:
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__name__}"


# hook(optimizer, args, kwargs), run before every optimizer's step() (torch's
# torch.optim.optimizer.register_optimizer_step_pre_hook); a step() called from inside another (a wrapper's)
# runs none. DistributedDataParallel finishes its gradient reduction here on a rank whose backward reached
# none of its parameters, or that ran no backward, so that the ranks still reduce together.
_step_pre_hooks: Dict[int, Callable] = {}
_step_depth = threading.local()  # .n: this thread's steps in progress (another thread's do not count)


class _StepHookHandle:
    _next = 0

    def __init__(self, hook):
        _StepHookHandle._next += 1
        self.id = _StepHookHandle._next
        _step_pre_hooks[self.id] = hook

    def remove(self) -> None:
        _step_pre_hooks.pop(self.id, None)


def register_optimizer_step_pre_hook(hook: Callable) -> _StepHookHandle:
    """Call ``hook(optimizer, args, kwargs)`` before every optimizer's ``step()``; ``.remove()`` on the
    returned handle unregisters it."""
    if not callable(hook):
        raise TypeError(f"register_optimizer_step_pre_hook: hook must be callable, got {_type_name(hook)}")
    return _StepHookHandle(hook)


def _runs_step_pre_hooks(step):
    if getattr(step, "_runs_step_pre_hooks", False):
        return step

    @functools.wraps(step)
    def hooked_step(self, *args, **kwargs):
        if not _step_pre_hooks:  # (no hook to run: the nesting need not be tracked)
            return step(self, *args, **kwargs)
        depth = getattr(_step_depth, "n", 0)
        if depth == 0:
            for hook in list(_step_pre_hooks.values()):
                hook(self, args, kwargs)
        _step_depth.n = depth + 1
        try:
            return step(self, *args, **kwargs)
        finally:
            _step_depth.n = depth
    hooked_step._runs_step_pre_hooks = True
    return hooked_step


class Optimizer:
    """Base class of forgegrad's optimizers.

    Args:
        params: an iterable of Tensors (usually ``model.parameters()``), of ``(name, Tensor)``
            pairs, or of dicts defining parameter groups (each with a ``"params"`` entry).
        defaults: default hyper-parameters for groups that do not set them.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:  # every step() runs the global step pre-hooks
            cls.step = _runs_step_pre_hooks(cls.__dict__["step"])

    def __init__(self, params, defaults: Dict[str, Any]):
        self.defaults = defaults
        self.state: Dict[Any, Dict[str, Any]] = defaultdict(dict)
        self.param_groups: List[Dict[str, Any]] = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {_type_name(params)}")
        if isinstance(params, dict):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            "but got a dict (wrap a single parameter group in a list: [group])")
        unbuilt = getattr(params, "unbuilt_lazy", None)
        if unbuilt:
            names = ", ".join(f"{n or 'the model'} ({type(m).__name__})" for n, m in unbuilt[:5])
            raise ValueError(
                f"optimizer got the parameters of a model whose lazy layers {names} have no parameters yet "
                "(their input size is not known): the optimizer would never update them. Give the first layer "
                "its input size (e.g. Dense(64, input_dim=100)) or run the model on one batch before creating "
                "the optimizer.")
        try:
            param_groups = list(params)
        except TypeError:
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {_type_name(params)}") from None
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key not in ("params", "param_names"):
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

    # ---- parameter groups ---------------------------------------------------------------------
    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group of parameters (a dict with ``"params"`` and optional hyper-parameters)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {_type_name(param_group)}")
        params = param_group["params"] if "params" in param_group else None
        if params is None:
            raise ValueError("param_group must have a 'params' entry")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        else:
            params = list(params)
        if len(params) == 0:
            raise ValueError("optimizer got an empty parameter list")
        group = dict(param_group)
        if all(isinstance(p, tuple) and len(p) == 2 for p in params):  # named parameters
            group["param_names"] = [name for name, _ in params]
            params = [p for _, p in params]
        group["params"] = params
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize forgegrad Tensors (e.g. forgegrad.nn.Parameter), "
                                f"but params[{i}] is {_type_name(p)}")
            if p._data.dtype != np.float32 and p._data.dtype != np.float64 and not (
                    isinstance(p._data, np.ndarray) and _dtypes.is_low_precision(p._data.dtype)):
                raise TypeError(f"optimizer can only optimize floating tensors (float32, float64; float16 and "
                                f"bfloat16 on the CPU), but params[{i}] has dtype {p._data.dtype}")
            if not p.is_leaf:
                raise ValueError(f"can't optimize a non-leaf Tensor (params[{i}] was computed by an operation; "
                                 "optimize the leaf tensors it comes from)")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        self._check_group(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def _check_group(self, group: Dict[str, Any]) -> None:
        """Validate one group's hyper-parameters (subclasses raise ValueError like torch)."""

    # ---- gradients and steps ------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of every parameter: to None (default) or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad._ctx = None
                    p.grad.requires_grad = False
                    if isinstance(p.grad._data, np.ndarray):
                        p.grad._data[...] = 0
                    elif getattr(type(p.grad._data), "_is_sparse_storage", False):  # torch's zero_(): no entries
                        p.grad._data = p.grad._data.zeroed()
                    else:  # another device: fresh zeros through its backend
                        p.grad._data = _devices.zeros(p.grad.shape, p.grad._data.dtype,
                                                      _devices.device_of(p.grad._data))

    @_runs_step_pre_hooks
    def step(self, closure: Optional[Callable[[], Any]] = None):
        """Perform one optimization step over every parameter that has a gradient; ``closure``
        re-evaluates the model and returns the loss, which step returns."""
        loss = self._run_closure(closure)
        written = []
        # numpy's RuntimeWarnings stay quiet in the updates (an inf / NaN gradient gives torch's NaN silently)
        with np.errstate(all="ignore"):
            for group in self.param_groups:
                pairs = self._params_with_grad(group)
                if any([getattr(type(g), "_is_sparse_storage", False) for _, g in pairs]):
                    self._check_sparse_grads()
                for part in _by_device(pairs):  # one update per device holding parameters of the group
                    low = [(p, p._data) for p, _ in part if p._data.dtype.itemsize == 2]
                    if low:
                        part = _as_float32(part)
                    try:
                        self._step_group(group, part)
                    finally:
                        for p, storage in low:  # rounded back into the parameter's own storage
                            _dtypes.cast_into(storage, p._data)
                            p._data = storage
                    written.extend([p._data for p, _ in part])
        # each parameter was written in place once (torch's foreach step counts one in p._version): a graph
        # that saved one before the step refuses to run backward through its old value
        counter = self.__dict__.get("_count_writes")
        if counter is None:
            counter = self._count_writes = _vc.WriteCounter()
        counter(written)
        return loss

    # whether _step_group takes sparse gradients (Embedding(sparse=True)'s): SGD, Adagrad, SparseAdam, as torch's
    _sparse_grads = False

    def _check_sparse_grads(self) -> None:
        if not self._sparse_grads:
            name = type(self).__name__
            hint = ", please consider SparseAdam instead" if name in ("Adam", "AdamW") else ""
            raise RuntimeError(f"{name} does not support sparse gradients{hint}")

    def _step_group(self, group: Dict[str, Any], pairs) -> None:
        """Update one param group; ``pairs`` are its (param, grad array) that have a gradient, all on one
        device (``_kernel`` finds the update there). Each optimizer implements this (or overrides step)."""
        raise NotImplementedError

    def _kernel(self, name: str, pairs):
        """The ``name`` update (forgegrad.optim.kernels) for the device of ``pairs``."""
        from .kernels import kernel
        p = pairs[0][0]._data
        return kernel(name, "cpu" if isinstance(p, np.ndarray) else _devices.device_of(p), type(self).__name__)

    @staticmethod
    def _run_closure(closure):
        if closure is None:
            return None
        with enable_grad():
            return closure()

    @staticmethod
    def _params_with_grad(group):
        """(param, grad array) for the group's parameters that have a gradient.

        dtype and shape are checked by the kernel binding, which names the offending entry.
        """
        out = []
        for p in group["params"]:
            g = p.grad
            if g is not None:
                g = g._data if isinstance(g, Tensor) else np.asarray(g)
                if type(g) is not np.ndarray or type(p._data) is not np.ndarray:
                    here, there = _devices.device_of(p._data), _devices.device_of(g)
                    if here != there:
                        raise RuntimeError(f"optimizer: a parameter of shape {tuple(p.shape)} is on {here} but its "
                                           f"gradient is on {there}")
                out.append((p, g))
        return out

    # ---- state_dict -----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}`` (torch's layout).

        Values are references to the live state (as in torch); deep-copy to snapshot.
        """
        mapping: Dict[int, int] = {}
        start = 0

        def pack(group):
            nonlocal start
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                mapping.setdefault(id(p), i)
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            return packed

        groups = [pack(g) for g in self.param_groups]
        state = {(mapping[id(k)] if isinstance(k, Tensor) else k): v for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a state_dict from :meth:`state_dict` (or torch's, converted with ``.numpy()``).

        Buffers are copied into Tensors of their parameter's dtype and shape; hyper-parameters
        of each group are replaced by the saved ones (the parameters stay those of this optimizer).
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' entries")
        groups = self.param_groups
        saved_groups = [dict(g) for g in state_dict["param_groups"]]
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for g, s in zip(groups, saved_groups):
            if len(g["params"]) != len(s["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "optimizer's group")
        id_map = dict(zip(chain.from_iterable(g["params"] for g in saved_groups),
                          chain.from_iterable(g["params"] for g in groups)))
        state: Dict[Any, Dict[str, Any]] = defaultdict(dict)
        for key, value in state_dict["state"].items():
            if key in id_map:
                param = id_map[key]
                state[param] = self._cast_state(param, value, key)
            else:
                state[key] = copy.deepcopy(value)
        new_groups = []
        for g, s in zip(groups, saved_groups):
            s = copy.deepcopy({k: v for k, v in s.items() if k != "params"})
            s["params"] = g["params"]
            if "param_names" in g and "param_names" not in s:
                s["param_names"] = g["param_names"]
            for name, default in self.defaults.items():  # groups saved by an older version
                s.setdefault(name, default)
            self._check_group(s)
            new_groups.append(s)
        self.state = state
        self.param_groups = new_groups
        self._after_load()

    def _after_load(self) -> None:
        """Hook for subclasses to fix up loaded groups (AdamW forces decoupled weight decay)."""

    @staticmethod
    def _cast_state(param: Tensor, value, index) -> Dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError(f"state for parameter {index} must be a dict, got {_type_name(value)}")
        out = {}
        for k, v in value.items():
            if v is None:
                out[k] = None
            elif k in _SCALAR_STATE_KEYS:  # the step count stays on the CPU, as torch's
                arr = np.array(_devices.to_host(v._data) if isinstance(v, Tensor) else v, dtype=np.float32)
                if arr.size != 1:
                    raise ValueError(f"state[{index}][{k!r}] must be a scalar, got shape {arr.shape}")
                out[k] = Tensor._wrap(arr.reshape(()))
            elif isinstance(v, (np.ndarray, Tensor)) or hasattr(v, "__array__"):
                # (a float16 / bfloat16 parameter's state is float32: see _as_float32)
                dt = np.float32 if _dtypes.is_low_precision(param._data.dtype) else param._data.dtype
                arr = np.array(_devices.to_host(v._data) if isinstance(v, Tensor) else v, dtype=dt, order="C")
                if arr.shape != param._data.shape:
                    raise ValueError(f"state[{index}][{k!r}] has shape {arr.shape}, but its parameter has shape "
                                     f"{param._data.shape}")
                out[k] = Tensor._wrap_exact(_devices.transfer(arr, _devices.device_of(param._data)))  # where it lives
            else:
                out[k] = copy.deepcopy(v)
        return out


def _new_step() -> Tensor:
    """A parameter's step count: a 0-d tensor of the default floating dtype (torch's _get_scalar_dtype)."""
    return Tensor._wrap_exact(np.zeros((), _dtypes.default_float()))


def _by_device(pairs):
    """``pairs`` split by the device of their parameters (one part on the CPU in the common case)."""
    if not pairs:
        return []
    if all(type(p._data) is np.ndarray for p, _ in pairs):
        return [pairs]
    parts: Dict[str, list] = {}
    for pair in pairs:
        parts.setdefault(_devices.device_of(pair[0]._data), []).append(pair)
    return list(parts.values())


def _as_float32(pairs):
    """A float16 / bfloat16 parameter and its gradient as float32 working copies (p._data swapped; step puts the
    storage back, the result rounded to nearest even): the float32 update, whose state (momentum, moments) is
    float32 (torch keeps it in the parameter's dtype, rounding every step)."""
    out = []
    for p, g in pairs:
        if p._data.dtype.itemsize == 2:
            p._data = _dtypes.astype(p._data, _dtypes._F32)
            g = _dtypes.astype(g, _dtypes._F32)
        out.append((p, g))
    return out


def _zeros_like(p: Tensor, value: float = 0.0) -> Tensor:
    """A state buffer of p's shape and dtype (float64 parameters keep float64 moments, as torch) on p's
    device, filled with ``value``."""
    dt = p._data.dtype
    if isinstance(p._data, np.ndarray):
        # C order whatever the parameter's layout: the kernels read state contiguously.
        return Tensor._wrap_exact(np.full(p._data.shape, value, dt) if value else np.zeros(p._data.shape, dt))
    return Tensor._wrap_exact(_devices.full(p._data.shape, value, dt, _devices.device_of(p._data)))


def _state_array(state: Dict[str, Any], key: str, p: Tensor) -> np.ndarray:
    """state[key]'s array, created as zeros if missing (e.g. amsgrad turned on after a load)."""
    t = state.get(key)
    if t is None:
        t = state[key] = _zeros_like(p)
    elif type(t._data) is not type(p._data):  # the parameter moved (Module.to) after its state was made
        t._data = _devices.transfer(t._data, _devices.device_of(p._data))
    return t._data
