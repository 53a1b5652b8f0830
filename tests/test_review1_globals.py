"""Review of torch's package-level globals in forgegrad (set_default_dtype, full, repr, stride / contiguous,
get/set_rng_state, iinfo): each test is a defect found in review, checked against torch 2.13."""
import numpy as np
import pytest
import torch

import forgegrad as fg


@pytest.fixture
def default_float64():
    fg.set_default_dtype(fg.float64)
    torch.set_default_dtype(torch.float64)
    yield
    fg.set_default_dtype(fg.float32)
    torch.set_default_dtype(torch.float32)


def _name(dt) -> str:
    return str(dt).split(".")[-1]


_PROMOTING = ["x * 0.5", "x / 2", "0.5 + x", "x ** 0.5", "lib.sqrt(x)", "lib.exp(x)", "lib.atan2(x, x)",
              "x.true_divide(2)", "lib.div(x, x)", "x.pow(0.5)", "(x > 1) * 1.5"]


@pytest.mark.parametrize("expr", _PROMOTING)
def test_integer_to_float_promotion_follows_default_dtype(default_float64, expr):
    got = eval(expr, {"lib": fg, "x": fg.tensor([1, 2, 3])})
    want = eval(expr, {"lib": torch, "x": torch.tensor([1, 2, 3])})
    assert _name(got.dtype) == _name(want.dtype) == "float64"
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-15)


@pytest.mark.parametrize("expr", ["x * 0.5", "lib.sqrt(x)", "x / 2"])
def test_integer_promotion_float32_by_default(expr):
    got = eval(expr, {"lib": fg, "x": fg.tensor([1, 2, 3])})
    assert got.dtype == fg.float32


def test_float32_tensors_stay_float32_under_float64_default(default_float64):
    x = fg.tensor([1.0, 2.0], dtype=fg.float32)
    assert (x * 0.5).dtype == fg.float32 and fg.sqrt(x).dtype == fg.float32 and (x + fg.tensor([1, 2])).dtype \
        == fg.float32


@pytest.mark.parametrize("fill", [1, True, 2.5, np.int32(3), np.float32(1.5)])
def test_full_infers_dtype_from_fill_value(fill):
    assert _name(fg.full((2,), fill).dtype) == _name(torch.full((2,), fill).dtype)
    np.testing.assert_array_equal(fg.full((2, 3), fill).numpy(), torch.full((2, 3), fill).numpy())


def test_full_tensor_fill_and_default_dtype(default_float64):
    assert fg.full((2,), 1.5).dtype == fg.float64
    assert fg.full((2,), fg.tensor(3)).dtype == fg.int64
    assert fg.full((2,), 1, dtype=fg.float32).dtype == fg.float32


def test_prelu_and_lazy_parameters_take_default_dtype(default_float64):
    assert fg.nn.PReLU().weight.dtype == fg.float64
    assert fg.nn.PReLU(dtype=fg.float32).weight.dtype == fg.float32
    m = fg.nn.LazyLinear(3)
    m(fg.ones(2, 4))
    assert m.weight.dtype == fg.float64


_REPRS = [[1e10, 1.0], [1e8, 1.0], [1e16], [float("nan"), 1.0], [-0.0, 0.0], [1.5, float("nan")], [0.0, float("nan")],
          [1e-5, 1.0], [float("inf"), -2.0, 3.0], [123456789.0]]


@pytest.mark.parametrize("data", _REPRS)
def test_float_repr_matches_torch(data):
    assert repr(fg.tensor(data)) == repr(torch.tensor(data))


@pytest.mark.parametrize("kw", [{"sci_mode": True}, {"sci_mode": False}, {"precision": 2}])
def test_float_repr_options_match_torch(kw):
    try:
        fg.set_printoptions(**kw)
        torch.set_printoptions(**kw)
        for data in ([1e10, 1e-5, 1.5], [1.0, float("nan")], [1.0, 2.5]):
            assert repr(fg.tensor(data)) == repr(torch.tensor(data))
    finally:
        fg.set_printoptions(profile="default", sci_mode=None)
        torch.set_printoptions(profile="default", sci_mode=None)


def test_summarized_repr_matches_torch():
    assert repr(fg.arange(2000.0)) == repr(torch.arange(2000.0))
    assert repr(fg.zeros(3, 1000)) == repr(torch.zeros(3, 1000))


