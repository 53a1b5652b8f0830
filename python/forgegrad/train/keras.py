"""Keras-style sugar on numpy arrays: compile / fit / evaluate / predict (behind ``Sequential.compile`` etc.).

    model = nn.Sequential(nn.Dense(64, "relu"), nn.Dense(32, "relu"), nn.Dense(1, "sigmoid"))
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X, y, epochs=20, batch_size=32, validation_split=0.2)

Semantics follow Keras where they matter:
* ``validation_split`` holds out the LAST fraction of the arrays (before any shuffling).
* "binary_crossentropy" on a model ending in a sigmoid is BCE on probabilities; on any other
  output it is BCE on logits. Likewise "categorical_crossentropy" / "sparse_categorical_crossentropy"
  use the probabilities of a final softmax, and otherwise treat the output as logits.
* Dense layers without ``input_dim`` infer their input size on the first call, so ``fit`` runs
  the model on one sample (no_grad) BEFORE creating the optimizer; an optimizer given by name is
  created then, and kept for later ``fit`` calls (its state carries over, as in Keras).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from ..autograd import no_grad
from ..nn import functional as F
from ..tensor import Tensor
from . import loop
from .callbacks import History

__all__ = ["compile", "fit", "evaluate", "predict"]

_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
# Keras' default learning rates (torch's SGD has none worth relying on).
_DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 1e-2, "rmsprop": 1e-3, "adagrad": 1e-3}

_LOSS_ALIASES = {
    "binary_crossentropy": "bce", "bce": "bce",
    "categorical_crossentropy": "cce", "sparse_categorical_crossentropy": "scce",
    "mse": "mse", "mean_squared_error": "mse", "mae": "mae", "mean_absolute_error": "mae",
}


class CompileConfig:
    """What ``compile`` stored on the model (``model._compile_config``)."""

    def __init__(self, loss, optimizer, metrics, optimizer_kwargs):
        self.loss = loss
        self.loss_kind = _LOSS_ALIASES.get(loss.lower()) if isinstance(loss, str) else None
        self.optimizer_spec = optimizer
        self.optimizer_kwargs = dict(optimizer_kwargs)
        self.metrics = list(metrics)
        self.optimizer = None  # created by the first fit (after the model is built)
        self.loss_fn: Optional[Callable] = None

    def __repr__(self):
        return (f"CompileConfig(loss={self.loss!r}, optimizer={self.optimizer_spec!r}, metrics={self.metrics}, "
                f"optimizer_kwargs={self.optimizer_kwargs})")


# ---- output activation and losses ---------------------------------------------------------------
def _final_activation(model) -> Optional[str]:
    """'sigmoid' / 'softmax' when the model's last layer applies it, else None."""
    from ..nn.activation import LogSoftmax, Sigmoid, Softmax
    from ..nn.linear import Dense

    last = model
    while True:
        children = list(last.children()) if hasattr(last, "children") else []
        if not children:
            break
        last = children[-1]
    if isinstance(last, LogSoftmax):
        return None
    if isinstance(last, Sigmoid):
        return "sigmoid"
    if isinstance(last, Softmax):
        return "softmax"
    if isinstance(last, Dense) and last.activation_name in ("sigmoid", "softmax"):
        return last.activation_name
    return None


def _log_probs(p: Tensor) -> Tensor:
    return p.clamp(1e-7, 1.0).log()  # Keras clips probabilities with epsilon 1e-7 as well


def _make_loss(kind: str, activation: Optional[str]) -> Callable:
    if kind == "bce":
        if activation == "sigmoid":
            fn = lambda out, y: F.binary_cross_entropy(out, y)  # noqa: E731
            fn.from_logits = False
        else:
            fn = lambda out, y: F.binary_cross_entropy_with_logits(out, y)  # noqa: E731
            fn.from_logits = True
    elif kind == "cce":  # one-hot / probability targets (N, C)
        if activation == "softmax":
            fn = lambda out, y: -(y * _log_probs(out)).sum(dim=1).mean()  # noqa: E731
        else:
            fn = lambda out, y: F.cross_entropy(out, y)  # noqa: E731
    elif kind == "scce":  # integer class targets (N,)
        if activation == "softmax":
            fn = lambda out, y: F.nll_loss(_log_probs(out), y)  # noqa: E731
        else:
            fn = lambda out, y: F.cross_entropy(out, y)  # noqa: E731
    elif kind == "mse":
        fn = lambda out, y: F.mse_loss(out, y)  # noqa: E731
    elif kind == "mae":
        fn = lambda out, y: F.l1_loss(out, y)  # noqa: E731
    else:  # pragma: no cover - guarded by compile
        raise ValueError(kind)
    fn.__name__ = kind
    return fn


