"""Vector norms along an axis: ``normalize`` (x / max(||x||_p, eps)), ``cosine_similarity``, ``pairwise_distance``
(||x1 - x2 + eps||_p over the last axis) and ``local_response_norm`` (x / (k + alpha * mean of x^2 over a window of
channels)^beta), with torch's formulas and gradients (including torch's at a zero norm and at ties of the inf-norm).

numpy in the inputs' dtype: float64 runs the same Functions, and the results do not depend on the thread count.
"""
from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool, check_float, check_int
from ..autograd import Function
from ..devices import MetaArray
from ..dtypes import default_float
from . import _samples as S
from ._util import normalize_axis, sign0, single_axis, unbroadcast
from .registry import BadInput, Sample, register_op


def _decomposition(fn):
    """ops._double_backward.decomposition(fn), imported when first used (that module needs every op loaded)."""

    def rule(ctx, args, kwargs, *grads):
        from ._double_backward import decomposition
        return decomposition(fn)(ctx, args, kwargs, *grads)

    return rule


def _float(x):
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def _order(p, name="p"):
    p = check_float(p, name)
    if not p > 0:  # NaN included
        raise ValueError(f"{name} must be > 0 (or inf), got {p}")
    return p


# ---- the p-norm and its gradient (torch's linalg_vector_norm backward) ------------------------------------
def _pnorm(x, p, axes):
    a = np.abs(x)
    if p == math.inf:
        return a.max(axis=axes, keepdims=True)
    if p == 1:
        return a.sum(axis=axes, keepdims=True)
    if p == 2:
        return np.sqrt((x * x).sum(axis=axes, keepdims=True))
    return (a ** x.dtype.type(p)).sum(axis=axes, keepdims=True) ** x.dtype.type(1.0 / p)


def _pnorm_backward(x, n, p, gn, axes):
    """The gradient with respect to x of the norm n (keepdims) given its gradient gn; 0 where n == 0 (torch's
    norm_backward, sign(NaN) = 0 as torch's)."""
    t = x.dtype.type
    with np.errstate(divide="ignore", invalid="ignore"):
        if p == 1:
            return sign0(x) * gn
        if p == 2:
            return gn * np.where(n == 0, t(0), x / np.where(n == 0, t(1), n))
        if p == math.inf:  # ties share the gradient equally
            hit = ((np.abs(x) == n) | (np.isnan(x) & np.isnan(n))).astype(x.dtype)
            return sign0(x) * hit * (gn / hit.sum(axis=axes, keepdims=True))
        if p < 1:
            scaled = sign0(x) * np.where(n == 0, t(0), np.abs(x) ** t(p - 1))
            return scaled * gn * n ** t(1 - p)
        scaled = sign0(x) * np.abs(x) ** t(p - 1) if p < 2 else x * np.abs(x) ** t(p - 2)
        return scaled * np.where(n == 0, t(0), gn / n ** t(p - 1))


def _norm_t(x, p, axes):
    """_pnorm with Tensor ops (the differentiable rules)."""
    if p == 1:
        return x.abs().sum(dim=axes, keepdim=True)
    if p == math.inf:
        return x.abs().amax(dim=axes, keepdim=True)
    # sqrt and the 1/p-th power have an infinite slope at 0 (0 * inf: NaN gradients); a zero norm takes torch's
    # subgradient 0 instead: its vector's entries replaced by 1 before the norm, the norm by 0 after (constant masks)
    from .registry import _OPS
    zero = np.asarray(_pnorm(x._data, p, axes) == 0)
    if zero.any():
        x = _OPS["where"](np.broadcast_to(~zero, x.shape), x, 1.0)
    n = (x * x).sum(dim=axes, keepdim=True).sqrt() if p == 2 else (x.abs() ** p).sum(dim=axes, keepdim=True) ** (1 / p)
    return _OPS["where"](~zero, n, 0.0) if zero.any() else n


def _onnx_norm(ctx, x, p, axes):
    if p == 2:
        return ctx.reduce("ReduceL2", x, axes, True)
    if p == 1:
        return ctx.reduce("ReduceL1", x, axes, True)
    if p == math.inf:
        return ctx.reduce("ReduceMax", ctx.node("Abs", [x]), axes, True)
    powered = ctx.node("Pow", [ctx.node("Abs", [x]), ctx.const(p, "float32")])
    return ctx.node("Pow", [ctx.reduce("ReduceSum", powered, axes, True), ctx.const(1.0 / p, "float32")])


