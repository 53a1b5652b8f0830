"""F.embedding_bag(..., sparse=True): the bags' values as the dense op's (ops/embedding_bag.py), the weight's
gradient a sparse COO tensor as torch's: one entry per kept position of input (padding_idx left out, uncoalesced,
in position order), each the gradient of its bag scaled as the reduction did (mean: 1 / the bag's kept count;
sum: its per_sample_weight). torch refuses mode "max" with sparse weights, and scale_grad_by_freq."""
from __future__ import annotations

import numpy as np

from ..ops.embedding_bag import EmbeddingBagFunction, _plan, _take
from ._autograd import SparseFunction
from ._storage import COO


class EmbeddingBagSparse(SparseFunction):
    name = "embedding_bag"

    @staticmethod
    def forward(ctx, weight, input, offsets, per_sample_weights, mode, include_last_offset, padding_idx):
        if mode == "max":
            raise ValueError("embedding_bag: max mode does not support sparse weights")
        # the dense op's forward (its checks, its kernels) for the values and per_sample_weights' gradient
        out = EmbeddingBagFunction.forward(ctx, weight, input, offsets, per_sample_weights, mode,
                                           include_last_offset, padding_idx, False)
        keep, rows, segk, counts, _, _ = _plan(weight, input, offsets, per_sample_weights, mode,
                                               include_last_offset, padding_idx, False)
        ctx.sparse_plan = (keep, rows, segk, counts, weight.shape, mode)
        ctx.psw_flat = None if per_sample_weights is None else per_sample_weights.reshape(-1)
        return out

    @staticmethod
    def backward(ctx, g):
        keep, rows, segk, counts, shape, mode = ctx.sparse_plan
        need_w = ctx.needs_input_grad[0]
        gpsw = None
        if ctx.psw_flat is not None and ctx.needs_input_grad[3]:  # the dense op's rule, its weight gradient off
            ctx.needs_input_grad = [False] + list(ctx.needs_input_grad[1:])
            gpsw = EmbeddingBagFunction.backward(ctx, g)[3]
        gw = None
        if need_w:
            vals = g[segk]
            if mode == "mean":
                vals = vals / counts[segk][:, None].astype(g.dtype)
            elif ctx.psw_flat is not None:
                vals = vals * _take(ctx.psw_flat, keep)[:, None]
            gw = COO(rows.reshape(1, -1).astype(np.int64), np.ascontiguousarray(vals, g.dtype), shape,
                     rows.size <= 1)
        return gw, None, None, gpsw, None, None, None
