"""Sums and means of float32 over non-adjacent axes (``x.sum((1, 3))``, ``x.mean((0, 2, 4))``) and of sliced views on
the fixed-order kernel sum_axes_f32 (cpp/kernels/per_isa/reduce_axes.cpp, its order in forgegrad/reduce_rows.h): bit
for bit against a numpy model of that order on every SIMD path and at 1 / 2 / 3 threads, the bits of sum_rows /
sum_lead / sum_mid on their layouts, against float64 and torch through x.sum / x.mean (keepdim, dtype=, negative
axes, permuted and sliced views, gradients), empty and size-1 axes, NaN / inf, and the binding's argument checks."""
from math import prod

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels.reduce_rows import axes_layout, sum_axes, sum_lead, sum_mid, sum_rows
from helpers import assert_same_bits_across_threads, assert_sum_and_mean_match_torch


def _x(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) + 3.0).astype(np.float32)  # a nonzero mean


def _row_chains(x):
    """(..., 8) float64 chains of each row of x (..., L) in reduce_rows.h's order (zero-padded blocks of 32)."""
    L = x.shape[-1]
    blocks = -(-L // 32)
    pad = np.zeros(x.shape[:-1] + (blocks * 32,), np.float32)
    pad[..., :L] = x
    q = pad.reshape(x.shape[:-1] + (blocks, 4, 8))
    f = (q[..., 0, :] + q[..., 1, :]) + (q[..., 2, :] + q[..., 3, :])  # float32
    return np.cumsum(f.astype(np.float64), axis=-2)[..., -1, :]  # sequential in block order


def _model(a, axes, mean):
    """reduce_rows.h's sum_axes order, written out: a's axes of size > 1 in memory order (by decreasing stride); with
    the innermost one reduced, rows of the innermost contiguous run of reduced axes, each row's 8 chains added over
    the other reduced indices in lexicographic order, then the halving tree; with it kept, one chain per output over
    the reduced indices in lexicographic order. The result in a's axis order, the reduced axes dropped."""
    axes = {ax % a.ndim for ax in axes}
    dims = sorted((i for i in range(a.ndim) if a.shape[i] > 1), key=lambda i: -a.strides[i])
    b = a.transpose(dims + [i for i in range(a.ndim) if a.shape[i] == 1]).reshape([a.shape[i] for i in dims])
    red = [i in axes for i in dims]
    kept = [p for p in range(len(dims)) if not red[p]]
    K = prod(b.shape[p] for p in kept)
    with np.errstate(invalid="ignore", over="ignore"):
        if red and red[-1]:
            k = len(dims) - 1
            while k > 0 and red[k - 1] and a.strides[dims[k - 1]] == a.strides[dims[k]] * a.shape[dims[k]]:
                k -= 1
            others = [p for p in range(k) if red[p]]
            b3 = b.transpose(kept + others + list(range(k, len(dims))))
            b3 = b3.reshape(K, prod(b.shape[p] for p in others), prod(b.shape[k:]))
            c = 0.0 + np.cumsum(_row_chains(b3), axis=1)[:, -1]  # (K, 8): each chain over the rows in order
            h = c[:, :4] + c[:, 4:]
            q = h[:, :2] + h[:, 2:]
            s = (q[:, 0] + q[:, 1]) + 0.0
        else:
            reds = [p for p in range(len(dims)) if red[p]]
            b2 = b.transpose(kept + reds).reshape(K, -1).astype(np.float64)
            s = 0.0 + np.cumsum(b2, axis=1)[:, -1] if b2.shape[1] else np.zeros(K)
        n = prod(a.shape[i] for i in axes)
        y = (s / n if mean else s).astype(np.float32)
    kdims = [dims[p] for p in kept]
    y = y.reshape([a.shape[i] for i in kdims]).transpose(np.argsort(kdims))
    return np.ascontiguousarray(y).reshape([a.shape[i] for i in range(a.ndim) if i not in axes])


# (shape, axes): innermost reduced with short, masked and long rows; innermost kept with strips of 1-8 groups, row
# passes past 64 columns and blocks of 4096 columns; 3 and 4 reduced blocks
CASES = [((3, 5, 7, 9), (1, 3)), ((3, 5, 7, 9), (0, 2)), ((3, 5, 7, 9), (0, 3)), ((2, 3, 4, 5, 6), (0, 2, 4)),
         ((2, 3, 4, 5, 6), (1, 3)), ((4, 6, 3, 40), (1, 3)), ((3, 4, 5, 70), (0, 2)), ((3, 9, 4, 33), (0, 2)),
         ((2, 3, 2, 5000), (0, 2)), ((5, 2, 7, 3, 2, 5, 3), (0, 2, 4, 6)), ((2, 3, 2, 3, 2, 3, 2), (1, 3, 5)),
         ((7, 1, 6, 1, 5), (0, 2)), ((6, 64, 5, 17), (0, 2)), ((3, 600, 4, 8), (1, 3)), ((17, 3, 19, 2), (0, 2)),
         ((4, 7, 5, 3), (0, 2)), ((3, 5, 4, 16), (0, 2)), ((3, 7, 4, 11), (1, 3))]


def _cid(v):
    return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)


