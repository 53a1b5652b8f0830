"""Samples, torch reference and bad inputs of linear_cross_entropy (ops/linear_cross_entropy.py) for the generated
checks: odd row and class counts, chunk sizes that do not divide the rows, ignored rows, class weights, label
smoothing, every reduction, bias on and off, probability targets, K-dimensional out_features, a 1-D input, and
samples large enough to run on several threads (one of them over several chunks)."""
from __future__ import annotations

import numpy as np

from ._samples import labels, positive, rand
from .registry import BadInput, Sample


def _opts(**kw):
    from .linear_cross_entropy import LinearCrossEntropyOptions
    return LinearCrossEntropyOptions(**kw)


def _ignored(y, value, every=3):
    y = y.copy()
    y.reshape(-1)[::every] = value
    return y


def _probs(*shape, seed=0, axis=1):
    z = rand(*shape, seed=seed)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def samples():
    kdim_y = _ignored(labels(5, 3, 2, 3, seed=4), -100, every=4)
    return [
        Sample((rand(5, 7), rand(11, 7, seed=1), labels(5, 11, seed=2), rand(11, seed=3)), {}, "bias, mean",
               grad=(0, 1, 3)),
        Sample((rand(13, 6), rand(9, 6, seed=1), _ignored(labels(13, 9, seed=2), -100), None, positive(9, seed=3)),
               {"reduction": "sum", "options": _opts(batch_chunk_size=4)},
               "ignored rows, class weight, sum, chunks of 4 over 13 rows", grad=(0, 1)),
        Sample((rand(7, 5), rand(10, 5, seed=1), _ignored(labels(7, 10, seed=2), 3, every=2), rand(10, seed=3),
                positive(10, seed=4)),
               {"reduction": "none", "ignore_index": 3, "label_smoothing": 0.2,
                "options": _opts(batch_chunk_size=3)},
               "ignore_index 3, smoothing 0.2, weight, bias, none, chunks of 3", grad=(0, 1, 3)),
        Sample((rand(9, 4), rand(6, 4, seed=1), labels(9, 6, seed=2)), {"label_smoothing": 0.1},
               "smoothing, mean, no bias", grad=(0, 1)),
        Sample((rand(6), rand(8, 6, seed=1), labels(1, 8, seed=2).reshape(())), {"reduction": "none"},
               "1-D input, 0-d target", grad=(0, 1)),
        Sample((rand(6, 5), rand(7, 5, seed=1), _probs(6, 7, seed=2), None, positive(7, seed=3)),
               {"label_smoothing": 0.1, "options": _opts(batch_chunk_size=4)},
               "probability targets, weight, smoothing, mean", grad=(0, 1, 2, 4)),
        Sample((rand(5, 4), rand(3, 2, 3, 4, seed=1), kdim_y, rand(3, 2, 3, seed=3)),
               {"options": _opts(batch_chunk_size=2)}, "out_features (2, 3), bias, ignored, mean",
               grad=(0, 1, 3)),
        Sample((rand(4, 3), rand(5, 2, 3, seed=1), _probs(4, 5, 2, seed=2)), {"reduction": "none"},
               "out_features (2,), probability targets, none", grad=(0, 1, 2)),
        Sample((rand(300, 33), rand(1000, 33, seed=1), labels(300, 1000, seed=2), rand(1000, seed=3),
                positive(1000, seed=4)), {"label_smoothing": 0.05}, "large (several threads), one chunk",
               grad=(0, 1, 3)),
        Sample((rand(300, 33, seed=5), rand(1000, 33, seed=6), _ignored(labels(300, 1000, seed=7), -100, every=5)),
               {"reduction": "sum", "options": _opts(batch_chunk_size=64)}, "large, chunks of 64 over 300 rows",
               grad=(0, 1)),
    ]


def torch_ref(torch, input, linear_weight, target, linear_bias=None, weight=None, reduction="mean",
              ignore_index=None, label_smoothing=0.0, options=None):
    # torch's reference path (options=None): the chunked one refuses smoothing and probability targets
    return torch.nn.functional.linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias,
                                                    weight=weight, reduction=reduction, ignore_index=ignore_index,
                                                    label_smoothing=label_smoothing)


def bad_inputs():
    x, w, y = rand(5, 4), rand(7, 4, seed=1), labels(5, 7, seed=2)
    return [BadInput((x, w, y + 7), {}, IndexError, "target"),
            BadInput((x, w, y.astype(np.float32)), {}, TypeError, "target"),
            BadInput((x, w, y[:4]), {}, ValueError, "target"),
            BadInput((x, rand(7, 3), y), {}, RuntimeError, "linear_weight"),
            BadInput((x, rand(7), y), {}, RuntimeError, "linear_weight"),
            BadInput((x, w, y, rand(6)), {}, RuntimeError, "linear_bias"),
            BadInput((x, w, y, None, positive(6)), {}, RuntimeError, "weight"),
            BadInput((x, w, y), {"reduction": "avg"}, ValueError, "reduction"),
            BadInput((x, w, y), {"label_smoothing": 1.5}, RuntimeError, "label_smoothing"),
            BadInput((rand(2, 5, 4), w, y), {}, RuntimeError, "input"),
            BadInput((x, w, y), {"options": {"batch_chunk_size": 2}}, TypeError, "options"),
            BadInput((x, w, _probs(5, 7)), {"ignore_index": 1}, RuntimeError, "ignore_index"),
            BadInput((x, w.astype(np.float64), y), {}, RuntimeError, "dtype"),
            BadInput((rand(4), rand(3, 2, 4), labels(2, 3)), {}, RuntimeError, "batched input")]
