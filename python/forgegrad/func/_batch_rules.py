"""vmap's batching rules, keyed by op name (forgegrad.ops.registry): ``rule(cls, b, args, kwargs)`` computes
the op on logical tensors (BatchedTensor: batch size ``b`` at physical dim 0, see _batched.py; plain tensors
are the same for every element) as one call of the real op on physical tensors, and returns BatchedTensor
results. A rule raises NeedLoop for any case it does not cover (vmap then loops); an op with no entry here
loops too. Adding a rule: a function below and one line in RULES (or a name in one of the lists).

Inside a rule, ops on plain (physical) tensors run as usual; ops on BatchedTensors go through the rules
again, so a rule may be written with logical ops (layer_norm's affine part).
"""
from __future__ import annotations

import inspect

import numpy as np

from ..tensor import Tensor
from ._batched import (BATCH_NORM_REFUSED, NeedLoop, Refused, _contains_batched, draw_for_batch, is_batched, phys,
                       randomness, wrap)

__all__ = ["RULES", "FUNCTION_RULES"]

_SIGS = {}


def _bind(cls, args, kwargs):
    """The op's arguments by name (its forward's signature, without ctx)."""
    sig = _SIGS.get(cls)
    if sig is None:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]
        sig = _SIGS[cls] = inspect.Signature(params)
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError:
        raise NeedLoop("arguments do not bind") from None
    bound.apply_defaults()
    return bound.arguments


def _nd(x) -> int:
    return x.dim()


def _need(ok: bool, why: str = "") -> None:
    if not ok:
        raise NeedLoop(why)


def _norm(d, n: int) -> int:
    _need(not isinstance(d, bool) and isinstance(d, int) and -n <= d < n, "dim")
    return d + n if d < 0 else d


def _pad_to(x, r: int):
    """Physical batched ``x`` with ones inserted after the batch so that its logical rank is ``r``."""
    p = x._phys
    n = p.dim() - 1
    if n == r:
        return p
    return p.reshape((p.shape[0],) + (1,) * (r - n) + tuple(p.shape[1:]))


def _same_dtype(ts, skip=()) -> None:
    """Mixed dtypes promote as they do per element unless a batched argument is 0-d: physically it has a dim,
    and a dimensioned tensor takes part in type promotion where a 0-d one may not."""
    dts = {t.dtype for i, t in enumerate(ts) if isinstance(t, Tensor) and i not in skip}
    _need(len(dts) <= 1 or not any(is_batched(t) and t.dim() == 0 for t in ts), "mixed dtypes with a 0-d")


def _wrap_out(out):
    if type(out) is tuple:
        return tuple(wrap(o) for o in out)
    return wrap(out)


# ---- elementwise ----------------------------------------------------------------------------------------
def _array_like(v) -> bool:
    """An operand that broadcasts but is no Tensor (an ndarray, a list): its rank would not be aligned."""
    return isinstance(v, (list, tuple, np.ndarray)) or (hasattr(v, "__array__") and not isinstance(v, Tensor))


def _unary(cls, b, args, kwargs):
    _need(is_batched(args[0]) and not any(isinstance(a, Tensor) or _array_like(a) for a in args[1:])
          and not any(isinstance(v, Tensor) or _array_like(v) for v in kwargs.values()), "unary")
    return _wrap_out(cls.apply(args[0]._phys, *args[1:], **kwargs))


def _nary(cls, b, args, kwargs):
    _need(not _contains_batched(kwargs) and not any(_array_like(a) for a in list(args) + list(kwargs.values())),
          "nary: array operands")
    _same_dtype(args, skip=(0,) if cls.op.name == "where" else ())
    # the logical result's rank: plain tensors broadcast from the right, keyword ones (clamp's) included
    r = max(_nd(a) for a in list(args) + list(kwargs.values()) if isinstance(a, Tensor))
    new = [_pad_to(a, r) if is_batched(a) else a for a in args]
    return _wrap_out(cls.apply(*new, **kwargs))


