"""Review of the torch indexing/sorting functions against torch: NaN in cummax/cummin and unique, empty index tensors
with another number of dims than the input, and masked_fill with a mask that broadcasts the input up."""
import numpy as np
import pytest

import forgegrad as fg

torch = pytest.importorskip("torch", reason="the reference is torch")


def _np(t):
    return t.detach().numpy()


@pytest.mark.parametrize("name", ["cummax", "cummin"])
def test_cum_extreme_later_nan_takes_the_index_and_the_gradient(name):
    # torch: a NaN stays the value once met and every later NaN moves the index to itself (its gradient too)
    x = np.array([[1.0, np.nan, 2.0, np.nan, -1.0], [np.nan, 0.5, np.nan, np.nan, 3.0]], np.float32)
    a, t = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    got, want = getattr(fg, name)(a, 1), getattr(torch, name)(t, 1)
    np.testing.assert_array_equal(_np(got.values), _np(want.values))
    np.testing.assert_array_equal(_np(got.indices), _np(want.indices))
    got.values.sum().backward()
    want.values.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), t.grad.numpy())


@pytest.mark.parametrize("sorted_", [True, False])
def test_unique_keeps_each_nan(sorted_):
    # torch's unique treats NaN != NaN (one entry per NaN); numpy's default merges them
    x = np.array([3.0, np.nan, 1.0, np.nan, 3.0, np.nan], np.float32)
    got = fg.unique(fg.tensor(x), sorted=sorted_, return_inverse=True, return_counts=True)
    want = torch.unique(torch.tensor(x), sorted=sorted_, return_inverse=True, return_counts=True)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(_np(g), w.numpy())
        assert g.dtype == getattr(fg, str(w.dtype).split(".")[1])


@pytest.mark.parametrize("index_shape", [(0,), (0, 2, 2)])
@pytest.mark.parametrize("op", ["gather", "scatter", "scatter_add", "amax", "prod", "mean"])
def test_empty_index_of_another_rank(op, index_shape):
    # torch accepts an empty index of any rank (gather: an empty result of its shape; scatter: the input);
    # numpy raised IndexError('list assignment index out of range') from the position grid before
    x = np.arange(6, dtype=np.float64).reshape(2, 3) + 1
    s = np.array([2.0, 3.0])
    # torch's own src gradient fails for a 1-d empty index (ScatterReduceBackward0 "got [0]"): src is constant there
    src_grad = op == "gather" or len(index_shape) > 1
    # and so does its backward of amax/prod there ("size of tensor a (2) must match ... (0)"): the values only
    backward = src_grad or op not in ("amax", "prod")
    results = []
    for m in (fg, torch):
        grad = m.autograd.grad if m is fg else torch.autograd.grad
        a, src = m.tensor(x, requires_grad=True), m.tensor(s, requires_grad=src_grad)
        i = m.zeros(*index_shape, dtype=m.int64)
        if op == "gather":
            out = m.gather(a, 1, i)
        elif op in ("scatter", "scatter_add"):
            out = getattr(m, op)(a, 1, i, src)
        else:
            out = m.scatter_reduce(a, 1, i, src, op, include_self=False)
        wrt = [a, src] if src_grad else [a]
        first = grad((out * out).sum() + (a * src[0]).sum(), wrt, create_graph=True) if backward else []
        second = grad(sum((v * v).sum() for v in first), wrt) if backward else []
        results.append([_np(out)] + [_np(v) for v in list(first) + list(second)])
    for g, w in zip(*results):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w)


def test_masked_fill_broadcasts_the_input_up_to_the_mask():
    # torch.masked_fill (out of place) broadcasts input and mask; masked_fill_ cannot grow the tensor and refuses
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    mask = (np.arange(24).reshape(2, 3, 4) % 5) == 0
    a, t = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    got, want = fg.masked_fill(a, fg.tensor(mask), -1.0), torch.masked_fill(t, torch.tensor(mask), -1.0)
    np.testing.assert_array_equal(_np(got), _np(want))
    w = np.random.default_rng(0).standard_normal(got.shape).astype(np.float32)
    (got * fg.tensor(w)).sum().backward()
    (want * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(_np(a.masked_fill(fg.tensor(mask), 2.0)), _np(t.masked_fill(torch.tensor(mask), 2.0)))
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        fg.zeros(3, 4).masked_fill_(fg.tensor(mask), 1.0)
    with pytest.raises(RuntimeError):
        torch.zeros(3, 4).masked_fill_(torch.tensor(mask), 1.0)
