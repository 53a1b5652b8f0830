"""Tensor.register_hook against torch: the values each hook sees, the gradients, and the call order
(several hooks, replacements, retain_grad, post-accumulate hooks, in-place writes and views)."""
import numpy as np
import pytest
import torch

import forgegrad as fg


def _t(lib, values, requires_grad=False):
    if lib == "torch":
        return torch.tensor(np.asarray(values, np.float32), requires_grad=requires_grad)
    return fg.tensor(np.asarray(values, np.float32), requires_grad=requires_grad)


def _both(case):
    """Run ``case(lib)`` for torch and forgegrad; their logs of (name, values) must match in order."""
    ref, got = case("torch"), case("fg")
    assert [n for n, _ in got] == [n for n, _ in ref]
    for (_, a), (_, b) in zip(got, ref):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-5, atol=1e-6)


def _note(log, name, value=None):
    """A hook that logs the gradient it gets and returns ``value(g)`` (None: no replacement)."""
    def hook(g):
        log.append((name, g.tolist()))
        return None if value is None else value(g)
    return hook


def test_leaf_and_nonleaf_hooks_replacement_order_retain_grad_and_post_hook():
    def case(lib):
        log = []
        x = _t(lib, [1.0, 2.0, 3.0], True)
        x.register_hook(_note(log, "x1"))
        x.register_hook(_note(log, "x2", lambda g: g * 2))  # a replacement: x3 and .grad see it
        x.register_hook(_note(log, "x3"))
        x.register_post_accumulate_grad_hook(lambda t: log.append(("post", t.grad.tolist())))
        y = x * x
        y.retain_grad()
        y.register_hook(_note(log, "y", lambda g: g + 1))  # retain_grad stores the hooked gradient
        z = (y * 3 + y.sin()).sum() + x.sum()  # y and x used twice: one call each, with the sum
        z.backward()
        log += [("y.grad", y.grad.tolist()), ("x.grad", x.grad.tolist())]
        return log
    _both(case)


def test_remove_and_accumulation_over_passes():
    def case(lib):
        log = []
        x = _t(lib, [1.0, -1.0], True)
        h1 = x.register_hook(_note(log, "a"))
        x.register_hook(_note(log, "b", lambda g: g * 3))
        (x * 2).sum().backward()
        h1.remove()
        h1.remove()  # a second remove is a no-op
        (x * x).sum().backward()
        log.append(("x.grad", x.grad.tolist()))
        return log
    _both(case)


def test_hook_on_a_multi_output_node_and_a_root():
    def case(lib):
        log = []
        x = _t(lib, np.arange(6.0).reshape(2, 3), True)
        a, b = x.split([1, 2], dim=1) if lib == "torch" else x.split([1, 2], 1)
        a.register_hook(_note(log, "a", lambda g: g * 10))
        b.register_hook(_note(log, "b"))
        out = (a * 2).sum() + (b * b).sum()
        out.register_hook(_note(log, "root"))
        out.backward()
        log.append(("x.grad", x.grad.tolist()))
        return log
    _both(case)


def test_hooks_before_and_after_an_in_place_write():
    """Registered before the write: the gradient of the old value; after: of the new one (torch's rule)."""
    def case(lib):
        log = []
        x = _t(lib, [1.0, 2.0, 3.0], True)
        y = x * 2
        y.register_hook(_note(log, "before"))
        y.mul_(3)
        y.register_hook(_note(log, "after"))
        (y * y).sum().backward()
        log.append(("x.grad", x.grad.tolist()))
        return log
    _both(case)


def test_hooks_on_a_base_written_through_a_view():
    def case(lib):
        log = []
        x = _t(lib, [1.0, 2.0, 3.0, 4.0], True)
        b = x * 1
        b.register_hook(_note(log, "b-before"))
        v = b[1:3]
        v.mul_(5)  # the base gets the write's node (CopySlices); its old hooks see the old value's gradient
        b.register_hook(_note(log, "b-after"))
        (b * b).sum().backward()
        log.append(("x.grad", x.grad.tolist()))
        return log
    _both(case)


