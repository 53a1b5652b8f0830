"""Scaled dot-product attention: ``softmax(q k^T * scale + mask) v`` with torch's semantics.

query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev); the batch axes broadcast
(with ``enable_gqa`` the head axis -3 of key/value may divide query's, each key/value head serving
Hq/Hkv consecutive query heads, as torch's repeat_interleave). ``attn_mask``: bool (True = takes
part) or float (added to the scores), broadcastable to (..., L, S); ``is_causal``: query i attends
to keys j <= i (top-left aligned, as torch). A row with no key left gives 0 (torch's result too).
``softcap`` (keyword, forgegrad's own; Gemma 2's attn_logit_softcapping): the scaled scores s become
softcap * tanh(s / softcap) before the mask, forward and backward on the fused kernels.

The arithmetic is in the fused C++ kernels of :mod:`forgegrad.kernels.attention` (no (L, S) matrix
stored) and, for dropout and a float mask's gradient, :mod:`forgegrad.ops._attention_math` (composed
from the GEMM and softmax kernels); this module holds the argument checks (shared with the meta
device), the record and the ONNX mapping.
"""
from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool, check_float
from ..autograd import Function
from ..devices import MetaArray
from ..kernels import attention as _KA
from . import _attention_math as AM
from . import _samples as S
from ._util import unbroadcast
from .registry import BadInput, Sample, register_op

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)  # float64 runs the composed path (ops._attention_math) in numpy


# ---- arguments ----------------------------------------------------------------------------------------
def _plan(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """Check the arguments (arrays or MetaArrays) like torch; returns the normalised scalars and the
    output's batch shape: (dropout_p, is_causal, scale, groups, batch, L, S, Ev)."""
    for a, name in ((q, "query"), (k, "key"), (v, "value")):
        if a.dtype != _F32 and a.dtype != _F64:
            raise TypeError(f"scaled_dot_product_attention: {name} must be float32 or float64, got {a.dtype}")
        if a.dtype != q.dtype:  # torch: no promotion between query, key and value
            raise RuntimeError(f"scaled_dot_product_attention: expected query, key and value to have the same "
                               f"dtype, got query {q.dtype}, {name} {a.dtype}")
        if a.ndim < 2:
            raise ValueError(f"scaled_dot_product_attention: {name} must have at least 2 dimensions "
                             f"(..., sequence, features), got shape {tuple(a.shape)}")
    dropout_p = check_float(dropout_p, "scaled_dot_product_attention: dropout_p", low=0.0, high=1.0)
    is_causal = check_bool(is_causal, "scaled_dot_product_attention: is_causal")
    enable_gqa = check_bool(enable_gqa, "scaled_dot_product_attention: enable_gqa")
    L, E = q.shape[-2:]
    S_, Ek = k.shape[-2:]
    if Ek != E:
        raise ValueError(f"scaled_dot_product_attention: key's last dimension ({Ek}) must equal query's "
                         f"head dimension E={E} (query {tuple(q.shape)}, key {tuple(k.shape)})")
    if v.shape[-2] != S_:
        raise ValueError(f"scaled_dot_product_attention: value must have key's sequence length S={S_} in "
                         f"dimension -2 (key {tuple(k.shape)}, value {tuple(v.shape)})")
    groups = 1
    kb, vb = tuple(k.shape[:-2]), tuple(v.shape[:-2])
    if enable_gqa and q.ndim >= 3 and k.ndim >= 3 and v.ndim >= 3:
        hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
        if hk != hv:
            raise ValueError(f"scaled_dot_product_attention: key and value must have the same number of heads "
                             f"(dimension -3) with enable_gqa, got {hk} and {hv}")
        if hk == 0 or hq % hk:
            raise ValueError(f"scaled_dot_product_attention: with enable_gqa the query heads ({hq}, dimension -3) "
                             f"must be a multiple of key/value's ({hk})")
        groups = hq // hk
        kb, vb = kb[:-1] + (hq,), vb[:-1] + (hq,)
    try:
        batch = tuple(np.broadcast_shapes(tuple(q.shape[:-2]), kb, vb))
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: the batch dimensions of query {tuple(q.shape)}, key "
                         f"{tuple(k.shape)} and value {tuple(v.shape)} do not broadcast") from None
    if scale is not None:
        scale = check_float(scale, "scaled_dot_product_attention: scale")
    else:
        scale = 1.0 / math.sqrt(E) if E else 1.0
    if attn_mask is not None:
        if not isinstance(attn_mask, (np.ndarray, MetaArray)):
            raise TypeError(f"scaled_dot_product_attention: attn_mask must be a Tensor or None, got "
                            f"{type(attn_mask).__name__}")
        if attn_mask.dtype != np.bool_ and attn_mask.dtype != q.dtype:
            raise TypeError(f"scaled_dot_product_attention: attn_mask must be bool (True = takes part) or "
                            f"{q.dtype} as the query (added to the scores), got {attn_mask.dtype}")
        if is_causal:
            raise ValueError("scaled_dot_product_attention: attn_mask must be None when is_causal=True "
                             "(pass one or the other, as torch)")
        target = batch + (L, S_)
        try:
            ok = tuple(np.broadcast_shapes(tuple(attn_mask.shape), target)) == target
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {tuple(attn_mask.shape)} does not "
                             f"broadcast to the attention shape {target} (..., L, S)")
    return dropout_p, is_causal, scale, groups, batch, L, S_, v.shape[-1]