@pytest.mark.parametrize("shape,axes", CASES, ids=_cid)
def test_sum_axes_follows_its_order_on_every_path(simd_path, shape, axes):
    x = _x(shape, seed=sum(shape))
    ref = x.astype(np.float64).sum(axes)
    for mean in (False, True):
        got = sum_axes(x, [i in axes for i in range(x.ndim)], mean)
        assert got.tobytes() == _model(x, axes, mean).tobytes()
        if x.size >= 2048:  # (smaller: numpy's sum, as fast there)
            assert getattr(fg.tensor(x), "mean" if mean else "sum")(axes).numpy().tobytes() == got.tobytes()
        np.testing.assert_allclose(got, ref / prod(shape[i] for i in axes) if mean else ref, rtol=1.2e-7, atol=0)


def test_the_bits_of_sum_rows_lead_and_mid_on_their_layouts(simd_path):
    x = _x((5, 6, 7, 40), seed=1)
    cases = [([False, False, True, True], lambda m: sum_rows(x.reshape(30, 280), m).reshape(5, 6)),
             ([True, True, False, False], lambda m: sum_lead(x.reshape(30, 280, 1), m).reshape(7, 40)),
             ([True, False, True, True], lambda m: sum_lead(x.reshape(5, 6, 280), m)),
             ([False, True, True, False], lambda m: sum_mid(x.reshape(5, 42, 40), m)),
             ([True, False, False, False], lambda m: sum_lead(x.reshape(5, 1680, 1), m).reshape(6, 7, 40))]
    for reduced, want in cases:
        for mean in (False, True):
            assert sum_axes(x, reduced, mean).tobytes() == want(mean).tobytes()


def test_edge_values(simd_path):
    x = _x((4, 6, 5, 20))
    x[0, 1, 1, 3], x[1, 2, 3, 4], x[2, 3, 4, 5] = np.nan, np.inf, -np.inf
    x[1, 4, 0, 6], x[2, 4, 1, 6] = np.inf, -np.inf  # inf - inf in one output of the sum over (0, 2)
    x[:, :, 2, :] = -0.0
    for axes in ((1, 3), (0, 2), (1, 2)):
        got = fg.tensor(x).sum(axes).numpy()
        assert got.tobytes() == _model(x, axes, False).tobytes()
    got = fg.tensor(x).sum((0, 2)).numpy()  # kept (6, 20): NaN, inf, -inf, inf - inf
    assert np.isnan(got[1, 3]) and got[2, 4] == np.inf and got[3, 5] == -np.inf and np.isnan(got[4, 6])
    z = sum_axes(x[:, :, 2:3, :], [True, False, True, False])  # sums of -0 only: torch's +0
    assert (z == 0).all() and not np.signbit(z).any()
    big = np.full((2, 3, 2, 9), 3e38, np.float32)
    assert (sum_axes(big, [False, True, False, True]) == np.inf).all()  # past float32 in the end
    # one float64 chain per output: the mean of values near the float32 limit stays finite (rows of the innermost
    # axis add four values in float32 first, as sum_rows: there it is inf, as the order says)
    assert (sum_axes(big, [True, False, True, False], True) == np.float32(3e38)).all()


