"""Index ops with torch's semantics: gather, scatter (src), scatter_add, scatter_reduce ('sum', 'prod', 'mean',
'amax', 'amin'; include_self) and index_select. The others of forgegrad._torch_indexing (index_add, index_copy,
index_fill, take, take_along_dim, masked_*, diag_embed, ...) are built from these.

Indices are int64 and checked before use: an index outside ``[0, size)`` raises IndexError naming the argument
(numpy would wrap a negative one around, torch refuses it). Gradients of duplicate indices accumulate with
``np.add.at``, which adds in index order: the same bits at any thread count. A plain scatter with duplicate indices
writes the last of them (torch leaves that order unspecified); its gradient reaches every duplicate source, as
torch's (``grad.gather``).
"""
from __future__ import annotations

import numpy as np

from .._validate import check_bool
from ..autograd import Function
from ..devices import MetaArray
from . import _meta as M
from . import _samples as S
from ._util import single_axis
from .registry import BadInput, Sample, register_op

REDUCTIONS = ("sum", "prod", "mean", "amax", "amin")


def check_index(index, size: int, name: str = "index", allow_negative: bool = False) -> np.ndarray:
    """``index`` as int64, refused (IndexError naming ``name``) when a value is out of range; a negative value is
    counted from the end only where torch allows it (``allow_negative``)."""
    if not isinstance(index, (np.ndarray, MetaArray)) or index.dtype.kind not in "iu":
        kind = getattr(index, "dtype", type(index).__name__)
        raise TypeError(f"{name} must be an int64 tensor, got {kind}")
    if type(index) is MetaArray:
        return index
    index = index.astype(np.int64, copy=False)
    if index.size:
        lo, hi = int(index.min()), int(index.max())
        low_ok = -size if allow_negative else 0
        if lo < low_ok or hi >= size:
            bad = lo if lo < low_ok else hi
            raise IndexError(f"{name}: index {bad} is out of bounds for dimension with size {size}"
                             + (" (negative indices are not allowed here, as in torch)" if bad < 0 else ""))
        if allow_negative and lo < 0:
            index = np.where(index < 0, index + size, index)
    return index


def _dim_and_shapes(name, x, dim, index, src=None):
    """torch's rules for gather/scatter: index has x's number of dims, and no dim of index is larger than x's
    (but along ``dim``) nor than src's."""
    nd = max(x.ndim, 1)
    d = single_axis(dim, nd, f"{name}(): dim")
    if max(index.ndim, 1) != nd and index.size:
        raise ValueError(f"{name}(): index must have as many dims as the input ({x.ndim}), got {index.ndim}")
    xs, ishape = (x.shape or (1,)), (index.shape or (1,))
    for k in range(nd):
        if index.size and k != d and ishape[k] > xs[k]:
            raise ValueError(f"{name}(): index {tuple(index.shape)} is larger than the input {tuple(x.shape)} "
                             f"at dim {k}")
        if src is not None and index.size and ishape[k] > (src.shape or (1,))[k]:
            raise ValueError(f"{name}(): index {tuple(index.shape)} is larger than src {tuple(src.shape)} at dim {k}")
    return d


def _positions(index, d, nd=None):
    """The full advanced-index tuple of ``index`` along axis ``d`` (every other axis its own position). An empty
    index (torch allows any number of dims for it) names no position of an ``nd``-dim array."""
    if index.size == 0 and nd is not None:
        return tuple(np.zeros(0, np.int64) for _ in range(nd))
    index = index.reshape(index.shape or (1,))
    grid = list(np.ix_(*[np.arange(n) for n in index.shape]))
    grid[d] = index
    return tuple(grid)


def _src_part(src, index):
    """The part of ``src`` that ``index`` covers (src may be larger along any dim)."""
    if index.size == 0:
        return np.zeros(0, src.dtype)
    src = src.reshape(src.shape or (1,))
    return src[tuple(slice(0, n) for n in (index.shape or (1,)))]


def _as_nd(x):
    return x.reshape(x.shape or (1,))