def _softcap(softcap):
    """softcap as a float (None: no cap); a clear error for anything but a finite number > 0."""
    return _KA.check_softcap(softcap, "scaled_dot_product_attention: softcap")


def _expand_kv(a, groups, batch):
    """key/value broadcast to batch + own matrix shape (heads repeated for grouped-query attention)."""
    if groups > 1:
        a = np.repeat(a, groups, axis=-3)
    return a


def _reduce_kv(g, shape, groups):
    """Gradient of an expanded key/value back to its own shape."""
    if groups > 1:
        g = unbroadcast(g, g.shape[:-3] + (shape[-3] * groups,) + g.shape[-2:])
        g = g.reshape(g.shape[:-3] + (shape[-3], groups) + g.shape[-2:]).sum(axis=-3)
    return unbroadcast(g, shape)


def _as_stack(a, batch):
    """a broadcast to batch + its matrix shape, as an (N, R, C) C-contiguous float32 array."""
    full = np.broadcast_to(a, batch + a.shape[-2:])
    return np.ascontiguousarray(full).reshape((-1,) + a.shape[-2:])


# ---- the op ---------------------------------------------------------------------------------------------
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                  enable_gqa=False, *, softcap=None):
    """``torch.nn.functional.scaled_dot_product_attention``: softmax(q k^T * scale + mask) @ v.

    ``dropout_p`` > 0 drops attention weights (with forgegrad's generator, ``forgegrad.manual_seed``)
    whenever it is given, as torch's function does: layers pass ``dropout_p`` only in training.
    ``softcap`` (forgegrad's own, keyword only; Gemma 2's attn_logit_softcapping): the scaled scores s
    become softcap * tanh(s / softcap) before the mask; a finite number > 0, or None for none."""
    kw = {} if softcap is None else {"softcap": softcap}  # an uncapped call records torch's arguments only
    return ScaledDotProductAttentionFunction.op(query, key, value, attn_mask, dropout_p=dropout_p,
                                                is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, **kw)


