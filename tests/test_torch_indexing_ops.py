"""torch's indexing, sorting and scan functions (forgegrad._torch_indexing*): each written once as ``fn(lib, ...)``
and run on forgegrad and torch with the same inputs; values, dtypes, indices and gradients compared. The
generated registry checks of the ops underneath (gather, scatter*, index_select, cumprod, logcumsumexp) are in
tests/test_op_registry.py; bad inputs, in-place variants and a small program are in
tests/test_torch_indexing_more.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg

R = np.random.default_rng(0)


def rn(*shape):
    return R.standard_normal(shape).astype(np.float32)


def ties(*shape, k=3):
    return R.integers(-k, k + 1, shape).astype(np.float32)


def _lib_args(lib, args, grad):
    out = []
    for a in args:
        if isinstance(a, np.ndarray):
            t = fg.tensor(a.copy()) if lib is fg else torch.from_numpy(a.copy())
            if grad and a.dtype == np.float32:
                t.requires_grad_(True)
            out.append(t)
        else:
            out.append(a)
    return out


def _flat(out):
    if isinstance(out, (tuple, list)):
        return [o for x in out for o in _flat(x)]
    return [out]


def assert_same(got, want, what=""):
    g = got._data if isinstance(got, fg.Tensor) else np.asarray(got)
    w = want.detach().numpy()
    assert g.dtype == w.dtype, f"{what}: dtype {g.dtype}, torch {w.dtype}"
    assert g.shape == w.shape, f"{what}: shape {g.shape}, torch {w.shape}"
    if w.dtype.kind == "f":
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(g, w, err_msg=what)


def both(fn, *args, grad=True):
    """fn(lib, *tensors) on forgegrad and torch: every output equal, then the gradients of every float input
    (a fixed random cotangent per float output) equal. Returns forgegrad's outputs."""
    fa, ta = _lib_args(fg, args, grad), _lib_args(torch, args, grad)
    fo, to = fn(fg, *fa), fn(torch, *ta)
    fl, tl = _flat(fo), _flat(to)
    assert len(fl) == len(tl)
    for k, (f, t) in enumerate(zip(fl, tl)):
        assert_same(f, t, f"output {k}")
    if grad:
        rng = np.random.default_rng(1)
        fs, ts = 0, 0
        for f, t in zip(fl, tl):
            if t.requires_grad and t.dtype.is_floating_point:
                c = rng.uniform(-1, 1, tuple(t.shape)).astype(np.float32)
                fs = fs + (f * fg.tensor(c)).sum()
                ts = ts + (t * torch.from_numpy(c)).sum()
        if isinstance(ts, torch.Tensor):
            fs.backward()
            ts.backward()
            for k, (f, t) in enumerate(zip(fa, ta)):
                if isinstance(t, torch.Tensor) and t.requires_grad:
                    assert t.grad is not None or f.grad is None
                    want = t.grad if t.grad is not None else torch.zeros_like(t)
                    got = f.grad if f.grad is not None else fg.zeros(*f.shape)
                    assert_same(got, want, f"gradient of input {k}")
    return fo


# ---- gather / scatter --------------------------------------------------------------------------------
def test_gather_and_method():
    x, i = rn(4, 6), R.integers(0, 6, (4, 9))
    both(lambda L, x, i: L.gather(x, 1, i), x, i)
    both(lambda L, x, i: x.gather(-1, i), x, i)
    both(lambda L, x, i: x.gather(0, i), rn(5, 3), R.integers(0, 5, (2, 2)))


@pytest.mark.parametrize("value", [2.5, -1])
def test_scatter_src_and_value(value):
    x = rn(5, 4)
    i = np.stack([R.permutation(5)[:3] for _ in range(4)], 1)
    both(lambda L, x, i, s: L.scatter(x, 0, i, s), x, i, rn(3, 4))
    both(lambda L, x, i: x.scatter(0, i, value), x, i)
    both(lambda L, x, i: L.scatter(x, 0, i, value=value), x, i)


