"""forgegrad.autograd.grad, autograd.backward and Tensor.backward(inputs=...) against torch: the gradients, non-leaf
inputs, several outputs, unused inputs, the retain_graph rules, which hooks fire, .grad left alone, a checkpointed
region inside, and data parallelism's gradient reduction not started by grad()."""
import warnings

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import autograd, nn
from forgegrad.utils.checkpoint import checkpoint

X0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], np.float32)
W0 = np.array([[0.2, -0.4], [0.7, 0.1], [-0.3, 0.9]], np.float32)


def _t(lib, values, requires_grad=True):
    if lib == "torch":
        return torch.tensor(np.asarray(values, np.float32), requires_grad=requires_grad)
    return fg.tensor(np.asarray(values, np.float32), requires_grad=requires_grad)


def _grad(lib):
    return torch.autograd.grad if lib == "torch" else autograd.grad


def _graph(lib):
    """x (2,3) @ w (3,2) -> tanh -> h; loss = sum(h * h) + sum(h * c) with h used twice."""
    x, w = _t(lib, X0), _t(lib, W0)
    c = _t(lib, [[1.0, -2.0], [0.5, 3.0]], requires_grad=False)
    h = (x @ w).tanh()
    loss = (h * h).sum() + (h * c).sum()
    return x, w, h, loss


def _same(got, ref):
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        if b is None:
            assert a is None
        else:
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)


def _both(case):
    _same(case("fg"), case("torch"))


def test_gradients_of_leaves_match_torch_and_leave_grad_alone():
    def case(lib):
        x, w, _, loss = _graph(lib)
        out = _grad(lib)(loss, [x, w])
        assert x.grad is None and w.grad is None
        assert not out[0].requires_grad
        return out
    _both(case)


def test_non_leaf_input_alone_and_with_a_leaf_behind_it():
    def alone(lib):
        x, w, h, loss = _graph(lib)
        return _grad(lib)(loss, h)
    _both(alone)

    def case(lib):
        x, w, h, loss = _graph(lib)
        return _grad(lib)(loss, (h, w, x))
    _both(case)


def test_several_outputs_with_grad_outputs_none_for_a_scalar():
    def case(lib):
        x, w, h, loss = _graph(lib)
        v = _t(lib, [[1.0, 0.5], [-1.0, 2.0]], requires_grad=False)
        return _grad(lib)([loss, h * 3.0], [x, w], grad_outputs=[None, v])
    _both(case)

    def vjp(lib):  # a non-scalar output with its vector, as one tensor
        x, w, h, _ = _graph(lib)
        return _grad(lib)(h, x, grad_outputs=_t(lib, np.ones((2, 2)), requires_grad=False))
    _both(vjp)


def test_output_that_is_an_input_gets_its_seed():
    def case(lib):
        x, w, h, loss = _graph(lib)
        return _grad(lib)([loss, x.sum()], [x, h])
    _both(case)


