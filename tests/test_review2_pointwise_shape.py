"""Regressions found reviewing the torch pointwise math (ops/pointwise_math.py) and the torch shape functions
(_torch_shape*.py, ops/shape_more.py), each against torch 2.13 (or onnxruntime for the exports)."""
import warnings

import numpy as np
import pytest
import torch

import forgegrad as fg


def _both(fn):
    """fn(torch) and fn(forgegrad), as numpy."""
    out = []
    for m in (torch, fg):
        r = fn(m)
        out.append([np.asarray(t.detach().numpy()) for t in (r if isinstance(r, (tuple, list)) else (r,))])
    return out


def _close(want, got, tol=1e-6):
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, equal_nan=True)


# ---- 0-d inputs of the pointwise ops: backward returned a (1,) gradient and autograd refused it ----------------
UNARY_0D = ["floor", "log1p", "expm1", "log2", "exp2", "rsqrt", "reciprocal", "square", "tan", "sinh", "asin",
            "acosh", "atanh", "sinc", "i0", "logit", "erf", "lgamma", "trunc"]


@pytest.mark.parametrize("name", UNARY_0D)
def test_pointwise_backward_of_a_0d_input(name):
    value = 1.5 if name == "acosh" else 0.3

    def run(m):
        x = m.tensor(value, dtype=m.float64, requires_grad=True)
        y = getattr(m, name)(x)
        y.backward()
        return y, x.grad
    want, got = _both(run)
    _close(want, got, 1e-10)


@pytest.mark.parametrize("name", ["float_power", "ldexp", "atan2", "hypot", "xlogy"])
def test_binary_pointwise_backward_of_0d_inputs(name):
    def run(m):
        x = m.tensor(0.7, dtype=m.float64, requires_grad=True)
        e = m.tensor(1.5, dtype=m.float64, requires_grad=True)
        y = getattr(m, name)(x, e)
        y.backward()
        return y, x.grad, e.grad
    want, got = _both(run)
    _close(want, got, 1e-10)


def test_0d_double_backward():
    def run(m):
        x = m.tensor(0.5, requires_grad=True)
        g, = m.autograd.grad(m.log1p(x) * m.sinc(x), x, create_graph=True)
        h, = m.autograd.grad(g, x)
        return g, h
    want, got = _both(run)
    _close(want, got, 1e-5)


# ---- logit: torch's eps < 0 is no clamp, eps > 0.5 clamps below to eps first ------------------------------------
@pytest.mark.parametrize("eps", [-0.1, 0.6, 0.5, 0.0, 0.2])
def test_logit_eps_edges(eps):
    def run(m):
        x = m.tensor([0.0, 0.05, 0.5, 0.95, 1.0, -0.2, 1.3, 0.1, 0.9], requires_grad=True)
        y = m.logit(x, eps)
        y.sum().backward()
        return y, x.grad
    want, got = _both(run)
    _close(want, got, 1e-5)


# ---- rot90 by a multiple of 4 turns is a copy, as torch's (it aliased the input) ---------------------------------
@pytest.mark.parametrize("k", [0, 4, -4])
def test_rot90_full_turns_do_not_alias(k):
    x = fg.tensor(np.arange(6.0, dtype=np.float32).reshape(2, 3))
    y = fg.rot90(x, k)
    y.fill_(-1.0)
    np.testing.assert_array_equal(x.numpy(), np.arange(6.0, dtype=np.float32).reshape(2, 3))


# ---- combinations with r=0: an empty 1-d tensor (was a numpy reshape error) ---------------------------------------
@pytest.mark.parametrize("with_replacement", [False, True])
def test_combinations_r0(with_replacement):
    want, got = _both(lambda m: m.combinations(m.tensor([1.0, 2.0, 3.0]), 0, with_replacement))
    _close(want, got)


# ---- addcmul of integer tensors: torch casts value to the integer dtype (truncating) -----------------------------
@pytest.mark.parametrize("value", [0.5, -1.7, 2.0, 3])
def test_addcmul_integer_tensors_truncate_value(value):
    want, got = _both(lambda m: m.addcmul(m.arange(4), m.arange(4) + 1, m.arange(4) + 2, value=value))
    _close(want, got)


@pytest.mark.parametrize("fn", ["addcmul", "addcdiv"])
def test_addc_takes_a_one_element_tensor_value(fn):
    a = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    want, got = _both(lambda m: getattr(m, fn)(m.tensor(a), m.tensor(a) + 2, m.tensor(a) * 0 + 3,
                                                value=m.tensor(-0.5)))
    _close(want, got, 1e-6)


# ---- index_put with a uint8 index: a mask, as torch's (was taken as integer positions) -------------------------
@pytest.mark.parametrize("accumulate", [False, True])
def test_index_put_uint8_mask(accumulate):
    a = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)

    def run(m):
        x = m.tensor(a, requires_grad=True)
        v = m.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = m.index_put(x, (m.tensor([1, 0, 1], dtype=m.uint8),), v, accumulate)
        (y * m.arange(12.0).reshape(3, 4)).sum().backward()
        return y, x.grad, v.grad
    want, got = _both(run)
    _close(want, got, 1e-6)