def test_scatter_add_duplicates_and_index_ops():
    x, i = rn(4, 5), R.integers(0, 4, (9, 5))
    both(lambda L, x, i, s: L.scatter_add(x, 0, i, s), x, i, rn(9, 5))
    both(lambda L, x, i: L.index_select(x, 1, i), x, np.array([4, 0, 4, 2]))
    both(lambda L, x, i, s: L.index_add(x, 1, i, s), x, np.array([4, 0, 4]), rn(4, 3))
    both(lambda L, x, i, s: x.index_add(0, i, s, alpha=-2.0), x, np.array([3, 3, 1]), rn(3, 5))
    both(lambda L, x, i, s: L.index_copy(x, 1, i, s), x, np.array([4, 0, 2]), rn(4, 3))
    both(lambda L, x, i: L.index_fill(x, 1, i, 7.0), x, np.array([4, -1, 0]))
    both(lambda L, x, i, v: x.index_fill(0, i, v), x, np.array([1, 2]), np.array(3.5, np.float32))


@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce_ties_and_zeros(reduce, include_self):
    x = ties(4, 5)
    src = np.where(R.uniform(size=(7, 5)) < 0.3, 0, ties(7, 5)).astype(np.float32)
    i = R.integers(0, 4, (7, 5))
    both(lambda L, x, i, s: L.scatter_reduce(x, 0, i, s, reduce, include_self=include_self), x, i, src)
    both(lambda L, x, i, s: x.scatter_reduce(1, i, s, reduce, include_self=include_self), rn(3, 4),
         R.integers(0, 4, (3, 6)), rn(3, 6))


def test_integer_tensors_keep_their_dtype():
    x = R.integers(-5, 5, (4, 5))
    i = R.integers(0, 4, (6, 5))
    both(lambda L, x, i: L.gather(x, 0, i), x, i)
    both(lambda L, x, i, s: L.scatter_add(x, 0, i, s), x, i, R.integers(-5, 5, (6, 5)))
    both(lambda L, x, i, s: L.scatter_reduce(x, 0, i, s, "amax", include_self=False), x, i,
         R.integers(-5, 5, (6, 5)))
    both(lambda L, x: L.cumprod(x, 1), x)
    both(lambda L, x: L.cumprod(x > 0, 0), x)
    both(lambda L, x: L.trace(x[:4, :4]), x)


# ---- masks and take ------------------------------------------------------------------------------------
def test_masked_ops():
    x = rn(3, 5)
    m = R.uniform(size=(3, 5)) < 0.5
    row = R.uniform(size=(5,)) < 0.5
    both(lambda L, x, m: L.masked_fill(x, m, -1e9), x, m)
    both(lambda L, x, m: x.masked_fill(m, -2), x, row)
    both(lambda L, x, m, v: x.masked_fill(m, v), x, m, np.array(4, np.float32))
    both(lambda L, x, m: L.masked_select(x, m), x, m)
    both(lambda L, x, m: L.masked_select(x, m), rn(5), m)  # mask broadcasts the input up
    both(lambda L, x, m, s: L.masked_scatter(x, m, s), x, m, rn(4, 5))
    both(lambda L, x, m, s: x.masked_scatter(m, s), x, row, rn(20))


def test_take_and_take_along_dim():
    x = rn(3, 4)
    both(lambda L, x, i: L.take(x, i), x, np.array([[0, 11], [-1, 5]]))
    both(lambda L, x, i: L.take_along_dim(x, i, 1), x, np.argsort(x, 1))
    both(lambda L, x, i: L.take_along_dim(x, i, dim=0), x, np.array([[2, 0, -1, 1]]))
    both(lambda L, x, i: L.take_along_dim(x, i), x, np.array([[3, 1, 7]]))
    both(lambda L, x, i: L.take_along_dim(x, i, 1), rn(3, 5, 1), R.integers(0, 5, (1, 2, 4)))


def test_nonzero_and_argwhere():
    x = np.where(R.uniform(size=(3, 4, 2)) < 0.5, 0, 1).astype(np.float32)
    both(lambda L, x: L.nonzero(x), x, grad=False)
    both(lambda L, x: L.nonzero(x, as_tuple=True), x, grad=False)
    both(lambda L, x: x.argwhere(), x, grad=False)
    both(lambda L, x: L.nonzero(x), np.zeros((0, 3), np.float32), grad=False)
    both(lambda L, x: L.nonzero(x), np.array(2, np.float32), grad=False)