def _meta(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False, softcap=None):
    _, _, _, _, batch, L, _, ev = _plan(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    _softcap(softcap)
    return MetaArray(batch + (L, ev), q.dtype)


def _flops(out, inputs, kwargs):
    q, k = inputs[0], inputs[1]
    n_rows = out.size // max(out.shape[-1], 1)  # batch * L
    s_len, e, ev = k.shape[-2], q.shape[-1], out.shape[-1]
    cap = 3 * n_rows * s_len if kwargs.get("softcap") is not None else 0  # divide, tanh, multiply
    return 2 * n_rows * s_len * (e + ev) + 5 * n_rows * s_len + cap  # two products, softmax


def _torch(torch, q, k, v, attn_mask=None, softcap=None, **kwargs):
    if softcap is None:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, **kwargs)
    return _torch_softcapped(torch, q, k, v, attn_mask, softcap, **kwargs)


def _torch_softcapped(torch, q, k, v, attn_mask, softcap, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    """The soft-capped attention composed in torch (transformers' Gemma 2 eager attention): scores * scale,
    softcap * tanh(. / softcap), the mask, softmax, @ v. No dropout; no row may lose every key."""
    assert dropout_p == 0.0, "the soft-capped torch reference has no dropout"
    if enable_gqa and k.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
        v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q * scale) @ k.transpose(-1, -2)
    s = torch.tanh(s / softcap) * softcap
    L, S_ = q.shape[-2], k.shape[-2]
    if is_causal:
        s = s.masked_fill(~torch.ones(L, S_, dtype=torch.bool).tril(), -math.inf)
    elif attn_mask is not None and attn_mask.dtype == torch.bool:
        s = s.masked_fill(~attn_mask, -math.inf)
    elif attn_mask is not None:
        s = s + attn_mask
    return torch.softmax(s, dim=-1) @ v


def _samples():
    r = S.rand
    causal_odd = dict(is_causal=True)
    bool_mask = np.random.default_rng(5).uniform(size=(7, 9)) > 0.3
    bool_mask[2, :] = False  # a row with no key: output and gradients 0, as torch
    cap_mask = np.random.default_rng(6).uniform(size=(2, 1, 9, 67)) > 0.3
    cap_mask[..., 0] = True  # every row keeps a key (the composed torch reference gives NaN otherwise)
    return [
        Sample((r(2, 3, 5, 16), r(2, 3, 9, 16, seed=1), r(2, 3, 9, 16, seed=2), None), name="no mask, E=16"),
        Sample((r(2, 2, 7, 40), r(2, 2, 7, 40, seed=1), r(2, 2, 7, 24, seed=2), None), causal_odd,
               "causal, E=40, Ev=24"),
        Sample((r(1, 2, 7, 64), r(1, 2, 9, 64, seed=1), r(1, 2, 9, 64, seed=2), bool_mask), name="bool mask, L!=S"),
        Sample((r(2, 1, 6, 16), r(2, 1, 10, 16, seed=1), r(2, 1, 10, 8, seed=2), r(2, 1, 6, 10, seed=3)),
               {"scale": 0.3}, "float mask, custom scale"),
        Sample((r(3, 1, 128), r(3, 1, 128, seed=1), r(3, 1, 128, seed=2), None), causal_odd, "T=1, E=128"),
        Sample((r(1, 2, 70, 64), r(1, 2, 70, 64, seed=1), r(1, 2, 70, 64, seed=2), None), causal_odd,
               "causal, T=70 (not a multiple of a tile)"),
        Sample((r(2, 4, 5, 16), r(2, 2, 6, 16, seed=1), r(2, 2, 6, 16, seed=2), r(1, 6, seed=3)),
               {"enable_gqa": True}, "grouped-query heads, key-padding float mask", grad=(0, 1, 2)),
        Sample((r(2, 3, 67, 24), r(2, 3, 67, 24, seed=1), r(2, 3, 67, 24, seed=2), r(2, 1, 67, 67, seed=3)),
               name="float mask per batch, no mask gradient (fused kernel)", grad=(0, 1, 2)),
        Sample((r(2, 3, 8), r(1, 5, 8, seed=1), r(5, 8, seed=2), None), name="broadcast batch"),
        # soft-capped scores (Gemma 2): q large enough that the cap bends them
        Sample((r(2, 2, 70, 40) * 4, r(2, 2, 70, 40, seed=1) * 4, r(2, 2, 70, 24, seed=2), None),
               dict(is_causal=True, softcap=5.0), "softcap, causal, T=70, E=40"),
        Sample((r(1, 2, 1, 64) * 4, r(1, 2, 1, 64, seed=1) * 4, r(1, 2, 1, 64, seed=2), None),
               dict(is_causal=True, softcap=3.0), "softcap, T=1, E=64"),
        Sample((r(2, 4, 9, 16) * 4, r(2, 2, 67, 16, seed=1) * 4, r(2, 2, 67, 16, seed=2), cap_mask),
               dict(enable_gqa=True, softcap=2.0, scale=0.3), "softcap, grouped-query heads, bool mask, L!=S"),
        Sample((r(2, 1, 6, 16) * 4, r(2, 1, 10, 16, seed=1) * 4, r(2, 1, 10, 8, seed=2), r(2, 1, 6, 10, seed=3)),
               {"softcap": 4.0}, "softcap, float mask with its gradient (composed)"),
    ]


