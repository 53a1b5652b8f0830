"""The backward engines' own arrays: a gradient added to a pending one (a tensor used more than once) goes into
it in place when nothing but the engine holds it, never into an array a hook, a retained ``.grad``, a leaf or the
caller sees; an integer output (max_pool's indices) gets a zero gradient of stride 0 in grad() and create_graph
passes too. Values and gradients are compared with torch's."""
import gc
import tracemalloc

import numpy as np
import torch

import forgegrad as fg
from forgegrad import autograd as ag

RNG = np.random.default_rng(0)


def test_add_to_slot_adds_in_place_only_into_an_array_nothing_else_holds():
    g = np.ones((3, 4), np.float32)
    slots = [np.full((3, 4), 2.0, np.float32)]
    owned = slots[0]
    del owned  # only the slot holds it now
    first_id = id(slots[0])
    ag._add_to_slot(slots, 0, g)
    assert id(slots[0]) == first_id and (slots[0] == 3).all()
    seen = slots[0]  # someone else holds it (a hook, a retained grad): a new array, this one unchanged
    ag._add_to_slot(slots, 0, g)
    assert slots[0] is not seen and (seen == 3).all() and (slots[0] == 4).all()
    view = slots[0][1:]  # a view of it holds it too
    ag._add_to_slot(slots, 0, g)
    assert (view == 4).all() and (slots[0] == 5).all()
    slots = [np.broadcast_to(np.float32(1), (3, 4))]  # read-only, owns nothing: never written
    ag._add_to_slot(slots, 0, g)
    assert (slots[0] == 2).all()


def _resnet_block(lib, keep):
    """relu(x + conv(relu(conv(x)))) twice, with a hook and retain_grad on tensors whose gradients are sums."""
    F = fg.nn.functional if lib is fg else torch.nn.functional
    t = fg.tensor if lib is fg else torch.tensor
    x = t(RNG_X, requires_grad=True)
    w1, w2 = t(RNG_W1, requires_grad=True), t(RNG_W2, requires_grad=True)
    h = x * 1.0
    for _ in range(2):
        h.register_hook(lambda g: keep.append(("hooked", g)))  # forgegrad's: the engine's array itself
        h.retain_grad()
        keep.append(("retained", h))
        b = F.conv2d(F.conv2d(h, w1, padding=1).relu(), w2, padding=1)
        h = (h + b).relu()
    (h * h).sum().backward()
    return [x.grad, w1.grad, w2.grad] + [t.grad if kind == "retained" else t for kind, t in keep]


RNG_X = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
RNG_W1 = (0.3 * RNG.standard_normal((3, 3, 3, 3))).astype(np.float32)
RNG_W2 = (0.3 * RNG.standard_normal((3, 3, 3, 3))).astype(np.float32)


def test_skip_connections_hooks_and_retained_grads_match_torch():
    got = _resnet_block(fg, [])
    want = _resnet_block(torch, [])
    assert len(got) == len(want)
    for a, b in zip(got, want):
        a = a.numpy() if isinstance(a, fg.Tensor) else np.asarray(a)
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-4, atol=1e-4)


def test_a_hooked_gradient_handed_on_unchanged_is_not_written_by_a_later_addition():
    x = fg.tensor(np.ones((3, 4), np.float32), requires_grad=True)
    a = x * 2.0
    s = a + 0.0  # add hands its gradient on as it is
    seen = []
    s.register_hook(lambda g: seen.append(g))
    loss = (s * 3.0).sum() + (a * 5.0).sum()  # a's pending gradient: s's (hooked) plus 5
    loss.backward()
    np.testing.assert_array_equal(seen[0].numpy(), np.full((3, 4), 3.0, np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), np.full((3, 4), 16.0, np.float32))


def _pool_grad_peak(create_graph):
    # kernel 1: the int64 indices are twice the input's bytes; their zero gradient was a new array that size
    x = fg.tensor(RNG.standard_normal((1, 4, 128, 128)).astype(np.float32), requires_grad=True)
    y, idx = fg.nn.functional.max_pool2d(x, 1, return_indices=True)
    g = fg.ones(y.shape)
    gc.collect()
    tracemalloc.start()
    try:
        (gx,) = fg.autograd.grad(y, x, g, create_graph=create_graph)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(gx.detach().numpy(), np.ones(x.shape, np.float32))
    return peak, idx._data.nbytes, x._data.nbytes


def test_grad_gives_the_unused_indices_output_no_zeros_array():
    peak, index_bytes, x_bytes = _pool_grad_peak(False)
    # the input's gradient, the copy grad() returns and the kernel's scratch; a zeros array for the indices
    # (twice x's bytes) was at the peak too
    assert peak < 3 * x_bytes + index_bytes // 4, (peak, index_bytes, x_bytes)


def test_create_graph_through_max_pool_with_indices_matches_torch():
    x = fg.tensor(RNG_X, requires_grad=True)
    tx = torch.tensor(RNG_X, requires_grad=True)
    y, _ = fg.nn.functional.max_pool2d(x, 2, return_indices=True)
    ty, _ = torch.nn.functional.max_pool2d(tx, 2, return_indices=True)
    (gx,) = fg.autograd.grad((y * y).sum(), x, create_graph=True)
    (tgx,) = torch.autograd.grad((ty * ty).sum(), tx, create_graph=True)
    (gx * x).sum().backward()
    (tgx * tx).sum().backward()
    np.testing.assert_allclose(gx.detach().numpy(), tgx.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
