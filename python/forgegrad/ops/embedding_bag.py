"""embedding_bag: sums, means or maxima of bags of embedding rows, as torch.nn.functional.embedding_bag.

The op takes the bags in torch's two layouts: a 2-D ``input`` (B, L) (B bags of L indices, ``offsets`` None) or a
1-D ``input`` (N,) cut into bags by ``offsets`` (bag b is input[offsets[b]:offsets[b + 1]], the last bag runs
to N; with ``include_last_offset`` offsets holds that end too and offsets[-1] must be N, see _bags_of). Entries
equal to ``padding_idx`` are left out of their bag (not counted by "mean"); an empty bag gives zeros.
``per_sample_weights`` (same shape as input, mode "sum" only, as torch) scales each looked-up row. Sums are
accumulated in float64 and rounded once.

float32 tables run on the C++ kernels (forgegrad.kernels.embedding_bag, cpp/kernels/per_isa/embedding_bag.cpp):
the bags as (B + 1) start positions, the checks here first (the binding checks again); float64 and a call without
bags take the numpy path below. Under "max" both paths follow torch 2.13's CPU rule for NaN: a later entry replaces
the running maximum only when it compares greater, so a NaN is the result (and gets the gradient) when it is its
bag's first kept entry and is skipped anywhere else.

Gradients: the weight's sums each row's per-position gradients in ascending position order (the same bits at any
thread count); under "max" each output element's gradient goes to the row of the first position holding the bag's
maximum (torch's tie rule). ``scale_grad_by_freq`` divides each row's gradient
by how often the kept entries of ``input`` hold it, as F.embedding's: torch 2.13's CPU embedding_bag divides
by the count of another row for some inputs (it reads ``counts[sorted_indices[u]]`` for the u-th distinct
row), so the reference of those samples is F.embedding followed by the bag reduction.

ONNX: Gather, then for a 2-D input ReduceSum / ReduceMean / ReduceMax over the bag axis; for offsets a (B, N)
bag-membership mask from the offsets (Range, comparisons) and MatMul (sum, mean) or Where + ReduceMax (max).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from .._validate import check_bool, check_int
from ..devices import MetaArray
from ..kernels import embedding_bag as _K
from ..kernels.embedding import embedding_backward as _embedding_backward
from . import _embedding_bag_samples as S
from .registry import register_op

MODES = ("sum", "mean", "max")
_INT = (np.dtype(np.int64), np.dtype(np.int32))


def _check(weight, input, offsets, per_sample_weights, mode, include_last_offset, padding_idx,
           scale_grad_by_freq):
    """The checks on shapes, dtypes and options; returns (bags, padding_idx in [0, n) or None)."""
    fn = "embedding_bag"
    for name, a in (("weight", weight), ("input", input), ("offsets", offsets),
                    ("per_sample_weights", per_sample_weights)):
        if (a is None and name in ("weight", "input")) or (a is not None and not (
                hasattr(a, "shape") and hasattr(a, "dtype") and hasattr(a, "ndim"))):
            raise TypeError(f"{fn}: {name} must be a tensor{'' if name in ('weight', 'input') else ' or None'}, got "
                            f"{type(a).__name__}")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{fn}: mode must be one of {MODES}, got {mode!r}")
    include_last_offset = check_bool(include_last_offset, f"{fn}: include_last_offset")
    scale_grad_by_freq = check_bool(scale_grad_by_freq, f"{fn}: scale_grad_by_freq")
    if weight.ndim != 2:
        raise ValueError(f"{fn}: weight must be 2-D (num_embeddings, embedding_dim), got shape {weight.shape}")
    if weight.dtype.kind != "f" or weight.dtype.itemsize < 4:
        raise TypeError(f"{fn}: weight must be float32 or float64, got {weight.dtype}")
    if input.dtype not in _INT:
        raise TypeError(f"{fn}: input must hold int64 or int32 indices, got dtype {input.dtype}")
    if input.ndim == 2:
        if offsets is not None:
            raise ValueError(f"{fn}: offsets must be None for a 2-D input (each row is one bag), got offsets of "
                             f"shape {offsets.shape}")
        if input.shape[1] == 0:
            raise ValueError(f"{fn}: a 2-D input must have at least one index per bag, got shape {input.shape}")
        bags = input.shape[0]
    elif input.ndim == 1:
        if offsets is None:
            raise ValueError(f"{fn}: offsets must be a 1-D tensor of bag starts for a 1-D input, got None")
        if offsets.ndim != 1:
            raise ValueError(f"{fn}: offsets must be 1-D, got shape {offsets.shape}")
        if offsets.dtype not in _INT:
            raise TypeError(f"{fn}: offsets must hold int64 or int32 positions, got dtype {offsets.dtype}")
        if include_last_offset and offsets.shape[0] < 1:
            raise ValueError(f"{fn}: offsets must hold at least one position with include_last_offset=True")
        bags = offsets.shape[0] - int(include_last_offset)
    else:
        raise ValueError(f"{fn}: input must be 1-D (with offsets) or 2-D (bags, indices), got shape {input.shape}")
    if per_sample_weights is not None:
        if mode != "sum":
            raise NotImplementedError(f"{fn}: per_sample_weights is only supported for mode='sum' (as torch), got "
                                      f"mode={mode!r}")
        if per_sample_weights.shape != input.shape:
            raise ValueError(f"{fn}: per_sample_weights must have the shape of input {input.shape}, got "
                             f"{per_sample_weights.shape}")
        if per_sample_weights.dtype != weight.dtype:
            raise TypeError(f"{fn}: per_sample_weights must have weight's dtype {weight.dtype}, got "
                            f"{per_sample_weights.dtype}")
    if scale_grad_by_freq and mode == "max":
        raise ValueError(f"{fn}: scale_grad_by_freq=True is not supported with mode='max' (as torch)")
    n = weight.shape[0]
    if padding_idx is not None:
        padding_idx = check_int(padding_idx, f"{fn}: padding_idx")
        if not -n <= padding_idx < n:
            raise ValueError(f"{fn}: padding_idx must be within num_embeddings [-{n}, {n}), got {padding_idx}")
        padding_idx %= n
    return bags, padding_idx


def _meta(weight, input, offsets=None, per_sample_weights=None, mode="mean", include_last_offset=False,
          padding_idx=None, scale_grad_by_freq=False):
    bags, _ = _check(weight, input, offsets, per_sample_weights, mode, include_last_offset, padding_idx,
                     scale_grad_by_freq)
    return MetaArray((bags, weight.shape[1]), weight.dtype)


def _flops(out, inputs, kwargs) -> int:
    """One add (or comparison) per looked-up element, a multiply more with per_sample_weights."""
    weight, input = inputs[0], inputs[1]
    psw = inputs[3] if len(inputs) > 3 else kwargs.get("per_sample_weights")
    return input.size * weight.shape[1] * (2 if psw is not None else 1)


def _check_offsets(off, n, include_last_offset):
    """Raises ValueError unless the int64 offsets start at 0, do not decrease and end within input (at its end with
    include_last_offset)."""
    if off.size:
        if off[0] != 0:
            raise ValueError(f"embedding_bag: offsets[0] must be 0 (the first bag starts at position 0), got "
                             f"{off[0]}")
        if np.any(np.diff(off) < 0):
            k = int(np.argmax(np.diff(off) < 0))
            raise ValueError(f"embedding_bag: offsets must be non-decreasing, got offsets[{k}]={off[k]} > "
                             f"offsets[{k + 1}]={off[k + 1]}")
        if off[-1] > n:
            raise ValueError(f"embedding_bag: offsets[-1] must be at most input's length {n}, got {off[-1]}")
        if include_last_offset and off[-1] != n:
            # torch's CPU kernels disagree on the entries past offsets[-1] (sum and mean take them into the
            # last bag when padding_idx is set, mean divides by a count of its own otherwise): refused
            raise ValueError(f"embedding_bag: with include_last_offset=True, offsets[-1] must equal input's length "
                             f"{n} (the end of the last bag, CSR style), got {off[-1]}")


def _bags_of(input, offsets, include_last_offset, bags):
    """The bag of each position of the flattened input (-1: in no bag), after checking the offsets."""
    n = input.size
    if offsets is None:
        return np.repeat(np.arange(bags, dtype=np.int64), input.shape[1])
    off = np.asarray(offsets, np.int64)
    _check_offsets(off, n, include_last_offset)
    return np.searchsorted(off, np.arange(n, dtype=np.int64), side="right") - 1


def _bag_starts(input, offsets, include_last_offset, bags):
    """(bags + 1,) int64: where each bag of the flattened input starts, then its end (the kernels' layout), after
    checking the offsets; bags >= 1."""
    if offsets is None:
        return np.arange(bags + 1, dtype=np.int64) * input.shape[1]
    off = np.ascontiguousarray(offsets, np.int64)
    _check_offsets(off, input.size, include_last_offset)
    return off if include_last_offset else np.append(off, np.int64(input.size))


def _checked_indices(input, n):
    """input flattened to int64, after checking that every index is in [0, n)."""
    idx = np.ascontiguousarray(np.asarray(input).reshape(-1), np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = int(np.flatnonzero((idx < 0) | (idx >= n))[0])
        raise IndexError(f"embedding_bag: input[{bad}] = {idx[bad]} is out of range: indices must be in [0, {n})")
    return idx


def _plan(weight, input, offsets, per_sample_weights, mode, include_last_offset, padding_idx, scale_grad_by_freq):
    """(kept positions (None: all), their rows, their bags, bag sizes, bags, every index) after every check."""
    bags, padding_idx = _check(weight, input, offsets, per_sample_weights, mode, include_last_offset, padding_idx,
                               scale_grad_by_freq)
    idx = _checked_indices(input, weight.shape[0])
    seg = _bags_of(input, offsets, include_last_offset, bags)  # every position is in a bag
    keep, rows, segk = None, idx, seg  # keep None: every position
    if padding_idx is not None:
        keep = np.flatnonzero(idx != padding_idx)
        rows, segk = idx[keep], seg[keep]
    if keep is None and offsets is None:  # 2-D, nothing left out: every bag holds a row of input
        counts = np.full(bags, input.shape[1], np.int64)
    else:
        counts = np.bincount(segk, minlength=bags)[:bags] if bags else np.zeros(0, np.int64)
    return keep, rows, segk, counts, bags, idx


def _take(a, keep):
    return a if keep is None else a[keep]


def _starts(counts):
    return np.cumsum(counts) - counts


def _forward_values(weight, keep, rows, segk, counts, bags, mode, psw, input2d=None, padding_idx=None):
    d = weight.shape[1]
    out = np.zeros((bags, d), weight.dtype)
    nonempty = np.flatnonzero(counts > 0)
    if nonempty.size == 0:
        return out, (np.full((bags, d), -1, np.int64) if mode == "max" else None)
    if mode != "max":
        if input2d is not None:
            total = _bag_sums_2d(weight, input2d, psw, padding_idx)
        else:
            total = _segment_sums(weight, rows, segk, None if psw is None else _take(psw.reshape(-1), keep), bags)
        if mode == "mean":
            total /= np.maximum(counts, 1)[:, None]
        out[...] = total
        return out, None
    starts = _starts(counts)[nonempty]
    vals = weight[rows]
    # torch's running maximum with a strict '>': NaNs after the first kept entry are skipped (fmax), a NaN first
    # entry stays (nothing compares greater than it)
    first_nan = np.isnan(vals[starts])
    with np.errstate(invalid="ignore"):
        mx = np.where(first_nan, vals[starts], np.fmax.reduceat(vals, starts, axis=0))
    out[nonempty] = mx
    # the first position holding the bag's maximum, per column (torch's strict '>' keeps the first)
    local = np.where(vals == mx[np.searchsorted(nonempty, segk)], np.arange(rows.size)[:, None], rows.size)
    arg = np.full((bags, d), -1, np.int64)
    arg[nonempty] = np.where(first_nan, starts[:, None], np.minimum.reduceat(local, starts, axis=0))
    return out, arg


_CHUNK = 1 << 15  # positions gathered at a time: the float64 partial sums stay small


def _segment_sums(weight, rows, segk, scale, bags):
    """(bags, D) float64 sums of weight[rows] (times scale) by bag, in position order, accumulated in float64
    (float32 partial sums of a long bag lose digits) a chunk of positions at a time (no (N, D) temporary)."""
    total = np.zeros((bags, weight.shape[1]), np.float64)
    for c0 in range(0, rows.size, _CHUNK):
        r, seg = rows[c0:c0 + _CHUNK], segk[c0:c0 + _CHUNK]
        vals = weight[r]
        if scale is not None:
            vals = vals * scale[c0:c0 + _CHUNK][:, None]
        first = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])  # each bag's run within the chunk
        total[seg[first]] += np.add.reduceat(vals, first, axis=0, dtype=np.float64)
    return total


def _bag_sums_2d(weight, input2d, psw, padding_idx):
    """(B, D) float64 sums of a 2-D input's bags (rows of L entries), a chunk of bags at a time."""
    bags, length = input2d.shape
    total = np.empty((bags, weight.shape[1]), np.float64)
    step = max(1, _CHUNK // length)
    for b0 in range(0, bags, step):
        idx = input2d[b0:b0 + step]
        vals = weight[idx]  # (chunk, L, D)
        if psw is not None:
            vals = vals * psw[b0:b0 + step][..., None]
        if padding_idx is not None:
            vals = np.where((idx != padding_idx)[..., None], vals, 0)
        vals = vals.astype(np.float64)
        if length <= 16:  # numpy's reduce over a short middle axis is several times slower than adding its slices
            acc = vals[:, 0].copy()
            for j in range(1, length):
                acc += vals[:, j]
            total[b0:b0 + step] = acc
        else:
            total[b0:b0 + step] = vals.sum(1)
    return total


def _scatter_rows(gp, rows, n, dtype):
    """grad_weight (n, D): the rows of gp summed into rows[i], in ascending position order."""
    if dtype == np.float32:
        return _embedding_backward(np.ascontiguousarray(gp, np.float32), rows, n, None)
    gw = np.zeros((n, gp.shape[1]), dtype)
    np.add.at(gw, rows, gp)
    return gw


def _double_backward_rule(ctx, args, kwargs, g):
    """The backward with Tensor ops (so that it records a graph): gradients of weight and per_sample_weights."""
    from ..tensor import Tensor
    from ._double_backward import _arg, _const, _scatter
    weight, input, offsets, psw = (_arg(args, kwargs, i, k) for i, k in
                                   enumerate(("weight", "input", "offsets", "per_sample_weights")))
    mode = _arg(args, kwargs, 4, "mode", "mean")
    sgbf = bool(_arg(args, kwargs, 7, "scale_grad_by_freq", False))

    def raw(t):
        return None if t is None else (t._data if isinstance(t, Tensor) else np.asarray(t))

    keep, rows, segk, counts, bags, idx = _plan(raw(weight), raw(input), raw(offsets), raw(psw), mode,
                                                _arg(args, kwargs, 5, "include_last_offset", False),
                                                _arg(args, kwargs, 6, "padding_idx"), sgbf)
    n, d = weight.shape
    if mode == "max":
        _, arg = _forward_values(raw(weight), keep, rows, segk, counts, bags, "max", None)
        b, c = np.nonzero(arg >= 0)
        return _scatter(g[(b, c)], (rows[arg[b, c]], c), (n, d)), None, None, None
    gp = g.index_select(0, Tensor._stored(segk))
    scale = np.ones(rows.size)
    if mode == "mean":
        scale = scale / counts[segk]
    if sgbf:
        scale = scale / np.bincount(idx, minlength=n)[rows]
    gp = gp * _const(scale[:, None], g)
    gpsw = None
    if psw is not None:
        kept = psw.reshape(-1) if keep is None else psw.reshape(-1).index_select(0, Tensor._stored(keep))
        if isinstance(psw, Tensor) and psw.requires_grad:
            dots = (gp * weight.index_select(0, Tensor._stored(rows))).sum(1)
            gpsw = _scatter(dots, (np.arange(idx.size) if keep is None else keep,), (idx.size,)).reshape(psw.shape)
        gp = gp * kept.unsqueeze(1)
    return _scatter(gp, (rows,), (n, d)), None, None, gpsw


def _kernel_forward(ctx, weight, input, offsets, psw, mode, include_last_offset, padding_idx, scale_grad_by_freq):
    """The float32 forward on the C++ kernels (forgegrad.kernels.embedding_bag); None (no bag): the numpy path's."""
    bags, pad = _check(weight, input, offsets, psw, mode, include_last_offset, padding_idx, scale_grad_by_freq)
    if bags == 0:
        return None
    n = weight.shape[0]
    idx = _checked_indices(input, n)
    starts = _bag_starts(input, offsets, include_last_offset, bags)
    pad = -1 if pad is None else pad
    out, _, arg = _K.forward(weight, idx, starts, psw, mode, pad)
    # scale_grad_by_freq counts every entry of input, as F.embedding's (padding rows get no gradient anyway)
    freq = np.bincount(idx, minlength=n) if bool(scale_grad_by_freq) else None
    ctx.kernel = (idx, starts, arg, pad, freq, input.shape)
    ctx.mode, ctx.n, ctx.has_psw = mode, n, psw is not None
    ctx.save_for_backward(weight if ctx.has_psw and ctx.needs_input_grad[3] else None, psw)
    return out


def _kernel_backward(ctx, g):
    idx, starts, arg, pad, freq, in_shape = ctx.kernel
    weight, psw = ctx.saved_tensors
    gw = gpsw = None
    if ctx.needs_input_grad[0]:
        if ctx.mode == "max":
            gw = _K.max_backward(g, arg, idx, ctx.n)
        else:
            gw = _K.backward(g, idx, starts, ctx.n, psw, ctx.mode == "mean", freq, pad)
    if ctx.has_psw and ctx.needs_input_grad[3]:
        gpsw = _K.psw_backward(g, weight, idx, starts, pad).reshape(in_shape)
    return gw, None, None, gpsw


@register_op("embedding_bag", meta=_meta, flops=_flops, samples=S.samples, torch=S.torch_reference,
             bad_inputs=S.bad_inputs, onnx=S.onnx_mapping, tol=(2e-5, 1e-5),
             differentiable_backward=_double_backward_rule)
class EmbeddingBagFunction(Function):
    """embedding_bag(weight, input, offsets=None, per_sample_weights=None, mode="mean", include_last_offset=False,
    padding_idx=None, scale_grad_by_freq=False) -> (bags, embedding_dim); see the module docstring."""

    @staticmethod
    def forward(ctx, weight, input, offsets=None, per_sample_weights=None, mode="mean", include_last_offset=False,
                padding_idx=None, scale_grad_by_freq=False):
        ctx.kernel = None
        if type(weight) is np.ndarray and weight.dtype == np.float32:
            out = _kernel_forward(ctx, weight, input, offsets, per_sample_weights, mode, include_last_offset,
                                  padding_idx, scale_grad_by_freq)
            if out is not None:
                return out
        keep, rows, segk, counts, bags, idx = _plan(weight, input, offsets, per_sample_weights, mode,
                                                  include_last_offset, padding_idx, scale_grad_by_freq)
        in2d = np.asarray(input).astype(np.int64, copy=False) if input.ndim == 2 else None
        pad = None if padding_idx is None else int(padding_idx) % weight.shape[0]
        out, arg = _forward_values(weight, keep, rows, segk, counts, bags, mode, per_sample_weights, in2d, pad)
        # scale_grad_by_freq counts every entry of input, as F.embedding's (padding rows get no gradient anyway)
        freq = np.bincount(idx, minlength=weight.shape[0]) if bool(scale_grad_by_freq) else None
        ctx.plan = (keep, rows, segk, counts, arg, input.shape, freq)
        ctx.mode = mode
        ctx.has_psw = per_sample_weights is not None
        need_w = ctx.has_psw and ctx.needs_input_grad[3]
        ctx.save_for_backward(weight if need_w else None, per_sample_weights)
        ctx.n = weight.shape[0]
        return out

    @staticmethod
    def backward(ctx, g):
        if ctx.kernel is not None:
            return _kernel_backward(ctx, g)
        keep, rows, segk, counts, arg, in_shape, freq = ctx.plan
        weight, psw = ctx.saved_tensors
        n, d = ctx.n, g.shape[1]
        if ctx.mode == "max":
            gw = np.zeros((n, d), g.dtype)
            b, c = np.nonzero(arg >= 0)
            # one entry per (row, column): no two terms share a target within a bag; np.add.at sums bags in order
            np.add.at(gw, (rows[arg[b, c]], c), g[b, c])
            return gw, None, None, None
        gp = g[segk]
        if ctx.mode == "mean":
            gp = gp / counts[segk][:, None].astype(g.dtype)
        elif psw is not None:
            gp = gp * _take(psw.reshape(-1), keep)[:, None]
        if freq is not None:
            gp = gp / freq[rows][:, None].astype(g.dtype)
        gw = _scatter_rows(gp, rows, n, g.dtype) if ctx.needs_input_grad[0] else None
        gpsw = None
        if ctx.has_psw and ctx.needs_input_grad[3]:
            flat = np.zeros(int(np.prod(in_shape)), g.dtype)
            flat[slice(None) if keep is None else keep] = (g[segk] * weight[rows]).sum(1)
            gpsw = flat.reshape(in_shape)
        return gw, None, None, gpsw


EmbeddingBagFunction.op.float64 = EmbeddingBagFunction  # numpy in the weight's dtype (the kernel path is float32)
