"""Complex tensors (complex64, complex128) against torch 2.13 CPU: dtypes, creation, promotion, printing, numpy and
safetensors round trips, op values, views through real / imag / view_as_real, and the TypeError of the ops that
do not take complex inputs."""
import re
import warnings

import numpy as np
import pytest
import torch

import forgegrad as fg

RNG = np.random.default_rng(7)
DTYPES = [(np.complex64, fg.complex64, torch.complex64), (np.complex128, fg.complex128, torch.complex128)]


def _c(shape, dt=np.complex64):
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(dt)


def _np(t):
    return t.detach().resolve_conj().resolve_neg().numpy()


def _same(f, t, rtol=1e-5, atol=1e-6):
    assert str(f.dtype).split(".")[-1] == str(t.dtype).split(".")[-1], (f.dtype, t.dtype)
    assert tuple(f.shape) == tuple(t.shape)
    np.testing.assert_allclose(f.detach().numpy(), _np(t), rtol=rtol, atol=atol)


# ---- dtypes ---------------------------------------------------------------------------------------------------
def test_dtype_objects_and_aliases():
    assert fg.cfloat is fg.complex64 and fg.cdouble is fg.complex128
    assert fg.complex64.is_complex and not fg.complex64.is_floating_point and fg.complex64.is_signed
    assert not fg.float32.is_complex
    assert fg.complex64.itemsize == 8 and fg.complex128.itemsize == 16
    assert fg.complex64.to_real() is fg.float32 and fg.complex128.to_real() is fg.float64
    assert fg.float64.to_complex() is fg.complex128 and fg.float32.to_complex() is fg.complex64
    assert fg.dtypes.of("torch.complex64") is fg.complex64 and fg.dtypes.of(np.complex128) is fg.complex128
    assert np.zeros(2, fg.complex64).dtype == np.complex64
    assert "complex64" in fg.__all__ and "fft" in fg.__all__


@pytest.mark.parametrize("a,b", [("float32", "complex64"), ("float64", "complex64"), ("int64", "complex64"),
                                 ("float16", "complex64"), ("bool", "complex128"), ("complex64", "complex128"),
                                 ("float32", "complex128"), ("uint8", "complex64")])
def test_promote_types_as_torch(a, b):
    assert fg.promote_types(getattr(fg, a), getattr(fg, b)).name == str(
        torch.promote_types(getattr(torch, a), getattr(torch, b))).split(".")[-1]


@pytest.mark.parametrize("make", [
    lambda m: m.ones(3) + 1j, lambda m: m.ones(3, dtype=m.float64) * 1j, lambda m: m.ones(3, dtype=m.int32) * 1j,
    lambda m: m.ones(3) + m.ones(3, dtype=m.complex64),
    lambda m: m.ones(3, dtype=m.float64) + m.ones(3, dtype=m.complex64),
    lambda m: m.ones(3) + m.tensor(1j, dtype=m.complex128), lambda m: m.ones(3, dtype=m.complex64) * 2.5,
    lambda m: m.ones(3, dtype=m.complex64) + m.tensor(2.0, dtype=m.float64), lambda m: m.tensor([True]) * (1 + 1j),
    lambda m: m.ones(3, dtype=m.complex64) / m.arange(1, 4),
])
def test_result_dtype_of_mixed_ops_as_torch(make):
    _same(make(fg), make(torch))


def test_result_type_and_can_cast():
    assert fg.result_type(fg.ones(2), 1j) == fg.complex64
    assert fg.result_type(fg.ones(2, dtype=fg.float64), 1j) == fg.complex128
    assert not fg.can_cast(fg.complex64, fg.float32) and fg.can_cast(fg.float32, fg.complex64)
    assert fg.finfo(fg.complex64).eps == torch.finfo(torch.complex64).eps


# ---- creation ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [1 + 2j, [1, 2j], [[1.5, -2j], [3, 0.5 + 0.5j]], np.array([1j], np.complex64),
                                  np.array([1j, 2], np.complex128), [np.complex64(1j), 2.0]])
def test_tensor_of_complex_data_as_torch(data):
    _same(fg.tensor(data), torch.tensor(data))


def test_factories_with_complex_dtypes():
    for np_dt, fdt, tdt in DTYPES:
        _same(fg.zeros(2, 3, dtype=fdt), torch.zeros(2, 3, dtype=tdt))
        _same(fg.ones(4, dtype=fdt), torch.ones(4, dtype=tdt))
        _same(fg.full((2,), 1 - 2j, dtype=fdt), torch.full((2,), 1 - 2j, dtype=tdt))
        assert fg.randn(3, dtype=fdt).dtype == fdt and fg.rand(3, dtype=fdt).dtype == fdt
        assert fg.empty(2, dtype=fdt).dtype == fdt
    _same(fg.full((2,), 1j), torch.full((2,), 1j))
    z = fg.tensor(_c((2, 2)))
    for like in ("zeros_like", "ones_like", "randn_like", "rand_like", "empty_like"):
        assert getattr(fg, like)(z).dtype == fg.complex64