@pytest.mark.parametrize("shape,axes", [((64, 32, 14, 14), (0, 2)), ((32, 50, 20, 64), (1, 3)),
                                        ((8, 4, 30, 6, 9, 200), (0, 2, 4)), ((3, 9000, 2, 70), (0, 2))], ids=_cid)
def test_same_bits_at_1_2_3_threads(threads, shape, axes):
    x = _x(shape, seed=2)
    v = fg.tensor(x)[:, 1:, ..., 3:]  # and a sliced view of it
    assert_same_bits_across_threads(lambda: [fg.tensor(x).sum(axes).numpy(), fg.tensor(x).mean(axes).numpy(),
                                             v.sum(axes).numpy()], threads)


# (>= 2048 values: smaller sums stay numpy's, test_small_sums_stay_numpy)
TORCH = [((5, 7, 9, 11), (1, 3)), ((5, 7, 9, 11), (0, 2)), ((5, 7, 9, 11), (0, 3)), ((5, 7, 9, 11), (-1, -3)),
         ((3, 4, 5, 6, 7), (0, 2, 4)), ((3, 4, 5, 6, 7), (-2, 1)), ((9, 1, 15, 1, 17), (1, 3)),
         ((9, 1, 15, 1, 17), (0, 4)), ((6, 300, 5, 33), (0, 2)), ((2, 3, 2, 5000), (1, 3)), ((50, 1, 49), (0, 2))]


@pytest.mark.parametrize("shape,dim", TORCH, ids=_cid)
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_and_mean_over_non_adjacent_axes_match_torch(shape, dim, keepdim):
    assert_sum_and_mean_match_torch(_x(shape, seed=3), dim, keepdim, grad_seed=4)


# (shape, view of the stored array, dim, rtol against float64): sliced, stepped along outer axes, permuted, both; a
# stepped innermost axis and a small view stay numpy's float32 sums (sum_axes reads the innermost axis contiguously)
S4 = (9, 10, 9, 11)
VIEWS = [(S4, lambda t: t[:, 1:5], (1, 3), 1.2e-7), (S4, lambda t: t[..., :5], -1, 1.2e-7),
         (S4, lambda t: t[..., 1:6], (0, 2), 1.2e-7), (S4, lambda t: t[::2, :, 1:], (0, 1, 2), 1.2e-7),
         (S4, lambda t: t[:, :, 2:5, :], (2, 3), 1.2e-7), ((30, 17, 19), lambda t: t[1:27, :, :9], 1, 1.2e-7),
         (S4, lambda t: t.permute(0, 2, 1, 3), (1, 2), 1.2e-7), (S4, lambda t: t.permute(3, 1, 2, 0), (0, 2), 1.2e-7),
         (S4, lambda t: t.permute(0, 2, 1, 3)[:, 1:4], (0, 2), 1.2e-7), ((50, 70), lambda t: t[:, 10:60], 0, 1.2e-7),
         ((50, 70), lambda t: t[2:48, 10:60], None, 1.2e-7), (S4, lambda t: t[..., ::2], (1, 3), 1e-6),
         (S4, lambda t: t[:, :, :, 3:4], (0, 2), 1e-6)]


@pytest.mark.parametrize("case", range(len(VIEWS)))
@pytest.mark.parametrize("keepdim", [False, True])
def test_views_match_torch(case, keepdim):
    shape, view, dim, rtol = VIEWS[case]
    x = _x(shape, seed=7)
    xt, tx = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    for name in ("sum", "mean"):
        v, tv = view(xt), view(tx)
        args, kw = ((), {}) if dim is None else ((dim,), {"keepdim": keepdim})
        y, ty = getattr(v, name)(*args, **kw), getattr(tv, name)(*args, **kw)
        assert y.shape == tuple(ty.shape)
        ref = getattr(tv.detach().numpy().astype(np.float64), name)(dim, keepdims=bool(kw.get("keepdim")))
        np.testing.assert_allclose(y.numpy(), ref, rtol=rtol, atol=0)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=2e-6, atol=0)
        g = _x(y.shape, seed=8)
        y.backward(fg.tensor(g))
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=0)