UNARY = ("abs acos acosh asin asinh atan atanh ceil celu cos cosh deg2rad digamma elu erf erfc erfinv exp exp2 expm1 "
         "floor frac gelu hardshrink hardsigmoid hardswish hardtanh i0 isfinite isinf isnan isneginf isposinf "
         "leaky_relu lgamma log log10 log1p log2 logit logsigmoid mish nan_to_num neg rad2deg reciprocal relu round "
         "rsqrt selu sgn sigmoid sign signbit silu sin sinc sinh softplus softshrink softsign sqrt square tan tanh "
         "tanhshrink threshold trunc clone cast logical_not bitwise_not").split()
NARY = ("add sub mul div pow maximum minimum fmax fmin atan2 fmod remainder copysign hypot logaddexp logaddexp2 "
        "xlogy compare where lerp clamp heaviside floor_divide logical_and logical_or logical_xor").split()


# ---- reductions and ops along a dim ---------------------------------------------------------------------
def _dim_op(all_dims: bool, tuples: bool = True, first: str = None):
    def rule(cls, b, args, kwargs):
        a = _bind(cls, args, kwargs)
        name = first or next(iter(a))
        x = a[name]
        _need(is_batched(x) and not any(_contains_batched(v) for k, v in a.items() if k != name), "dim op")
        n = _nd(x)
        p = x._phys
        dim = a["dim"]
        keep = a.get("keepdim", False)
        if dim is None:
            _need(all_dims, "dim None")
            a[name] = p.reshape(b, -1)
            a["dim"] = 1
            out = cls.apply(*a.values())
            if keep:
                out = tuple(o.reshape((b,) + (1,) * n) for o in out) if type(out) is tuple else \
                    out.reshape((b,) + (1,) * n)
            return _wrap_out(out)
        _need(n > 0, "0-d with a dim")
        if isinstance(dim, (tuple, list)):
            _need(tuples, "tuple dims")
            a["dim"] = tuple(_norm(d, n) + 1 for d in dim)
        else:
            a["dim"] = _norm(dim, n) + 1
        a[name] = p
        return _wrap_out(cls.apply(*a.values()))
    return rule


REDUCE_ALL = "sum mean amax amin logsumexp nansum nanmean std var all any argmax argmin".split()
ALONG_DIM = "softmax log_softmax softmin cumsum cumprod logcumsumexp max_dim min_dim glu".split()


# ---- shapes and indexing --------------------------------------------------------------------------------
def _reshape(cls, b, args, kwargs):
    a = _bind(cls, args, kwargs)
    _need(is_batched(a["a"]) and all(isinstance(s, int) for s in a["shape"]), "reshape")
    return wrap(cls.apply(a["a"]._phys, (b,) + tuple(a["shape"])))


def _permute(cls, b, args, kwargs):
    a = _bind(cls, args, kwargs)
    x = a["a"]
    _need(is_batched(x), "permute")
    n = _nd(x)
    dims = tuple(a["dims"])
    _need(len(dims) == n and len({_norm(d, n) for d in dims}) == n, "permute dims")
    return wrap(cls.apply(x._phys, (0,) + tuple(_norm(d, n) + 1 for d in dims)))


def _expand(cls, b, args, kwargs):
    a = _bind(cls, args, kwargs)
    x, shape = a["a"], tuple(a["shape"])
    _need(is_batched(x) and len(shape) >= _nd(x) and all(isinstance(s, int) for s in shape), "expand")
    return wrap(cls.apply(_pad_to(x, len(shape)), (b,) + shape))


def _index_part_ok(k) -> bool:
    if k is None or k is Ellipsis:
        return True
    if isinstance(k, slice):
        return all(v is None or isinstance(v, int) and not isinstance(v, bool) for v in (k.start, k.stop, k.step))
    return isinstance(k, int) and not isinstance(k, bool)


def _getitem(cls, b, args, kwargs):
    _need(len(args) == 2 and not kwargs and is_batched(args[0]), "getitem")
    key = args[1] if type(args[1]) is tuple else (args[1],)
    _need(all(_index_part_ok(k) for k in key) and sum(k is Ellipsis for k in key) <= 1, "advanced index")
    return wrap(cls.apply(args[0]._phys, (slice(None),) + key))


def _stack_cat(stack: bool):
    def rule(cls, b, args, kwargs):
        _need(set(kwargs) <= {"dim"} and all(isinstance(t, Tensor) for t in args) and args, "stack/cat")
        _same_dtype(args)
        n = _nd(args[0])
        d = _norm(kwargs.get("dim", 0), n + 1 if stack else n)
        return wrap(cls.apply(*[phys(t, b) for t in args], dim=d + 1))
    return rule