def test_randn_complex_splits_unit_variance_over_the_parts():
    fg.manual_seed(0)
    a = fg.randn(400, 500, dtype=fg.complex64).numpy()
    assert abs(a.real.var() - 0.5) < 0.01 and abs(a.imag.var() - 0.5) < 0.01
    assert abs((np.abs(a) ** 2).mean() - 1) < 0.02
    r = fg.rand(1000, dtype=fg.complex128).numpy()
    assert r.real.min() >= 0 and r.real.max() < 1 and r.imag.min() >= 0 and r.imag.max() < 1


def test_is_complex_isreal_and_numpy():
    z = fg.tensor([1 + 0j, 2j, 3])
    assert fg.is_complex(z) and z.is_complex() and not fg.is_complex(fg.ones(1)) and not z.is_floating_point()
    assert z.dtype.is_complex
    _same(fg.isreal(z), torch.isreal(torch.tensor([1 + 0j, 2j, 3])))
    a = _c(3)
    t = fg.from_numpy(a)
    assert t.numpy() is a and np.asarray(t).dtype == np.complex64
    assert fg.tensor(a).tolist() == a.tolist() and isinstance(t[0].item(), complex)


@pytest.mark.parametrize("values", [[1.5 + 2j, -3.25j], [1 + 1j, 2 - 3j], [[1e-5 + 3j, 100j], [1, 2]], [0j], []])
def test_repr_as_torch(values):
    # (forgegrad names a dtype without torch's "torch." prefix, as for float64)
    for fdt, tdt in ((fg.complex64, torch.complex64), (fg.complex128, torch.complex128)):
        assert repr(fg.tensor(values, dtype=fdt)) == repr(torch.tensor(values, dtype=tdt)).replace("=torch.", "=")


def test_save_load_complex64_and_a_clear_error_for_complex128(tmp_path):
    import safetensors.torch
    z = fg.tensor(_c((3, 5)))
    fg.save({"z": z}, tmp_path / "a.safetensors")
    back = fg.load(tmp_path / "a.safetensors")["z"]
    np.testing.assert_array_equal(np.asarray(back), z.numpy())
    assert np.asarray(back).dtype == np.complex64
    np.testing.assert_array_equal(safetensors.torch.load_file(tmp_path / "a.safetensors")["z"].numpy(), z.numpy())
    with pytest.raises(TypeError, match="complex128, which safetensors cannot store.*C64"):
        fg.save({"z": z.to(fg.complex128)}, tmp_path / "b.safetensors")


# ---- op values ----------------------------------------------------------------------------------------------------
UNARY = ["neg", "exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh", "asin", "acos", "atan", "asinh",
         "atanh", "reciprocal", "rsqrt", "square", "sigmoid", "log2", "log10", "log1p", "expm1", "abs", "angle", "sgn",
         "conj", "conj_physical", "exp2", "isfinite", "isnan", "isinf"]


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("dts", DTYPES, ids=["c64", "c128"])
def test_unary_values(name, dts):
    a = _c((3, 5, 7), dts[0])
    f, t = getattr(fg, name)(fg.tensor(a)), getattr(torch, name)(torch.tensor(a))
    _same(f, t, rtol=1e-4 if dts[0] == np.complex64 else 1e-10, atol=1e-5 if dts[0] == np.complex64 else 1e-12)


