"""Regression tests from reviewing the math ops (ops/pointwise_more.py, reduce_more.py, contract.py,
_torch_math.py, _torch_random.py) against torch 2.13: gradients at zeros and ties, bool and 0-d inputs, single-row
cov/corrcoef, empty medians, and multinomial without replacement."""
import numpy as np
import pytest
import torch

import forgegrad as fg


def _grads(fn, *values):
    ts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    fs = [fg.tensor(np.asarray(v, np.float64), requires_grad=True) for v in values]
    fn(torch, *ts).sum().backward()
    fn(fg, *fs).sum().backward()
    for t, f in zip(ts, fs):
        np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=1e-6, atol=1e-9)


def test_atan2_gradient_at_origin_is_zero_as_torch():
    _grads(lambda m, y, x: m.atan2(y, x), [0.0, 1.0, -2.0], [0.0, -1.0, 2.0])


def test_xlogy_gradient_at_zero_input_and_nonpositive_other():
    _grads(lambda m, x, y: m.xlogy(x, y), [0.0, 0.0, 0.0, 1.0], [0.0, -1.0, 0.5, 2.0])


@pytest.mark.parametrize("name", ["sign", "sgn"])
def test_sign_of_bool(name):
    x = np.array([True, False, True])
    got = getattr(fg, name)(fg.tensor(x))
    want = getattr(torch, name)(torch.tensor(x))
    assert got.dtype == fg.bool
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("name", ["sum", "mean", "amax", "amin", "logsumexp", "prod", "nansum", "nanmean",
                                  "count_nonzero"])
@pytest.mark.parametrize("dim", [0, -1])
def test_reductions_take_dim_0_of_a_0d_tensor(name, dim):
    t = torch.tensor(2.5, requires_grad=name != "count_nonzero")
    f = fg.tensor(2.5, requires_grad=name != "count_nonzero")
    want, got = getattr(torch, name)(t, dim), getattr(fg, name)(f, dim)
    assert got.shape == want.shape == ()
    np.testing.assert_allclose(got.numpy(), want.detach().numpy())
    if name != "count_nonzero":
        want.backward()
        got.backward()
        np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy())
    with pytest.raises(IndexError, match="dim"):
        getattr(fg, name)(f, 1)


@pytest.mark.parametrize("name", ["cov", "corrcoef"])
@pytest.mark.parametrize("shape", [(1, 5), (5,), (3, 5), (0, 4)])
def test_cov_and_corrcoef_of_one_variable_are_0d(name, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = getattr(torch, name)(torch.tensor(x))
    got = getattr(fg, name)(fg.tensor(x))
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["median", "nanmedian"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_of_an_empty_float_tensor_is_nan(name, dtype):
    t = torch.zeros((0, 3), dtype=getattr(torch, np.dtype(dtype).name), requires_grad=True)
    f = fg.tensor(np.zeros((0, 3), dtype), requires_grad=True)
    want, got = getattr(torch, name)(t), getattr(fg, name)(f)
    assert got.shape == () and np.isnan(got.item()) and np.isnan(want.item())
    want.backward()
    got.backward()
    assert f.grad.shape == tuple(t.grad.shape) == (0, 3)


def test_median_of_an_empty_int_tensor_raises():
    with pytest.raises(ValueError, match="empty"):
        fg.median(fg.tensor(np.zeros((0,), np.int64)))


def test_std_mean_gradient_of_constant_values_is_zero():
    x = [[1.0, 1.0, 1.0], [1.0, 2.0, 4.0]]
    _grads(lambda m, a: m.std_mean(a, 1)[0] + m.std_mean(a, 1, keepdim=True)[1].reshape(-1), x)
    _grads(lambda m, a: m.std_mean(a, correction=0)[0], [[3.0, 3.0]])
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    f = fg.tensor(np.asarray(x), requires_grad=True)
    (gt,) = torch.autograd.grad(torch.std_mean(t, 1)[0].sum(), t, create_graph=True)
    (gf,) = fg.autograd.grad(fg.std_mean(f, 1)[0].sum(), f, create_graph=True)
    want = torch.autograd.grad((gt * gt).sum(), t)[0]
    got = fg.autograd.grad((gf * gf).sum(), f)[0]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("p", [0.5, 1.5, 3.0])
def test_cdist_gradient_where_a_coordinate_difference_is_zero(p):
    x1, x2 = [[0.0, 0.0], [1.0, 1.0]], [[0.0, 3.0], [2.0, 1.0]]  # equal coordinates, distances > 0
    _grads(lambda m, a, b: m.cdist(a, b, p), x1, x2)
    ts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x1, x2)]
    fs = [fg.tensor(np.asarray(v), requires_grad=True) for v in (x1, x2)]
    (gf,) = fg.autograd.grad(fg.cdist(*fs, p).sum(), fs[0], create_graph=True)
    (gt,) = torch.autograd.grad(torch.cdist(*ts, p).sum(), ts[0])
    assert np.isfinite(gf.numpy()).all()
    np.testing.assert_allclose(gf.detach().numpy(), gt.numpy(), rtol=1e-6, atol=1e-9)
    (g2,) = fg.autograd.grad((gf * gf).sum(), fs[1])
    assert np.isfinite(g2.numpy()).all()