# ---- normalize -----------------------------------------------------------------------------------------
def _normalize_args(x, p, dim, eps):
    return _order(p), normalize_axis(dim, x.ndim), check_float(eps, "eps", low=0.0)


def _normalize_samples():
    return [Sample((S.rand(3, 7),)), Sample((S.rand(2, 5, 9, seed=1),), {"p": 1.0, "dim": -1}, "p=1, last dim"),
            Sample((S.rand(4, seed=2),), {"dim": 0}, "1-d"),
            Sample((S.rand(2, 3, 4, seed=3),), {"p": 3.0, "dim": (1, 2)}, "p=3, two dims"),
            Sample((S.rand(3, 6, seed=4),), {"p": math.inf}, "p=inf"),
            Sample((S.rand(2, 5, seed=5) * 1e-13,), {"eps": 1e-12}, "norms below eps"),
            Sample((S.rand(*S.LARGE, seed=6),), {}, "large")]


def _normalize_onnx(ctx, op):
    x = op.input("x")
    p, axes = float(op.attr("p", 2.0)), normalize_axis(op.attr("dim", 1), len(op.out_dims(0)))
    n = ctx.node("Max", [_onnx_norm(ctx, x, p, axes), ctx.const(op.attr("eps", 1e-12), "float32")])
    return [ctx.node("Div", [x, n])]


def _normalize_decomposed(x, p=2.0, dim=1, eps=1e-12):
    return x / _norm_t(x, p, normalize_axis(dim, x.ndim)).clamp(min=eps)


def normalize(input, p: float = 2.0, dim=1, eps: float = 1e-12, out=None):
    """``torch.nn.functional.normalize``: input / max(||input||_p, eps) along ``dim`` (an int or a tuple)."""
    from ..nn.functional_conv import _t
    if out is not None:
        raise TypeError("normalize: out= is not supported; use the returned tensor")
    input = _t(input, "input")
    if input.ndim == 0:  # torch takes dim 0 / -1 of a 0-d input: the op runs on it as a 1-element vector
        normalize_axis(dim, 0)
        return NormalizeFunction.op(input.reshape(1), p=p, dim=0, eps=eps).reshape(())
    return NormalizeFunction.op(input, p=p, dim=dim, eps=eps)


@register_op("normalize", meta=lambda x, p=2.0, dim=1, eps=1e-12: (_normalize_args(x, p, dim, eps),
                                                                  MetaArray(x.shape, x.dtype))[1],
             flops=lambda out, inputs, kwargs: 4 * int(np.prod(inputs[0].shape)), samples=_normalize_samples,
             onnx=_normalize_onnx, functional=normalize, differentiable_backward=_decomposition(_normalize_decomposed),
             torch=lambda torch, x, p=2.0, dim=1, eps=1e-12: torch.nn.functional.normalize(x, p, dim, eps),
             bad_inputs=lambda: [BadInput((S.rand(3, 4),), {"p": 0.0}, ValueError, "p"),
                                 BadInput((S.rand(3, 4),), {"dim": 2}, IndexError, "dim"),
                                 BadInput((S.rand(3, 4),), {"eps": -1.0}, ValueError, "eps")])
class NormalizeFunction(Function):
    """y = x / max(||x||_p, eps) along dim (keepdims); the clamp passes no gradient to the norm (torch's)."""

    @staticmethod
    def forward(ctx, x, p=2.0, dim=1, eps=1e-12):
        p, axes, eps = _normalize_args(x, p, dim, eps)
        x = _float(x)
        n = _pnorm(x, p, axes)
        d = np.maximum(n, x.dtype.type(eps))
        ctx.save_for_backward(x, n)
        ctx.parts = p, axes, eps
        return x / d

    @staticmethod
    def backward(ctx, g):
        x, n = ctx.saved_tensors
        p, axes, eps = ctx.parts
        d = np.maximum(n, x.dtype.type(eps))
        gd = -(g * x).sum(axis=axes, keepdims=True) / (d * d)
        gn = np.where(n >= eps, gd, x.dtype.type(0))
        return (g / d + _pnorm_backward(x, n, p, gn, axes)).astype(x.dtype, copy=False)


# ---- cosine_similarity ---------------------------------------------------------------------------------
def _cosine_args(x1, x2, dim, eps):
    try:
        shape = np.broadcast_shapes(x1.shape, x2.shape)
    except ValueError:
        raise ValueError(f"cosine_similarity: x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)} must broadcast to a "
                         f"common shape") from None
    return shape, single_axis(dim, len(shape)), check_float(eps, "eps", low=0.0)


