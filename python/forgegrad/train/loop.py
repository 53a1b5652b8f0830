"""The training loop: fit / evaluate / predict for any Module, loss function and optimizer.

    history = fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train_loader,
                  epochs=20, val_loader=val_loader, callbacks=[EarlyStopping(patience=3)])
"""
from __future__ import annotations

import copy
import sys
from typing import Iterable, Optional, Sequence

import numpy as np

from .. import devices as _devices
from ..autograd import no_grad
from ..tensor import Tensor
from .callbacks import Callback, EarlyStopping, FitState, History, ModelCheckpoint, _world
from .metrics import Accuracy, get_metrics

__all__ = ["fit", "evaluate", "predict"]


# ---- helpers ------------------------------------------------------------------------------------
def _as_tensor(x, device: str = "cpu") -> Tensor:
    """x as a Tensor on ``device`` (the model's): a loader's CPU batches follow a model moved to a GPU."""
    t = x if isinstance(x, Tensor) else Tensor._stored(x)
    return t if _devices.device_of(t._data) == device else t.to(device)


def _model_device(model) -> str:
    """The device of the model's first parameter ("cpu" without parameters): where batches go."""
    params = getattr(model, "parameters", None)
    for p in (params() if callable(params) else ()):
        return _devices.device_of(p._data)
    return "cpu"


def _host(t: Tensor) -> np.ndarray:
    """A tensor's values as numpy (a copy from a device), for the metrics."""
    return _devices.to_host(t._data)


