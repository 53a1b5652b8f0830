"""``forgegrad.compile``: torch.compile's API over forgegrad's inference freezing.

forgegrad has no graph capture or code generation, and compile does not change training (forgegrad's kernels are
already fused per op: a Linear with its activation, a conv with its activation and pool). Where it does have a
speed-up is inference: ``nn.utils.freeze`` packs each Linear's weight for the GEMM once, keeps
each 3x3 conv's Winograd transform and runs a Sequential as one C++ call. ``compile(model)`` returns an
``OptimizedModule`` (torch's name and layout: the model is its ``_orig_mod`` submodule) that, for a call with no
graph to record (grad off, or nothing requiring grad) on a model in eval mode, runs a frozen copy of the model
(``nn.utils.freeze.frozen_view``: the model's own arrays, not copied, plus the packed copies), made at the first
such call and made again whenever the model could differ from it (the packed copies are snapshots):

- a parameter, buffer or submodule replaced (``load_state_dict`` of new tensors, ``p.data = ...``, ``.to()``,
  ``.double()``), or a module hook added or removed (a model with forward or backward hooks, or while a global
  module hook is registered, runs eager: the hooks see the model's own modules);
- any in-place write counted by the tensors' version counters (``_version_counter``: ``copy_``, ``add_``,
  ``t[i] = v``, ``nn.init``, an optimizer's step, ``load_state_dict``) or made through a ``t.data`` tensor;
- a module's train/eval flag flipped (a model in training mode, even partly, runs eager).

Checking costs one identity compare per module and tensor per call; the copy's outputs equal the eager model's
bit for bit (same kernels, same order). Calls that record a graph (training) run the model itself, eager.
Not seen: writes straight into a weight's numpy array (``p.numpy()[...] = v``), which no counter sees; call
``forgegrad.compiler.reset()`` after such a write. A forward that sets an attribute on its module in eval mode (a
counter, a cache kept on ``self``) sets the copy's, not the model's: compile such a model with ``backend="eager"``
(buffers it writes in place are the model's own arrays, as eager).
"""
from __future__ import annotations

import functools
import operator
from itertools import chain
import threading
import warnings
import weakref
from typing import Callable, Optional

from . import _version_counter as _vc
from .grad_mode import _state as _grad_state
from .nn.hooks import any_global_call_hooks, hook_store, note_hooks
from .nn.module import Module
from .tensor import Tensor

__all__ = ["compile", "OptimizedModule", "is_compiling", "disable", "reset", "list_backends", "MODES"]

