"""Training callbacks and the History that ``fit`` returns.

A callback's hooks receive the epoch index (0-based) and ``logs``, a dict of the epoch's values
("loss", "accuracy", "val_loss", ...). While ``fit`` runs, ``callback.state`` is the run's
``FitState``; setting ``state.stop_training = True`` ends training after the current epoch.
"""
from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Dict, List, Optional

import numpy as np

from .. import devices as _devices

__all__ = ["History", "FitState", "Callback", "EarlyStopping", "ModelCheckpoint", "LambdaCallback"]


class History(dict):
    """Per-epoch values by name: ``history["loss"][e]`` is the mean training loss of epoch e.

    Keys: "loss", each metric (e.g. "accuracy"), and with validation "val_loss", "val_<metric>";
    "lr" when a scheduler is used. Also ``history.epoch`` (completed epoch indices),
    ``history.history`` (itself, for Keras code), ``interrupted`` and ``note`` (set when fit was
    stopped by Ctrl-C) and ``stopped_early``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch: List[int] = []
        self.interrupted = False
        self.stopped_early = False
        self.note: Optional[str] = None

    @property
    def history(self) -> "History":
        return self

    def append(self, epoch: int, logs: Dict[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.setdefault(k, []).append(float(v))

    def __repr__(self) -> str:
        extra = f", note={self.note!r}" if self.note else ""
        return f"History({dict.__repr__(self)}{extra})"


class FitState:
    """What callbacks can see and steer during ``fit``."""

    def __init__(self, model, optimizer, history: History, epochs: int, scheduler=None):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.history = history
        self.epochs = epochs
        self.epoch = 0
        self.stop_training = False


class Callback:
    """Base class; override the hooks you need."""

    state: Optional[FitState] = None

    def set_state(self, state: FitState) -> None:
        self.state = state

    @property
    def model(self):
        return None if self.state is None else self.state.model

    def on_train_begin(self, logs=None): ...
    def on_epoch_begin(self, epoch: int, logs=None): ...
    def on_train_batch_end(self, batch: int, logs=None): ...
    def on_epoch_end(self, epoch: int, logs=None): ...
    def on_train_end(self, logs=None): ...


class LambdaCallback(Callback):
    """Callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, on_train_begin=None, on_epoch_begin=None, on_train_batch_end=None, on_epoch_end=None,
                 on_train_end=None):
        for name, fn in (("on_train_begin", on_train_begin), ("on_epoch_begin", on_epoch_begin),
                         ("on_train_batch_end", on_train_batch_end), ("on_epoch_end", on_epoch_end),
                         ("on_train_end", on_train_end)):
            if fn is not None:
                setattr(self, name, fn)