def test_errors_match_torch():
    x, w, h, loss = _graph("fg")
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        autograd.grad(h, x)
    with pytest.raises(RuntimeError, match="does not require grad"):
        autograd.grad(loss, _t("fg", X0, requires_grad=False))
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad"):
        autograd.grad(_t("fg", [1.0], requires_grad=False).sum(), x)
    with pytest.raises(ValueError, match="is_grads_batched"):  # torch's vmap refuses the implicit scalar seed
        autograd.grad(loss, x, is_grads_batched=True)
    with pytest.raises(TypeError, match="inputs"):
        autograd.grad(loss, [x, 3.0])


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")  # torch's reference-cycle note
def test_create_graph_gives_differentiable_gradients():
    # (tests/test_double_backward*.py cover create_graph op by op; here: through grad() and backward())
    got = {}
    for lib in ("fg", "torch"):
        x, w, h, loss = _graph(lib)
        (gx,) = _grad(lib)(loss, x, create_graph=True)
        assert gx.grad_fn is not None
        (gx * gx).sum().backward()
        w_grad = w.grad.detach().numpy().copy()
        w.grad = None
        (x @ w).tanh().sum().backward(create_graph=True)
        assert w.grad.grad_fn is not None
        got[lib] = (gx.detach().numpy(), x.grad.detach().numpy(), w_grad, w.grad.detach().numpy())
    for a, b in zip(got["fg"], got["torch"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unused_inputs_error_none_or_zeros():
    for lib in ("torch", "fg"):
        x, w, h, loss = _graph(lib)
        other = _t(lib, [1.0, 2.0])
        with pytest.raises(RuntimeError, match="Tensor at index 1 appears to not have been used in the graph"):
            _grad(lib)(loss, [x, other], retain_graph=True)
        gx, go = _grad(lib)(loss, [x, other], allow_unused=True, retain_graph=True)
        assert go is None and gx is not None
        gx, go = _grad(lib)(loss, [x, other], materialize_grads=True, retain_graph=True)
        np.testing.assert_array_equal(np.asarray(go.tolist()), [0.0, 0.0])
        with pytest.raises(ValueError, match="allow_unused"):
            _grad(lib)(loss, [x, other], materialize_grads=True, allow_unused=False)


def test_retain_graph_rules_match_torch():
    for lib in ("torch", "fg"):
        x, w, h, loss = _graph(lib)
        _grad(lib)(loss, x, retain_graph=True)
        _grad(lib)(loss, x)  # the default (create_graph=False) frees the buffers of the nodes run
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            _grad(lib)(loss, x)
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            loss.backward()


def test_hooks_on_the_way_fire_post_accumulate_hooks_do_not():
    def case(lib):
        log = []
        x, w = _t(lib, X0), _t(lib, W0)
        unused_leaf = _t(lib, [[1.0, 1.0], [1.0, 1.0]])
        h = (x @ w).tanh()
        h.register_hook(lambda g: log.append(("h", g.tolist())))
        h.register_hook(lambda g: g * 2.0)  # a replacement: what flows on is doubled
        x.register_hook(lambda g: log.append(("x", g.tolist())))
        w.register_hook(lambda g: log.append(("w", g.tolist())))  # w is not an input: its hook does not fire
        w.register_post_accumulate_grad_hook(lambda p: log.append(("post w", [])))
        x.register_post_accumulate_grad_hook(lambda p: log.append(("post x", [])))
        unused_leaf.register_hook(lambda g: log.append(("u", g.tolist())))
        loss = (h * h).sum() + (h * unused_leaf).sum()
        (gx,) = _grad(lib)(loss, [x])
        assert x.grad is None and w.grad is None
        return log + [("gx", gx.tolist())]

    ref, got = case("torch"), case("fg")
    assert [n for n, _ in got] == [n for n, _ in ref] == ["h", "x", "gx"]
    for (_, a), (_, b) in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_retain_grad_of_an_intermediate_on_the_way_as_torch():
    def case(lib):
        x, w = _t(lib, X0), _t(lib, W0)
        z = x @ w
        z.retain_grad()
        h = z.tanh()
        (gx,) = _grad(lib)((h * h).sum(), x)
        return [gx, z.grad]
    _both(case)


def test_checkpointed_region_recomputes_inside_grad():
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    w2 = rng.standard_normal((2, 4)).astype(np.float32)
    f1, f2 = nn.Linear(3, 4), nn.Linear(4, 2, bias=False)
    t1, t2 = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2, bias=False)
    f1.weight.data, f1.bias.data, f2.weight.data = fg.tensor(w1), fg.tensor(b1), fg.tensor(w2)
    with torch.no_grad():
        t1.weight.copy_(torch.tensor(w1)), t1.bias.copy_(torch.tensor(b1)), t2.weight.copy_(torch.tensor(w2))
    import torch.utils.checkpoint as tckpt

    def run(lib, which):
        l1, l2 = (t1, t2) if lib == "torch" else (f1, f2)
        ck = tckpt.checkpoint if lib == "torch" else checkpoint
        x = _t(lib, X0)
        h = ck(lambda a: l1(a).tanh(), x, use_reentrant=False)
        loss = (l2(h) ** 2).sum()
        inputs = {"all": [x, l1.weight, l1.bias, l2.weight], "inner": [l1.weight], "h": [h, x]}[which]
        out = _grad(lib)(loss, inputs)
        assert x.grad is None and all(p.grad is None for p in (l1.weight, l1.bias, l2.weight))
        return out

    for which in ("all", "inner", "h"):
        _same(run("fg", which), run("torch", which))


def test_backward_inputs_accumulates_into_those_only():
    def case(lib):
        log = []
        x, w = _t(lib, X0), _t(lib, W0)
        z = x @ w
        h = z.tanh()
        x.register_post_accumulate_grad_hook(lambda p: log.append("post x"))
        w.register_post_accumulate_grad_hook(lambda p: log.append("post w"))
        loss = (h * h).sum()
        loss.backward(inputs=[w, z], retain_graph=True)
        assert x.grad is None and z.grad is not None and log == ["post w"]
        loss.backward(inputs=w)  # accumulates
        return [w.grad, z.grad]
    _both(case)


def test_autograd_backward_several_tensors():
    def case(lib):
        backward = torch.autograd.backward if lib == "torch" else autograd.backward
        x, w, h, loss = _graph(lib)
        v = _t(lib, [[1.0, 0.5], [-1.0, 2.0]], requires_grad=False)
        backward([loss, h], [None, v], retain_graph=True)
        first = [x.grad.clone() if lib == "torch" else fg.tensor(x.grad.numpy().copy()), w.grad]
        backward(loss, inputs=[x])
        return first + [x.grad]
    _both(case)


class _Observer:
    def __init__(self):
        self.passes = 0

    def seen(self, nodes):
        self.passes += 1


def test_grad_is_not_a_training_pass_for_observers_and_callbacks_run():
    obs = _Observer()
    autograd._add_pass_observer(obs.seen)
    ran = []
    x, w, h, loss = _graph("fg")
    h.register_hook(lambda g: autograd.queue_callback(lambda: ran.append("cb")))
    autograd.grad(loss, x, retain_graph=True)
    assert obs.passes == 0 and ran == ["cb"]
    loss.backward()
    assert obs.passes == 1 and ran == ["cb", "cb"]


def test_ddp_reduces_nothing_under_grad():
    import forgegrad.distributed as dist
    from forgegrad.distributed.ddp import DistributedDataParallel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dist.init()
    m = DistributedDataParallel(nn.Linear(3, 2))
    reducer = m._reducer
    x = _t("fg", X0)
    loss = (m(x) ** 2).sum()
    gw = autograd.grad(loss, m.module.weight, retain_graph=True)[0]
    assert all(p.grad is None for p in m.parameters())
    assert reducer.rounds == 0 and not reducer.active and reducer.launched_in_backward == 0
    loss.backward()  # the training pass still runs its round
    assert reducer.rounds == 1
    np.testing.assert_allclose(m.module.weight.grad.numpy(), gw.numpy(), rtol=1e-6)


def test_fsdp_gathers_for_grad_and_frees_after_with_no_reduction():
    import forgegrad.distributed as dist
    from forgegrad import optim
    from forgegrad.distributed.fsdp import FullyShardedDataParallel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dist.init()
        m = FullyShardedDataParallel(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
        dist.ZeroRedundancyOptimizer(m.parameters(), optim.SGD, stage=3, lr=0.1)
    x = _t("fg", X0)
    loss = (m(x) ** 2).sum()
    (gx,) = autograd.grad(loss, x, retain_graph=True)
    assert m._gathered == 0 and not m._in_backward  # every unit gathered for the pass was freed at its end
    assert all(p.grad is None for p in m.parameters())
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), gx.numpy(), rtol=1e-6)


