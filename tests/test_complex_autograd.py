"""Gradients through complex tensors against torch 2.13 (torch.autograd.grad): torch's convention, for a real loss L
of z = x + iy, z.grad = dL/dx + i dL/dy; the real -> complex and complex -> real boundaries (abs, real, imag, angle,
view_as_real, complex, polar) and real tensors used in complex ops (their gradient is real)."""
import numpy as np
import pytest
import torch

import forgegrad as fg

RNG = np.random.default_rng(11)


def _c(shape, dt=np.complex128):
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(dt)


def _loss(m, y):
    """A real loss that weighs the real and imaginary parts of y differently (so every direction is checked)."""
    if y.is_complex():
        w = m.tensor(np.linspace(-1.0, 2.0, y.numel()).reshape(tuple(y.shape)).astype(
            np.float64 if y.dtype in (m.complex128, m.float64) else np.float32))
        return (y.abs() ** 2).sum() + (m.view_as_real(y)[..., 0] * w).sum() - (y.imag * w * w).sum()
    w = m.tensor(np.linspace(-1.0, 2.0, y.numel()).reshape(tuple(y.shape)).astype(
        np.float64 if y.dtype == m.float64 else np.float32))
    return (y * y).sum() + (y * w).sum()


def _check(f, arrays, rtol=1e-7, atol=1e-9):
    """f(module, *tensors) in forgegrad and torch: values, then the gradients of _loss with respect to each input."""
    fx = [fg.tensor(a.copy(), requires_grad=True) for a in arrays]
    tx = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    fy, ty = f(fg, *fx), f(torch, *tx)
    np.testing.assert_allclose(fy.detach().numpy(), ty.detach().resolve_conj().resolve_neg().numpy(), rtol=rtol,
                               atol=atol)
    fg_grads = fg.autograd.grad(_loss(fg, fy), fx, allow_unused=True)
    t_grads = torch.autograd.grad(_loss(torch, ty), tx, allow_unused=True)
    for a, g, tg in zip(arrays, fg_grads, t_grads):
        assert (g is None) == (tg is None)
        if g is None:
            continue
        assert g.dtype.name == str(tg.dtype).split(".")[-1], (g.dtype, tg.dtype)
        assert tuple(g.shape) == a.shape
        np.testing.assert_allclose(g.numpy(), tg.resolve_conj().numpy(), rtol=rtol, atol=atol)


UNARY = ["neg", "exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh", "asin", "acos", "atan", "asinh",
         "acosh", "atanh", "reciprocal", "rsqrt", "square", "sigmoid", "log2", "log10", "log1p", "expm1", "abs",
         "angle",
         "sgn", "conj", "conj_physical", "exp2", "real", "imag"]


@pytest.mark.parametrize("name", UNARY)
def test_unary_gradients(name):
    def f(m, z):
        return getattr(m, name)(z) * 1  # (* 1: a node of its own for real / imag / conj)
    _check(f, [_c((3, 5, 7))])