def test_views_follow_the_order_of_their_memory_layout(simd_path):
    x = _x((8, 9, 7, 40), seed=9)
    for view, axes in [(x[:, 1:6], (1, 3)), (x[..., 3:37], (0, 2)), (x[..., 3:37], (1, 3)), (x[::2, :, 1:], (0, 2)),
                       (x.transpose(2, 1, 0, 3), (0, 2)), (x.transpose(0, 2, 1, 3)[:, :, 2:], (1, 3)),
                       (x[:, 2:5, :, :20], (2, 3)), (x[:, :, 1:4], (2, 3))]:
        v = fg.from_numpy(view)  # (fg.tensor would copy it)
        assert v.sum(axes).numpy().tobytes() == _model(view, axes, False).tobytes()
        assert v.mean(axes).numpy().tobytes() == _model(view, axes, True).tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_forms(dtype):
    x = _x((4, 3, 5, 6), seed=6)
    xt, tx = fg.tensor(x.astype(np.float16)), torch.tensor(x.astype(np.float16))
    for name in ("sum", "mean"):
        y = getattr(xt, name)((1, 3), dtype=getattr(fg, dtype))
        ty = getattr(tx, name)((1, 3), dtype=getattr(torch, dtype))
        assert y.dtype == getattr(fg, dtype)
        np.testing.assert_allclose(y.numpy(), ty.numpy(), rtol=2e-6, atol=0)


def test_small_sums_stay_numpy():
    x = _x((3, 5, 7, 9), seed=10)  # 945 values: numpy's float32 sum (as fast), not the kernel's order
    for axes in ((1, 3), (0, 2)):
        want = np.sum(x, axis=axes, dtype=np.float32)
        assert fg.tensor(x).sum(axes).numpy().tobytes() == want.tobytes()
        assert want.tobytes() != _model(x, axes, False).tobytes()  # (the two differ here: the test can tell)
        for name in ("sum", "mean"):
            xt, tx = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
            y, ty = getattr(xt, name)(axes, keepdim=True), getattr(tx, name)(axes, keepdim=True)
            np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=2e-6, atol=0)
            y.sum().backward()
            ty.sum().backward()
            np.testing.assert_array_equal(xt.grad.numpy(), tx.grad.numpy())


def test_empty_and_size_one_axes():
    z = fg.tensor(np.zeros((3, 0, 4, 2), np.float32))
    assert z.sum((1, 3)).numpy().tolist() == [[0.0] * 4] * 3
    assert np.isnan(z.mean((1, 3)).numpy()).all() and z.mean((1, 3)).shape == (3, 4)
    assert z.sum((0, 2)).shape == (0, 2) and z.mean((0, 2), keepdim=True).shape == (1, 0, 1, 2)
    x = _x((1, 5, 1, 7), seed=5)
    for axes in ((0, 2), (1, 3), (0, 3)):
        np.testing.assert_allclose(fg.tensor(x).sum(axes).numpy(), torch.tensor(x).sum(axes).numpy(), rtol=2e-6)
    assert sum_axes(np.ones((1, 1, 1), np.float32), [True, False, True]).tolist() == [1.0]
    assert sum_axes(np.ones((3, 1, 4), np.float32), [False, True, False]).tolist() == [[1.0] * 4] * 3
    assert sum_axes(np.ones((0, 4), np.float32), [False, True]).shape == (0,)


