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
    x, tx = fg.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    with fg.inference_mode(), torch.inference_mode():
        y, ty = x * 2, tx * 2
    assert fg.is_inference(y) is torch.is_inference(ty) is True and not y.requires_grad  # see test_inference_tensors
    assert fg.is_inference(x) is torch.is_inference(tx) is False
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


# ---- group 4: Tensor methods ---------------------------------------------------------------------------------------
def test_contains_and_reversed_as_torch():
    a = np.array([[1, 2], [3, 4]])
    x, tx = fg.tensor(a), torch.tensor(a)
    for e in (2, 7, 2.0):
        assert (e in x) == (e in tx)
    assert (fg.tensor(3) in x) == (torch.tensor(3) in tx)
    assert (fg.tensor([3, 9]) in x) == (torch.tensor([3, 9]) in tx)
    with pytest.raises(RuntimeError, match="only supports Tensor or scalar"):
        "a" in tx  # noqa: B015
    with pytest.raises(RuntimeError, match="only supports Tensor or scalar"):
        "a" in x  # noqa: B015
    for got, want in zip(reversed(x), reversed(tx)):
        _same(got, want)
    assert reversed(fg.tensor(3.0)).item() == 3.0


def test_addr_values_gradients_and_errors():
    rng = np.random.default_rng(2)
    m, u, v = (rng.standard_normal(s).astype(np.float32) for s in ((3, 4), 3, 4))
    for kwargs in ({}, {"beta": 0.5, "alpha": 2.0}, {"beta": 0}):
        fx = [fg.tensor(a, requires_grad=True) for a in (m, u, v)]
        tx = [torch.tensor(a, requires_grad=True) for a in (m, u, v)]
        got, want = fg.addr(*fx, **kwargs), torch.addr(*tx, **kwargs)
        _same(got, want, rtol=1e-5)
        got.pow(2).sum().backward()
        want.pow(2).sum().backward()
        for f, t in zip(fx, tx):
            _same(f.grad, t.grad, rtol=1e-5, atol=1e-5)
        _same(fg.tensor(m).addr(fg.tensor(u), fg.tensor(v), **kwargs),
              torch.tensor(m).addr(torch.tensor(u), torch.tensor(v), **kwargs), rtol=1e-5)
    nan = np.full((3, 4), np.nan, np.float32)
    _same(fg.addr(fg.tensor(nan), fg.tensor(u), fg.tensor(v), beta=0),
          torch.addr(torch.tensor(nan), torch.tensor(u), torch.tensor(v), beta=0), rtol=1e-5)
    x, tx = fg.tensor(m), torch.tensor(m)
    assert x.addr_(fg.tensor(u), fg.tensor(v), alpha=3) is x
    tx.addr_(torch.tensor(u), torch.tensor(v), alpha=3)
    _same(x, tx, rtol=1e-5)
    with pytest.raises(RuntimeError, match="vec1"):
        fg.addr(fg.zeros(3, 4), fg.ones(3, 1), fg.ones(4))
    with pytest.raises(RuntimeError, match="alpha"):
        fg.addr(fg.zeros(2, 2, dtype=fg.int64), fg.ones(2, dtype=fg.int64), fg.ones(2, dtype=fg.int64), alpha=0.5)
    _same(fg.addr(fg.ones(2, 2, dtype=fg.int64), fg.tensor([1, 2]), fg.tensor([3, 4]), beta=2),
          torch.addr(torch.ones(2, 2, dtype=torch.int64), torch.tensor([1, 2]), torch.tensor([3, 4]), beta=2))


def test_cumsum_inplace():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    x, tx = fg.tensor(a), torch.tensor(a)
    assert x.cumsum_(1) is x
    tx.cumsum_(1)
    _same(x, tx)
    w = fg.ones(3, requires_grad=True)
    y = w * 2
    y.cumsum_(0)
    y.sum().backward()
    tw = torch.ones(3, requires_grad=True)
    ty = tw * 2
    ty.cumsum_(0)
    ty.sum().backward()
    _same(w.grad, tw.grad)