def _cosine_meta(x1, x2, dim=1, eps=1e-8):
    shape, axis, _ = _cosine_args(x1, x2, dim, eps)
    return MetaArray(shape[:axis] + shape[axis + 1:], np.result_type(x1.dtype, x2.dtype))


def _cosine_samples():
    return [Sample((S.rand(3, 7), S.rand(3, 7, seed=1))),
            Sample((S.rand(2, 5, 9, seed=2), S.rand(5, 9, seed=3)), {"dim": -1}, "broadcast, last dim"),
            Sample((S.rand(4, 1, 6, seed=4), S.rand(1, 3, 6, seed=5)), {"dim": 2, "eps": 1e-6}, "broadcast both"),
            Sample((S.rand(3, 1, seed=6), S.rand(3, 5, seed=7)), name="x1 stretched along dim"),
            Sample((S.rand(5, seed=8), S.rand(5, seed=9)), {"dim": 0}, "1-d"),
            Sample((S.rand(*S.LARGE, seed=10), S.rand(*S.LARGE, seed=11)), name="large")]


def _expanded(ctx, a, b):
    """a and b expanded to their broadcast shape (torch's cosine_similarity takes the norms after expanding)."""
    shape = ctx.node("Shape", [ctx.node("Add", [a, b])])
    return ctx.node("Expand", [a, shape]), ctx.node("Expand", [b, shape])


def _cosine_onnx(ctx, op):
    a, b = _expanded(ctx, op.input("x1"), op.input("x2"))
    axis = len(op.out_dims(0)) + 1
    axis = single_axis(op.attr("dim", 1), axis)
    eps = ctx.const(op.attr("eps", 1e-8), "float32")
    ua = ctx.node("Div", [a, ctx.node("Max", [ctx.reduce("ReduceL2", a, [axis], True), eps])])
    ub = ctx.node("Div", [b, ctx.node("Max", [ctx.reduce("ReduceL2", b, [axis], True), eps])])
    return [ctx.reduce("ReduceSum", ctx.node("Mul", [ua, ub]), [axis], False)]


def _value_clamped(n, eps):
    """n with the value max(n, eps) but n's gradient (torch clamps its norms in place under no_grad)."""
    from ._double_backward import _const
    return n + _const(np.maximum(n._data, eps) - n._data, n)


def _cosine_decomposed(x1, x2, dim=1, eps=1e-8):
    shape, axis, _ = _cosine_args(x1, x2, dim, eps)
    a, b = x1.expand(*shape), x2.expand(*shape)
    ua = a / _value_clamped(_norm_t(a, 2, (axis,)), eps)
    ub = b / _value_clamped(_norm_t(b, 2, (axis,)), eps)
    return (ua * ub).sum(dim=axis)


def cosine_similarity(x1, x2, dim: int = 1, eps: float = 1e-8):
    """``torch.nn.functional.cosine_similarity``: sum(x1 / max(||x1||, eps) * x2 / max(||x2||, eps)) along dim,
    after broadcasting x1 and x2 to a common shape."""
    from ..nn.functional_conv import _t
    x1, x2 = _t(x1, "x1"), _t(x2, "x2")
    if x1.ndim == 0 and x2.ndim == 0:  # torch takes dim 0 / -1 of 0-d inputs: run as 1-element vectors
        single_axis(dim, 0)
        return CosineSimilarityFunction.op(x1.reshape(1), x2.reshape(1), dim=0, eps=eps)
    return CosineSimilarityFunction.op(x1, x2, dim=dim, eps=eps)


@register_op("cosine_similarity", meta=_cosine_meta, flops=lambda out, inputs, kwargs: 8 * int(np.prod(
                 np.broadcast_shapes(inputs[0].shape, inputs[1].shape))),
             samples=_cosine_samples, onnx=_cosine_onnx, functional=cosine_similarity,
             differentiable_backward=_decomposition(_cosine_decomposed),
             torch=lambda torch, x1, x2, dim=1, eps=1e-8: torch.nn.functional.cosine_similarity(x1, x2, dim, eps),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), S.rand(3, 5)), {}, ValueError, "x2"),
                                 BadInput((S.rand(3, 4), S.rand(3, 4)), {"dim": 2}, IndexError, "dim"),
                                 BadInput((S.rand(3, 4), S.rand(3, 4)), {"dim": (0, 1)}, TypeError, "dim")])