# ---- sorting -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_sort_stable_tie_order_and_gradient(descending, dim):
    x = ties(5, 7, 3, k=2)
    x[0, 0, 0] = np.nan
    both(lambda L, x: L.sort(x, dim=dim, descending=descending, stable=True), x)
    both(lambda L, x: x.sort(dim=dim, descending=descending, stable=True), x)
    both(lambda L, x: L.argsort(x, dim=dim, descending=descending, stable=True), x, grad=False)
    out = fg.sort(fg.tensor(x), dim)
    assert type(out).__name__ == "sort" and out.values is out[0] and out.indices is out[1]


@pytest.mark.parametrize("descending", [False, True])
def test_sort_nan_inf_and_integer_extremes(descending):
    x = np.array([[1.0, np.nan, np.inf, -np.inf, 1.0, np.nan, -0.0, 0.0, np.inf]], np.float32)
    both(lambda L, x: L.sort(x, descending=descending, stable=True), x, grad=False)
    big = np.array([np.iinfo(np.int64).min, 3, np.iinfo(np.int64).max, 3, 0], np.int64)
    both(lambda L, x: L.sort(x, descending=descending, stable=True), big, grad=False)


def test_msort_and_integer_sort():
    both(lambda L, x: L.msort(x), ties(6, 4))
    both(lambda L, x: L.sort(x, descending=True, stable=True), R.integers(-3, 3, (4, 9)), grad=False)
    both(lambda L, x: L.sort(x, stable=True), R.uniform(size=(9,)) < 0.5, grad=False)


@pytest.mark.parametrize("largest", [True, False])
def test_topk_values_indices_and_gradient(largest):
    x = rn(4, 9)  # distinct values: torch's indices are determined
    both(lambda L, x: L.topk(x, 3, dim=1, largest=largest), x)
    both(lambda L, x: x.topk(2, 0, largest=largest), x)
    # ties: torch does not fix which of equal values comes first, so the values and that the indices point at them
    t = ties(3, 11, k=1)
    got = fg.topk(fg.tensor(t), 4, largest=largest)
    want = torch.topk(torch.from_numpy(t), 4, largest=largest)
    np.testing.assert_array_equal(got.values.numpy(), want.values.numpy())
    np.testing.assert_array_equal(np.take_along_axis(t, got.indices.numpy(), 1), got.values.numpy())
    # forgegrad's order among equal values is the stable sort's
    order = fg.sort(fg.tensor(t), descending=largest, stable=True).indices.numpy()[:, :4]
    np.testing.assert_array_equal(got.indices.numpy(), order)
    ints = fg.tensor(R.integers(-2, 3, (13, 5)))
    np.testing.assert_array_equal(fg.topk(ints, 6, dim=0, largest=largest).indices.numpy(),
                                  fg.sort(ints, 0, descending=largest).indices.numpy()[:6])
    unsorted = fg.topk(fg.tensor(x), 3, sorted=False)
    np.testing.assert_array_equal(np.sort(unsorted.values.numpy(), 1),
                                  np.sort(torch.topk(torch.from_numpy(x), 3, sorted=False).values.numpy(), 1))


@pytest.mark.parametrize("keepdim", [False, True])
def test_kthvalue(keepdim):
    x = rn(5, 6)
    both(lambda L, x: L.kthvalue(x, 2, 1, keepdim=keepdim), x)
    both(lambda L, x: x.kthvalue(5, dim=0, keepdim=keepdim), x)
    assert type(fg.kthvalue(fg.tensor(x), 1)).__name__ == "kthvalue"


# ---- scans ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cummax", "cummin"])
def test_cummax_cummin_ties_nan_and_gradient(name):
    x = ties(4, 9, k=2)
    both(lambda L, x: getattr(L, name)(x, 1), x)
    both(lambda L, x: getattr(x, name)(0), x)
    y = rn(7)
    y[3] = np.nan
    both(lambda L, x: getattr(L, name)(x, 0), y)
    both(lambda L, x: getattr(L, name)(x, 0), R.integers(-4, 4, (10,)), grad=False)


def test_cumprod_zeros_and_logcumsumexp():
    x = np.where(R.uniform(size=(4, 8)) < 0.25, 0, rn(4, 8)).astype(np.float32)
    both(lambda L, x: L.cumprod(x, 1), x)
    both(lambda L, x: x.cumprod(0), x)
    both(lambda L, x: L.cumprod(x, 1, dtype=L.float64), x)
    both(lambda L, x: L.logcumsumexp(x, -1), rn(3, 6) * 20)
    both(lambda L, x: x.logcumsumexp(0), rn(5, 2))


