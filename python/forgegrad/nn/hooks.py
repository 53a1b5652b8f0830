"""nn.Module hooks with torch's semantics: the handle ``register_*_hook`` returns, the global hooks of
``nn.modules.module`` (``register_module_forward_hook`` ...), a module call that runs them, and the full
backward hooks (torch.utils.hooks.BackwardHook: identity autograd Functions around the module's tensor inputs
and outputs, whose backward passes see the gradients w.r.t. the outputs, then w.r.t. the inputs).

``Module.__call__`` comes here only while a hook of some kind is registered (on the module or globally);
``has_call_hooks`` is the test the graph-free fast paths (Sequential's native plan, compile's frozen copy,
the decode loops) make before they skip ``Module.__call__``."""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Callable

import numpy as np

from .._seen_flag import SeenFlag
from ..autograd import Function
from ..grad_mode import _state as _grad_state
from ..tensor import Tensor

__all__ = ["RemovableHandle", "register_module_forward_pre_hook", "register_module_forward_hook",
           "register_module_full_backward_pre_hook", "register_module_full_backward_hook"]

# the per-module dicts a call runs (torch's attribute names); the fast paths watch them all
CALL_HOOK_STORES = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
# every hook dict Module.__init__ makes (torch's names), hooks and the flags kept by hook id
HOOK_STORES = CALL_HOOK_STORES + ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs",
                                  "_forward_hooks_always_called", "_state_dict_pre_hooks", "_state_dict_hooks",
                                  "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")

_global_forward_pre_hooks: "OrderedDict[int, Callable]" = OrderedDict()
_global_forward_hooks: "OrderedDict[int, Callable]" = OrderedDict()
_global_forward_hooks_with_kwargs: "OrderedDict[int, bool]" = OrderedDict()
_global_forward_hooks_always_called: "OrderedDict[int, bool]" = OrderedDict()
_global_backward_pre_hooks: "OrderedDict[int, Callable]" = OrderedDict()
_global_backward_hooks: "OrderedDict[int, Callable]" = OrderedDict()
GLOBAL_CALL_HOOKS = (_global_forward_pre_hooks, _global_forward_hooks, _global_backward_pre_hooks,
                     _global_backward_hooks)


class RemovableHandle:
    """What every ``register_*_hook`` returns: ``remove()`` takes the hook (and its flags) out again; as a
    context manager it removes the hook on exit. (torch.utils.hooks.RemovableHandle's; it holds the dicts
    themselves, not weak references.)"""

    next_id = 0

    def __init__(self, hooks_dict, *, extra_dict=None) -> None:
        self.hooks_dict = hooks_dict
        self.id = RemovableHandle.next_id
        RemovableHandle.next_id += 1
        self.extra_dicts = () if extra_dict is None else \
            tuple(extra_dict) if isinstance(extra_dict, list) else (extra_dict,)

    def remove(self) -> None:
        for d in (self.hooks_dict, *self.extra_dicts):
            d.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def check_hook(hook, where: str) -> None:
    if not callable(hook):
        raise TypeError(f"{where}: hook must be callable, got {type(hook).__name__}")


def check_flag(value, name: str, where: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r}")


# Module.__call__ and Sequential.__call__ look at the forward pre-hooks alone until a forward or backward hook is
# registered anywhere (or a module holding one is unpickled, or a forward is set on an instance): then note_hooks()
# sets ``_hooks_seen`` in their modules' namespaces (HOOKS_SEEN, a forgegrad._seen_flag.SeenFlag: a global read
# there costs nothing; each further dict looked up ~20 ns a call)
HOOKS_SEEN = SeenFlag("_hooks_seen")
watch_hooks_flag = HOOKS_SEEN.watch
note_hooks = HOOKS_SEEN.note


def add_hook(store: "OrderedDict", hook, prepend: bool, extra=None) -> RemovableHandle:
    if any(store is g for g in GLOBAL_CALL_HOOKS):
        note_hooks()
    handle = RemovableHandle(store, extra_dict=extra)
    store[handle.id] = hook
    if prepend:
        store.move_to_end(handle.id, last=False)
    return handle