def test_multinomial_without_replacement_fills_up_with_zero_weight_categories():
    w = np.array([[0.0, 1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 5.0, 0.0, 0.0]], np.float32)
    want = torch.multinomial(torch.tensor(w), 4)
    for _ in range(5):
        got = fg.multinomial(fg.tensor(w), 4).numpy()
        assert got.shape == tuple(want.shape) and got.dtype == np.int64
        for row, wrow, trow in zip(got, w, want.numpy()):
            k = np.count_nonzero(wrow)
            assert len(set(row)) == 4  # no category twice
            assert set(row[:k]) == set(trow[:k]) == set(np.flatnonzero(wrow))  # the weighted ones first
            assert set(row[k:]) <= set(np.flatnonzero(wrow == 0))


def test_multinomial_bad_arguments():
    w = fg.tensor([0.5, 0.5])
    with pytest.raises(RuntimeError):
        torch.multinomial(torch.tensor([0.5, 0.5]), 0)
    with pytest.raises(RuntimeError, match="num_samples"):
        fg.multinomial(w, 0)
    with pytest.raises(TypeError, match="num_samples"):
        fg.multinomial(w, 1.5)
    with pytest.raises(RuntimeError):
        torch.multinomial(torch.tensor([1, 2]), 1)
    with pytest.raises(TypeError, match="floating-point"):
        fg.multinomial(fg.tensor(np.array([1, 2])), 1)
    with pytest.raises(RuntimeError, match="without replacement"):
        fg.multinomial(w, 3)


def test_integer_tensor_to_negative_integer_tensor_powers():
    a = np.array([2, -1, 1, 0, 3, -1, -2, 1], np.int64)
    b = np.array([-1, -1, -2, -1, 0, -2, -3, 5], np.int64)
    want = torch.tensor(a) ** torch.tensor(b)
    got = fg.tensor(a) ** fg.tensor(b)
    assert got.dtype == fg.int64
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    np.testing.assert_array_equal(fg.pow(fg.tensor(a[:, None]), fg.tensor(b[:3])).numpy(),
                                  torch.pow(torch.tensor(a[:, None]), torch.tensor(b[:3])).numpy())
    with pytest.raises(ValueError, match="negative integer powers"):
        fg.tensor(a) ** -1  # a Python int exponent: torch refuses too


@pytest.mark.parametrize("name", ["remainder", "fmod", "floor_divide"])
def test_integer_division_by_zero_raises_as_torch(name):
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        getattr(torch, name)(torch.tensor([3, -3]), 0)
    with pytest.raises(ZeroDivisionError, match=name):
        getattr(fg, name)(fg.tensor(np.array([3, -3])), 0)
    with pytest.raises(ZeroDivisionError, match=name):
        getattr(fg, name)(fg.tensor(np.array([3, -3])), fg.tensor(np.array([1, 0])))
    got = getattr(fg, name)(fg.tensor([3.0, -3.0]), 0.0).numpy()  # floats: inf / NaN as torch
    np.testing.assert_array_equal(got, getattr(torch, name)(torch.tensor([3.0, -3.0]), 0.0).numpy())


@pytest.mark.parametrize("name", ["remainder", "fmod", "floor_divide", "copysign"])
@pytest.mark.parametrize("other", [3, -2, 2.5])
def test_python_number_promotion_keeps_the_integer_width(name, other):
    for src in ([5, -7, 0, 8], [True, False, True, True]):
        t = torch.tensor(src)
        t = t.to(torch.int32) if t.dtype == torch.int64 else t
        f = fg.tensor(np.array(src))
        f = f.to(fg.int32) if f.dtype == fg.int64 else f
        want, got = getattr(torch, name)(t, other), getattr(fg, name)(f, other)
        assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
        np.testing.assert_allclose(got.numpy(), want.numpy())