# ---- linear algebra -------------------------------------------------------------------------------------
def _linear(cls, b, args, kwargs):
    a = _bind(cls, args, kwargs)
    x, w, bias = a["x"], a["weight"], a["bias"]
    _need(isinstance(x, Tensor) and isinstance(w, Tensor) and _nd(w) == 2, "linear")
    _same_dtype((x, w, bias))
    if not is_batched(w) and not is_batched(bias):
        return wrap(cls.apply(x._phys, w, bias))
    k = w.shape[1]
    lead = tuple(x.shape[:-1])
    xs = x._phys.reshape(b, -1, k) if is_batched(x) else x.reshape(-1, k)
    y = xs @ w._phys.transpose(1, 2) if is_batched(w) else xs @ w.t()
    if bias is not None:
        y = y + (bias._phys.unsqueeze(1) if is_batched(bias) else bias)
    return wrap(y.reshape((b,) + lead + (w.shape[0],)))


def _matmul(cls, b, args, kwargs):
    _need(len(args) == 2 and not kwargs and all(isinstance(t, Tensor) for t in args), "matmul")
    x, y = args
    _same_dtype((x, y))
    nx, ny = _nd(x), _nd(y)
    _need(nx > 0 and ny > 0, "0-d matmul")
    if nx == 1:
        x = x.unsqueeze(0)
    if ny == 1:
        y = y.unsqueeze(1)
    r = max(_nd(x), _nd(y))
    px = _pad_to(x, r) if is_batched(x) else x
    py = _pad_to(y, r) if is_batched(y) else y
    out = cls.apply(px, py)
    if nx == 1:
        out = out.squeeze(-2)
    if ny == 1:
        out = out.squeeze(-1)
    return wrap(out)


# ---- convolutions and pooling: the batch joins N ---------------------------------------------------------
def _fold(spatial: int, first: str = "x", plain_rest: bool = True):
    """An op on (N, C, *spatial) or (C, *spatial) input whose other tensor arguments are not batched."""
    def rule(cls, b, args, kwargs):
        a = _bind(cls, args, kwargs)
        x = a[first]
        _need(is_batched(x) and not any(_contains_batched(v) for k, v in a.items() if k != first), "fold")
        n = _nd(x)
        p = x._phys
        if n == spatial + 1:
            a[first] = p
            return _wrap_out(cls.apply(*a.values()))
        _need(n == spatial + 2, "fold rank")
        a[first] = p.reshape((b * p.shape[1],) + tuple(p.shape[2:]))
        out = cls.apply(*a.values())
        unfold = lambda o: wrap(o.reshape((b, p.shape[1]) + tuple(o.shape[1:])))  # noqa: E731
        return tuple(unfold(o) for o in out) if type(out) is tuple else unfold(out)
    return rule


def _conv(spatial: int):
    folded = _fold(spatial)

    def rule(cls, b, args, kwargs):
        a = _bind(cls, args, kwargs)
        x, w, bias = a["x"], a["weight"], a["bias"]
        if not is_batched(w) and not is_batched(bias):
            return folded(cls, b, args, kwargs)
        _need(isinstance(x, Tensor) and isinstance(w, Tensor) and _nd(w) == spatial + 2
              and isinstance(a["groups"], int), "conv")
        _same_dtype((x, w, bias))
        n = _nd(x)
        _need(n in (spatial + 1, spatial + 2), "conv rank")
        if n == spatial + 1:
            x = x.unsqueeze(0)
        px = phys(x, b)  # (B, N, C, *s) -> (N, B*C, *s); weight (B, O, C/g, *k) -> (B*O, C/g, *k)
        nb = px.shape[1]
        xs = px.transpose(0, 1).reshape((nb, b * px.shape[2]) + tuple(px.shape[3:]))
        pw = phys(w, b)
        o = pw.shape[1]
        a["x"] = xs
        a["weight"] = pw.reshape((b * o,) + tuple(pw.shape[2:]))
        a["bias"] = None if bias is None else phys(bias, b).reshape(b * o)
        a["groups"] = a["groups"] * b
        out = cls.apply(*a.values())
        out = out.reshape((nb, b, o) + tuple(out.shape[2:])).transpose(0, 1)
        if n == spatial + 1:
            out = out.squeeze(1)
        return wrap(out)
    return rule


