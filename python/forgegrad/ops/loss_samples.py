"""Samples, torch references and bad inputs of the loss ops (ops/loss.py), for the generated checks
in tests/test_op_registry.py.

Every reduction is covered, with class weights, ignore_index, label smoothing, probability targets,
(C,)-shaped single inputs and (N, C, d1, d2) inputs; the cross-entropy kernel (the one loss with a
C++ kernel) gets a sample large enough to run on several threads. Class-index targets are int64.
Only inputs with a torch gradient are checked for one (torch does not differentiate the class
weights of index targets, BCE's weights or pos_weight).
"""
from __future__ import annotations

import numpy as np

from ._samples import labels, positive, rand
from .registry import BadInput, Sample


def _F():
    import torch.nn.functional as F
    return F


def _probs(*shape, seed=0, axis=1):
    """Rows of class probabilities along `axis` (strictly positive)."""
    z = rand(*shape, seed=seed)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _log_probs(*shape, seed=0, axis=1):
    return np.log(_probs(*shape, seed=seed, axis=axis)).astype(np.float32)


def _unit(*shape, seed=0, low=0.02, high=0.98):
    return rand(*shape, seed=seed, low=low, high=high)


# ---- mse_loss, l1_loss -------------------------------------------------------------------------------
def _pointwise_samples():
    return [Sample((rand(3, 7), rand(3, 7, seed=1)), name="mean"),
            Sample((rand(2, 5, 9), rand(2, 5, 9, seed=1)), {"reduction": "sum"}, "sum 3-D"),
            Sample((rand(4), rand(4, seed=1)), {"reduction": "none"}, "none 1-D"),
            Sample((rand(5, 1, 3), rand(5, 1, 3, seed=2)), {"reduction": "none"}, "none 3-D")]


mse_samples = l1_samples = _pointwise_samples


def mse_torch(torch, inp, target, reduction="mean"):
    return _F().mse_loss(inp, target, reduction=reduction)


def l1_torch(torch, inp, target, reduction="mean"):
    return _F().l1_loss(inp, target, reduction=reduction)


def pointwise_bad_inputs(target_name):
    def bad():
        return [BadInput((rand(3, 7), rand(3, 6)), {}, ValueError, target_name),
                BadInput((rand(3, 7), rand(3, 7)), {"reduction": "avg"}, ValueError, "reduction")]

    return bad


# ---- binary_cross_entropy ------------------------------------------------------------------------------
def bce_samples():
    hard = (rand(4, 6, seed=3) > 0).astype(np.float32)
    return [Sample((_unit(3, 7), _unit(3, 7, seed=1), positive(3, 7, seed=2)), {}, "weight, mean", grad=(0, 1)),
            Sample((_unit(3, 7), _unit(3, 7, seed=1, low=0.0, high=1.0)), name="soft targets mean"),
            Sample((_unit(4, 6), hard), {"reduction": "sum"}, "0/1 targets sum"),
            Sample((_unit(2, 5, 3), _unit(2, 5, 3, seed=1), positive(3, seed=2)), {"reduction": "none"},
                   "weight (3,) broadcast, none", grad=(0, 1)),
            Sample((_unit(5), _unit(5, seed=1)), {"reduction": "none"}, "1-D")]


def bce_torch(torch, p, target, weight=None, reduction="mean"):
    return _F().binary_cross_entropy(p, target, weight, reduction=reduction)


def bce_bad_inputs():
    p, t = _unit(3, 7), _unit(3, 7, seed=1)
    return [BadInput((p, _unit(3, 6)), {}, ValueError, "target"),
            BadInput((p, t, positive(4)), {}, ValueError, "weight"),
            BadInput((rand(3, 7), t), {}, ValueError, "input should be between 0 and 1"),
            BadInput((p, t), {"reduction": "batchmean"}, ValueError, "reduction")]


# ---- binary_cross_entropy_with_logits ------------------------------------------------------------------
def bce_logits_samples():
    return [Sample((rand(4, 6), _unit(4, 6, seed=1), positive(4, 1, seed=2), positive(6, seed=3)),
                   {"reduction": "none"}, "weight (4, 1) and pos_weight, none", grad=(0, 1)),
            Sample((rand(3, 7, low=-6, high=6), _unit(3, 7, seed=1, low=0.0, high=1.0)), name="mean"),
            Sample((rand(2, 5, 3), _unit(2, 5, 3, seed=1, low=0.0, high=1.0), None, positive(3, seed=2)),
                   {"reduction": "sum"}, "pos_weight (3,), sum", grad=(0, 1)),
            Sample((rand(6, seed=4), _unit(6, seed=5)), {"reduction": "none"}, "1-D")]


def bce_logits_torch(torch, x, target, weight=None, pos_weight=None, reduction="mean"):
    return _F().binary_cross_entropy_with_logits(x, target, weight, reduction=reduction, pos_weight=pos_weight)


def bce_logits_bad_inputs():
    x, t = rand(3, 7), _unit(3, 7, seed=1)
    return [BadInput((x, _unit(7, 3)), {}, ValueError, "target"),
            BadInput((x, t, positive(2, 7)), {}, ValueError, "weight"),
            BadInput((x, t, None, positive(6)), {}, ValueError, "pos_weight"),
            BadInput((x, t), {"reduction": "mean "}, ValueError, "reduction")]


# ---- cross_entropy -------------------------------------------------------------------------------------
def _with_ignored(y, ignore_index, every=3):
    y = y.copy()
    y.reshape(-1)[::every] = ignore_index
    return y


