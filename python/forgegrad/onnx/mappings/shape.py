"""Shape ops: Reshape Permute Expand GetItem Cat Stack Clone.

None of them bakes a dynamic size (batch, sequence) into the graph: a Reshape target uses -1 / 0
for dynamic dims (or computes them from the input shapes), Expand uses 1 where the input already
has the size, and slice bounds are INT64_MAX/negative or computed at run time."""
from __future__ import annotations

import numpy as np

from ...ops import shape as S
from ...ops._util import normalize_axis
from ...tensor import Tensor
from .._context import INT64_MAX, INT64_MIN, scalar_of
from .._symbolic import Dyn
from . import register


@register(S.ReshapeFunction)
def map_reshape(ctx, op):
    x = op.input("a")
    in_dims, out_dims = op.in_dims("a"), op.out_dims(0)
    if in_dims == out_dims:  # e.g. Flatten of an already flat (batch, features) input
        return [x]
    dyn = [i for i, d in enumerate(out_dims) if isinstance(d, Dyn)]
    target = list(out_dims)
    has_zero = any(d == 0 for d in out_dims if not isinstance(d, Dyn))
    if not has_zero:  # a static 0 would mean "copy" in ONNX's Reshape
        # a dynamic dim that sits at the same index with the same size in the input: 0 copies it
        for i in list(dyn):
            if len(dyn) > 1 and i < len(in_dims) and in_dims[i] == out_dims[i]:
                target[i] = 0
                dyn.remove(i)
        if dyn:  # the last remaining dynamic dim is inferred from the element count
            target[dyn[-1]] = -1
    shape = ctx.shape_tensor(target, what="reshape target dim")
    return [ctx.node("Reshape", [x, shape])]


@register(S.PermuteFunction)
def map_permute(ctx, op):
    perm = normalize_axis(tuple(op.attr("dims")), op.args["a"].ndim)
    if list(perm) == list(range(len(perm))):
        return [op.input("a")]
    return [ctx.node("Transpose", [op.input("a")], perm=list(perm))]


@register(S.ExpandFunction)
def map_expand(ctx, op):
    in_dims, out_dims = op.in_dims("a"), op.out_dims(0)
    lead = len(out_dims) - len(in_dims)
    target = []
    for i, d in enumerate(out_dims):
        j = i - lead
        # ONNX Expand broadcasts: 1 keeps the input's own size, static or dynamic
        target.append(1 if j >= 0 and in_dims[j] == d else d)
    if all(t == 1 for t in target) and lead == 0:
        return [op.input("a")]
    return [ctx.node("Expand", [op.input("a"), ctx.shape_tensor(target, what="expand size")])]


@register(S.CloneFunction)
def map_clone(ctx, op):
    return [op.input("a")]


@register(S.CatFunction)
def map_cat(ctx, op):
    ins = op.inputs("arrays", op.out_dtype())
    (axis,) = normalize_axis(op.attr("dim"), op.outputs[0].ndim)
    return [ins[0] if len(ins) == 1 else ctx.node("Concat", ins, axis=axis)]


@register(S.StackFunction)
def map_stack(ctx, op):
    (axis,) = normalize_axis(op.attr("dim"), op.outputs[0].ndim)
    ins = [ctx.unsqueeze(v, [axis]) for v in op.inputs("arrays", op.out_dtype())]
    return [ins[0] if len(ins) == 1 else ctx.node("Concat", ins, axis=axis)]


# ---- indexing -----------------------------------------------------------------------------------
def _kind(k):
    if k is None:
        return "none"
    if k is Ellipsis:
        return "ellipsis"
    if isinstance(k, slice):
        return "slice"
    if isinstance(k, (bool, np.bool_)):
        return "bool"
    if isinstance(k, (int, np.integer)):
        return "int"
    arr = k._data if isinstance(k, Tensor) else np.asarray(k)
    if arr.dtype == bool:
        return "bool"
    if arr.dtype.kind in "iu":
        return "array"
    return "bad"


def _as_tuple(key):
    return key if isinstance(key, tuple) else (key,)


def _check_constant_index(ctx, op, k, kb, kc) -> None:
    """An index array made in numpy inside forward becomes a constant of the graph: refused, naming the dynamic
    axes, where the traces at other sizes indexed with another array (a gather index built for the length, as
    DeBERTa's eager relative positions): baked in, it would hold at the example's sizes only and fail or mislead
    at others."""
    a = np.asarray(k)
    others = [np.asarray(x) for x in (kb, kc) if x is not None]
    if all(o.shape == a.shape and np.array_equal(o, a) for o in others):
        return
    from .._context import dims_of
    dims = dims_of(a.shape, others[0].shape, others[-1].shape)
    raise op.unsupported(
        f"an index array made in numpy inside forward depends on the input sizes: {ctx.size_dependence(dims)}. "
        "As a constant of the graph it would hold at the example's sizes only; compute it with Tensor ops on the "
        "inputs while tracing (forgegrad.grad_mode.recorder() is set during an export; see BertModel.positions_of), "
        "or pass dynamic_axes={} for a static graph")


