"""The differentiable backward rules: each op's gradient written with forgegrad ops, for ``create_graph=True``.

A pass that creates a graph (forgegrad._create_graph) runs, for every node, its op's rule from this table,
``rule(ctx, args, kwargs, *grads)``: ``args``/``kwargs`` are the forward's arguments with the recorded Tensors in
place (numbers and arrays as given), ``grads`` one Tensor per output; it returns one Tensor (or None) per
positional argument. Because the rule computes with Tensor ops, the gradients it returns are recorded and can
be differentiated again (and again: the rules' own ops have rules here too). The array rules beside each op
stay the default path: these run only when a graph of the gradients is asked for.

Two kinds of rule: a formula (``@rule("tanh")``: ``g * (1 - y * y)`` with ``y`` the output tensor as the pass
met it, or recomputed from the input; either way its own derivative is in the graph), or, for the fused losses
and norms, a decomposition into
ops that have formulas (``decomposed("layer_norm", fn)``): the rule differentiates that composition with
create_graph. The losses' and norms' rules are in _double_backward_losses.py. An op missing from this table makes
such a pass raise NotImplementedError naming it.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes as _dtypes
from .._graph_memory import is_edge
from ..autograd import Function
from ..tensor import Tensor
from ._util import normalize_axis, single_axis
from .activation import _erf_for
from .registry import _OPS

__all__ = ["rule", "decomposed", "decomposition", "covered", "read_tensors"]


def rule(*names):
    """Decorator: ``fn`` is the differentiable backward of the ops ``names``."""

    def deco(fn):
        for name in names:
            _OPS[name].differentiable_backward = fn
        return fn

    return deco


def covered():
    """The names of the ops that have a differentiable backward rule."""
    return sorted(name for name, op in _OPS.items() if op.differentiable_backward is not None)


# What each rule reads the values of, where that is not every tensor argument: a tensor written in place after the
# forward (an optimizer step, a write under no_grad, the next forward's running statistics) is checked by the pass
# only if its rule reads it (reading it would give silently wrong gradients; torch raises for what it saved)
_SHAPES_ONLY = {"add", "sub", "neg", "sum", "mean", "reshape", "permute", "expand", "clone", "cast", "cat", "stack",
                "cumsum", "dropout", "avg_pool2d", "adaptive_avg_pool2d", "fake_quantize_per_tensor_affine",
                "fake_quantize_per_channel_affine", "unfold", "fold", "interpolate", "pad", "pixel_shuffle",
                "pixel_unshuffle", "channel_shuffle", "tensor_unfold"}
_READS = {  # op name -> (ctx, args, kwargs) -> the arguments its rule reads the values of (biases: their shape only)
    "getitem": lambda c, a, k: _flatten(a[1]),
    "embedding": lambda c, a, k: (_arg(a, k, 1, "indices"),),
    "where": lambda c, a, k: a[:1],
    "layer_norm": lambda c, a, k: (a[0], _arg(a, k, 2, "weight")),
    "batch_norm": lambda c, a, k: (a[0], _arg(a, k, 3, "weight")) + (
        () if _arg(a, k, 5, "training", False) or _arg(a, k, 1, "running_mean") is None else
        (_arg(a, k, 1, "running_mean"), _arg(a, k, 2, "running_var"))),
    "group_norm": lambda c, a, k: (a[0], _arg(a, k, 2, "weight")),
    "instance_norm": lambda c, a, k: (a[0], _arg(a, k, 3, "weight")) + (
        () if _arg(a, k, 5, "use_input_stats", True) else
        (_arg(a, k, 1, "running_mean"), _arg(a, k, 2, "running_var"))),
}
# they read their output (torch's)
for _name in ("relu", "elu", "exp", "sqrt", "tanh", "sigmoid", "softmax", "log_softmax"):
    _READS[_name] = lambda c, a, k: ()
# but elu's slope with a negative alpha is read from its input (the output does not tell the branch)
_READS["elu"] = lambda c, a, k: a[:1] if _arg(a, k, 1, "alpha", 1.0) < 0 else ()
# each factor's gradient reads the other factor
_FACTORS = ("mul", "matmul", "linear", "conv2d", "conv1d", "conv_transpose2d", "conv_transpose1d")
for _name in _FACTORS:
    _READS[_name] = lambda c, a, k: tuple(a[1 - i] for i in (0, 1) if c.needs_input_grad[i])


def _flatten(a) -> tuple:
    return tuple(x for y in a for x in _flatten(y)) if isinstance(a, (tuple, list)) else (a,)


def read_tensors(ctx, args, kwargs) -> list:
    """The Tensors whose values ``ctx``'s differentiable rule reads (every tensor argument unless its op says
    otherwise above)."""
    op = type(ctx).op
    if op is None and getattr(type(ctx), "differentiable_reads", None) is not None:  # a Function that says which
        return [args[i] for i in type(ctx).differentiable_reads if isinstance(args[i], Tensor)]
    name = None if op is None else op.name
    if name in _SHAPES_ONLY:
        return []
    found = _READS[name](ctx, args, kwargs) if name in _READS else tuple(args) + tuple(kwargs.values())
    return [t for t in _flatten(found) if isinstance(t, Tensor)]


def _arg(args, kwargs, i, name, default=None):
    """The forward's argument ``name`` (position ``i``), wherever it was passed."""
    if i < len(args):
        return args[i]
    return kwargs.get(name, default)


