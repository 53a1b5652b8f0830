"""The many-short-rows sum (cpp/kernels/per_isa/reduce_rows.cpp) and the ops routed to it: adaptive_avg_pool2d /
1d to 1, avg_pool2d over the whole plane, sum / mean over the trailing axes of a contiguous float32 tensor. Checked
bit for bit against a numpy model of its order (forgegrad/reduce_rows.h) on every SIMD path, against float64 and
torch, at 1 / 2 / 3 threads, with non-contiguous inputs (the general path), and its argument checks."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels.reduce_rows import fill_rows, sum_rows, trailing_rows
from helpers import assert_same_bits_across_threads

LENGTHS = [1, 2, 3, 7, 8, 9, 17, 31, 32, 33, 49, 50, 196, 3136, 4097]


def _model(x, mean):
    """The order of forgegrad/reduce_rows.h: the row zero-padded to blocks of 32, per block and chain j
    (x[j] + x[8 + j]) + (x[16 + j] + x[24 + j]) in float32, added in float64 to 8 chains in block order
    (cumsum is sequential), then the halving tree."""
    R, L = x.shape
    blocks = -(-L // 32)
    pad = np.zeros((R, blocks * 32), np.float32)
    pad[:, :L] = x
    q = pad.reshape(R, blocks, 4, 8)
    f = (q[:, :, 0] + q[:, :, 1]) + (q[:, :, 2] + q[:, :, 3])  # float32
    with np.errstate(invalid="ignore"):  # inf - inf in the edge-value rows
        c = 0.0 + np.cumsum(f.astype(np.float64), axis=1)[:, -1]  # (R, 8); 0.0 + : a chain starts at 0.0
        h = c[:, :4] + c[:, 4:]
        q2 = h[:, :2] + h[:, 2:]
        s = q2[:, 0] + q2[:, 1]
    return (s / L if mean else s).astype(np.float32)


def _rows(R, L, seed=0):
    x = np.random.default_rng(seed).standard_normal((R, L)).astype(np.float32)
    return x + np.float32(3.0)  # a nonzero mean: a float32 running sum would drift visibly


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("mean", [True, False])
def test_sum_rows_follows_its_order_on_every_path(simd_path, L, mean):
    x = _rows(37, L, seed=L)
    got = sum_rows(x, mean)
    want = _model(x, mean)
    assert got.tobytes() == want.tobytes()
    ref = x.astype(np.float64).sum(1) / (L if mean else 1)
    np.testing.assert_allclose(got, ref, rtol=1.2e-7, atol=0)  # float32 rounding of the float64 result


def test_sum_rows_edge_values(simd_path):
    x = _rows(11, 41, seed=3)
    x[0, 5], x[1, 40], x[2, 0], x[3, 7] = np.nan, np.inf, -np.inf, -0.0
    x[4] = -0.0
    x[5, :2] = [np.inf, -np.inf]
    got, want = sum_rows(x, True), _model(x, True)
    np.testing.assert_array_equal(np.isnan(got[[0, 5]]), True)
    assert got[1] == np.inf and got[2] == -np.inf
    assert np.signbit(got[4]) == np.signbit(want[4]) == False  # noqa: E712  (a row of -0: the order's +0)
    finite = ~np.isnan(want)
    assert got[finite].tobytes() == want[finite].tobytes()
    ones = np.full((9, 1), -0.0, np.float32)  # the one-element path
    assert sum_rows(ones, False).tobytes() == _model(ones, False).tobytes() == np.zeros(9, np.float32).tobytes()


@pytest.mark.parametrize("L", [1, 3, 49, 3136])
def test_fill_rows_on_every_path(simd_path, L):
    g = np.random.default_rng(L).standard_normal(53).astype(np.float32)
    got = fill_rows(g, L, L)
    want = np.repeat((g / np.float32(L))[:, None], L, axis=1)
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("R,L", [(70001, 1), (2003, 49), (33, 3136), (3, 4097)])
def test_same_bits_at_1_2_3_threads(threads, R, L):
    x = _rows(R, L, seed=R)
    g = x[:, 0].copy()
    assert_same_bits_across_threads(lambda: [sum_rows(x, True), sum_rows(x, False), fill_rows(g, L, L)], threads)


def _fwd_bwd_fg(fn, x, g):
    t = fg.tensor(x, requires_grad=True)
    y = fn(fg, t)
    y.backward(fg.tensor(g))
    return y.numpy(), t.grad.numpy()


def _fwd_bwd_torch(fn, x, g):
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = fn(torch, t)
    y.backward(torch.tensor(g, dtype=torch.float64))
    return y.detach().numpy(), t.grad.numpy()


F = {
    "adaptive1": lambda m, t: m.nn.functional.adaptive_avg_pool2d(t, 1),
    "adaptive11": lambda m, t: m.nn.functional.adaptive_avg_pool2d(t, (1, 1)),
    "avg_whole": lambda m, t: m.nn.functional.avg_pool2d(t, tuple(t.shape[2:])),
    "avg_whole_stride": lambda m, t: m.nn.functional.avg_pool2d(t, tuple(t.shape[2:]), stride=2, ceil_mode=True),
    "mean23": lambda m, t: t.mean((2, 3)),
    "mean32_keep": lambda m, t: t.mean((3, 2), keepdim=True),
    "sum23": lambda m, t: t.sum((2, 3)),
    "mean_last": lambda m, t: t.mean(-1),
    "sum_all": lambda m, t: t.sum(),
    "mean_123": lambda m, t: t.mean((1, 2, 3)),
}


@pytest.mark.parametrize("name", sorted(F))
@pytest.mark.parametrize("shape", [(3, 5, 1, 1), (1, 3, 1, 3), (3, 1, 17, 1), (2, 3, 7, 7), (1, 3, 5, 10),
                                   (5, 1, 56, 56), (1, 1, 17, 241)])
def test_ops_match_float64_torch(simd_path, name, shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32) + np.float32(1.0)
    with torch.no_grad():
        out_shape = F[name](torch, torch.tensor(x)).shape
    g = rng.standard_normal(tuple(out_shape)).astype(np.float32)
    y, gx = _fwd_bwd_fg(F[name], x, g)
    y64, gx64 = _fwd_bwd_torch(F[name], x, g)
    assert y.dtype == np.float32 and y.shape == y64.shape and gx.shape == x.shape
    np.testing.assert_allclose(y, y64, rtol=2e-7, atol=1e-7)
    np.testing.assert_allclose(gx, gx64, rtol=2e-7, atol=0)


@pytest.mark.parametrize("name", ["mean23", "sum23", "adaptive1", "mean_last"])
def test_non_contiguous_inputs_take_a_correct_path(name):
    x = np.random.default_rng(5).standard_normal((3, 4, 9, 6)).astype(np.float32)
    view = fg.tensor(x, requires_grad=True)
    t = view.permute(0, 1, 3, 2) if name != "mean_last" else view[:, :, ::2, 1:]
    y = F[name](fg, t)
    y.backward(fg.ones(y.shape))
    ref_in = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tt = ref_in.permute(0, 1, 3, 2) if name != "mean_last" else ref_in[:, :, ::2, 1:]
    yt = F[name](torch, tt)
    yt.backward(torch.ones(yt.shape, dtype=torch.float64))
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(view.grad.numpy(), ref_in.grad.numpy(), rtol=1e-6, atol=0)


def test_global_pools_give_the_same_bits_as_mean():
    x = _rows(6 * 7, 49, seed=7).reshape(6, 7, 7, 7)
    t = fg.tensor(x)
    a = fg.nn.functional.adaptive_avg_pool2d(t, 1).numpy()
    b = fg.nn.functional.avg_pool2d(t, 7).numpy()
    c = t.mean((2, 3), keepdim=True).numpy()
    d = fg.nn.functional.adaptive_avg_pool1d(fg.tensor(x.reshape(6, 7, 49)), 1).numpy()
    assert a.tobytes() == b.tobytes() == c.tobytes() == d.tobytes() == _model(x.reshape(42, 49), True).tobytes()


def test_float32_global_mean_is_accurate_over_a_large_plane():
    x = np.full((2, 1, 1024, 1024), 0.1, np.float32)
    got = fg.nn.functional.adaptive_avg_pool2d(fg.tensor(x), 1).numpy()
    np.testing.assert_array_equal(got, np.float32(0.1))
    assert fg.tensor(x).sum((2, 3)).numpy()[0, 0] == np.float32(np.float64(np.float32(0.1)) * 2**20)


def test_trailing_rows():
    x = np.zeros((2, 3, 4, 5), np.float32)
    assert trailing_rows(x, (2, 3)) == (6, 20)
    assert trailing_rows(x, (3, 2)) == (6, 20)
    assert trailing_rows(x, (0, 1, 2, 3)) == (1, 120)
    assert trailing_rows(x, (1, 3)) is None
    assert trailing_rows(x.transpose(0, 1, 3, 2), (2, 3)) is None
    assert trailing_rows(x.astype(np.float64), (3,)) is None
    assert trailing_rows(np.zeros((3, 0), np.float32), (1,)) is None


def test_bad_arguments_raise():
    k = _C.reduce_rows
    x = np.zeros((4, 5), np.float32)
    with pytest.raises(TypeError, match="x"):
        k.sum_rows(x.astype(np.float64), np.zeros(4, np.float32), True)
    with pytest.raises(ValueError, match="out must have x's 4 rows"):
        k.sum_rows(x, np.zeros(3, np.float32), True)
    with pytest.raises(ValueError, match="x"):
        k.sum_rows(x[:, ::2], np.zeros(4, np.float32), True)
    with pytest.raises(ValueError, match="at least one element"):
        k.sum_rows(np.zeros((4, 0), np.float32), np.zeros(4, np.float32), True)
    with pytest.raises(ValueError, match="out"):
        k.sum_rows(x, x[:, 0], False)
    with pytest.raises(ValueError, match="divisor"):
        k.fill_rows(np.zeros(4, np.float32), np.zeros((4, 5), np.float32), 0.0)
    with pytest.raises(ValueError, match="out must have g's 4 rows"):
        k.fill_rows(np.zeros(4, np.float32), np.zeros((5, 5), np.float32), 1.0)
    with pytest.raises(ValueError, match="overlap|alias|share"):
        buf = np.zeros(24, np.float32)
        k.fill_rows(buf[:4], buf[:20].reshape(4, 5), 1.0)
    with pytest.raises(ValueError, match="sum_rows: x must be a 2-D"):
        sum_rows(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="length"):
        fill_rows(np.zeros(3, np.float32), -1)