# torch.compile's modes (torch/_inductor/ "Unrecognized mode"): forgegrad treats them all alike (no autotuning,
# no CUDA graphs: the frozen plan is the one optimisation it has)
MODES = ("default", "lite", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
# torch._dynamo.list_backends(None)'s common entries. "eager" / "aot_eager" mean "run the model as it is" in
# torch (a debugging backend): forgegrad does the same; the others run the frozen inference plan.
EAGER_BACKENDS = ("eager", "aot_eager", "aot_eager_decomp_partition", "aot_eager_default_partitioner", "eager_debug")
BACKENDS = ("inductor", "cudagraphs", "onnxrt", "openxla", "tvm", "aot_ts", "ts") + EAGER_BACKENDS

_local = threading.local()
_compiled_modules: "weakref.WeakSet" = weakref.WeakSet()  # what reset() clears


def is_compiling() -> bool:
    """torch.compiler.is_compiling(): True while code runs inside a compiled module or function (outside a
    ``compiler.disable`` function). torch says True only while Dynamo traces; forgegrad runs the Python every
    call, so a branch on it is taken at every compiled call, not baked in once."""
    return getattr(_local, "compiling", False)


class _Compiling:
    """Sets is_compiling() for the duration of a call (restored after, nested calls included)."""
    __slots__ = ("value", "before")

    def __init__(self, value: bool):
        self.value = value

    def __enter__(self):
        self.before = getattr(_local, "compiling", False)
        _local.compiling = self.value

    def __exit__(self, *exc):
        _local.compiling = self.before
        return False


def disable(fn: Optional[Callable] = None, recursive: bool = True, *, reason: Optional[str] = None):
    """torch.compiler.disable: ``fn`` runs eager inside compiled code (forgegrad's compiled code runs eager
    Python anyway; here is_compiling() is False inside it). Usable as ``@disable`` or ``@disable(reason=...)``."""
    if not isinstance(recursive, bool):
        raise TypeError(f"disable: recursive must be True or False, got {recursive!r}")
    if fn is None:
        return functools.partial(disable, recursive=recursive, reason=reason)
    if not callable(fn):
        raise TypeError(f"disable: fn must be a callable, got {type(fn).__name__}")

    @functools.wraps(fn)
    def run_eager(*args, **kwargs):
        with _Compiling(False):
            return fn(*args, **kwargs)
    run_eager._torchdynamo_disable = True
    return run_eager


def reset() -> None:
    """torch.compiler.reset() / torch._dynamo.reset(): every compiled module drops its frozen copy; the next
    inference call makes it again from the model as it is then."""
    for m in list(_compiled_modules):
        m._reset()


def list_backends(exclude_tags=("debug", "experimental")) -> list:
    """The backend names compile accepts (torch._dynamo.list_backends); ``exclude_tags=None`` lists the debug
    ones ("eager", "aot_eager", ...) too."""
    names = [b for b in BACKENDS if b not in EAGER_BACKENDS] if exclude_tags else list(BACKENDS)
    return sorted(names)


def _check_args(fullgraph, dynamic, backend, mode, options, disable_):
    for name, value in (("fullgraph", fullgraph), ("disable", disable_)):
        if not isinstance(value, bool):
            raise TypeError(f"compile: {name} must be True or False, got {value!r}")
    if dynamic is not None and not isinstance(dynamic, bool):
        raise TypeError(f"compile: dynamic must be None, True or False, got {dynamic!r}")
    if mode is not None and options is not None:  # torch's rule and message
        raise RuntimeError("Either mode or options can be specified, but both can't be specified at the same time.")
    if mode is not None and mode not in MODES:
        raise RuntimeError(f"compile: unrecognized mode={mode!r}, should be one of: {', '.join(MODES)}")
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"compile: options must be a dict or None, got {type(options).__name__}")
    if backend is None:
        backend = "inductor"
    if isinstance(backend, str):
        if backend not in BACKENDS:
            raise RuntimeError(f"compile: invalid backend={backend!r}, should be one of: {', '.join(BACKENDS)} "
                               "or a callable (see forgegrad.compiler.list_backends())")
    elif callable(backend):
        # torch hands a custom backend a torch.fx GraphModule; forgegrad captures no graph to hand it
        warnings.warn("forgegrad.compile: a backend callable is not called (forgegrad captures no torch.fx graph); "
                      "the model runs forgegrad's frozen inference plan as with backend='inductor'", stacklevel=3)
        backend = "inductor"
    else:
        raise TypeError(f"compile: backend must be a str or a callable, got {type(backend).__name__}")
    return backend