class CosineSimilarityFunction(Function):
    """Torch's formula: each input divided by its norm clamped at eps, then the dot product along dim; the
    clamp passes the norm's gradient through (torch clamps in place under no_grad)."""

    @staticmethod
    def forward(ctx, x1, x2, dim=1, eps=1e-8):
        shape, axis, eps = _cosine_args(x1, x2, dim, eps)
        a, b = np.broadcast_arrays(_float(x1), _float(x2))
        na, nb = _pnorm(a, 2, (axis,)), _pnorm(b, 2, (axis,))
        ca, cb = np.maximum(na, na.dtype.type(eps)), np.maximum(nb, nb.dtype.type(eps))
        y = ((a / ca) * (b / cb)).sum(axis=axis)
        ctx.save_for_backward(x1, x2)
        ctx.parts = axis, (na, nb, ca, cb, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x1, x2 = ctx.saved_tensors
        axis, (na, nb, ca, cb, y) = ctx.parts
        a, b = np.broadcast_arrays(_float(x1), _float(x2))
        g, y = np.expand_dims(g, axis), np.expand_dims(y, axis)
        zero = y.dtype.type(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ua = np.where(na == 0, zero, a / np.where(na == 0, 1, na))  # d||a|| / da, 0 at a zero norm
            ub = np.where(nb == 0, zero, b / np.where(nb == 0, 1, nb))
        need = ctx.needs_input_grad
        ga = unbroadcast(g * (b / cb - y * ua) / ca, x1.shape).astype(a.dtype, copy=False) if need[0] else None
        gb = unbroadcast(g * (a / ca - y * ub) / cb, x2.shape).astype(b.dtype, copy=False) if need[1] else None
        return ga, gb


# ---- pairwise_distance ---------------------------------------------------------------------------------
def _pairwise_args(x1, x2, p, eps, keepdim):
    try:
        shape = np.broadcast_shapes(x1.shape, x2.shape)
    except ValueError:
        raise ValueError(f"pairwise_distance: x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)} must broadcast to a "
                         f"common shape") from None
    if not shape:
        raise ValueError("pairwise_distance: x1 and x2 must have at least 1 dimension, got 0-d tensors")
    return shape, _order(p), check_float(eps, "eps"), check_bool(keepdim, "keepdim")


def _pairwise_meta(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    shape, _, _, keepdim = _pairwise_args(x1, x2, p, eps, keepdim)
    return MetaArray(shape[:-1] + ((1,) if keepdim else ()), np.result_type(x1.dtype, x2.dtype))


def _pairwise_samples():
    return [Sample((S.rand(3, 7), S.rand(3, 7, seed=1))),
            Sample((S.rand(4, 9, seed=2), S.rand(9, seed=3)), {"keepdim": True}, "broadcast, keepdim"),
            Sample((S.rand(2, 3, 5, seed=4), S.rand(3, 5, seed=5)), {"p": 1.0}, "p=1"),
            Sample((S.rand(3, 6, seed=6), S.rand(3, 6, seed=7)), {"p": 3.0, "eps": 0.0}, "p=3, eps=0"),
            Sample((S.rand(3, 6, seed=8), S.rand(3, 6, seed=9)), {"p": 1.5}, "p=1.5"),
            Sample((S.rand(3, 6, seed=10), S.rand(3, 6, seed=11)), {"p": math.inf}, "p=inf"),
            Sample((S.rand(6, seed=12), S.rand(6, seed=13)), name="1-d"),
            Sample((S.rand(*S.LARGE, seed=14), S.rand(*S.LARGE, seed=15)), name="large")]


def _pairwise_onnx(ctx, op):
    rank = len(op.out_dims(0)) + (0 if op.attr("keepdim", False) else 1)
    d = ctx.node("Add", [ctx.node("Sub", [op.input("x1"), op.input("x2")]),
                         ctx.const(op.attr("eps", 1e-6), "float32")])
    n = _onnx_norm(ctx, d, float(op.attr("p", 2.0)), [rank - 1])
    return [n if op.attr("keepdim", False) else ctx.squeeze(n, [rank - 1])]


def _pairwise_decomposed(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    d = x1 - x2 + eps
    n = _norm_t(d, p, (d.ndim - 1,))
    return n if keepdim else n.squeeze(d.ndim - 1)


def pairwise_distance(x1, x2, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False):
    """``torch.nn.functional.pairwise_distance``: ||x1 - x2 + eps||_p over the last dimension (broadcasting)."""
    from ..nn.functional_conv import _t
    return PairwiseDistanceFunction.op(_t(x1, "x1"), _t(x2, "x2"), p=p, eps=eps, keepdim=keepdim)


@register_op("pairwise_distance", meta=_pairwise_meta, flops=lambda out, inputs, kwargs: 4 * int(np.prod(
                 np.broadcast_shapes(inputs[0].shape, inputs[1].shape))),
             samples=_pairwise_samples, onnx=_pairwise_onnx, functional=pairwise_distance,
             differentiable_backward=_decomposition(_pairwise_decomposed),
             torch=lambda torch, x1, x2, p=2.0, eps=1e-6, keepdim=False: torch.nn.functional.pairwise_distance(
                 x1, x2, p, eps, keepdim),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), S.rand(3, 5)), {}, ValueError, "x2"),
                                 BadInput((S.rand(3, 4), S.rand(3, 4)), {"p": -1.0}, ValueError, "p"),
                                 BadInput((S.rand(3, 4), S.rand(3, 4)), {"keepdim": 1}, TypeError, "keepdim")])
