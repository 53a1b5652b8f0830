"""torch names forgegrad lacked (forgegrad/_torch_windows.py, _torch_namespace_gaps.py, _tensor_method_gaps.py),
each compared with torch 2.13: values, dtypes, gradients, and the errors naming the argument."""
import pickle
import warnings

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _torch_namespace_gaps as gaps

WINDOWS = ("hann_window", "hamming_window", "blackman_window", "bartlett_window", "kaiser_window")


def _np(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t.detach().numpy())


def _same(a, b, rtol=1e-6, atol=1e-6):
    assert str(a.dtype).split(".")[-1] == str(b.dtype).split(".")[-1], (a.dtype, b.dtype)
    assert tuple(a.shape) == tuple(b.shape)
    np.testing.assert_allclose(_np(a).astype(np.float64), _np(b).astype(np.float64), rtol=rtol, atol=atol)


# ---- group 1: windows ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", WINDOWS)
@pytest.mark.parametrize("n", [0, 1, 2, 7, 64])
@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_window_values(name, n, periodic, dtype):
    got = getattr(fg, name)(n, periodic, dtype=getattr(fg, dtype))
    want = getattr(torch, name)(n, periodic, dtype=getattr(torch, dtype))
    _same(got, want, rtol=2e-6 if dtype == "float32" else 1e-12, atol=1e-6 if dtype == "float32" else 1e-12)


def test_window_defaults_and_keywords():
    _same(fg.hann_window(window_length=10), torch.hann_window(window_length=10))  # default dtype, periodic
    _same(fg.hamming_window(9, False, 0.5, 0.5), torch.hamming_window(9, False, 0.5, 0.5))
    _same(fg.hamming_window(9, True, alpha=0.6, beta=0.3), torch.hamming_window(9, True, alpha=0.6, beta=0.3))
    _same(fg.kaiser_window(11, False, beta=4.0), torch.kaiser_window(11, False, beta=4.0))
    _same(fg.kaiser_window(11, True, 8), torch.kaiser_window(11, True, 8))
    w = fg.blackman_window(8, requires_grad=True, layout=fg.strided, device="cpu", pin_memory=False)
    assert w.requires_grad and w.is_leaf
    (w * 2).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), np.full(8, 2.0, np.float32))
    fg.set_default_dtype(fg.float64)
    try:
        assert fg.bartlett_window(5).dtype == fg.float64
    finally:
        fg.set_default_dtype(fg.float32)


@pytest.mark.parametrize("name", WINDOWS)
def test_window_errors_as_torch(name):
    f, t = getattr(fg, name), getattr(torch, name)
    for kwargs, exc, word in [({"window_length": -1}, RuntimeError, "window_length"),
                              ({"window_length": 2.5}, TypeError, "window_length"),
                              ({"window_length": True}, TypeError, "window_length"),
                              ({"window_length": 4, "dtype": "int64"}, RuntimeError, "floating point"),
                              ({"window_length": 4, "periodic": 1}, TypeError, "periodic")]:
        kw = dict(kwargs)
        tkw = dict(kwargs)
        if "dtype" in kw:
            kw["dtype"], tkw["dtype"] = fg.int64, torch.int64
        with pytest.raises(exc):
            t(**tkw)
        with pytest.raises(exc, match=word):
            f(**kw)
    with pytest.raises(RuntimeError, match="sparse"):
        f(4, layout=fg.sparse_coo)


def test_windows_drive_stft_as_torch():
    x = np.random.default_rng(0).standard_normal(300).astype(np.float32)
    for name in WINDOWS:
        got = fg.stft(fg.tensor(x), 64, hop_length=16, window=getattr(fg, name)(64), return_complex=True)
        want = torch.stft(torch.tensor(x), 64, hop_length=16, window=getattr(torch, name)(64), return_complex=True)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


