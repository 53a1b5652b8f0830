"""Sums and means over leading axes (and trailing ones with them) of a contiguous float32 tensor on the fixed-order
kernel (sum_lead_f32 in cpp/kernels/per_isa/reduce_rows.cpp, its order in forgegrad/reduce_rows.h): bit for bit
against a numpy model of that order on every SIMD path, at 1 / 2 / 3 threads, against float64 and torch through
x.sum / x.mean (with keepdim and gradients), and the binding's argument checks."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels.reduce_rows import lead_shape, sum_lead
from helpers import assert_same_bits_across_threads, assert_sum_and_mean_match_torch


def _row_chains(x):
    """(..., 8) float64 chains of each row of x (..., L) in reduce_rows.h's order (zero-padded blocks of 32)."""
    L = x.shape[-1]
    blocks = -(-L // 32)
    pad = np.zeros(x.shape[:-1] + (blocks * 32,), np.float32)
    pad[..., :L] = x
    q = pad.reshape(x.shape[:-1] + (blocks, 4, 8))
    f = (q[..., 0, :] + q[..., 1, :]) + (q[..., 2, :] + q[..., 3, :])  # float32
    return np.cumsum(f.astype(np.float64), axis=-2)[..., -1, :]  # sequential in block order


def _model(x3, mean):
    A, B, L = x3.shape
    if L == 1:
        s = np.cumsum(x3[:, :, 0].astype(np.float64), axis=0)[-1]  # row after row
    else:
        c = np.cumsum(_row_chains(x3), axis=0)[-1]  # (B, 8): each chain's rows in order
        h = c[:, :4] + c[:, 4:]
        q = h[:, :2] + h[:, 2:]
        s = q[:, 0] + q[:, 1]
    s = s + 0.0
    return (s / (A * L) if mean else s).astype(np.float32)


def _x(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) + 3.0).astype(np.float32)  # a nonzero mean


SHAPES = [(1, 5, 1), (7, 3, 1), (9, 33, 1), (4097, 70, 1), (3, 1100, 1), (2, 3, 2), (5, 4, 31), (3, 2, 33),
          (4, 5, 49), (2, 3, 196), (3, 2, 3136)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mean", [False, True])
def test_sum_lead_follows_its_order_on_every_path(simd_path, shape, mean):
    x = _x(shape, seed=sum(shape))
    got = sum_lead(x, mean)
    assert got.tobytes() == _model(x, mean).tobytes()
    ref = x.astype(np.float64).sum((0, 2)) / (shape[0] * shape[2] if mean else 1)
    np.testing.assert_allclose(got, ref, rtol=1.2e-7, atol=0)  # float32 rounding of the float64 sum


def test_sum_lead_edge_values():
    x = _x((6, 5, 3))
    x[1, 0, 2], x[2, 1, 0], x[3, 2, 1] = np.nan, np.inf, -np.inf
    x[:, 3] = -0.0
    got = sum_lead(x)
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf
    assert got[3] == 0 and not np.signbit(got[3])  # torch's +0 for a sum of -0
    y = np.full((4, 3, 1), -0.0, np.float32)
    assert sum_lead(y).tobytes() == np.zeros(3, np.float32).tobytes()


@pytest.mark.parametrize("shape", [(3000, 257, 1), (64, 130, 49), (3, 5, 4097)])
def test_same_bits_at_1_2_3_threads(threads, shape):
    x = _x(shape, seed=1)
    assert_same_bits_across_threads(lambda: [sum_lead(x), sum_lead(x, True)], threads)


@pytest.mark.parametrize("shape,dim", [((5000, 64), 0), ((64, 256, 14, 14), (0, 2, 3)), ((6, 7, 5), (0, 1)),
                                       ((16, 3, 9, 9), (0, 2, 3)), ((3, 4, 5, 6), (0, -1)), ((300, 3, 7), 0)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_and_mean_over_leading_axes_match_torch(shape, dim, keepdim):
    assert_sum_and_mean_match_torch(_x(shape, seed=2), dim, keepdim, grad_seed=3)


def test_lead_shape_picks_leading_axes_of_contiguous_float32():
    a = np.zeros((2, 3, 4, 5), np.float32)
    assert lead_shape(a, (0,)) == (2, 60, 1)
    assert lead_shape(a, (0, 2, 3)) == (2, 3, 20)
    assert lead_shape(a, (0, 1, 3)) == (6, 4, 5)
    assert lead_shape(a, (2, 3)) is None  # trailing only: sum_rows
    assert lead_shape(a, (0, 1, 2, 3)) is None  # everything
    assert lead_shape(a, (0, 2)) is None  # axis 3 kept after a reduced one
    assert lead_shape(a.transpose(1, 0, 2, 3), (0,)) is None  # not contiguous
    assert lead_shape(a.astype(np.float64), (0,)) is None
    assert lead_shape(np.zeros((0, 3), np.float32), (0,)) is None


def test_non_contiguous_and_empty_inputs_stay_correct():
    x = _x((40, 30))
    t = fg.tensor(x).transpose(0, 1)
    np.testing.assert_allclose(t.sum(0).numpy(), x.T.astype(np.float64).sum(0), rtol=1e-6)
    assert fg.tensor(np.zeros((0, 4), np.float32)).sum(0).numpy().tolist() == [0.0] * 4


def test_binding_checks_its_arguments():
    x = _x((3, 4, 5))
    with pytest.raises(ValueError, match="columns"):
        _C.reduce_rows.sum_lead(x, np.empty(5, np.float32), False)
    with pytest.raises(ValueError, match="A, L >= 1"):
        _C.reduce_rows.sum_lead(np.empty((0, 4, 5), np.float32), np.empty(4, np.float32), False)
    with pytest.raises(TypeError):
        _C.reduce_rows.sum_lead(x.astype(np.float64), np.empty(4, np.float32), False)
    with pytest.raises(ValueError):
        _C.reduce_rows.sum_lead(x[:, :, :2], np.empty(4, np.float32), False)  # not contiguous
    with pytest.raises(ValueError):
        _C.reduce_rows.sum_lead(x.reshape(12, 5), np.empty(12, np.float32), False)
    with pytest.raises(ValueError, match="3-D"):
        sum_lead(x.reshape(12, 5))
    with pytest.raises(TypeError, match="float32"):
        sum_lead(x.astype(np.float64))
    assert sum_lead(np.empty((3, 0, 5), np.float32)).shape == (0,)