def hook_store(module, name: str) -> "OrderedDict":
    """module's hook dict ``name``, made if missing (a module made without Module.__init__: a copy, a pickle)."""
    d = module.__dict__
    store = d.get(name)
    if store is None:
        store = d[name] = OrderedDict()
    return store


def has_call_hooks(module) -> bool:
    """Whether calling ``module`` runs more than its class's forward: a hook (its own of any kind, or a global
    one) or a forward set on the instance (a wrapper patched in as accelerate's hooks do, Module.compile in
    place): a fast path that skips ``Module.__call__`` must then call the module."""
    d = module.__dict__
    return bool(d.get("_forward_pre_hooks") or d.get("_forward_hooks") or d.get("_backward_pre_hooks")
                or d.get("_backward_hooks") or _global_forward_pre_hooks or _global_forward_hooks
                or _global_backward_pre_hooks or _global_backward_hooks or "forward" in d)


def has_own_call_hooks(module) -> bool:
    """Whether ``module`` holds a hook of its own or an instance forward (global hooks aside): what a plan made
    once (a fused activation, a converted model) may depend on; global hooks are checked at each call."""
    d = module.__dict__
    return bool(d.get("_forward_pre_hooks") or d.get("_forward_hooks") or d.get("_backward_pre_hooks")
                or d.get("_backward_hooks") or "forward" in d)


def forwards_patched(mods) -> bool:
    """Whether one of the modules has a forward set on the instance (see has_call_hooks). Setting one notes
    it as registering a hook does (note_hooks), so the fast paths need ask only once ``_hooks_seen``."""
    for m in mods:
        if "forward" in getattr(m, "__dict__", ()):  # (a None slot of a container has none)
            return True
    return False


def any_global_call_hooks() -> bool:
    return bool(_global_forward_pre_hooks or _global_forward_hooks or _global_backward_pre_hooks
                or _global_backward_hooks)


def tree_has_call_hooks(root) -> bool:
    """Whether calling ``root`` runs a hook anywhere in it (or a global one)."""
    return any_global_call_hooks() or any(has_call_hooks(m) for m in root.modules())


# ---- global hooks (torch.nn.modules.module's) -----------------------------------------------------------
def register_module_forward_pre_hook(hook: Callable) -> RemovableHandle:
    """A forward pre-hook ``hook(module, args)`` run before every module's forward, before its own pre-hooks."""
    check_hook(hook, "register_module_forward_pre_hook")
    return add_hook(_global_forward_pre_hooks, hook, False)


def register_module_forward_hook(hook: Callable, *, with_kwargs: bool = False,
                                 always_call: bool = False) -> RemovableHandle:
    """A forward hook ``hook(module, args, output)`` (``hook(module, args, kwargs, output)`` with_kwargs) run
    after every module's forward, before its own forward hooks; always_call: also when forward raised."""
    check_hook(hook, "register_module_forward_hook")
    check_flag(with_kwargs, "with_kwargs", "register_module_forward_hook")
    check_flag(always_call, "always_call", "register_module_forward_hook")
    handle = add_hook(_global_forward_hooks, hook, False,
                      [_global_forward_hooks_with_kwargs, _global_forward_hooks_always_called])
    if with_kwargs:
        _global_forward_hooks_with_kwargs[handle.id] = True
    if always_call:
        _global_forward_hooks_always_called[handle.id] = True
    return handle


def register_module_full_backward_pre_hook(hook: Callable) -> RemovableHandle:
    """A backward pre-hook ``hook(module, grad_output)`` for every module, run before the modules' own."""
    check_hook(hook, "register_module_full_backward_pre_hook")
    return add_hook(_global_backward_pre_hooks, hook, False)


def register_module_full_backward_hook(hook: Callable) -> RemovableHandle:
    """A full backward hook ``hook(module, grad_input, grad_output)`` for every module, run before their own."""
    check_hook(hook, "register_module_full_backward_hook")
    return add_hook(_global_backward_hooks, hook, False)


# ---- a call with hooks (torch's Module._call_impl) -------------------------------------------------------
_EMPTY: dict = {}


