"""torch's keyword arguments that forgegrad accepts (dtype= on softmax and reductions, var/std correction=, the
loss functions' deprecated size_average/reduce and weight=, generator=, ...), each checked against torch itself:
values, the result's dtype and the gradient where one flows. Also the arguments forgegrad refuses (they raise,
never silently ignored) and tools/signature_audit.py, which lists what is left."""
import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import forgegrad as fg
import forgegrad.nn.functional as F

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4, 5)).astype(np.float32)
INTS = RNG.integers(-3, 4, (3, 4)).astype(np.int64)
DT = {"float32": (fg.float32, torch.float32), "float64": (fg.float64, torch.float64)}


def _run(fn, x, dtype, grad):
    """fn(m, F, t, dtype) under forgegrad and torch from the same values: (fg result, torch result, fg grad,
    torch grad); the gradient is of (result * weights).sum(), fixed weights, when ``grad``."""
    out = []
    for m, mf, dt in ((fg, F, DT[dtype][0] if dtype else None), (torch, TF, DT[dtype][1] if dtype else None)):
        t = m.tensor(x.copy(), requires_grad=grad) if m is fg else torch.tensor(x.copy(), requires_grad=grad)
        y = fn(m, mf, t, dt)
        g = None
        if grad:
            w = np.linspace(-1, 1, int(np.prod(tuple(y.shape)))).reshape(tuple(y.shape))
            (y * m.tensor(w.astype(np.float64 if dtype == "float64" else np.float32))).sum().backward()
            g = t.grad
        out.append((y, g))
    (a, ga), (b, gb) = out
    return a, b, ga, gb


def _check(a, b, rtol=1e-5, atol=1e-6):
    assert str(a.dtype).split(".")[-1] == str(b.dtype).split(".")[-1], (a.dtype, b.dtype)
    assert tuple(a.shape) == tuple(b.shape)
    np.testing.assert_allclose(np.asarray(a.numpy(), np.float64), b.detach().double().numpy(), rtol=rtol, atol=atol)


SOFTMAX_CALLS = {
    "F.softmax": lambda m, mf, t, dt: mf.softmax(t, 1, dtype=dt),
    "F.log_softmax": lambda m, mf, t, dt: mf.log_softmax(t, -1, dtype=dt),
    "F.softmin": lambda m, mf, t, dt: mf.softmin(t, 2, dtype=dt),
    "F.softmax positional": lambda m, mf, t, dt: mf.softmax(t, 0, 3, dt),
    "torch.softmax": lambda m, mf, t, dt: m.softmax(t, 1, dtype=dt),
    "torch.log_softmax": lambda m, mf, t, dt: m.log_softmax(t, 2, dtype=dt),
    "Tensor.softmax": lambda m, mf, t, dt: t.softmax(1, dtype=dt),
    "Tensor.log_softmax positional": lambda m, mf, t, dt: t.log_softmax(0, dt),
    "special.softmax": lambda m, mf, t, dt: m.special.softmax(t, 1, dtype=dt),
}


@pytest.mark.parametrize("name", sorted(SOFTMAX_CALLS))
def test_softmax_family_dtype(name):
    """dtype= casts the input first; the gradient comes back in the input's dtype (float32 here)."""
    a, b, ga, gb = _run(SOFTMAX_CALLS[name], X, "float64", grad=True)
    assert a.dtype == fg.float64
    _check(a, b, rtol=1e-12, atol=1e-12)
    _check(ga, gb)


def test_softmax_of_integers_with_dtype():
    a, b, _, _ = _run(lambda m, mf, t, dt: mf.softmax(t, 1, dtype=dt), INTS, "float32", grad=False)
    _check(a, b)


@pytest.mark.parametrize("ndim", [0, 1, 2, 3, 4])
def test_softmax_without_dim_takes_torchs_implicit_dim(ndim):
    x = RNG.standard_normal((2, 3, 4, 5)[:ndim]).astype(np.float32)
    for fn in (lambda mf, t: mf.softmax(t), lambda mf, t: mf.log_softmax(t)):
        with pytest.warns(UserWarning, match="Implicit dimension"):
            a = fn(F, fg.tensor(x))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b = fn(TF, torch.tensor(x))
        _check(a, b)


