"""Samples, torch reference, bad inputs and ONNX mapping of the embedding_bag op (ops/embedding_bag.py)."""
from __future__ import annotations

import numpy as np

from ._samples import rand
from .registry import BadInput, Sample

INT64_MAX = 9223372036854775807


def _idx(n, *shape, seed=0, dtype=np.int64):
    return np.random.default_rng(seed).integers(0, n, size=shape).astype(dtype)


def _ties(*shape, seed=0):
    """Values on a 0.5 grid: bags hold equal maxima, so the tie rule (first position) is checked."""
    return (np.round(rand(*shape, seed=seed) * 2) / 2).astype(np.float32)


def samples():
    pad2 = _idx(9, 4, 5, seed=1)
    pad2[1] = 3  # a bag of padding only: zeros, no gradient
    pad2[2, :2] = 3
    off_empty = np.array([0, 3, 3, 7, 11], np.int64)  # bag 1 is empty
    large_off = np.sort(np.random.default_rng(9).integers(0, 3000, size=99)).astype(np.int64)
    large_off = np.concatenate([[0], large_off])
    tail_idx = _idx(8, 12, seed=6)
    tail_idx[[1, 5]] = 7
    return [
        Sample((rand(11, 5), _idx(11, 4, 3), None, None), {}, "2-D input, mean (the default)"),
        Sample((rand(9, 6, seed=1), pad2, None, rand(4, 5, seed=2)), {"mode": "sum", "padding_idx": 3},
               "2-D sum, per_sample_weights, padding_idx, a bag of padding"),
        Sample((_ties(9, 7, seed=3), pad2, None, None), {"mode": "max", "padding_idx": -6},
               "2-D max, ties, padding_idx -6"),
        Sample((rand(10, 3, seed=4), _idx(10, 13, seed=5), off_empty, rand(13, seed=6)), {"mode": "sum"},
               "offsets, an empty bag, per_sample_weights"),
        Sample((rand(8, 4, seed=7), tail_idx, np.array([0, 2, 2, 6, 12], np.int64), None),
               {"mode": "mean", "include_last_offset": True, "padding_idx": 7}, "include_last_offset, padding_idx"),
        Sample((_ties(7, 5, seed=8), _idx(7, 10, seed=9), np.array([0, 0, 4, 5], np.int64), None),
               {"mode": "max"}, "offsets max, an empty first bag, ties"),
        Sample((rand(6, 3, seed=10), _idx(6, 11, seed=11), np.array([0, 4, 4, 9], np.int64), None),
               {"mode": "mean", "scale_grad_by_freq": True}, "scale_grad_by_freq mean, repeats"),
        Sample((rand(9, 6, seed=12), pad2, None, None),
               {"mode": "sum", "scale_grad_by_freq": True, "padding_idx": 3}, "scale_grad_by_freq sum, padding"),
        Sample((rand(12, 7, seed=13), _idx(12, 9, seed=14, dtype=np.int32), np.array([0, 5], np.int32), None),
               {"mode": "sum"}, "int32 input and offsets"),
        Sample((rand(1000, 64, seed=15), _idx(1000, 3000, seed=16), large_off, rand(3000, seed=17)),
               {"mode": "sum"}, "large"),
    ]


def torch_reference(torch, weight, input, offsets=None, per_sample_weights=None, mode="mean",
                    include_last_offset=False, padding_idx=None, scale_grad_by_freq=False):
    F = torch.nn.functional
    if not (scale_grad_by_freq and weight.requires_grad):  # the flag changes the weight's gradient alone
        return F.embedding_bag(input, weight, offsets, mode=mode, per_sample_weights=per_sample_weights,
                               include_last_offset=include_last_offset, padding_idx=padding_idx)
    # torch 2.13's CPU embedding_bag divides some rows' gradients by another row's count (see the op's docstring):
    # F.embedding's scale_grad_by_freq on every entry, then embedding_bag over those rows (padding entries pointed
    # at an appended padding row, so that they stay out of their bags)
    flat = input.reshape(-1).long()
    rows = F.embedding(flat, weight, padding_idx=padding_idx, scale_grad_by_freq=True)
    n = flat.numel()
    pos = torch.arange(n)
    if padding_idx is not None:
        pos = torch.where(flat == padding_idx % weight.shape[0], n, pos)
    rows = torch.cat([rows, rows.new_zeros(1, rows.shape[1])])
    return F.embedding_bag(pos.reshape(input.shape), rows, offsets, mode=mode, per_sample_weights=per_sample_weights,
                           include_last_offset=include_last_offset, padding_idx=n)