@register(S.GetItemFunction)
def map_getitem(ctx, op):
    ka, kb, kc = _as_tuple(op.attr("key")), _as_tuple(op.attr_b("key")), _as_tuple(op.attr_c("key"))
    if len(kb) != len(ka):
        kb = ka
    if len(kc) != len(ka):
        kc = ka
    kinds = [_kind(k) for k in ka]
    if "bool" in kinds:
        raise op.unsupported("boolean-mask indexing has a data-dependent output shape and is not exported; "
                             "use forgegrad.where or multiply by the mask")
    if "bad" in kinds:
        raise op.unsupported(f"unsupported index types {[type(k).__name__ for k in ka]}")
    n_arr = kinds.count("array")
    if n_arr > 1 or (n_arr and "int" in kinds):
        raise op.unsupported(
            "advanced indexing with more than one index array (or an index array together with integer "
            "indices) follows numpy's broadcasting/transposition rules and is not exported; index one "
            "axis at a time")
    if kinds.count("ellipsis") > 1:
        raise op.unsupported("an index can only have a single ellipsis ('...')")

    x_t = op.args["a"]
    ndim = x_t.ndim
    consumed = sum(1 for k in kinds if k in ("slice", "int", "array"))
    if consumed > ndim:
        raise op.unsupported(f"too many indices for a tensor of dimension {ndim}")
    # expand '...' (or the implicit trailing one) into full slices
    items = []
    full = (slice(None), slice(None), slice(None), "slice")
    for k, kbv, kcv, kind in zip(ka, kb, kc, kinds):
        if kind == "ellipsis":
            items += [full] * (ndim - consumed)
        else:
            items.append((k, kbv, kcv, kind))
    if "ellipsis" not in kinds:
        items += [full] * (ndim - consumed)

    starts, ends, axes, steps = [], [], [], []
    squeeze_axes, none_pos = [], []
    gather = None  # (axis in the post-squeeze tensor, index item)
    in_axis = out_pos = 0
    for k, kbv, kcv, kind in items:
        if kind == "none":
            none_pos.append(out_pos)
            out_pos += 1
            continue
        if kind == "slice":
            if k != slice(None):
                step = 1 if k.step is None else k.step
                if step == 0:
                    raise op.unsupported("slice step cannot be zero")
                kbs = kbv if isinstance(kbv, slice) else k
                kcs = kcv if isinstance(kcv, slice) else k
                start = scalar_of(k.start, kbs.start, kcs.start)
                stop = scalar_of(k.stop, kbs.stop, kcs.stop)
                if isinstance(k.step, int) and (kbs.step != k.step or kcs.step != k.step):
                    raise op.unsupported("a slice step that depends on the input sizes is not exported")
                starts.append((0 if step > 0 else INT64_MAX) if start is None else start)
                ends.append((INT64_MAX if step > 0 else INT64_MIN) if stop is None else stop)
                axes.append(in_axis)
                steps.append(step)
            in_axis += 1
            out_pos += 1
        elif kind == "int":
            i = scalar_of(int(k), kbv, kcv)
            if isinstance(i, Dyn):
                starts.append(i)
                ends.append(i.shifted(1))
            else:
                starts.append(i)
                ends.append(INT64_MAX if i == -1 else i + 1)
            axes.append(in_axis)
            steps.append(1)
            squeeze_axes.append(in_axis)
            in_axis += 1
        else:  # index array
            gather = (in_axis, k)
            kb_arr, kc_arr = (v if isinstance(v, (Tensor, np.ndarray, list, tuple)) else None for v in (kbv, kcv))
            idx_ndim = (k._data if isinstance(k, Tensor) else np.asarray(k)).ndim
            in_axis += 1
            out_pos += idx_ndim

    x = op.input("a")
    if axes:
        x = ctx.node("Slice", [x, ctx.shape_tensor(starts, "slice start"), ctx.shape_tensor(ends, "slice end"),
                               ctx.ints(axes), ctx.ints(steps)])
    if squeeze_axes:
        x = ctx.squeeze(x, squeeze_axes)
    if gather is not None:
        axis, k = gather
        if isinstance(k, Tensor):  # computed by traced ops, or a constant checked against the other traces
            idx = op.exporter.value_for(k, kb_arr, op, np.int64, "key", kc_arr)
        else:
            _check_constant_index(ctx, op, k, kb_arr, kc_arr)
            idx = ctx.const(np.asarray(k, dtype=np.int64))
        x = ctx.node("Gather", [x, idx], axis=axis)  # negative indices are allowed from opset 11
    if none_pos:
        x = ctx.unsqueeze(x, none_pos)
    return [x]  # x[...] / x[:] emit no node at all