# ---- gather --------------------------------------------------------------------------------------------
def _gather_samples():
    rng = np.random.default_rng(3)
    x = S.rand(4, 7, 3)
    return [Sample((x, 1, rng.integers(0, 7, (4, 9, 3))), name="dim 1, repeated indices"),
            Sample((x, -1, rng.integers(0, 3, (2, 5, 2))), name="smaller index, dim -1"),
            Sample((S.rand(11, seed=1), 0, np.array([10, 0, 0, 3, 10])), name="1-d with duplicates"),
            Sample((x, 0, np.zeros((0, 7, 3), np.int64)), name="empty index", onnx=False),
            Sample((S.rand(*S.LARGE, seed=2), 1, rng.integers(0, 257, (300, 100))), name="large")]


def _gather_bad():
    x = S.rand(3, 4)
    return [BadInput((x, 1, np.array([[0, 4]])), {}, IndexError, "index"),
            BadInput((x, 1, np.array([[0, -1]])), {}, IndexError, "index"),
            BadInput((x, 2, np.array([[0]])), {}, IndexError, "dim"),
            BadInput((x, 1, np.array([[0.5]])), {}, TypeError, "index"),
            BadInput((x, 0, np.array([0])), {}, ValueError, "index")]


def _gather_onnx(ctx, op):
    d = single_axis(op.attr("dim"), max(op.args["x"].ndim, 1))
    return [ctx.node("GatherElements", [op.input("x"), op.input("index", np.int64)], axis=d)]


def _gather_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    x, dim, index = args[:3]
    zeros = g.new_zeros(*x.shape)
    return _OPS["scatter_add"](zeros, dim, index, g), None, None


@register_op("gather", meta=lambda x, dim, index: MetaArray(index.shape, x.dtype), flops=M.no_flops,
             samples=_gather_samples, torch=lambda torch, x, dim, index: torch.gather(x, dim, index),
             bad_inputs=_gather_bad, onnx=_gather_onnx, differentiable_backward=_gather_rule)
class GatherFunction(Function):
    """torch.gather: ``out[i][j][k] = x[i][index[i][j][k]][k]`` (dim 1); the gradient adds into x's shape."""

    @staticmethod
    def forward(ctx, x, dim, index):
        if not isinstance(index, np.ndarray) or index.dtype.kind not in "iu":
            check_index(index, 0, "index")  # the TypeError
        d = _dim_and_shapes("gather", x, dim, index)
        index = check_index(index, (x.shape or (1,))[d], "index")
        pos = _positions(index, d, max(x.ndim, 1))
        ctx.x_shape, ctx.pos = x.shape, pos
        ctx.save_for_backward(index)
        return _as_nd(x)[pos].reshape(index.shape)

    @staticmethod
    def backward(ctx, g):
        out = np.zeros(ctx.x_shape or (1,), g.dtype)
        if g.size:
            np.add.at(out, ctx.pos, _as_nd(g))  # in index order: deterministic
        return out.reshape(ctx.x_shape), None, None


# ---- scatter, scatter_add, scatter_reduce -------------------------------------------------------------------
def _scatter_samples():
    rng = np.random.default_rng(5)
    x = S.rand(5, 6)
    unique = np.stack([rng.permutation(5)[:4] for _ in range(3)], axis=1)  # (4, 3), no duplicates per column
    return [Sample((x, 0, unique, S.rand(4, 3, seed=1)), name="dim 0, smaller index"),
            Sample((S.rand(3, 4, 5, seed=2), -1, np.argsort(rng.uniform(size=(3, 4, 5)), -1)[..., :3],
                    S.rand(3, 4, 3, seed=3)), name="dim -1 permutation"),
            Sample((S.rand(9, seed=4), 0, np.array([8, 0, 2]), S.rand(5, seed=5)), grad=(0,),
                   name="1-d, larger src (torch's src gradient refuses a src larger than index)")]