def test_frexp_values_dtype_gradient():
    a = np.array([0.0, np.inf, -np.inf, np.nan, -3.5, 1e-45, 7.0, 0.3], np.float32)
    for dt in (np.float32, np.float64):
        got, want = fg.frexp(fg.tensor(a.astype(dt))), torch.frexp(torch.tensor(a.astype(dt)))
        _same(got.mantissa, want.mantissa, rtol=0, atol=0)
        _same(got.exponent, want.exponent, rtol=0, atol=0)
        m, e = fg.tensor(a.astype(dt)).frexp()
        _same(m, want[0], rtol=0, atol=0)
    b = np.array([1.0, 2.0, -5.0, 0.1], np.float64)
    x, tx = fg.tensor(b, requires_grad=True), torch.tensor(b, requires_grad=True)
    (fg.frexp(x).mantissa * 3).sum().backward()
    (torch.frexp(tx).mantissa * 3).sum().backward()
    _same(x.grad, tx.grad, rtol=0, atol=0)
    assert not fg.frexp(x).exponent.requires_grad
    with pytest.raises(RuntimeError, match="floating-point"):
        fg.frexp(fg.tensor([1, 2]))


def test_nextafter_as_torch():
    a = np.array([1.0, 0.0, -2.0, np.inf], np.float32)
    b = np.array([2.0, -1.0, -2.0, 0.0], np.float32)
    _same(fg.nextafter(fg.tensor(a), fg.tensor(b)), torch.nextafter(torch.tensor(a), torch.tensor(b)), rtol=0, atol=0)
    _same(fg.tensor(a).nextafter(fg.tensor(b[:1])), torch.tensor(a).nextafter(torch.tensor(b[:1])), rtol=0, atol=0)
    _same(fg.nextafter(fg.tensor(a), fg.tensor(b.astype(np.float64))),
          torch.nextafter(torch.tensor(a), torch.tensor(b.astype(np.float64))), rtol=0, atol=0)
    x, tx = fg.tensor(a), torch.tensor(a)
    assert x.nextafter_(fg.tensor(b)) is x
    tx.nextafter_(torch.tensor(b))
    _same(x, tx, rtol=0, atol=0)
    fx, fo = fg.tensor(a[:3, None].repeat(2, 1), requires_grad=True), fg.tensor(b[:2], requires_grad=True)
    tx, to = torch.tensor(a[:3, None].repeat(2, 1), requires_grad=True), torch.tensor(b[:2], requires_grad=True)
    (fg.nextafter(fx, fo) * fg.tensor([2.0, 3.0])).sum().backward()
    (torch.nextafter(tx, to) * torch.tensor([2.0, 3.0])).sum().backward()
    _same(fx.grad, tx.grad)
    _same(fo.grad, to.grad)
    with pytest.raises(NotImplementedError):
        torch.nextafter(torch.tensor([1]), torch.tensor([2]))
    with pytest.raises(NotImplementedError, match="floating point"):
        fg.nextafter(fg.tensor([1]), fg.tensor([2]))


def test_meta_tensors_keep_shapes_and_dtypes():
    m, e = fg.frexp(fg.empty(2, 3, device="meta"))
    assert m.device.type == e.device.type == "meta" and e.dtype == fg.int32 and m.shape == (2, 3)
    n = fg.nextafter(fg.empty(2, 1, device="meta"), fg.empty(3, dtype=fg.float64, device="meta"))
    assert n.shape == (2, 3) and n.dtype == fg.float64 and n.device.type == "meta"
    w = fg.kaiser_window(5, device="meta")
    assert w.shape == (5,) and w.device.type == "meta"
    s = fg.empty(4, device="meta")
    assert s.exponential_() is s and s.random_(3).device.type == "meta"


def test_hardshrink_prelu_multinomial_methods():
    a = np.array([[-1.0, 0.2, 0.7], [0.4, -0.1, 2.0]], np.float32)
    _same(fg.tensor(a).hardshrink(0.3), torch.tensor(a).hardshrink(0.3))
    _same(fg.tensor(a).hardshrink(), torch.tensor(a).hardshrink())
    w = np.array([0.25], np.float32)
    x, tx = fg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    x.prelu(fg.tensor(w)).sum().backward()
    tx.prelu(torch.tensor(w)).sum().backward()
    _same(x.grad, tx.grad)
    probs = fg.tensor([0.0, 1.0, 3.0])
    s = probs.multinomial(200, replacement=True)
    assert s.dtype == fg.int64 and s.shape == (200,) and 0 not in s
    assert set(probs.multinomial(2).tolist()) == {1, 2}