# ---- compile ------------------------------------------------------------------------------------
def compile(model, loss="binary_crossentropy", optimizer="adam", metrics=("accuracy",), **optimizer_kwargs):
    """Configure ``model`` for ``fit``: store the loss, optimizer and metrics on it.

    Args:
        loss: "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
            "mse", "mae", or a callable ``loss(output, target) -> scalar Tensor``.
        optimizer: "adam", "adamw", "sgd" (also "rmsprop", "adagrad" when forgegrad.optim has them),
            an optimizer instance over the model's (already built) parameters, or an optimizer class
            / factory called as ``optimizer(params, **optimizer_kwargs)``.
        metrics: e.g. ["accuracy"], ["mae"].
        **optimizer_kwargs: passed to the optimizer (``learning_rate`` is accepted for ``lr``).
    """
    if isinstance(loss, str):
        if loss.lower() not in _LOSS_ALIASES:
            raise ValueError(f"compile: unknown loss {loss!r}; expected one of {sorted(_LOSS_ALIASES)} or a callable")
    elif not callable(loss):
        raise TypeError(f"compile: loss must be a name or a callable, got {type(loss).__name__}")
    if isinstance(optimizer, str):
        if optimizer.lower() not in _OPTIMIZERS:
            raise ValueError(f"compile: unknown optimizer {optimizer!r}; expected one of {sorted(_OPTIMIZERS)}, "
                             "an optimizer instance or an optimizer class")
    elif not (callable(getattr(optimizer, "step", None)) or callable(optimizer)):
        raise TypeError(f"compile: optimizer must be a name, an optimizer or an optimizer class, got "
                        f"{type(optimizer).__name__}")
    if "learning_rate" in optimizer_kwargs:
        if "lr" in optimizer_kwargs:
            raise TypeError("compile: pass lr or learning_rate, not both")
        optimizer_kwargs["lr"] = optimizer_kwargs.pop("learning_rate")
    from .metrics import get_metrics
    get_metrics(metrics)  # validate names now rather than at fit time
    if isinstance(metrics, str) or metrics is None:
        metrics = [metrics] if metrics else []
    cfg = CompileConfig(loss, optimizer, metrics, optimizer_kwargs)
    object.__setattr__(model, "_compile_config", cfg)
    return cfg


def _config(model, who: str) -> CompileConfig:
    cfg = model.__dict__.get("_compile_config")
    if cfg is None:
        raise RuntimeError(f"{who}: the model must be compiled first: model.compile(loss=..., optimizer=...)")
    return cfg