def _scatter_add_samples():
    rng = np.random.default_rng(6)
    return [Sample((S.rand(5, 6), 0, rng.integers(0, 5, (7, 6)), S.rand(7, 6, seed=1)), name="duplicates"),
            Sample((S.rand(3, 4, 5, seed=2), 2, rng.integers(0, 5, (2, 4, 9)), S.rand(2, 4, 9, seed=3)),
                   name="dim 2, smaller index"),
            Sample((S.rand(6, seed=4), 0, np.array([0, 0, 0, 5]), S.rand(4, seed=5)), name="1-d"),
            Sample((S.rand(300, 40, seed=6), 0, rng.integers(0, 300, (500, 40)), S.rand(500, 40, seed=7)),
                   name="large")]


def _scatter_bad():
    x = S.rand(3, 4)
    return [BadInput((x, 0, np.array([[3, 0]]), S.rand(1, 2)), {}, IndexError, "index"),
            BadInput((x, 0, np.array([[-1, 0]]), S.rand(1, 2)), {}, IndexError, "index"),
            BadInput((x, 0, np.array([[0, 0]]), S.rand(1, 1)), {}, ValueError, "src"),
            BadInput((x, 3, np.array([[0]]), S.rand(1, 1)), {}, IndexError, "dim")]


def _scatter_meta(x, dim, index, src, *args, **kwargs):
    return MetaArray(x.shape, x.dtype)


def _src_for_onnx(ctx, op):
    src, index = op.args["src"], op.args["index"]
    value = op.input("src", op.out_dtype())
    if tuple(src.shape) == tuple(index.shape):
        return value
    n = index.ndim
    return ctx.node("Slice", [value, ctx.const(np.zeros(n, np.int64)), ctx.const(np.array(index.shape, np.int64)),
                              ctx.const(np.arange(n, dtype=np.int64))])


def _scatter_onnx(reduction):
    def mapping(ctx, op):
        d = single_axis(op.attr("dim"), max(op.args["x"].ndim, 1))
        attrs = {} if reduction == "none" else {"reduction": reduction}
        return [ctx.node("ScatterElements", [op.input("x"), op.input("index", np.int64), _src_for_onnx(ctx, op)],
                         axis=d, **attrs)]
    return mapping


class _ScatterBase(Function):
    @staticmethod
    def prepare(ctx, name, x, dim, index, src):
        d = _dim_and_shapes(name, x, dim, index, src)
        index = check_index(index, (x.shape or (1,))[d], "index")
        if src.dtype != x.dtype and not (x.dtype.kind == "f" and src.dtype.kind == "f"):
            raise TypeError(f"{name}(): src must have the input's dtype ({x.dtype}), got {src.dtype}")
        pos = _positions(index, d, max(x.ndim, 1))
        ctx.x_shape, ctx.src_shape, ctx.pos, ctx.index_shape = x.shape, src.shape, pos, index.shape or (1,)
        ctx.save_for_backward(index)
        return pos, _src_part(src, index).astype(x.dtype, copy=False), _as_nd(x).copy()

    @staticmethod
    def src_grad(ctx, g_at):
        """``g_at`` (the gradient at index's positions) in src's shape (zeros where index does not reach)."""
        out = np.zeros(ctx.src_shape or (1,), g_at.dtype)
        if g_at.size == 0:
            return out.reshape(ctx.src_shape)
        out[tuple(slice(0, n) for n in ctx.index_shape)] = g_at
        return out.reshape(ctx.src_shape)


def _scatter_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    x, dim, index, src = args[:4]
    gx = _OPS["scatter"](g, dim, index, g.new_zeros(*index.shape)) if ctx.needs_input_grad[0] else None
    gs = _pad_to(_OPS["gather"](g, dim, index), src.shape) if ctx.needs_input_grad[3] else None
    return gx, None, None, gs


def _pad_to(t, shape):
    """``t`` in the corner of zeros of ``shape`` (made of cat, so that it is differentiable again)."""
    from ..factories import cat
    if tuple(t.shape) == tuple(shape):
        return t
    if t.numel() == 0:  # an empty index (of any number of dims) reached nothing of src
        return t.new_zeros(*shape)
    for k, (have, want) in enumerate(zip(t.shape, shape)):
        if have < want:
            pad = t.new_zeros(*(t.shape[:k] + (want - have,) + t.shape[k + 1:]))
            t = cat([t, pad], dim=k)
    return t


