"""Sums and means over middle axes of a float32 tensor (``x.mean(1)`` of (B, T, C), ``x.sum(1)`` of NCHW) on the
fixed-order kernel (sum_mid_f32 in cpp/kernels/per_isa/reduce_rows.cpp, its order in forgegrad/reduce_rows.h):
bit for bit against a numpy model of that order on every SIMD path and at 1 / 2 / 3 threads, against float64 and
torch through x.sum / x.mean (keepdim, dtype=, gradients), permuted views reduced in memory order, empty axes,
NaN / inf, and the binding's argument checks."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels.reduce_rows import memory_order, mid_shape, sum_lead, sum_mid
from helpers import assert_same_bits_across_threads, assert_sum_and_mean_match_torch


def _model(x3, mean):
    """reduce_rows.h's L == 1 order per outer index: 0.0 + x[o][0][i] + x[o][1][i] + ... in float64."""
    s = np.cumsum(x3.astype(np.float64), axis=1)[:, -1] + 0.0
    return (s / x3.shape[1] if mean else s).astype(np.float32)


def _x(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) + 3.0).astype(np.float32)  # a nonzero mean


# outer 1 / 5, mid 1 / 3 / 17 / 1000, inner 1 / 3 / 15 / 16 / 17 / 129 (strips, their masked tails, row passes)
SHAPES = [(o, m, i) for o in (1, 5) for m in (1, 3, 17, 1000) for i in (1, 3, 15, 16, 17, 129)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_sum_mid_follows_its_order_on_every_path(simd_path, shape):
    x = _x(shape, seed=sum(shape))
    ref = x.astype(np.float64).sum(1)
    for mean in (False, True):
        got = sum_mid(x, mean)
        assert got.tobytes() == _model(x, mean).tobytes()
        np.testing.assert_allclose(got, ref / shape[1] if mean else ref, rtol=1.2e-7, atol=0)  # float32 rounding


@pytest.mark.parametrize("shape", [(2, 3, 33), (3, 2, 65), (2, 3, 4097), (2, 5, 9000), (1, 40, 200)],
                         ids=lambda s: "x".join(map(str, s)))
def test_wide_rows_in_column_blocks_follow_the_order(simd_path, shape):
    x = _x(shape, seed=1)
    assert sum_mid(x).tobytes() == _model(x, False).tobytes()
    assert sum_mid(x, True).tobytes() == _model(x, True).tobytes()


def test_sum_mid_edge_values(simd_path):
    x = _x((3, 6, 20))
    x[0, 1, 2], x[1, 2, 3], x[2, 3, 4] = np.nan, np.inf, -np.inf
    x[1, 4, 5], x[1, 2, 5] = np.inf, -np.inf  # inf - inf
    x[:, :, 7] = -0.0
    got = sum_mid(x)
    assert np.isnan(got[0, 2]) and got[1, 3] == np.inf and got[2, 4] == -np.inf and np.isnan(got[1, 5])
    assert (got[:, 7] == 0).all() and not np.signbit(got[:, 7]).any()  # torch's +0 for a sum of -0
    big = np.full((2, 3, 9), 3e38, np.float32)
    assert (sum_mid(big) == np.inf).all()  # past float32 in the end, not in the float64 sum
    assert (sum_mid(big, True) == np.float32(3e38)).all()  # the mean of values near the float32 limit stays finite


@pytest.mark.parametrize("shape", [(32, 128, 768), (64, 50, 196), (5, 1000, 17), (3, 7, 9000), (700, 3, 5)],
                         ids=lambda s: "x".join(map(str, s)))
def test_same_bits_at_1_2_3_threads(threads, shape):
    x = _x(shape, seed=2)
    assert_same_bits_across_threads(lambda: [sum_mid(x), sum_mid(x, True)], threads)


CASES = [((32, 128, 768), 1), ((4, 64, 14, 14), 1), ((8, 1000, 64), 1), ((5, 17, 3), -2), ((2, 3, 4, 5), (1, 2)),
         ((3, 5000, 7), 1), ((2, 3, 4, 5, 6), (2, 3)), ((4, 1, 9), 1), ((3, 7, 2000), 1)]


@pytest.mark.parametrize("shape,dim", CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_and_mean_over_middle_axes_match_torch(shape, dim, keepdim):
    assert_sum_and_mean_match_torch(_x(shape, seed=3), dim, keepdim, grad_seed=4)


def test_middle_axis_sum_runs_the_kernel_and_its_order():
    x = _x((6, 300, 40), seed=5)  # numpy's float32 adds would differ from the float64 order in some bits
    y = fg.tensor(x).sum(1).numpy()
    assert y.tobytes() == _model(x, False).tobytes()
    assert fg.tensor(x).mean(1, keepdim=True).numpy().tobytes() == _model(x, True)[:, None].tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_forms(dtype):
    x = _x((4, 33, 20), seed=6)
    xt, tx = fg.tensor(x.astype(np.float16)), torch.tensor(x.astype(np.float16))
    for name in ("sum", "mean"):
        y = getattr(xt, name)(1, dtype=getattr(fg, dtype))
        ty = getattr(tx, name)(1, dtype=getattr(torch, dtype))
        assert y.dtype == getattr(fg, dtype)
        np.testing.assert_allclose(y.numpy(), ty.numpy(), rtol=2e-6, atol=0)


PERMUTED = [((4, 16, 10), (0, 2, 1), 1), ((4, 16, 10), (0, 2, 1), 2), ((6, 5, 7, 3), (0, 2, 3, 1), (1, 2)),
            ((6, 5, 7, 3), (3, 1, 0, 2), 0), ((6, 5, 7, 3), (1, 0, 2, 3), None), ((50, 40), (1, 0), 0),
            ((8, 9, 20), (2, 1, 0), 1), ((2, 3, 4, 5), (0, 3, 1, 2), (1, 3))]


@pytest.mark.parametrize("shape,perm,dim", PERMUTED, ids=str)
@pytest.mark.parametrize("keepdim", [False, True])
def test_permuted_views_reduce_in_memory_order(shape, perm, dim, keepdim):
    x = _x(shape, seed=7)
    xt = fg.tensor(x, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    for name in ("sum", "mean"):
        v, tv = xt.permute(*perm), tx.permute(*perm)
        args = () if dim is None else (dim,)
        kw = {} if dim is None else {"keepdim": keepdim}
        y, ty = getattr(v, name)(*args, **kw), getattr(tv, name)(*args, **kw)
        assert y.shape == tuple(ty.shape)
        ref = getattr(x.transpose(perm).astype(np.float64), name)(dim, keepdims=keepdim if dim is not None else False)
        np.testing.assert_allclose(y.numpy(), ref, rtol=1.2e-7, atol=0)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=2e-6, atol=0)
        g = _x(y.shape, seed=8)
        y.backward(fg.tensor(g))
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=0)


def test_permuted_view_gives_the_contiguous_layouts_bits():
    x = _x((5, 300, 24), seed=9)  # (B, C, T) in memory; the view (B, T, C) summed over T is x's trailing axis
    v = fg.tensor(x).transpose(1, 2)
    assert v.sum(1).numpy().tobytes() == fg.tensor(x).sum(2).numpy().tobytes()
    m = np.ascontiguousarray(x[:, :10].transpose(2, 0, 1))  # (T, B, C) memory: the view (B, C, T) over T is leading
    want = sum_lead(m.reshape(24, 50, 1), True).reshape(5, 10)
    assert fg.tensor(m).permute(1, 2, 0).mean(2).numpy().tobytes() == want.tobytes()


def test_empty_axes():
    z = fg.tensor(np.zeros((3, 0, 4), np.float32))
    assert z.sum(1).numpy().tolist() == [[0.0] * 4] * 3
    assert np.isnan(z.mean(1).numpy()).all() and z.mean(1).shape == (3, 4)
    assert fg.tensor(np.zeros((0, 3, 4), np.float32)).sum(1).shape == (0, 4)
    assert fg.tensor(np.zeros((2, 3, 0), np.float32)).mean(1, keepdim=True).shape == (2, 1, 0)
    assert sum_mid(np.empty((0, 3, 5), np.float32)).shape == (0, 5)


def test_mid_shape_and_memory_order():
    a = np.zeros((2, 3, 4, 5), np.float32)
    assert mid_shape(a, (1,)) == (2, 3, 20)
    assert mid_shape(a, (1, 2)) == (2, 12, 5)
    assert mid_shape(a, (2,)) == (6, 4, 5)
    assert mid_shape(a, (0, 1)) is None  # leading: sum_lead
    assert mid_shape(a, (3,)) is None  # trailing: sum_rows
    assert mid_shape(a, (1, 3)) is None  # not adjacent
    assert mid_shape(a.transpose(1, 0, 2, 3), (1,)) is None
    assert mid_shape(a.astype(np.float64), (1,)) is None
    assert mid_shape(np.zeros((2, 0, 3), np.float32), (1,)) is None
    assert memory_order(a) is None  # contiguous already
    assert memory_order(a.transpose(0, 2, 3, 1)) == [0, 3, 1, 2]
    assert memory_order(a[:, :, ::2]) is None  # a strided slice
    assert memory_order(a[:, ::-1]) is None
    assert memory_order(a.astype(np.float64).transpose(1, 0, 2, 3)) is None


def test_binding_checks_its_arguments():
    x = _x((3, 4, 5))
    with pytest.raises(ValueError, match="shape"):
        _C.reduce_rows.sum_mid(x, np.empty((3, 4), np.float32), False)
    with pytest.raises(ValueError, match="M >= 1"):
        _C.reduce_rows.sum_mid(np.empty((3, 0, 5), np.float32), np.empty((3, 5), np.float32), False)
    with pytest.raises(TypeError):
        _C.reduce_rows.sum_mid(x.astype(np.float64), np.empty((3, 5), np.float32), False)
    with pytest.raises(ValueError):
        _C.reduce_rows.sum_mid(x[:, :, :2], np.empty((3, 2), np.float32), False)  # not contiguous
    with pytest.raises(ValueError, match="3-D"):
        sum_mid(x.reshape(12, 5))
    with pytest.raises(TypeError, match="float32"):
        sum_mid(x.astype(np.float64))