def _fold_n(min_rank: int, ok=lambda a: True):
    """An op whose input's dim 0 is its batch (N) and whose other tensor arguments are not batched: the vmap
    batch joins N (logical rank >= ``min_rank``; ``ok(arguments)`` says whether the call qualifies)."""
    def rule(cls, b, args, kwargs):
        a = _bind(cls, args, kwargs)
        name = next(iter(a))
        x = a[name]
        _need(is_batched(x) and _nd(x) >= min_rank and ok(a)
              and not any(_contains_batched(v) for k, v in a.items() if k != name), "fold N")
        p = x._phys
        a[name] = p.reshape((-1,) + tuple(p.shape[2:]))
        out = cls.apply(*a.values())
        return wrap(out.reshape((b, p.shape[1]) + tuple(out.shape[1:])))
    return rule


def _channel_norm(ok=lambda a: True):
    """batch_norm / group_norm: the batch joins N; a batched affine weight or bias (per-sample gradients)
    applies after, per channel (dim 1), as logical ops."""
    folded = _fold_n(2, ok)

    def rule(cls, b, args, kwargs):
        a = _bind(cls, args, kwargs)
        x, w, bias = a["x"], a["weight"], a["bias"]
        if not is_batched(w) and not is_batched(bias):
            return folded(cls, b, args, kwargs)
        _need(isinstance(x, Tensor) and _nd(x) >= 2 and ok(a), "channel norm")
        a["weight"] = a["bias"] = None
        y = folded(cls, b, tuple(a.values()), {}) if is_batched(x) else cls.apply(*a.values())
        shape = (-1,) + (1,) * (_nd(x) - 2)
        if w is not None:
            y = y * w.reshape(shape)
        if bias is not None:
            y = y + bias.reshape(shape)
        return y
    return rule


def _batch_norm(cls, b, args, kwargs):
    """batch_norm: eval mode (running statistics) by _channel_norm; training mode normalizes each element over
    its own (N, *spatial) per channel: the batch joins the channels, (B, N, C, *s) -> (N, B*C, *s). Running
    statistics that training would update in place raise torch.func's error when unbatched (one element's
    update each, in turn, is not what a batch gives); batched ones loop (each element updates its own)."""
    a = _bind(cls, args, kwargs)
    if not a["training"]:
        return _eval_batch_norm(cls, b, args, kwargs)
    if a["running_mean"] is not None or a["running_var"] is not None:
        if is_batched(a["running_mean"]) or is_batched(a["running_var"]):
            raise NeedLoop("batch_norm with batched running statistics")
        raise Refused(BATCH_NORM_REFUSED)
    x, w, bias = a["x"], a["weight"], a["bias"]
    _need(is_batched(x) and _nd(x) >= 2, "batch_norm")
    p = x._phys
    nb, c, rest = p.shape[1], p.shape[2], tuple(p.shape[3:])
    a["x"] = p.transpose(0, 1).reshape((nb, b * c) + rest)
    a["weight"] = a["bias"] = None
    y = wrap(cls.apply(*a.values()).reshape((nb, b, c) + rest).transpose(0, 1))
    shape = (-1,) + (1,) * (_nd(x) - 2)
    if w is not None:
        y = y * w.reshape(shape)  # logical ops: a batched weight (per-sample gradients) too
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _dropout(cls, b, args, kwargs):
    """dropout in training: under randomness="different" one draw for the whole batch, element after element,
    as the loop draws (the same masks); under "same" one element's mask for all (the loop rewinds the generator
    before each element); under "error" the loop raises torch's error."""
    a = _bind(cls, args, kwargs)
    x = a["x"]
    _need(is_batched(x) and not any(isinstance(v, Tensor) for k, v in a.items() if k != "x"), "dropout")
    if a["training"] is False or a["p"] == 0:
        return x
    mode = randomness()
    if mode == "same":
        from .._functions import ones_like
        a["x"] = ones_like(x._phys[0])
        return x * cls.apply(*a.values())
    _need(mode == "different", "dropout draws random numbers")
    a["x"] = x._phys
    return draw_for_batch(lambda: wrap(cls.apply(*a.values())))