@register_op("scatter", meta=_scatter_meta, flops=M.no_flops, samples=_scatter_samples,
             torch=lambda torch, x, dim, index, src: torch.scatter(x, dim, index, src), bad_inputs=_scatter_bad,
             onnx=_scatter_onnx("none"), differentiable_backward=_scatter_rule)
class ScatterFunction(_ScatterBase):
    """torch.scatter(x, dim, index, src): x with ``src``'s values written at ``index`` along dim (a duplicate
    index: the last write stays). Gradients: x's is g with the written positions zeroed, src's g at index."""

    @staticmethod
    def forward(ctx, x, dim, index, src):
        pos, part, out = _ScatterBase.prepare(ctx, "scatter", x, dim, index, src)
        out[pos] = part
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        g = _as_nd(g)
        gx = None
        if ctx.needs_input_grad[0]:
            gx = g.copy()
            gx[ctx.pos] = 0
            gx = gx.reshape(ctx.x_shape)
        gs = _ScatterBase.src_grad(ctx, g[ctx.pos]) if ctx.needs_input_grad[3] else None
        return gx, None, None, gs


def _scatter_add_rule(ctx, args, kwargs, g):
    from .registry import _OPS
    x, dim, index, src = args[:4]
    gs = _pad_to(_OPS["gather"](g, dim, index), src.shape) if ctx.needs_input_grad[3] else None
    return (g if ctx.needs_input_grad[0] else None), None, None, gs


@register_op("scatter_add", meta=_scatter_meta, flops=M.per_input_element(1), samples=_scatter_add_samples,
             torch=lambda torch, x, dim, index, src: torch.scatter_add(x, dim, index, src), bad_inputs=_scatter_bad,
             onnx=_scatter_onnx("add"), differentiable_backward=_scatter_add_rule)
class ScatterAddFunction(_ScatterBase):
    """torch.scatter_add: src's values added into x at index along dim, duplicates in index order."""

    @staticmethod
    def forward(ctx, x, dim, index, src):
        pos, part, out = _ScatterBase.prepare(ctx, "scatter_add", x, dim, index, src)
        np.add.at(out, pos, part)
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        gs = _ScatterBase.src_grad(ctx, _as_nd(g)[ctx.pos]) if ctx.needs_input_grad[3] else None
        return (g.copy() if ctx.needs_input_grad[0] else None), None, None, gs


def _scatter_reduce_samples():
    rng = np.random.default_rng(7)
    ties = rng.integers(-2, 3, (5, 4)).astype(np.float32)  # equal values: ties share amax/amin's gradient
    src = rng.integers(-2, 3, (8, 4)).astype(np.float32)
    with_zeros = np.where(rng.uniform(size=(8, 5)) < 0.25, 0, S.rand(8, 5, seed=2)).astype(np.float32)
    index = rng.integers(0, 5, (8, 4))
    index1 = rng.integers(0, 6, (3, 5))
    # prod: at most one zero per position (torch has no double backward for two zeros in one product; the
    # first-order gradient with several is in tests/test_torch_indexing_ops.py)
    first = np.array([[index1[r, c] not in index1[r, :c] for c in range(5)] for r in range(3)])
    one_zero = np.where(first & (with_zeros[:3, :5] == 0), 0, np.where(with_zeros[:3, :5] == 0, 1.5,
                                                                       with_zeros[:3, :5])).astype(np.float32)
    out = []
    for reduce in REDUCTIONS:
        needs18 = reduce in ("amax", "amin")
        s = np.where(src == 0, 1.5, src).astype(np.float32) if reduce == "prod" else src
        for include_self in (True, False):
            tag = f"{reduce}, include_self={include_self}"
            ok = not needs18 and reduce != "mean"
            why = "" if ok else (" (ONNX ScatterElements max/min: opset 18)" if needs18 else " (no ONNX mean)")
            out.append(Sample((ties, 0, index, s, reduce), {"include_self": include_self}, tag + why, onnx=ok))
        zs = one_zero if reduce == "prod" else with_zeros[:3, :5]
        out.append(Sample((S.rand(4, 6, seed=3), 1, index1, zs, reduce),
                          {}, f"{reduce}, dim 1, zeros in src" + ("" if not needs18 and reduce != "mean" else
                                                                  " (not in ONNX at opset 17)"),
                          onnx=not needs18 and reduce != "mean"))
    return out


