"""Double backward after in-place writes, against torch (float64): a tensor that a differentiable rule reads, written
in place after the forward without autograd seeing it (under no_grad: an optimizer step, a manual update), must
not be read at its new value. Rules that read the op's output (relu, softmax, tanh...) give torch's values; the
others raise torch's "modified by an inplace operation" error instead of silently wrong gradients; a tensor the
rule does not read (the running statistics of a training-mode batch norm, updated by the next forward) is no
error."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import autograd


def _t(lib, arr, requires_grad=True):
    arr = np.array(arr, dtype=np.float64)  # a copy: forgegrad.tensor shares a given array, the writes below must not
    if lib == "torch":
        return torch.tensor(arr, requires_grad=requires_grad)
    return fg.tensor(arr, dtype=fg.float64, requires_grad=requires_grad)


def _no_grad(lib):
    return torch.no_grad() if lib == "torch" else fg.no_grad()


def _grad(lib):
    return torch.autograd.grad if lib == "torch" else autograd.grad


X = np.array([[1.0, -2.0, 3.0, -0.5], [0.25, 2.0, -1.5, 0.75]])
OUTPUT_READERS = {  # ops whose second derivative reads their output: torch saves it, so the input may change
    "relu": lambda lib, h: h.relu() * h.relu(),
    "softmax": lambda lib, h: h.softmax(-1) * h.softmax(-1),
    "log_softmax": lambda lib, h: h.log_softmax(-1) * h.log_softmax(-1),
    "tanh": lambda lib, h: h.tanh() * h.tanh(),
    "sigmoid": lambda lib, h: h.sigmoid() * h.sigmoid(),
    "exp": lambda lib, h: h.exp() * h.exp(),
}


def _written_after_forward(lib, fn, write):
    """fn at a leaf w, then w written in place under no_grad, then d/dw and d/dw of |d/dw|^2."""
    w = _t(lib, X)
    y = fn(lib, w)
    with _no_grad(lib):
        write(w)
    (g,) = _grad(lib)(y.sum(), [w], create_graph=True)
    (gg,) = _grad(lib)((g * g).sum(), [w])
    return g.detach().numpy(), gg.detach().numpy()


@pytest.mark.parametrize("name", sorted(OUTPUT_READERS))
def test_rules_reading_the_output_ignore_a_later_write_to_the_input(name):
    fn = OUTPUT_READERS[name]
    # the output (relu's too) is used twice, so the write below cannot reach what the array rules saved of it
    got = _written_after_forward("fg", fn, lambda w: w.mul_(-1.0))
    want = _written_after_forward("torch", fn, lambda w: w.mul_(-1.0))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


READ_INPUT = {  # rules that read the input values (torch saves them too): a later write must raise
    "std": lambda lib, h: h.std(dim=1),
    "var": lambda lib, h: h.var(dim=1) * h.sum(),
    "layer_norm": lambda lib, h: (torch.nn.functional if lib == "torch" else fg.nn.functional).layer_norm(h, (4,)),
    "pow": lambda lib, h: h ** 3,
}


@pytest.mark.parametrize("name", sorted(READ_INPUT))
def test_a_rule_that_reads_a_written_input_raises_as_torch(name):
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _written_after_forward("torch", READ_INPUT[name], lambda w: w.add_(0.5))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _written_after_forward("fg", READ_INPUT[name], lambda w: w.add_(0.5))


def test_cross_entropy_with_its_weight_written_after_the_forward_raises():
    # the rule recomputes the loss: a class weight changed since would weigh the gradient silently wrong
    logits = fg.tensor(X, dtype=fg.float64, requires_grad=True)
    weight = fg.tensor([1.0, 2.0, 0.5, 1.5], dtype=fg.float64)
    loss = fg.nn.functional.cross_entropy(logits, fg.tensor([1, 3]), weight=weight)
    weight.mul_(3.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        autograd.grad(loss, [logits], create_graph=True)


def test_eval_batch_norm_with_its_running_statistics_written_after_raises():
    bn = fg.nn.BatchNorm1d(4).double().eval()
    x = fg.tensor(X, dtype=fg.float64, requires_grad=True)
    y = bn(x).tanh().sum()
    with fg.no_grad():
        bn.running_var.mul_(4.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        autograd.grad(y, [x], create_graph=True)


def _critic_penalty(lib):
    """A conv + training-mode batch norm critic called twice (the second call updates the running statistics in
    place), then the gradient penalty of the first call."""
    nn = torch.nn if lib == "torch" else fg.nn
    conv, bn = nn.Conv1d(3, 3, 3, padding=1).double(), nn.BatchNorm1d(3).double()
    rng = np.random.default_rng(0)
    with _no_grad(lib):
        conv.weight.copy_(_t(lib, rng.uniform(-0.5, 0.5, (3, 3, 3)), False))
        conv.bias.copy_(_t(lib, rng.uniform(-0.5, 0.5, (3,)), False))
    x1, x2 = _t(lib, rng.standard_normal((5, 3, 4))), _t(lib, rng.standard_normal((5, 3, 4)))
    y1 = bn(conv(x1)).tanh().sum()
    bn(conv(x2)).tanh().sum()
    (g,) = _grad(lib)(y1, [x1], create_graph=True)
    (gw,) = _grad(lib)((g * g).sum(), [conv.weight])
    return g.detach().numpy(), gw.detach().numpy()


def test_training_batch_norm_called_again_before_the_penalty_is_no_error():
    for a, b in zip(_critic_penalty("fg"), _critic_penalty("torch")):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_a_recorded_in_place_write_keeps_the_old_value_for_the_rule():
    # h.mul_ under grad mode is recorded: relu and tanh keep reading h as it was (a stand-in), as torch
    def run(lib):
        x = _t(lib, X)
        h = x * 1.0
        y = h.relu() * h.tanh()
        h.mul_(-1.0)
        (g,) = _grad(lib)(y.sum(), [x], create_graph=True)
        (gg,) = _grad(lib)((g * g).sum(), [x])
        return g.detach().numpy(), gg.detach().numpy()

    for a, b in zip(run("fg"), run("torch")):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def _second(lib, y, x):
    (g,) = _grad(lib)(y, [x], create_graph=True)
    (gg,) = _grad(lib)((g * g * x).sum(), [x])
    return g.detach().numpy(), gg.detach().numpy()


def _writes_through_views(lib):
    """In-place writes through views (torch's CopySlices / AsStrided nodes), then differentiated twice."""
    x = _t(lib, [1.0, -2.0, 3.0, 0.5, 2.0])
    h = x * 2
    v = h[1:4]
    h[0:2].mul_(x[1:3])  # through another view: v is stale and rebased on h's new node
    m = _t(lib, np.arange(10.0).reshape(2, 5), False) * 0.5
    m.t()[1:].add_(x[1:].unsqueeze(1).sin())  # through a transposed view
    m[1, 2:].zero_()
    buf = torch.zeros(7, dtype=torch.float64) if lib == "torch" else fg.zeros(7, dtype=fg.float64)
    buf[1:6].copy_(x.exp())  # into a slice of a constant buffer
    y = (v ** 3).sum() + (h * x).sum() + (m * m).sum() + (buf[2:] * buf[:-2]).sum()
    return _second(lib, y, x)


def test_writes_through_views_under_create_graph_match_torch():
    # (CopySlices / rebased views had no differentiable rule: create_graph raised NotImplementedError)
    for a, b in zip(_writes_through_views("fg"), _writes_through_views("torch")):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("write", ["mul_", "copy_"])
def test_a_recorded_write_from_a_partly_overlapping_view_is_refused_as_torch(write):
    # h[1:].mul_(h[:-1]): the op's node read h[:-1] after the write changed it (its gradients were silently wrong,
    # differently so with and without create_graph); torch refuses the write
    for lib in ("fg", "torch"):
        h = _t(lib, X[0]) * 2
        with pytest.raises(RuntimeError, match="refer to a single memory location"):
            getattr(h[1:], write)(h[:-1])


def test_writes_from_views_that_share_no_element_still_work():
    def run(lib):
        x = _t(lib, [1.0, -2.0, 3.0, 0.5, 2.0, -1.0])
        h = x * 2
        h.add_(h)  # the same elements (full overlap), as torch allows
        h[:2].add_(h[4])
        h[::2].add_(h[1::2])  # interleaved: no element in common
        return _second(lib, (h * x).sum(), x)

    for a, b in zip(run("fg"), run("torch")):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