def _split_batch(batch, device: str = "cpu"):
    """(inputs tuple, target) from a loader batch: ``(x, y)``, or ``(x1, ..., xk, y)``, on ``device``."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return tuple(_as_tensor(b, device) for b in batch[:-1]), _as_tensor(batch[-1], device)
    what = f"a {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    raise TypeError(f"fit/evaluate: each batch must be a tuple (inputs..., target); got {what}")


def _batch_len(t: Tensor) -> int:
    return int(t.shape[0]) if t.ndim else 1


def _logits_hint(loss_fn) -> Optional[bool]:
    """Whether a binary output is a logit, as far as the loss function tells."""
    from ..nn import functional as F
    from ..nn.loss import BCELoss, BCEWithLogitsLoss

    if isinstance(loss_fn, BCEWithLogitsLoss) or loss_fn is F.binary_cross_entropy_with_logits:
        return True
    if isinstance(loss_fn, BCELoss) or loss_fn is F.binary_cross_entropy:
        return False
    return getattr(loss_fn, "from_logits", None)


def _prepare_metrics(metrics, loss_fn):
    ms = [copy.deepcopy(m) for m in get_metrics(metrics)]
    hint = _logits_hint(loss_fn)
    for m in ms:
        if isinstance(m, Accuracy) and m.from_logits is None:
            m.from_logits = hint
    return ms


def _is_plateau_scheduler(scheduler) -> bool:
    try:
        from ..optim.lr_scheduler import ReduceLROnPlateau
        if isinstance(scheduler, ReduceLROnPlateau):
            return True
    except ImportError:
        pass
    return type(scheduler).__name__ == "ReduceLROnPlateau"


def _current_lr(optimizer) -> Optional[float]:
    groups = getattr(optimizer, "param_groups", None)
    if groups:
        return float(groups[0].get("lr", float("nan")))
    return None


def _reduce_over_ranks(total_loss: float, seen: int, metrics, world):
    """Sum the loss total, the sample count and every metric's running sums over ``world``'s ranks
    (_world: the job's, or the model's process group's; the metrics then report the global value);
    returns the global (total_loss, seen)."""
    if world is None:
        return total_loss, seen
    sums = np.array([total_loss, seen] + [v for m in metrics for v in (m._total, m._count)], np.float64)
    world.allreduce(sums)
    for i, m in enumerate(metrics):
        m._total, m._count = float(sums[2 + 2 * i]), int(sums[3 + 2 * i])
    return float(sums[0]), int(sums[1])


def _set_sampler_epoch(loader, epoch: int) -> None:
    """Reshuffle a loader's DistributedSampler for this epoch (what torch users call by hand)."""
    set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


def _fmt(logs) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


class _Progress:
    """tqdm bar per epoch (live loss and metrics) when tqdm is installed, else one printed line per epoch."""

    def __init__(self, progress, epochs: int):
        if progress is True or progress == "bar":
            try:
                from tqdm.auto import tqdm
                self.mode, self._tqdm = "bar", tqdm
            except ImportError:  # tqdm is the optional extra "progress"
                self.mode = "line"
        elif progress == "line":
            self.mode = "line"
        elif not progress:
            self.mode = "none"
        else:
            raise ValueError(f"fit: progress must be True, False, 'bar' or 'line', got {progress!r}")
        self.epochs = epochs
        self.bar = None

    def epoch_begin(self, epoch: int, total: Optional[int]) -> None:
        if self.mode == "bar":
            self.bar = self._tqdm(total=total, desc=f"Epoch {epoch + 1}/{self.epochs}", unit="batch",
                                  leave=True, dynamic_ncols=True, file=sys.stderr)

    def batch_end(self, logs) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            self.bar.update(1)

    def epoch_end(self, epoch: int, logs) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=True)
            self.close()
        elif self.mode == "line":
            print(f"Epoch {epoch + 1}/{self.epochs} - {_fmt(logs)}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _loader_len(loader) -> Optional[int]:
    try:
        return len(loader)
    except TypeError:
        return None


def _run_epoch(model, loss_fn, optimizer, loader, metrics, progress, callbacks, teacher=None):
    """One pass over loader with parameter updates; returns logs of the epoch's mean loss and metrics.
    With a teacher, the loss is ``loss_fn(teacher_output, output, target)`` (teacher run without a graph)."""
    model.train()
    for m in metrics:
        m.reset()
    total_loss, seen = 0.0, 0
    device = _model_device(model)
    for i, batch in enumerate(loader):
        inputs, target = _split_batch(batch, device)
        optimizer.zero_grad()
        output = model(*inputs)
        if teacher is None:
            loss = loss_fn(output, target)
        else:
            with no_grad():
                teacher_output = teacher(*inputs)
            loss = loss_fn(teacher_output, output, target)
        loss.backward()
        optimizer.step()
        n = _batch_len(target)
        total_loss += float(loss.item()) * n
        seen += n
        for m in metrics:
            m.update(_host(output), _host(target))
        logs = {"loss": total_loss / seen, **{m.name: m.compute() for m in metrics}}
        progress.batch_end(logs)
        for cb in callbacks:
            cb.on_train_batch_end(i, logs)
    total_loss, seen = _reduce_over_ranks(total_loss, seen, metrics, _world(model, optimizer))
    if seen == 0:
        raise ValueError("fit: the training loader yielded no batches (empty dataset, or drop_last with "
                         "fewer samples than batch_size)")
    return {"loss": total_loss / seen, **{m.name: m.compute() for m in metrics}}


# ---- public API ---------------------------------------------------------------------------------
def fit(model, loss_fn, optimizer, train_loader, *, epochs: int, val_loader=None,
        metrics: Sequence = ("accuracy",), callbacks: Iterable[Callback] = (), scheduler=None,
        progress=True, teacher=None) -> History:
    """Train ``model`` for ``epochs`` passes over ``train_loader``.

    Args:
        model: a Module mapping a batch's inputs to outputs.
        loss_fn: ``loss_fn(output, target) -> scalar Tensor`` (mean over the batch), e.g. nn.CrossEntropyLoss().
        optimizer: an optimizer over the model's parameters (``zero_grad()``, ``step()``).
        train_loader: iterable of ``(inputs, target)`` batches, e.g. a forgegrad.data.DataLoader; they
            are moved to the device of the model's parameters (a model on cuda trains from CPU data).
        epochs: number of passes.
        val_loader: evaluated (no_grad, eval mode) after every epoch -> "val_loss", "val_<metric>".
        metrics: names ("accuracy", "mae"), Metric objects or callables ``fn(output, target) -> float``.
        callbacks: e.g. EarlyStopping, ModelCheckpoint.
        scheduler: an lr scheduler stepped once per epoch; ReduceLROnPlateau is stepped with
            val_loss (or loss without a validation set). The lr used in each epoch is logged as "lr".
        progress: True: a tqdm bar with live loss and metrics (plain lines if tqdm is missing);
            "line": one printed line per epoch; False: silent.
        teacher: a trained model to distill from (run in eval mode without a graph); loss_fn is then
            called as ``loss_fn(teacher_output, output, target)``, e.g.
            ``forgegrad.train.DistillationLoss(temperature, alpha)``, and the validation loss is
            ``loss_fn.hard_loss(output, target)`` (the plain cross-entropy).

    Under MPI (``forgegrad.distributed.init()`` in a job of several ranks) fit runs unchanged on every
    rank: the epoch's loss and metrics (and evaluate's) are summed over the ranks, so every rank logs
    the same global values and callbacks decide alike; the progress output is rank 0's only and
    ModelCheckpoint writes on rank 0 only. A loader's ``sampler.set_epoch(epoch)`` is called before
    each epoch. Wrap the model in DistributedDataParallel and shard the data with DistributedSampler.
    A model (or optimizer) wrapped with ``process_group=`` is the group's: the sums run over its ranks
    and its rank 0 prints and writes (give each group's ModelCheckpoint its own path).

    Returns:
        History: per-epoch lists "loss", metrics, "val_loss", "val_<metric>". Ctrl-C
        (KeyboardInterrupt) stops training cleanly: the history of the completed epochs is returned
        with ``interrupted=True`` and a ``note``; checkpoints already written are kept.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
    for name in ("zero_grad", "step"):
        if not callable(getattr(optimizer, name, None)):
            raise TypeError(f"fit: optimizer must have {name}() (e.g. forgegrad.optim.Adam), "
                            f"got {type(optimizer).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"fit: loss_fn must be callable, got {type(loss_fn).__name__}")
    callbacks = list(callbacks or ())
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"fit: callbacks must be forgegrad.train.Callback instances, got {type(cb).__name__}")
    val_loss_fn = loss_fn
    if teacher is not None:
        if not callable(teacher):
            raise TypeError(f"fit: teacher must be a model (callable), got {type(teacher).__name__}")
        val_loss_fn = getattr(loss_fn, "hard_loss", None)
        if not callable(val_loss_fn):
            raise TypeError("fit: with a teacher, loss_fn must take (teacher_output, output, target) and have a "
                            "hard_loss(output, target) for validation, e.g. forgegrad.train.DistillationLoss; "
                            f"got {type(loss_fn).__name__}")
    train_metrics = _prepare_metrics(metrics, loss_fn)
    val_metrics = _prepare_metrics(metrics, loss_fn)
    plateau = scheduler is not None and _is_plateau_scheduler(scheduler)

    history = History()
    state = FitState(model, optimizer, history, int(epochs), scheduler)
    for cb in callbacks:
        cb.set_state(state)
    world = _world(model, optimizer)
    bar = _Progress(progress if world is None or world.rank() == 0 else False, int(epochs))
    was_training = getattr(model, "training", True)
    teacher_was_training = getattr(teacher, "training", False)
    if teacher is not None and hasattr(teacher, "eval"):
        teacher.eval()
    epoch = 0
    try:
        for cb in callbacks:
            cb.on_train_begin({})
        for epoch in range(int(epochs)):
            state.epoch = epoch
            for cb in callbacks:
                cb.on_epoch_begin(epoch, {})
            _set_sampler_epoch(train_loader, epoch)
            bar.epoch_begin(epoch, _loader_len(train_loader))
            logs = _run_epoch(model, loss_fn, optimizer, train_loader, train_metrics, bar, callbacks, teacher)
            if val_loader is not None:
                val = evaluate(model, val_loss_fn, val_loader, val_metrics)
                logs.update({"val_" + k: v for k, v in val.items()})
            if scheduler is not None:
                lr = _current_lr(optimizer)
                if lr is not None:
                    logs["lr"] = lr
                if plateau:
                    scheduler.step(logs.get("val_loss", logs["loss"]))
                else:
                    scheduler.step()
            bar.epoch_end(epoch, logs)
            history.append(epoch, logs)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if state.stop_training:
                break
    except KeyboardInterrupt:
        bar.close()
        history.interrupted = True
        saved = [cb.last_saved for cb in callbacks if isinstance(cb, ModelCheckpoint) and cb.last_saved]
        restores = any(isinstance(cb, EarlyStopping) and cb.restore_best_weights
                       and getattr(cb, "best_weights", None) is not None for cb in callbacks)
        history.note = (f"training interrupted (KeyboardInterrupt) during epoch {epoch + 1}/{epochs}; the history "
                        f"holds the {len(history.epoch)} completed epoch(s); the model keeps "
                        + ("EarlyStopping's best weights" if restores else "its latest weights")
                        + (f"; last checkpoint: {saved[-1]}" if saved else ""))
        if world is None or world.rank() == 0:
            print(f"forgegrad.train.fit: {history.note}", file=sys.stderr, flush=True)
    finally:
        bar.close()
        model.train(bool(was_training))
        if teacher is not None and hasattr(teacher, "train"):
            teacher.train(bool(teacher_was_training))
    for cb in callbacks:
        cb.on_train_end({"interrupted": history.interrupted})
    return history


def evaluate(model, loss_fn, loader, metrics: Sequence = ("accuracy",)) -> dict:
    """Mean loss and metrics of ``model`` over ``loader`` (no_grad, eval mode; the mode is restored).

    Returns ``{"loss": ..., "<metric>": ...}`` ("loss" only when loss_fn is given). Under MPI every
    rank must call it: the sums are taken over all ranks' batches (shard the data, or not: an
    unsharded loader gives every rank the same mean).
    """
    ms = _prepare_metrics(metrics, loss_fn)
    was_training = getattr(model, "training", False)
    model.eval()
    total_loss, seen = 0.0, 0
    device = _model_device(model)
    try:
        with no_grad():
            for batch in loader:
                inputs, target = _split_batch(batch, device)
                output = model(*inputs)
                n = _batch_len(target)
                if loss_fn is not None:
                    total_loss += float(loss_fn(output, target).item()) * n
                seen += n
                for m in ms:
                    m.update(_host(output), _host(target))
    finally:
        model.train(bool(was_training))
    total_loss, seen = _reduce_over_ranks(total_loss, seen, ms, _world(model))
    if seen == 0:
        raise ValueError("evaluate: the loader yielded no batches")
    out = {"loss": total_loss / seen} if loss_fn is not None else {}
    out.update({m.name: m.compute() for m in ms})
    return out


def predict(model, x, batch_size: int = 32) -> Tensor:
    """``model`` outputs for ``x`` (numpy array, Tensor, or an iterable of batches such as a DataLoader,
    whose batches may be ``(x, y)`` tuples: the target is ignored), concatenated along dim 0 into a
    CPU tensor. Batches go to the model's device. Runs in no_grad and eval mode (restored afterwards)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"predict: batch_size must be a positive int, got {batch_size!r}")
    if isinstance(x, (np.ndarray, Tensor, list)):
        data = x._data if isinstance(x, Tensor) else np.asarray(x)
        if data.ndim == 0:
            raise ValueError("predict: x must have a batch dimension")
        batches = (Tensor._stored(data[i:i + batch_size]) for i in range(0, data.shape[0], batch_size))
    else:
        batches = (b[0] if isinstance(b, (tuple, list)) and len(b) >= 1 else b for b in x)
    was_training = getattr(model, "training", False)
    model.eval()
    outs = []
    device = _model_device(model)
    try:
        with no_grad():
            for b in batches:
                outs.append(_host(model(_as_tensor(b, device))))
    finally:
        model.train(bool(was_training))
    if not outs:
        raise ValueError("predict: no input samples")
    return Tensor._wrap_exact(np.concatenate(outs, axis=0))  # float64 outputs stay float64