def _bad_inputs():
    r = S.rand
    q, k, v = r(1, 2, 4, 8), r(1, 2, 5, 8, seed=1), r(1, 2, 5, 8, seed=2)
    return [BadInput((q, r(1, 2, 5, 6), v, None), {}, ValueError, "key's last dimension"),
            BadInput((q, k, r(1, 2, 4, 8), None), {}, ValueError, "value must have key's sequence length"),
            BadInput((q, k, v, r(3, 5)), {}, ValueError, "attn_mask of shape"),
            BadInput((q, k, v, np.zeros((4, 5), np.int64)), {}, TypeError, "attn_mask must be bool"),
            BadInput((q, k, v, r(4, 5)), {"is_causal": True}, ValueError, "attn_mask must be None"),
            BadInput((q, k, v, None), {"dropout_p": 1.5}, ValueError, "dropout_p"),
            BadInput((q, k, v, None), {"scale": "x"}, TypeError, "scale"),
            BadInput((q, r(1, 3, 5, 8), r(1, 3, 5, 8), None), {"enable_gqa": True}, ValueError, "multiple"),
            BadInput((np.ones((1, 2, 4, 8), np.int64), k, v, None), {}, TypeError, "query must be float32"),
            BadInput((q, k, v, None), {"softcap": 0.0}, ValueError, "softcap must be a finite number > 0"),
            BadInput((q, k, v, None), {"softcap": -2.0}, ValueError, "softcap must be a finite number > 0"),
            BadInput((q, k, v, None), {"softcap": math.inf}, ValueError, "softcap must be a finite number > 0"),
            BadInput((q, k, v, None), {"softcap": math.nan}, ValueError, "softcap must be a finite number > 0"),
            BadInput((q, k, v, None), {"softcap": "x"}, TypeError, "softcap")]


def _onnx_repeat_heads(ctx, x, ndim: int, groups: int):
    """Each head of x (..., H, S, D) repeated ``groups`` times in place (torch's repeat_interleave on
    axis -3, as enable_gqa): Unsqueeze after the head axis, Expand, and a Reshape to the run-time shape
    with the head count multiplied, so batch and sequence axes stay dynamic."""
    ones = [1] * (ndim + 1)
    ones[ndim - 2] = groups
    wide = ctx.node("Expand", [ctx.node("Unsqueeze", [x, ctx.ints([ndim - 2])]), ctx.ints(ones)])
    factor = [1] * ndim
    factor[ndim - 3] = groups
    return ctx.node("Reshape", [wide, ctx.node("Mul", [ctx.node("Shape", [x]), ctx.ints(factor)])])


