"""The C++ kernels behind rot90's backward (tiled transpose copy), diff (one-pass forward and backward), Tensor.unfold's
backward (overlap-add) and gcd (binary GCD): against torch, bit for bit against the numpy forms they replace, on
every SIMD path and thread count, and their argument checks."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels.int_math import gcd
from forgegrad.kernels.shape_copy import as_contiguous, diff_backward, diff_forward, unfold_backward



def _bits(x):
    return np.ascontiguousarray(x).view(np.uint8)


def _same(x, y):
    return x.shape == y.shape and x.dtype == y.dtype and np.array_equal(_bits(x), _bits(y))


def _edgy(shape, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[::3], flat[1::5], flat[2::11], flat[4::13] = 0.0, -0.0, np.nan, np.inf
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.complex64])
def test_transpose_copy_matches_numpy(simd_path, dtype):
    x = (np.random.default_rng(0).standard_normal((5, 130, 70)) * 100).astype(dtype)
    for k in (1, -1, 2, 3):
        for axes in ((1, 2), (2, 1), (0, 2)):
            v = np.rot90(x, k, axes)
            out = as_contiguous(v)
            assert out.flags.c_contiguous and _same(out, np.ascontiguousarray(v)), (k, axes)
    v = x.transpose(2, 1, 0)[::2, :, ::-1]
    assert _same(as_contiguous(v), np.ascontiguousarray(v))


def test_rot90_backward_matches_torch(simd_path):
    x = np.random.default_rng(1).standard_normal((3, 67, 45)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((3, 45, 67)).astype(np.float32)
    for k in (1, -1, 3):
        a, t = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        (fg.rot90(a, k, (1, 2)) * fg.tensor(w)).sum().backward()
        (torch.rot90(t, k, [1, 2]) * torch.tensor(w)).sum().backward()
        assert np.array_equal(a.grad.numpy(), t.grad.numpy())


def _diff_numpy_backward(g, d):
    before = g.shape[d] + 1
    out = np.zeros(g.shape[:d] + (before,) + g.shape[d + 1:], g.dtype)
    out[(slice(None),) * d + (slice(1, None),)] += g
    out[(slice(None),) * d + (slice(0, before - 1),)] -= g
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,d", [((5, 7), 1), ((5, 7), 0), ((3, 4, 6), 1), ((4, 0, 3), 1), ((4, 1, 3), 1),
                                     ((9,), 0), ((2, 3, 1), 2), ((130, 257), 1)])
def test_diff_kernels_keep_numpy_bits(simd_path, dtype, shape, d):
    g = _edgy(shape, dtype, 3)
    assert _same(diff_backward(g, d), _diff_numpy_backward(g, d))  # -0 and NaN included
    assert _same(diff_backward(np.asfortranarray(g), d), _diff_numpy_backward(g, d))
    if shape[d]:
        n = shape[d]
        hi, lo = g[(slice(None),) * d + (slice(1, None),)], g[(slice(None),) * d + (slice(0, n - 1),)]
        assert _same(diff_forward(g, d), np.ascontiguousarray(hi - lo))


@pytest.mark.parametrize("n,dim", [(1, 1), (2, 0), (3, -1)])
def test_diff_matches_torch(simd_path, n, dim):
    x = np.random.default_rng(4).standard_normal((40, 37)).astype(np.float64)
    w = np.random.default_rng(5).standard_normal(torch.diff(torch.tensor(x), n, dim).shape)
    a, t = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = fg.diff(a, n, dim), torch.diff(t, n, dim)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    (y * fg.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,d,size,step", [((4, 11, 3), 1, 3, 2), ((2, 7), 1, 2, 3), ((9,), 0, 4, 1),
                                               ((64, 300), 1, 64, 16), ((6, 50, 5), 0, 2, 1), ((3, 40), 1, 0, 2)])
def test_unfold_backward_matches_torch(simd_path, dtype, shape, d, size, step):
    x = np.random.default_rng(6).standard_normal(shape).astype(dtype)
    t = torch.tensor(x, requires_grad=True)
    ty = t.unfold(d, size, step)
    g = np.random.default_rng(7).standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.tensor(g))
    assert _same(unfold_backward(g, shape, d, size, step), t.grad.numpy())  # torch's order of additions
    a, tx = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty2 = a.unfold(d, size, step), tx.unfold(d, size, step)
    (y * y).sum().backward()  # x * x on the overlapping window view: one contiguous copy read
    (ty2 * ty2).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_gcd_matches_torch(simd_path, dtype):
    info = np.iinfo(dtype)
    special = np.array([0, 1, -1, 2, -2, 6, -6, 7, info.min, info.max, info.min + 1, -(1 << 20), 1 << 20, 12, -18],
                       dtype)
    a, b = np.repeat(special, len(special)), np.tile(special, len(special))
    rng = np.random.default_rng(8)
    r = rng.integers(info.min, info.max, 5001, dtype=dtype, endpoint=True)
    s = rng.integers(-1000, 1000, 5001).astype(dtype)
    for x, y in ((a, b), (r, s), (s, r), (r, r[::-1].copy()), (r[:1], s), (s, s[:1]), (a.reshape(15, 15), b[:15])):
        want = torch.gcd(torch.from_numpy(x), torch.from_numpy(y)).numpy()
        assert np.array_equal(gcd(x, y), want)
        assert np.array_equal(fg.gcd(fg.from_numpy(x), fg.from_numpy(y)).numpy(), want)
    assert gcd(np.int64(info.min if dtype == np.int64 else 0), np.int64(6)).shape == ()


def test_same_bits_at_any_thread_count():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((64, 4096)).astype(np.float32)
    r = rng.standard_normal((300, 517))
    gx = rng.standard_normal((64, 253, 64)).astype(np.float32)
    a, b = rng.integers(-1 << 62, 1 << 62, 100003), rng.integers(-1000, 1000, 100003)
    before = fg.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            fg.set_num_threads(n)
            results.append([unfold_backward(gx, x.shape, 1, 64, 16), as_contiguous(np.rot90(r, 1)),
                            diff_backward(r, 0), diff_forward(r, 1), gcd(a, b)])
    finally:
        fg.set_num_threads(before)
    for other in results[1:]:
        assert all(_same(p, q) for p, q in zip(results[0], other))


def test_bad_arguments_raise():
    f32 = np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError, match="g must be a float32 or float64"):
        diff_backward(f32.astype(np.float16), 0)
    with pytest.raises(ValueError, match="dim"):
        diff_backward(f32, 2)
    with pytest.raises(ValueError, match="at least one element"):
        diff_forward(np.zeros((3, 0), np.float32), 1)
    with pytest.raises(ValueError, match="g must have shape"):
        unfold_backward(np.zeros((3, 2, 2), np.float32), (3, 4), 1, 2, 1)
    with pytest.raises(ValueError, match="step"):
        unfold_backward(np.zeros((3, 3, 2), np.float32), (3, 4), 1, 2, 0)
    with pytest.raises(TypeError, match="both be int64 or both int32"):
        gcd(np.zeros(3, np.int64), np.zeros(3, np.int32))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        as_contiguous([1, 2])
    # the bindings' own checks (the wrappers never pass these)
    with pytest.raises(ValueError, match="dst must be C-contiguous"):
        dst = np.zeros((1, 4, 3), np.float32).transpose(0, 2, 1)
        _C.shape_copy.transpose_copy(np.zeros((1, 3, 4), np.float32), dst)
    with pytest.raises(TypeError, match="dtype"):
        _C.shape_copy.transpose_copy(np.zeros((1, 3, 4), np.float32), np.zeros((1, 3, 4), np.float64))
    with pytest.raises(TypeError, match="4 or 8 bytes"):
        _C.shape_copy.transpose_copy(np.zeros((1, 3, 4), np.int16), np.zeros((1, 3, 4), np.int16))
    with pytest.raises(ValueError, match="overlap"):
        buf = np.zeros((1, 4, 4), np.float32)
        _C.shape_copy.transpose_copy(buf.transpose(0, 2, 1), buf)
    with pytest.raises(ValueError, match="do not fit"):
        _C.shape_copy.unfold_backward(np.zeros((1, 3, 1, 4), np.float32), 2, np.zeros((1, 7, 1), np.float32))
    with pytest.raises(TypeError, match="dtype of the gradient"):
        _C.shape_copy.diff_backward(np.zeros((1, 3, 1), np.float32), np.zeros((1, 4, 1), np.float64))
    with pytest.raises(ValueError, match="length"):
        _C.int_math.gcd(np.zeros(3, np.int64), np.zeros(2, np.int64), np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="int64 or int32"):
        _C.int_math.gcd(np.zeros(3, np.int16), np.zeros(3, np.int16), np.zeros(3, np.int16))


def test_square_of_window_view_still_sees_in_place_writes():
    """x * x on a scattered view computes on a contiguous copy but keeps the view saved: a write into the input
    before backward still raises, as torch's."""
    x = np.random.default_rng(10).standard_normal((16, 4096)).astype(np.float32)
    for lib in (fg, torch):
        t = lib.tensor(x, requires_grad=True)
        u = t * 1
        z = (lambda y: y * y)(u.unfold(1, 64, 16))
        with lib.no_grad():
            u.mul_(2)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            z.sum().backward()


def test_square_of_window_view_gradient_hooks_and_retain_grad():
    """y * y on an overlapping window view sends y one doubled gradient: y's hook sees the sum, retained .grad and the
    input's gradient are torch's."""
    x = np.random.default_rng(12).standard_normal((8, 1000)).astype(np.float64)
    seen, grads = {}, {}
    for lib in (fg, torch):
        t = lib.tensor(x, requires_grad=True)
        y = (t * 1).unfold(1, 40, 8)
        y.retain_grad()
        y.register_hook(lambda g, name=lib.__name__: seen.__setitem__(name, np.array(g.numpy())))
        z = y * y
        (z * lib.tensor(np.linspace(-1, 1, z.shape[-1]))).sum().backward()
        grads[lib.__name__] = (t.grad.numpy(), y.grad.numpy())
    np.testing.assert_allclose(seen["forgegrad"], seen["torch"], rtol=1e-12, atol=1e-12)
    for ours, ref in zip(grads["forgegrad"], grads["torch"]):
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