@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
def test_softmax_modules_default_to_torchs_implicit_dim(ndim):
    """nn.Softmax() / nn.LogSoftmax() take torch's default dim=None: the implicit dim (0 for a 3-d input)."""
    x = RNG.standard_normal((2, 3, 4, 5)[:ndim]).astype(np.float32)
    for name in ("Softmax", "LogSoftmax"):
        with pytest.warns(UserWarning, match="Implicit dimension"):
            a = getattr(fg.nn, name)()(fg.tensor(x))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b = getattr(torch.nn, name)()(torch.tensor(x))
        _check(a, b)
    assert repr(fg.nn.Softmax()) == repr(torch.nn.Softmax()) and repr(fg.nn.Softmax(1)) == repr(torch.nn.Softmax(1))
    with pytest.raises(TypeError, match="dim must be an int or None"):
        fg.nn.Softmax(dim=1.0)


REDUCTIONS = {
    "sum": lambda m, mf, t, dt: t.sum(dtype=dt),
    "sum dim": lambda m, mf, t, dt: t.sum(1, keepdim=True, dtype=dt),
    "torch.sum dims": lambda m, mf, t, dt: m.sum(t, (0, 2), dtype=dt),
    "mean": lambda m, mf, t, dt: t.mean(dtype=dt),
    "torch.mean dim": lambda m, mf, t, dt: m.mean(t, -1, True, dtype=dt),
    "cumsum": lambda m, mf, t, dt: t.cumsum(1, dtype=dt),
    "torch.cumsum": lambda m, mf, t, dt: m.cumsum(t, 2, dtype=dt),
    "cumprod": lambda m, mf, t, dt: t.cumprod(2, dtype=dt),
    "torch.prod": lambda m, mf, t, dt: m.prod(t, 1, dtype=dt),
    "norm": lambda m, mf, t, dt: t.norm(dtype=dt),
    "torch.norm dim": lambda m, mf, t, dt: m.norm(t, 1, dim=2, dtype=dt),
    "nansum": lambda m, mf, t, dt: m.nansum(t, 0, dtype=dt),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_dtype_float(name):
    a, b, ga, gb = _run(REDUCTIONS[name], X, "float64", grad=True)
    assert a.dtype == fg.float64
    _check(a, b, rtol=1e-12, atol=1e-12)
    assert ga.dtype == fg.float32
    _check(ga, gb, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["sum", "sum dim", "torch.sum dims", "mean", "torch.mean dim", "cumsum",
                                  "torch.cumsum", "cumprod"])
def test_reduction_dtype_of_integers(name):
    """An int64 input summed / averaged in float32 (torch refuses a mean of integers without dtype=)."""
    a, b, _, _ = _run(REDUCTIONS[name], INTS.reshape(3, 2, 2), "float32", grad=False)
    assert a.dtype == fg.float32
    _check(a, b)


@pytest.mark.parametrize("call", ["sum(dtype=D.int64)", "sum(0, dtype=D.int32)", "sum(dtype=D.int8)",
                                  "sum(1, dtype=D.bool)", "cumsum(0, dtype=D.int32)", "cumsum(1, dtype=D.int16)",
                                  "sum(dtype=D.float16)", "mean(0, dtype=D.float16)", "mean(dtype=D.int64)",
                                  "norm(dtype=D.int64)", "softmax(0, dtype=D.int64)", "log_softmax(1, dtype=D.int32)",
                                  "cumsum(0, dtype=D.bool)"])
def test_reduction_to_other_dtypes(call):
    """An integer dtype= truncates the input first and keeps that dtype (int32 stays int32, not int64); the ops with
    no integer result refuse one with torch's exception type."""
    x = X[0] * 3
    try:
        want = eval("t." + call, {"t": torch.tensor(x), "D": torch})
    except Exception as e:  # torch refuses it: so does forgegrad, with the same exception type
        with pytest.raises(type(e)):
            eval("t." + call, {"t": fg.tensor(x), "D": fg})
        return
    _check(eval("t." + call, {"t": fg.tensor(x), "D": fg}), want, rtol=1e-3)


def test_sum_of_bools_with_dtype():
    m = X > 0
    _check(fg.tensor(m).sum(1, dtype=fg.float32), torch.tensor(m).sum(1, dtype=torch.float32))
    _check(fg.tensor(m).sum(), torch.tensor(m).sum())


def test_bad_dtype_argument_names_it():
    with pytest.raises(TypeError, match="dtype"):
        fg.tensor(X).sum(dtype="float64")
    with pytest.raises(TypeError, match="dtype"):
        F.softmax(fg.tensor(X), 1, dtype=np.float64)


@pytest.mark.parametrize("call", ["var(correction=0)", "std(correction=0)", "var(1, correction=2)",
                                  "std((0, 2), correction=2, keepdim=True)", "var(correction=1.5)",
                                  "std(2, keepdim=True, correction=5)", "var(0, correction=3)", "std(0, True)",
                                  "var(1, False, True)", "std()"])
@pytest.mark.filterwarnings("ignore:.*degrees of freedom:UserWarning")
def test_var_std_correction(call):
    """divisor n - correction (at least 0: inf / NaN past n, as torch); methods and torch.var / torch.std."""
    for fn in (lambda m, mf, t, dt: eval("t." + call), lambda m, mf, t, dt: eval("m." + call.replace("(", "(t, ", 1)
                                                                                .replace("(t, )", "(t)"))):
        a, b, ga, gb = _run(fn, X, None, grad=True)
        _check(a, b, rtol=1e-5, atol=1e-6)
        if np.isfinite(b.detach().numpy()).all():
            _check(ga, gb, rtol=1e-4, atol=1e-5)


def test_var_correction_past_the_count_warns_as_torch():
    with pytest.warns(UserWarning, match="degrees of freedom"):
        assert np.isinf(fg.tensor(X).var(0, correction=3).numpy()).all()


def test_var_correction_and_unbiased_together_refused():
    with pytest.raises(TypeError, match="unbiased or correction"):
        fg.tensor(X).var(0, True, correction=0)


@pytest.mark.parametrize("mode", ["floor", "trunc"])
def test_div_inplace_rounding_mode(mode):
    a, b = fg.tensor(X * 5), torch.tensor(X * 5)
    a.div_(fg.tensor(X[0] + 2), rounding_mode=mode)
    b.div_(torch.tensor(X[0] + 2), rounding_mode=mode)
    _check(a, b)


# ---- losses: torch's parameter order, the deprecated size_average / reduce, weight= -----------------------------
P = 1 / (1 + np.exp(-X[0]))
T01 = (RNG.random((4, 5)) > 0.5).astype(np.float32)
SIGN = np.sign(RNG.standard_normal(4)).astype(np.float32)
CLS = RNG.integers(0, 5, 4)
LOSSES = {
    "mse_loss": lambda mf, m, kw: mf.mse_loss(m(X[0]), m(X[1]), **kw),
    "l1_loss": lambda mf, m, kw: mf.l1_loss(m(X[0]), m(X[1]), **kw),
    "binary_cross_entropy": lambda mf, m, kw: mf.binary_cross_entropy(m(P), m(T01), **kw),
    "binary_cross_entropy_with_logits": lambda mf, m, kw: mf.binary_cross_entropy_with_logits(m(X[0]), m(T01), **kw),
    "cross_entropy": lambda mf, m, kw: mf.cross_entropy(m(X[0]), m(CLS), **kw),
    "nll_loss": lambda mf, m, kw: mf.nll_loss(m(X[0]), m(CLS), **kw),
    "kl_div": lambda mf, m, kw: mf.kl_div(m(X[0]), m(P), **kw),
    "smooth_l1_loss": lambda mf, m, kw: mf.smooth_l1_loss(m(X[0]), m(X[1]), **kw),
    "soft_margin_loss": lambda mf, m, kw: mf.soft_margin_loss(m(X[0]), m(np.sign(X[1])), **kw),
    "multilabel_soft_margin_loss": lambda mf, m, kw: mf.multilabel_soft_margin_loss(m(X[0]), m(T01), **kw),
    "multilabel_margin_loss": lambda mf, m, kw: mf.multilabel_margin_loss(
        m(X[0]), m(np.array([[1, 3, -1, 0, 0]] * 4)), **kw),
    "multi_margin_loss": lambda mf, m, kw: mf.multi_margin_loss(m(X[0]), m(CLS), **kw),
    "hinge_embedding_loss": lambda mf, m, kw: mf.hinge_embedding_loss(m(X[0]), m(np.sign(X[1])), **kw),
    "margin_ranking_loss": lambda mf, m, kw: mf.margin_ranking_loss(m(X[0, :, 0]), m(X[1, :, 0]), m(SIGN), **kw),
    "cosine_embedding_loss": lambda mf, m, kw: mf.cosine_embedding_loss(m(X[0]), m(X[1]), m(SIGN), **kw),
    "poisson_nll_loss": lambda mf, m, kw: mf.poisson_nll_loss(m(X[0]), m(P), **kw),
    "triplet_margin_loss": lambda mf, m, kw: mf.triplet_margin_loss(m(X[0]), m(X[1]), m(X[2]), **kw),
}


@pytest.mark.parametrize("legacy", [dict(size_average=False), dict(reduce=False), dict(size_average=True),
                                    dict(size_average=False, reduce=True), dict(size_average=True, reduce=False)])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_legacy_size_average_reduce(name, legacy):
    with pytest.warns(UserWarning, match="size_average and reduce"):
        a = LOSSES[name](F, fg.tensor, legacy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = LOSSES[name](TF, torch.tensor, legacy)
    _check(a, b, rtol=1e-5, atol=1e-5)


def test_loss_positional_arguments_mean_what_they_mean_in_torch():
    """torch: F.nll_loss(input, target, weight, size_average, ignore_index, reduce, reduction)."""
    x, t = X[0], CLS
    for args in ((None, False), (None, None, CLS[0]), (None, None, -100, False), (None, None, 1, None, "sum")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = F.nll_loss(fg.tensor(x), fg.tensor(t), *args)
            b = TF.nll_loss(torch.tensor(x), torch.tensor(t), *args)
        _check(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check(F.mse_loss(fg.tensor(x), fg.tensor(X[1]), None, False),
               TF.mse_loss(torch.tensor(x), torch.tensor(X[1]), None, False))


def test_loss_reduction_in_size_averages_slot_refused():
    """torch reads F.mse_loss(a, b, "sum") as size_average="sum" (true: a mean); forgegrad refuses it."""
    with pytest.raises(TypeError, match="reduction='sum'"):
        F.mse_loss(fg.tensor(X[0]), fg.tensor(X[1]), "sum")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss"])
def test_loss_weight(name, reduction):
    """torch 2.13's weight=: mean over weight.sum() (mse, l1) or the element count (huber); gradients to input,
    target and weight."""
    w = np.abs(X[2]) + 0.1
    res = []
    for m, mf in ((fg, F), (torch, TF)):
        a, b, wt = (m.tensor(v.copy(), requires_grad=True) for v in (X[0], X[1], w))
        y = getattr(mf, name)(a, b, reduction=reduction, weight=wt)
        (y * m.tensor(np.linspace(1, 2, y.numel()).reshape(tuple(y.shape)).astype(np.float32))).sum().backward()
        res.append((y, a.grad, b.grad, wt.grad))
    for u, v in zip(*res):
        _check(u, v, rtol=1e-5, atol=1e-6)


def test_loss_weight_of_another_shape_refused():
    with pytest.raises(ValueError, match="same size"):
        F.mse_loss(fg.tensor(X[0]), fg.tensor(X[1]), weight=fg.tensor(X[0, 0]))


def test_loss_modules_unchanged():
    """nn losses pass their reduction by keyword: still torch's values."""
    for fm, tm in ((fg.nn.MSELoss(reduction="sum"), torch.nn.MSELoss(reduction="sum")),
                   (fg.nn.CrossEntropyLoss(ignore_index=1, label_smoothing=0.1),
                    torch.nn.CrossEntropyLoss(ignore_index=1, label_smoothing=0.1)),
                   (fg.nn.NLLLoss(reduction="none"), torch.nn.NLLLoss(reduction="none"))):
        tgt = X[1] if isinstance(fm, fg.nn.MSELoss) else CLS
        _check(fm(fg.tensor(X[0]), fg.tensor(tgt)), tm(torch.tensor(X[0]), torch.tensor(tgt)))


# ---- factories, conversions, generators -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "int64", "bool"])
def test_eye_dtype_requires_grad(dtype):
    a = fg.eye(3, 4, dtype=getattr(fg, dtype), requires_grad=dtype == "float64")
    b = torch.eye(3, 4, dtype=getattr(torch, dtype), requires_grad=dtype == "float64")
    assert a.requires_grad == b.requires_grad
    _check(a, b)


def test_new_factories_device():
    x = fg.tensor(X)
    for y in (x.new_zeros(2, 3, device="cpu"), x.new_ones((2, 3), device="meta"), x.new_empty(2, device="cpu"),
              x.new_full((2,), 7.0, device="cpu"), x.new_tensor([1.0, 2.0], device="meta")):
        assert y.dtype == fg.float32
    assert x.new_ones((2, 3), device="meta").device.type == "meta"
    assert x.new_full((2,), 7.0, dtype=fg.int64, device="cpu").tolist() == [7, 7]


def test_numpy_force_copy_and_non_blocking_hint():
    x = fg.tensor(X, requires_grad=True)
    np.testing.assert_array_equal(x.numpy(force=True), X)
    y = fg.zeros(3, 4, 5)
    y.copy_(x.detach(), non_blocking=True)
    np.testing.assert_array_equal(y.numpy(), X)
    assert x.type(fg.float64, non_blocking=True).dtype == fg.float64


def test_load_weights_only_and_mmap():
    buf = io.BytesIO()
    fg.save({"w": fg.tensor(X)}, buf)
    for weights_only in (True, False, None):
        buf.seek(0)
        np.testing.assert_array_equal(fg.load(buf, weights_only=weights_only)["w"], X)
    buf.seek(0)
    with pytest.raises(NotImplementedError, match="mmap"):
        fg.load(buf, mmap=True)


GENERATED = {
    "rand": (lambda g: fg.rand(3, 4, generator=g), lambda g: g.random((3, 4), dtype=np.float32)),
    "randn": (lambda g: fg.randn(3, 4, generator=g), lambda g: g.standard_normal((3, 4), dtype=np.float32)),
    "randint": (lambda g: fg.randint(0, 9, (6,), generator=g), lambda g: g.integers(0, 9, (6,), dtype=np.int64)),
    "randn_like": (lambda g: fg.randn_like(fg.tensor(X), generator=g),
                   lambda g: g.standard_normal(X.shape, dtype=np.float32)),
    "normal_": (lambda g: fg.zeros(4, dtype=fg.float64).normal_(1.0, 2.0, generator=g),
                lambda g: g.standard_normal((4,)) * 2.0 + 1.0),
    "uniform_": (lambda g: fg.zeros(4, dtype=fg.float64).uniform_(-1, 3, generator=g),
                 lambda g: g.uniform(-1, 3, size=(4,))),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generator_is_used(name):
    """generator= (a numpy Generator: forgegrad's generators are numpy's) draws from it, not the global stream."""
    fn, want = GENERATED[name]
    fg.manual_seed(5)
    got = fn(np.random.default_rng(11)).numpy()
    np.testing.assert_array_equal(got, want(np.random.default_rng(11)))
    with pytest.raises(TypeError, match="generator"):
        fn(torch.Generator())


def test_multinomial_generator():
    w = fg.tensor(np.abs(X[0]))
    a = fg.multinomial(w, 3, generator=np.random.default_rng(2))
    b = fg.multinomial(w, 3, generator=np.random.default_rng(2))
    assert a.tolist() == b.tolist()
    with pytest.raises(TypeError, match="generator"):
        fg.multinomial(w, 3, generator=7)


# ---- refused: they raise, naming the argument --------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda x: fg.sum(x, out=x), lambda x: fg.exp(x, out=x), lambda x: fg.add(x, x, out=x),
    lambda x: fg.zeros(3, layout=None), lambda x: fg.ones(3, pin_memory=False), lambda x: x.clone(memory_format=None),
    lambda x: fg.mm(x[0], x[0].t(), out_dtype=None), lambda x: x.float(memory_format=None),
    lambda x: fg.cat([x], out=x)])
def test_refused_arguments_raise(call):
    with pytest.raises(TypeError, match="out|layout|pin_memory|memory_format|out_dtype"):
        call(fg.tensor(X))


# ---- the audit ---------------------------------------------------------------------------------------------------
def _audit():
    spec = importlib.util.spec_from_file_location(
        "signature_audit", Path(__file__).resolve().parents[1] / "tools" / "signature_audit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_audit_functional_has_no_gaps_and_sees_the_fixed_ones():
    """nn.functional takes every torch parameter by name at torch's position; the fixed reductions are gone from the
    torch and Tensor lists, and a known refusal (out=) is still listed."""
    rows = {(a, n): g for a, n, g in _audit().audit()}
    assert not any(g for (a, _), g in rows.items() if a == "F"), {k: g for k, g in rows.items() if k[0] == "F" and g}
    for key in (("torch", "sum"), ("torch", "cumsum"), ("Tensor", "sum"), ("Tensor", "softmax"), ("Tensor", "std"),
                ("torch", "softmax"), ("Tensor", "norm"), ("torch", "eye"), ("Tensor", "div_")):
        assert not {p for p in ("dtype", "correction", "rounding_mode", "requires_grad") if p in rows[key]}, key
    assert rows[("torch", "exp")].get("out") == "missing"


def test_audit_parses_docstring_signatures():
    mod = _audit()
    sigs = mod.torch_overloads(torch.sum, "sum", method=False)
    assert any(s.positional == ["input", "dim", "keepdim"] and s.keyword == ["dtype"] for s in sigs)
    p = mod._from_doc_args(r"input, dim=(0, 1), \*, out=None, dtype=torch.float")
    assert (p.positional, p.keyword) == (["input", "dim"], ["out", "dtype"])