def _onnx(ctx, op):
    """Mul, MatMul, Add/Where and Softmax; a causal mask from Range + LessOrEqual on the run-time
    L and S, so it follows dynamic sequence axes. Grouped-query key/value heads are repeated first."""
    if float(op.attr("dropout_p") or 0.0) > 0.0:
        raise op.unsupported("scaled_dot_product_attention with dropout_p > 0 is random; export with dropout_p=0")
    q, k, v = op.input("query"), op.input("key"), op.input("value")
    if op.attr("enable_gqa"):
        groups = op.args["query"].shape[-3] // op.args["key"].shape[-3]
        if groups > 1:
            k = _onnx_repeat_heads(ctx, k, op.args["key"].ndim, groups)
            v = _onnx_repeat_heads(ctx, v, op.args["value"].ndim, groups)
    e = op.args["query"].shape[-1]
    scale = op.attr("scale")
    scale = 1.0 / math.sqrt(e) if scale is None else float(scale)
    nk = op.args["key"].ndim
    kt = ctx.node("Transpose", [k], perm=list(range(nk - 2)) + [nk - 1, nk - 2])
    s = ctx.node("MatMul", [ctx.node("Mul", [q, ctx.const(scale, "float32")]), kt])  # q scaled first, as the kernel
    if op.attr("softcap") is not None:  # cap * tanh(s / cap), divided as transformers' Gemma 2
        cap = ctx.const(float(op.attr("softcap")), "float32")
        s = ctx.node("Mul", [ctx.node("Tanh", [ctx.node("Div", [s, cap])]), cap])
    mask, masked = op.attr("attn_mask"), False
    neg_inf = ctx.const(-np.inf, "float32")
    if op.attr("is_causal"):
        def length(x, axis):
            return ctx.node("Gather", [ctx.node("Shape", [x]), ctx.const(np.int64(axis))], axis=0)
        zero, one = ctx.const(np.int64(0)), ctx.const(np.int64(1))
        rows = ctx.node("Unsqueeze", [ctx.node("Range", [zero, length(q, -2), one]), ctx.ints([1])])
        cols = ctx.node("Range", [zero, length(k, -2), one])
        s = ctx.node("Where", [ctx.node("LessOrEqual", [cols, rows]), s, neg_inf])
        masked = False  # every row keeps key 0
    elif mask is not None:
        m = op.input("attn_mask")
        if mask.dtype == np.bool_:
            s = ctx.node("Where", [m, s, neg_inf])
        else:
            s = ctx.node("Add", [s, m])
        masked = True
    p = ctx.node("Softmax", [s], axis=-1)
    if masked:  # a row with no key left: 0 as torch (Softmax gives NaN there)
        p = ctx.node("Where", [ctx.node("IsNaN", [p]), ctx.const(0.0, "float32"), p])
    return [ctx.node("MatMul", [p, v])]


def _kernel_ok(q, k, v, dropout_p, mask_grad, is_causal):
    """Whether the fused kernel computes this call: everything but dropout (its keep-mask would have
    to be stored, (N, L, S)) and the gradient of a float mask (that is the (N, L, S) score gradient
    itself); both take the composed path, which materialises the weights. Empty sizes too. A causal
    call whose value holds inf or NaN runs composed as well: the kernel skips the keys above the diagonal,
    where torch multiplies their 0 weights by the value (0 * NaN = NaN in every earlier row)."""
    return (q.dtype == _F32 and dropout_p == 0.0 and not mask_grad and min(q.shape[-2:]) > 0
            and min(k.shape[-2:]) > 0 and v.shape[-1] > 0 and not (is_causal and not np.isfinite(v).all()))


def _run(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, softcap=None, mask_grad=False):
    """Forward on arrays: (output, state for backward)."""
    dropout_p, is_causal, scale, groups, batch, L, S_, ev = _plan(query, key, value, attn_mask, dropout_p,
                                                                 is_causal, scale, enable_gqa)
    softcap = _softcap(softcap)
    q3 = _as_stack(query, batch)
    k3 = _as_stack(_expand_kv(key, groups, batch), batch)
    v3 = _as_stack(_expand_kv(value, groups, batch), batch)
    if q3.shape[0] > 0 and _kernel_ok(query, key, value, dropout_p, mask_grad, is_causal):
        mask = _KA.prepare_mask(attn_mask, batch, L, S_)
        out, lse = _KA.attention_forward(q3, k3, v3, scale, is_causal, mask, softcap=softcap)
        saved = ("kernel", out, lse, mask)
    else:
        out, state = AM.forward(q3, k3, v3, attn_mask, batch, is_causal, scale, dropout_p, softcap)
        saved = ("composed", state)
    return out.reshape(batch + (L, ev)), (q3, k3, v3, saved, is_causal, scale, softcap, groups, batch)


