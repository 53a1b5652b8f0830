"""diagonal and as_strided are views, as torch's: writes through them reach the base (and its gradient), and
as_strided addresses the input's storage (a slice's storage is its base's). Values and gradients are checked over
the ops' registry samples (tests/test_op_registry.py); here the view behaviour against torch."""
import numpy as np
import pytest
import torch

import forgegrad as fg


def _arr(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


_VIEWS = {
    "diagonal": lambda t: t.diagonal(),
    "diagonal(1)": lambda t: t.diagonal(1),
    "diagonal(-2, 1, 0)": lambda t: t.diagonal(-2, 1, 0),
    "diagonal of a 3-d slice": lambda t: t.reshape(2, 3, 4)[:, 1:].diagonal(0, 1, 2),
    "as_strided": lambda t: t.as_strided((3, 2), (4, 1)),
    "as_strided with offset": lambda t: t.as_strided((2, 3), (1, 5), 2),
    "as_strided of a slice": lambda t: t[1:].as_strided((2, 2), (1, 3)),
    "as_strided of a transpose": lambda t: t.t().as_strided((4,), (2,)),
    "fg.as_strided": lambda t: (fg if isinstance(t, fg.Tensor) else torch).as_strided(t, (3,), (5,), 1),
}


@pytest.mark.parametrize("name", list(_VIEWS))
def test_writes_through_the_view_reach_the_base(name):
    def run(lib):
        base = lib.tensor(np.arange(24, dtype=np.float32).reshape(4, 6))
        view = _VIEWS[name](base)
        before = view.clone()
        view.mul_(-1)  # through the view
        base.add_(100)  # into the base: the view sees it
        return before.numpy(), view.numpy(), base.numpy()
    for ours, theirs in zip(run(fg), run(torch)):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", list(_VIEWS))
def test_gradient_through_a_view_written_in_place(name):
    x0, y0 = _arr(4, 6), _arr(4, 6, seed=1)

    def run(lib):
        x = lib.tensor(x0, requires_grad=True)
        y = lib.tensor(y0, requires_grad=True)
        b = x * y  # a non-leaf base
        v = _VIEWS[name](b)
        out = (v + 1).exp().sum()  # the view read before the write (exp saves its output, not v)
        v.mul_(3)  # recorded in b's graph
        out = out + (b * y).sum() + v.sum()
        out.backward()
        return x.grad.numpy(), y.grad.numpy()
    for ours, theirs in zip(run(fg), run(torch)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_as_strided_gradient_splits_shared_input_elements_as_torch():
    """An expanded (overlapping) input: torch's as_strided_backward divides by the input elements per storage
    element."""
    def run(lib):
        x = lib.tensor(_arr(3), requires_grad=True)
        e = x.expand(2, 3)
        out = e.as_strided((2, 2), (1, 1))
        (out * lib.tensor(_arr(2, 2, seed=3))).sum().backward()
        return x.grad.numpy()
    np.testing.assert_allclose(run(fg), run(torch), rtol=1e-6)


@pytest.mark.parametrize("args, error, match", [
    (((2, 2), (1,)), RuntimeError, "mismatch in length"),
    (((5, 5), (5, 1)), RuntimeError, "out of bounds"),
    (((2,), (-1,)), RuntimeError, "Negative strides"),
    (((2,), (1,), -1), RuntimeError, "storage_offset"),
    ((("2",), (1,)), TypeError, "size"),
])
def test_as_strided_refuses_bad_geometry(args, error, match):
    with pytest.raises(error, match=match):
        fg.ones(4, 5).as_strided(*args)
    with pytest.raises(Exception):  # torch refuses them too
        torch.ones(4, 5).as_strided(*args)


def test_diag_of_a_matrix_is_a_copy_as_torch():
    def run(lib):
        x = lib.zeros(3, 3)
        lib.diag(x).add_(1)
        x.diagonal().add_(2)
        return x.numpy()
    np.testing.assert_array_equal(run(fg), run(torch))