def _draws(method, *args, n=40000, dtype=fg.float64, **kwargs):
    fg.manual_seed(5)
    return getattr(fg.empty(n, dtype=dtype), method)(*args, **kwargs).numpy().astype(np.float64)


def test_random_samplers_moments_and_ranges():
    e = _draws("exponential_", 2.0)
    assert e.min() >= 0 and abs(e.mean() - 0.5) < 0.02 and abs(e.var() - 0.25) < 0.02
    g = _draws("geometric_", 0.25, dtype=fg.int64)
    assert g.min() >= 1 and np.all(g == np.round(g)) and abs(g.mean() - 4.0) < 0.1
    c = _draws("cauchy_", 1.0, 2.0)
    assert abs(np.median(c) - 1.0) < 0.1 and abs(np.percentile(c, 75) - 3.0) < 0.15  # median + sigma
    ln = _draws("log_normal_", 0.5, 0.25)
    assert ln.min() > 0 and abs(np.log(ln).mean() - 0.5) < 0.01 and abs(np.log(ln).std() - 0.25) < 0.01
    r = _draws("random_", 3, 9)
    assert set(np.unique(r)) == set(range(3, 9))
    assert set(np.unique(_draws("random_", 4, dtype=fg.int32))) == set(range(4))
    assert set(np.unique(_draws("random_", dtype=fg.bool))) == {0, 1}
    i8 = _draws("random_", dtype=fg.int8)
    assert i8.min() >= 0 and i8.max() <= 127 and i8.max() > 120
    f = _draws("random_", dtype=fg.float32)
    assert f.min() >= 0 and f.max() <= 2 ** 24 and f.max() > 2 ** 24 - 2 ** 20 and np.all(f == np.round(f))
    kw = _draws("random_", **{"from": 10, "to": 12})
    assert set(np.unique(kw)) == {10, 11}
    hi = _draws("random_", dtype=fg.int8, **{"from": 120})  # [from, the dtype's max], as torch
    assert set(np.unique(hi)) == set(range(120, 128))
    gen = np.random.default_rng(1)
    assert fg.empty(3).exponential_(generator=gen).shape == (3,)


def test_random_samplers_errors_and_rules_as_torch():
    for method, args, word in [("exponential_", (0,), "lambda"), ("exponential_", (-1,), "lambda"),
                               ("geometric_", (0,), "p to be in"), ("geometric_", (1.5,), "p to be in"),
                               ("cauchy_", (0, 0), "sigma"), ("log_normal_", (1, -1), "std"),
                               ("random_", (5, 2), "'from' to be less than 'to'")]:
        with pytest.raises(RuntimeError, match=word):
            getattr(torch.ones(3), method)(*args)
        with pytest.raises(RuntimeError, match=word):
            getattr(fg.ones(3), method)(*args)
    for method, dist in (("exponential_", "Exponential"), ("cauchy_", "Cauchy"), ("log_normal_", "LogNormal")):
        with pytest.raises(RuntimeError):  # (torch's log_normal_ message names its kernel instead)
            getattr(torch.zeros(2, dtype=torch.int64), method)()
        with pytest.raises(RuntimeError, match=f"{dist} distribution is a continuous"):
            getattr(fg.zeros(2, dtype=fg.int64), method)()
    with pytest.raises(RuntimeError, match="leaf Variable"):
        fg.ones(2, requires_grad=True).exponential_()
    with pytest.raises(TypeError, match="'p'"):
        fg.ones(2).geometric_("a")
    x = fg.ones(4)
    v = x._version
    x.cauchy_()
    assert x._version == v + 1


METADATA_OPS = [("squeeze_", ()), ("squeeze_", (1,)), ("squeeze_", ((1, 3),)), ("unsqueeze_", (0,)),
                ("unsqueeze_", (-1,)), ("transpose_", (0, 2)), ("swapaxes_", (1, 2)), ("swapdims_", (0, -1))]