def _inference(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
               softcap=None):
    return _run(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, softcap)[0]


@register_op("scaled_dot_product_attention", meta=_meta, flops=_flops, samples=_samples, torch=_torch,
             bad_inputs=_bad_inputs, onnx=_onnx, functional=scaled_dot_product_attention, tol=(1e-4, 1e-5),
             inference={"cpu": _inference})
class ScaledDotProductAttentionFunction(Function):
    """softmax(q k^T * scale + mask) v over the last two axes (the scores soft-capped with ``softcap``);
    gradients for q, k, v and a float mask. The fused C++ kernels (forgegrad.kernels.attention) run
    every case but dropout and a float mask that needs its gradient, which run composed
    (ops._attention_math)."""

    @staticmethod
    def forward(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
                softcap=None):
        mask_grad = attn_mask is not None and attn_mask.dtype.kind == "f" and ctx.needs_input_grad[3]
        out, state = _run(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, softcap, mask_grad)
        q3, k3, v3, saved, *ctx.plan = state
        ctx.save_for_backward(q3, k3, v3)
        ctx.saved = saved
        ctx.mask_grad = mask_grad
        ctx.attn_mask = attn_mask
        ctx.shapes = (query.shape, key.shape, value.shape)
        return out

    @staticmethod
    def backward(ctx, g):
        q3, k3, v3 = ctx.saved_tensors
        is_causal, scale, softcap, groups, batch = ctx.plan
        qs, ks, vs = ctx.shapes
        needs = ctx.needs_input_grad
        g3 = np.ascontiguousarray(g, dtype=q3.dtype).reshape((-1,) + g.shape[-2:])
        dmask = None
        if ctx.saved[0] == "kernel":
            _, out, lse, mask = ctx.saved
            dq, dk, dv = _KA.attention_backward(g3, q3, k3, v3, out, lse, scale, is_causal, mask, softcap=softcap)
        else:
            dq, dk, dv, dmask = AM.backward(g3, q3, k3, v3, ctx.saved[1], ctx.attn_mask, batch, is_causal, scale,
                                            ctx.mask_grad)
        L, S_ = q3.shape[1], k3.shape[1]
        dq = unbroadcast(dq.reshape(batch + (L, qs[-1])), qs) if needs[0] else None
        dk = _reduce_kv(dk.reshape(batch + (S_, ks[-1])), ks, groups) if needs[1] else None
        dv = _reduce_kv(dv.reshape(batch + (S_, vs[-1])), vs, groups) if needs[2] else None
        if dmask is not None:
            dmask = unbroadcast(dmask.reshape(batch + (L, S_)), ctx.attn_mask.shape)
        return dq, dk, dv, dmask


# ---- packed causal self-attention ------------------------------------------------------------------------
class PackedCausalAttentionFunction(Function):
    """Causal self-attention of a packed q/k/v projection: qkv (B, T, 3C) -> (B, T, C), the same as
    splitting qkv into q, k, v, viewing each as (B, heads, T, C / heads), scaled_dot_product_attention
    (is_causal=True) and merging the heads back. The fused kernel splits the heads in one sequential
    pass (kept for backward), writes the output head-merged and the gradient into one (B, T, 3C)
    buffer: no head split / merge copies through numpy, and no per-part gradients to scatter and add
    (what q, k, v as slices of qkv would cost in backward). Float32 CPU arrays; GPT's attention calls
    it when it needs no dropout and no trace (an ONNX export records the composed ops, whose mapping
    exists)."""

    @staticmethod
    def forward(ctx, qkv, heads, scale=None):
        out, lse, split = _KA.attention_forward_packed(qkv, heads, scale)
        ctx.save_for_backward(split, out, lse)
        ctx.heads, ctx.scale = heads, scale
        return out

    @staticmethod
    def backward(ctx, g):
        split, out, lse = ctx.saved_tensors
        return _KA.attention_backward_packed(g, split, out, lse, ctx.heads, ctx.scale), None, None