def _inactive_dropout(cls, b, args, kwargs):
    a = _bind(cls, args, kwargs)
    _need(is_batched(a["x"]) and (a["training"] is False or a["p"] == 0), "dropout draws random numbers")
    return a["x"]


def _pad(cls, b, args, kwargs):
    a = _bind(cls, args, kwargs)
    _need(is_batched(a["x"]) and a["mode"] == "constant" and not isinstance(a["value"], Tensor)
          and all(isinstance(v, int) for v in a["pad"]) and len(a["pad"]) <= 2 * _nd(a["x"]), "pad")
    a["x"] = a["x"]._phys  # constant padding of the last dims: the leading batch is one more untouched dim
    return wrap(cls.apply(*a.values()))


# ---- normalization and embedding -----------------------------------------------------------------------
def _norm_layer(cls, b, args, kwargs):
    a = _bind(cls, args, kwargs)
    x, w, bias = a["x"], a["weight"], a.get("bias")
    _need(is_batched(x) and isinstance(a["normalized_shape"], (int, tuple, list)), "layer_norm")
    if not is_batched(w) and not is_batched(bias):
        a["x"] = x._phys
        return wrap(cls.apply(*a.values()))
    a["x"], a["weight"] = x._phys, None
    if "bias" in a:
        a["bias"] = None
    y = wrap(cls.apply(*a.values()))
    if w is not None:
        y = y * w  # logical ops: the elementwise rules align the batch
    if bias is not None:
        y = y + bias
    return y


def _embedding(cls, b, args, kwargs):
    a = _bind(cls, args, kwargs)
    _need(not is_batched(a["weight"]) and is_batched(a["indices"]), "embedding")
    a["indices"] = a["indices"]._phys
    return wrap(cls.apply(*a.values()))


# ---- losses: computed per element (reduction="none"), reduced per sample -----------------------------------
def _reduce(loss: Tensor, b: int, reduction: str):
    if reduction == "none":
        return wrap(loss)
    flat = loss.reshape(b, -1)
    _need(reduction in ("sum", "mean"), "reduction")
    return wrap(flat.sum(1) if reduction == "sum" else flat.mean(1))


def _pointwise_loss(pair=("inp", "target"), extra_plain=("weight", "pos_weight")):
    def rule(cls, b, args, kwargs):
        a = _bind(cls, args, kwargs)
        x, t = (a[k] for k in pair)
        _need(isinstance(x, Tensor) and isinstance(t, Tensor) and tuple(x.shape) == tuple(t.shape), "loss shapes")
        _need(not any(is_batched(a.get(k)) or isinstance(a.get(k), Tensor) and _nd(a[k]) > _nd(x)
                      for k in extra_plain), "batched weight")
        _same_dtype((x, t))
        red = a["reduction"]
        a[pair[0]], a[pair[1]] = phys(x, b), phys(t, b)
        if red == "batchmean":
            _need(_nd(x) > 0, "batchmean of 0-d")
            a["reduction"] = "none"
            return wrap(cls.apply(*a.values()).reshape(b, -1).sum(1) / x.shape[0])
        a["reduction"] = "none"
        return _reduce(cls.apply(*a.values()), b, red)
    return rule


def _class_loss(first: str):
    """cross_entropy / nll_loss: the batch joins N, computed with reduction="none" (each element's loss already
    carries its class weight ``weight[target]``, 0 where ignored, and label smoothing's term), then reduced per
    sample. A mean over class indices divides by the sample's summed weights of the targets not ignored (its
    count without ``weight``), torch's; over probabilities by its element count."""
    def rule(cls, b, args, kwargs):
        a = _bind(cls, args, kwargs)
        x, t, weight, red = a[first], a["target"], a["weight"], a["reduction"]
        _need(isinstance(x, Tensor) and isinstance(t, Tensor) and not is_batched(weight), "class loss")
        n = _nd(x)
        probs = t.is_floating_point()
        _need(n >= 1 and (tuple(t.shape) == tuple(x.shape) if probs else _nd(t) == n - 1), "class loss shapes")
        px, pt = phys(x, b), phys(t, b)
        if n >= 2:  # (B, N, C, *d) -> (B*N, C, *d)
            px = px.reshape((-1,) + tuple(px.shape[2:]))
            pt = pt.reshape((-1,) + tuple(pt.shape[2:]))
        a[first], a["target"], a["reduction"] = px, pt, "none"
        loss = cls.apply(*a.values())
        loss = loss.reshape((b,) + tuple(t.shape if not probs else x.shape[:1] + x.shape[2:]) if n >= 2 else (b,))
        if red != "mean":
            return _reduce(loss, b, red)
        flat = loss.reshape(b, -1)
        if probs:
            return wrap(flat.mean(1))
        kept = pt.reshape(b, -1) != a["ignore_index"]
        if weight is None:
            total = kept.to(loss.dtype).sum(1)
        else:
            from ..factories import where
            safe = where(kept, pt.reshape(b, -1), 0)  # an ignored target may be out of range (-100)
            total = (weight.to(loss.dtype)[safe] * kept.to(loss.dtype)).sum(1)
        return wrap(flat.sum(1) / total)
    return rule


