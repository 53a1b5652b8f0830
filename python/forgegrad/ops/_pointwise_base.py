"""The machinery of the torch math pointwise ops (ops/pointwise_more.py): torch's dtype promotion, one gradient
formula written once for both numpy arrays (backward) and Tensors (the double-backward rule), and a registrar that
makes one Function class per op with torch's argument names.

A gradient formula is ``grads(ns, g, args, out, kw) -> tuple`` (one entry per argument, None for none), written with
operators and ``ns.exp / ns.log / ns.sqrt / ns.where / ns.val``; ``ns`` is numpy for backward and a Tensor namespace
for ``create_graph=True`` (``ns.where`` takes a numpy mask read from values: a locally constant selection).
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as _dtypes
from .._op_dispatch import NO_BOOL_KERNEL, wrapped_int
from ..autograd import Function
from . import _meta as M
from ._util import unbroadcast
from .registry import register_op

_NUM = (int, float, bool, np.number)


def is_arr(a) -> bool:
    return isinstance(a, np.ndarray) or isinstance(a, M.MetaArray)


def result_dtype(*args, floating: bool = False) -> np.dtype:
    """torch's promotion: tensors decide the category and width (float32 with int64 -> float32, float32 with
    float64 -> float64); a Python float lifts an integer or bool result to the default floating dtype
    (forgegrad.set_default_dtype: float32 unless changed); ``floating``: integer and bool results become it too
    (atan2, hypot, erf of ints, as torch's)."""
    default = _dtypes.default_float()
    dt = _dtypes.result_of([a for a in args if is_arr(a) or isinstance(a, _NUM)])
    if dt is None:
        dt = default
    if floating and not _dtypes.is_floating(np.dtype(dt)):
        dt = default
    return np.dtype(dt)


def cast(a, dt):
    """An argument in the computation's dtype (numbers become 0-d arrays of it)."""
    if isinstance(a, np.ndarray):
        return a if a.dtype == dt else a.astype(dt)
    return np.asarray(wrapped_int(a, dt), dtype=dt)


class _NumpyNS:
    exp, log, sqrt, abs, sign = np.exp, np.log, np.sqrt, np.abs, np.sign

    @staticmethod
    def where(mask, a, b):
        return np.where(mask, a, b)

    @staticmethod
    def val(x):
        return x

    @staticmethod
    def const(arr, like):
        return np.asarray(arr, dtype=like.dtype)

    @staticmethod
    def call(name, *args, **kw):
        return SPECS[name].fwd(*args, **kw)


def _tensor_or_np(method, fn):
    return staticmethod(lambda x: getattr(x, method)() if hasattr(x, "_data") else fn(x))


class _TensorNS:
    exp = _tensor_or_np("exp", np.exp)
    log = _tensor_or_np("log", np.log)
    sqrt = _tensor_or_np("sqrt", np.sqrt)
    abs = _tensor_or_np("__abs__", np.abs)

    @staticmethod
    def const(arr, like):
        from ..tensor import Tensor
        return Tensor._wrap_exact(np.asarray(arr, dtype=like._data.dtype))

    @staticmethod
    def sign(x):
        from ._double_backward import _flat
        return _flat(x, np.sign) if hasattr(x, "_data") else np.sign(x)

    @staticmethod
    def where(mask, a, b):
        from ._double_backward import _where
        return _where(np.asarray(mask), a, b)

    @staticmethod
    def val(x):
        return x._data if hasattr(x, "_data") else np.asarray(x)

    @staticmethod
    def call(name, *args, **kw):
        from .registry import _OPS
        return _OPS[name](*args, **kw)


NUMPY, TENSOR = _NumpyNS(), _TensorNS()


class Spec:
    """One op: ``fwd(*arrays, **kw)`` on arrays already in the result dtype, ``grads`` (see the module docstring;
    None: the op is not differentiable and backward raises as torch's), ``floating``: int inputs compute in float32,
    ``keep_int``: integer inputs give integer outputs (sign, trunc, remainder), ``n``: how many tensor arguments."""

    def __init__(self, fwd, grads, floating=True, n=1, zero_grad=False, uses_out=False):
        self.fwd, self.grads, self.floating, self.n, self.zero_grad = fwd, grads, floating, n, zero_grad
        self.uses_out = uses_out  # the gradient reads the output (saved only then: an in-place op may write it)


SPECS: dict = {}


def _arg_names(cls):
    import inspect
    cls._arg_names = [n for n in inspect.signature(cls.forward).parameters if n != "ctx"]
    return cls._arg_names


def _shape(a):
    return a.shape if is_arr(a) else ()


class PointwiseFunction(Function):
    """Shared forward/backward of the ops in SPECS; subclasses give forward torch's argument names."""

    exact_dtype = True

    @classmethod
    def _run(cls, ctx, tensors, kw):
        spec = SPECS[cls.op.name]
        for i, a in enumerate(tensors):
            if not (is_arr(a) or (isinstance(a, _NUM) and not isinstance(a, complex))):
                names = cls.__dict__.get("_arg_names") or _arg_names(cls)
                raise TypeError(f"{cls.op.name}(): argument {names[i]!r} must be a forgegrad.Tensor or a real number, "
                                f"got {type(a).__name__}")
        dt = result_dtype(*tensors, floating=spec.floating)
        if dt.kind == "b" and cls.op.name in NO_BOOL_KERNEL:  # numpy would compute int8
            raise NotImplementedError(f'"{NO_BOOL_KERNEL[cls.op.name]}" not implemented for \'Bool\'')
        arrays = [cast(a, dt) for a in tensors]
        with np.errstate(all="ignore"):
            out = np.asarray(spec.fwd(*arrays, **kw))
        out = out.astype(dt, copy=False) if out.dtype.kind == dt.kind or out.dtype.kind == "f" else out
        ctx.shapes = [(_shape(a), a.dtype if is_arr(a) else None) for a in tensors]
        ctx.kw = kw
        if spec.grads is not None and not spec.zero_grad and any(ctx.needs_input_grad[:len(tensors)]):
            ctx.save_for_backward(*arrays, *((out,) if spec.uses_out else ()))
        return out

    @classmethod
    def _backward(cls, ctx, g):
        spec = SPECS[cls.op.name]
        n = len(ctx.shapes)
        if spec.grads is None:
            raise RuntimeError(f"the derivative for '{cls.op.name}' is not implemented (as in torch)")
        if spec.zero_grad:
            grads = (np.zeros_like(g),) * n
        else:
            saved = ctx.saved_tensors
            arrays, out = (saved[:-1], saved[-1]) if spec.uses_out else (saved, None)
            with np.errstate(all="ignore"):
                grads = spec.grads(NUMPY, g, arrays, out, ctx.kw)
        result = []
        for i, ((shape, dt), gi) in enumerate(zip(ctx.shapes, grads)):
            if dt is None or gi is None or not ctx.needs_input_grad[i] or not _dtypes.is_floating(dt):
                result.append(None)
                continue
            gi = np.broadcast_to(np.asarray(gi), np.broadcast_shapes(np.shape(gi), g.shape))
            result.append(np.asarray(unbroadcast(gi, shape), dtype=dt, order="C"))  # a 0-d input keeps 0-d
        return tuple(result) if n > 1 else result[0]


def differentiable_rule(name):
    """The op's Tensor-level gradient (create_graph=True), from the same formula as backward."""

    def rule(ctx, args, kwargs, g):
        from ._double_backward import _const, _for, _is_t
        spec = SPECS[name]
        tensors = list(args[:spec.n])
        kw = ctx.kw if hasattr(ctx, "kw") else kwargs
        if spec.zero_grad:
            return tuple(_const(np.zeros(a.shape), a) if _is_t(a) else None for a in tensors) + (None,) * (
                len(args) - spec.n)
        out = ctx.__dict__.get("graph_outputs", {}).get(0)
        if out is None and spec.uses_out:
            out = _OPS_call(name, args, kwargs)
        with np.errstate(all="ignore"):  # as backward: edge values (log(0), inf * 0) warn in numpy, not in torch
            grads = spec.grads(TENSOR, g, tensors, out, kw)
        return tuple(_for(a, gi) if (_is_t(a) and gi is not None) else None for a, gi in zip(tensors, grads)) + (
            None,) * (len(args) - spec.n)

    return rule


def _OPS_call(name, args, kwargs):
    from .registry import _OPS
    return _OPS[name](*args, **kwargs)


def meta_rule(name):
    def meta(*args, **kw):
        spec = SPECS[name]
        tensors = args[:spec.n]
        shape = M.broadcast(*[a for a in tensors if a is not None]).shape
        return M.MetaArray(shape, result_dtype(*tensors, floating=spec.floating))
    return meta


def register(name, cls, spec, *, flops=1, float64=True, differentiable=True, **fields):
    """Register ``cls`` (a PointwiseFunction with a named forward) as op ``name`` following ``spec``."""
    SPECS[name] = spec
    if spec.grads is not None and differentiable:
        fields.setdefault("differentiable_backward", differentiable_rule(name))
    cls = register_op(name, meta=meta_rule(name), flops=M.per_output_element(flops), **fields)(cls)
    if float64:
        cls.op.float64 = cls
    return cls