def compile(model=None, *, fullgraph: bool = False, dynamic: Optional[bool] = None, backend="inductor",  # noqa: A001
            mode: Optional[str] = None, options: Optional[dict] = None, name: Optional[str] = None,
            disable: bool = False, recompile_limit: Optional[int] = None, isolate_recompiles: bool = False,
            shapes_spec=None):
    """torch.compile. On an ``nn.Module``: an ``OptimizedModule`` wrapping it (see the module docstring for what
    it speeds up: eval-mode calls without a graph run a frozen copy, bit-identical; training runs eager). On a
    function: a wrapper that runs it with ``compiler.is_compiling()`` True (no speed-up: forgegrad has no graph
    to capture in a function). Without ``model``: a decorator. ``fullgraph``, ``dynamic`` and ``options`` are
    checked and accepted (forgegrad has no graph breaks, no shape specialisation and no inductor options);
    ``disable=True`` returns ``model`` itself. torch's ``name``, ``recompile_limit``, ``isolate_recompiles`` and
    ``shapes_spec`` keywords are accepted and unused."""
    backend = _check_args(fullgraph, dynamic, backend, mode, options, disable)
    if model is None:  # @compile(...) with arguments
        def decorate(model):
            if model is None:
                raise RuntimeError("Model can't be None")
            return compile(model, fullgraph=fullgraph, dynamic=dynamic, backend=backend, mode=mode,
                           options=options, name=name, disable=disable, recompile_limit=recompile_limit,
                           isolate_recompiles=isolate_recompiles, shapes_spec=shapes_spec)
        return decorate
    if disable:
        return model
    if isinstance(model, Module):
        return OptimizedModule(model, backend)
    if not callable(model):
        raise TypeError(f"compile: model must be an nn.Module or a callable, got {type(model).__name__}")
    return _compiled_function(model)


def _compiled_function(fn):
    @functools.wraps(fn)
    def compiled(*args, **kwargs):
        with _Compiling(True):
            return fn(*args, **kwargs)
    compiled._torchdynamo_orig_callable = fn
    return compiled


def _no_grad_wanted(args, kwargs) -> bool:
    """Whether no tensor argument requires grad (with grad on, the call then records no graph if no parameter
    requires grad either: the caller checks those)."""
    for a in args:
        if isinstance(a, Tensor) and a.requires_grad:
            return False
    for a in kwargs.values():
        if isinstance(a, Tensor) and a.requires_grad:
            return False
    return True


_data_of = operator.attrgetter("_data")
_training_of = operator.attrgetter("training")
_values_of = operator.methodcaller("values")
_STORES = ("_modules", "_parameters", "_buffers", "_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks",
           "_backward_hooks")
