"""forgegrad.optim.lr_scheduler against torch.optim.lr_scheduler: the same lr sequences."""
import copy
import math

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import optim
from forgegrad.nn import Parameter
from forgegrad.optim import lr_scheduler as sched

EPOCHS = 40


def _pair(lrs=(0.1, 0.03), opt="SGD"):
    """Our optimizer and torch's, each with one param group per lr."""
    ours = getattr(optim, opt)([{"params": [Parameter(np.ones(3, np.float32))], "lr": lr} for lr in lrs])
    theirs = getattr(torch.optim, opt)([{"params": [torch.nn.Parameter(torch.ones(3))], "lr": lr} for lr in lrs])
    return ours, theirs


class Warmup:
    """A callable object (its __dict__ goes into LambdaLR's state_dict)."""

    def __init__(self, n):
        self.n = n

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.n)


CASES = {
    "StepLR": lambda o, mod: mod.StepLR(o, step_size=7, gamma=0.5),
    "MultiStepLR": lambda o, mod: mod.MultiStepLR(o, milestones=[3, 10, 10, 25], gamma=0.3),
    "ExponentialLR": lambda o, mod: mod.ExponentialLR(o, gamma=0.93),
    "CosineAnnealingLR": lambda o, mod: mod.CosineAnnealingLR(o, T_max=13, eta_min=0.001),
    "CosineAnnealingLR-nomin": lambda o, mod: mod.CosineAnnealingLR(o, T_max=10),
    "LambdaLR": lambda o, mod: mod.LambdaLR(o, lr_lambda=lambda e: 0.95 ** e + 0.01 * (e % 4)),
    "LambdaLR-per-group": lambda o, mod: mod.LambdaLR(o, lr_lambda=[Warmup(5), lambda e: 1.0 / (1 + e)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_lr_sequence_matches_torch(name):
    ours, theirs = _pair()
    s = CASES[name](ours, sched)
    ts = CASES[name](theirs, torch.optim.lr_scheduler)
    assert s.get_last_lr() == ts.get_last_lr()
    for epoch in range(EPOCHS):
        ours.step()
        theirs.step()
        s.step()
        ts.step()
        # exact equality: same formulas, same float operations, same order
        assert s.get_last_lr() == ts.get_last_lr(), f"epoch {epoch}"
        assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in theirs.param_groups]
    assert s.last_epoch == ts.last_epoch == EPOCHS


def test_schedulers_follow_manual_lr_changes_like_torch():
    ours, theirs = _pair(lrs=(0.2,))
    s = sched.CosineAnnealingLR(ours, T_max=8)
    ts = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=8)
    for epoch in range(30):
        if epoch == 5:
            ours.param_groups[0]["lr"] = theirs.param_groups[0]["lr"] = 0.05
        ours.step()
        theirs.step()
        s.step()
        ts.step()
        assert s.get_last_lr() == ts.get_last_lr()


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(mode="max", factor=0.5, patience=2, threshold=0.01, threshold_mode="abs", cooldown=3, min_lr=0.004),
    dict(mode="min", factor=0.3, patience=1, threshold=0.05, threshold_mode="rel", cooldown=1,
         min_lr=[0.01, 0.0], eps=1e-3),
    dict(mode="max", patience=0, threshold_mode="rel"),
])
def test_reduce_lr_on_plateau_matches_torch(kwargs):
    rng = np.random.default_rng(7)
    # a noisy metric with plateaus: improvement, flat stretches, then a slow drift
    metrics = np.concatenate([np.linspace(1.0, 0.5, 8), np.full(10, 0.5), 0.5 + 0.02 * rng.standard_normal(20),
                              np.linspace(0.5, 0.4, 12)])
    ours, theirs = _pair()
    s = sched.ReduceLROnPlateau(ours, **kwargs)
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **kwargs)
    for epoch, m in enumerate(metrics):
        s.step(float(m))
        ts.step(float(m))
        assert s.get_last_lr() == ts.get_last_lr(), f"epoch {epoch}"
        assert (s.num_bad_epochs, s.cooldown_counter, s.best) == (ts.num_bad_epochs, ts.cooldown_counter, ts.best)
    assert s.get_last_lr() != [0.1, 0.03]  # the sequence did reduce


