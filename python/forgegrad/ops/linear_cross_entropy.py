"""linear_cross_entropy: ``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)`` (torch 2.13's
``F.linear_cross_entropy``, ``nn.LinearCrossEntropyLoss``) computed in chunks of rows, so the (N, C) logits of a
language-model head are never held whole (ops/_lce_chunks.py has the engine).

Gradients: for reduction 'mean' and 'sum' the forward computes them in the same pass as the loss (the upstream
gradient of a scalar loss only scales them): backward is then one multiply, and forward + backward cost three GEMMs
instead of the four that recomputing the logits would take; the buffers held from forward to backward are dX and
dW, the size of the input and the weight (as Liger-Kernel's). Only those an input needs are computed, and none
under no_grad. reduction='none' cannot know its per-row upstream gradients in forward, so its backward recomputes
each chunk (torch's chunked 'none' path does the same). Peak memory beyond the arguments: O(chunk * C + weight).

Backward of a scalar loss scales the saved gradients in place and hands them out (a leaf adopts them as its .grad
without a copy). ``options`` (torch's LinearCrossEntropyOptions, or forgegrad's with the same fields):
``batch_chunk_size`` and ``chunking_method`` pick the chunk rows as torch's do; ``allow_retain_graph`` as torch's
(False: a second backward raises; True: backward hands out scaled copies); ``acc_policy`` is accepted (forgegrad
accumulates in the input's dtype, into one buffer: torch's "compact"), ``acc_dtype`` must be None or the input's
dtype. ``options=None`` chunks too, by a fixed memory budget per chunk (_lce_chunks.CHUNK_BYTES), where torch's
reference path would hold the logits, and a second backward (retain_graph) recomputes the gradients from the
saved arguments. Every configuration (label smoothing, probability targets, K-dimensional out_features) is
chunked, where torch's chunked path falls back to its reference path.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..autograd import Function
from ..devices import MetaArray
from . import _lce_chunks as E
from . import _lce_samples as LS
from .loss import _div
from .registry import register_op

__all__ = ["LinearCrossEntropyOptions", "linear_cross_entropy"]

_NAME = "linear_cross_entropy"
_POLICIES = ("auto", "accurate", "balanced", "compact")


@dataclasses.dataclass(frozen=True)
class LinearCrossEntropyOptions:
    """torch.nn.LinearCrossEntropyOptions' fields and checks: how linear_cross_entropy chunks its rows.

    - ``batch_chunk_size``: rows per chunk (None: from ``chunking_method``, or one chunk);
    - ``chunking_method``: ``"auto"`` (``"aspect_ratio:2"`` on the CPU, as torch's fallback), ``"aspect_ratio"``
      (a chunk's (rows, C) logits about the size of the (N, in_features) input: the next power of two of
      ``ceil(N / ceil(C / in_features))``), ``"aspect_ratio:k"`` (that divided by k) or None;
    - ``allow_retain_graph``: False: backward of a 'mean' / 'sum' loss consumes the gradients forward computed
      (a second backward raises); True: they are kept (one gradient-sized allocation more);
    - ``acc_policy``: accepted and validated; forgegrad accumulates in one buffer in the input's dtype;
    - ``acc_dtype``: None, or the input's dtype.
    """

    allow_retain_graph: bool = False
    batch_chunk_size: int | None = None
    chunking_method: str | None = "auto"
    acc_policy: str = "auto"
    acc_dtype: object = None

    def __post_init__(self):
        if self.acc_policy not in _POLICIES:
            raise ValueError(f"invalid acc_policy: {self.acc_policy!r}")
        if self.chunking_method is not None and self.chunking_method != "auto":
            name, sep, factor = str(self.chunking_method).partition(":")
            if not sep:
                factor = "1"
            if not (name == "aspect_ratio" and factor.isdigit() and int(factor) > 0):
                raise ValueError(f"invalid chunking_method: {self.chunking_method!r}")
        bcs = self.batch_chunk_size
        if not (bcs is None or (isinstance(bcs, int) and not isinstance(bcs, bool) and bcs > 0)):
            raise ValueError(f"batch_chunk_size must be positive int or None, got {bcs!r}")
        if self.acc_dtype is not None and _dtype_name(self.acc_dtype) not in (
                "float16", "bfloat16", "float32", "float64"):
            raise ValueError(f"acc_dtype must be one of {{None, float16, bfloat16, float32, float64}}, "
                             f"got {self.acc_dtype!r}")


def _dtype_name(d) -> str:
    return str(d).rsplit(".", 1)[-1]


def _aspect_rows(method: str, n: int, in_features: int, classes: int) -> int:
    factor = int(method.split(":", 1)[1]) if ":" in method else 1
    inc = -(-classes // max(in_features, 1))
    target = -(-n // max(inc, 1))
    return min((1 << (target - 1).bit_length()) // factor, n)


def chunk_rows(options, n: int, in_features: int, row_classes: int, itemsize: int) -> int:
    """Rows per chunk: torch's rule for ``options`` (its LinearCrossEntropyOptions._adjust), else the budget."""
    if options is None:
        return max(1, min(n, E.CHUNK_BYTES // max(row_classes * itemsize, 1)))
    bcs, method = options.batch_chunk_size, options.chunking_method
    if method == "auto":
        method = None if bcs is not None else "aspect_ratio:2"
    rows = n if bcs is None else min(bcs, n)
    if method is not None:
        rows = _aspect_rows(str(method), n, in_features, row_classes)
        if bcs is not None and bcs != rows:
            raise ValueError(f"batch_chunk_size (={bcs}) and chunking_method ('{method}') give different chunk "
                             f"sizes ({bcs} vs {rows}); pass only one.")
    return max(1, rows)


def _check_options(options):
    """torch's LinearCrossEntropyOptions or forgegrad's (the same fields), or None."""
    if options is not None and not all(hasattr(options, f) for f in (
            "batch_chunk_size", "chunking_method", "allow_retain_graph", "acc_dtype")):
        raise TypeError(f"{_NAME}: options must be a LinearCrossEntropyOptions (or None), got "
                        f"{type(options).__name__}")


def _float_dtype(a, name):
    if not hasattr(a, "dtype"):  # a number where a tensor goes (the op's call lets numbers through)
        raise TypeError(f"{_NAME}: {name} must be a floating tensor (float32 or float64), got {type(a).__name__}")
    if a.dtype.kind != "f":
        raise TypeError(f"{_NAME}: {name} must be a floating tensor (float32 or float64), got dtype {a.dtype}")
    return a.dtype


def check(input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing, options):
    """torch's checks (its messages and error types), on arrays or meta arrays. Returns (C, out_features,
    probability target?, the loss's shape for reduction='none', ignore_index)."""
    _check_options(options)
    for a, name in ((input, "input"), (linear_weight, "linear_weight"), (target, "target")):
        if not hasattr(a, "ndim"):
            raise TypeError(f"{_NAME}: {name} must be a tensor, got {type(a).__name__}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{_NAME}: {reduction!r} is not a valid value for reduction")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.floating)):
        raise TypeError(f"{_NAME}: label_smoothing must be a float, got {type(label_smoothing).__name__}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"{_NAME}: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if input.ndim not in (1, 2):
        raise RuntimeError(f"{_NAME}: expected input with dimensionality 1 or 2, got {input.ndim}")
    if linear_weight.ndim < 2:
        raise RuntimeError(f"{_NAME}: expected linear_weight with dimensionality at least 2, got {linear_weight.ndim}")
    dts = {_float_dtype(input, "input"), _float_dtype(linear_weight, "linear_weight")}
    if input.shape[-1] != linear_weight.shape[-1]:
        raise RuntimeError(f"{_NAME}: expected equal input and linear_weight last dimensions (in_features), got "
                           f"{input.shape[-1]} and {linear_weight.shape[-1]}, respectively")
    C, out = linear_weight.shape[0], tuple(linear_weight.shape[1:-1])
    if linear_bias is not None:
        dts.add(_float_dtype(linear_bias, "linear_bias"))
        if tuple(linear_bias.shape) != (C, *out):
            raise RuntimeError(f"{_NAME}: expected linear_bias shape {(C, *out)}, got {tuple(linear_bias.shape)}")
    if out and input.ndim == 1:
        raise RuntimeError(f"{_NAME}: K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} "
                           f"requires batched input, (N, {input.shape[-1]}), got unbatched input with shape "
                           f"{tuple(input.shape)}")
    if weight is not None:
        dts.add(_float_dtype(weight, "weight"))
        if tuple(weight.shape) != (C,):
            raise RuntimeError(f"{_NAME}: weight tensor should be defined either for all {C} classes or no classes "
                               f"but got weight tensor of shape: {list(weight.shape)}")
    batch = tuple(input.shape[:-1])
    logits_shape = (*batch, C, *out)
    prob = target.dtype.kind == "f" and tuple(target.shape) == logits_shape
    if prob:
        dts.add(target.dtype)
        if ignore_index is not None:
            raise RuntimeError(f"{_NAME}: ignore_index cannot be specified when target contains probabilities")
    else:
        want = (*batch, *out)
        if target.dtype.kind not in "iu":
            raise TypeError(f"{_NAME}: target must hold class indices (an integer tensor of shape {want}) or class "
                            f"probabilities (a floating tensor of shape {logits_shape}), got dtype {target.dtype} "
                            f"and shape {tuple(target.shape)}")
        if tuple(target.shape) != want:
            raise ValueError(f"{_NAME}: target of class indices must have shape {want} for input of shape "
                             f"{tuple(input.shape)} and linear_weight of shape {tuple(linear_weight.shape)}, got "
                             f"{tuple(target.shape)}")
    if len(dts) > 1:
        raise RuntimeError(f"{_NAME}: expected all floating arguments to have the same dtype, found "
                           f"{', '.join(sorted(str(d) for d in dts))}")
    if ignore_index is None:
        ignore_index = -100
    elif isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{_NAME}: ignore_index must be an int or None, got {type(ignore_index).__name__}")
    return C, out, prob, (*batch, *out), int(ignore_index)


def prepare(input, linear_weight, target, linear_bias=None, weight=None, reduction="mean", ignore_index=None,
            label_smoothing=0.0, options=None):
    """The checked arguments as an engine Problem, and the loss's shape for reduction='none'."""
    C, out, prob, loss_shape, ignore_index = check(input, linear_weight, target, linear_bias, weight, reduction,
                                                   ignore_index, label_smoothing, options)
    dt = input.dtype
    in_f = input.shape[-1]
    D = math.prod(out)
    x2 = np.ascontiguousarray(input.reshape(-1, in_f))
    w2 = np.ascontiguousarray(linear_weight.reshape(C * D, in_f))
    b = None if linear_bias is None else np.ascontiguousarray(linear_bias.reshape(C * D))
    w = None if weight is None else np.ascontiguousarray(weight)
    y = t = None
    if prob:
        t = target.reshape(x2.shape[0], C, D)
    else:
        y = np.ascontiguousarray(target.reshape(-1), np.int64)
        bad = (y != ignore_index) & ((y < 0) | (y >= C))
        if bad.any():
            raise IndexError(f"{_NAME}: target {target.reshape(-1)[bad][0]} is out of bounds for {C} classes "
                             f"(linear_weight.shape[0])")
    if options is not None and options.acc_dtype is not None and _dtype_name(options.acc_dtype) != dt.name:
        raise ValueError(f"{_NAME}: options.acc_dtype={options.acc_dtype!r}: forgegrad accumulates in the input's "
                         f"dtype ({dt.name}); pass acc_dtype=None")
    p = E.Problem(x2, w2, b, C, D, y, t, w, ignore_index, float(label_smoothing))
    p.rows = chunk_rows(options, p.N, in_f, C * D, dt.itemsize)
    return p, loss_shape


def _loss_value(p, loss_rows, reduction, loss_shape):
    if reduction == "none":
        return loss_rows.reshape(loss_shape)
    total = float(loss_rows.sum(dtype=np.float64))
    return np.asarray(total if reduction == "sum" else _div(total, p.denominator()), p.dt)


def _inference(input, linear_weight, target, linear_bias=None, weight=None, reduction="mean", ignore_index=None,
               label_smoothing=0.0, options=None):
    """The loss alone (no_grad): no gradient buffers, no gradient GEMMs."""
    p, loss_shape = prepare(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                            label_smoothing, options)
    loss_rows = np.empty(p.N * p.D, p.dt)
    E.run(p, loss_rows)
    return _loss_value(p, loss_rows, reduction, loss_shape)


def _meta(input, linear_weight, target, linear_bias=None, weight=None, reduction="mean", ignore_index=None,
          label_smoothing=0.0, options=None):
    *_, loss_shape, _ = check(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                              label_smoothing, options)
    dt = np.float64 if input.dtype == np.float64 else np.float32
    return MetaArray(loss_shape if reduction == "none" else (), dt)


def _flops(out, inputs, kwargs):
    x, w = inputs[0], inputs[1]
    rows = math.prod(x.shape[:-1]) if x.ndim > 1 else 1
    logits = rows * math.prod(w.shape[:-1])
    return 2 * logits * w.shape[-1] + 5 * logits  # the GEMM, then log-softmax as cross_entropy counts it


def _needs(ctx):
    n = list(ctx.needs_input_grad)[:5]
    return n + [False] * (5 - len(n))


def _composed(input, linear_weight, target, linear_bias=None, weight=None, reduction="mean", ignore_index=None,
              label_smoothing=0.0, options=None):
    """The op as torch's reference path writes it (linear, then cross_entropy): its differentiable backward."""
    from .registry import _OPS
    C, in_f = linear_weight.shape[0], linear_weight.shape[-1]
    out = tuple(linear_weight.shape[1:-1])
    b = None if linear_bias is None else linear_bias.reshape(-1)
    logits = _OPS["linear"](input, linear_weight.reshape(-1, in_f), b)
    if out:
        logits = logits.reshape(*input.shape[:-1], C, *out)
    return _OPS["cross_entropy"](logits, target, weight, -100 if ignore_index is None else ignore_index,
                                 reduction, label_smoothing)


def _differentiable_backward(ctx, args, kwargs, *grads):
    from ._double_backward import decomposition
    return decomposition(_composed)(ctx, args, kwargs, *grads)


def _onnx(ctx, op):
    from ._lce_onnx import map_linear_cross_entropy  # imports the exporter: only when exporting
    return map_linear_cross_entropy(ctx, op)


@register_op(_NAME, meta=_meta, flops=_flops, inference={"cpu": _inference}, samples=LS.samples, torch=LS.torch_ref,
             bad_inputs=LS.bad_inputs, onnx=_onnx, differentiable_backward=_differentiable_backward, tol=(1e-4, 1e-5))
class LinearCrossEntropyFunction(Function):
    """cross_entropy(input @ linear_weight^T + linear_bias, target) over chunks of rows (see the module)."""

    @staticmethod
    def forward(ctx, input, linear_weight, target, linear_bias=None, weight=None, reduction="mean",
                ignore_index=None, label_smoothing=0.0, options=None):
        p, loss_shape = prepare(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                                label_smoothing, options)
        loss_rows = np.empty(p.N * p.D, p.dt)
        need = _needs(ctx)
        ctx.reduction = reduction
        ctx.shapes = (input.shape, linear_weight.shape, target.shape,
                      None if linear_bias is None else linear_bias.shape)
        ctx.rest = (ignore_index, label_smoothing, options)
        # options=None: a second backward (retain_graph) recomputes from these; no memory, they are the arguments
        ctx.retain = "recompute" if options is None else "keep" if options.allow_retain_graph else "refuse"
        if reduction == "none" or ctx.retain == "recompute":
            ctx.save_for_backward(input, linear_weight, target, linear_bias, weight)
        if reduction == "none":  # backward recomputes each chunk with its rows' upstream gradients
            E.run(p, loss_rows)
            return loss_rows.reshape(loss_shape)
        grads = E.Grads(p, ctx.shapes, *need) if any(need) else None
        E.run(p, loss_rows, grads, _scale(p, reduction))
        ctx.grads = grads
        return _loss_value(p, loss_rows, reduction, loss_shape)

    @staticmethod
    def backward(ctx, g):
        grads = ctx.grads if ctx.reduction != "none" else None
        if grads is None:
            if ctx.reduction != "none" and ctx.retain == "refuse":
                raise RuntimeError(f"{_NAME}: its gradients were consumed by an earlier backward (options with "
                                   "allow_retain_graph=False scales them in place, as torch's); pass "
                                   "LinearCrossEntropyOptions(allow_retain_graph=True) to backward twice")
            x, w, t, b, cw = ctx.saved_tensors  # recompute: reduction='none', or a second backward
            p, _ = prepare(x, w, t, b, cw, ctx.reduction, *ctx.rest)
            grads = E.Grads(p, ctx.shapes, *_needs(ctx))
            if ctx.reduction == "none":
                E.run(p, np.empty(p.N * p.D, p.dt), grads, 1.0, np.ascontiguousarray(g, p.dt).reshape(-1))
                return grads.out
            E.run(p, np.empty(p.N * p.D, p.dt), grads, _scale(p, ctx.reduction))
        out = grads.out
        gv = next(a.dtype for a in out if a is not None).type(np.asarray(g).reshape(()))
        if ctx.retain == "keep":  # fresh arrays: the saved ones serve another backward
            return tuple(None if a is None else a * gv for a in out)
        ctx.grads = None  # consumed: scaled in place and handed out (a leaf adopts them without a copy)
        for a in out:
            if a is not None and gv != 1:
                a *= gv
        return out


def _scale(p, reduction) -> float:
    return 1.0 if reduction == "sum" else _div(1.0, p.denominator())


LinearCrossEntropyFunction.op.float64 = LinearCrossEntropyFunction  # numpy in float64: the same Function


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None, reduction: str = "mean",
                         ignore_index: int | None = None, label_smoothing: float = 0.0, options=None):
    """``torch.nn.functional.linear_cross_entropy``: ``cross_entropy(linear(input, linear_weight, linear_bias),
    target, weight, ignore_index, reduction, label_smoothing)`` without holding the (N, C) logits.

    input (in_features,) or (N, in_features); linear_weight (C, in_features) or (C, d1, ..., dK, in_features)
    (K-dimensional loss: logits (N, C, d1, ..., dK)); target class indices ((), (N) or (N, d1, ..., dK)) or
    probabilities (the logits' shape); ``ignore_index`` None means -100 for index targets (and must be None for
    probabilities); ``options``: a LinearCrossEntropyOptions (torch's or forgegrad's), or None (chunks by a
    memory budget). See ops/linear_cross_entropy.py.
    """
    from .registry import _OPS
    return _OPS[_NAME](input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                       label_smoothing, options)


LinearCrossEntropyFunction.op.functional = linear_cross_entropy
