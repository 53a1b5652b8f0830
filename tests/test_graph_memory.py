"""The autograd graph keeps only what backward reads (forgegrad._graph_memory): an intermediate that no rule reads
(a convolution's or a linear layer's output feeding a ReLU) is freed once user code drops it, as in torch, and every
feature that walks the graph still works through the Edge left in its place: first-order and create_graph
backward, hooks and retain_grad on intermediates, in-place rebinding, views, checkpointing, retain_graph,
forgegrad.autograd.functional. Each result is compared with torch's."""
import gc
import weakref

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import autograd
from forgegrad._graph_memory import Edge, _kind
from forgegrad.autograd import _topo_order
from forgegrad.ops import registry
from test_double_backward_registry import MAX_ELEMENTS, NO_TORCH_DOUBLE_BACKWARD, RANDOM, _args, _second_order

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 5)).astype(np.float32)
W = RNG.standard_normal((5, 6)).astype(np.float32)
W2 = RNG.standard_normal((6, 3)).astype(np.float32)


def _pair():
    return (fg.tensor(X, requires_grad=True), fg.tensor(W, requires_grad=True), fg.tensor(W2, requires_grad=True)), \
        (torch.tensor(X, requires_grad=True), torch.tensor(W, requires_grad=True), torch.tensor(W2, requires_grad=True))


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=tol, atol=tol)


def test_an_intermediate_that_no_rule_reads_is_freed_after_forward():
    x, w, _ = _pair()[0]
    h = x @ w
    arr = weakref.ref(h._data)
    y = h.relu()  # relu's backward reads its output: h is only an edge of the graph
    del h
    gc.disable()  # freed by reference counting, not by a later collection (no reference cycle)
    try:
        assert arr() is None
    finally:
        gc.enable()
    assert isinstance(y._ctx.parents[0], Edge)
    y.sum().backward()
    tx, tw, _ = _pair()[1]
    (tx @ tw).relu().sum().backward()
    _close(x.grad, tx.grad)
    _close(w.grad, tw.grad)


def test_lenet_graph_keeps_no_conv_output():
    from forgegrad.models import LeNet
    m = LeNet(in_channels=1, num_classes=10, input_size=28)
    loss = fg.nn.functional.cross_entropy(m(fg.randn(2, 1, 28, 28)), fg.tensor(np.array([1, 3])))
    nodes = _topo_order(loss._ctx)
    kinds = {type(p._ctx).__name__ for n in nodes for p in n.parents if isinstance(p, Edge)}
    assert "Conv2dFunction" in kinds and "LinearFunction" in kinds
    held = [p for n in nodes for p in n.parents if p is not None and type(p) is fg.Tensor and p._ctx is not None and
            type(p._ctx).__name__ == "Conv2dFunction" and type(n).__name__ == "ReluFunction"]
    assert held == []


def test_weakly_held_intermediate_alive_keeps_retain_grad_and_hooks():
    (x, w, w2), (tx, tw, tw2) = _pair()
    seen, tseen = [], []
    outs = []
    for lib, (a, b, c), s in (("fg", (x, w, w2), seen), ("torch", (tx, tw, tw2), tseen)):
        h = a @ b
        y = h.relu()  # recorded before retain_grad and the hook: the node holds h weakly
        h.retain_grad()
        h.register_hook(lambda g, s=s: s.append(g.detach().numpy().copy()))
        (y @ c).square().sum().backward()
        outs.append(h)
    _close(outs[0].grad, outs[1].grad)
    np.testing.assert_allclose(seen[0], tseen[0], rtol=1e-5, atol=1e-5)


def test_hook_on_a_dropped_intermediate_still_runs():
    (x, w, w2), (tx, tw, tw2) = _pair()
    seen, tseen = [], []
    for (a, b, c), s in (((x, w, w2), seen), ((tx, tw, tw2), tseen)):
        h = a @ b
        h.register_hook(lambda g, s=s: s.append(g.detach().numpy().copy()) or g * 2)
        y = h.sigmoid() @ c
        del h
        y.sum().backward()
    np.testing.assert_allclose(seen[0], tseen[0], rtol=1e-5, atol=1e-5)
    _close(x.grad, tx.grad)