def _scatter_reduce_bad():
    x = S.rand(3, 4)
    return [BadInput((x, 0, np.array([[0]]), S.rand(1, 1), "max"), {}, ValueError, "reduce"),
            BadInput((x, 0, np.array([[5]]), S.rand(1, 1), "sum"), {}, IndexError, "index")]


def _scatter_reduce_onnx(ctx, op):
    """ScatterElements with reduction; include_self=False first writes the reduction's identity (sum, prod) or
    src itself (amax, amin: a max over copies of src is their max) at the written positions."""
    reduce, include_self = op.attr("reduce"), op.attr("include_self", True)
    if reduce == "mean" or (reduce in ("amax", "amin") and ctx.opset < 18):
        raise op.unsupported(f"scatter_reduce {reduce!r} at opset {ctx.opset} (max/min need opset 18, mean is not "
                             "mapped)")
    d = single_axis(op.attr("dim"), max(op.args["x"].ndim, 1))
    x, index, src = op.input("x"), op.input("index", np.int64), _src_for_onnx(ctx, op)
    if not include_self:
        if reduce in ("sum", "prod"):
            ident = ctx.const(np.asarray(0 if reduce == "sum" else 1, op.out_dtype()))
            fill = ctx.node("Expand", [ident, ctx.node("Shape", [index])])
        else:
            fill = src
        x = ctx.node("ScatterElements", [x, index, fill], axis=d)
    onnx_reduce = {"sum": "add", "prod": "mul", "amax": "max", "amin": "min"}[reduce]
    return [ctx.node("ScatterElements", [x, index, src], axis=d, reduction=onnx_reduce)]


def _check_reduce(reduce):
    if reduce not in REDUCTIONS:
        raise ValueError(f"scatter_reduce(): reduce must be one of {REDUCTIONS}, got {reduce!r}")


def _scatter_reduce_meta(x, dim, index, src, reduce, include_self=True):
    _check_reduce(reduce)
    check_bool(include_self, "scatter_reduce(): include_self")
    return MetaArray(x.shape, x.dtype)


@register_op("scatter_reduce", meta=_scatter_reduce_meta, flops=M.per_input_element(1),
             samples=_scatter_reduce_samples,
             torch=lambda torch, x, dim, index, src, reduce, include_self=True: torch.scatter_reduce(
                 x, dim, index, src, reduce, include_self=include_self),
             bad_inputs=_scatter_reduce_bad, onnx=_scatter_reduce_onnx, tol=(1e-5, 2e-5))
