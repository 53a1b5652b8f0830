import numpy as np
import pytest

import forgegrad as fg


def test_zero_copy_in_and_out():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = fg.as_tensor(a)  # (fg.tensor copies, as torch.tensor)
    assert t.numpy() is a and np.asarray(t) is a and np.asarray(t._data) is a  # .data: a Tensor on the storage
    assert fg.tensor(np.arange(3)).dtype == np.int64
    assert fg.tensor([1.5, 2.0]).dtype == np.float32


def test_gradient_accumulates_across_backward_calls():
    x = fg.tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad._data, [3 + 2, 3 + 4])


def test_shared_subexpression_gradients_add():
    x = fg.tensor(np.array([2.0], np.float32), requires_grad=True)
    y = x * x
    z = y + y * x  # dz/dx = 2x + 3x^2
    z.sum().backward()
    np.testing.assert_allclose(x.grad._data, [2 * 2 + 3 * 4])


def test_graph_freed_unless_retained():
    x = fg.tensor(np.ones(3, np.float32), requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad._data, 4 * np.e * np.ones(3), rtol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_backward_non_scalar_needs_gradient():
    x = fg.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar outputs"):
        (x * 2).backward()
    (x * 2).backward(np.ones(3, np.float32))
    np.testing.assert_allclose(x.grad._data, 2.0)
    with pytest.raises(ValueError, match="gradient has shape"):
        (x * 2).backward(np.ones(4, np.float32))


def test_no_grad_and_detach():
    x = fg.randn(3, requires_grad=True)
    with fg.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    d = (x * 2).detach()
    assert not d.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        d.sum().backward()


def test_errors_for_bad_operands():
    a, b = fg.randn(2, 3), fg.randn(4, 5)
    with pytest.raises(ValueError, match="cannot be multiplied"):
        a @ b
    with pytest.raises(ValueError):
        a + b
    with pytest.raises(TypeError, match="float32"):
        fg.tensor(np.arange(6).reshape(2, 3)) @ fg.randn(3, 2)
    with pytest.raises(RuntimeError, match="floating point"):
        fg.tensor(np.arange(3), requires_grad=True)


def test_retain_grad_on_intermediate():
    x = fg.randn(4, requires_grad=True)
    y = x * 3
    y.retain_grad()
    (y * y).sum().backward()
    np.testing.assert_allclose(y.grad._data, 2 * y._data, rtol=1e-6)


def test_comparisons_are_bool_and_not_differentiable():
    x = fg.randn(5, requires_grad=True)
    m = x > 0
    assert m.dtype == bool and not m.requires_grad


def test_manual_seed_repeatable():
    fg.manual_seed(11)
    a = fg.randn(5)._data.copy()
    fg.manual_seed(11)
    np.testing.assert_array_equal(a, fg.randn(5)._data)


def test_leaf_gradients_never_share_storage():
    # Add hands one gradient array to both inputs; each leaf must still own its .grad, since
    # optimisers and clip_grad_norm_ modify gradients in place.
    a = fg.randn(3, requires_grad=True)
    b = fg.randn(3, requires_grad=True)
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad._data, b.grad._data)
    a.grad._data *= 2
    np.testing.assert_allclose(b.grad._data, 1.0)
    seed = np.ones(3, np.float32)
    c = fg.randn(3, requires_grad=True)
    (c * 1.0).backward(seed)
    c.grad._data += 1
    np.testing.assert_allclose(seed, 1.0)


def test_ops_that_used_a_tensor_before_an_inplace_op_differentiate_its_value_then_like_torch():
    """A recorded in-place op (u.mul_(2), u.copy_(v), a constant's add_) rebinds the tensor to its result;
    the ops that used the tensor before keep differentiating the value it had then, as torch's edges do
    (they used to follow it to the new node: y = u + 1; u.mul_(2) gave y a gradient of 2)."""
    torch = pytest.importorskip("torch")

    def program(lib):
        x = lib.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
        w = lib.tensor(np.ones(3, np.float32), requires_grad=True)
        u = x * 1
        ys = []
        for k in range(3):  # each y uses u as it was before the k-th in-place op
            ys.append(u + 1)
            u.mul_(2)
        row = u[0]  # a view, taken before the next in-place op on u
        picked = row * 3
        u.add_(1)
        c = u * 1
        before_copy = c * 2
        c.copy_(w * 5 + 0)  # the node of copy_ does not take c's old value as input
        const = lib.zeros(3)
        before_add = const + w
        const.add_(w * 7)  # a constant becomes part of the graph
        loss = (sum(y.sum() * (k + 1) for k, y in enumerate(ys)) + picked.sum() + 10 * u.sum()
                + before_copy.sum() + c.sum() + 3 * before_add.sum() + const.sum())
        loss.backward()
        return x.grad.numpy(), w.grad.numpy()

    got, want = program(fg), program(torch)
    for g, t in zip(got, want):
        np.testing.assert_allclose(g, t, rtol=1e-6)


def test_grad_accumulates_in_place_as_torch():
    # torch's AccumulateGrad adds into the existing .grad outside create_graph: a numpy view of it sees the sum
    import torch
    for lib in (fg, torch):
        x = lib.ones(3, requires_grad=True)
        (x * 2).sum().backward()
        held = x.grad.numpy()
        (x * 3).sum().backward()
        np.testing.assert_array_equal(held, [5, 5, 5])
    # a .grad that cannot take the sum in place (read-only memory, another shape) gets a new array
    x = fg.ones(2, 3, requires_grad=True)
    x.grad = fg.from_numpy(np.broadcast_to(np.float32(1), (2, 3)))
    (x * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 3, np.float32))


def test_in_place_accumulation_leaves_shared_pending_gradients_alone():
    # Add hands one array to both inputs: a leaf adopting it must not then add into it in place while the other
    # input's node has yet to read it (Gamma-Exponential's KL gradient read 22x off that way)
    import torch
    c = np.array([0.7, 1.3, 2.9])
    grads = []
    for lib in (fg, torch):
        x = lib.tensor(c, requires_grad=True)
        z = x.exp().log1p()
        loss = ((x + z) + x * 3 + (x + z.sin())).sum()
        loss.backward()
        grads.append(np.asarray(x.grad.detach().numpy(), np.float64))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


@pytest.mark.parametrize("materialize", [True, False])
@pytest.mark.parametrize("engine", ["backward", "grad"])
def test_materialize_grads_false_hands_none_for_an_unused_output(materialize, engine):
    # forgegrad's Function.materialize_grads (class or node) is torch's ctx.set_materialize_grads
    import torch
    seen = {}

    class Two(fg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.materialize_grads = materialize
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g0, g1):
            seen["fg"] = (g0 is None, g1 is None)
            return (0 if g0 is None else g0 * 2) + (0 if g1 is None else g1 * 3)

    class TwoT(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(materialize)
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g0, g1):
            seen["torch"] = (g0 is None, g1 is None)
            return (0 if g0 is None else g0 * 2) + (0 if g1 is None else g1 * 3)

    a = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    x, tx = fg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    loss, tloss = (Two.apply(x)[1] * 1.5).sum(), (TwoT.apply(tx)[1] * 1.5).sum()
    if engine == "grad":
        got, want = fg.autograd.grad(loss, x)[0], torch.autograd.grad(tloss, tx)[0]
    else:
        loss.backward()
        tloss.backward()
        got, want = x.grad, tx.grad
    assert seen["fg"] == seen["torch"] == (not materialize, False)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