class PairwiseDistanceFunction(Function):
    """n = ||x1 - x2 + eps||_p over the last axis of the broadcast shape."""

    @staticmethod
    def forward(ctx, x1, x2, p=2.0, eps=1e-6, keepdim=False):
        shape, p, eps, keepdim = _pairwise_args(x1, x2, p, eps, keepdim)
        d = _float(x1) - _float(x2)
        d = d + d.dtype.type(eps)
        axes = (d.ndim - 1,)
        n = _pnorm(d, p, axes)
        ctx.save_for_backward(x1, x2, d, n)
        ctx.parts = p, axes
        return n if keepdim else n.squeeze(axes)

    @staticmethod
    def backward(ctx, g):
        x1, x2, d, n = ctx.saved_tensors
        p, axes = ctx.parts
        gd = _pnorm_backward(d, n, p, g.reshape(n.shape), axes).astype(d.dtype, copy=False)
        need = ctx.needs_input_grad
        return (unbroadcast(gd, x1.shape) if need[0] else None), (unbroadcast(-gd, x2.shape) if need[1] else None)


# ---- local_response_norm -------------------------------------------------------------------------------
def _lrn_args(x, size, alpha, beta, k):
    if x.ndim < 3:
        raise ValueError(f"local_response_norm: input must have 3 or more dimensions (N, C, *), got shape "
                         f"{tuple(x.shape)}")
    return (check_int(size, "size", low=1), check_float(alpha, "alpha"), check_float(beta, "beta"),
            check_float(k, "k"))


def _window_sum(v, size, before):
    """s[:, c] = sum of v[:, c - before + i] for i < size (zeros outside), v of shape (N, C, L)."""
    n, c, rest = v.shape
    padded = np.zeros((n, c + size - 1, rest), v.dtype)
    padded[:, before:before + c] = v
    s = padded[:, 0:c].copy()
    for i in range(1, size):
        s += padded[:, i:i + c]
    return s


def _lrn_samples():
    return [Sample((S.rand(2, 6, 5), 3)), Sample((S.rand(2, 7, 4, 3, seed=1), 4),
                                                 {"alpha": 0.5, "beta": 0.6, "k": 2.0}, "even size"),
            Sample((S.rand(1, 5, 2, 2, 3, seed=2), 5), {"alpha": 1e-2}, "5-d"),
            Sample((S.rand(2, 3, 4, seed=3), 8), {"alpha": 0.3}, "size > channels"),
            Sample((S.rand(2, 1, 3, seed=4), 1), {"alpha": 0.2, "beta": 1.5}, "size 1, one channel"),
            Sample((S.rand(4, 40, 25, 21, seed=5), 5), {"alpha": 0.1}, "large")]


