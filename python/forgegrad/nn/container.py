"""Containers: Sequential (with Keras-style compile/fit), ModuleList, ModuleDict."""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from .. import _C
from .._validate import check_bool
from ..autograd import graph_free
from ..grad_mode import recorder
from ..tensor import Tensor
from ..kernels.activation import _act_forward
from ..kernels.conv import conv2d_forward
from ..kernels.geometry import conv2d_geometry, conv2d_padding, pool2d_geometry
from ..kernels.pool import max_pool2d_values
from .activation import _Activation
from .conv import Conv2d, MaxPool2d, _check_input
from .linear import Flatten, Linear, feature_size_after, packed_weight
from .hooks import (CALL_HOOK_STORES, GLOBAL_CALL_HOOKS, forwards_patched, has_call_hooks, has_own_call_hooks,
                    watch_hooks_flag)
from .module import Module
from .module_containers import Container, ModuleDict, ModuleList, _ModuleSequence

__all__ = ["Sequential", "ModuleList", "ModuleDict", "Container"]

_NDARRAY = np.ndarray
_F32 = np.dtype(np.float32)  # the fused kernels are float32; float64 runs the modules one by one
# False until a forward or backward hook is registered anywhere: Sequential.__call__ then tests them all
_hooks_seen = False
watch_hooks_flag(globals())


def _fusable_activation(m) -> bool:
    """An activation module whose kernel code a Linear or Conv2d can apply in place: one of nn's
    activations whose forward is the op itself (a subclass that overrides forward, or one with hooks of its
    own, or an op without kernel code such as elu, runs as its own step; global hooks are checked per call)."""
    return isinstance(m, _Activation) and type(m).forward is _Activation.forward \
        and m._op_epilogue is not None and not has_own_call_hooks(m)


def _cpu_f32(t) -> bool:
    """A Tensor on numpy float32 data: what the graph-free kernels below take (else the module runs)."""
    return isinstance(t, Tensor) and type(t._data) is _NDARRAY and t._data.dtype is _F32


def _run_module(m, act, input):
    return m(input)


def _run_linear(m, act, input):
    # the fused kernel takes CPU arrays; on another device (meta) the modules run one by one (a
    # module with hooks (e.g. a pruned Linear's forward pre-hook) runs them through m(input)). The
    # parameters are read from the module's dicts directly (not through Module.__getattr__): at batch 1
    # this step's Python is a quarter of a small layer's time.
    if act is not None and has_call_hooks(act):  # hooked since the plan was built
        return act(_run_linear(m, None, input))
    d = m.__dict__
    params = d["_parameters"]
    w, b = params.get("weight"), params.get("bias")  # (pruning moves the weight out: then hooks run it)
    wd = w._data if w is not None else None
    # (a bias of another dtype goes to the module, which raises the dtype error F.linear raises)
    if _cpu_f32(input) and not has_call_hooks(m) and type(wd) is _NDARRAY and wd.dtype is _F32 \
            and (b is None or (type(b._data) is _NDARRAY and b._data.dtype is _F32)):
        code, alpha = (-1, 0.0) if act is None else act.epilogue()
        return Tensor._wrap(_C.gemm.linear(input._data, wd, None if b is None else b._data, code, alpha,
                                           packed_weight(m)))
    input = m(input)
    return input if act is None else act(input)


def _remembered(m, key, compute):
    """compute(), kept on module m for the next call with the same key (the input's shape and the
    module's settings): a served model sees a few batch shapes, and the checked geometry of a conv or
    pool costs ~3 us of Python a call, a tenth of a LeNet layer's time at batch 1."""
    hit = m.__dict__.get("_plan_geometry")
    if hit is None or hit[0] != key:
        hit = (key, compute())
        m.__dict__["_plan_geometry"] = hit
    return hit[1]


def _contiguous(a) -> bool:
    return a.flags.c_contiguous and a.flags.aligned