def call_with_hooks(module, args: tuple, kwargs: dict):
    d = module.__dict__
    pre = d.get("_forward_pre_hooks") or _EMPTY
    pre_kw = d.get("_forward_pre_hooks_with_kwargs") or _EMPTY
    fwd = d.get("_forward_hooks") or _EMPTY
    fwd_kw = d.get("_forward_hooks_with_kwargs") or _EMPTY
    fwd_always = d.get("_forward_hooks_always_called") or _EMPTY
    result = None
    called_always = set()
    try:
        for hook_id, hook in (*_global_forward_pre_hooks.items(), *pre.items()):
            if hook_id in pre_kw:
                got = hook(module, args, kwargs)
                if got is not None:
                    if not (isinstance(got, tuple) and len(got) == 2):
                        raise RuntimeError(f"forward pre-hook must return None or a tuple of (new_args, new_kwargs), "
                                           f"but got {got}.")
                    args, kwargs = got
            else:
                got = hook(module, args)
                if got is not None:
                    args = got if isinstance(got, tuple) else (got,)
        bw = None
        post = [*_global_backward_hooks.values(), *(d.get("_backward_hooks") or _EMPTY).values()]
        bpre = [*_global_backward_pre_hooks.values(), *(d.get("_backward_pre_hooks") or _EMPTY).values()]
        if (post or bpre) and _grad_state.__dict__.get("recorder") is None:
            bw = BackwardHook(module, post, bpre)
            args = bw.setup_input_hook(args)
        result = module.forward(*args, **kwargs)
        for hook_id, hook in (*_global_forward_hooks.items(), *fwd.items()):
            if hook_id in fwd_always or hook_id in _global_forward_hooks_always_called:
                called_always.add(hook_id)
            if hook_id in fwd_kw or hook_id in _global_forward_hooks_with_kwargs:
                got = hook(module, args, kwargs, result)
            else:
                got = hook(module, args, result)
            if got is not None:
                result = got
        if bw is not None:
            if not isinstance(result, (Tensor, tuple)):
                warnings.warn("For backward hooks to be called, module output should be a Tensor or a tuple of "
                              f"Tensors but received {type(result)}", stacklevel=3)
            result = bw.setup_output_hook(result)
        return result
    except Exception:
        # always_call hooks not run yet run now (their own errors only warned about), then the error goes on
        always = {**_global_forward_hooks_always_called, **fwd_always}
        with_kwargs = {**_global_forward_hooks_with_kwargs, **fwd_kw}
        for hook_id, hook in (*_global_forward_hooks.items(), *fwd.items()):
            if hook_id in called_always or hook_id not in always:
                continue
            kind = "global module" if hook_id in _global_forward_hooks else "module"
            try:
                got = hook(module, args, kwargs, result) if hook_id in with_kwargs else hook(module, args, result)
                if got is not None:
                    result = got
            except Exception as e:  # noqa: BLE001  (torch silences it: the forward's error is raised)
                warnings.warn(f"{kind} forward hook with ``always_call=True`` raised an exception that was silenced "
                              f"as another error was raised in forward: {e}", stacklevel=3)
        raise


# ---- full backward hooks ----------------------------------------------------------------------------------
class BackwardHookFunction(Function):
    """Identity on the module's tensor inputs (or outputs): its backward hands the gradients to the
    BackwardHook (``hook``), which may replace them. The outputs are the inputs' arrays (views, as torch's)."""

    exact_dtype = True
    handles_float64 = True
    any_device = True

    @staticmethod
    def forward(ctx, *arrays, hook=None, side=None):
        ctx.hook, ctx.side = hook, side
        # torch's: an output that did not reach the loss shows None in grad_output; an input's gradient is
        # materialised (zeros) for grad_input, also when it requires no grad or got none
        ctx.materialize_grads = side == "in"
        return tuple(arrays)

    @staticmethod
    def backward(ctx, *grads):
        hook = ctx.hook
        got = hook.inputs_backward(ctx, grads) if ctx.side == "in" else hook.outputs_backward(ctx, grads)
        return tuple(None if g is None else (g._data if isinstance(g, Tensor) else g) for g in got)