# hooks a frozen copy would run with itself, not the model, as their module: a model with one runs eager
_EAGER_HOOKS = ("_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


class _Snapshot:
    """What the frozen copy was made from: each module's train flag, the ids of its children, parameters,
    buffers and pre-hooks, the ids of the tensors' arrays, and their versions. The objects are held (so their
    ids stay theirs). A call rebuilds one flat list with C-level maps and compares it (~4 us for LeNet's 13
    modules, loaded machine; a Python loop over the modules and their dicts had cost 10-20 us, more than
    freezing saves at batch 1)."""

    def __init__(self, root: Module):
        self.modules = list(root.modules())
        self.stores = [hook_store(m, store) for m in self.modules for store in _STORES]
        self.hooked = any(m.__dict__[store] for m in self.modules for store in _EAGER_HOOKS)
        self.tensors = [t for m in self.modules for store in ("_parameters", "_buffers")
                        for t in m.__dict__[store].values() if t is not None]
        # a store empty now is checked by its length alone (a value added changes it): only the others' values
        # are listed per call (making a dict's values view is most of the check's cost)
        self.filled = [d for d in self.stores if d]
        self.held = [list(d.values()) for d in self.filled] + [list(map(_data_of, self.tensors))]
        self.state = self._state()
        self.versions = self._versions()
        self.clock, self.data_writes = _vc.clock, _vc.data_writes

    def _state(self) -> list:
        return [*map(_training_of, self.modules), *map(len, self.stores),
                *map(id, chain.from_iterable(map(_values_of, self.filled))), *map(id, map(_data_of, self.tensors))]

    def _versions(self) -> list:
        return list(map(_vc.version_of, map(_data_of, self.tensors)))

    def matches(self) -> bool:
        if _vc.data_writes != self.data_writes or self._state() != self.state:
            return False
        if _vc.clock != self.clock:  # something was written somewhere: was it one of ours?
            if self._versions() != self.versions:
                return False
            self.clock = _vc.clock
        return True


class OptimizedModule(Module):
    """torch's OptimizedModule: ``_orig_mod`` is the compiled model (a submodule, so ``state_dict()`` keys carry
    the ``_orig_mod.`` prefix as torch's do, and ``train()`` / ``eval()`` / ``to()`` reach it); other attributes
    are read from it. See ``forgegrad.compile``."""

    _OWN_ATTRIBUTES = frozenset({"_orig_mod", "_backend", "_asked_backend", "_frozen", "_snapshot", "forward",
                                 "__dict__"})

    def __init__(self, mod: Module, backend: str = "inductor"):
        super().__init__()
        self._orig_mod = mod
        object.__setattr__(self, "_backend", backend)
        object.__setattr__(self, "_asked_backend", backend)
        object.__setattr__(self, "_frozen", None)
        object.__setattr__(self, "_snapshot", None)
        _compiled_modules.add(self)

    # as torch's: the flag is the model's (wrapper.training = False, .train(), .eval() all reach it)
    @property
    def training(self) -> bool:
        return self._modules["_orig_mod"].training

    @training.setter
    def training(self, value: bool) -> None:
        mods = self.__dict__["_modules"]
        if "_orig_mod" in mods:  # (Module.__init__ sets the default before there is a model)
            mods["_orig_mod"].training = value

    def __getattr__(self, name):
        mods = self.__dict__.get("_modules")
        if mods is None or "_orig_mod" not in mods:
            raise AttributeError(f"'OptimizedModule' object has no attribute '{name}'")
        if name == "_orig_mod":
            return mods["_orig_mod"]
        return getattr(mods["_orig_mod"], name)

    def __setattr__(self, name, value):
        # as torch's: attributes are set on the model, except the wrapper's own and its class's
        if hasattr(type(self), name) or name in OptimizedModule._OWN_ATTRIBUTES:
            return super().__setattr__(name, value)
        return setattr(self._modules["_orig_mod"], name, value)

    def __delattr__(self, name):
        if hasattr(type(self), name) or name in OptimizedModule._OWN_ATTRIBUTES:
            return super().__delattr__(name)
        return delattr(self._modules["_orig_mod"], name)

    def __len__(self) -> int:
        orig = self._modules["_orig_mod"]
        if hasattr(orig, "__len__"):
            return len(orig)
        raise TypeError(f"{type(orig).__name__} does not support len()")

    def _reset(self) -> None:
        """compiler.reset(): drop the copy; a model whose freezing failed is tried again at its next call."""
        object.__setattr__(self, "_backend", self._asked_backend)
        self._drop_frozen()

    def _drop_frozen(self) -> None:
        object.__setattr__(self, "_frozen", None)
        object.__setattr__(self, "_snapshot", None)

    def _frozen_model(self) -> Optional[Module]:
        """The frozen copy for the model as it is now (made again if the model changed), or None where the
        model must run itself: a module in training mode or a parameter that requires grad with grad on."""
        snap = self._snapshot
        if snap is None or not snap.matches():
            from .nn.utils.freeze import frozen_view
            orig = self._modules["_orig_mod"]
            if any(m.training for m in orig.modules()):
                self._drop_frozen()
                return None
            snap = _Snapshot(orig)
            if snap.hooked:  # forward or backward hooks: the model runs eager (until they are removed)
                self._drop_frozen()
                object.__setattr__(self, "_snapshot", snap)
                return None
            try:
                frozen = frozen_view(orig)
            except Exception as e:  # noqa: BLE001  (a model deepcopy cannot copy: it runs eager, as torch falls back)
                warnings.warn(f"forgegrad.compile: the model cannot be frozen ({type(e).__name__}: {e}); it runs "
                              "eager (forgegrad.compiler.reset() tries again)", stacklevel=4)
                object.__setattr__(self, "_backend", "eager")
                return None
            for m in frozen.modules():  # a module compiled in place (Module.compile): its copy runs plain
                if "_compiled_call_impl" in m.__dict__:
                    _uncompile(m)
            object.__setattr__(self, "_frozen", frozen)
            object.__setattr__(self, "_snapshot", snap)
        return self._frozen

    def forward(self, *args, **kwargs):
        orig = self.__dict__["_orig_mod"]
        d = _grad_state.__dict__
        grad_on = d.get("grad_enabled", True)
        fast = self._backend not in EAGER_BACKENDS and not orig.training and d.get("recorder") is None \
            and not d.get("batching") and not d.get("autocast") and not any_global_call_hooks()
        if fast and grad_on:
            fast = _no_grad_wanted(args, kwargs) and not any(p.requires_grad for p in orig.parameters())
        before = getattr(_local, "compiling", False)
        _local.compiling = True  # (inline _Compiling: a context object per call is measurable at batch 1)
        try:
            frozen = self._frozen_model() if fast else None
            if frozen is None:
                if orig.training and self._frozen is not None:  # training: the copy would only hold memory
                    self._drop_frozen()
                return self._call_eager(orig, args, kwargs)
            if grad_on:  # nothing requires grad: the eager model would record nothing either
                from .autograd import no_grad
                with no_grad():
                    return self._call_frozen(frozen, args, kwargs)
            return self._call_frozen(frozen, args, kwargs)
        finally:
            _local.compiling = before

    def _call_eager(self, orig: Module, args: tuple, kwargs: dict):
        return orig(*args, **kwargs)

    def _call_frozen(self, frozen: Module, args: tuple, kwargs: dict):
        return frozen(*args, **kwargs)

    def __deepcopy__(self, memo):
        import copy
        return type(self)(copy.deepcopy(self._modules["_orig_mod"], memo), self._backend)

    def __reduce__(self):
        return type(self), (self._modules["_orig_mod"], self._backend)


class _CompiledCall(OptimizedModule):
    """``Module.compile``'s compiled call (torch's ``_compiled_call_impl``): held in the module's ``__dict__`` (not a
    submodule: the module stays the root of its own tree) together with an instance ``forward`` that is this
    object's, so a later ``module(x)`` (Module.__call__, its pre-hooks, then ``forward``) takes the compiled path.
    The module's own forward runs as its class defines it, and the frozen copy's forward is called directly, so
    the module's hooks run once (in Module.__call__)."""

    def _call_eager(self, orig: Module, args: tuple, kwargs: dict):
        return type(orig).forward(orig, *args, **kwargs)

    def _call_frozen(self, frozen: Module, args: tuple, kwargs: dict):
        return frozen.forward(*args, **kwargs)


def _uncompile(module: Module) -> None:
    d = module.__dict__
    old = d.pop("_compiled_call_impl", None)
    if old is not None and getattr(d.get("forward"), "__self__", None) is old:
        del d["forward"]
    if old is not None:
        _compiled_modules.discard(old)


def compile_in_place(module: Module, *args, **kwargs) -> None:
    """``Module.compile(*args, **kwargs)``: torch.compile's keyword arguments, checked as ``compile`` checks
    them; ``disable=True`` leaves (or makes) the module uncompiled."""
    if args:
        raise TypeError(f"Module.compile() takes torch.compile's keyword arguments only, got {len(args)} "
                        "positional argument(s)")
    compiled = compile(module, **kwargs)  # checks the arguments; module itself when disable=True
    _uncompile(module)
    if compiled is module:
        return
    _compiled_modules.discard(compiled)
    call = _CompiledCall(module, compiled._asked_backend)
    module.__dict__["_compiled_call_impl"] = call
    module.__dict__["forward"] = call.forward
    note_hooks()  # an instance forward: the fast paths that skip Module.__call__ check for one from now on