def test_retain_graph_backward_twice_through_edges():
    (x, w, w2), (tx, tw, tw2) = _pair()
    for a, b, c in ((x, w, w2), (tx, tw, tw2)):
        loss = ((a @ b).tanh() @ c).relu().sum()
        loss.backward(retain_graph=True)
        loss.backward()
    _close(x.grad, tx.grad)
    _close(w2.grad, tw2.grad)


def test_grad_of_a_live_intermediate():
    (x, w, w2), (tx, tw, tw2) = _pair()
    got = []
    for grad, (a, b, c) in ((autograd.grad, (x, w, w2)), (torch.autograd.grad, (tx, tw, tw2))):
        h = a @ b
        loss = (h.relu() @ c).sum()
        got.append(grad(loss, [h, b]))
    for g, t in zip(*got):
        _close(g, t)


def test_create_graph_through_dropped_intermediates_matches_torch():
    (x, w, w2), (tx, tw, tw2) = _pair()
    res = []
    for lib, grad, (a, b, c) in (("fg", autograd.grad, (x, w, w2)), ("torch", torch.autograd.grad, (tx, tw, tw2))):
        h = a @ b  # dropped by tanh, sigmoid, mul-by-constant, relu
        z = (h.tanh() * 2.0 + h.sigmoid()) @ c
        loss = (z.relu() + z.softmax(-1) + z.log_softmax(-1).exp()).sum()
        del h, z
        gx, gw = grad(loss, [a, b], create_graph=True)
        penalty = (gx * gx).sum() + (gw * gw).mean()
        res.append(grad(penalty, [a, b, c]))
    for g, t in zip(*res):
        _close(g, t, 1e-4)


def test_functional_hessian_through_dropped_intermediates():
    def f(lib):
        def fn(v):
            w = lib.tensor(W) if lib is fg else torch.tensor(W)
            return ((v @ w).tanh() * 3.0).relu().sum()
        return fn
    got = autograd.functional.hessian(f(fg), fg.tensor(X[0]))
    want = torch.autograd.functional.hessian(f(torch), torch.tensor(X[0]))
    _close(got, want, 1e-4)


def test_inplace_write_to_a_dropped_input_and_its_rebinding():
    (x, w, w2), (tx, tw, tw2) = _pair()
    for a, b, c in ((x, w, w2), (tx, tw, tw2)):
        h = a @ b
        y = h * 3.0  # h held weakly (mul by a number reads no tensor)
        h.add_(1.0)  # h rebound: y's node must still reach matmul's node
        z = h * h
        ((y + z) @ c).sum().backward()
    _close(x.grad, tx.grad)
    _close(w.grad, tw.grad)


def test_inplace_write_to_a_saved_output_still_raises():
    x, w, _ = _pair()[0]
    h = x @ w
    y = h.sigmoid()
    del h
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_view_of_a_dropped_intermediate_then_base_written():
    (x, w, w2), (tx, tw, tw2) = _pair()
    for a, b, c in ((x, w, w2), (tx, tw, tw2)):
        h = a @ b
        v = h[1:]
        y = v.relu()  # v (a view of h) held weakly
        h.mul_(2.0)  # v is stale now; relu's node keeps the edge to v as it was
        del v
        ((y @ c).sum() + h.sum()).backward()
    _close(x.grad, tx.grad)
    _close(w.grad, tw.grad)


def test_checkpoint_region_with_dropped_intermediates():
    from forgegrad.utils.checkpoint import checkpoint as fg_checkpoint
    from torch.utils.checkpoint import checkpoint as torch_checkpoint
    (x, w, w2), (tx, tw, tw2) = _pair()
    fg_checkpoint(lambda a: ((a @ w).relu() @ w2).tanh(), x, use_reentrant=False).sum().backward()
    torch_checkpoint(lambda a: ((a @ tw).relu() @ tw2).tanh(), tx, use_reentrant=False).sum().backward()
    _close(x.grad, tx.grad)
    _close(w.grad, tw.grad)


# Every op whose nodes may drop an input, over its registry samples with each input an intermediate that user code
# drops: the gradient and the gradient of its projection with create_graph, against torch's float64.
def _drop_cases():
    for op in registry.all_ops():
        rule = op.differentiable_backward
        if (rule is None or getattr(rule, "recomputes", False) or op.name in RANDOM | NO_TORCH_DOUBLE_BACKWARD
                or op.samples is None or op.torch is None or not _kind(op.function)):
            continue
        for k, s in enumerate(op.samples()):
            if s.grad_positions() and all(not isinstance(a, np.ndarray) or a.size <= MAX_ELEMENTS for a in s.args):
                yield pytest.param(op.name, k, id=f"{op.name}-{s.name or k}")


