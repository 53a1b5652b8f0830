"""forgegrad.fft against torch.fft (torch 2.13 CPU): values, dtypes and gradients of every transform on odd shapes,
n / s padding and truncation, the three norm modes, both precisions; the frequency helpers and shifts; bad input."""
import numpy as np
import pytest
import torch

import forgegrad as fg

RNG = np.random.default_rng(5)
NORMS = [None, "backward", "ortho", "forward"]


def _c(shape, dt=np.complex128):
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(dt)


def _r(shape, dt=np.float64):
    return RNG.standard_normal(shape).astype(dt)


def _loss(m, y):
    w = np.linspace(-1.0, 2.0, y.numel()).reshape(tuple(y.shape))
    if y.is_complex():
        w = m.tensor(w.astype(np.float64 if y.dtype == m.complex128 else np.float32))
        return (y.abs() ** 2).sum() + (m.view_as_real(y.resolve_conj())[..., 0] * w).sum() + (y.imag * w * w).sum()
    w = m.tensor(w.astype(np.float64 if y.dtype == m.float64 else np.float32))
    return (y * y).sum() + (y * w).sum()


def _check(fn, a, kwargs, grad=True):
    single = a.dtype in (np.float32, np.complex64)
    rtol, atol = (2e-4, 2e-4) if single else (1e-9, 1e-9)
    x = fg.tensor(a.copy(), requires_grad=grad)
    tx = torch.tensor(a.copy(), requires_grad=grad)
    y, ty = getattr(fg.fft, fn)(x, **kwargs), getattr(torch.fft, fn)(tx, **kwargs)
    assert y.dtype.name == str(ty.dtype).split(".")[-1], (y.dtype, ty.dtype)
    assert tuple(y.shape) == tuple(ty.shape)
    scale = max(1.0, float(np.abs(ty.detach().resolve_conj().numpy()).max()))
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().resolve_conj().numpy(), rtol=rtol, atol=atol * scale)
    if grad:
        (g,), (tg,) = fg.autograd.grad(_loss(fg, y), [x]), torch.autograd.grad(_loss(torch, ty), [tx])
        assert g.dtype == x.dtype
        gscale = max(1.0, float(np.abs(tg.resolve_conj().numpy()).max()))
        np.testing.assert_allclose(g.numpy(), tg.resolve_conj().numpy(), rtol=rtol, atol=atol * gscale)


ONE_D = [dict(), dict(n=4), dict(n=9, dim=1), dict(n=11, dim=-1), dict(dim=0, n=1)]


@pytest.mark.parametrize("fn", ["fft", "ifft"])
@pytest.mark.parametrize("kw", ONE_D)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("make", [_c, _r, lambda s: _c(s, np.complex64), lambda s: _r(s, np.float32)],
                         ids=["c128", "f64", "c64", "f32"])
def test_c2c(fn, kw, norm, make):
    _check(fn, make((3, 5, 7)), dict(kw, norm=norm))


@pytest.mark.parametrize("fn", ["rfft", "ihfft"])
@pytest.mark.parametrize("kw", ONE_D)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_r2c(fn, kw, norm, dt):
    _check(fn, _r((3, 5, 7), dt), dict(kw, norm=norm))


# c2r: n even and odd, longer and shorter than 2 (m - 1), the default
@pytest.mark.parametrize("fn", ["irfft", "hfft"])
@pytest.mark.parametrize("kw", [dict(), dict(n=4), dict(n=5), dict(n=13), dict(n=12), dict(n=9, dim=1),
                                dict(n=2, dim=0), dict(n=1)])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dt", [np.complex128, np.complex64])
def test_c2r(fn, kw, norm, dt):
    _check(fn, _c((3, 5, 7), dt), dict(kw, norm=norm))


def test_c2r_of_a_real_input():
    _check("irfft", _r((4, 6)), dict(n=9))
    _check("hfft", _r((4, 6), np.float32), {})


ND = [dict(), dict(s=(4, 9)), dict(s=(3, 6), dim=(0, 2)), dict(dim=(2, 0)), dict(s=(2, 5, 8))]


@pytest.mark.parametrize("fn", ["fftn", "ifftn", "irfftn", "hfftn"])
@pytest.mark.parametrize("kw", ND)
@pytest.mark.parametrize("norm", NORMS)
def test_nd_complex_input(fn, kw, norm):
    _check(fn, _c((3, 5, 7)), dict(kw, norm=norm))


@pytest.mark.parametrize("fn", ["rfftn", "ihfftn", "fftn"])
@pytest.mark.parametrize("kw", ND)
@pytest.mark.parametrize("norm", NORMS)
def test_nd_real_input(fn, kw, norm):
    _check(fn, _r((3, 5, 7)), dict(kw, norm=norm))


@pytest.mark.parametrize("fn", ["fft2", "ifft2", "irfft2", "hfft2", "rfft2", "ihfft2"])
@pytest.mark.parametrize("kw", [dict(), dict(s=(4, 9)), dict(dim=(0, 2)), dict(s=(2, 3), dim=(1, 0), norm="ortho")])
@pytest.mark.parametrize("dt", ["double", "single"])
def test_2d(fn, kw, dt):
    real_in = fn in ("rfft2", "ihfft2")
    a = _r((3, 5, 7)) if real_in else _c((3, 5, 7))
    _check(fn, a.astype(np.float32 if real_in else np.complex64) if dt == "single" else a, kw)


def test_length_one_and_zero_d_batches():
    _check("fft", _c(1), {})
    _check("rfft", _r(1), {})
    _check("irfft", _c(2), {})
    _check("fftn", _c((1, 1)), {})
    y = fg.fft.irfft(fg.tensor(_c((0, 3))))  # (torch's MKL refuses an empty batch)
    assert tuple(y.shape) == (0, 4) and y.dtype == fg.float64