def test_scheduler_state_dict_round_trip():
    ours, _ = _pair()
    s = sched.CosineAnnealingLR(ours, T_max=10, eta_min=0.002)
    for _ in range(4):
        s.step()
    saved = copy.deepcopy(s.state_dict())
    assert "optimizer" not in saved and saved["last_epoch"] == 4 and saved["T_max"] == 10
    expected = []
    for _ in range(6):
        s.step()
        expected.append(s.get_last_lr())

    ours2, _ = _pair()
    opt_state = copy.deepcopy(ours.state_dict())
    s2 = sched.CosineAnnealingLR(ours2, T_max=10, eta_min=0.002)
    s2.load_state_dict(saved)
    for group, lr in zip(ours2.param_groups, saved["_last_lr"]):
        group["lr"] = lr
    got = []
    for _ in range(6):
        s2.step()
        got.append(s2.get_last_lr())
    assert got == expected
    assert opt_state["param_groups"][0]["initial_lr"] == 0.1


def test_lambda_lr_state_dict_keeps_callable_objects():
    ours, _ = _pair()
    warm = Warmup(5)
    s = sched.LambdaLR(ours, lr_lambda=[warm, lambda e: 1.0])
    sd = s.state_dict()
    assert sd["lr_lambdas"] == [{"n": 5}, None]
    warm.n = 2
    s.load_state_dict(sd)
    assert warm.n == 5


def test_plateau_state_dict_and_torch_compatible_keys():
    ours, theirs = _pair()
    s = sched.ReduceLROnPlateau(ours, patience=1)
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, patience=1)
    for m in (1.0, 1.0, 1.0, 0.9):
        s.step(m)
        ts.step(m)
    sd, tsd = s.state_dict(), ts.state_dict()
    for key in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "mode", "threshold", "patience",
                "_last_lr", "min_lrs"):
        assert sd[key] == tsd[key], key
    s2 = sched.ReduceLROnPlateau(_pair()[0])
    s2.load_state_dict(tsd)
    assert s2.best == 0.9 and s2.patience == 1


def test_closed_form_step_with_epoch():
    ours, _ = _pair(lrs=(0.1,))
    s = sched.StepLR(ours, step_size=3, gamma=0.5)
    s.step(7)
    assert s.get_last_lr() == [0.1 * 0.5 ** 2]


def test_scheduler_errors():
    ours, _ = _pair()
    with pytest.raises(TypeError, match="is not an Optimizer"):
        sched.StepLR(object(), step_size=3)
    with pytest.raises(ValueError, match="step_size"):
        sched.StepLR(ours, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        sched.CosineAnnealingLR(ours, T_max=0)
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 1"):
        sched.LambdaLR(ours, lr_lambda=[lambda e: 1.0])
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        sched.ReduceLROnPlateau(ours, factor=1.5)
    with pytest.raises(ValueError, match="mode sideways is unknown"):
        sched.ReduceLROnPlateau(ours, mode="sideways")
    with pytest.raises(ValueError, match="threshold mode x is unknown"):
        sched.ReduceLROnPlateau(ours, threshold_mode="x")
    with pytest.raises(ValueError, match="expected 2 min_lrs, got 3"):
        sched.ReduceLROnPlateau(ours, min_lr=[0, 0, 0])
    fresh, _ = _pair()
    with pytest.raises(KeyError, match="initial_lr"):
        sched.ExponentialLR(fresh, gamma=0.9, last_epoch=5)


def test_scheduler_drives_adam_lr():
    p = Parameter(np.ones(4, np.float32))
    opt = optim.Adam([p], lr=0.1)
    s = sched.ExponentialLR(opt, gamma=0.5)
    for _ in range(3):
        p.grad = fg.tensor(np.ones(4, np.float32))
        opt.step()
        s.step()
    assert math.isclose(opt.param_groups[0]["lr"], 0.1 * 0.5 ** 3)


def test_load_torch_scheduler_state_dict_and_continue():
    ours, theirs = _pair()
    ts = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=9, eta_min=0.001)
    for _ in range(7):
        theirs.step()
        ts.step()
    s = sched.CosineAnnealingLR(ours, T_max=9, eta_min=0.001)
    s.load_state_dict(copy.deepcopy(ts.state_dict()))
    for group, lr in zip(ours.param_groups, ts.get_last_lr()):
        group["lr"] = lr
    assert s.get_last_lr() == ts.get_last_lr()
    for epoch in range(15):
        ours.step()
        theirs.step()
        s.step()
        ts.step()
        assert s.get_last_lr() == ts.get_last_lr(), f"epoch {epoch}"