class ScatterReduceFunction(_ScatterBase):
    """torch.scatter_reduce: src's values reduced into x at index along dim ('sum', 'prod', 'mean', 'amax', 'amin';
    include_self=False leaves x's value out where src writes). Gradients as torch's: amax/amin share g evenly among
    the values equal to the result, prod gives each factor the product of the others (zeros included), mean g over
    the count."""

    @staticmethod
    def forward(ctx, x, dim, index, src, reduce, include_self=True):
        _check_reduce(reduce)
        include_self = check_bool(include_self, "scatter_reduce(): include_self")  # was taken by truthiness
        pos, part, out = _ScatterBase.prepare(ctx, "scatter_reduce", x, dim, index, src)
        touched = np.zeros(out.shape, bool)
        touched[pos] = True
        if not include_self:
            ident = {"sum": 0, "mean": 0, "prod": 1}.get(reduce)
            if ident is None:
                big = np.inf if out.dtype.kind == "f" else np.iinfo(out.dtype).max
                ident = -big if reduce == "amax" else big
            out[touched] = ident
        ufunc = {"sum": np.add, "mean": np.add, "prod": np.multiply, "amax": np.maximum, "amin": np.minimum}[reduce]
        ufunc.at(out, pos, part)
        count = None
        if reduce == "mean":
            count = np.full(out.shape, 1 if include_self else 0, np.int64)
            np.add.at(count, pos, 1)
            count = np.maximum(count, 1)
            out = out / count if out.dtype.kind == "f" else out // count
            out = out.astype(x.dtype, copy=False)
        ctx.reduce, ctx.include_self, ctx.count, ctx.touched = reduce, include_self, count, touched
        ctx.parts = (_as_nd(x), part, out) if reduce in ("amax", "amin", "prod") else None
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        g = _as_nd(g)
        pos, reduce, keep_self = ctx.pos, ctx.reduce, ctx.include_self
        self_in = np.ones(g.shape, bool) if keep_self else ~ctx.touched  # where x's value took part
        if reduce in ("sum", "mean"):
            scale = g / ctx.count if reduce == "mean" else g
            gx, gs = np.where(self_in, scale, 0), scale[pos]
        elif reduce in ("amax", "amin"):
            x, part, out = ctx.parts
            x_hit = self_in & (x == out)
            s_hit = part == out[pos]
            # torch counts x's value among the ties where it equals the result even with include_self=False
            n = (x == out).astype(g.dtype)
            np.add.at(n, pos, s_hit.astype(g.dtype))
            share = g / np.maximum(n, 1)
            gx, gs = np.where(x_hit, share, 0), np.where(s_hit, share[pos], 0)
        else:
            gx, gs = _prod_grads(g, ctx.parts, pos, self_in, keep_self, ctx.touched)
        gx = gx.astype(g.dtype, copy=False).reshape(ctx.x_shape) if ctx.needs_input_grad[0] else None
        gs = _ScatterBase.src_grad(ctx, gs.astype(g.dtype, copy=False)) if ctx.needs_input_grad[3] else None
        return gx, None, None, gs, None, None


def _prod_grads(g, parts, pos, self_in, keep_self, touched):
    """torch's scatter_reduce 'prod' backward, its NaN / inf results included: x's gradient g * r / x with x's
    zeros taken as 1 (r the reduction of that masked x); a src factor's g * out / src, but for the only zero src
    factor of a position g times the reduction with that factor taken as 1 (0 for two or more zero factors)."""
    x, part, out = parts
    dt = g.dtype
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        masked = np.where(x == 0, 1, x).astype(dt)
        red = masked.copy() if keep_self else np.where(touched, 1, masked).astype(dt)
        np.multiply.at(red, pos, part.astype(dt))
        gx = np.where(self_in, g * red / masked, 0)
        src_zero = part == 0
        gs = (g * out)[pos] / np.where(src_zero, 1, part)
        if src_zero.any():
            n = np.zeros(out.shape, np.int64)
            np.add.at(n, pos, src_zero.astype(np.int64))
            single = src_zero & (n[pos] == 1)
            if single.any():
                red = (x.copy() if keep_self else np.where(touched, 1, x)).astype(dt)
                np.multiply.at(red, pos, np.where(single, 1, part).astype(dt))
                gs = np.where(single, (g * red)[pos], gs)
    return gx, gs


# ---- index_select -------------------------------------------------------------------------------------------
def _index_select_samples():
    x = S.rand(5, 6, 3)
    return [Sample((x, 1, np.array([5, 0, 0, 2, 5, 1, 3])), name="repeated"),
            Sample((x, -1, np.array([2])), name="one, dim -1"),
            Sample((S.rand(7, seed=1), 0, np.array([6, 6, 0])), name="1-d"),
            Sample((S.rand(*S.LARGE, seed=2), 0, np.random.default_rng(0).integers(0, 300, 400)), name="large")]


def _index_select_meta(x, dim, index):
    d = single_axis(dim, max(x.ndim, 1), "index_select(): dim")
    shape = list(x.shape or (1,))
    shape[d] = index.size
    return MetaArray(tuple(shape) if x.ndim else (), x.dtype)