def test_axes_layout():
    a = np.zeros((2, 3, 4, 5), np.float32)
    lay = axes_layout(a, (1, 3))
    assert lay.view.shape == (2, 3, 4, 5) and lay.reduced == (False, True, False, True) and lay.kept == (0, 2)
    assert lay.blocks == ((2, False), (3, True), (4, False), (5, True))
    assert axes_layout(a, (2, 3)).blocks == ((6, False), (20, True))
    lay = axes_layout(a.transpose(0, 2, 1, 3), (1, 3))  # memory order (0, 2, 1, 3): 2 and 3 of the view reduced
    assert lay.view.shape == (2, 3, 4, 5) and lay.reduced == (False, False, True, True) and lay.kept == (0, 2)
    assert lay.blocks == ((6, False), (20, True))
    assert axes_layout(a[:, :, 1:3], (0, 2)).blocks == ((2, True), (3, False), (2, True), (5, False))
    assert axes_layout(a[:, :, :, 1:3], (2, 3)).blocks == ((6, False), (4, True), (2, True))
    assert axes_layout(np.zeros((7, 1, 6, 1, 5), np.float32), (0, 2)).blocks == ((42, True), (5, False))
    assert axes_layout(a[..., ::2], (1,)) is None  # the innermost axis not contiguous
    assert axes_layout(a[:, ::-1], (1,)) is None
    assert axes_layout(a.astype(np.float64), (1,)) is None
    assert axes_layout(np.zeros((2, 0, 3), np.float32), (1,)) is None
    assert axes_layout(np.zeros((2, 1, 3), np.float32), (1,)) is None  # nothing of size > 1 reduced
    assert axes_layout(np.broadcast_to(np.zeros(3, np.float32), (4, 3)), (0,)) is None  # a zero stride
    many = np.ones((2,) * 17, np.float32)  # past sum_axes' 16 axes: numpy's sum
    assert axes_layout(many, (0, 2)) is None
    assert fg.tensor(many).sum((0, 2)).numpy().tolist() == np.full((2,) * 15, 4.0).tolist()


def test_binding_checks_its_arguments():
    x = _x((3, 4, 5))
    out = np.empty((3, 5), np.float32)
    with pytest.raises(ValueError, match="one flag per axis"):
        _C.reduce_rows.sum_axes(x, [False, True], out, False)
    with pytest.raises(ValueError, match="kept axes"):
        _C.reduce_rows.sum_axes(x, [True, True, False], out, False)
    with pytest.raises(ValueError, match="contiguous"):
        _C.reduce_rows.sum_axes(x[:, :, ::2], [False, True, False], np.empty((3, 3), np.float32), False)
    with pytest.raises(ValueError, match="empty reduced axis"):
        _C.reduce_rows.sum_axes(np.empty((3, 0, 5), np.float32), [False, True, False], out, False)
    with pytest.raises(ValueError, match="1 to 16 axes"):
        _C.reduce_rows.sum_axes(np.ones((), np.float32), [], np.empty((), np.float32), False)
    with pytest.raises(ValueError, match="1 to 16 axes"):
        _C.reduce_rows.sum_axes(np.ones((1,) * 17, np.float32), [True] * 17, np.empty((), np.float32), False)
    with pytest.raises(TypeError):
        _C.reduce_rows.sum_axes(x.astype(np.float64), [False, True, False], out, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.reduce_rows.sum_axes(x, [False, True, False], np.empty((5, 3), np.float32).T, False)
    with pytest.raises(ValueError):  # out inside x
        _C.reduce_rows.sum_axes(x, [False, True, False], x[:, 0, :], False)
    with pytest.raises(ValueError, match="one flag per axis"):
        sum_axes(x, [True])
    with pytest.raises(TypeError, match="float32"):
        sum_axes(x.astype(np.float64), [False, True, False])
    # any outer strides, negative and zero included, read inside x
    v, flags = x[::-1, :, :], [True, False, True]
    assert sum_axes(v, flags).tobytes() == sum_axes(np.ascontiguousarray(v), flags).tobytes()
    b = np.broadcast_to(x[:1], (4, 4, 5))
    np.testing.assert_allclose(sum_axes(b, [True, False, True]), 4 * x[0].astype(np.float64).sum(1), rtol=1.2e-7)
