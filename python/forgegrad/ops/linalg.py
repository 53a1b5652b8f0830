"""Matrix products on forgegrad's SGEMM: MatMul (numpy/torch @ semantics) and Linear (x W^T + b)."""
from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd import Function
from ..kernels import bmm as _bmm
from ..kernels import matmul as _mm
from ..kernels.activation import column_sums as _column_sums
from . import _meta as M
from . import _samples as S
from ._util import unbroadcast
from .registry import BadInput, Sample, register_op


def _matmul_meta(a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both arguments need at least 1 dimension, got shapes {a.shape} and {b.shape}")
    sa = (1,) + a.shape if a.ndim == 1 else a.shape
    sb = b.shape + (1,) if b.ndim == 1 else b.shape
    if sa[-1] != sb[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied ({sa[-1]} != {sb[-2]})")
    batch = M.broadcast(M.MetaArray(sa[:-2]), M.MetaArray(sb[:-2])).shape
    out = batch + ((sa[-2],) if a.ndim > 1 else ()) + ((sb[-1],) if b.ndim > 1 else ())
    da, db = getattr(a, "dtype", None), getattr(b, "dtype", None)
    kinds = [np.dtype(d).kind for d in (da, db) if d is not None]
    if "i" in kinds or "u" in kinds:  # an integer product keeps its dtype (_integer_matmul); either operand
        if da != db:
            raise TypeError(f"matmul: expected both operands to have the same dtype, got {da} and {db}")
        return M.MetaArray(out, da)
    return M.MetaArray(out, np.float32)


def _matmul_flops(out, inputs, kwargs):
    return 2 * out.size * inputs[0].shape[-1]  # one multiply-add per (output, k)


def _matmul_samples():
    return [Sample((S.rand(5, 7), S.rand(7, 3, seed=1))),
            Sample((S.rand(7), S.rand(7, 3, seed=1)), name="vector @ matrix"),
            Sample((S.rand(5, 7), S.rand(7, seed=1)), name="matrix @ vector"),
            Sample((S.rand(2, 5, 7), S.rand(7, 3, seed=1)), name="batched @ matrix"),
            Sample((S.rand(2, 1, 3, 4), S.rand(5, 4, 6, seed=1)), name="broadcast batches"),
            Sample((S.rand(70, 90), S.rand(90, 110, seed=1)), name="large")]


def _linear_meta(x, weight, bias=None, *args):
    if x.ndim < 1 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input (..., {weight.shape[1] if weight.ndim == 2 else '?'}) expected for weight "
                         f"of shape {weight.shape}, got input of shape {x.shape}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    return M.MetaArray(x.shape[:-1] + (weight.shape[0],), np.float32)


def _linear_flops(out, inputs, kwargs):
    weight = inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    return 2 * out.size * weight.shape[1] + (out.size if bias is not None else 0)


def _linear_samples():
    return [Sample((S.rand(5, 7), S.rand(3, 7, seed=1), S.rand(3, seed=2))),
            Sample((S.rand(2, 4, 7), S.rand(3, 7, seed=1), None), name="3-D input, no bias", grad=(0, 1)),
            Sample((S.rand(1, 64), S.rand(10, 64, seed=1), S.rand(10, seed=2)), name="batch 1 (GEMV)"),
            Sample((S.rand(64, 300), S.rand(200, 300, seed=1), S.rand(200, seed=2)), name="large")]


def _save_pair(ctx, a, b) -> None:
    """Save what a product's gradients asked for read, as torch's: ``a`` for ``b``'s gradient and ``b`` for
    ``a``'s (a frozen layer's input, a first layer's weight are not saved, so an in-place change of them is no
    error at backward). The other is held for the kernels' shape checks only; :func:`_saved_pair` reads back."""
    needs = ctx.needs_input_grad
    ctx.save_for_backward(a if needs[1] else None, b if needs[0] else None)
    ctx.held = (None if needs[1] else a, None if needs[0] else b)


def _saved_pair(ctx):
    a, b = ctx.saved_tensors
    ha, hb = ctx.held
    return (ha if a is None else a), (hb if b is None else b)


def _check_float(a, name):
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {a.dtype}")


def _integer_matmul(a, b):
    """torch's integer product: both operands of one integer dtype, the result in it (wrapping on overflow, as
    torch's CPU kernel); no gradient (integer tensors have none)."""
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: expected both operands to have the same dtype, got {a.dtype} and {b.dtype}")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both arguments need at least 1 dimension, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else -1]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied")
    with np.errstate(over="ignore"):
        return np.matmul(a, b)


@register_op("matmul", meta=_matmul_meta, flops=_matmul_flops, samples=_matmul_samples,
             torch=lambda torch, a, b: torch.matmul(a, b), tol=(1e-4, 1e-4),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), S.rand(5, 2)), {}, ValueError, "cannot be multiplied")])