@pytest.mark.parametrize("name,args", METADATA_OPS)
def test_metadata_inplace_without_grad(name, args):
    a = np.arange(12, dtype=np.float32).reshape(2, 1, 6, 1)
    x, tx = fg.tensor(a), torch.tensor(a)
    v = x._version
    out = getattr(x, name)(*args)
    getattr(tx, name)(*args)
    assert out is x and x._version == v + 1
    _same(x, tx)
    x.mul_(2)  # still the same storage as before: a view taken earlier sees the write
    tx.mul_(2)
    _same(x, tx)


@pytest.mark.parametrize("name,args", METADATA_OPS)
def test_metadata_inplace_gradients(name, args):
    a = np.random.default_rng(4).standard_normal((2, 1, 6, 1)).astype(np.float32)
    w, tw = fg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, ty = w * 1.5, tw * 1.5
    z, tz = y.exp(), ty.exp()  # uses y before the change: keeps its old shape
    getattr(y, name)(*args)
    getattr(ty, name)(*args)
    _same(y, ty)
    scale = np.arange(1, ty.numel() + 1, dtype=np.float32).reshape(tuple(ty.shape))
    ((y * fg.tensor(scale)).sum() + z.sum()).backward()
    ((ty * torch.tensor(scale)).sum() + tz.sum()).backward()
    _same(w.grad, tw.grad, rtol=1e-5)


def test_metadata_inplace_refusals_and_t_():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    x, tx = fg.tensor(a), torch.tensor(a)
    x.t_()
    tx.t_()
    _same(x, tx)
    v = fg.tensor([1.0, 2.0])
    assert v.t_() is v and v.shape == (2,)
    with pytest.raises(RuntimeError, match="<= 2 dimensions"):
        fg.ones(2, 3, 4).t_()
    with pytest.raises(RuntimeError, match="leaf Variable"):
        fg.ones(2, 1, requires_grad=True).squeeze_()
    with pytest.raises(RuntimeError, match="view of a leaf"):
        fg.ones(2, 3, requires_grad=True)[0].unsqueeze_(0)
    with pytest.raises(IndexError):
        fg.ones(2, 3).unsqueeze_(5)
    with fg.no_grad():
        w = fg.ones(2, 1, requires_grad=True)
        w.squeeze_()
    assert w.shape == (2,) and w.requires_grad
    with fg.autograd.trace():  # an export would lose the change: refused, as the other in-place ops there
        with pytest.raises(RuntimeError, match="out-of-place squeeze"):
            fg.ones(2, 1).squeeze_()
    m = fg.empty(2, 1, 3, device="meta")
    assert m.squeeze_().shape == (2, 3) and m.t_().shape == (3, 2) and m.device.type == "meta"


def test_metadata_inplace_of_a_view_writes_through_to_the_base():
    w, tw = fg.ones(2, 3, requires_grad=True), torch.ones(2, 3, requires_grad=True)
    a, ta = w * 1, tw * 1
    y, ty = a[0], ta[0]
    y.unsqueeze_(0)
    ty.unsqueeze_(0)
    y.mul_(2)
    ty.mul_(2)
    _same(a, ta)
    a.sum().backward()
    ta.sum().backward()
    _same(w.grad, tw.grad)


def test_narrow_copy_new_share_memory():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    x, tx = fg.tensor(a), torch.tensor(a)
    got, want = fg.narrow_copy(x, 1, 1, 2), torch.narrow_copy(tx, 1, 1, 2)
    _same(got, want)
    assert not np.shares_memory(got.numpy(), x.numpy())
    _same(x.narrow_copy(dim=0, start=1, length=2), tx.narrow_copy(dim=0, start=1, length=2))
    t, tt = fg.ones(2, dtype=fg.int32), torch.ones(2, dtype=torch.int32)
    assert t.new(2, 3).shape == tuple(tt.new(2, 3).shape) and t.new(2, 3).dtype == fg.int32
    _same(t.new([1, 2]), tt.new([1, 2]))
    _same(t.new((4,)), tt.new((4,)))
    assert t.new().shape == tuple(tt.new().shape) == (0,)
    assert t.new(fg.Size([2, 5])).shape == (2, 5)
    with pytest.raises(TypeError):
        tt.new(torch.tensor([1.5]))
    with pytest.raises(TypeError, match="dtype"):
        t.new(fg.tensor([1.5]))
    assert x.share_memory_() is x and tx.share_memory_() is tx