def _resolve_mode(mode: str, monitor: str, who: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        name = monitor[4:] if monitor.startswith("val_") else monitor
        return "max" if name in ("accuracy", "acc") or name.endswith("accuracy") else "min"
    return mode


class _Monitor:
    """Tracks the best value of a logged quantity."""

    def __init__(self, monitor: str, mode: str, min_delta: float, who: str):
        self.monitor = monitor
        self.who = who
        self.mode = _resolve_mode(mode, monitor, who)
        self.min_delta = abs(float(min_delta))
        self.best = math.inf if self.mode == "min" else -math.inf
        self._warned = False

    def value(self, logs) -> Optional[float]:
        v = (logs or {}).get(self.monitor)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            if not self._warned:
                warnings.warn(f"{self.who} is conditioned on {self.monitor!r}, which is not available; available "
                              f"values: {sorted((logs or {}).keys())}. (val_* values need a validation set.)",
                              RuntimeWarning, stacklevel=3)
                self._warned = True
            return None
        return float(v)

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(Callback):
    """Stop training when the monitored value has stopped improving ("train until the loss converges").

    Args:
        monitor: a logged value, "val_loss" by default ("loss" when there is no validation set).
        min_delta: an improvement smaller than this does not count.
        patience: epochs without improvement to tolerate before stopping.
        mode: "min", "max" or "auto" (max for accuracies, min otherwise).
        restore_best_weights: at the end of training, load the weights of the best epoch.
        baseline: stop if the value does not beat this within ``patience`` epochs.
        verbose: print a line when stopping.

    After training, ``stopped_epoch`` is the epoch index training stopped at (0 if it did not stop
    early), ``best`` the best value and ``best_epoch`` its epoch.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, mode: str = "auto",
                 restore_best_weights: bool = False, baseline: Optional[float] = None, verbose: bool = False):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be a non-negative int, got {patience!r}")
        self.monitor = monitor
        self.min_delta = min_delta
        self.patience = patience
        self.mode = mode
        self.restore_best_weights = restore_best_weights
        self.baseline = baseline
        self.verbose = verbose
        _resolve_mode(mode, monitor, "EarlyStopping")  # validate now

    def on_train_begin(self, logs=None):
        self._mon = _Monitor(self.monitor, self.mode, self.min_delta, "EarlyStopping")
        if self.baseline is not None:
            self._mon.best = float(self.baseline)
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = None
        self.best_weights = None

    @property
    def best(self) -> float:
        return self._mon.best

    def on_epoch_end(self, epoch, logs=None):
        value = self._mon.value(logs)
        if value is None:
            return
        if self._mon.improved(value):
            self._mon.best = value
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = {k: np.array(_devices.to_host(v._data), copy=True)  # host copies, any device
                                     for k, v in self.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:  # patience=0: stop at the first epoch without improvement
            self.stopped_epoch = epoch
            self.state.stop_training = True
            self.state.history.stopped_early = True
            if self.verbose:
                print(f"EarlyStopping: {self.monitor} did not improve for {self.wait} epoch(s); "
                      f"stopping after epoch {epoch + 1} (best {self._mon.best:.6g} at epoch "
                      f"{'-' if self.best_epoch is None else self.best_epoch + 1})")

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
            if self.verbose:
                print(f"EarlyStopping: restored the weights of epoch {self.best_epoch + 1}")


class ModelCheckpoint(Callback):
    """Save the model's state_dict with ``forgegrad.save`` (safetensors, atomic) at the end of epochs.

    Args:
        filepath: destination; may contain format fields filled from the epoch and its logs, e.g.
            ``"ckpt/model-{epoch:02d}-{val_loss:.3f}.safetensors"`` (epoch counts from 1).
        monitor: the logged value used by ``save_best_only``.
        save_best_only: only save when ``monitor`` improves on the best so far (the file keeps the
            best model); otherwise save every epoch.
        mode: "min", "max" or "auto".
        verbose: print a line for every save.
        save_optimizer: save a resumable training checkpoint instead of the bare weights:
            ``{"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler":
            scheduler.state_dict() (when fit has a scheduler), "epoch": completed epochs}``. Resume
            with ``ck = forgegrad.load(path)``, ``model.load_state_dict(ck["model"])``,
            ``optimizer.load_state_dict(ck["optimizer"])``, ``scheduler.load_state_dict(ck["scheduler"])``,
            then ``fit(..., epochs=total - ck["epoch"])``.

    ``last_saved`` is the path of the most recent save, ``best`` the best monitored value. Under
    forgegrad.distributed every rank builds the checkpoint (a ZeroRedundancyOptimizer gathers its
    state then) and rank 0 writes it.
    """

    def __init__(self, filepath, monitor: str = "val_loss", save_best_only: bool = False, mode: str = "auto",
                 verbose: bool = False, save_optimizer: bool = False):
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.mode = mode
        self.verbose = verbose
        self.save_optimizer = bool(save_optimizer)
        self.last_saved: Optional[str] = None
        _resolve_mode(mode, monitor, "ModelCheckpoint")

    def on_train_begin(self, logs=None):
        self._mon = _Monitor(self.monitor, self.mode, 0.0, "ModelCheckpoint")
        if self.save_optimizer:  # fail before the first epoch, not after it
            for what in ("optimizer", "scheduler"):
                obj = getattr(self.state, what, None)
                if (what == "optimizer" or obj is not None) and not callable(getattr(obj, "state_dict", None)):
                    raise TypeError(f"ModelCheckpoint(save_optimizer=True) needs the {what} to have state_dict() "
                                    f"(e.g. forgegrad.optim), got {type(obj).__name__}")

    def _checkpoint(self, epoch: int):
        if not self.save_optimizer:
            return self.model.state_dict()
        ckpt = {"model": self.model.state_dict(), "optimizer": self.state.optimizer.state_dict()}
        if self.state.scheduler is not None:  # fit steps it before on_epoch_end: its state is the next epoch's
            ckpt["scheduler"] = self.state.scheduler.state_dict()
        ckpt["epoch"] = epoch + 1
        return ckpt

    @property
    def best(self) -> float:
        return self._mon.best

    def on_epoch_end(self, epoch, logs=None):
        from ..serialization import save

        logs = dict(logs or {})
        if self.save_best_only:
            value = self._mon.value(logs)
            if value is None or not self._mon.improved(value):
                return
            self._mon.best = value
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError) as e:
            raise KeyError(f"ModelCheckpoint: filepath {self.filepath!r} refers to {e}, which is not among the "
                           f"logged values {sorted(logs)} (or 'epoch')") from None
        ckpt = self._checkpoint(epoch)  # on every rank: a sharded optimizer gathers its state collectively
        self.last_saved = path
        if not _is_rank_zero(self.model, getattr(self.state, "optimizer", None)):  # under MPI, rank 0 writes
            return
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)  # e.g. "checkpoints/best.safetensors" on a fresh run
        save(ckpt, path)
        if self.verbose:
            print(f"ModelCheckpoint: saved {path}")


def _is_rank_zero(model=None, optimizer=None) -> bool:
    """True unless this process is a rank other than 0 of an initialised forgegrad.distributed job (of the
    process group ``model`` or ``optimizer`` was wrapped over, if any: see _world)."""
    world = _world(model, optimizer)
    return world is None or world.rank() == 0


def _world(model=None, optimizer=None):
    """The ranks that train ``model`` together when this process is one rank of a multi-rank job, else None
    (never starts MPI itself): forgegrad.distributed.comm (the whole job), or, for a model or optimizer
    wrapped with ``process_group=`` (DistributedDataParallel, FullyShardedDataParallel,
    ZeroRedundancyOptimizer, DistributedOptimizer), that group. fit averages its metrics over them, and
    prints and checkpoints on their rank 0."""
    comm = sys.modules.get("forgegrad.distributed.comm")
    if comm is None or not comm.is_distributed():
        return None
    for obj in (model, optimizer):
        group = getattr(obj, "process_group", None) if obj is not None else None
        if isinstance(group, comm.ProcessGroup) and group is not comm.GroupMember.WORLD:
            return _GroupRanks(comm, group)
    return comm


class _GroupRanks:
    """One process group seen as fit's world: ``rank()`` in the group, ``allreduce`` over it."""

    def __init__(self, comm, group):
        self.comm, self.group = comm, group

    def rank(self) -> int:
        return self.group.rank()

    def allreduce(self, x, op: str = "sum"):
        return self.comm.allreduce(x, op=op, group=self.group)