@pytest.mark.parametrize("expr", [
    lambda m, x, y: x + y, lambda m, x, y: x - y * 2, lambda m, x, y: x * y, lambda m, x, y: x / y,
    lambda m, x, y: x ** 2, lambda m, x, y: x ** 0.5, lambda m, x, y: 2 ** x, lambda m, x, y: x ** (1 + 1j),
    lambda m, x, y: x ** y, lambda m, x, y: 1 - x, lambda m, x, y: 1 / x, lambda m, x, y: m.add(x, y, alpha=2),
    lambda m, x, y: x * y.real, lambda m, x, y: x + 1j, lambda m, x, y: m.complex(x.real, y.imag),
    lambda m, x, y: m.polar(x.abs(), y.angle()), lambda m, x, y: m.view_as_complex(m.view_as_real(x) * 2),
    lambda m, x, y: m.view_as_real(x.transpose(0, 1)), lambda m, x, y: x.to(m.complex128), lambda m, x, y: x == y,
    lambda m, x, y: x != x, lambda m, x, y: m.isclose(x, x + 1e-7j), lambda m, x, y: m.where(x.real > 0, x, y),
    lambda m, x, y: x.sum(), lambda m, x, y: x.sum((0, 2), keepdim=True), lambda m, x, y: x.mean(1),
    lambda m, x, y: x[:, :2].prod(1), lambda m, x, y: x.cumsum(2), lambda m, x, y: x.var(1), lambda m, x, y: x.std(),
    lambda m, x, y: x.norm(), lambda m, x, y: m.linalg.vector_norm(x, 3, dim=1),
    lambda m, x, y: x @ y.mT, lambda m, x, y: m.mm(x[0], y[0].t()), lambda m, x, y: m.bmm(x, y.transpose(1, 2)),
    lambda m, x, y: m.einsum("ijk,ilk->ijl", x, y), lambda m, x, y: m.vdot(x[0, 0], y[0, 0]),
    lambda m, x, y: m.dot(x[0, 0], y[0, 0]), lambda m, x, y: m.outer(x[0, 0], y[1, 1]),
    lambda m, x, y: (torch.nn.functional if m is torch else fg.nn.functional).linear(x, y[0]),
    lambda m, x, y: (torch.nn.functional if m is torch else fg.nn.functional).pad(x, (1, 2)),
    lambda m, x, y: m.cat([x, y], 1), lambda m, x, y: m.stack([x, y], 3), lambda m, x, y: x.reshape(-1, 7),
    lambda m, x, y: x.permute(2, 0, 1), lambda m, x, y: x[1:, m.tensor([0, 4, 2])], lambda m, x, y: x[x.real > 0],
    lambda m, x, y: m.flip(x, (0, 2)), lambda m, x, y: m.roll(x, (1, -2), (0, 2)), lambda m, x, y: x.unbind(1)[3],
    lambda m, x, y: m.gather(x, 0, m.zeros(2, 5, 7, dtype=m.int64)), lambda m, x, y: m.diag(x[0, 0]),
    lambda m, x, y: m.triu(x), lambda m, x, y: m.diff(x, dim=1), lambda m, x, y: x.masked_fill(x.real > 0, 0),
    lambda m, x, y: x.expand(2, 3, 5, 7), lambda m, x, y: m.trace(x[0, :, :5]),
    lambda m, x, y: m.kron(x[0, :2], y[0, :2]),
])
@pytest.mark.parametrize("dts", DTYPES, ids=["c64", "c128"])
def test_op_values(expr, dts):
    a, b = _c((3, 5, 7), dts[0]), _c((3, 5, 7), dts[0])
    tight = dts[0] == np.complex128
    _same(expr(fg, fg.tensor(a), fg.tensor(b)), expr(torch, torch.tensor(a), torch.tensor(b)),
          rtol=1e-10 if tight else 1e-4, atol=1e-10 if tight else 1e-5)


def test_length_one_and_zero_d():
    z = _c(()).astype(np.complex64)
    _same(fg.tensor(z).exp() * 2, torch.tensor(z).exp() * 2)
    _same(fg.view_as_real(fg.tensor(z)), torch.view_as_real(torch.tensor(z)))
    one = _c(1)
    _same(fg.tensor(one).sum(0), torch.tensor(one).sum(0))


def test_allclose_and_equal():
    a = fg.tensor(_c(4))
    assert fg.allclose(a, a + 1e-9j) and not fg.allclose(a, a + 1e-2j) and fg.equal(a, a.clone())


# ---- views ----------------------------------------------------------------------------------------------------------
def test_real_imag_are_views_that_write_through():
    z = fg.tensor(np.array([1 + 2j, 3 - 4j], np.complex64))
    assert z.real.dtype == fg.float32 and z.imag.dtype == fg.float32
    z.real.mul_(10)
    z.imag.zero_()
    np.testing.assert_array_equal(z.numpy(), [10, 30])
    r = fg.view_as_real(z)
    r[1, 1] = 5.0
    assert z.tolist() == [10 + 0j, 30 + 5j]
    x = fg.zeros(2, 2)
    c = fg.view_as_complex(x)
    c.add_(1 + 2j)
    assert x.tolist() == [[1, 2], [1, 2]]
    x = fg.ones(3)
    assert fg.real(x) is x and fg.conj(x) is x and not fg.is_conj(fg.conj(z))


def test_view_errors_as_torch():
    with pytest.raises(RuntimeError, match="imag is not implemented for tensors with non-complex dtypes"):
        fg.ones(2).imag
    with pytest.raises(RuntimeError, match="view_as_real is only supported for complex tensors"):
        fg.view_as_real(fg.ones(2))
    with pytest.raises(RuntimeError, match="last dimension of size 2"):
        fg.view_as_complex(fg.ones(2, 3))
    with pytest.raises(RuntimeError, match="stride 1"):
        fg.view_as_complex(fg.ones(2, 2).t())
    with pytest.raises(RuntimeError, match="float and double"):
        fg.view_as_complex(fg.ones(2, 2, dtype=fg.int64))
    with pytest.raises(RuntimeError, match="expected object of scalar type"):
        fg.complex(fg.ones(2), fg.ones(2, dtype=fg.float64))
    with pytest.raises(RuntimeError, match="float or double"):
        fg.complex(fg.ones(2, dtype=fg.int64), fg.ones(2, dtype=fg.int64))