# without a graph: the output alone (the apply path of a Function with an inference kernel)
PackedCausalAttentionFunction.inference = staticmethod(
    lambda qkv, heads, scale=None: _KA.attention_forward_packed(qkv, heads, scale)[0])


def packed_causal_attention(qkv, heads: int, scale=None):
    """Causal self-attention of qkv (B, T, 3C) = [q | k | v] (each C = heads x D columns, head after
    head) -> (B, T, C): see PackedCausalAttentionFunction. Float32 tensors on the CPU."""
    return PackedCausalAttentionFunction.apply(qkv, heads, scale)


# ---- cuda ------------------------------------------------------------------------------------------------
# Flash-style kernels (cuda/attention.cu): tiles of K/V streamed through shared memory with an online
# softmax; the log-sum-exp per query row is saved and the backward recomputes the probabilities, with
# dQ and dK/dV in separate passes (no atomics). Head dimensions up to 128. Dropout runs composed.
from . import _attention_math_cuda as AMC  # noqa: E402
from . import _cuda_nn as CN  # noqa: E402


def _cuda_stack(a, batch):
    """a broadcast to batch + its matrix shape, as a [B, rows, cols] DeviceArray (a view when it fits)."""
    full = tuple(batch) + tuple(a.shape[-2:])
    if tuple(a.shape) != full:
        a = CN.pw("copy", a, shape=full)
    return CN.reshape(a, (CN.numel(batch),) + tuple(a.shape[-2:]))


def _cuda_repeat_heads(a, groups):
    """key / value with each head repeated ``groups`` times in place (numpy.repeat on axis -3), for
    grouped-query attention: one broadcasting copy."""
    if groups == 1:
        return a
    shape = tuple(a.shape)
    heads = shape[-3]
    split = CN.reshape(a, shape[:-3] + (heads, 1) + shape[-2:])
    full = CN.pw("copy", split, shape=shape[:-3] + (heads, groups) + shape[-2:])
    return CN.reshape(full, shape[:-3] + (heads * groups,) + shape[-2:])


def _cuda_mask(attn_mask, batch, L, S_):
    """The additive float mask as [1 or B, L, S] (bool True = takes part -> 0, False -> -inf)."""
    if attn_mask is None:
        return None
    dtype = getattr(attn_mask, "dtype", None)
    if dtype == np.bool_:
        attn_mask = CN.kernels().where(attn_mask, 0.0, -math.inf)
    elif dtype != _F32:
        raise TypeError(f"scaled_dot_product_attention: attn_mask must be bool (True = takes part) or float32 "
                        f"(added to the scores), got {dtype}")
    target = tuple(batch) + (L, S_)
    shape = tuple(attn_mask.shape)
    try:
        ok = tuple(np.broadcast_shapes(shape, target)) == target
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {shape} does not broadcast to the "
                         f"attention shape {target} (..., L, S)")
    if CN.numel(shape[:-2]) == 1:  # one mask for every batch: [1, L, S], a view when it is (L, S) already
        tail = shape[-2:]
        mask = CN.reshape(attn_mask, tail) if len(shape) > 2 else attn_mask
        if tail != (L, S_):  # a row (1, S) or (S,) stretched over the L queries
            mask = CN.pw("copy", mask, shape=(L, S_))
        return CN.reshape(mask, (1, L, S_))
    if shape != target:
        attn_mask = CN.pw("copy", attn_mask, shape=target)
    return CN.reshape(attn_mask, (CN.numel(batch), L, S_))