# ---- Functions of the differentiable backward rules (ops/_double_backward.py, no op record): met when a batch
# of cotangents runs through a graph's rules (jacrev's rows, vmap over a vjp_fn) -----------------------------------
def _index_backward(cls, b, args, kwargs):
    """getitem's gradient (g scattered into zeros at ``key``): the batch is one more leading slice. A key with
    integer index arrays qualifies when they (and the ints among them) sit side by side: numpy then keeps their
    result dims in place, after the batch (separated ones would move to the front)."""
    _need(len(args) == 3 and not kwargs and is_batched(args[0]), "index backward")
    key = args[1] if type(args[1]) is tuple else (args[1],)
    arrays = [isinstance(k, np.ndarray) and k.dtype.kind in "iu" for k in key]
    _need(all(a or _index_part_ok(k) for a, k in zip(arrays, key)) and sum(k is Ellipsis for k in key) <= 1,
          "advanced index")
    if any(arrays):
        adv = [i for i, k in enumerate(key) if arrays[i] or isinstance(k, int)]
        _need(adv == list(range(adv[0], adv[-1] + 1)), "separated advanced indices")
    return wrap(cls.apply(args[0]._phys, (slice(None),) + key, (b,) + tuple(args[2])))


def _function_rules():
    from ..ops._double_backward import IndexBackwardFunction, NormalCdfFunction
    return {IndexBackwardFunction: _index_backward, NormalCdfFunction: _unary}


_eval_batch_norm = _channel_norm(lambda a: not a["training"])
RULES = {}
for _n in UNARY:
    RULES[_n] = _unary
for _n in NARY:
    RULES[_n] = _nary
for _n in REDUCE_ALL:
    RULES[_n] = _dim_op(True)
RULES["prod"] = _dim_op(True, tuples=False)
for _n in ALONG_DIM:
    RULES[_n] = _dim_op(False, tuples=False)
for _s in (1, 2, 3):
    RULES[f"conv{_s}d"] = _conv(_s)
    for _p in ("max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "lp_pool"):
        RULES[f"{_p}{_s}d"] = _fold(_s)
RULES.update({
    "reshape": _reshape, "permute": _permute, "expand": _expand, "getitem": _getitem,
    "stack": _stack_cat(True), "cat": _stack_cat(False), "linear": _linear, "matmul": _matmul,
    "batch_norm": _batch_norm, "group_norm": _channel_norm(),
    "pixel_shuffle": _fold_n(4), "pixel_unshuffle": _fold_n(4), "interpolate": _fold_n(3), "pad": _pad,
    "dropout": _dropout, "alpha_dropout": _inactive_dropout, "feature_dropout": _inactive_dropout,
    "feature_alpha_dropout": _inactive_dropout,
    "layer_norm": _norm_layer, "rms_norm": _norm_layer, "embedding": _embedding,
    "cross_entropy": _class_loss("logits"), "nll_loss": _class_loss("logp"),
    "mse_loss": _pointwise_loss(), "l1_loss": _pointwise_loss(), "smooth_l1_loss": _pointwise_loss(),
    "huber_loss": _pointwise_loss(), "kl_div": _pointwise_loss(),
    "binary_cross_entropy": _pointwise_loss(("p", "target")),
    "binary_cross_entropy_with_logits": _pointwise_loss(("x", "target")),
    "soft_margin_loss": _pointwise_loss(("input", "target")),
})
FUNCTION_RULES = _function_rules()  # keyed by Function class
del _n, _s, _p
