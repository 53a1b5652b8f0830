"""Adagrad, RMSprop, Adadelta and LBFGS step for step against torch.optim from the same parameters."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import optim


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal((3, 4)).astype(np.float32)
    b0 = rng.standard_normal(3).astype(np.float32)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.standard_normal((8, 3)).astype(np.float32)
    return w0, b0, x, y


def _loss(lib, w, b, x, y):
    out = (lib.tensor(x) @ w.t() + b).tanh()
    return ((out - lib.tensor(y)) ** 2).mean()


def _lsq_loss(lib, w, b, x, y):
    # convex (least squares plus a small quartic term): L-BFGS converges smoothly, so float32 rounding
    # does not grow into different trajectories as it does on a chaotic problem
    r = lib.tensor(x) @ w.t() + b - lib.tensor(y)
    return (r ** 2).mean() + 0.01 * (w ** 4).sum()


CASES = [
    ("Adagrad", {}), ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1,
                                  "initial_accumulator_value": 0.5}),
    ("Adagrad", {"lr": 0.05, "maximize": True}),
    ("RMSprop", {}), ("RMSprop", {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.01}),
    ("RMSprop", {"alpha": 0.9, "centered": True}), ("RMSprop", {"momentum": 0.5, "maximize": True}),
    ("Adadelta", {}), ("Adadelta", {"lr": 0.5, "rho": 0.8, "eps": 1e-5, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("name,kwargs", CASES)
def test_matches_torch_over_steps(name, kwargs):
    w0, b0, x, y = _problem()
    w, b = fg.nn.Parameter(w0.copy()), fg.nn.Parameter(b0.copy())
    tw, tb = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(b0))
    ours, theirs = getattr(optim, name)([w, b], **kwargs), getattr(torch.optim, name)([tw, tb], **kwargs)
    for _ in range(6):
        for opt, lib, params in ((ours, fg, (w, b)), (theirs, torch, (tw, tb))):
            opt.zero_grad()
            _loss(lib, *params, x, y).backward()
            opt.step()
        np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(b.numpy(), tb.detach().numpy(), rtol=2e-5, atol=2e-6)
    state, tstate = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert set(state[0]) == set(tstate[0])  # torch's state names
    for k in tstate[0]:
        np.testing.assert_allclose(np.asarray(state[0][k]), tstate[0][k].numpy(), rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("kwargs,converges", [({}, True), ({"history_size": 3, "max_iter": 4}, False),
                                               ({"line_search_fn": "strong_wolfe"}, True),
                                               ({"line_search_fn": "strong_wolfe", "max_iter": 3}, False),
                                               ({"lr": 0.5, "max_iter": 5}, False)])
def test_lbfgs_matches_torch(kwargs, converges):
    w0, b0, x, y = _problem(1)
    w, b = fg.nn.Parameter(w0.copy()), fg.nn.Parameter(b0.copy())
    tw, tb = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(b0))
    ours, theirs = optim.LBFGS([w, b], **kwargs), torch.optim.LBFGS([tw, tb], **kwargs)

    def closure_for(opt, lib, params):
        def closure():
            opt.zero_grad()
            loss = _lsq_loss(lib, *params, x, y)
            loss.backward()
            return loss
        return closure

    for _ in range(2):
        got = ours.step(closure_for(ours, fg, (w, b)))
        want = theirs.step(closure_for(theirs, torch, (tw, tb)))
        np.testing.assert_allclose(float(got), float(want.detach()), rtol=1e-4)
    if converges:
        # near the optimum float32 rounding decides when a tolerance stops the iterations (a few
        # evaluations more or less), so the weights agree to the flatness of the valley
        np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-3, atol=1e-3)
    else:  # step for step
        np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-4, atol=1e-5)
        assert ours.state[w]["func_evals"] == theirs.state[tw]["func_evals"]
    assert float(_lsq_loss(fg, w, b, x, y)) < float(_lsq_loss(fg, fg.tensor(w0), fg.tensor(b0), x, y))


def test_argument_errors_like_torch():
    p = [fg.nn.Parameter(fg.zeros(2))]
    for name, kwargs in [("Adagrad", {"lr": -1}), ("RMSprop", {"alpha": -0.1}), ("Adadelta", {"rho": 1.5}),
                         ("LBFGS", {"lr": -1})]:
        with pytest.raises(ValueError):
            getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], **kwargs)
        with pytest.raises(ValueError):
            getattr(optim, name)(p, **kwargs)
    with pytest.raises(ValueError, match="strong_wolfe"):  # torch raises this at the first step
        optim.LBFGS(p, line_search_fn="armijo")
    with pytest.raises(RuntimeError, match="closure"):
        optim.LBFGS(p).step()