def _is_t(a) -> bool:
    return isinstance(a, Tensor)


def _sum_to(g: Tensor, shape) -> Tensor:
    """``g`` summed over the axes broadcasting added or stretched to reach it from ``shape``."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1)
    if axes:
        g = g.sum(dim=axes, keepdim=True)
    return g.reshape(shape)


def _for(a, g):
    """g summed to ``a``'s shape when ``a`` is a Tensor (a number or constant array gets no gradient)."""
    return _sum_to(g, a.shape) if _is_t(a) else None


def _expand_back(g: Tensor, shape, axes, keepdim) -> Tensor:
    """A reduction's output gradient back over its input's ``shape`` (``axes`` reduced)."""
    if not keepdim:
        g = g.reshape(tuple(1 if i in axes else s for i, s in enumerate(shape)))
    return g.expand(*shape) if g.shape != tuple(shape) else g


def _const(arr, like: Tensor) -> Tensor:
    """A constant (no graph) in ``like``'s dtype."""
    return Tensor._wrap_exact(np.asarray(arr, dtype=like._data.dtype))


def _output(ctx, args, method: str, *margs) -> Tensor:
    """The node's output 0 as the pass met it in the graph (torch's rules read the saved output: a hook or
    retain_grad on it sees the gradients through it in a later pass), else recomputed from input 0."""
    t = ctx.__dict__.get("graph_outputs", {}).get(0)
    if t is None and is_edge(args[0]):  # (forgegrad._graph_memory keeps these ops' outputs: never met)
        raise RuntimeError(f"create_graph=True: {method}'s output was not kept and its input was dropped; "
                           "this is a bug in forgegrad")
    return t if t is not None else getattr(args[0], method)(*margs)


def _where(mask, a, b):
    """where() over a mask computed from values (a comparison of 0-d values is a numpy bool, made an array)."""
    return _OPS["where"](mask if isinstance(mask, Tensor) else np.asarray(mask), a, b)


class LocallyConstantFunction(Function):
    """``fn(x)`` for a function that is constant around every point (a sign, a step, a mask): the value, in
    ``x``'s dtype, with a zero gradient. The rules of abs, relu, clamp, max use it instead of a constant so that
    their gradient still depends on ``x`` (as torch's: its second derivative is zeros, not "does not require
    grad")."""

    handles_float64 = True
    differentiable_reads = ()  # its rule reads no tensor's values

    @staticmethod
    def forward(ctx, x, fn):
        ctx.shape_dtype = (x.shape, x.dtype)
        return np.asarray(fn(x), dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        shape, dtype = ctx.shape_dtype
        return np.zeros(shape, dtype)

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, g):
        return _const(np.zeros(args[0].shape), args[0]), None


