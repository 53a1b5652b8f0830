"""Gradual magnitude pruning during ``fit``, with TF-MOT's schedules.

    schedule = PolynomialDecay(initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, end_step=1000)
    fit(model, loss_fn, opt, loader, epochs=10, callbacks=[PruningSchedule(model, schedule)])

``PruningSchedule`` gives every target tensor (by default the weight of each Linear and Conv2d) the
torch pruned form (``weight_orig`` + ``weight_mask``, see ``forgegrad.nn.utils.prune``) and, at the
steps the schedule names, sets each mask to keep the largest-magnitude entries of the current pruned
weight so that the tensor reaches the schedule's sparsity (per tensor, as TF-MOT's
``prune_low_magnitude``). A step is one optimizer step; masks are updated before training (step 0)
and after every batch. Pruned entries get no gradient. ``strip()`` (or
``forgegrad.nn.utils.prune.remove``) makes the masks permanent.
"""
from __future__ import annotations

import numbers

import numpy as np

from .callbacks import Callback

__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule"]


def _sparsity(v, what):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= v < 1.0:
        raise ValueError(f"{what} must be a number in [0, 1), got {v!r}")
    return float(v)


def _step(v, what, allow_minus_one=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or (v < 0 and not (allow_minus_one and v == -1)):
        raise ValueError(f"{what} must be a non-negative int{' or -1' if allow_minus_one else ''}, got {v!r}")
    return int(v)


class _Schedule:
    def __init__(self, begin_step, end_step, frequency):
        self.begin_step = _step(begin_step, f"{type(self).__name__}: begin_step")
        self.end_step = _step(end_step, f"{type(self).__name__}: end_step", allow_minus_one=True)
        self.frequency = _step(frequency, f"{type(self).__name__}: frequency")
        if self.frequency == 0:
            raise ValueError(f"{type(self).__name__}: frequency must be positive")
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ValueError(f"{type(self).__name__}: end_step ({end_step}) must be >= begin_step ({begin_step})")

    def should_prune(self, step: int) -> bool:
        """TF-MOT's rule: inside [begin_step, end_step] (end -1: no end), every frequency steps from begin."""
        in_range = step >= self.begin_step and (self.end_step == -1 or step <= self.end_step)
        return in_range and (step - self.begin_step) % self.frequency == 0

    def __call__(self, step: int):
        """(prune now?, sparsity) at ``step``."""
        return self.should_prune(step), self.sparsity(step)


class ConstantSparsity(_Schedule):
    """The same ``target_sparsity`` at every pruning step from ``begin_step``."""

    def __init__(self, target_sparsity, begin_step=0, end_step=-1, frequency=100):
        super().__init__(begin_step, end_step, frequency)
        self.target_sparsity = _sparsity(target_sparsity, "ConstantSparsity: target_sparsity")

    def sparsity(self, step: int) -> float:
        return self.target_sparsity


class PolynomialDecay(_Schedule):
    """TF-MOT's PolynomialDecay: s(step) = final + (initial - final) * (1 - p)^power with
    p = clip((step - begin_step) / (end_step - begin_step), 0, 1)."""

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        super().__init__(begin_step, end_step, frequency)
        if self.end_step == -1:
            raise ValueError("PolynomialDecay: end_step must be given (the step where final_sparsity is reached)")
        self.initial_sparsity = _sparsity(initial_sparsity, "PolynomialDecay: initial_sparsity")
        self.final_sparsity = _sparsity(final_sparsity, "PolynomialDecay: final_sparsity")
        if isinstance(power, bool) or not isinstance(power, numbers.Real) or power <= 0:
            raise ValueError(f"PolynomialDecay: power must be a positive number, got {power!r}")
        self.power = float(power)

    def sparsity(self, step: int) -> float:
        span = self.end_step - self.begin_step
        p = 1.0 if span == 0 else min(1.0, max(0.0, (step - self.begin_step) / span))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power


def default_targets(model):
    """(module, "weight") for every Linear and Conv2d in ``model``."""
    from ..nn import Conv2d, Linear

    return [(m, "weight") for m in model.modules() if isinstance(m, (Linear, Conv2d))]


class PruningSchedule(Callback):
    """Prune ``targets`` (a model: its Linear/Conv2d weights; or a list of (module, name)) following
    ``schedule`` (ConstantSparsity or PolynomialDecay) while ``fit`` trains."""

    def __init__(self, targets, schedule):
        from ..nn import Module

        if not isinstance(schedule, _Schedule):
            raise TypeError(f"PruningSchedule: schedule must be ConstantSparsity or PolynomialDecay, "
                            f"got {type(schedule).__name__}")
        self.targets = default_targets(targets) if isinstance(targets, Module) else list(targets)
        if not self.targets:
            raise ValueError("PruningSchedule: no tensors to prune (the model has no Linear/Conv2d)")
        for t in self.targets:
            if not (isinstance(t, tuple) and len(t) == 2 and isinstance(t[0], Module) and isinstance(t[1], str)):
                raise TypeError(f"PruningSchedule: targets must be a Module or (module, name) pairs, got {t!r}")
        self.schedule = schedule
        self.step = 0
        self.sparsity = 0.0  # the sparsity of the last mask update

    def on_train_begin(self, logs=None):
        from ..nn.utils import prune

        for module, name in self.targets:
            if not any(isinstance(h, prune.BasePruningMethod) and h._tensor_name == name
                       for h in module._forward_pre_hooks.values()):
                prune.identity(module, name)
        self._update()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self._update()

    def _update(self):
        now, sparsity = self.schedule(self.step)
        if not now:
            return
        for module, name in self.targets:
            mask = getattr(module, name + "_mask")._data
            w = np.abs(getattr(module, name + "_orig")._data * mask).reshape(-1)
            k = round(sparsity * w.size)
            new = np.ones(w.size, np.float32)
            new[np.argsort(w, kind="stable")[:k]] = 0
            mask[...] = new.reshape(mask.shape)
            setattr(module, name, getattr(module, name + "_orig") * getattr(module, name + "_mask"))
        self.sparsity = sparsity

    def strip(self):
        """Make the masks permanent (``prune.remove`` on every target)."""
        from ..nn.utils import prune

        for module, name in self.targets:
            prune.remove(module, name)