# ---- shape ops -------------------------------------------------------------------------------------------
def test_flip_roll_movedim():
    x = rn(3, 4, 5)
    both(lambda L, x: L.flip(x, (0, 2)), x)
    both(lambda L, x: x.flip(1), x)
    both(lambda L, x: x.flip(-1, 0), x)
    both(lambda L, x: L.fliplr(x), x)
    both(lambda L, x: L.flipud(x), x)
    both(lambda L, x: L.roll(x, 2, 1), x)
    both(lambda L, x: L.roll(x, (-1, 7), (0, 2)), x)
    both(lambda L, x: x.roll(5), x)
    both(lambda L, x: L.movedim(x, 0, -1), x)
    both(lambda L, x: L.moveaxis(x, (0, 1), (2, 0)), x)
    both(lambda L, x: x.movedim(-1, 0), x)


@pytest.mark.parametrize("offset", [0, 1, -2, 9])
def test_diagonal_diag_embed_diag_trace(offset):
    x = rn(3, 4, 5)
    both(lambda L, x: L.diagonal(x, offset), x)
    both(lambda L, x: x.diagonal(offset, 2, 0), x)
    both(lambda L, x: L.diag_embed(x, offset), x)
    both(lambda L, x: L.diag_embed(x, offset, 0, 2), x)
    both(lambda L, x: L.diag(x, offset), rn(4))
    both(lambda L, x: x.diag(offset), rn(4, 6))
    both(lambda L, x: L.trace(x), rn(4, 6))


def test_searchsorted_and_bucketize():
    seq = np.sort(ties(9, k=4))
    v = ties(3, 4, k=5)
    for kw in ({}, {"right": True}, {"side": "right"}, {"side": "left"}, {"out_int32": True}):
        both(lambda L, s, v: L.searchsorted(s, v, **kw), seq, v, grad=False)
        both(lambda L, v, b: L.bucketize(v, b, **kw), v, seq, grad=False) if "side" not in kw else None
    rows = np.sort(ties(3, 6), 1)
    both(lambda L, s, v: L.searchsorted(s, v), rows, ties(3, 2), grad=False)
    unsorted = ties(7)
    order = np.argsort(unsorted, kind="stable")
    both(lambda L, s, v, o: L.searchsorted(s, v, sorter=o), unsorted, v, order, grad=False)
    both(lambda L, s: L.searchsorted(s, 1.0), seq, grad=False)


def test_unique_unique_consecutive_bincount():
    x = R.integers(0, 4, (3, 5))
    for kw in ({}, {"return_inverse": True}, {"return_counts": True}, {"return_inverse": True, "return_counts": True}):
        both(lambda L, x: L.unique(x, **kw), x, grad=False)
        both(lambda L, x: L.unique(x, dim=1, **kw), x, grad=False)
        both(lambda L, x: L.unique_consecutive(x, **kw), np.array([1, 1, 2, 2, 2, 1, 3, 3]), grad=False)
        both(lambda L, x: L.unique_consecutive(x, dim=0, **kw), np.array([[1, 2], [1, 2], [0, 2], [1, 2]]),
             grad=False)
    both(lambda L, x: x.unique(sorted=False), ties(11), grad=False)
    b = R.integers(0, 6, 12)
    both(lambda L, x: L.bincount(x), b, grad=False)
    both(lambda L, x: x.bincount(minlength=9), b, grad=False)
    both(lambda L, x, w: L.bincount(x, w), b, rn(12), grad=False)
    both(lambda L, x, w: L.bincount(x, weights=w), b, rn(12).astype(np.float64), grad=False)


def test_meshgrid_broadcast():
    a, b, c = rn(3), rn(4), rn(2)
    both(lambda L, a, b, c: L.meshgrid(a, b, c, indexing="ij"), a, b, c)
    both(lambda L, a, b, c: L.meshgrid([a, b, c], indexing="xy"), a, b, c)
    both(lambda L, a, b: L.meshgrid(a, b, indexing="xy"), a, b)
    both(lambda L, a: L.broadcast_to(a, (2, 5, 3)), rn(5, 1))
    both(lambda L, a: a.broadcast_to((4, -1)), rn(3))
    both(lambda L, a, b, c: L.broadcast_tensors(a, b, c), rn(2, 1, 3), rn(4, 1), rn(3))