@pytest.mark.parametrize("shape", [(0, 3), (2, 0, 3)])
def test_empty_repr_gives_size(shape):
    assert repr(fg.zeros(*shape)) == repr(torch.zeros(*shape))
    assert repr(fg.zeros(0)) == repr(torch.zeros(0))


def _views(lib):
    x = lib.arange(24.0).reshape(2, 3, 4)
    return [x[:, None], x.unsqueeze(1), x[..., None], lib.zeros(0, 3), lib.zeros(2, 0, 3),
            x.transpose(0, 1).contiguous(), x[..., ::2].contiguous(), lib.arange(3.0)[None, :, None]]


def test_strides_of_views_match_torch():
    for got, want in zip(_views(fg), _views(torch)):
        assert got.stride() == want.stride()
        assert got.is_contiguous() == want.is_contiguous()
        assert got.storage_offset() == want.storage_offset()


def test_contiguous_returns_a_contiguous_tensor_and_keeps_gradient():
    x = fg.arange(24.0).reshape(2, 3, 4).requires_grad_()
    y = x.transpose(0, 2).contiguous()
    assert y.is_contiguous() and y.stride() == (6, 2, 1)
    assert x.contiguous() is x
    (y * fg.arange(24.0).reshape(4, 3, 2)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.arange(24.0).reshape(4, 3, 2).transpose(2, 1, 0))


def test_set_rng_state_refuses_an_even_increment():
    s = fg.get_rng_state()
    bad = s.clone()
    bad[24] = int(bad[24]) & 0xFE  # the increment's low byte: PCG64's increment is odd
    with pytest.raises(ValueError, match="new_state"):
        fg.set_rng_state(bad)
    fg.set_rng_state(s)
    a = fg.rand(4)
    fg.set_rng_state(s)
    assert fg.equal(a, fg.rand(4))


@pytest.mark.parametrize("name", ["uint8", "int8", "int16", "int32", "int64"])
def test_iinfo_repr_matches_torch(name):
    assert repr(fg.iinfo(getattr(fg, name))) == repr(torch.iinfo(getattr(torch, name)))


@pytest.mark.parametrize("opt", ["Adam", "AdamW", "Adagrad", "RMSprop"])
def test_optimizer_state_follows_default_dtype(default_float64, opt):
    got = {}
    for lib in (torch, fg):
        lib.manual_seed(0)
        m = lib.nn.Linear(3, 2)
        o = getattr(lib.optim, opt)(m.parameters(), lr=0.1)
        m(lib.ones(4, 3)).sum().backward()
        o.step()
        got[lib.__name__] = {k: _name(v.dtype) for k, v in o.state[m.weight].items() if hasattr(v, "dtype")}
    assert got["forgegrad"] == got["torch"]


@pytest.mark.parametrize("expr", ["a * b", "b * a", "a + b", "a - b", "a / b", "lib.where(a > 1, a, b)",
                                  "lib.maximum(a, b)", "lib.atan2(a, b)"])
def test_zero_dim_float64_does_not_widen_float32(expr):
    """torch's category rule: a 0-d tensor only decides the dtype when its category is higher."""
    out = {}
    for lib in (torch, fg):
        a = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        b = lib.tensor(2.5, dtype=lib.float64, requires_grad=True)
        y = eval(expr, {"lib": lib, "a": a, "b": b})
        y.sum().backward()
        out[lib.__name__] = (y, a.grad, b.grad)
    for got, want in zip(out["forgegrad"], out["torch"]):
        assert _name(got.dtype) == _name(want.dtype)
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-6)


def test_zero_dim_float64_with_float64_or_int_tensors_stays_float64():
    b = fg.tensor(2.5, dtype=fg.float64)
    assert (fg.tensor([1, 2]) * b).dtype == fg.float64
    assert (fg.tensor([1.0], dtype=fg.float64) * b).dtype == fg.float64
    assert b.expand_as(fg.ones(3)).dtype == fg.float64  # not a promoting op


@pytest.mark.parametrize("fn", ["atan2", "hypot", "fmod", "xlogy", "logaddexp"])
def test_binary_math_gradient_of_a_zero_dim_input(fn):
    """The gradient of a broadcast 0-d input stays 0-d (it came back as shape (1,), and backward raised)."""
    grads = []
    for lib in (torch, fg):
        a = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        b = lib.tensor(2.5, requires_grad=True)
        getattr(lib, fn)(a, b).sum().backward()
        grads.append((a.grad.numpy(), b.grad.numpy()))
    for got, want in zip(grads[1], grads[0]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5)