@pytest.mark.parametrize("name", ["exp", "abs", "sgn", "tanh", "angle", "sqrt"])
def test_unary_gradients_complex64(name):
    _check(lambda m, z: getattr(m, name)(z), [_c((2, 7), np.complex64)], rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("expr", [
    lambda m, x, y: x + y, lambda m, x, y: x - y, lambda m, x, y: x * y, lambda m, x, y: x / y,
    lambda m, x, y: x ** y, lambda m, x, y: x ** 3, lambda m, x, y: x ** 0.5, lambda m, x, y: 2 ** x,
    lambda m, x, y: x ** (0.5 - 1j), lambda m, x, y: m.sub(x, y, alpha=2), lambda m, x, y: 3j / x,
    lambda m, x, y: x @ y.mT, lambda m, x, y: m.bmm(x, y.transpose(1, 2)), lambda m, x, y: x[0, 0] @ y[0].mT,
    lambda m, x, y: x @ y[0, 0], lambda m, x, y: m.einsum("ijk,ilk->jl", x, y),
    lambda m, x, y: m.vdot(x[0, 0], y[1, 1]),
    lambda m, x, y: (torch.nn.functional if m is torch else fg.nn.functional).linear(x, y[0], y[1, 1, :5]),
    lambda m, x, y: m.where(x.real > 0, x, y), lambda m, x, y: m.cat([x, y], 2)[:, 1:],
    lambda m, x, y: m.stack([x, y]).sum(0), lambda m, x, y: (x * y).sum((0, 2)), lambda m, x, y: (x / y).mean(),
    lambda m, x, y: x[:, :3].prod(1), lambda m, x, y: x[0, 0].prod(), lambda m, x, y: x.cumsum(1),
    lambda m, x, y: x.var(1), lambda m, x, y: x.std(), lambda m, x, y: x.norm(), lambda m, x, y: x.norm(3, dim=2),
    lambda m, x, y: m.flip(x, (0, 2)) * m.roll(y, 1, 1), lambda m, x, y: x.permute(2, 0, 1).reshape(7, -1),
    lambda m, x, y: x[m.tensor([2, 0]), 1:4], lambda m, x, y: x.expand(2, 3, 5, 7) * y,
    lambda m, x, y: (torch.nn.functional if m is torch else fg.nn.functional).pad(x, (2, 1)),
    lambda m, x, y: m.gather(x, 1, m.tensor(np.array([[[0] * 7, [4] * 7]] * 3))), lambda m, x, y: m.diag(x[0, 0]),
    lambda m, x, y: x.masked_fill(y.real > 0, 2j), lambda m, x, y: m.diff(x, dim=2),
    lambda m, x, y: m.view_as_complex(m.view_as_real(x) * m.view_as_real(y)),
    lambda m, x, y: m.view_as_real(x.transpose(0, 2)), lambda m, x, y: x.to(m.complex64).to(m.complex128),
])
def test_binary_and_structural_gradients(expr):
    _check(expr, [_c((3, 5, 7)), _c((3, 5, 7))])


def test_zero_inputs_get_torch_gradients():
    z = np.array([0j, 1 + 1j, 0j, -2j])
    for name in ("abs", "sgn", "angle"):
        _check(lambda m, x: getattr(m, name)(x), [z])
    _check(lambda m, x: x.prod(), [z])
    _check(lambda m, x: x.norm(), [np.zeros(3, np.complex128)])


# ---- the real <-> complex boundaries ----------------------------------------------------------------------------
@pytest.mark.parametrize("expr", [
    lambda m, a, b: m.complex(a, b), lambda m, a, b: m.polar(a.abs() + 0.1, b), lambda m, a, b: a * 1j + b,
    lambda m, a, b: a.to(m.complex128) * b, lambda m, a, b: m.complex(a, b).abs(),
    lambda m, a, b: m.complex(a, b).angle(),
    lambda m, a, b: m.view_as_complex(m.stack([a, b], -1)), lambda m, a, b: m.complex(a, b[0]).exp().real,
    lambda m, a, b: (a.cdouble() @ m.complex(b, a).mT), lambda m, a, b: a * m.complex(b, b),
    lambda m, a, b: m.complex(a, b) / a,
])
def test_real_inputs_through_complex_ops_get_real_gradients(expr):
    _check(expr, [RNG.standard_normal((4, 5)), RNG.standard_normal((4, 5))])


def test_float32_with_complex64_gives_float32_gradient():
    a, z = RNG.standard_normal(6).astype(np.float32), _c(6, np.complex64)
    _check(lambda m, x, w: x * w + x.exp() * 1j, [a, z], rtol=2e-5, atol=1e-5)


def test_backward_of_a_complex_leaf_accumulates_in_grad():
    z = fg.tensor(_c(4), requires_grad=True)
    tz = torch.tensor(z.numpy().copy(), requires_grad=True)
    for m, x in ((fg, z), (torch, tz)):
        (x.abs() ** 2).sum().backward()
        (m.view_as_real(x * x)).sum().backward()
    assert z.grad.dtype == fg.complex128
    np.testing.assert_allclose(z.grad.numpy(), tz.grad.numpy(), rtol=1e-12)


def test_backward_of_a_complex_output_needs_a_gradient_of_its_dtype():
    z = fg.tensor(_c(3), requires_grad=True)
    y = z * 2j
    y.backward(fg.tensor(np.array([1, 1j, -1], np.complex128)))
    tz = torch.tensor(z.detach().numpy().copy(), requires_grad=True)
    (tz * 2j).backward(torch.tensor([1, 1j, -1], dtype=torch.complex128))
    np.testing.assert_allclose(z.grad.numpy(), tz.grad.numpy())


def test_integer_tensor_cannot_require_grad_but_complex_can():
    assert fg.zeros(2, dtype=fg.complex64, requires_grad=True).requires_grad
    with pytest.raises(RuntimeError, match="floating point and complex"):
        fg.zeros(2, dtype=fg.int64).requires_grad_()


# ---- linalg.eig / eigvals -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: RNG.standard_normal((4, 4)), lambda: RNG.standard_normal((2, 3, 3)),
                                  lambda: _c((3, 3)), lambda: RNG.standard_normal((5, 5)).astype(np.float32)])
def test_eig_values_and_gradients(make):
    a = make()
    single = a.dtype == np.float32
    tol = dict(rtol=1e-3, atol=1e-4) if single else dict(rtol=1e-9, atol=1e-10)
    x, tx = fg.tensor(a.copy(), requires_grad=True), torch.tensor(a.copy(), requires_grad=True)
    (w, v), (tw, tv) = fg.linalg.eig(x), torch.linalg.eig(tx)
    assert w.dtype.name == str(tw.dtype).split(".")[-1] and v.dtype == w.dtype
    np.testing.assert_allclose(w.detach().numpy(), tw.detach().numpy(), **tol)  # (the same LAPACK geev order)
    np.testing.assert_allclose(np.abs(v.detach().numpy()), np.abs(tv.detach().numpy()), **tol)
    # losses that do not depend on the eigenvectors' phases (torch refuses the others)
    loss = [(m.view_as_real(L) ** 2).sum() + (V.abs() ** 3).sum() + m.linalg.eigvals(X).imag.sum()
            for m, (L, V), X in ((fg, (w, v), x), (torch, (tw, tv), tx))]
    (g,), (tg,) = fg.autograd.grad(loss[0], [x]), torch.autograd.grad(loss[1], [tx])
    assert g.dtype == x.dtype
    np.testing.assert_allclose(g.numpy(), tg.numpy(), **tol)


def test_eig_refuses_a_phase_dependent_loss_and_bad_input():
    x = fg.tensor(RNG.standard_normal((3, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match="specified up to multiplication by e\\^{i phi}"):
        fg.autograd.grad(fg.view_as_real(fg.linalg.eig(x)[1]).sum(), [x])
    with pytest.raises(RuntimeError, match="square matrices"):
        fg.linalg.eig(fg.ones(2, 3))
    with pytest.raises(RuntimeError, match="floating point or complex"):
        fg.linalg.eigvals(fg.ones(2, 2, dtype=fg.int64))