def _as_tensors(grads, needs, zeros: bool):
    """The gradient arrays as Tensors; those of tensors that require no grad None (outputs), or zeros (inputs:
    torch materialises them). An output's that did not reach the loss arrives as None and stays None."""
    return tuple(None if g is None else Tensor._wrap_exact(g) if n else
                 Tensor._wrap_exact(np.zeros_like(g)) if zeros else None for g, n in zip(grads, needs))


class BackwardHook:
    """torch.utils.hooks.BackwardHook's: the grads w.r.t. the outputs are kept when the output node's backward
    runs (after the backward pre-hooks replaced them); the full hooks run when the input node's backward runs,
    with both, or at the output node if no input requires grad. Entries of non-tensors are None."""

    def __init__(self, module, user_hooks, user_pre_hooks) -> None:
        self.module, self.user_hooks, self.user_pre_hooks = module, user_hooks, user_pre_hooks
        self.grad_outputs = None
        self.n_inputs = self.n_outputs = -1
        self.input_tensors_index = self.output_tensors_index = None

    @staticmethod
    def _pack_with_none(indices, values, size):
        res = [None] * size
        for i, v in zip(indices, values):
            res[i] = v
        return tuple(res)

    def _apply(self, args: tuple, side: str):
        index = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        tensors = [args[i] for i in index]
        if not (any(t.requires_grad for t in tensors) and _grad_state.__dict__.get("grad_enabled", True)):
            return args, None
        new = BackwardHookFunction.apply(*tensors, hook=self, side=side)
        out = list(args)
        for i, t in zip(index, new):
            out[i] = t
        return tuple(out), index

    def setup_input_hook(self, args: tuple) -> tuple:
        res, self.input_tensors_index = self._apply(args, "in")
        self.n_inputs = len(args)
        return res

    def setup_output_hook(self, result):
        single = not isinstance(result, tuple)
        args = (result,) if single else result
        res, self.output_tensors_index = self._apply(args, "out")
        self.n_outputs = len(args)
        return res[0] if single else res

    def outputs_backward(self, ctx, grads):
        needs = ctx.needs_input_grad
        self.grad_outputs = self._pack_with_none(self.output_tensors_index, _as_tensors(grads, needs, False),
                                                 self.n_outputs)
        for pre in self.user_pre_hooks:
            got = pre(self.module, self.grad_outputs)
            if got is None:
                continue
            got = got if isinstance(got, tuple) else (got,)
            if len(got) != len(self.grad_outputs):
                raise RuntimeError("Backward pre hook returned an invalid number of grad_output, "
                                   f"got {len(got)}, but expected {len(self.grad_outputs)}")
            self.grad_outputs = got
        local = self.grad_outputs
        if self.input_tensors_index is None:
            warnings.warn("Full backward hook is firing when gradients are computed with respect to module outputs "
                          "since no inputs require gradients.", stacklevel=2)
            grad_inputs = (None,) * self.n_inputs
            for hook in self.user_hooks:
                res = hook(self.module, grad_inputs, self.grad_outputs)
                if res is not None and not (isinstance(res, tuple) and all(r is None for r in res)):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient should always "
                                       "return None or None for all gradients.")
            self.grad_outputs = None
        return tuple(local[i] for i in self.output_tensors_index)

    def inputs_backward(self, ctx, grads):
        index = self.input_tensors_index
        if self.grad_outputs is None:  # the outputs' node did not run (no path from them): nothing to call
            return grads
        res = self._pack_with_none(index, _as_tensors(grads, ctx.needs_input_grad, True), self.n_inputs)
        for hook in self.user_hooks:
            out = hook(self.module, res, self.grad_outputs)
            if out is None:
                continue
            out = out if isinstance(out, tuple) else (out,)
            if len(out) != len(res):
                raise RuntimeError("Backward hook returned an invalid number of grad_input, "
                                   f"got {len(out)}, but expected {len(res)}")
            res = out
        self.grad_outputs = None
        return tuple(res[i] for i in index)
