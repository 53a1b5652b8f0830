"""nn.Module full backward hooks and backward pre-hooks against torch side by side (the same model built in both, the
same inputs): the gradients each hook sees and returns, outputs that do not reach the loss, prepend order, once per
backward, no input requiring grad, the global backward hooks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.modules.module as tmodule

import forgegrad as fg
import forgegrad.nn.modules.module as fmodule
from forgegrad import nn
from module_hook_helpers import _rand, _copy_into, _linear, _np, _close, _both


# ---- full backward hooks -----------------------------------------------------------------------------------
def _backward_log(lib, tensor, module, inputs, extra=(), pre=None, post=None):
    log = []

    def pre_hook(md, go):
        log.append(("pre", [_np(g) for g in go]))
        return pre(go) if pre else None

    def hook(md, gi, go):
        log.append(("full", [_np(g) for g in gi], [_np(g) for g in go]))
        return post(gi) if post else None
    module.register_full_backward_pre_hook(pre_hook)
    module.register_full_backward_hook(hook)
    out = module(*inputs, *extra)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o * (i + 1.5)).sum() for i, o in enumerate(outs))
    loss.backward()
    return log, [_np(x.grad) for x in inputs if isinstance(x, (fg.Tensor, torch.Tensor))]


def _compare_logs(ours, theirs):
    assert [e[0] for e in ours] == [e[0] for e in theirs]
    for a, b in zip(ours, theirs):
        for ga, gb in zip(a[1:], b[1:]):
            assert len(ga) == len(gb)
            for u, v in zip(ga, gb):
                assert (u is None) == (v is None)
                if u is not None:
                    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("replace", [None, "pre", "post"])
def test_full_backward_hooks_linear(replace):
    f, t = _linear(7, 5)
    x = _rand(3, 7, seed=2)
    pre = (lambda go: (go[0] * 2,)) if replace == "pre" else None
    post = (lambda gi: (gi[0] * -3,)) if replace == "post" else None
    ours, og = _backward_log(fg, fg.tensor, f, [fg.tensor(x, requires_grad=True)], pre=pre, post=post)
    theirs, tg = _backward_log(torch, torch.tensor, t, [torch.tensor(x, requires_grad=True)], pre=pre, post=post)
    _compare_logs(ours, theirs)
    _close(fg.tensor(og[0]), torch.tensor(tg[0]))
    _close(f.weight.grad, t.weight.grad)  # a replaced grad_output reaches the parameters
    _close(f.bias.grad, t.bias.grad)


def test_full_backward_hooks_two_inputs_and_non_tensor_argument():
    def make(lib):
        base = nn.Module if lib is fg else torch.nn.Module

        class Mix(base):
            def forward(self, a, b, power, c):
                return a * b ** power + c, a - c
        return Mix()
    a, b, c = _rand(2, 3, seed=3), _rand(2, 3, seed=4), _rand(2, 3, seed=5)

    def inputs(lib, tensor):
        return [tensor(a, requires_grad=True), tensor(b), tensor(c, requires_grad=True)]
    fi, ti = inputs(fg, fg.tensor), inputs(torch, torch.tensor)

    def post(gi):
        return gi[0] * 2, gi[1], gi[2], gi[3]
    ours, og = _backward_log(fg, fg.tensor, make(fg), [fi[0], fi[1], 2, fi[2]], post=post)
    theirs, tg = _backward_log(torch, torch.tensor, make(torch), [ti[0], ti[1], 2, ti[2]], post=post)
    _compare_logs(ours, theirs)
    assert ours[-1][1][2] is None and not ours[-1][1][1].any()  # none for the int, zeros for b (as torch)
    for u, v in zip(og, tg):
        assert (u is None) == (v is None)
        if u is not None:
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def _three_outputs(lib):
    base = nn.Module if lib is fg else torch.nn.Module

    class Three(base):
        def forward(self, a, b):
            return a * 2, a * b, b.detach() * 3  # the last never requires grad
    return Three()


@pytest.mark.parametrize("b_grad", [False, True])
@pytest.mark.parametrize("used", [(0,), (1,), (0, 1)])
def test_full_backward_hook_outputs_not_reaching_the_loss_are_none(used, b_grad):
    # torch: grad_output is None for an output that did not reach the loss (forgegrad gave zeros before); grad_input
    # is materialised: zeros for an input that requires no grad or got none
    a, b = _rand(2, 3, seed=6), _rand(2, 3, seed=7)

    def run(lib, tensor):
        m, log = _three_outputs(lib), []
        m.register_full_backward_pre_hook(lambda md, go: log.append(("pre", [_np(g) for g in go])))
        m.register_full_backward_hook(lambda md, gi, go: log.append(("full", [_np(g) for g in gi],
                                                                     [_np(g) for g in go])))
        x, y = tensor(a, requires_grad=True), tensor(b, requires_grad=b_grad)
        outs = m(x, y)
        sum(((outs[i] * (i + 1.5)).sum() for i in used)).backward()
        return log, [_np(x.grad), _np(y.grad)]
    (ours, og), (theirs, tg) = _both(run)
    _compare_logs(ours, theirs)
    assert [g is None for g in ours[0][1]] == [i not in used for i in range(3)]
    for u, v in zip(og, tg):
        assert (u is None) == (v is None)
        if u is not None:
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_backward_pre_hook_may_fill_an_output_gradient_that_was_none():
    def run(lib, tensor):
        m = _three_outputs(lib)
        m.register_full_backward_pre_hook(lambda md, go: (go[0], lib.ones_like(go[0]), go[2]))
        x, y = tensor(_rand(2, 3, seed=8), requires_grad=True), tensor(_rand(2, 3, seed=9))
        m(x, y)[0].sum().backward()
        return _np(x.grad)
    ours, theirs = _both(run)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_backward_hooks_prepend_order():
    def run(lib, tensor):
        m, log = (nn.Linear(3, 2) if lib is fg else torch.nn.Linear(3, 2)), []
        m.register_full_backward_hook(lambda md, gi, go: log.append("b1"))
        m.register_full_backward_hook(lambda md, gi, go: log.append("b0"), prepend=True)
        m.register_full_backward_pre_hook(lambda md, go: log.append("p1"))
        m.register_full_backward_pre_hook(lambda md, go: log.append("p0"), prepend=True)
        m(tensor(_rand(2, 3), requires_grad=True)).sum().backward()
        return log
    assert _both(run) == (["p0", "p1", "b0", "b1"],) * 2


def test_full_backward_hook_fires_once_per_backward_and_not_under_no_grad():
    def run(lib, tensor):
        f = nn.Linear(4, 4) if lib is fg else torch.nn.Linear(4, 4)
        count = []
        f.register_full_backward_hook(lambda md, gi, go: count.append(1))
        x = tensor(_rand(2, 4), requires_grad=True)
        y = f(f(x))  # two calls: two firings in one backward
        y.sum().backward()
        with lib.no_grad():
            f(x)
        return len(count)
    assert _both(run) == (2, 2)


def test_full_backward_hook_when_no_input_requires_grad():
    f, t = _linear(3, 2)
    x = _rand(2, 3)

    def run(lib, tensor, m):
        log = []
        m.register_full_backward_hook(lambda md, gi, go: log.append((gi, [_np(g) for g in go])))
        with pytest.warns(UserWarning, match="no inputs require gradients"):
            m(tensor(x)).sum().backward()
        return log
    ours, theirs = run(fg, fg.tensor, f), run(torch, torch.tensor, t)
    assert len(ours) == len(theirs) == 1 and ours[0][0] == theirs[0][0] == (None,)
    np.testing.assert_allclose(ours[0][1][0], theirs[0][1][0])
    _close(f.weight.grad, t.weight.grad)


@pytest.mark.parametrize("lib", [fg, torch])
def test_backward_hook_wrong_length_raises(lib):
    m = nn.Linear(3, 2) if lib is fg else torch.nn.Linear(3, 2)
    m.register_full_backward_hook(lambda md, gi, go: (gi[0], gi[0]))
    x = (fg.tensor if lib is fg else torch.tensor)(_rand(2, 3), requires_grad=True)
    with pytest.raises(RuntimeError, match="invalid number of grad_input"):
        m(x).sum().backward()


def test_global_backward_hooks():
    def run(lib, tensor):
        mod = fmodule if lib is fg else tmodule
        torch.manual_seed(0)
        tm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh())
        m = _copy_into(nn.Sequential(nn.Linear(3, 4), nn.Tanh()), tm) if lib is fg else tm
        log = []
        hs = [mod.register_module_full_backward_pre_hook(lambda md, go: log.append(("pre", type(md).__name__))),
              mod.register_module_full_backward_hook(
                  lambda md, gi, go: log.append(("full", type(md).__name__, _np(gi[0]).round(5).tolist())))]
        try:
            m(tensor(_rand(2, 3), requires_grad=True)).sum().backward()
        finally:
            for h in hs:
                h.remove()
        m(tensor(_rand(2, 3), requires_grad=True)).sum().backward()
        return log
    ours, theirs = _both(run)
    assert [e[:2] for e in ours] == [e[:2] for e in theirs]
    for a, b in zip(ours, theirs):
        if a[0] == "full":
            np.testing.assert_allclose(a[2], b[2], atol=2e-5)