def cross_entropy_samples():
    return [
        Sample((rand(5, 7), labels(5, 7), positive(7, seed=2)), {}, "index targets, weight, mean", grad=(0,)),
        Sample((rand(5, 7), labels(5, 7)), name="index targets, mean"),
        Sample((rand(3, 4, 5, 6), _with_ignored(labels(3, 4, 5, 6, seed=1), 2), positive(4, seed=2)),
               {"ignore_index": 2, "reduction": "sum"}, "(N, C, d1, d2), weight, ignore_index 2, sum", grad=(0,)),
        Sample((rand(6, 5), _with_ignored(labels(6, 5, seed=1), -1, every=4), positive(5, seed=2)),
               {"ignore_index": -1, "label_smoothing": 0.1, "reduction": "none"},
               "weight, ignore_index -1, label smoothing 0.1, none", grad=(0,)),
        Sample((rand(4, 9), labels(4, 9, seed=3)), {"label_smoothing": 0.25}, "label smoothing, mean"),
        Sample((rand(7), labels(1, 7, seed=4).reshape(())), {"reduction": "none"}, "(C,) input, 0-d target"),
        Sample((rand(4, 6), _probs(4, 6, seed=1)), name="probability targets, mean"),
        Sample((rand(2, 5, 3), _probs(2, 5, 3, seed=1), positive(5, seed=2)),
               {"label_smoothing": 0.2, "reduction": "none"}, "probability targets (N, C, d), weight, smoothing"),
        Sample((rand(3, 5), _probs(3, 5, seed=1)), {"reduction": "sum"}, "probability targets, sum"),
        # 8192 / C rows per task in the kernel: 1000 rows of 37 classes make several tasks
        Sample((rand(1000, 37), labels(1000, 37, seed=5), positive(37, seed=6)), {"label_smoothing": 0.05},
               "large (several threads)", grad=(0,)),
    ]


def cross_entropy_torch(torch, logits, target, weight=None, ignore_index=-100, reduction="mean",
                        label_smoothing=0.0):
    return _F().cross_entropy(logits, target, weight, ignore_index=ignore_index, reduction=reduction,
                              label_smoothing=label_smoothing)


def cross_entropy_bad_inputs():
    x, y = rand(5, 7), labels(5, 7)
    return [BadInput((x, labels(4, 7)), {}, ValueError, "target"),
            BadInput((x, rand(5, 6)), {}, ValueError, "target"),
            BadInput((x, y.astype(np.float32)[:, None]), {}, ValueError, "target"),
            BadInput((x, y + 7), {}, IndexError, "target"),
            BadInput((x, y, positive(6)), {}, ValueError, "weight"),
            BadInput((x, y), {"label_smoothing": 1.5}, ValueError, "label_smoothing"),
            BadInput((x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
            BadInput((np.ones((), np.float32), np.zeros((), np.int64)), {}, ValueError, "input")]


# ---- nll_loss ----------------------------------------------------------------------------------------
def nll_samples():
    return [Sample((_log_probs(4, 6), labels(4, 6, seed=5), positive(6, seed=6)), {}, "weight, mean", grad=(0,)),
            Sample((_log_probs(5, 7), labels(5, 7)), name="mean"),
            Sample((_log_probs(3, 4, 5), _with_ignored(labels(3, 4, 5, seed=1), 1), positive(4, seed=2)),
                   {"ignore_index": 1, "reduction": "sum"}, "(N, C, d), weight, ignore_index, sum", grad=(0,)),
            Sample((_log_probs(6, 5), labels(6, 5, seed=3), positive(5, seed=4)), {"reduction": "none"},
                   "weight, none", grad=(0,)),
            Sample((_log_probs(6, axis=0), labels(1, 6, seed=7).reshape(())), name="(C,) input, 0-d target")]


def nll_torch(torch, logp, target, weight=None, ignore_index=-100, reduction="mean"):
    return _F().nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)


def nll_bad_inputs():
    x, y = _log_probs(5, 7), labels(5, 7)
    return [BadInput((x, labels(5, 7, 2)), {}, ValueError, "target"),
            BadInput((x, y.astype(np.float32)), {}, TypeError, "target"),
            BadInput((x, y - 8), {}, IndexError, "target"),
            BadInput((x, y, positive(5)), {}, ValueError, "weight"),
            BadInput((x, y), {"reduction": None}, ValueError, "reduction")]


# ---- kl_div --------------------------------------------------------------------------------------------
def kl_div_samples():
    zeros = _probs(4, 6, seed=2)
    zeros[:, ::4] = 0.0  # torch's kl_div gives 0 where the target is 0; its target gradient there is -inf
    return [Sample((_log_probs(4, 6), _probs(4, 6, seed=1)), name="mean"),
            Sample((_log_probs(4, 6), _probs(4, 6, seed=1)), {"reduction": "batchmean"}, "batchmean"),
            Sample((_log_probs(3, 5, 2), _probs(3, 5, 2, seed=1)), {"reduction": "sum"}, "sum 3-D"),
            Sample((_log_probs(4, 6), zeros), {"reduction": "none"}, "zero targets, none", grad=(0,)),
            Sample((_log_probs(4, 6), _log_probs(4, 6, seed=1)), {"reduction": "batchmean", "log_target": True},
                   "log_target, batchmean"),
            Sample((_log_probs(5, axis=0), _log_probs(5, seed=1, axis=0)), {"reduction": "none", "log_target": True},
                   "1-D log_target, none")]


def kl_div_torch(torch, inp, target, reduction="mean", log_target=False):
    return _F().kl_div(inp, target, reduction=reduction, log_target=log_target)


def kl_div_bad_inputs():
    x, t = _log_probs(4, 6), _probs(4, 6, seed=1)
    return [BadInput((x, t[:, :5]), {}, ValueError, "target"),
            BadInput((x, t), {"reduction": "batch_mean"}, ValueError, "reduction")]