def test_isclose_of_bools():
    a, b = np.array([True, False, True]), np.array([True, True, True])
    np.testing.assert_array_equal(fg.isclose(fg.tensor(a), fg.tensor(b)).numpy(),
                                  torch.isclose(torch.tensor(a), torch.tensor(b)).numpy())


_OPERATORS = [lambda a, b: a // b, lambda a, b: a % b, lambda a, b: a // -2, lambda a, b: a % -3,
              lambda a, b: 7 // b, lambda a, b: 7 % b, lambda a, b: a.float() // 0.7, lambda a, b: 5.5 % b.float()]


@pytest.mark.parametrize("i", range(len(_OPERATORS)))
def test_floordiv_and_mod_operators(i):
    a, b = np.array([-7, -3, 0, 3, 7]), np.array([2, -2, 3, -3, 2])
    want = _OPERATORS[i](torch.tensor(a), torch.tensor(b))
    got = _OPERATORS[i](fg.tensor(a), fg.tensor(b))
    assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_inplace_floordiv_and_mod_operators():
    x = fg.tensor(np.array([-7, 7]))
    x //= 2
    x %= 3
    np.testing.assert_array_equal(x.numpy(), [2, 0])
    leaf = fg.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        leaf %= 2


@pytest.mark.parametrize("mode", ["trunc", "floor", None])
@pytest.mark.parametrize("a,b", [([-7, 7, -2 ** 62 - 1, 6, -6, 0], 2), ([-7, 7, 5, -5], [-2, -2, 5, -3]),
                                 ([-7.5, 7.0, -0.5], 2.0), ([True, False], 1)])
def test_div_rounding_mode(a, b, mode):
    a = np.array(a)
    tb = torch.tensor(np.array(b)) if isinstance(b, list) else b
    fb = fg.tensor(np.array(b)) if isinstance(b, list) else b
    want = torch.div(torch.tensor(a), tb, rounding_mode=mode)
    got = fg.div(fg.tensor(a), fb, rounding_mode=mode)
    assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_div_bad_rounding_mode():
    with pytest.raises(ValueError, match="rounding_mode"):
        fg.ones(2).div(2, rounding_mode="round")


@pytest.mark.parametrize("correction", ["a", 1.5, True])
def test_cov_correction_must_be_an_int(correction):
    with pytest.raises(TypeError, match="correction"):
        torch.cov(torch.ones(2, 3), correction=correction)
    with pytest.raises(TypeError, match="correction"):
        fg.cov(fg.ones(2, 3), correction=correction)


def test_multinomial_replacement_must_be_a_bool():
    with pytest.raises(TypeError, match="replacement"):
        fg.multinomial(fg.ones(2), 1, replacement="a")


@pytest.mark.parametrize("name", ["var_mean", "std_mean"])
@pytest.mark.parametrize("args,kwargs", [((1, False), {}), ((1, True, True), {}), ((0,), {"keepdim": True}),
                                         ((False,), {}), ((), {"correction": 0}), (((0, 1),), {"correction": 2})])
def test_var_mean_and_std_mean_argument_forms(name, args, kwargs):
    x = np.arange(12.0).reshape(3, 4) ** 1.5
    want = getattr(torch, name)(torch.tensor(x), *args, **kwargs)
    got = getattr(fg, name)(fg.tensor(x), *args, **kwargs)
    for w, g in zip(want, got):
        assert g.shape == tuple(w.shape)
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-10)


def test_randint_like_takes_requires_grad():
    r = fg.randint_like(fg.ones(2, 3), 2, 5, requires_grad=True)
    assert r.requires_grad and r.dtype == fg.float32 and r.shape == (2, 3)
    assert r.numpy().min() >= 2 and r.numpy().max() < 5
    with pytest.raises(RuntimeError, match="floating point"):
        fg.randint_like(fg.ones(3, dtype=fg.int64), 5, requires_grad=True)


@pytest.mark.parametrize("mode", ["use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist"])
def test_cdist_gemm_form_of_equal_points_is_zero_with_zero_gradient(mode):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((30, 4)) * 100).astype(np.float32)
    b = np.concatenate([a[:5], rng.standard_normal((27, 4)).astype(np.float32)])
    ta, fa = torch.tensor(a, requires_grad=True), fg.tensor(a, requires_grad=True)
    want, got = torch.cdist(ta, torch.tensor(b), compute_mode=mode), fg.cdist(fa, fg.tensor(b), compute_mode=mode)
    assert got.numpy()[0, 0] == want.detach().numpy()[0, 0] == 0.0
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-3)
    want.sum().backward()
    got.sum().backward()
    np.testing.assert_allclose(fa.grad.numpy(), ta.grad.numpy(), rtol=1e-3, atol=1e-3)