# ---- group 2: matmul precision, is_inference, detach, fill, Size ---------------------------------------------------
def test_float32_matmul_precision_stored_and_checked():
    assert fg.get_float32_matmul_precision() == "highest"
    try:
        for p in ("high", "medium", "highest"):
            fg.set_float32_matmul_precision(p)
            assert fg.get_float32_matmul_precision() == p
        fg.set_float32_matmul_precision("medium")
        with pytest.warns(UserWarning, match="no effect"):
            fg.set_float32_matmul_precision("low")
        assert fg.get_float32_matmul_precision() == "medium"  # unchanged, as torch
        with pytest.raises(RuntimeError, match="expects a str"):
            fg.set_float32_matmul_precision(3)
        with pytest.raises(RuntimeError, match="expects a str"):
            torch.set_float32_matmul_precision(3)
    finally:
        fg.set_float32_matmul_precision("highest")


def test_is_inference_and_detach():
    x = fg.ones(3, requires_grad=True)
    with fg.inference_mode():
        y = x * 2
    assert fg.is_inference(y) is False and not y.requires_grad  # forgegrad has no inference tensors (documented)
    d = fg.detach(x)
    assert not d.requires_grad and d._data is x._data or np.shares_memory(d.numpy(), x.detach().numpy())
    with pytest.raises(TypeError, match="input"):
        fg.detach([1.0])


def test_fill_values_dtype_and_gradients():
    a = np.array([[1.0, np.nan], [3.0, -4.0]], np.float32)
    x, tx = fg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    got, want = fg.fill(x, 2.5), torch.fill(tx, 2.5)
    _same(got, want)
    got.sum().backward()
    want.sum().backward()
    _same(x.grad, tx.grad)  # zeros, not None
    v, tv = fg.tensor(1.5, requires_grad=True), torch.tensor(1.5, requires_grad=True)
    (fg.fill(fg.tensor(a), v) * 3).sum().backward()
    (torch.fill(torch.tensor(a), tv) * 3).sum().backward()
    _same(v.grad, tv.grad)
    _same(fg.fill(fg.tensor([1, 2, 3]), 7), torch.fill(torch.tensor([1, 2, 3]), 7))  # int64 stays int64
    with pytest.raises(RuntimeError, match="0-dimension"):
        torch.fill(torch.ones(2), torch.ones(1))
    with pytest.raises(RuntimeError, match="0-dimension"):
        fg.fill(fg.ones(2), fg.ones(1))
    with pytest.raises(TypeError, match="value"):
        fg.fill(fg.ones(2), "a")


def test_size_as_torch():
    s, t = fg.Size([2, 3, 4]), torch.Size([2, 3, 4])
    assert s == t == (2, 3, 4) and s.numel() == t.numel() == 24
    assert fg.Size().numel() == torch.Size().numel() == 1
    assert isinstance(s[1:], fg.Size) and s[1:] == (3, 4) and s[0] == 2
    assert isinstance(s + (5,), fg.Size) and isinstance((1,) + s, fg.Size)
    assert repr(s) == "forgegrad.Size([2, 3, 4])" and repr(t) == "torch.Size([2, 3, 4])"
    assert fg.Size([fg.tensor(3)]) == (3,) and fg.Size(np.array([2, 5])) == (2, 5)
    assert pickle.loads(pickle.dumps(s)) == s and type(pickle.loads(pickle.dumps(s))) is fg.Size
    assert fg.zeros(fg.Size([2, 3])).shape == (2, 3) and fg.ones(2, 3).shape == s[:2]
    assert fg.Size([True]) == torch.Size([True]) == (1,)
    for bad in ([2.5], [np.float32(1)]):
        with pytest.raises(TypeError):
            torch.Size(bad)
        with pytest.raises(TypeError, match="item 0"):
            fg.Size(bad)