def test_a_leaf_input_hooks_run_once_its_last_consumer_has_run():
    def case(lib):
        log = []
        u, x = _t(lib, [0.5, -1.0]), _t(lib, [2.0, 3.0])
        v = u.exp()
        v.register_hook(lambda g: log.append(("v", g.tolist())))
        x.register_hook(lambda g: log.append(("x", g.tolist())))
        u.register_hook(lambda g: log.append(("u", g.tolist())))
        x.register_post_accumulate_grad_hook(lambda p: log.append(("post x", p.grad.tolist())))
        loss = (v * x).sum()  # x's one consumer runs before v's node: x is finished before the pass goes on
        if lib == "torch":
            loss.backward(inputs=[u, x])
        else:
            autograd.backward(loss, inputs=[u, x])
        return log

    ref, got = case("torch"), case("fg")
    assert [n for n, _ in got] == [n for n, _ in ref] == ["x", "post x", "v", "u"]
    for (_, a), (_, b) in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_one_output_of_a_multi_output_node_float64_and_a_view_written_in_place():
    a0 = np.random.default_rng(0).standard_normal((4, 3))

    def chunks(lib):
        x = (torch if lib == "torch" else fg).tensor(a0, requires_grad=True)  # float64
        p, q = (x * 2.0).chunk(2, 0)
        out = _grad(lib)((p.exp() * q).sum(), [q, x])
        assert str(out[1].dtype).endswith("float64")
        return out
    _both(chunks)

    def view(lib):
        x = _t(lib, a0)
        y = x * 1.0
        v = y[1:]
        y.mul_(3.0)  # v now reads the written values, through its rebased node
        return _grad(lib)((v * v).sum(), [v, x])
    _both(view)