def _second_order_dropped(op, sample):
    pos = [p for p in sample.grad_positions() if sample.args[p].dtype == np.float32 and p not in op.float32_args]
    args = _args("fg", op, sample, pos)
    xs = [args[p] for p in pos]
    hs = [a * 1.0 if i in pos else a for i, a in enumerate(args)]
    refs = [weakref.ref(hs[p]) for p in pos]
    outs = op(*hs, **sample.kwargs)
    del hs
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    dropped = sum(r() is None for r in refs)
    rng = np.random.default_rng(7)
    total = sum((o * fg.tensor(rng.uniform(-1, 1, size=tuple(o.shape)))).sum() for o in outs
                if o.dtype == fg.float64 and o.requires_grad)
    if not isinstance(total, fg.Tensor):
        return dropped, []
    gs = autograd.grad(total, xs, create_graph=True, allow_unused=True)
    proj = [(g * fg.tensor(rng.uniform(-1, 1, size=tuple(g.shape)))).sum() for g in gs
            if g is not None and g.requires_grad]
    ggs = autograd.grad(sum(proj), xs, allow_unused=True) if proj else [None] * len(xs)
    arr = [np.zeros(x.shape) if g is None else g.detach().numpy() for g, x in zip(list(gs) + list(ggs), xs + xs)]
    return dropped, arr


@pytest.mark.slow
@pytest.mark.parametrize("name,k", list(_drop_cases()))
def test_registry_grad_of_grad_with_dropped_inputs_matches_torch(name, k):
    op = registry.get(name)
    sample = op.samples()[k]
    _, got = _second_order_dropped(op, sample)
    want = _second_order(op, sample, "torch")
    for i, (a, b) in enumerate(zip(got, want)):
        what = f"{name} sample {sample.name or k}: " + ("gradient" if i < len(got) // 2 else "gradient of gradient")
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10, equal_nan=True, err_msg=what)


def test_ops_that_read_their_output_keep_it_and_ops_that_do_not_drop_it():
    x = fg.tensor(X, requires_grad=True)
    for make, dropped in ((lambda h: h.relu(), True), (lambda h: h * 2.0, True), (lambda h: h + 1.0, True),
                          (lambda h: h.sin(), False), (lambda h: h.reshape(-1), False)):
        h = x * 1.0
        r = weakref.ref(h)
        y = make(h)
        del h
        assert (r() is None) is dropped, y._ctx
    for reads_output in (lambda t: t.relu(), lambda t: t.exp(), lambda t: t.tanh(), lambda t: t.softmax(-1)):
        h = reads_output(x * 1.0)
        r = weakref.ref(h)
        y = h + 1.0
        del h
        assert r() is not None, y._ctx  # its rule reads it (and it saved it: no memory kept)


def test_a_released_node_frees_its_inputs_before_the_pass_ends():
    x = fg.tensor(X, requires_grad=True)
    x2 = x * 1.0
    h = x2 @ fg.tensor(W)
    arr = weakref.ref(h._data)
    loss = h.sin().sum()  # sin saves h: the graph holds it until sin's node has run
    del h
    seen = []
    x2.register_hook(lambda g: seen.append(arr() is None))  # runs after matmul's node, while loss still lives
    assert arr() is not None
    loss.backward()
    assert seen == [True]


class _SameStorage(fg.autograd.Function):
    """A non-view op whose output is its input's array (none of forgegrad's own ops is one)."""

    differentiable_reads = ()

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        return g


def test_inplace_on_a_leafs_storage_is_refused_after_its_graph_was_released():
    w = fg.tensor(W, requires_grad=True)
    o = _SameStorage.apply(w[1:])
    o.sum().backward()  # the nodes are released: _SameStorage's input is an Edge now
    with pytest.raises(RuntimeError, match="view of a leaf Variable"):
        o.add_(1.0)


def test_max_pool_indices_output_backward_matches_torch():
    a = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    x, tx = fg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    for lib, t in ((fg, x), (torch, tx)):
        y, _ = lib.nn.functional.max_pool2d(t * 2.0, 2, return_indices=True)
        (y * y).sum().backward()
    _close(x.grad, tx.grad)