# ---- group 3: top-level in-place functions -------------------------------------------------------------------------
_POSITIVE = {"acosh_", "arccosh_"}
_UNIT = {"acos_", "asin_", "atanh_", "arccos_", "arcsin_", "arctanh_", "logit_"}
_EXTRA = {"clamp_": {"min": -0.5, "max": 0.7}, "clip_": {"min": -0.5}, "clamp_max_": {"max": 0.1},
          "clamp_min_": {"min": 0.1}, "fill_": {"value": 2.0}, "round_": {"decimals": 1},
          "nan_to_num_": {"nan": 0.0}, "logit_": {"eps": 1e-3}}


def _float_cases():
    return sorted(n for n in gaps.INPLACE_NAMES if n not in ("addmv_", "gcd_", "lcm_", "ldexp_", "xlogy_", "i0_"))


@pytest.mark.parametrize("name", _float_cases())
def test_inplace_functions_as_torch(name):
    rng = np.random.default_rng(1)
    a = rng.uniform(-0.9, 0.9, (3, 4)).astype(np.float32)
    if name in _POSITIVE:
        a = 1.5 + np.abs(a)
    elif name in _UNIT:
        a = np.abs(a) * 0.9 if name == "logit_" else a
    x, tx = fg.tensor(a), torch.tensor(a)
    kwargs = _EXTRA.get(name, {})
    out, tout = getattr(fg, name)(x, **kwargs), getattr(torch, name)(tx, **kwargs)
    assert out is x and tout is tx
    _same(x, tx, rtol=1e-5, atol=1e-6)


def test_inplace_functions_with_other_tensors():
    a, b = fg.tensor([4, 6, 9]), fg.tensor([6, 4, 3])
    ta, tb = torch.tensor([4, 6, 9]), torch.tensor([6, 4, 3])
    for name in ("gcd_", "lcm_"):
        got, want = getattr(fg, name)(a.clone(), b), getattr(torch, name)(ta.clone(), tb)
        _same(got, want)
    f, tf = fg.tensor([1.0, 2.0, 0.0]), torch.tensor([1.0, 2.0, 0.0])
    _same(fg.ldexp_(f.clone(), fg.tensor([1, 2, 3])), torch.ldexp_(tf.clone(), torch.tensor([1, 2, 3])))
    _same(fg.xlogy_(f.clone(), other=fg.tensor([2.0, 3.0, 0.0])),
          torch.xlogy_(tf.clone(), other=torch.tensor([2.0, 3.0, 0.0])))
    _same(fg.i0_(f.clone()), torch.i0_(tf.clone()))
    m, v = np.ones((2, 3), np.float32), np.arange(3, dtype=np.float32)
    _same(fg.addmv_(fg.zeros(2), fg.tensor(m), fg.tensor(v), beta=0.5, alpha=2.0),
          torch.addmv_(torch.zeros(2), torch.tensor(m), torch.tensor(v), beta=0.5, alpha=2.0))


def test_inplace_function_rules_and_errors():
    x = fg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        fg.exp_(x)
    y = x * 1
    v = y._version
    fg.sigmoid_(y)
    assert y._version == v + 1
    y.sum().backward()
    tx = torch.ones(3, requires_grad=True)
    torch.sigmoid_(tx * 1).sum().backward()
    _same(x.grad, tx.grad)
    with pytest.raises(TypeError, match="input"):
        fg.exp_([1.0])
    with pytest.raises(RuntimeError):
        fg.sqrt_(fg.tensor([4, 9]))  # a float result into an int64 tensor, refused as torch
    with pytest.raises(RuntimeError):
        torch.sqrt_(torch.tensor([4, 9]))


def test_every_torch_inplace_name_with_a_method_is_there():
    want = {n for n in dir(torch) if n.endswith("_") and not n.startswith("_") and hasattr(fg.Tensor, n)}
    assert not {n for n in want if not hasattr(fg, n)}
    assert fg.relu_ is not gaps.FUNCTIONS["relu_"]  # nn.functional's relu_ kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fg.abs_(fg.tensor([-1.0])).item() == 1.0