class ScaledDotProductAttentionCudaFunction(Function):
    """scaled_dot_product_attention on cuda: causal or an additive / bool mask (a float mask gets its
    gradient), grouped-query heads. Saves q, k, v (as [B, rows, dim]), the output and the log-sum-exp
    of each score row; with dropout or a softcap the composed path (ops/_attention_math_cuda.py)
    instead, which keeps the weights, the keep mask and the capped scores' tanh."""

    @staticmethod
    def forward(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                enable_gqa=False, softcap=None):
        dropout_p, is_causal, scale, groups, batch, L, S_, ev = _plan(query, key, value, None, dropout_p, is_causal,
                                                                      scale, enable_gqa)
        softcap = _softcap(softcap)
        if attn_mask is not None and is_causal:
            raise ValueError("scaled_dot_product_attention: attn_mask must be None when is_causal=True "
                             "(pass one or the other, as torch)")
        needs = ctx.needs_input_grad
        ctx.mask_shape = None  # a float mask that needs its gradient: its shape
        if attn_mask is not None and getattr(attn_mask, "dtype", None) == _F32 and len(needs) > 3 and needs[3]:
            ctx.mask_shape = tuple(attn_mask.shape)
        ctx.shapes = (tuple(query.shape), tuple(key.shape), tuple(value.shape))
        key, value = _cuda_repeat_heads(key, groups), _cuda_repeat_heads(value, groups)
        q3, k3, v3 = (_cuda_stack(a, batch) for a in (query, key, value))
        mask = _cuda_mask(attn_mask, batch, L, S_)
        if dropout_p > 0.0 or softcap is not None:
            # the keep mask (and the capped scores' tanh) kept for backward: composed, the weights materialised
            out, ctx.composed = AMC.forward(q3, k3, v3, mask, is_causal, scale, dropout_p, softcap)
            lse = None
        else:
            out, lse = CN.kernels().attention_forward(q3, k3, v3, mask, scale, is_causal)
            ctx.composed = None
        ctx.save_for_backward(q3, k3, v3, out, lse, mask)
        ctx.plan = (scale, is_causal, tuple(batch), L, S_, groups)
        return CN.reshape(out, tuple(batch) + (L, ev))

    @staticmethod
    def backward(ctx, g):
        q3, k3, v3, out, lse, mask = ctx.saved_tensors
        scale, is_causal, batch, L, S_, groups = ctx.plan
        g3 = CN.reshape(g, tuple(out.shape))
        ds = None
        if ctx.composed is not None:
            dq, dk, dv, ds = AMC.backward(g3, q3, k3, v3, ctx.composed, scale)
        else:
            dq, dk, dv = CN.kernels().attention_backward(g3, q3, k3, v3, out, lse, mask, scale, is_causal)
        needs = ctx.needs_input_grad
        grads = []
        for k, (d, shape, need) in enumerate(zip((dq, dk, dv), ctx.shapes, needs[:3])):
            if not need:
                grads.append(None)
                continue
            d = CN.reshape(d, batch + tuple(d.shape[-2:]))
            if k > 0 and groups > 1:  # the repeated heads' gradients summed back to their key/value head
                d = CN.reshape(d, batch[:-1] + (batch[-1] // groups, groups) + tuple(d.shape[-2:]))
                d = CN.kernels().reduce("sum", d, [len(batch)], False)
            grads.append(CN.sum_to(d, shape))
        dmask = None
        if ctx.mask_shape is not None:  # the score gradient, [B, L, S], summed to the mask's shape
            if ds is None:
                ds = CN.kernels().attention_mask_grad(g3, q3, k3, v3, out, lse, mask, scale, is_causal)
            dmask = CN.sum_to(CN.reshape(ds, batch + (L, S_)), ctx.mask_shape)
        return (*grads, dmask)


ScaledDotProductAttentionFunction.op.add_device("cuda", ScaledDotProductAttentionCudaFunction)
