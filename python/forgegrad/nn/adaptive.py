"""AdaptiveLogSoftmaxWithLoss (Grave et al., "Efficient softmax approximation for GPUs"), as torch.nn's: a head over
the shortlist and one entry per cluster, each cluster a two-layer projection (in_features -> in_features //
div_value ** (i + 1) -> cluster size). Same parameters and state_dict keys as torch's (head.weight, [head.bias],
tail.i.0.weight, tail.i.1.weight), so a torch state_dict loads unchanged."""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from .._validate import check_bool
from ..tensor import Tensor
from .container import ModuleList, Sequential
from .linear import Linear
from .module import Module

__all__ = ["AdaptiveLogSoftmaxWithLoss"]

_ASMoutput = namedtuple("_ASMoutput", ["output", "loss"])


class AdaptiveLogSoftmaxWithLoss(Module):
    """``AdaptiveLogSoftmaxWithLoss(in_features, n_classes, cutoffs, div_value=4.0, head_bias=False)``.

    ``forward(input (N, in_features) or (in_features,), target (N,) or ())`` -> ``(output, loss)``: output holds
    each target's log-probability, loss is its negated mean. ``log_prob(input)`` -> (N, n_classes);
    ``predict(input)`` -> (N,) the most likely class."""

    def __init__(self, in_features: int, n_classes: int, cutoffs, div_value: float = 4.0, head_bias: bool = False,
                 device=None, dtype=None):
        super().__init__()
        cutoffs = list(cutoffs)
        if len(cutoffs) == 0:
            raise ValueError("AdaptiveLogSoftmaxWithLoss: cutoffs should be a sequence of length larger than 0")
        if (cutoffs != sorted(cutoffs) or min(cutoffs) <= 0 or max(cutoffs) > n_classes - 1
                or len(set(cutoffs)) != len(cutoffs) or any(int(c) != c for c in cutoffs)):
            raise ValueError("AdaptiveLogSoftmaxWithLoss: cutoffs should be a sequence of unique, positive integers "
                             "sorted in an increasing order, where each value is between 1 and n_classes-1, got "
                             f"{cutoffs} for n_classes={n_classes}")
        self.in_features, self.n_classes = in_features, n_classes
        self.cutoffs = [int(c) for c in cutoffs] + [n_classes]
        self.div_value = div_value
        self.head_bias = check_bool(head_bias, "AdaptiveLogSoftmaxWithLoss: head_bias")
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs) - 1
        self.head_size = self.shortlist_size + self.n_clusters
        self.head = Linear(in_features, self.head_size, bias=self.head_bias)
        self.tail = ModuleList()
        for i in range(self.n_clusters):
            hsz = int(in_features // (div_value ** (i + 1)))
            osz = self.cutoffs[i + 1] - self.cutoffs[i]
            if hsz <= 0:
                raise ValueError(f"AdaptiveLogSoftmaxWithLoss: cluster {i}'s projection size in_features // "
                                 f"div_value ** {i + 1} is {hsz}: lower div_value or raise in_features")
            self.tail.append(Sequential(Linear(in_features, hsz, bias=False), Linear(hsz, osz, bias=False)))

    def reset_parameters(self) -> None:
        self.head.reset_parameters()
        for i2h, h2o in self.tail:
            i2h.reset_parameters()
            h2o.reset_parameters()

    def forward(self, input_, target_):
        if not isinstance(input_, Tensor):
            raise TypeError(f"AdaptiveLogSoftmaxWithLoss: input must be a forgegrad.Tensor, got "
                            f"{type(input_).__name__}")
        target = np.asarray(target_.numpy() if isinstance(target_, Tensor) else target_)
        if target.dtype.kind not in "iu":
            raise TypeError(f"AdaptiveLogSoftmaxWithLoss: target must hold integer class indices, got {target.dtype}")
        if target.ndim == 1:
            if input_.ndim != 2:
                raise RuntimeError(f"AdaptiveLogSoftmaxWithLoss: 1D target tensor expects 2D input tensors, but "
                                   f"found inputs with size {tuple(input_.shape)}")
            if input_.shape[0] != target.shape[0]:
                raise RuntimeError("AdaptiveLogSoftmaxWithLoss: input and target should have the same size in the "
                                   f"batch dimension, got {input_.shape[0]} and {target.shape[0]}")
        elif target.ndim == 0:
            if input_.ndim != 1:
                raise RuntimeError(f"AdaptiveLogSoftmaxWithLoss: 0D target tensor expects 1D input tensors, but "
                                   f"found inputs with size {tuple(input_.shape)}")
        else:
            raise RuntimeError("AdaptiveLogSoftmaxWithLoss: 0D or 1D target tensor expected, multi-target not "
                               "supported")
        batched = target.ndim > 0
        input = input_ if batched else input_.unsqueeze(0)
        target = target.reshape(-1).astype(np.int64)
        if target.size and (target.min() < 0 or target.max() >= self.n_classes):
            raise RuntimeError(f"AdaptiveLogSoftmaxWithLoss: target values should be in [0, {self.n_classes - 1}], "
                               f"but values in range [{target.min()}, {target.max()}] were found")
        n = target.shape[0]
        gather_inds = target.copy()
        output = None
        for i in range(1, len(self.cutoffs)):
            low, high = self.cutoffs[i - 1], self.cutoffs[i]
            rows = np.flatnonzero((target >= low) & (target < high))
            if rows.size == 0:
                continue
            gather_inds[rows] = self.shortlist_size + i - 1
            sub = input.index_select(0, Tensor._stored(rows))
            logprob = self.tail[i - 1](sub).log_softmax(1)
            local = logprob.gather(1, Tensor._stored((target[rows] - low)[:, None])).squeeze(1)
            part = input.new_zeros((n,)).index_add(0, Tensor._stored(rows), local)
            output = part if output is None else output + part
        head_logprob = self.head(input).log_softmax(1)
        head_part = head_logprob.gather(1, Tensor._stored(gather_inds[:, None])).squeeze(1)
        output = head_part if output is None else output + head_part
        loss = (-output).mean()
        if not batched:
            output = output.squeeze(0)
        return _ASMoutput(output, loss)

    def _get_full_log_prob(self, input, head_output):
        from .. import cat
        head_logprob = head_output.log_softmax(1)
        parts = [head_logprob[:, :self.shortlist_size]]
        for i in range(self.n_clusters):
            cluster_logprob = self.tail[i](input).log_softmax(1)
            parts.append(cluster_logprob + head_logprob[:, self.shortlist_size + i].unsqueeze(1))
        return cat(parts, dim=1)

    def log_prob(self, input):
        """(N, n_classes): the log-probability of every class."""
        return self._get_full_log_prob(input, self.head(input))

    def predict(self, input):
        """(N,) int64: the most likely class of each row (log_prob(input).argmax(1), computing the clusters only
        for the rows whose head's best entry is a cluster)."""
        head_output = self.head(input)
        output = head_output.argmax(1).numpy().copy()
        outside = np.flatnonzero(output >= self.shortlist_size)
        if outside.size:
            idx = Tensor._stored(outside)
            log_prob = self._get_full_log_prob(input.index_select(0, idx), head_output.index_select(0, idx))
            output[outside] = log_prob.argmax(1).numpy()
        return Tensor._stored(output.astype(np.int64))