def bad_inputs():
    w, idx = rand(10, 4), _idx(10, 8)
    off = np.array([0, 3, 5], np.int64)
    return [
        BadInput((w, idx, np.array([1, 4], np.int64), None), {}, ValueError, r"offsets\[0\]"),
        BadInput((w, idx, np.array([0, 5, 3], np.int64), None), {}, ValueError, "offsets"),
        BadInput((w, idx, np.array([0, 9], np.int64), None), {}, ValueError, "offsets"),
        BadInput((w, idx + 10, off, None), {}, IndexError, "input"),
        BadInput((w, idx - 10, off, None), {}, IndexError, "input"),
        BadInput((w, idx.astype(np.float32), off, None), {}, TypeError, "input"),
        BadInput((w, idx, off.astype(np.float32), None), {}, TypeError, "offsets"),
        BadInput((w, idx.reshape(2, 2, 2), None, None), {}, ValueError, "input"),
        BadInput((w, idx.reshape(2, 4), off, None), {}, ValueError, "offsets"),
        BadInput((w, idx, None, None), {}, ValueError, "offsets"),
        BadInput((w, idx, off.reshape(1, 3), None), {}, ValueError, "offsets"),
        BadInput((rand(10), idx, off, None), {}, ValueError, "weight"),
        BadInput((w, idx, off, None), {"mode": "min"}, ValueError, "mode"),
        BadInput((w, idx, off, rand(8)), {"mode": "mean"}, NotImplementedError, "per_sample_weights"),
        BadInput((w, idx, off, rand(7)), {"mode": "sum"}, ValueError, "per_sample_weights"),
        BadInput((w, idx, off, None), {"mode": "max", "scale_grad_by_freq": True}, ValueError,
                 "scale_grad_by_freq"),
        BadInput((w, idx, off, None), {"padding_idx": 10}, ValueError, "padding_idx"),
        BadInput((w, idx, off, None), {"padding_idx": 1.5}, TypeError, "padding_idx"),
        BadInput((w, idx, np.zeros(0, np.int64), None), {"include_last_offset": True}, ValueError, "offsets"),
        BadInput((w, idx, off, None), {"include_last_offset": True}, ValueError, r"offsets\[-1\]"),
        BadInput((w, idx, off, None), {"include_last_offset": "yes"}, TypeError, "include_last_offset"),
        BadInput((w, np.zeros((3, 0), np.int64), None, None), {}, ValueError, "input"),
    ]


# ---- ONNX ----------------------------------------------------------------------------------------------
def onnx_mapping(ctx, op):
    """Gather, then the bag reduction: over axis 1 of a 2-D input; through a (bags, N) membership mask made from
    the offsets for a 1-D one (MatMul for sum / mean, Where + ReduceMax for max: a (bags, N, dim) temporary)."""
    f = op.out_dtype(0)
    mode, ilo = op.attr("mode", "mean"), bool(op.attr("include_last_offset", False))
    pad = op.attr("padding_idx")
    n = int(np.shape(op.args["weight"])[0])
    idx = op.input("input", np.int64)
    psw = op.input("per_sample_weights") if op.attr("per_sample_weights") is not None else None
    g = ctx.node("Gather", [op.input("weight"), idx], axis=0)
    zero, ninf = ctx.const(np.asarray(0, f)), ctx.const(np.asarray(-np.inf, f))
    keep = None
    if pad is not None:
        keep = ctx.node("Not", [ctx.node("Equal", [idx, ctx.const(np.asarray(int(pad) % n, np.int64))])])
    if op.attr("offsets") is None:  # (B, L, D) -> reduce over L
        keep3 = None if keep is None else ctx.unsqueeze(keep, [2])
        if psw is not None:
            g = ctx.node("Mul", [g, ctx.unsqueeze(psw, [2])])
        if mode == "max":
            if keep3 is None:
                return [ctx.reduce("ReduceMax", g, [1], False)]
            m = ctx.reduce("ReduceMax", ctx.node("Where", [keep3, g, ninf]), [1], False)
            any_kept = ctx.reduce("ReduceMax", ctx.cast(keep3, np.int64), [1], False)
            return [ctx.node("Where", [ctx.cast(any_kept, bool), m, zero])]
        if keep3 is None:
            return [ctx.reduce("ReduceSum" if mode == "sum" else "ReduceMean", g, [1], False)]
        s = ctx.reduce("ReduceSum", ctx.node("Where", [keep3, g, zero]), [1], False)
        if mode == "sum":
            return [s]
        cnt = ctx.reduce("ReduceSum", ctx.cast(keep, f), [1], True)
        return [ctx.node("Div", [s, ctx.node("Max", [cnt, ctx.const(np.asarray(1, f))])])]
    off = op.input("offsets", np.int64)
    length = ctx.node("Shape", [idx])  # (1,): N
    pos = ctx.node("Range", [ctx.const(np.asarray(0, np.int64)), ctx.squeeze(length, [0]),
                             ctx.const(np.asarray(1, np.int64))])
    rest = ctx.node("Slice", [off, ctx.ints([1]), ctx.ints([INT64_MAX]), ctx.ints([0])])
    if ilo:
        starts, ends = ctx.node("Slice", [off, ctx.ints([0]), ctx.ints([-1]), ctx.ints([0])]), rest
    else:
        starts, ends = off, ctx.node("Concat", [rest, length], axis=0)
    row = ctx.unsqueeze(pos, [0])
    member = ctx.node("And", [ctx.node("GreaterOrEqual", [row, ctx.unsqueeze(starts, [1])]),
                              ctx.node("Less", [row, ctx.unsqueeze(ends, [1])])])  # (B, N)
    if keep is not None:
        member = ctx.node("And", [member, ctx.unsqueeze(keep, [0])])
    mf = ctx.cast(member, f)
    cnt = ctx.reduce("ReduceSum", mf, [1], True)
    if mode == "max":
        m = ctx.reduce("ReduceMax", ctx.node("Where", [ctx.unsqueeze(member, [2]), ctx.unsqueeze(g, [0]), ninf]),
                       [1], False)
        return [ctx.node("Where", [ctx.node("Greater", [cnt, zero]), m, zero])]
    weights = mf if psw is None else ctx.node("Mul", [mf, ctx.unsqueeze(psw, [0])])
    s = ctx.node("MatMul", [weights, g])
    if mode == "sum":
        return [s]
    return [ctx.node("Div", [s, ctx.node("Max", [cnt, ctx.const(np.asarray(1, f))])])]