def _index_select_rule(ctx, args, kwargs, g):
    from ..tensor import Tensor
    x, dim, index = args[:3]
    d = single_axis(dim, max(x.ndim, 1))
    idx = index._data if isinstance(index, Tensor) else np.asarray(index)
    shape = [1] * max(x.ndim, 1)
    shape[d] = idx.size
    full = np.broadcast_to(idx.reshape(shape), g.shape or (1,))
    return _pad_to_full(g, x, d, full), None, None


def _pad_to_full(g, x, d, full):
    from ..tensor import Tensor
    from .registry import _OPS
    zeros = g.new_zeros(*(x.shape or (1,)))
    out = _OPS["scatter_add"](zeros, d, Tensor._wrap_exact(np.ascontiguousarray(full)), g.reshape(full.shape))
    return out.reshape(x.shape)


@register_op("index_select", meta=_index_select_meta, flops=M.no_flops, samples=_index_select_samples,
             torch=lambda torch, x, dim, index: torch.index_select(x, dim, index),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), 1, np.array([4])), {}, IndexError, "index"),
                                 BadInput((S.rand(3, 4), 1, np.array([-1])), {}, IndexError, "index"),
                                 BadInput((S.rand(3, 4), 1, np.array([[0]])), {}, ValueError, "index"),
                                 BadInput((S.rand(3, 4), 2, np.array([0])), {}, IndexError, "dim")],
             onnx=lambda ctx, op: [ctx.node("Gather", [op.input("x"), op.input("index", np.int64)],
                                            axis=single_axis(op.attr("dim"), max(op.args["x"].ndim, 1)))],
             differentiable_backward=_index_select_rule)
class IndexSelectFunction(Function):
    """torch.index_select: the entries ``index`` (1-d) of x along dim; the gradient adds repeated ones in order."""

    @staticmethod
    def forward(ctx, x, dim, index):
        d = single_axis(dim, max(x.ndim, 1), "index_select(): dim")
        if isinstance(index, np.ndarray) and index.ndim > 1:
            raise ValueError(f"index_select(): index must be 0-d or 1-d, got {index.ndim} dims")
        index = check_index(index, (x.shape or (1,))[d], "index").reshape(-1)
        ctx.x_shape, ctx.d = x.shape, d
        ctx.save_for_backward(index)
        out = np.take(_as_nd(x), index, axis=d)
        return out.reshape(()) if x.ndim == 0 else out

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        out = np.zeros(ctx.x_shape or (1,), g.dtype)
        np.add.at(np.moveaxis(out, ctx.d, 0), index, np.moveaxis(_as_nd(g), ctx.d, 0))
        return out.reshape(ctx.x_shape), None, None


