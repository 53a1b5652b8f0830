"""In-place writes that go into a tensor's storage, against torch: tensors that share the storage with the
written one (an op's output that is its input, a numpy array, a read-only buffer) see the values, and
every gradient differentiates them or backward refuses, as torch's."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F

X = (np.arange(6, dtype=np.float32).reshape(2, 3) / 7 + 0.1)


def _both(fn):
    """fn(lib, functional) -> tensors (or arrays) to compare; run on torch and forgegrad."""
    out = {}
    for lib, functional in ((torch, torch.nn.functional), (fg, F)):
        out[lib] = [np.asarray(t.detach().numpy() if hasattr(t, "detach") else t) for t in fn(lib, functional)]
    for i, (g, w) in enumerate(zip(out[fg], out[torch])):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7, err_msg=f"result {i}")


@pytest.mark.parametrize("p, training", [(0.0, True), (0.5, False)])
def test_dropout_that_returns_its_input_is_a_view_of_it(p, training):
    def fn(lib, functional):
        x = lib.tensor(X, requires_grad=True)
        h = x * 1
        y = functional.dropout(h, p, training=training)  # h itself (torch returns its input)
        y.mul_(2)  # h's values are doubled: its gradient must say so
        (h * h).sum().backward()
        return [h, y, x.grad]
    _both(fn)


def test_setitem_through_a_view_with_repeated_indices_as_torch():
    def fn(lib, functional):
        x = lib.tensor(X, requires_grad=True)
        y = lib.tensor([5.0, 6.0], requires_grad=True)
        h = x * 1
        v = h[0]
        v[lib.tensor([1, 1])] = y  # one element named twice (not two elements in one memory location)
        (h * h).sum().backward()
        return [h, v, x.grad]
    _both(fn)


def test_overlap_check_by_strides_and_by_elements():
    from forgegrad._view_rebase import check_no_overlap, positions
    base = np.zeros((4, 6), np.float32)
    for view in (base, base[1:, ::2], base.T, base[::-1, 2:5], base.reshape(2, 12)[:, 3:]):
        check_no_overlap(positions(base, view), view)
    # overlapping by its strides: refused by either check
    for view in (np.broadcast_to(base[:1], (3, 6)), np.broadcast_to(base[:, :1], (4, 5))[1:]):
        for arg in ((positions(base, view), view), (positions(base, view),)):
            with pytest.raises(RuntimeError, match="more than one element"):
                check_no_overlap(*arg)
    # distinct elements whose strides interleave (the stride test cannot tell): the elements decide
    inter = np.lib.stride_tricks.as_strided(base, (3, 2), (8, 12))
    check_no_overlap(positions(base, inter), inter)


@pytest.mark.parametrize("write", ["h[0].mul_(2)", "h.t().add_(1)", "h[1:][0].clamp_(max=1.5)", "h[:, 1].copy_(y)"])
def test_a_write_through_a_view_leaves_no_reference_cycle(write):
    # the graph (its arrays) goes with its last tensor, without waiting for the cycle collector
    import gc
    import weakref
    gc.disable()
    try:
        x = fg.tensor(X, requires_grad=True)
        y = fg.tensor(X[:, 0], requires_grad=True)
        h = x * 2
        v = h[1]  # a view taken before, rebased when used
        eval(write, {"h": h, "y": y})
        loss = (h * h).sum() + (v * 3).sum()
        loss.backward()
        freed = [weakref.ref(h), weakref.ref(h.grad_fn)]
        del h, v, loss
        assert [r() is None for r in freed] == [True, True]
    finally:
        gc.enable()


def test_index_array_write_into_an_expanded_view_warns_as_torch():
    def fn(lib, functional):
        x = lib.tensor(X, requires_grad=True)
        h = x * 2
        e = h[:, :1].expand(2, 3)
        with pytest.warns(UserWarning, match="index_put_ on expanded tensors"):
            e[lib.tensor([1])] = lib.tensor([[7.0, 8.0, 9.0]])  # the last value written to h[1, 0] stays
        return [h, e]
    _both(fn)


def _buffer_writes(lib, write):
    w = lib.tensor(X, requires_grad=True)
    buf = lib.ones(4, 6)
    col = buf[:, 1]  # a view taken before the write: it sees the written values and their gradient
    if write == "copy_":
        buf[:2, :3].copy_(w * 2)
    elif write == "add_":
        buf.narrow(1, 0, 3)[1:3].add_(w)
    elif write == "mul_":
        buf.t()[1:4, 2:].mul_(w.t())
    elif write == "setitem":
        buf[1:3][0, 2:5] = w[1] * 3
    else:  # a write into the base itself
        buf[1:].add_(w[0, 0])
        buf.add_(w.sum())
    loss = (buf * buf).sum() + (col * 5).sum() + w.sum()  # w reaches the loss directly and through buf
    loss.backward()
    return [buf, col, w.grad]


@pytest.mark.parametrize("write", ["copy_", "add_", "mul_", "setitem", "base"])
def test_write_with_a_gradient_into_a_view_of_a_tensor_without_one(write):
    # torch records the write on the view's base (which then requires grad), as for a graph tensor's view
    _both(lambda lib, functional: _buffer_writes(lib, write))


def test_write_into_a_numpy_array_through_a_view_as_torch():
    def fn(lib, functional):
        a = X.copy()
        w = lib.tensor(X[1], requires_grad=True)
        t = lib.from_numpy(a)
        t[0].mul_(w)  # the user's array sees it
        (t * t).sum().backward()
        return [a, t, w.grad]
    _both(fn)


def test_view_made_before_its_leaf_required_grad_refuses_writes():
    for lib in (torch, fg):
        x = lib.tensor(X)
        v, u = x[0], x.t()
        x.requires_grad_()
        for write in (lambda: v.mul_(2), lambda: u.__setitem__(0, 1.0), lambda: v.add_(x[1])):
            with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
                write()
        np.testing.assert_array_equal(x.detach().numpy(), X)


@pytest.mark.parametrize("write", ["zero_", "fill_", "copy_"])
def test_overwritten_graph_tensor_stays_in_the_graph(write):
    for lib in (torch, fg):
        x = lib.tensor(X, requires_grad=True)
        w = lib.tensor(X, requires_grad=True)
        h = x * 2
        v = h[0]  # a view taken before: it follows h
        {"zero_": lambda: h.zero_(), "fill_": lambda: h.fill_(3.0), "copy_": lambda: h.copy_(lib.ones(2, 3))}[write]()
        assert h.requires_grad and h.grad_fn is not None and v.requires_grad
        ((h + v) * w).sum().backward()  # x's path is overwritten (torch: zeros, forgegrad: no gradient)
        assert x.grad is None or not x.grad.numpy().any()
        want = {"zero_": 0.0, "fill_": 3.0, "copy_": 1.0}[write]
        np.testing.assert_array_equal(w.grad.numpy(), np.full((2, 3), 2 * want))  # h + v, both the new values


def test_views_of_views_made_outside_the_graph_note_the_first_base():
    buf = fg.zeros(6, 4)
    v = buf
    for _ in range(3):
        v = v[1:]
    assert v._view_of is buf
    w = fg.ones(3, 4, requires_grad=True)
    v.add_(w)  # written through to buf, which is now in the graph
    assert buf.requires_grad and buf.numpy()[3:].tolist() == [[1.0] * 4] * 3
    (buf * buf).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), 2)


def _read_only():
    return np.frombuffer(X.tobytes(), np.float32).reshape(2, 3)  # as a dataset's images are read


@pytest.mark.parametrize("write", ["add_", "setitem", "row mul_", "tracked add_", "tracked setitem", "row copy_"])
def test_write_into_read_only_storage_is_refused_clearly(write):
    t = fg.from_numpy(_read_only())
    w = fg.ones(3, requires_grad=True)
    ops = {"add_": lambda: t.add_(1), "setitem": lambda: t.__setitem__(0, 2.0), "row mul_": lambda: t[0].mul_(2),
           "tracked add_": lambda: t.add_(w), "tracked setitem": lambda: t.__setitem__(1, w * 2),
           "row copy_": lambda: t[1].copy_(w)}
    with pytest.raises(RuntimeError, match="read-only"):
        ops[write]()
    np.testing.assert_array_equal(t.numpy(), X)
    assert t._version == 0 and not t.requires_grad
    c = t.clone()  # the way out the message names
    c.add_(1)
    np.testing.assert_allclose(c.numpy(), X + 1)


def test_a_frozen_weight_refuses_in_place_writes():
    model = fg.nn.Sequential(fg.nn.Linear(3, 2))
    frozen = fg.nn.utils.freeze(model)
    with pytest.raises(RuntimeError, match="read-only"):
        frozen[0].weight.mul_(fg.ones(2, 3, requires_grad=True))
    with pytest.raises(RuntimeError, match="read-only"):
        frozen[0].weight.zero_()
    np.testing.assert_array_equal(frozen[0].weight.numpy(), model[0].weight.numpy())


def test_untracked_write_into_an_expanded_view_as_torch():
    for lib in (torch, fg):
        h = lib.zeros(2, 3)
        e = h[:1].expand(4, 3)
        with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
            e.add_(1)
        e[2].add_(1)  # one row of it: three distinct elements, h's first row
        e[1][2] = 5.0
        e[3, :2] = 4.0
        np.testing.assert_array_equal(h.numpy(), [[4, 4, 5], [0, 0, 0]])
        with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
            e[1:3] = 2.0


def test_a_rebased_view_keeps_four_bytes_per_element():
    x = fg.ones(64, 32, requires_grad=True)
    h = x * 2
    v = h[:, :16]
    h.mul_(3)
    node = v.grad_fn  # rebased: AsStrided of h, which keeps v's element positions in h
    assert type(node).__name__ == "AsStridedFunction" and node.idx.nbytes == 4 * v.numel()
    (v * v).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[:, :16], 2 * 6 * 6)


def test_detach_in_place_as_torch():
    for lib in (torch, fg):
        x = lib.tensor(X, requires_grad=True)
        for view in (lambda: (x * 2)[0], lambda: (x * 2).t(), lambda: lib.ones(4)[1:]):
            with pytest.raises(RuntimeError, match="Can't detach views in-place"):
                view().detach_()
        h = x * 2
        v = h[0]  # a view taken before its base leaves the graph
        h.detach_()
        assert not h.requires_grad and h.grad_fn is None
        with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
            v.mul_(2)
        np.testing.assert_allclose(h.numpy(), 2 * X)


def test_overwriting_a_graph_tensor_on_another_device():
    import device_seam_helpers as seam
    with seam.registered():
        x = fg.tensor(X, requires_grad=True).to(seam.DEVICE)
        w = fg.tensor(X, requires_grad=True)
        h = x * 2
        h.zero_()  # stays in the graph there too
        h.add_(w.to(seam.DEVICE))
        assert h.requires_grad and h.device == seam.DEVICE
        (h * 3).sum().backward()
        np.testing.assert_array_equal(seam.host(w.grad), np.full((2, 3), 3.0))
        np.testing.assert_allclose(seam.host(h), X)


def test_a_copy_or_pickle_of_a_view_leaves_its_base_behind():
    import copy
    import pickle
    buf = fg.zeros(1000, 100)
    v = buf[:2]
    assert v._view_of is buf  # noted in grad mode, for a recorded write through v
    assert len(pickle.dumps(v)) < 4000  # its own 200 values, not the base's 100000
    for c in (copy.deepcopy(v), pickle.loads(pickle.dumps(v))):
        assert getattr(c, "_view_of", None) is None and c.shape == (2, 100)
        c.add_(fg.ones(2, 100, requires_grad=True))  # a tensor of its own: written alone
        assert c.requires_grad and not buf.numpy().any()


def test_a_view_of_a_tensor_without_a_node_follows_its_base_as_a_root():
    for lib in (torch, fg):
        w = lib.tensor(X, requires_grad=True)
        buf = lib.zeros(2, 3)
        col = buf[:, 1]
        buf.add_(w)  # buf is in the graph now, and col with it
        assert col.grad_fn is not None
        col.backward(lib.ones(2))
        np.testing.assert_array_equal(w.grad.numpy(), [[0, 1, 0], [0, 1, 0]])


@pytest.mark.parametrize("inplace", [False, True])
def test_a_frozen_weight_on_an_aligned_allocation_refuses_in_place_writes(inplace):
    # a layer's weights (and a frozen copy's realigned ones) are views of a private 64-byte aligned buffer; an
    # in-place write goes through a view's storage when only the view is read-only, so the buffer is locked too
    for _ in range(4):  # (whether the deep copy needed realigning depends on where numpy placed it)
        model = fg.nn.Sequential(fg.nn.Linear(3, 2))
        before = model[0].weight.numpy().copy()
        frozen = fg.nn.utils.freeze(model, inplace=inplace)
        with pytest.raises(RuntimeError, match="read-only"):
            frozen[0].weight.mul_(fg.ones(2, 3, requires_grad=True))
        with pytest.raises(RuntimeError, match="read-only"):
            frozen[0].weight.zero_()
        np.testing.assert_array_equal(frozen[0].weight.numpy(), before)