@pytest.mark.parametrize("between", ["nothing", "grad_fn", "an op on the view", "retain_grad"])
def test_hook_on_a_view_registered_after_a_write_into_its_base(between):
    """torch keeps a view's hooks with the node the first one was registered on: a hook added after a write into
    the base joins them there (that node is no longer in the view's graph: neither fires) unless something asked
    for the view's new node first (grad_fn, an op using the view), as forgegrad's."""
    def case(lib):
        log = []
        x = _t(lib, [1.0, 2.0, 3.0, 4.0], True)
        b = x * 1
        v = b[1:3]
        v.register_hook(_note(log, "v-before"))
        b.mul_(2)
        if between == "grad_fn":
            assert v.grad_fn is not None
        elif between == "an op on the view":
            v * 1
        elif between == "retain_grad":
            v.retain_grad()
        v.register_hook(_note(log, "v-after", lambda g: g * 10))
        (v * v).sum().backward()
        log.append(("x.grad", x.grad.tolist()))
        if between == "retain_grad":
            log.append(("v.grad", v.grad.tolist()))
        return log
    _both(case)


def test_hooks_on_a_view_written_in_place_before_and_after():
    def case(lib):
        log = []
        x = _t(lib, [1.0, 2.0, 3.0, 4.0], True)
        b = x * 1
        v = b[1:3]
        v.register_hook(_note(log, "before"))
        v.mul_(2)  # the view itself written: its hooks start anew on its new node
        v.register_hook(_note(log, "after"))
        (v * v).sum().backward()
        log.append(("x.grad", x.grad.tolist()))
        return log
    _both(case)


def test_retain_grad_on_a_leaf_is_a_no_op_like_torch():
    def case(lib):
        x = _t(lib, [1.0, 2.0], True)
        x.retain_grad()
        x.register_hook(lambda g: g * 10)
        (x * 2).sum().backward()
        return [("x.grad", x.grad.tolist())]
    _both(case)


def test_errors_like_torch():
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        fg.tensor(np.ones(2, np.float32)).register_hook(lambda g: None)
    x = fg.tensor(np.ones(2, np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="callable"):
        x.register_hook(3)
    x.register_hook(lambda g: fg.ones(3))
    with pytest.raises(RuntimeError, match="changed the size"):
        (x * 2).sum().backward()


@pytest.mark.parametrize("leaf", [True, False])
def test_a_hook_changing_the_dtype_is_refused_as_torch(leaf):
    def grad_to_double(g):
        return g.double()
    for lib in (torch, fg):
        x = lib.tensor(np.ones(3, np.float32), requires_grad=True)
        y = x if leaf else x * 2
        y.register_hook(grad_to_double)
        with pytest.raises(RuntimeError, match="hook 'grad_to_double' has changed the type of value"):
            (y * 3).sum().backward()


def test_hooks_and_checkpoint_on_a_plugin_device_and_a_hook_moving_the_gradient_is_refused():
    import device_seam_helpers as seam
    from forgegrad.utils.checkpoint import checkpoint

    def grads(device):
        fg.manual_seed(0)
        lin = fg.nn.Linear(3, 3).to(device)
        x = fg.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), device=device, requires_grad=True)
        y = x * 2
        y.register_hook(lambda g: g * 3)
        x.register_hook(lambda g: g + 1)
        checkpoint(lambda v: lin(v).tanh(), y, use_reentrant=False).sum().backward()
        return x.grad, lin.weight.grad

    with seam.registered():
        on_device = grads(seam.DEVICE)
        assert all(g.device == seam.DEVICE for g in on_device)
        for a, b in zip(on_device, grads("cpu")):
            np.testing.assert_array_equal(a.to("cpu").numpy(), b.numpy())

        def to_cpu(g):
            return g.to("cpu")
        x = fg.ones(3, device=seam.DEVICE, requires_grad=True)
        y = x * 2
        y.register_hook(to_cpu)
        with pytest.raises(RuntimeError, match="hook 'to_cpu' has changed the type of value"):
            y.sum().backward()