def test_integer_input_gives_complex64():
    x = fg.arange(6)
    y = fg.fft.fft(x)
    assert y.dtype == fg.complex64
    np.testing.assert_allclose(y.numpy(), torch.fft.fft(torch.arange(6)).numpy(), atol=1e-5)
    assert fg.fft.rfft(x).dtype == fg.complex64 and fg.fft.irfft(x).dtype == fg.float32


def test_single_precision_results_are_single_precision():
    # numpy >= 2 runs pocketfft in complex64 for complex64 input, as torch computes float32 FFTs: no float64 pass
    a = _c(1024, np.complex64)
    y = fg.fft.fft(fg.tensor(a)).numpy()
    assert y.dtype == np.complex64
    np.testing.assert_allclose(y, torch.fft.fft(torch.tensor(a)).numpy(), rtol=1e-4, atol=2e-4)


def test_round_trips():
    a = _r((4, 10))
    x = fg.tensor(a)
    for norm in ("backward", "ortho", "forward"):
        np.testing.assert_allclose(fg.fft.irfft(fg.fft.rfft(x, norm=norm), n=10, norm=norm).numpy(), a, atol=1e-12)
        np.testing.assert_allclose(fg.fft.ifftn(fg.fft.fftn(x, norm=norm), norm=norm).real.numpy(), a, atol=1e-12)
        np.testing.assert_allclose(fg.fft.hfft(fg.fft.ihfft(x, norm=norm), n=10, norm=norm).numpy(), a, atol=1e-12)


# ---- helpers ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 8])
@pytest.mark.parametrize("d", [1.0, 0.25])
def test_fftfreq_rfftfreq(n, d):
    for fn in ("fftfreq", "rfftfreq"):
        f, t = getattr(fg.fft, fn)(n, d), getattr(torch.fft, fn)(n, d)
        assert f.dtype == fg.float32
        np.testing.assert_allclose(f.numpy(), t.numpy(), rtol=1e-6)
    assert fg.fft.fftfreq(n, dtype=fg.float64).dtype == fg.float64


@pytest.mark.parametrize("fn", ["fftshift", "ifftshift"])
@pytest.mark.parametrize("dim", [None, 0, (0, 2), -1])
def test_shifts(fn, dim):
    _check(fn, _c((3, 4, 7)), dict(dim=dim))
    _check(fn, _r((3, 4, 7)), dict(dim=dim))


# ---- bad input -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call,exc,match", [
    (lambda: fg.fft.fft(fg.ones(3), norm="bad"), RuntimeError, "Invalid normalization mode"),
    (lambda: fg.fft.fft(fg.ones(3), n=0), RuntimeError, r"Invalid number of data points \(0\)"),
    (lambda: fg.fft.fft(fg.ones(3), n=-2), RuntimeError, r"Invalid number of data points \(-2\)"),
    (lambda: fg.fft.fft(fg.ones(3), dim=2), IndexError, "Dimension out of range"),
    (lambda: fg.fft.fftn(fg.ones(3, 3), dim=(0, -3)), IndexError, "Dimension out of range"),
    (lambda: fg.fft.rfft(fg.ones(3, dtype=fg.complex64)), RuntimeError, "rfft expects a real input tensor"),
    (lambda: fg.fft.ihfft2(fg.ones(3, 3, dtype=fg.complex64)), RuntimeError, "ihfftn expects a real input tensor"),
    (lambda: fg.fft.fftn(fg.ones(3, 3), s=(2.5,)), TypeError, "'s' must be an int"),
    (lambda: fg.fft.fft(fg.ones(3), n=2.0), TypeError, "'n' must be an int"),
    (lambda: fg.fft.irfft(fg.ones(1, dtype=fg.complex64)), RuntimeError, r"Invalid number of data points \(0\)"),
    (lambda: fg.fft.fftn(fg.ones(3, 3), dim=(0, 0)), RuntimeError, "FFT dims must be unique"),
    (lambda: fg.fft.fftn(fg.ones(3, 3), s=(2, 2, 2), dim=(0, 1)), RuntimeError, "same length"),
    (lambda: fg.fft.fftn(fg.ones(3), s=(2, 2)), RuntimeError, "input tensor only has 1 dimensions"),
    (lambda: fg.fft.fft(fg.ones(3, dtype=fg.float16)), RuntimeError, "Half"),
    (lambda: fg.fft.fft(np.ones(3)), TypeError, "'input' must be a Tensor"),
    (lambda: fg.fft.fft(fg.ones(3), out=fg.ones(3)), TypeError, "out= is not supported"),
    (lambda: fg.fft.fftfreq(0), RuntimeError, "n must be positive"),
    (lambda: fg.fft.fftfreq(4, dtype=fg.int64), RuntimeError, "floating or complex dtype"),
    (lambda: fg.fft.fftshift(fg.ones(3), dim=1), IndexError, "Dimension out of range"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_torch_raises_the_same_kinds():
    # (the forgegrad errors above follow these)
    with pytest.raises(RuntimeError, match="Invalid normalization mode"):
        torch.fft.fft(torch.ones(3), norm="bad")
    with pytest.raises(IndexError):
        torch.fft.fft(torch.ones(3), dim=2)
    with pytest.raises(RuntimeError, match="rfft expects a real input tensor"):
        torch.fft.rfft(torch.ones(3, dtype=torch.complex64))


def test_namespace():
    assert fg.fft is not None and set(fg.fft.__all__) <= set(dir(torch.fft))
    assert {n for n in dir(torch.fft) if not n.startswith("_") and callable(getattr(torch.fft, n))} - set(
        fg.fft.__all__) <= {"Tensor"}
