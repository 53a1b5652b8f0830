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