def _build(model, x: np.ndarray) -> Tensor:
    """Run one sample through the model (no_grad) so that lazily-sized layers create their parameters."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            return model(loop._as_tensor(x[:1], loop._model_device(model)))
    finally:
        model.train(was_training)


def _make_optimizer(cfg: CompileConfig, model):
    spec = cfg.optimizer_spec
    params = list(model.parameters())
    if isinstance(spec, str):
        name = spec.lower()
        try:
            from .. import optim
        except ImportError as e:
            raise ImportError(f"compile(optimizer={spec!r}) needs forgegrad.optim") from e
        cls = getattr(optim, _OPTIMIZERS[name], None)
        if cls is None:
            raise ValueError(f"compile: forgegrad.optim has no {_OPTIMIZERS[name]} optimizer")
        kwargs = dict(cfg.optimizer_kwargs)
        kwargs.setdefault("lr", _DEFAULT_LR[name])
        return cls(params, **kwargs)
    if callable(getattr(spec, "step", None)) and not isinstance(spec, type):  # an optimizer instance
        held = {id(p) for g in getattr(spec, "param_groups", ()) for p in g.get("params", ())}
        missing = [n for n, p in model.named_parameters() if id(p) not in held]
        if getattr(spec, "param_groups", None) is not None and missing:
            raise ValueError(f"compile: the optimizer does not hold the model parameters {missing[:5]}"
                             f"{'...' if len(missing) > 5 else ''}: it was probably created before the model's "
                             "Dense layers were built. Pass optimizer='adam' (created after building), or call the "
                             "model on one batch before creating the optimizer.")
        return spec
    return spec(params, **cfg.optimizer_kwargs)  # a class or factory


def _as_features(x, who: str) -> np.ndarray:
    arr = x._data if isinstance(x, Tensor) else np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{who}: x must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{who}: x must have a sample dimension")
    return arr.astype(np.float32, copy=False)


def _prepare_target(cfg: CompileConfig, y, out_shape, who: str) -> np.ndarray:
    """Targets in the dtype and shape the loss wants: float (N, 1) for a (N, 1) output, int64 labels..."""
    y = y._data if isinstance(y, Tensor) else np.asarray(y)
    kind = cfg.loss_kind
    if kind == "scce":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise ValueError(f"{who}: sparse_categorical_crossentropy needs integer class labels")
        return y.astype(np.int64, copy=False)
    if kind in ("bce", "mse", "mae", "cce"):
        y = y.astype(np.float32, copy=False)
        if len(out_shape) == 2 and out_shape[1] == 1 and y.ndim == 1:
            y = y.reshape(-1, 1)  # Keras accepts (N,) labels for a (N, 1) output
        return y
    return y  # a user loss gets the target as given


def _ensure_ready(model, cfg: CompileConfig, x: np.ndarray, with_optimizer: bool = True):
    """Build the model, then resolve the loss (needs the final layer) and the optimizer (needs the
    parameters). Returns the output shape for one sample."""
    out = _build(model, x)
    if cfg.loss_fn is None:
        cfg.loss_fn = _make_loss(cfg.loss_kind, _final_activation(model)) if cfg.loss_kind else cfg.loss
    if with_optimizer and cfg.optimizer is None:
        cfg.optimizer = _make_optimizer(cfg, model)
    return out.shape


def _loader(x, y, batch_size, shuffle):
    from ..data import DataLoader, TensorDataset
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


def _check_batch_size(batch_size, who):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"{who}: batch_size must be a positive int, got {batch_size!r}")


# ---- fit / evaluate / predict ---------------------------------------------------------------------
def fit(model, x, y, epochs: int = 10, batch_size: int = 32, validation_split: float = 0.0,
        validation_data=None, shuffle: bool = True, verbose: int = 1, callbacks: Sequence = ()) -> History:
    """Train a compiled model on arrays ``x``, ``y``; returns the History (Keras' ``history.history``
    keys: loss, <metrics>, val_loss, val_<metrics>).

    Args:
        validation_split: fraction of the data held out for validation: the LAST samples, taken
            before shuffling (as Keras does). Ignored when validation_data is given.
        validation_data: ``(x_val, y_val)``.
        shuffle: reshuffle the training samples every epoch (forgegrad's global generator, so
            ``forgegrad.manual_seed`` makes runs repeatable).
        verbose: 0 silent, 1 progress bar (tqdm, when installed), 2 one line per epoch.
    """
    cfg = _config(model, "fit")
    _check_batch_size(batch_size, "fit")
    x = _as_features(x, "fit")
    y_raw = y._data if isinstance(y, Tensor) else np.asarray(y)
    if y_raw.ndim == 0 or y_raw.shape[0] != x.shape[0]:
        raise ValueError(f"fit: x has {x.shape[0]} samples but y has shape {y_raw.shape}")
    if validation_data is not None:
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
            raise ValueError("fit: validation_data must be a tuple (x_val, y_val)")
        x_val, y_val = _as_features(validation_data[0], "fit"), validation_data[1]
        x_tr, y_tr = x, y_raw
    elif validation_split:
        if not 0.0 < float(validation_split) < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split}")
        split_at = int(x.shape[0] * (1.0 - float(validation_split)))
        if split_at <= 0 or split_at >= x.shape[0]:
            raise ValueError(f"fit: validation_split={validation_split} of {x.shape[0]} samples leaves an empty "
                             "training or validation set")
        x_tr, y_tr, x_val, y_val = x[:split_at], y_raw[:split_at], x[split_at:], y_raw[split_at:]
    else:
        x_tr, y_tr, x_val, y_val = x, y_raw, None, None

    out_shape = _ensure_ready(model, cfg, x_tr)
    train_loader = _loader(x_tr, _prepare_target(cfg, y_tr, out_shape, "fit"), batch_size, shuffle)
    val_loader = None
    if x_val is not None:
        y_val = _prepare_target(cfg, y_val, out_shape, "fit")
        if len(x_val) != len(y_val):
            raise ValueError(f"fit: validation x has {len(x_val)} samples but y has {len(y_val)}")
        val_loader = _loader(x_val, y_val, batch_size, False)
    progress = {0: False, 1: True, 2: "line"}.get(int(verbose), True)
    return loop.fit(model, cfg.loss_fn, cfg.optimizer, train_loader, epochs=epochs, val_loader=val_loader,
                    metrics=cfg.metrics, callbacks=callbacks, progress=progress)


def evaluate(model, x, y, batch_size: int = 32, verbose: int = 0, return_dict: bool = False):
    """Loss and metrics on ``x``, ``y``: ``loss`` alone when compiled without metrics, else
    ``[loss, metric1, ...]`` (Keras' order), or a dict with ``return_dict=True``."""
    cfg = _config(model, "evaluate")
    _check_batch_size(batch_size, "evaluate")
    x = _as_features(x, "evaluate")
    out_shape = _ensure_ready(model, cfg, x, with_optimizer=False)
    y = _prepare_target(cfg, y, out_shape, "evaluate")
    if len(y) != len(x):
        raise ValueError(f"evaluate: x has {len(x)} samples but y has {len(y)}")
    logs = loop.evaluate(model, cfg.loss_fn, _loader(x, y, batch_size, False), cfg.metrics)
    if verbose:
        print(loop._fmt(logs))
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


def predict(model, x, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
    """Model outputs for ``x`` as a numpy array (no_grad, eval mode)."""
    _check_batch_size(batch_size, "predict")
    return loop.predict(model, _as_features(x, "predict"), batch_size=batch_size)._data