def test_cast_to_real_warns_and_keeps_the_real_part():
    z = fg.tensor([1 + 2j])
    with pytest.warns(UserWarning, match="discards the imaginary part"):
        r = z.to(fg.float32)
    assert r.tolist() == [1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fg.ones(2).to(fg.complex64).dtype == fg.complex64 and fg.ones(2).cdouble().dtype == fg.complex128


# ---- refusals -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,call", [
    ("relu", lambda z: fg.nn.functional.relu(z)), ("compare 'lt'", lambda z: z < z), ("clamp", lambda z: z.clamp(0, 1)),
    ("floor", lambda z: z.floor()), ("atan2", lambda z: fg.atan2(z, z)), ("amax", lambda z: z.max()),
    ("argmax", lambda z: z.argmax()), ("softmax", lambda z: z.softmax(0)), ("conv1d", lambda z: fg.nn.functional.conv1d(
        z[None], z[None])), ("maximum", lambda z: fg.maximum(z, z)), ("sort", lambda z: fg.sort(z)),
    ("topk", lambda z: z.topk(1)), ("unique", lambda z: fg.unique(z)), ("cumprod", lambda z: z.cumprod(0)),
    ("mse_loss", lambda z: fg.nn.functional.mse_loss(z, z)),
    ("layer_norm", lambda z: fg.nn.functional.layer_norm(z, (2,))), ("erf", lambda z: fg.erf(z)),
    ("remainder", lambda z: z % 2), ("relu", lambda z: fg.nn.functional.relu(z.real * 1j)),
    ("pad (mode 'reflect'", lambda z: fg.nn.functional.pad(z[None], (1, 1), mode="reflect")),
    ("clamp", lambda z: fg.ones(2, 2).clamp(min=0) * 1j + fg.clamp(z, 0)),
])
def test_ops_without_complex_support_raise_naming_the_op(name, call):
    z = fg.tensor(_c((2, 2)))
    with pytest.raises(TypeError, match="complex inputs are not supported by " + re.escape(name)):
        call(z)


def test_refusal_names_the_argument():
    with pytest.raises(TypeError, match=r"by atan2 \(argument 'other' is complex\)"):
        fg.atan2(fg.ones(2), fg.tensor([1j, 2]))


def test_mixed_matmul_dtypes_refused_as_torch():
    with pytest.raises(RuntimeError, match="same dtype"):
        fg.ones(2, 2) @ fg.ones(2, 2, dtype=fg.complex64)


def test_onnx_export_of_a_complex_graph_is_refused(tmp_path):
    from forgegrad.onnx import UnsupportedOpError

    class M(fg.nn.Module):
        def forward(self, x):
            return fg.fft.rfft(x).abs()

    with pytest.raises(UnsupportedOpError, match="ONNX export of complex tensors is not supported"):
        fg.onnx.export(M(), (fg.randn(2, 8),), tmp_path / "m.onnx")


def test_inplace_writes_through_dtype_views_under_autograd_are_refused():
    w = fg.tensor(_c(3), requires_grad=True)
    z = w * 1
    for write in (lambda: z.real.mul_(2), lambda: fg.view_as_real(z).__setitem__((0, 1), 5.0),
                  lambda: z.imag.copy_(fg.ones(3, requires_grad=True) * 2)):
        with pytest.raises(RuntimeError, match="view that changes the dtype"):
            write()


def test_inplace_on_a_complex_graph_tensor_as_torch():
    a = _c(3)
    grads = []
    for m in (fg, torch):
        w = m.tensor(a.copy(), requires_grad=True)
        z = w * 1
        z.mul_(2j)
        z.add_(w)
        grads.append(m.autograd.grad((z.abs() ** 2).sum(), [w])[0])
    np.testing.assert_allclose(grads[0].numpy(), grads[1].numpy(), rtol=1e-5, atol=1e-6)


def test_type_names_and_cpu_only():
    from forgegrad import devices
    assert fg.tensor([1j]).type() == torch.tensor([1j]).type() == "torch.ComplexFloatTensor"
    assert fg.ones(1, dtype=fg.complex128).type() == "torch.ComplexDoubleTensor"
    with pytest.raises(NotImplementedError, match="complex tensors live on the CPU only"):
        devices.transfer(np.zeros(2, np.complex64), "cuda")
    assert fg.zeros(2, dtype=fg.complex64, device="meta").dtype == fg.complex64