for _fn in (GatherFunction, ScatterFunction, ScatterAddFunction, ScatterReduceFunction, IndexSelectFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype: float64 runs the same Function


def _scatter_reduce_rule(ctx, args, kwargs, g):
    """scatter_reduce's gradient with Tensor ops. sum / mean: g (over the count) where x took part, g at index for
    src; amax / amin: g shared by the values equal to the result (locally constant shares); prod: g times the
    product of the other factors, found as exclusive prefix and suffix cumprods over each position's factors
    (no division: exact at zeros)."""
    from ..tensor import Tensor
    from ._double_backward import _arg, _flat
    from .registry import _OPS
    x, dim, index, src = args[:4]
    reduce, keep_self = _arg(args, kwargs, 4, "reduce"), _arg(args, kwargs, 5, "include_self", True)
    idx = index._data if isinstance(index, Tensor) else np.asarray(index)
    nd = max(x.ndim, 1)
    d = single_axis(dim, nd)
    if idx.size == 0:  # nothing written: the result is x
        return (g if ctx.needs_input_grad[0] else None), None, None, \
            (src.new_zeros(*src.shape) if ctx.needs_input_grad[3] else None), None, None
    pos = _positions(idx, d)
    xs = tuple(x.shape or (1,))
    touched = np.zeros(xs, bool)
    touched[pos] = True
    self_in = np.ones(xs, bool) if keep_self else ~touched
    gn, xn = g.reshape(xs), x.reshape(xs)
    part = src.reshape(tuple(src.shape or (1,)))[tuple(slice(0, n) for n in (idx.shape or (1,)))]
    it = Tensor._wrap_exact(np.ascontiguousarray(idx.reshape(idx.shape or (1,))))
    if reduce in ("sum", "mean"):
        if reduce == "mean":
            count = np.full(xs, 1 if keep_self else 0, np.int64)
            np.add.at(count, pos, 1)
            gn = gn / np.maximum(count, 1).astype(g._data.dtype)
        gx, gs = _OPS["where"](self_in, gn, 0.0), _OPS["gather"](gn, d, it)
    elif reduce in ("amax", "amin"):
        xv, pv = xn._data, part._data
        out = ScatterReduceFunction.forward(_Ctx(), xv, d, idx, pv, reduce, keep_self)
        x_hit, s_hit = self_in & (xv == out), pv == out[pos]
        n = (xv == out).astype(g._data.dtype)
        np.add.at(n, pos, s_hit.astype(g._data.dtype))
        share = gn / np.maximum(n, 1)
        gx, gs = _OPS["where"](x_hit, share, 0.0), _OPS["where"](s_hit, _OPS["gather"](share, d, it), 0.0)
    else:
        ones = Tensor._wrap_exact(np.ones(xs, g._data.dtype))
        prod_src = _OPS["scatter_reduce"](ones, d, it, part, "prod")  # 1 where nothing is written
        # include_self=False: torch's gradient of x is a function of x (with a zero derivative), as is this one
        gx = _OPS["where"](self_in, gn * prod_src, 0.0) if keep_self else \
            _OPS["where"](touched, _flat(xn, np.zeros_like), gn)
        gs = _OPS["gather"](gn, d, it) * _others_product(xn if keep_self else None, part, pos, xs)
    gx = gx.reshape(x.shape) if ctx.needs_input_grad[0] else None
    gs = _pad_to(gs, tuple(src.shape or (1,))).reshape(src.shape) if ctx.needs_input_grad[3] else None
    return gx, None, None, gs, None, None


class _Ctx:
    def save_for_backward(self, *a):
        pass


def _others_product(x, part, pos, xs):
    """For each src factor, the product of the other factors of its position (and of x there, if given)."""
    from ..tensor import Tensor
    from .._torch_indexing_shape import flip
    from ..factories import cat
    from .registry import _OPS
    target = np.ravel_multi_index(tuple(np.broadcast_to(p, part.shape) for p in pos), xs).reshape(-1)
    order = np.argsort(target, kind="stable")
    groups, start, counts = np.unique(target[order], return_index=True, return_counts=True)
    width = int(counts.max())
    slot = np.arange(order.size) - np.repeat(start, counts)  # place of each sorted factor in its group's row
    row = np.repeat(np.arange(groups.size), counts)
    take = np.zeros((groups.size, width), np.int64)
    valid = np.zeros((groups.size, width), bool)
    take[row, slot], valid[row, slot] = order, True
    wrap = Tensor._wrap_exact
    vals = _OPS["where"](valid, _OPS["index_select"](part.reshape(-1), 0, wrap(take.reshape(-1))).reshape(
        take.shape), 1.0)
    one = vals[:, :1] * 0 + 1
    before = cat([one, _OPS["cumprod"](vals, 1)[:, :-1]], dim=1)
    after = flip(cat([one, _OPS["cumprod"](flip(vals, (1,)), 1)[:, :-1]], dim=1), (1,))
    others = before * after
    if x is not None:
        others = others * _OPS["index_select"](x.reshape(-1), 0, wrap(groups)).reshape(groups.size, 1)
    at = np.empty(order.size, np.int64)
    at[order] = row * width + slot
    return _OPS["index_select"](others.reshape(-1), 0, wrap(at)).reshape(part.shape)


ScatterReduceFunction.op.differentiable_backward = _scatter_reduce_rule