# ---- ONNX: rot90, diff and repeat_interleave along the dynamic batch axis ------------------------------------------
# (their graphs kept the traced size in constant Gather indices / Slice ends: wrong at other batch sizes)
ALONG_BATCH = {
    "rot90_k2": lambda x: fg.rot90(x, 2, (1, 0)),
    "rot90_k1": lambda x: fg.rot90(x, 1, (0, 1)),
    "rot90_k3": lambda x: fg.rot90(x, 3, (0, 1)),
    "diff_n2": lambda x: fg.diff(x, 2, 0),
    "diff_prepend": lambda x: fg.diff(x, 1, 0, prepend=x[:1] * 2),
    "repeat_interleave_dim0": lambda x: fg.repeat_interleave(x, 3, 0),
    "repeat_interleave_flat": lambda x: fg.repeat_interleave(x, 2),
    "repeat_interleave_dim1": lambda x: fg.repeat_interleave(x, 2, 1),
}


@pytest.mark.parametrize("name", sorted(ALONG_BATCH))
def test_onnx_along_the_batch_axis(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    fn = ALONG_BATCH[name]

    class Net(fg.nn.Module):
        def forward(self, x):
            return fn(x)

    rng = np.random.default_rng(3)
    path = str(tmp_path / f"{name}.onnx")
    fg.onnx.export(Net(), (fg.tensor(rng.standard_normal((4, 6)).astype(np.float32)),), path)
    sess = ort.InferenceSession(path)
    for batch in (2, 7):
        x = rng.standard_normal((batch, 6)).astype(np.float32)
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        want = fn(fg.tensor(x)).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---- ONNX: floor / ceil / trunc of an integer tensor (ONNX's Floor takes floats: the graph failed the checker),
# and float64 graphs (the ops' constants were float32: Add/Sub/Div with mixed types failed the checker) ----------
def _export_and_run(fn, x, tmp_path, name):
    ort = pytest.importorskip("onnxruntime")

    class Net(fg.nn.Module):
        def forward(self, x):
            return fn(x)

    path = str(tmp_path / f"{name}.onnx")
    fg.onnx.export(Net(), (fg.from_numpy(x.copy()),), path)
    sess = ort.InferenceSession(path)
    bigger = np.concatenate([x, x[:1] + x[:1]], 0)
    got = sess.run(None, {sess.get_inputs()[0].name: bigger})[0]
    want = fn(fg.from_numpy(bigger.copy())).numpy()
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_onnx_rounding_of_integers(dtype, tmp_path):
    x = np.arange(-6, 6, dtype=dtype).reshape(3, 4)
    _export_and_run(lambda t: fg.floor(t) + fg.ceil(t) * 2 + fg.trunc(t) * 3 + fg.square(t), x, tmp_path, "int")


FLOAT64_ONNX = {"log1p": fg.log1p, "expm1": fg.expm1, "log2": fg.log2, "log10": fg.log10, "exp2": fg.exp2,
                "rsqrt": fg.rsqrt, "reciprocal": fg.reciprocal, "sinc": fg.sinc, "logit": fg.logit,
                "logit_eps": lambda t: fg.logit(t, 0.2), "logit_big_eps": lambda t: fg.logit(t, 0.6),
                "logit_neg_eps": lambda t: fg.logit(t, -0.1), "ldexp": lambda t: fg.ldexp(t, t),
                "floor": fg.floor, "square": fg.square, "float_power": lambda t: fg.float_power(t, 2.5)}


@pytest.mark.parametrize("name", sorted(FLOAT64_ONNX))
def test_onnx_float64(name, tmp_path):
    x = np.random.default_rng(4).uniform(0.1, 0.9, (3, 4))
    _export_and_run(FLOAT64_ONNX[name], x, tmp_path, name)


# ---- a 0-d leaf reached twice: its summed gradient was a numpy scalar, and .grad.numpy() raised ------------------
def test_0d_leaf_used_twice_has_an_array_gradient():
    a = fg.tensor(1.5, requires_grad=True)
    (fg.addcmul(a, a, a) + a.sin()).backward()
    (a * 2).backward()  # and accumulated again by a second backward
    t = torch.tensor(1.5, requires_grad=True)
    (torch.addcmul(t, t, t) + t.sin()).backward()
    (t * 2).backward()
    assert isinstance(a.grad.numpy(), np.ndarray) and a.grad.shape == ()
    np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-6)
    x = fg.tensor(0.5, requires_grad=True)
    g, = fg.autograd.grad(x * x + x.exp(), x)
    assert isinstance(g.numpy(), np.ndarray) and g.shape == ()


# ---- sum of a uint8 tensor (and sum_to_size of one) raised KeyError: numpy summed it in uint64 ---------------------
@pytest.mark.parametrize("call", [lambda m, x: x.sum(), lambda m, x: x.sum(0), lambda m, x: x.sum(1, keepdim=True),
                                  lambda m, x: x.sum_to_size(1, 4)])
def test_uint8_sum(call):
    a = np.full((3, 4), 200, np.uint8)
    want, got = _both(lambda m: call(m, m.from_numpy(a.copy())))
    _close(want, got)