def _flat(x: Tensor, fn) -> Tensor:
    """``fn(x's values)`` as a function of ``x`` with a zero derivative (see LocallyConstantFunction)."""
    return LocallyConstantFunction.apply(x, fn) if x.requires_grad else _const(fn(x._data), x)


class IndexBackwardFunction(Function):
    """getitem's gradient: ``g`` added into zeros of the input's shape at ``key`` (repeated advanced indices
    accumulate). Linear in ``g``: its own gradient is ``gg[key]``."""

    handles_float64 = True
    differentiable_reads = ()  # its rule reads no tensor's values

    @staticmethod
    def forward(ctx, g, key, shape):
        ctx.key = key
        out = np.zeros(shape, dtype=g.dtype)
        parts = key if isinstance(key, tuple) else (key,)
        if all(k is None or k is Ellipsis or isinstance(k, (slice, int, np.integer)) and not isinstance(k, bool)
               for k in parts):
            out[key] = g
        else:
            np.add.at(out, key, g)
        return out

    @staticmethod
    def backward(ctx, gg):
        return np.array(gg[ctx.key])  # a contiguous copy that keeps a 0-d pick 0-d (ascontiguousarray makes it 1-d)

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, gg):
        return gg[args[1]], None, None


def _scatter(g: Tensor, key, shape) -> Tensor:
    return IndexBackwardFunction.apply(g, key, tuple(shape))