class MatMulFunction(Function):
    """a @ b with torch.matmul's rules: 1-D operands are promoted and the added axis removed,
    batch dimensions broadcast."""

    @staticmethod
    def forward(ctx, a, b):
        if a.dtype.kind in "iu" or b.dtype.kind in "iu":
            return _integer_matmul(a, b)
        _check_float(a, "matmul: a")
        _check_float(b, "matmul: b")
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both arguments need at least 1 dimension, got shapes "
                             f"{a.shape} and {b.shape}")
        _save_pair(ctx, a, b)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a2.shape[-1] != b2.shape[-2]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied "
                             f"({a2.shape[-1]} != {b2.shape[-2]})")
        if a2.ndim == 2 and b2.ndim == 2:
            y = _mm(a2, b2)
        else:
            y = _bmm(a2, b2)
        ctx.y2_shape = y.shape
        if a.ndim == 1:
            y = y[..., 0, :]
        if b.ndim == 1:
            y = y[..., 0]
        return y

    @staticmethod
    def backward(ctx, g):
        a, b = _saved_pair(ctx)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g.reshape(ctx.y2_shape)
        ga = gb = None
        if a2.ndim == 2 and b2.ndim == 2 and g2.ndim == 2:
            if ctx.needs_input_grad[0]:
                ga = _mm(g2, b2, trans_b=True)
            if ctx.needs_input_grad[1]:
                gb = _mm(a2, g2, trans_a=True)
        else:
            if ctx.needs_input_grad[0]:
                ga = unbroadcast(_bmm(g2, np.swapaxes(b2, -1, -2)), a2.shape)
            if ctx.needs_input_grad[1]:
                gb = unbroadcast(_bmm(np.swapaxes(a2, -1, -2), g2), b2.shape)
        if ga is not None:
            ga = ga.reshape(a.shape)
        if gb is not None:
            gb = gb.reshape(b.shape)
        return ga, gb


@register_op("linear", meta=_linear_meta, flops=_linear_flops, samples=_linear_samples,
             inference={"cpu": _C.gemm.linear}, tol=(1e-4, 1e-4),
             torch=lambda torch, x, weight, bias=None: torch.nn.functional.linear(x, weight, bias),
             bad_inputs=lambda: [BadInput((S.rand(3, 4), S.rand(5, 3), None), {}, ValueError, "weight"),
                                 BadInput((S.rand(3, 4), S.rand(5, 4), S.rand(4)), {}, ValueError, "bias")])
class LinearFunction(Function):
    """y = x @ weight.T + bias for x (..., in_features), weight (out_features, in_features)."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        # Checks, allocation, bias and GEMM in one C++ call (at batch 1 Python-side checks and
        # allocation cost as much as the layer's GEMV). Messages name "linear: input/weight/bias".
        out = _C.gemm.linear(x, weight, bias)
        _save_pair(ctx, x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight = _saved_pair(ctx)
        needs = ctx.needs_input_grad
        if x.dtype == np.float32 and weight.dtype == np.float32:
            # gx = g W, gw = g^T x and the bias gradient (column sums of g, taken while gw's product
            # packs g) in one C++ call: the same bits as the three kernels below
            return _C.gemm.linear_backward(g, x, weight, needs[0], needs[1], ctx.has_bias and needs[2])
        x2 = x.reshape(-1, weight.shape[1])
        g2 = g.reshape(-1, weight.shape[0])
        gx = gw = gb = None
        if needs[0]:
            gx = _mm(g2, weight).reshape(x.shape)
        if needs[1]:
            gw = _mm(g2, x2, trans_a=True)
        if ctx.has_bias and needs[2]:
            gb = _column_sums(g2)  # fixed row order, one pass
        return gx, gw, gb


def _allow_tf32() -> bool:
    from .. import cuda
    return bool(cuda.matmul_allow_tf32)


class MatMulCudaFunction(Function):
    """a @ b on the cuda device (_C.cuda_gemm, our SGEMM): every shape the CPU op takes -- 1-D operands,
    batches, broadcast batches (their gradients summed over the broadcast axes). bmm and mm are matmul."""

    @staticmethod
    def forward(ctx, a, b):
        _save_pair(ctx, a, b)
        ctx.tf32 = _allow_tf32()
        return _C.cuda_gemm.matmul(a, b, ctx.tf32)

    @staticmethod
    def backward(ctx, g):
        a, b = _saved_pair(ctx)
        need = ctx.needs_input_grad
        return tuple(_C.cuda_gemm.matmul_backward(a, b, g, bool(need[0]), bool(need[1]), ctx.tf32))


class LinearCudaFunction(Function):
    """x @ weight.T + bias on the cuda device: one GEMM with the bias added in its output pass."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        ctx.tf32 = _allow_tf32()
        out = _C.cuda_gemm.linear(x, weight, bias, ctx.tf32)
        _save_pair(ctx, x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight = _saved_pair(ctx)
        need = ctx.needs_input_grad
        need_b = ctx.has_bias and len(need) > 2 and bool(need[2])
        gx, gw, gb = _C.cuda_gemm.linear_backward(x, weight, g, bool(need[0]), bool(need[1]), need_b, ctx.tf32)
        return gx, gw, gb


MatMulFunction.op.add_device("cuda", MatMulCudaFunction)
LinearFunction.op.add_device("cuda", LinearCudaFunction)
