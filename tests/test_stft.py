"""forgegrad.stft / istft against torch 2.13: values and gradients (window, hop, win_length, center, pad_mode,
normalized, onesided, length, complex signals) and torch's errors."""
import numpy as np
import pytest
import torch

import forgegrad as fg

RNG = np.random.default_rng(3)


def _grad_check(f_out, t_out, fx, tx):
    w = np.linspace(-1, 1, t_out.numel()).reshape(tuple(t_out.shape))
    if t_out.is_complex():
        fl, tl = (f_out.abs() ** 2).sum() + fg.view_as_real(f_out)[..., 0].sum(), \
            (t_out.abs() ** 2).sum() + torch.view_as_real(t_out)[..., 0].sum()
    else:
        fl = (f_out * fg.tensor(w.astype(f_out.numpy().dtype))).sum()
        tl = (t_out * torch.tensor(w.astype(t_out.detach().numpy().dtype))).sum()
    (g,), (tg,) = fg.autograd.grad(fl, [fx]), torch.autograd.grad(tl, [tx])
    np.testing.assert_allclose(g.numpy(), tg.numpy(), rtol=1e-6, atol=1e-6 * max(1.0, np.abs(tg.numpy()).max()))


CASES = [
    (dict(n_fft=16), {}, 16),
    (dict(n_fft=16, hop_length=3, win_length=12), {"length": 50}, 12),
    (dict(n_fft=9, hop_length=2, normalized=True), {}, 9),
    (dict(n_fft=8, center=False), {}, None),
    (dict(n_fft=10, pad_mode="constant", onesided=False), {"length": 45}, 10),
    (dict(n_fft=7, hop_length=1, pad_mode="replicate"), {"length": 60}, 7),
]


@pytest.mark.parametrize("kw,ikw,wl", CASES)
@pytest.mark.parametrize("shape", [(2, 50), (50,)])
@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_stft_istft_values_and_gradients(kw, ikw, wl, shape, dt):
    a = RNG.standard_normal(shape).astype(dt)
    fkw, tkw = dict(kw, return_complex=True), dict(kw, return_complex=True)
    if wl:
        w = torch.hann_window(wl, dtype=torch.float64 if dt == np.float64 else torch.float32)
        fkw["window"], tkw["window"] = fg.tensor(w.numpy()), w
    x, tx = fg.tensor(a.copy(), requires_grad=True), torch.tensor(a.copy(), requires_grad=True)
    y, ty = fg.stft(x, **fkw), torch.stft(tx, **tkw)
    assert y.dtype.name == str(ty.dtype).split(".")[-1] and tuple(y.shape) == tuple(ty.shape)
    tol = 1e-9 if dt == np.float64 else 2e-5
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=tol, atol=tol * 10)
    _grad_check(y, ty, x, tx)
    spec = ty.detach().numpy()
    s, ts = fg.tensor(spec.copy(), requires_grad=True), torch.tensor(spec.copy(), requires_grad=True)
    ikw = dict(ikw, **{k: v for k, v in kw.items() if k != "pad_mode"})
    if wl:
        ikw_f, ikw_t = dict(ikw, window=fkw["window"]), dict(ikw, window=tkw["window"])
    else:
        ikw_f = ikw_t = ikw
    r, tr = fg.istft(s, **ikw_f), torch.istft(ts, **ikw_t)
    assert tuple(r.shape) == tuple(tr.shape) and r.dtype.name == str(tr.dtype).split(".")[-1]
    np.testing.assert_allclose(r.detach().numpy(), tr.detach().numpy(), rtol=tol, atol=tol * 10)
    _grad_check(r, tr, s, ts)


def test_complex_signal_two_sided():
    a = RNG.standard_normal((2, 40)) + 1j * RNG.standard_normal((2, 40))
    w = torch.hann_window(8, dtype=torch.float64)
    x, tx = fg.tensor(a.copy(), requires_grad=True), torch.tensor(a.copy(), requires_grad=True)
    y = fg.stft(x, 8, window=fg.tensor(w.numpy()), pad_mode="constant")
    ty = torch.stft(tx, 8, window=w, pad_mode="constant", return_complex=True)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), atol=1e-12)
    _grad_check(y, ty, x, tx)
    r = fg.istft(y.detach(), 8, window=fg.tensor(w.numpy()), return_complex=True)
    np.testing.assert_allclose(r.numpy(), a, atol=1e-12)


def test_return_complex_false_is_view_as_real_with_torch_warning():
    a = RNG.standard_normal(30)
    with pytest.warns(UserWarning, match="return_complex=False is deprecated"):
        y = fg.stft(fg.tensor(a), 8, return_complex=False)
    assert tuple(y.shape) == (5, 16, 2) and y.dtype == fg.float64


@pytest.mark.parametrize("call,match", [
    (lambda: fg.stft(fg.ones(30), 8), "requires the return_complex parameter"),
    (lambda: fg.stft(fg.ones(30), 8, window=fg.ones(5), return_complex=True), "size equal to win_length"),
    (lambda: fg.stft(fg.ones(30), 8, win_length=9, return_complex=True), "win_length <= n_fft"),
    (lambda: fg.stft(fg.ones(2, 2, 30), 8, return_complex=True), "1D or 2D"),
    (lambda: fg.stft(fg.ones(6), 8, center=False, return_complex=True), "n_fft <= 6"),
    (lambda: fg.istft(fg.ones(5, 4), 8), "complex-valued input"),
    (lambda: fg.istft(fg.ones(4, 4, dtype=fg.complex64), 8), "n_fft / 2 \\+ 1 when onesided"),
    (lambda: fg.istft(fg.stft(fg.ones(40), 8, window=fg.tensor(np.hanning(8).astype(np.float32)), center=False,
                              return_complex=True), 8, window=fg.tensor(np.hanning(8).astype(np.float32)),
                      center=False), "window overlap add min"),
])
def test_errors(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()