class NormalCdfFunction(Function):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF (the exact gelu's derivative needs it as an op,
    so that it can be differentiated again); dPhi/dx = exp(-x^2 / 2) / sqrt(2 pi)."""

    handles_float64 = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (0.5 * (1.0 + _erf_for(x)(x.astype(np.float64) * 0.7071067811865476))).astype(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return (g * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)).astype(g.dtype)

    @staticmethod
    def differentiable_backward(ctx, args, kwargs, g):
        x = args[0]
        return g * (x * x * -0.5).exp() * (1 / math.sqrt(2 * math.pi))


# ---- arithmetic ------------------------------------------------------------------------------------------
@rule("add")
def _add(ctx, args, kwargs, g):
    return _for(args[0], g), _for(args[1], g)


@rule("sub")
def _sub(ctx, args, kwargs, g):
    return _for(args[0], g), _for(args[1], -g) if _is_t(args[1]) else None


@rule("mul")
def _mul(ctx, args, kwargs, g):
    a, b = args
    return (_for(a, g * b) if _is_t(a) else None), (_for(b, g * a) if _is_t(b) else None)


@rule("div")
def _div(ctx, args, kwargs, g):
    a, b = args
    ga = _for(a, g / b) if _is_t(a) else None
    gb = _for(b, -g * a / (b * b)) if _is_t(b) else None
    return ga, gb


@rule("neg")
def _neg(ctx, args, kwargs, g):
    return -g


@rule("pow")
def _pow(ctx, args, kwargs, g):
    a, b = args
    ga = gb = None
    if _is_t(a):
        ga = _for(a, g * b * a ** (b - 1))
    if _is_t(b):
        if _is_t(a):
            pos = a._data > 0
            la = _where(pos, _where(pos, a, 1.0).log(), 0.0)
            y = a ** b
        else:
            la = math.log(a) if a > 0 else 0.0
            y = _OPS["pow"](a, b)
        gb = _for(b, g * y * la)
    return ga, gb


@rule("abs")
def _abs(ctx, args, kwargs, g):
    return g * _flat(args[0], np.sign)


@rule("sqrt")
def _sqrt(ctx, args, kwargs, g):
    return g * 0.5 / _output(ctx, args, "sqrt")


@rule("exp")
def _exp(ctx, args, kwargs, g):
    return g * _output(ctx, args, "exp")


@rule("log")
def _log(ctx, args, kwargs, g):
    return g / args[0]


@rule("sin")
def _sin(ctx, args, kwargs, g):
    return g * args[0].cos()


@rule("cos")
def _cos(ctx, args, kwargs, g):
    return -g * args[0].sin()


@rule("clamp")
def _clamp(ctx, args, kwargs, g):
    x = args[0]
    lo, hi = _arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max")
    lo, hi = (b._data if _is_t(b) else b for b in (lo, hi))
    return g * _flat(x, lambda a: (a >= (-np.inf if lo is None else lo)) & (a <= (np.inf if hi is None else hi)))


@rule("where")
def _where_rule(ctx, args, kwargs, g):
    cond, a, b = args
    return None, _for(a, _where(cond, g, 0.0)) if _is_t(a) else None, \
        _for(b, _where(cond, 0.0, g)) if _is_t(b) else None


# ---- activations -----------------------------------------------------------------------------------------
@rule("tanh")
def _tanh(ctx, args, kwargs, g):
    y = _output(ctx, args, "tanh")
    return g * (1 - y * y)


@rule("sigmoid")
def _sigmoid(ctx, args, kwargs, g):
    s = _output(ctx, args, "sigmoid")
    return g * s * (1 - s)


@rule("relu")
def _relu(ctx, args, kwargs, g):
    return g * _flat(_output(ctx, args, "relu"), lambda a: a > 0)  # the output's mask: the input may be written since


@rule("leaky_relu")
def _leaky_relu(ctx, args, kwargs, g):
    x = args[0]
    slope = _arg(args, kwargs, 1, "negative_slope", 0.01)
    return g * _flat(x, lambda a: np.where(a > 0, 1.0, slope))


@rule("silu")
def _silu(ctx, args, kwargs, g):
    x = args[0]
    s = x.sigmoid()
    return g * (s * (1 + x * (1 - s)))


@rule("gelu")
def _gelu(ctx, args, kwargs, g):
    x = args[0]
    if _arg(args, kwargs, 1, "approximate", "none") == "tanh":
        k = math.sqrt(2 / math.pi)
        t = ((x + x * x * x * 0.044715) * k).tanh()
        return g * ((1 + t) * 0.5 + x * 0.5 * (1 - t * t) * ((x * x * (3 * 0.044715) + 1) * k))
    phi = (x * x * -0.5).exp() * (1 / math.sqrt(2 * math.pi))
    return g * (NormalCdfFunction.apply(x) + x * phi)


@rule("softmax")
def _softmax(ctx, args, kwargs, g):
    dim = _arg(args, kwargs, 1, "dim", -1)
    y = _output(ctx, args, "softmax", dim)
    return y * (g - (g * y).sum(dim=dim, keepdim=True))


@rule("log_softmax")
def _log_softmax(ctx, args, kwargs, g):
    dim = _arg(args, kwargs, 1, "dim", -1)
    y = _output(ctx, args, "log_softmax", dim)
    return g - y.exp() * g.sum(dim=dim, keepdim=True)


@rule("dropout")
def _dropout(ctx, args, kwargs, g):
    mask = ctx.__dict__.get("mask")
    return g if mask is None else g * _const(mask, g)


@rule("fake_quantize_per_tensor_affine", "fake_quantize_per_channel_affine")
def _fake_quantize(ctx, args, kwargs, g):
    (mask,) = ctx.saved_tensors  # where the rounded value fell inside the range: the straight-through gradient
    return (g * _flat(args[0], lambda a: mask),) + (None,) * (len(args) - 1)


# ---- reductions ------------------------------------------------------------------------------------------
@rule("sum")
def _sum(ctx, args, kwargs, g):
    x = args[0]
    axes = normalize_axis(_arg(args, kwargs, 1, "dim"), x.ndim)
    return _expand_back(g, x.shape, axes, _arg(args, kwargs, 2, "keepdim", False))


@rule("mean")
def _mean(ctx, args, kwargs, g):
    x = args[0]
    axes = normalize_axis(_arg(args, kwargs, 1, "dim"), x.ndim)
    n = int(np.prod([x.shape[a] for a in axes]))
    return _expand_back(g, x.shape, axes, _arg(args, kwargs, 2, "keepdim", False)) / n


@rule("amax", "amin")
def _amax(ctx, args, kwargs, g):
    x = args[0]
    axes = normalize_axis(_arg(args, kwargs, 1, "dim"), x.ndim)
    pick = np.max if type(ctx).op.name == "amax" else np.min
    def share(a):  # ties share the gradient equally (torch's rule)
        mask = a == pick(a, axis=axes, keepdims=True)
        return mask / mask.sum(axis=axes, keepdims=True)

    return _expand_back(g, x.shape, axes, _arg(args, kwargs, 2, "keepdim", False)) * _flat(x, share)


@rule("max_dim", "min_dim")
def _max_dim(ctx, args, kwargs, g, _):
    x = args[0]
    axis = single_axis(_arg(args, kwargs, 1, "dim"), x.ndim)
    pick = np.argmax if type(ctx).op.name == "max_dim" else np.argmin
    idx = np.expand_dims(pick(x._data, axis=axis), axis)
    key = list(np.ix_(*[np.arange(n) for n in idx.shape]))
    key[axis] = idx
    return _scatter(_expand_back(g, idx.shape, (axis,), _arg(args, kwargs, 2, "keepdim", False)), tuple(key),
                    x.shape)


def _var_parts(args, kwargs):
    x = args[0]
    dim, keepdim = _arg(args, kwargs, 1, "dim"), _arg(args, kwargs, 3, "keepdim", False)
    axes = normalize_axis(dim, x.ndim)
    n = int(np.prod([x.shape[a] for a in axes])) - (1 if _arg(args, kwargs, 2, "unbiased", True) else 0)
    return x, axes, keepdim, n, x - x.mean(dim=axes, keepdim=True)


@rule("var")
def _var(ctx, args, kwargs, g):
    x, axes, keepdim, n, d = _var_parts(args, kwargs)
    return _expand_back(g, x.shape, axes, keepdim) * d * (2.0 / n)


@rule("std")
def _std(ctx, args, kwargs, g):
    x, axes, keepdim, n, d = _var_parts(args, kwargs)
    std = x.std(dim=axes, unbiased=_arg(args, kwargs, 2, "unbiased", True), keepdim=True)
    pos = std._data > 0  # a constant row: gradient 0 (torch's), not 0/0
    return _where(pos, _expand_back(g, x.shape, axes, keepdim) * d / (_where(pos, std, 1.0) * n), 0.0)


@rule("cumsum")
def _cumsum(ctx, args, kwargs, g):
    axis = single_axis(_arg(args, kwargs, 1, "dim"), args[0].ndim)
    flip = (slice(None),) * axis + (slice(None, None, -1),)
    return g[flip].cumsum(axis)[flip]


# ---- shapes ----------------------------------------------------------------------------------------------
@rule("reshape")
def _reshape(ctx, args, kwargs, g):
    return g.reshape(args[0].shape)


@rule("permute")
def _permute(ctx, args, kwargs, g):
    dims = [d % max(args[0].ndim, 1) for d in _arg(args, kwargs, 1, "dims")]
    return g.permute(*[int(i) for i in np.argsort(dims)]) if dims else g


@rule("expand")
def _expand(ctx, args, kwargs, g):
    return _sum_to(g, args[0].shape)


@rule("clone")
def _clone(ctx, args, kwargs, g):
    return g


@rule("cast")
def _cast(ctx, args, kwargs, g):
    return g._cast(args[0]._data.dtype) if _dtypes.is_floating(args[0]._data.dtype) else None


@rule("getitem")
def _getitem(ctx, args, kwargs, g):
    from .shape import _index_arrays
    return _scatter(g, _index_arrays(args[1]), args[0].shape), None


@rule("cat")
def _cat(ctx, args, kwargs, g):
    axis = single_axis(kwargs.get("dim", 0), args[0].ndim)
    out, at = [], 0
    for a in args:
        n = a.shape[axis]
        out.append(g[(slice(None),) * axis + (slice(at, at + n),)] if _is_t(a) else None)
        at += n
    return tuple(out)


@rule("stack")
def _stack(ctx, args, kwargs, g):
    axis = single_axis(kwargs.get("dim", 0), args[0].ndim + 1)
    return tuple(g[(slice(None),) * axis + (i,)] if _is_t(a) else None for i, a in enumerate(args))


@rule("embedding")
def _embedding(ctx, args, kwargs, g):
    weight, indices = args[0], _arg(args, kwargs, 1, "indices")
    idx = indices._data if _is_t(indices) else np.asarray(indices)
    pad = _arg(args, kwargs, 2, "padding_idx")
    if pad is not None:
        g = g * _const((idx != pad % weight.shape[0])[..., None], g)
    if _arg(args, kwargs, 3, "scale_grad_by_freq", False):  # each position's gradient over its row's count
        counts = np.bincount(idx.reshape(-1).astype(np.int64), minlength=weight.shape[0])[idx]
        g = g * _const((1.0 / np.maximum(counts, 1))[..., None], g)
    return _scatter(g, (idx,), weight.shape), None


# ---- matrix products -------------------------------------------------------------------------------------
@rule("matmul")
def _matmul(ctx, args, kwargs, g):
    a, b = args
    if a.ndim == 1 and b.ndim == 1:  # a dot product: g is 0-d
        return (g * b if _is_t(a) else None), (g * a if _is_t(b) else None)
    A = a.reshape(1, a.shape[0]) if a.ndim == 1 else a
    B = b.reshape(b.shape[0], 1) if b.ndim == 1 else b
    G = g
    if a.ndim == 1:
        G = G.unsqueeze(-2)
    if b.ndim == 1:
        G = G.unsqueeze(-1)
    ga = _sum_to(G @ B.transpose(-1, -2), A.shape).reshape(a.shape) if _is_t(a) else None
    gb = _sum_to(A.transpose(-1, -2) @ G, B.shape).reshape(b.shape) if _is_t(b) else None
    return ga, gb


@rule("linear")
def _linear(ctx, args, kwargs, g):
    x, w = args[0], args[1]
    b = _arg(args, kwargs, 2, "bias")
    g2 = g.reshape(-1, w.shape[0])
    gx = g @ w if _is_t(x) else None
    gw = g2.t() @ x.reshape(-1, w.shape[1]) if _is_t(w) else None
    gb = g2.sum(dim=0) if _is_t(b) else None
    return gx, gw, gb


def decomposed(name: str, fn) -> None:
    """Op ``name``'s differentiable backward: differentiate ``fn`` (the op written with ops that have rules,
    same arguments) with create_graph. The fused losses and norms use it: recomputing them is cheap next to
    what a second-order step costs, and one formula serves every derivative order."""
    _OPS[name].differentiable_backward = decomposition(fn)


def decomposition(fn):
    """The differentiable backward rule that differentiates ``fn`` (see decomposed; for a Function outside the
    registry, its ``differentiable_backward``)."""

    def rule_fn(ctx, args, kwargs, *grads):
        from ..autograd import grad
        want, seen = [], set()
        for i, a in enumerate(args):  # one gradient per tensor: a tensor passed twice gets it once
            if _is_t(a) and a.requires_grad and id(a) not in seen:
                seen.add(id(a))
                want.append(i)
        out = [None] * len(args)
        if not want:
            return tuple(out)
        outs = fn(*args, **kwargs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        if any(getattr(g, "_phys", None) is not None for g in grads):
            # a batch of cotangents (forgegrad.func's vmap over a backward: BatchedTensors, which have no storage
            # to seed autograd.grad with): the create_graph pass takes them as they are
            from .._create_graph import run_pass
            found = run_pass(list(outs), list(grads), [args[i] for i in want], True, False)
        else:
            found = grad(list(outs), [args[i] for i in want], list(grads), create_graph=True, allow_unused=True)
        for i, gi in zip(want, found):
            out[i] = gi
        return tuple(out)

    rule_fn.recomputes = True  # it reruns the op on its arguments: a node keeps them all (forgegrad._graph_memory)
    return rule_fn


from . import _double_backward_losses  # noqa: E402,F401  (the losses' and norms' rules)
from . import _double_backward_conv  # noqa: E402,F401  (conv2d's and the average pools' rules)