def _lrn_onnx(ctx, op):
    """torch's own composition: the squares average-pooled over a window of channels (zero padded, the pad
    counted), as AveragePool over (N, 1, C, rest); ONNX's LRN centres an even window one channel later."""
    x = op.input("x")
    size = int(op.attr("size"))
    c = int(op.out_dims(0)[1])
    sq = ctx.node("Reshape", [ctx.node("Mul", [x, x]), ctx.ints([0, 1, c, -1])])
    avg = ctx.node("AveragePool", [sq], kernel_shape=[size, 1], pads=[size // 2, 0, (size - 1) // 2, 0],
                   strides=[1, 1], count_include_pad=1)
    f32 = np.float32
    avg = ctx.node("Reshape", [avg, ctx.node("Shape", [x])])
    div = ctx.node("Add", [ctx.node("Mul", [avg, ctx.const(f32(op.attr("alpha", 1e-4)))]),
                           ctx.const(f32(op.attr("k", 1.0)))])
    return [ctx.node("Div", [x, ctx.node("Pow", [div, ctx.const(f32(op.attr("beta", 0.75)))])])]


def _lrn_decomposed(x, size, alpha=1e-4, beta=0.75, k=1.0):
    from ._double_backward import _const
    from .registry import _OPS
    shape = tuple(x.shape)
    sq = (x * x).reshape(shape[0], shape[1], -1)
    zeros = [_const(np.zeros((shape[0], m, sq.shape[2]), x._data.dtype), x) for m in (size // 2, (size - 1) // 2)]
    padded = _OPS["cat"](*[t for t in (zeros[0], sq, zeros[1]) if t.shape[1]], dim=1)
    s = padded[:, 0:shape[1]]
    for i in range(1, size):
        s = s + padded[:, i:i + shape[1]]
    return x / ((s * (alpha / size) + k) ** beta).reshape(*shape)


def local_response_norm(input, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    """``torch.nn.functional.local_response_norm``: input / (k + alpha * mean of input^2 over ``size``
    neighbouring channels)^beta, input (N, C, *) with at least one spatial dimension."""
    from ..nn.functional_conv import _t
    return LocalResponseNormFunction.op(_t(input, "input"), size, alpha=alpha, beta=beta, k=k)


@register_op("local_response_norm", meta=lambda x, size, alpha=1e-4, beta=0.75, k=1.0: (
                 _lrn_args(x, size, alpha, beta, k), MetaArray(x.shape, x.dtype))[1],
             flops=lambda out, inputs, kwargs: (int(inputs[1]) + 6) * int(np.prod(inputs[0].shape)),
             samples=_lrn_samples, onnx=_lrn_onnx, functional=local_response_norm,
             differentiable_backward=_decomposition(_lrn_decomposed),
             torch=lambda torch, x, size, alpha=1e-4, beta=0.75, k=1.0: torch.nn.functional.local_response_norm(
                 x, size, alpha, beta, k),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), 3), {}, ValueError, "input"),
                                 BadInput((S.rand(2, 3, 4), 0), {}, ValueError, "size"),
                                 BadInput((S.rand(2, 3, 4), 2.5), {}, TypeError, "size"),
                                 BadInput((S.rand(2, 3, 4), 3), {"beta": "x"}, TypeError, "beta")])
class LocalResponseNormFunction(Function):
    """y = x * D^-beta, D = k + alpha / size * (sum of x^2 over channels [c - size//2, c + (size-1)//2])."""

    @staticmethod
    def forward(ctx, x, size, alpha=1e-4, beta=0.75, k=1.0):
        size, alpha, beta, k = _lrn_args(x, size, alpha, beta, k)
        rows = (x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64)))
        integer = x.dtype.kind in "biu"
        if integer:  # torch's average pool of integer squares truncates the window mean; then the default dtype
            whole = x.reshape(rows).astype(np.int64)
            x = x.astype(default_float())
            mean = (_window_sum(whole * whole, size, size // 2) // size).astype(x.dtype)
        x = _float(x)
        t = x.dtype.type
        v = x.reshape(rows)
        if not integer:
            mean = _window_sum(v * v, size, size // 2) / t(size)
        base = mean * t(alpha) + t(k)
        scale = base ** t(-beta)
        ctx.save_for_backward(x, base, scale)
        ctx.parts = size, alpha, beta
        return (v * scale).reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        x, base, scale = ctx.saved_tensors
        size, alpha, beta = ctx.parts
        t = x.dtype.type
        v = x.reshape(base.shape)
        gv = g.reshape(base.shape)
        # y_c = x_c base_c^-beta; base_c sums x_j^2 over j in window(c), so x_j feeds the c in [j - after, j + before]
        term = gv * v * scale / base * t(-beta * alpha / size)
        gx = gv * scale + t(2) * v * _window_sum(term, size, (size - 1) // 2)
        return gx.reshape(x.shape).astype(x.dtype, copy=False), None


for _fn in (NormalizeFunction, CosineSimilarityFunction, PairwiseDistanceFunction, LocalResponseNormFunction):
    _fn.op.float64 = _fn  # numpy in the inputs' dtype
