"""torch's basic pointwise float math (forgegrad/ops/pointwise_math.py, forgegrad/_torch_pointwise.py) against torch
2.13: functions, Tensor methods, in-place variants and aliases on odd shapes, float32 / float64 / integer inputs,
edge values (inf, nan, +-0, domain edges), gradients there, and the errors for bad arguments. The registry's
generated checks (tests/test_op_registry.py -k NAME) cover the samples, ONNX, meta and threads."""
import numpy as np
import pytest
import torch

import forgegrad as fg

# name -> (low, high) of random inputs inside its domain
DOMAIN = {"floor": (-3, 3), "ceil": (-3, 3), "log1p": (-0.9, 3), "expm1": (-3, 3), "log2": (0.05, 5),
          "log10": (0.05, 5), "exp2": (-4, 4), "rsqrt": (0.1, 4), "reciprocal": (0.3, 3), "square": (-3, 3),
          "tan": (-1.3, 1.3), "sinh": (-3, 3), "cosh": (-3, 3), "asin": (-0.95, 0.95), "acos": (-0.95, 0.95),
          "atan": (-4, 4), "asinh": (-4, 4), "acosh": (1.05, 4), "atanh": (-0.95, 0.95), "sinc": (-3, 3),
          "i0": (-4, 4)}
UNARY = sorted(DOMAIN)
NO_TORCH_INPLACE_GRAD = {"acosh", "asinh", "atanh"}  # torch 2.13 defines no gradient for their in-place forms
ARC = {"arcsin": "asin", "arccos": "acos", "arctan": "atan", "arcsinh": "asinh", "arccosh": "acosh",
       "arctanh": "atanh"}
EDGES = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, np.inf, -np.inf, np.nan, 1e-30, -1e-7, 100.0], np.float32)


def _rand(name, shape, seed=0, dtype=np.float32):
    lo, hi = DOMAIN[name]
    return np.random.default_rng(seed).uniform(lo, hi, size=shape).astype(dtype)