def _pool_fuses(pool, conv_shape) -> bool:
    """Whether MaxPool2d ``pool`` over a conv output of conv_shape is the 2x2 / stride 2 max pool
    (no padding or dilation, floor) that the conv kernel can take per block; its checked geometry is
    remembered on the pool for the next call."""
    k, s, p, d, shape = _remembered(
        pool, (conv_shape, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode),
        lambda: pool2d_geometry(conv_shape, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                check_bool(pool.ceil_mode, "ceil_mode"), "max_pool2d"))
    n, c, oh, ow = conv_shape
    return k == (2, 2) and s == (2, 2) and p == (0, 0) and d == (1, 1) \
        and tuple(shape) == (n, c, oh // 2, ow // 2) and oh >= 2 and ow >= 2


def _packed_conv_weight(m, w):
    """The Winograd transform of weight array w made by ``nn.utils.freeze`` (for m's groups), or None."""
    packed = m.__dict__.get("_packed_weight")
    return packed if packed is not None and packed.source is w and packed.groups == m.groups else None


def _run_conv(m, tail, input):
    """Conv2d with what follows it in one kernel call: tail = (activation or None, MaxPool2d or None).
    The kernel applies the activation to each block of output as it writes it and, for a 2x2 / stride
    2 max pool, pools the block while it is in cache (the full-size output is never stored); same bits
    as the steps one by one. A module with hooks, data off the CPU's float32, or another
    pool runs the steps (the activation then goes in place over the fresh output)."""
    act, pool = tail
    if act is not None and has_call_hooks(act):  # hooked since the plan was built
        y = act(_run_conv(m, (None, None), input))
        return y if pool is None else _run_max_pool(pool, None, y)
    code, alpha = (-1, 0.0) if act is None else act.epilogue()
    if _cpu_f32(input) and not has_call_hooks(m) and type(m.weight._data) is _NDARRAY \
            and m.weight._data.dtype is _F32 and (m.bias is None or type(m.bias._data) is _NDARRAY):
        _check_input(input, (4,), "Conv2d")
        x, w, b = input._data, m.weight._data, None if m.bias is None else m.bias._data
        if _contiguous(x) and _contiguous(w) and (b is None or (b.dtype is _F32 and _contiguous(b))):
            # the checked geometry, then the kernel binding, which checks every array again itself
            stride, pads, dilation, groups, shape = _remembered(
                m, (x.shape, w.shape, m.stride, m.padding, m.dilation, m.groups),
                lambda: conv2d_geometry(x.shape, w.shape, m.stride, m.padding, m.dilation, m.groups))
            fuse_pool = pool is not None and not has_call_hooks(pool) and _pool_fuses(pool, shape)
            if fuse_pool:
                shape = (shape[0], shape[1], shape[2] // 2, shape[3] // 2)
            y = np.empty(shape, np.float32)
            _C.conv.conv2d_forward(x, w, b, y, stride, pads, dilation, groups, code, alpha, fuse_pool,
                                   _packed_conv_weight(m, w))
            y = Tensor._wrap(y)
            return y if pool is None or fuse_pool else _run_max_pool(pool, None, y)
        y = Tensor._wrap(conv2d_forward(x, w, b, m.stride, m.padding, m.dilation, m.groups, code, alpha))
        return y if pool is None else _run_max_pool(pool, None, y)
    y = m(input)
    if act is not None:
        if _cpu_f32(y) and y._data.flags.c_contiguous and y._data.flags.aligned and y._data.flags.writeable:
            _act_forward(code, y._data, y._data, alpha)
        else:
            y = act(y)
    return y if pool is None else _run_max_pool(pool, None, y)


def _run_max_pool(m, act, input):
    """Max pooling without the indices only a backward pass would read."""
    if _cpu_f32(input) and not has_call_hooks(m):
        _check_input(input, (4,), "MaxPool2d")
        x = input._data
        if _contiguous(x) and min(x.shape[1:]) >= 1:
            k, s, p, d, shape = _remembered(
                m, (x.shape, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode),
                lambda: pool2d_geometry(x.shape, m.kernel_size, m.stride, m.padding, m.dilation,
                                        check_bool(m.ceil_mode, "ceil_mode"), "max_pool2d"))
            y = np.empty(shape, np.float32)
            _C.pool.max_pool2d_forward(x, y, None, k, s, p, d, bool(m.ceil_mode))
            return Tensor._wrap(y)
        return Tensor._wrap(max_pool2d_values(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode))
    return m(input)


def _run_flatten(m, act, input):
    """Flatten of all but the batch dim, as a reshape of the array (the op's view of the same data,
    without its ~10 us of autograd dispatch: a tenth of a LeNet's batch-1 forward on one core)."""
    if _cpu_f32(input) and m.start_dim == 1 and m.end_dim == -1 and input._data.ndim >= 2 \
            and not has_call_hooks(m):
        d = input._data
        return Tensor._wrap(d.reshape(d.shape[0], math.prod(d.shape[1:])))
    return m(input)


def _pool_step(m) -> bool:
    """A max pool the graph-free forward runs without indices (and a conv before it may take)."""
    return type(m) is MaxPool2d and not m.return_indices


def _inference_plan(mods):
    """[(run, module, act)]: the graph-free forward's steps, ``input = run(module, act, input)``. A
    Linear takes a following activation module into its kernel call as its epilogue, a Conv2d has its
    kernel apply one to each block of output it writes (act: that module, which then takes no step of
    its own; None: no activation); a MaxPool2d that returns no indices computes none; a Flatten
    reshapes the array. Same kernels, same results as running the modules one by one."""
    plan, i = [], 0
    while i < len(mods):
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if type(m) is Linear:
            fuse = _fusable_activation(nxt)
            plan.append((_run_linear, m, nxt if fuse else None))
            i += 2 if fuse else 1
        elif type(m) is Conv2d and (_fusable_activation(nxt) or _pool_step(nxt)):
            act = nxt if _fusable_activation(nxt) else None
            j = i + 1 + (act is not None)  # the step after the conv and its activation
            pool = mods[j] if j < len(mods) and _pool_step(mods[j]) else None
            plan.append((_run_conv, m, (act, pool)))
            i += 1 + (act is not None) + (pool is not None)
        elif _pool_step(m):
            plan.append((_run_max_pool, m, None))
            i += 1
        elif type(m) is Flatten:
            plan.append((_run_flatten, m, None))
            i += 1
        else:
            plan.append((_run_module, m, None))
            i += 1
    return plan


def _hooks_of(*mods):
    """The modules' call-hook dicts and the global ones (a native step falls back to Python while any holds one),
    or None when a module has none to watch (one restored without Module.__init__)."""
    dicts = [m.__dict__.get(store) for m in mods for store in CALL_HOOK_STORES]
    return None if any(type(d) is not OrderedDict for d in dicts) else dicts + list(GLOBAL_CALL_HOOKS)


def _native_pool(pool) -> bool:
    """Whether MaxPool2d ``pool`` is the 2x2 / stride 2 window (no padding or dilation) a conv kernel
    can take per block."""
    try:
        k, s, p, d, _ = pool2d_geometry((1, 1, 4, 4), pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                        check_bool(pool.ceil_mode, "ceil_mode"), "max_pool2d")
    except (TypeError, ValueError):
        return False  # the Python step raises it
    return k == (2, 2) and s == (2, 2) and p == (0, 0) and d == (1, 1)


def _native_plan(plan):
    """A ``_C.plan.SequentialPlan`` running the graph-free steps of a frozen Sequential in one call, or
    None when a step is not one it runs (Linear [-> activation], Conv2d [-> activation] [-> 2x2 max
    pool], Flatten from dim 1). It reads the layers' settings now (a frozen model is a snapshot) and
    their parameters at each call; each call returns None (the Python steps run) where they
    would not run these kernels: same kernels, same arguments, same bits."""
    native = _C.plan.SequentialPlan()
    for run, m, act in plan:
        if run is _run_linear:
            w = m._parameters.get("weight")
            hooks = _hooks_of(m) if act is None else _hooks_of(m, act)  # the fused activation's too
            if w is None or hooks is None:
                return None
            code, alpha = (-1, 0.0) if act is None else act.epilogue()
            native.add_linear(m._parameters, code, alpha, m.__dict__.get("_packed_weight"), hooks)
        elif run is _run_conv:
            act, pool = act
            w = m._parameters.get("weight")
            hooks = _hooks_of(*(x for x in (m, act, pool) if x is not None))
            if w is None or hooks is None or w.ndim != 4 or (pool is not None and not _native_pool(pool)):
                return None
            code, alpha = (-1, 0.0) if act is None else act.epilogue()
            kernel = tuple(w.shape[2:])
            try:
                pads = conv2d_padding(m.padding, kernel, m.stride, m.dilation)
            except (TypeError, ValueError):
                return None  # the Python step raises it
            packed = m.__dict__.get("_packed_weight")
            native.add_conv2d(m._parameters, m.stride, pads,
                              m.dilation, m.groups, kernel, code, alpha, pool is not None,
                              pool is not None and bool(pool.ceil_mode), packed, hooks)
        elif run is _run_flatten and m.start_dim == 1 and m.end_dim == -1 and _hooks_of(m) is not None:
            native.add_flatten(_hooks_of(m))
        else:
            return None
    return native


def _settings_free(plan) -> bool:
    """Whether a native plan of these steps reads no module setting that can change after it is built, so an
    eager (not frozen) Sequential may run one too: Linear steps only, each with no activation or one whose
    kernel code its type fixes (no arguments: ReLU, Sigmoid, Tanh). The plan reads the parameters at each call;
    a conv's stride or padding, LeakyReLU's slope or Flatten's dims it would read once, so only a frozen
    model (a snapshot) runs those natively."""
    return all(run is _run_linear and (act is None or type(act).op_kwargs is _Activation.op_kwargs)
               for run, _, act in plan)


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

    def insert(self, index: int, module: Module) -> "Sequential":
        """Put ``module`` before position ``index`` (-len <= index <= len); keys renumbered "0", "1", ..."""
        if not isinstance(module, Module):
            raise AssertionError(f"module should be of type: {Module}")
        self._insert(index, module)
        self._build_known_sizes()
        return self

    def extend(self, sequential) -> "Sequential":
        for layer in sequential:
            self.append(layer)
        return self

    def _check_sequential(self, other) -> None:
        if not isinstance(other, Sequential):
            raise ValueError(f"add operator supports only objects of Sequential class, but {str(type(other))} "
                             "is given.")

    def __add__(self, other) -> "Sequential":
        self._check_sequential(other)
        return Sequential(*self, *other)

    def __iadd__(self, other) -> "Sequential":
        self._check_sequential(other)
        offset = len(self)
        for i, module in enumerate(list(other)):
            self.add_module(str(i + offset), module)
        self._build_known_sizes()
        return self

    def _check_factor(self, other) -> None:
        if not isinstance(other, int):
            raise TypeError(f"unsupported operand type(s) for *: {type(self)} and {type(other)}")
        if other <= 0:
            raise ValueError(f"Non-positive multiplication factor {other} for {type(self)}")

    def __mul__(self, other: int) -> "Sequential":
        """The modules repeated ``other`` times (the same module objects, as torch's: their weights shared)."""
        self._check_factor(other)
        return Sequential(*(list(self) * other))

    def __rmul__(self, other: int) -> "Sequential":
        return self.__mul__(other)

    def __imul__(self, other: int) -> "Sequential":
        self._check_factor(other)
        mods = list(self)
        offset = len(mods)
        for _ in range(other - 1):
            for m in mods:
                self.add_module(str(offset), m)
                offset += 1
        return self

    def __call__(self, *args, **kwargs):
        # A Sequential whose plan runs natively (frozen, or an eager MLP: see _forward_fused) goes straight to
        # it (Module.__call__, forward and _forward_fused around it are ~0.5 us of a batch-1 LeNet forward), and
        # so does a dynamic-int8 MLP (quantize_dynamic's DynamicLinearChain; its layers record no graph, so in
        # grad mode too, but not under trace(): the ONNX exporter records each layer). Anything else, and any
        # call they do not take, goes the usual way.
        # (the native plan watches its modules' hook dicts itself, not a forward patched onto one: once one was
        # set anywhere (_hooks_seen), the modules are asked)
        d = self.__dict__
        plan, chain = d.get("_inference_plan"), d.get("_int8_chain")
        if (chain is not None or (plan is not None and plan[2])) and len(args) == 1 and not kwargs \
                and isinstance(args[0], Tensor) and not d.get("_forward_pre_hooks") \
                and not (_hooks_seen and (has_call_hooks(self) or forwards_patched(d["_modules"].values()))) \
                and type(self).forward is Sequential.forward and "forward" not in d:
            mods = tuple(d["_modules"].values())
            if plan is not None and plan[2] and plan[0] == mods and graph_free():
                y = plan[2].run(args[0]._data)
                if y is not None:
                    return Tensor._wrap(y)
            if chain is not None and chain.mods == mods and recorder() is None:
                y = chain.run(args[0]._data)
                if y is not None:
                    return Tensor._wrap(y)
        return Module.__call__(self, *args, **kwargs)

    def __getstate__(self):
        # the native plan (a C++ object) does not pickle: a loaded model builds its own at its first call
        state = dict(self.__dict__)
        state.pop("_inference_plan", None)
        return state

    def forward(self, input):
        if graph_free():
            return self._forward_fused(input)
        for m in self._modules.values():
            input = m(input)
        return input

    def _forward_fused(self, input):
        # Inference without a graph: each Linear is one kernel call (the layer's checks, bias and
        # GEMM in C++), with a following activation module that can run as its epilogue (ReLU,
        # LeakyReLU, GELU, Sigmoid, Tanh) applied inside the same call; see _inference_plan for
        # Conv2d and MaxPool2d. The plan is rebuilt when the modules change.
        # A frozen Sequential (nn.utils.freeze) runs those steps in one C++ call when it can (at batch 1
        # the Python between LeNet's kernel calls had cost a fifth of its forward).
        mods = tuple(self._modules.values())
        d = self.__dict__
        plan = d.get("_inference_plan")
        # plan[2]: the native plan, False where none applies, None where a deep copy dropped it
        if plan is None or plan[0] != mods or plan[2] is None:
            steps = _inference_plan(mods)
            # a frozen model's plan (a snapshot), or an eager MLP's (it reads no setting: _settings_free); at
            # batch 1 the Python between an MLP's kernel calls had cost a third of its forward
            native = d.get("_native_steps") or _settings_free(steps)
            plan = (mods, steps, (_native_plan(steps) or False) if native else False)
            d["_inference_plan"] = plan
        native = plan[2]
        if native and isinstance(input, Tensor) and not (_hooks_seen and forwards_patched(mods)):
            y = native.run(input._data)
            if y is not None:
                return Tensor._wrap(y)
        for run, m, act in plan[1]:
            input = run(m, act, input)
        return input

    def _from_items(self, items):
        return Sequential(OrderedDict(items))

    # ---- Keras-style training (see forgegrad.train.keras) --------------------------------------
    def compile(self, *args, **kwargs):
        """Keras's ``compile(loss, optimizer="adam", metrics=(), **optimizer_kwargs)`` (see forgegrad.train.keras);
        called with none of those, i.e. with no positional argument and only torch.compile's keywords
        (``model.compile()``, ``model.compile(mode="max-autotune")``), torch's in-place ``nn.Module.compile``."""
        if not args and set(kwargs) <= _TORCH_COMPILE_KEYWORDS:
            return Module.compile(self, **kwargs)
        return _keras_compile(self, *args, **kwargs)

    def fit(self, x, y, **kwargs):
        from ..train import keras
        return keras.fit(self, x, y, **kwargs)

    def evaluate(self, x, y, **kwargs):
        from ..train import keras
        return keras.evaluate(self, x, y, **kwargs)

    def predict(self, x, **kwargs):
        from ..train import keras
        return keras.predict(self, x, **kwargs)


_TORCH_COMPILE_KEYWORDS = frozenset({"fullgraph", "dynamic", "backend", "mode", "options", "disable", "name",
                                     "recompile_limit", "isolate_recompiles", "shapes_spec"})


def _keras_compile(model, loss, optimizer="adam", metrics=(), **optimizer_kwargs):
    from ..train import keras
    return keras.compile(model, loss=loss, optimizer=optimizer, metrics=metrics, **optimizer_kwargs)
