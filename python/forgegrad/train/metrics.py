"""Metrics accumulated over batches: "accuracy" and "mae", or any callable.

A metric sees the model output and the target of each batch as numpy arrays (no graph) and
reports the value over everything seen since ``reset()``.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Optional

import numpy as np

from ..tensor import Tensor

__all__ = ["Metric", "Accuracy", "MeanAbsoluteError", "FunctionMetric", "get_metric", "get_metrics"]


def _np(x) -> np.ndarray:
    return x._data if isinstance(x, Tensor) else np.asarray(x)


class Metric:
    """Base class: ``update(output, target)`` per batch, ``compute()`` for the running value."""

    name = "metric"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._total = 0.0
        self._count = 0

    def update(self, output, target) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self) -> float:
        return float(self._total / self._count) if self._count else float("nan")


class Accuracy(Metric):
    """Fraction of correct predictions.

    * output (N, C) with C > 1: the predicted class is the argmax over dim 1; the target is class
      indices (N,) or one-hot / probabilities (N, C) (then its argmax).
    * output (N,) or (N, 1): binary; the prediction is ``output > 0.5`` for probabilities and
      ``output > 0`` for logits, the target is 0/1 (a float target is thresholded at 0.5).

    Args:
        from_logits: whether a binary output is a logit. None guesses per batch: logits when any
            value lies outside [0, 1]. ``fit`` sets it from the loss function when it can tell
            (BCEWithLogitsLoss -> True, BCELoss -> False).
    """

    name = "accuracy"

    def __init__(self, from_logits: Optional[bool] = None):
        self.from_logits = from_logits
        super().__init__()

    def update(self, output, target) -> None:
        out, tgt = _np(output), _np(target)
        n = out.shape[0] if out.ndim else 1
        if out.ndim >= 2 and out.shape[1] > 1:  # multi-class scores over dim 1
            pred = out.argmax(axis=1)
            if tgt.shape == out.shape:  # one-hot or class probabilities
                tgt = tgt.argmax(axis=1)
            if pred.shape != tgt.shape:
                raise ValueError(f"accuracy: output {out.shape} gives predictions of shape {pred.shape} but "
                                 f"the target has shape {tgt.shape}")
            correct = pred == tgt
        else:  # binary: one score per sample
            scores = out.reshape(n, -1)
            tgt = tgt.reshape(n, -1)
            if scores.shape != tgt.shape:
                raise ValueError(f"accuracy: output {out.shape} and target {_np(target).shape} do not match")
            logits = self.from_logits
            if logits is None:
                logits = bool(scores.size and (scores.min() < 0.0 or scores.max() > 1.0))
            pred = scores > (0.0 if logits else 0.5)
            truth = tgt > 0.5 if tgt.dtype.kind == "f" else tgt.astype(bool)
            correct = pred == truth
        self._total += float(np.count_nonzero(correct))
        self._count += int(correct.size)


class MeanAbsoluteError(Metric):
    """Mean of |output - target| over all elements (shapes must match up to a trailing 1)."""

    name = "mae"

    def update(self, output, target) -> None:
        out, tgt = _np(output).astype(np.float64), _np(target).astype(np.float64)
        if out.shape != tgt.shape:
            if out.size != tgt.size:
                raise ValueError(f"mae: output {out.shape} and target {tgt.shape} do not match")
            tgt = tgt.reshape(out.shape)
        self._total += float(np.abs(out - tgt).sum())
        self._count += int(out.size)


class FunctionMetric(Metric):
    """A callable ``fn(output, target) -> float`` (numpy arrays in), averaged weighted by batch size."""

    def __init__(self, fn: Callable, name: Optional[str] = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "metric")
        super().__init__()

    def update(self, output, target) -> None:
        out, tgt = _np(output), _np(target)
        n = out.shape[0] if out.ndim else 1
        self._total += float(self.fn(out, tgt)) * n
        self._count += n


_BY_NAME = {"accuracy": Accuracy, "acc": Accuracy, "binary_accuracy": Accuracy, "categorical_accuracy": Accuracy,
            "sparse_categorical_accuracy": Accuracy, "mae": MeanAbsoluteError,
            "mean_absolute_error": MeanAbsoluteError}


def get_metric(spec) -> Metric:
    """A Metric from a name ("accuracy", "acc", "mae"), a Metric instance or class, or a callable."""
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, type) and issubclass(spec, Metric):
        return spec()
    if isinstance(spec, str):
        key = spec.lower()
        if key not in _BY_NAME:
            raise ValueError(f"unknown metric {spec!r}; expected one of {sorted(_BY_NAME)}, a Metric or a callable")
        m = _BY_NAME[key]()
        if key in ("acc", "mean_absolute_error"):
            m.name = key if key == "acc" else "mae"
        return m
    if callable(spec):
        return FunctionMetric(spec)
    raise TypeError(f"a metric must be a name, a Metric or a callable, got {type(spec).__name__}")


def get_metrics(specs: Iterable) -> List[Metric]:
    if specs is None:
        return []
    if isinstance(specs, (str, Metric)) or callable(specs):
        specs = [specs]
    metrics = [get_metric(s) for s in specs]
    names = [m.name for m in metrics]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate metric names {sorted(dup)}")
    if any(n in ("loss", "lr") or n.startswith("val_") for n in names):
        raise ValueError(f"metric names must not be 'loss', 'lr' or start with 'val_': {names}")
    return metrics