def _same(got, want, rtol=2e-6, atol=1e-6):
    """Values (NaN where torch's, the sign of a zero as torch's) and dtype."""
    w = want.detach().numpy()
    g = got.detach().numpy() if isinstance(got, fg.Tensor) else np.asarray(got)
    assert g.dtype == w.dtype, (g.dtype, w.dtype)
    assert g.shape == w.shape
    if g.dtype.kind in "iub":
        np.testing.assert_array_equal(g, w)
        return
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    zero = w == 0
    np.testing.assert_array_equal(np.signbit(g[zero]), np.signbit(w[zero]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", UNARY)
def test_function_method_inplace_and_gradient_match_torch(name, dtype):
    x = _rand(name, (3, 5, 7), dtype=dtype)
    fx, tx = fg.tensor(x.copy(), requires_grad=True), torch.tensor(x.copy(), requires_grad=True)
    y, ty = getattr(fg, name)(fx), getattr(torch, name)(tx)
    _same(y, ty)
    _same(getattr(fx, name)(), ty)
    w = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    (y * fg.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    _same(fx.grad, tx.grad, rtol=1e-5)
    # in place on a non-leaf in the graph: torch's gradient through the rewritten tensor
    fx.grad, tx.grad = None, None
    fz, tz = fx * 1.0, tx * 1.0
    assert getattr(fz, name + "_")() is fz
    if name in NO_TORCH_INPLACE_GRAD:  # torch: "the derivative for 'inplace version of acosh' is not implemented"
        tz = getattr(torch, name)(tz)
    else:
        getattr(tz, name + "_")()
    _same(fz, tz)
    fz.sum().backward()
    tz.sum().backward()
    _same(fx.grad, tx.grad, rtol=1e-5)


@pytest.mark.parametrize("name", UNARY)
def test_edge_values_and_their_gradients_match_torch(name):
    fx, tx = fg.tensor(EDGES.copy(), requires_grad=True), torch.tensor(EDGES.copy(), requires_grad=True)
    y, ty = getattr(fg, name)(fx), getattr(torch, name)(tx)
    _same(y, ty)
    y.backward(fg.ones(len(EDGES)))
    ty.backward(torch.ones(len(EDGES)))
    _same(fx.grad, tx.grad, rtol=1e-5)


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_integer_inputs_promote_as_torch(name, dtype):
    x = np.array([[0, 1, 2, 3], [4, 5, 6, 7]], dtype)
    if dtype != np.uint8:
        x = x - 3
    _same(getattr(fg, name)(fg.from_numpy(x)), getattr(torch, name)(torch.tensor(x)))  # fg.tensor makes int64


def test_square_of_bool_is_int64_and_floor_of_bool_refuses():
    b = np.array([True, False])
    _same(fg.square(fg.tensor(b)), torch.square(torch.tensor(b)))
    with pytest.raises(TypeError, match="bool"):
        fg.floor(fg.tensor(b))


def test_domain_edges():
    for name, v, want in (("acosh", 1.0, 0.0), ("atanh", 1.0, np.inf), ("atanh", -1.0, -np.inf),
                          ("log1p", -1.0, -np.inf), ("rsqrt", 0.0, np.inf), ("rsqrt", -0.0, -np.inf),
                          ("reciprocal", -0.0, -np.inf), ("sinc", 0.0, 1.0), ("log2", 0.0, -np.inf)):
        got = float(getattr(fg, name)(fg.tensor([v])).item())
        assert got == want == float(getattr(torch, name)(torch.tensor([v])).item()), (name, v, got)
    for name, v in (("acosh", 0.5), ("atanh", 1.5), ("log1p", -2.0), ("asin", 1.5), ("log10", -1.0)):
        assert np.isnan(getattr(fg, name)(fg.tensor([v])).item())


def test_sinc_gradient_at_zero_is_zero_as_torch():
    fx, tx = fg.tensor([0.0, 1.0, -0.5], requires_grad=True), torch.tensor([0.0, 1.0, -0.5], requires_grad=True)
    fg.sinc(fx).sum().backward()
    torch.sinc(tx).sum().backward()
    _same(fx.grad, tx.grad)
    assert fx.grad.numpy()[0] == 0


@pytest.mark.parametrize("alias,name", sorted(ARC.items()))
def test_arc_aliases(alias, name):
    x = _rand(name, (4, 3), seed=2)
    fx, tx = fg.tensor(x), torch.tensor(x)
    _same(getattr(fg, alias)(fx), getattr(torch, alias)(tx))
    _same(getattr(fx, alias)(), getattr(tx, alias)())
    fz, tz = fx.clone(), tx.clone()
    getattr(fz, alias + "_")()
    getattr(tz, alias + "_")()
    _same(fz, tz)


def _pair(*shape, seed=0, dtype=np.float32):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return fg.tensor(x.copy()), torch.tensor(x.copy())


def test_arithmetic_aliases():
    (a, ta), (b, tb) = _pair(3, 5), _pair(5, seed=1)
    _same(fg.negative(a), torch.negative(ta))
    _same(a.negative(), ta.negative())
    assert fg.positive(a) is a and a.positive() is a
    with pytest.raises(TypeError, match="bool"):
        fg.positive(fg.tensor([True]))
    _same(fg.absolute(a), torch.absolute(ta))
    _same(fg.subtract(a, b, alpha=2), torch.subtract(ta, tb, alpha=2))
    _same(a.subtract(b), ta.subtract(tb))
    _same(fg.multiply(a, b), torch.multiply(ta, tb))
    _same(fg.divide(a, b), torch.divide(ta, tb))
    _same(fg.divide(a, b, rounding_mode="floor"), torch.divide(ta, tb, rounding_mode="floor"))
    _same(a.divide(b, rounding_mode="trunc"), ta.divide(tb, rounding_mode="trunc"))
    _same(fg.true_divide(a, 3), torch.true_divide(ta, 3))
    for name, args, kw in (("negative_", (), {}), ("absolute_", (), {}), ("subtract_", (b,), {"alpha": 3}),
                           ("multiply_", (b,), {}), ("divide_", (b,), {}), ("true_divide_", (b,), {}),
                           ("divide_", (b,), {"rounding_mode": "floor"})):
        fz, tz = a.clone(), ta.clone()
        targs = tuple(tb if x is b else x for x in args)
        assert getattr(fz, name)(*args, **kw) is fz
        getattr(tz, name)(*targs, **kw)
        _same(fz, tz)


EXISTING = ("abs", "cos", "exp", "log", "sigmoid", "sin", "sqrt", "tanh", "relu", "neg", "erf", "erfc")


@pytest.mark.parametrize("name", EXISTING + ("clamp", "clip"))
def test_inplace_methods_of_existing_functions(name):
    a, ta = _pair(4, 7, seed=3)
    if name in ("log", "sqrt"):
        a, ta = a.abs() + 0.1, ta.abs() + 0.1
    kw = {"min": -0.5, "max": 0.7} if name in ("clamp", "clip") else {}
    fz, tz = a.clone(), ta.clone()
    v = fz._version
    assert getattr(fz, name + "_")(**kw) is fz
    getattr(tz, name + "_")(**kw)
    _same(fz, tz)
    assert fz._version == v + 1
    leaf = fg.tensor(a.numpy(), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        getattr(leaf, name + "_")(**kw)
    # through the graph: the gradient of the in-place result, as torch's
    fx, tx = fg.tensor(a.numpy(), requires_grad=True), torch.tensor(ta.numpy(), requires_grad=True)
    fy, ty = fx * 1.5, tx * 1.5
    getattr(fy, name + "_")(**kw)
    getattr(ty, name + "_")(**kw)
    fy.sum().backward()
    ty.sum().backward()
    _same(fx.grad, tx.grad, rtol=1e-5)


def test_inplace_rules():
    leaf = fg.tensor([0.5, 1.5], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        leaf.floor_()
    with fg.no_grad():  # torch allows it under no_grad
        leaf.floor_()
    assert leaf.numpy().tolist() == [0.0, 1.0]
    i = fg.tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match="can't be cast"):  # torch: RuntimeError, a float result in an int tensor
        i.log1p_()
    with pytest.raises(RuntimeError):
        torch.tensor([1, 2, 3]).log1p_()
    i.square_()
    assert i.numpy().tolist() == [1, 4, 9] and i.dtype == fg.int64
    i.floor_()
    assert i.numpy().tolist() == [1, 4, 9]
    # a saved input rewritten in place: backward refuses, as torch
    x = fg.tensor([0.3, 0.4], requires_grad=True)
    y = x * 1.0
    z = y.tan()
    y.exp_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_logit_matches_torch():
    x = np.random.default_rng(4).uniform(-0.1, 1.1, size=(3, 11)).astype(np.float32)
    x[0, :4] = [0.0, 1.0, 0.5, 0.1]
    for eps in (None, 0.1, 0.0):
        fx, tx = fg.tensor(x.copy(), requires_grad=True), torch.tensor(x.copy(), requires_grad=True)
        y, ty = fg.logit(fx, eps=eps), torch.logit(tx, eps=eps)
        _same(y, ty)
        y.backward(fg.ones(*x.shape))  # (the sum of +-inf is NaN)
        ty.backward(torch.ones(*x.shape))
        _same(fx.grad, tx.grad, rtol=1e-5)
        _same(fx.logit(eps), tx.logit(eps))
        fz, tz = fx.detach().clone(), tx.detach().clone()
        fz.logit_(eps)
        tz.logit_(eps)
        _same(fz, tz)
    with pytest.raises(TypeError, match="eps"):
        fg.logit(fg.tensor(x), eps="0.1")


def test_float_power_is_float64_with_gradients_in_the_inputs_dtypes():
    x = np.random.default_rng(5).uniform(0.2, 3, size=(2, 3, 5)).astype(np.float32)
    e = np.random.default_rng(6).uniform(-2, 2, size=(3, 1)).astype(np.float32)
    fx, fe = fg.tensor(x, requires_grad=True), fg.tensor(e, requires_grad=True)
    tx, te = torch.tensor(x, requires_grad=True), torch.tensor(e, requires_grad=True)
    y, ty = fg.float_power(fx, fe), torch.float_power(tx, te)
    _same(y, ty, rtol=1e-12)
    y.sum().backward()
    ty.sum().backward()
    _same(fx.grad, tx.grad)
    _same(fe.grad, te.grad, rtol=1e-5)
    _same(fg.float_power(fg.tensor([1, 2, 3]), 2), torch.float_power(torch.tensor([1, 2, 3]), 2))
    _same(fx.float_power(0.5), tx.float_power(0.5))
    d = fg.tensor(x.astype(np.float64))
    d.float_power_(2)
    _same(d, torch.tensor(x.astype(np.float64)).float_power_(2))
    with pytest.raises(RuntimeError, match="float64"):
        fg.tensor(x).float_power_(2)
    with pytest.raises(RuntimeError):
        torch.tensor(x).float_power_(2)
    with pytest.raises(TypeError, match="exponent"):
        fg.float_power(fg.tensor(x), "2")


def test_ldexp():
    a, ta = _pair(3, 4, seed=7)
    o = np.array([[-2, 0, 1, 3]])
    _same(fg.ldexp(a, fg.tensor(o)), torch.ldexp(ta, torch.tensor(o)))
    _same(fg.ldexp(fg.tensor(o), fg.tensor(o)), torch.ldexp(torch.tensor(o), torch.tensor(o)))  # ints: float32
    fz, tz = a.clone(), ta.clone()
    fz.ldexp_(fg.tensor(o))
    tz.ldexp_(torch.tensor(o))
    _same(fz, tz)
    # the gradient is 2 ** other; torch 2.13 gives 0 for a negative integer exponent (2 ** -2 in integers), so
    # compare with torch given the exponent as floats
    fx = fg.tensor(a.numpy(), requires_grad=True)
    tx = torch.tensor(ta.numpy(), requires_grad=True)
    fg.ldexp(fx, fg.tensor(o)).sum().backward()
    torch.ldexp(tx, torch.tensor(o, dtype=torch.float32)).sum().backward()
    _same(fx.grad, tx.grad)


def test_i0_differentiates_twice_through_special_i1():
    x = np.array([0.0, 0.5, -1.5, 3.0])
    fx, tx = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (g,) = fg.autograd.grad(fg.i0(fx).sum(), [fx], create_graph=True)
    (tg,) = torch.autograd.grad(torch.i0(tx).sum(), [tx], create_graph=True)
    _same(g, tg, rtol=1e-12)
    (gg,) = fg.autograd.grad(g.sum(), [fx])
    (tgg,) = torch.autograd.grad(tg.sum(), [tx])
    _same(gg, tgg, rtol=1e-12)


@pytest.mark.parametrize("name", UNARY + sorted(ARC) + ["logit", "negative", "absolute", "positive"])
def test_a_non_tensor_input_names_the_argument(name):
    with pytest.raises(TypeError, match="input"):
        getattr(fg, name)("not a tensor")


@pytest.mark.parametrize("name", ["subtract", "multiply", "divide", "true_divide", "float_power", "ldexp"])
def test_binary_non_tensor_input(name):
    with pytest.raises(TypeError, match="input"):
        getattr(fg, name)([1.0, 2.0], fg.tensor([1.0, 2.0]))


def test_names_are_exported():
    names = UNARY + sorted(ARC) + ["logit", "float_power", "ldexp", "negative", "positive", "absolute", "subtract",
                                   "multiply", "divide", "true_divide"]
    for n in names:
        assert n in fg.__all__ and n not in fg._TORCH_NAMES, n
        assert hasattr(fg.Tensor, n), n
        if n != "positive":
            assert hasattr(fg.Tensor, n + "_"), n


def test_a_float64_tensor_that_requires_grad_stays_float64_across_devices():
    # found with float_power on the seam test device: the recorded copy back to the CPU made float64 float32
    import device_seam_helpers as seam
    with seam.registered():
        x = fg.tensor(np.array([1.5, 2.0], np.float32)).to(seam.DEVICE).requires_grad_(True)
        y = fg.float_power(x, 2.0)
        back = y.cpu()
        assert y.dtype == back.dtype == fg.float64
        back.sum().backward()
        assert x.grad.dtype == fg.float32 and x.grad.cpu().numpy().tolist() == [3.0, 4.0]
