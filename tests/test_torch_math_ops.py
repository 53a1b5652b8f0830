"""torch's math, reduction and product functions (forgegrad/_torch_math.py and the ops behind it) against torch:
values, gradients, double backward, dtype promotion, named tuples and the in-place Tensor variants. The registry
ops' generated checks (tests/test_op_registry.py) cover meta, threads, SIMD paths, float64 and ONNX."""
import math

import numpy as np
import pytest
import torch

import forgegrad as fg


def _rand(*shape, seed=0, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


def _compare(fg_fn, torch_fn, arrays, grad=True, rtol=1e-5, atol=1e-5, seed=3):
    """Run both on the same float inputs; compare the outputs and the gradients of a random weighting."""
    fx = [fg.tensor(a.copy(), requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    tx = [torch.from_numpy(a.copy()).requires_grad_(grad and a.dtype.kind == "f") for a in arrays]
    fy, ty = fg_fn(*fx), torch_fn(*tx)
    fys = fy if isinstance(fy, tuple) else (fy,)
    tys = ty if isinstance(ty, tuple) else (ty,)
    for a, b in zip(fys, tys):
        assert tuple(a.shape) == tuple(b.shape)
        assert str(a.dtype).split(".")[-1] == str(b.dtype).split(".")[-1]
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=rtol, atol=atol, equal_nan=True)
    if grad:
        c = np.random.default_rng(seed).uniform(-1, 1, size=tys[0].shape).astype(np.float32)
        (fys[0] * fg.tensor(c)).sum().backward()
        (tys[0] * torch.from_numpy(c)).sum().backward()
        for a, b in zip(fx, tx):
            if b.grad is not None:  # (no gradient where torch gives zeros: copysign's other)
                got = np.zeros(a.shape, np.float32) if a.grad is None else a.grad.numpy()
                np.testing.assert_allclose(got, b.grad.numpy(), rtol=rtol, atol=atol, equal_nan=True)
    return fys


# ---- pointwise ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["atan2", "arctan2", "hypot", "logaddexp", "logaddexp2", "copysign", "fmod",
                                  "remainder"])
def test_binary_functions_and_methods(name):
    a, b = _rand(3, 1, 5), _rand(4, 5, seed=1)
    b = np.where(np.abs(b) < 0.3, 0.7, b).astype(np.float32)
    _compare(getattr(fg, name), getattr(torch, name), [a, b], rtol=1e-4, atol=1e-5)
    _compare(lambda x, y: getattr(x, name)(y), lambda x, y: getattr(x, name)(y), [a, b], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["erf", "erfc", "lgamma", "sign", "sgn", "trunc", "fix", "frac", "deg2rad",
                                  "rad2deg", "digamma"])
def test_unary_functions_and_methods(name):
    x = _rand(4, 6, low=0.2, high=3.0) if name == "digamma" else _rand(4, 6) * 3
    grad = name not in ("sgn",)  # torch gives sgn a ZeroTensor gradient that numpy refuses
    _compare(getattr(fg, name), getattr(torch, name), [x], grad=grad, rtol=1e-4, atol=1e-5)
    _compare(lambda t: getattr(t, name)(), lambda t: getattr(t, name)(), [x], grad=grad, rtol=1e-4, atol=1e-5)


def test_erfinv_xlogy_lerp_round_nan_to_num():
    _compare(fg.erfinv, torch.erfinv, [_rand(5, 3, low=-0.9, high=0.9)], rtol=1e-4)
    x = _rand(3, 4)
    x[0, :2] = 0
    _compare(fg.xlogy, torch.xlogy, [x, _rand(3, 4, seed=1, low=0.1, high=3)])
    for w in (0.25, 0.5, 0.9, -0.3):
        _compare(lambda a, b: fg.lerp(a, b, w), lambda a, b: torch.lerp(a, b, w), [_rand(3, 5), _rand(5, seed=1)])
    _compare(fg.lerp, torch.lerp, [_rand(3, 5), _rand(3, 5, seed=1), _rand(1, 5, seed=2)])
    halves = (np.arange(-10, 11) * 0.5).astype(np.float32)
    for d in (0, 1, -1, 2):
        _compare(lambda t: fg.round(t, decimals=d), lambda t: torch.round(t, decimals=d), [halves * 37.3])
    _compare(lambda t: t.round(), lambda t: t.round(), [halves])
    y = np.array([np.nan, np.inf, -np.inf, 1.5], np.float32)
    _compare(fg.nan_to_num, torch.nan_to_num, [y])
    _compare(lambda t: t.nan_to_num(nan=2.0, posinf=5.0), lambda t: t.nan_to_num(nan=2.0, posinf=5.0), [y])


def test_promotion_of_int_and_bool_inputs():
    i = fg.tensor([5, -5, 7])
    ti = torch.tensor([5, -5, 7])
    for name in ("atan2", "hypot", "logaddexp", "copysign", "remainder", "fmod", "floor_divide"):
        others = [(fg.tensor([1.5, 2.0, -2.0]), torch.tensor([1.5, 2.0, -2.0]))]
        if name not in ("hypot", "logaddexp"):  # torch has no integer hypot or logaddexp (forgegrad: float32)
            others.append((fg.tensor([3, 2, -2]), torch.tensor([3, 2, -2])))
        if name in ("copysign", "remainder", "fmod", "floor_divide"):  # torch takes a number other for these
            others += [(2, 2), (2.5, 2.5)]
        for other, tother in others:
            got, want = getattr(fg, name)(i, other), getattr(torch, name)(ti, tother)
            assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1], (name, other)
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    for name in ("erf", "lgamma", "deg2rad", "sign", "trunc", "round", "nan_to_num"):
        got, want = getattr(fg, name)(i), getattr(torch, name)(ti)
        assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1], name
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    assert fg.tensor([1.0, 2.0], dtype=fg.float64).atan2(fg.tensor([1.0, 1.0])).dtype == fg.float64
    for name in ("isnan", "isinf", "isfinite", "isposinf", "isneginf"):
        assert getattr(fg, name)(i).numpy().tolist() == getattr(torch, name)(ti).tolist()
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        fg.floor_divide(i, 0)


def test_predicates_and_isclose():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0], np.float32)
    for name in ("isnan", "isinf", "isfinite", "isposinf", "isneginf", "signbit"):
        assert getattr(fg, name)(fg.tensor(x)).numpy().tolist() == getattr(torch, name)(torch.from_numpy(x)).tolist()
        assert getattr(fg.tensor(x), name)().dtype == fg.bool
    a, b = fg.tensor([1.0, np.nan, 1e-9, np.inf]), fg.tensor([1.0 + 1e-7, np.nan, 0.0, np.inf])
    ta, tb = torch.tensor(a.numpy()), torch.tensor(b.numpy())
    assert fg.isclose(a, b).numpy().tolist() == torch.isclose(ta, tb).tolist()
    assert a.isclose(b, equal_nan=True).numpy().tolist() == torch.isclose(ta, tb, equal_nan=True).tolist()
    assert a.allclose(b, equal_nan=True) == torch.allclose(ta, tb, equal_nan=True)
    assert a.equal(a.clone()) is False and fg.tensor([1, 2]).equal(fg.tensor([1, 2]))
    assert fg.clamp_min(fg.tensor([-1.0, 2.0]), 0.5).tolist() == [0.5, 2.0]
    assert fg.tensor([-1.0, 2.0]).clamp_max(0.5).tolist() == [-1.0, 0.5]


def test_floor_divide_has_no_gradient_as_torch():
    x = fg.tensor([3.0, -4.0], requires_grad=True)
    y = fg.floor_divide(x, 2.0)
    assert y.tolist() == [1.0, -2.0]
    with pytest.raises(RuntimeError, match="not implemented"):
        y.sum().backward()


@pytest.mark.parametrize("name", ["atan2", "hypot", "logaddexp", "xlogy", "lerp", "erf", "lgamma", "logsumexp"])
def test_double_backward_matches_torch(name):
    a, b = _rand(3, 4, low=0.3, high=2.0), _rand(3, 4, seed=1, low=0.3, high=2.0)
    calls = {"lerp": (lambda m, x, y: m.lerp(x, y, y * 0.3)), "erf": (lambda m, x, y: m.erf(x) * y),
             "lgamma": (lambda m, x, y: m.lgamma(x) * y), "logsumexp": (lambda m, x, y: m.logsumexp(x * y, 1))}
    call = calls.get(name, lambda m, x, y: getattr(m, name)(x, y))
    grads = []
    for m in (fg, torch):
        x, y = (m.tensor(a, requires_grad=True), m.tensor(b, requires_grad=True))
        out = call(m, x, y).sum()
        (gx, gy) = (fg.autograd.grad if m is fg else torch.autograd.grad)(out, (x, y), create_graph=True)
        (gx * gx).sum().add(gy.sum()).backward() if m is fg else ((gx * gx).sum() + gy.sum()).backward()
        grads.append((gx.detach().numpy(), x.grad.numpy(), y.grad.numpy()))
    for f, t in zip(*grads):
        np.testing.assert_allclose(f, t, rtol=1e-4, atol=1e-5)


# ---- in-place variants -------------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda t, m: t.lerp_(m.ones(3, 4), 0.25), lambda t, m: t.remainder_(1.5), lambda t, m: t.fmod_(0.7),
    lambda t, m: t.nan_to_num_(nan=1.0), lambda t, m: t.round_(decimals=1), lambda t, m: t.atan2_(m.ones(4)),
    lambda t, m: t.hypot_(m.ones(3, 4)), lambda t, m: t.erf_(), lambda t, m: t.sign_(), lambda t, m: t.trunc_(),
    lambda t, m: t.clamp_min_(0.1), lambda t, m: t.copysign_(-1.0), lambda t, m: t.xlogy_(2.0),
    lambda t, m: t.deg2rad_(), lambda t, m: t.addmm_(m.ones(3, 2), m.ones(2, 4), beta=0.5, alpha=2)])
def test_inplace_variants(call):
    a = _rand(3, 4) * 3
    a[0, 0] = np.nan
    f, t = fg.tensor(a.copy()), torch.from_numpy(a.copy())
    view_f = f.detach()  # shares storage: sees the write
    assert call(f, fg) is f
    call(t, torch)
    np.testing.assert_allclose(f.numpy(), t.numpy(), rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(view_f.numpy(), t.numpy(), rtol=1e-5, atol=1e-6, equal_nan=True)


def test_inplace_autograd_rules():
    leaf = fg.tensor(_rand(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        leaf.lerp_(fg.zeros(3), 0.5)
    x, tx = fg.tensor(_rand(3), requires_grad=True), torch.tensor(_rand(3), requires_grad=True)
    for m, v in ((fg, x), (torch, tx)):
        y = v * 2
        y.lerp_(m.ones(3), 0.25)
        y.atan2_(m.ones(3))
        y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-5)
    with pytest.raises(RuntimeError, match="can't be cast"):
        fg.tensor([1, 2]).erf_()


# ---- reductions ----------------------------------------------------------------------------------------
def test_prod_gradient_with_zeros():
    x = _rand(4, 5, low=0.5, high=1.5)
    x[0, 1] = 0
    x[1, 2:4] = 0
    x[2, :] = 0
    for dim, keep in ((1, False), (0, True), (-1, True)):
        _compare(lambda t: fg.prod(t, dim, keepdim=keep), lambda t: torch.prod(t, dim, keepdim=keep), [x])
    _compare(fg.prod, torch.prod, [x[:1]])
    _compare(lambda t: t.prod(), lambda t: t.prod(), [x[:2, :2].copy()])
    assert fg.prod(fg.tensor([2, 3, 4])).dtype == fg.int64 and int(fg.prod(fg.tensor([2, 3, 4]))) == 24
    assert fg.prod(fg.tensor([1.5, 2.0]), dtype=fg.float64).dtype == fg.float64


def test_logsumexp_nansum_nanmean():
    x = _rand(3, 4, 5) * 10
    _compare(lambda t: fg.logsumexp(t, (0, 2)), lambda t: torch.logsumexp(t, (0, 2)), [x])
    _compare(lambda t: t.logsumexp(1, keepdim=True), lambda t: t.logsumexp(1, keepdim=True), [x])
    y = x.copy()
    y[0, 1, :] = np.nan
    y[1, 2, 3] = np.nan
    for fn in ("nansum", "nanmean"):
        _compare(lambda t: getattr(fg, fn)(t, 2), lambda t: getattr(torch, fn)(t, 2), [y])
        _compare(lambda t: getattr(t, fn)(), lambda t: getattr(t, fn)(), [y])
    assert fg.nansum(fg.tensor([1, 2])).dtype == fg.int64


def test_median_ties_nan_and_named_tuples():
    ties = np.array([[1, 2, 2, 1, 3, 5], [1, 1, 1, 2, 2, 2], [4, 4, 4, 4, 4, 4]], np.float32)
    _compare(fg.median, torch.median, [ties])  # the gradient is shared among the tied medians
    _compare(lambda t: t.nanmedian(), lambda t: t.nanmedian(), [ties])
    for fn in ("median", "nanmedian"):
        got = getattr(fg, fn)(fg.tensor(ties), 1)
        want = getattr(torch, fn)(torch.from_numpy(ties), 1)
        assert type(got).__name__ == fn and got.values.tolist() == want.values.tolist()
        assert got.indices.tolist() == want.indices.tolist()
        values, indices = getattr(fg.tensor(ties), fn)(dim=0, keepdim=True)
        assert values.shape == (1, 6) and indices.dtype == fg.int64
    nan = _rand(3, 6)
    nan[0, 2] = nan[1, 1] = nan[1, 4] = np.nan
    _compare(lambda t: fg.median(t, 1)[0], lambda t: torch.median(t, 1)[0], [nan])
    _compare(lambda t: fg.nanmedian(t, 1)[0], lambda t: torch.nanmedian(t, 1)[0], [nan])
    assert math.isnan(fg.median(fg.tensor(nan)).item())


def test_mode():
    x = np.random.default_rng(2).integers(0, 3, size=(4, 7)).astype(np.float32)
    got, want = fg.mode(fg.tensor(x)), torch.mode(torch.from_numpy(x))
    assert type(got).__name__ == "mode"
    assert got.values.tolist() == want.values.tolist() and got.indices.tolist() == want.indices.tolist()
    _compare(lambda t: t.mode(0)[0], lambda t: t.mode(0)[0], [x])


@pytest.mark.parametrize("interpolation", ["linear", "lower", "higher", "midpoint", "nearest"])
def test_quantile_interpolations(interpolation):
    x = _rand(5, 8)
    for q in (0.3, 0.5, np.array([0.0, 0.125, 0.6, 1.0], np.float32)):
        for dim, keep in ((None, False), (1, False), (0, True), (None, True)):
            def f(t, fn=fg.quantile):
                return fn(t, fg.tensor(q) if isinstance(q, np.ndarray) else q, dim, keep, interpolation=interpolation)

            def g(t, fn=torch.quantile):
                return fn(t, torch.from_numpy(q) if isinstance(q, np.ndarray) else q, dim, keep,
                          interpolation=interpolation)
            _compare(f, g, [x])
            y = x.copy()
            y[1, 3] = np.nan
            _compare(lambda t: f(t, fg.nanquantile), lambda t: g(t, torch.nanquantile), [y])
    assert fg.tensor(x).quantile(0.5, dim=1).shape == (5,)


def test_count_nonzero_aminmax_var_mean_cov():
    x = np.random.default_rng(0).integers(-1, 2, size=(3, 5)).astype(np.float32)
    assert fg.count_nonzero(fg.tensor(x)).item() == torch.count_nonzero(torch.from_numpy(x)).item()
    assert fg.tensor(x).count_nonzero(1).tolist() == torch.count_nonzero(torch.from_numpy(x), 1).tolist()
    got = fg.aminmax(fg.tensor(x), dim=1)
    want = torch.aminmax(torch.from_numpy(x), dim=1)
    assert type(got).__name__ == "aminmax" and got.min.tolist() == want.min.tolist()
    assert got.max.tolist() == want.max.tolist()
    y = _rand(4, 6)
    for corr in (0, 1, 2):
        _compare(lambda t: fg.var_mean(t, 1, correction=corr), lambda t: torch.var_mean(t, 1, correction=corr), [y])
        _compare(lambda t: fg.std_mean(t, (0, 1), correction=corr, keepdim=True),
                 lambda t: torch.std_mean(t, (0, 1), correction=corr, keepdim=True), [y])
    _compare(lambda t: fg.var_mean(t, False), lambda t: torch.var_mean(t, False), [y])
    _compare(fg.cov, torch.cov, [y])
    _compare(lambda t: t.cov(correction=0), lambda t: t.cov(correction=0), [y])
    fw, aw = np.array([1, 2, 1, 3, 1, 1]), _rand(6, seed=5, low=0.1, high=1.0)
    _compare(lambda t: fg.cov(t, fweights=fg.tensor(fw), aweights=fg.tensor(aw)),
             lambda t: torch.cov(t, fweights=torch.from_numpy(fw), aweights=torch.from_numpy(aw)), [y])
    _compare(fg.corrcoef, torch.corrcoef, [y], rtol=1e-4)
    _compare(fg.cov, torch.cov, [y[0]])


# ---- products ------------------------------------------------------------------------------------------
EINSUMS = [("ij,jk->ik", [(3, 4), (4, 5)]), ("ii->i", [(4, 4)]), ("ii", [(4, 4)]), ("iij->j", [(3, 3, 2)]),
           ("iji->j", [(3, 2, 3)]), ("...ij,...jk", [(2, 3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
           ("i,j->ij", [(3,), (4,)]), ("ij->", [(3, 4)]), ("ab,ba", [(3, 4), (4, 3)]), ("i,i", [(5,), (5,)]),
           ("...i,...i->...", [(2, 1, 3), (4, 3)]), ("ijk,jl,kl->il", [(2, 3, 4), (3, 5), (4, 5)]),
           ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]), ("Ab,aB", [(2, 3), (4, 5)]), ("i...->...", [(3, 2, 4)]),
           ("ba,b", [(2, 3), (2,)]), ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]), ("ij->ji", [(3, 4)]),
           ("i i , i ->", [(3, 3), (3,)]), ("ijj,kl->ikl", [(2, 3, 3), (1, 4)]), ("a...,...->a", [(2, 3), (1,)])]


@pytest.mark.parametrize("equation,shapes", EINSUMS, ids=[e for e, _ in EINSUMS])
def test_einsum(equation, shapes):
    arrays = [_rand(*s, seed=k) for k, s in enumerate(shapes)]
    _compare(lambda *t: fg.einsum(equation, *t), lambda *t: torch.einsum(equation, *t), arrays, rtol=1e-4, atol=1e-5)
    _compare(lambda *t: fg.einsum(equation, list(t)), lambda *t: torch.einsum(equation, list(t)), arrays,
             grad=False, rtol=1e-4, atol=1e-5)


def test_einsum_double_backward_and_ints():
    a, b = _rand(3, 4), _rand(4, 5, seed=1)
    res = []
    for m in (fg, torch):
        x, y = m.tensor(a, requires_grad=True), m.tensor(b, requires_grad=True)
        (gx,) = (fg.autograd.grad if m is fg else torch.autograd.grad)(
            m.einsum("ij,jk->", x * x, y), (x,), create_graph=True)
        (gx * gx).sum().backward()
        res.append((x.grad.numpy(), y.grad.numpy()))
    for f, t in zip(*res):
        np.testing.assert_allclose(f, t, rtol=1e-4, atol=1e-4)
    i = np.arange(12).reshape(3, 4)
    got = fg.einsum("ij,kj->ik", fg.tensor(i), fg.tensor(i))
    want = torch.einsum("ij,kj->ik", torch.tensor(i), torch.tensor(i))
    assert got.dtype == fg.int64 and got.tolist() == want.tolist()


@pytest.mark.parametrize("equation,shapes,match", [
    ("ij,jk", [(3, 4)], "operand"), ("ij", [(3, 4, 5)], "names 2"), ("ij,jk->ik", [(3, 4), (5, 6)], "sizes"),
    ("ij->iq", [(3, 4)], "does not appear"), ("ij->ii", [(3, 4)], "more than once"), ("i1", [(3, 4)], "invalid"),
    ("ii", [(3, 4)], "repeated")])
def test_einsum_errors(equation, shapes, match):
    with pytest.raises(ValueError, match=match):
        fg.einsum(equation, *[fg.zeros(*s) for s in shapes])


def test_products_against_torch():
    a, b, v, w = _rand(3, 4), _rand(4, 5, seed=1), _rand(4, seed=2), _rand(3, seed=3)
    c, bt1, bt2 = _rand(3, 5, seed=4), _rand(2, 3, 4, seed=5), _rand(2, 4, 5, seed=6)
    cases = [("tensordot", lambda m, x, y: m.tensordot(x, y, 1), [a, b]),
             ("tensordot pairs", lambda m, x, y: m.tensordot(x, y, ([1, 0], [0, 1])), [a, a.T.copy()]),
             ("tensordot 0", lambda m, x, y: m.tensordot(x, y, 0), [w, v]),
             ("outer", lambda m, x, y: m.outer(x, y), [w, v]), ("ger", lambda m, x, y: x.ger(y), [w, v]),
             ("inner", lambda m, x, y: m.inner(x, y), [a, _rand(2, 4, seed=7)]),
             ("kron", lambda m, x, y: m.kron(x, y), [a, _rand(2, 3, seed=8)]),
             ("kron ranks", lambda m, x, y: m.kron(x, y), [v, _rand(2, 3, seed=8)]),
             ("mv", lambda m, x, y: m.mv(x, y), [a, v]), ("dot", lambda m, x, y: x.dot(y), [v, v[::-1].copy()]),
             ("vdot", lambda m, x, y: m.vdot(x, y), [v, v[::-1].copy()]),
             ("addmm", lambda m, i, x, y: m.addmm(i, x, y, beta=0.5, alpha=2.0), [c, a, b]),
             ("addmm bcast", lambda m, i, x, y: i.addmm(x, y), [c[:1], a, b]),
             ("addmv", lambda m, i, x, y: m.addmv(i, x, y, alpha=-1.0), [w, a, v]),
             ("baddbmm", lambda m, i, x, y: m.baddbmm(i, x, y, beta=2.0), [c, bt1, bt2]),
             ("addbmm", lambda m, i, x, y: m.addbmm(i, x, y, alpha=0.5), [c, bt1, bt2]),
             ("chain_matmul", lambda m, x, y, z: m.chain_matmul(x, y, z), [a, b, _rand(5, 2, seed=9)]),
             ("multi_dot", lambda m, x, y, z: m.linalg.multi_dot([x, y, z]), [v, b, _rand(5, seed=9)])]
    for name, call, arrays in cases:
        _compare(lambda *t: call(fg, *t), lambda *t: call(torch, *t), arrays, rtol=1e-4, atol=1e-5)
    nan_in = np.full((3, 5), np.nan, np.float32)
    got = fg.addmm(fg.tensor(nan_in), fg.tensor(a), fg.tensor(b), beta=0)
    assert np.isfinite(got.numpy()).all()  # beta=0 ignores the input, as torch's


@pytest.mark.parametrize("p", [0.0, 1.0, 2.0, 3.0, 0.5, math.inf])
def test_cdist(p):
    x1, x2 = _rand(2, 6, 4), _rand(1, 5, 4, seed=1)
    _compare(lambda a, b: fg.cdist(a, b, p), lambda a, b: torch.cdist(a, b, p), [x1, x2], grad=p != 0.0, rtol=1e-4,
             atol=1e-5)


def test_cdist_gemm_path_and_errors():
    x1, x2 = _rand(40, 8), _rand(33, 8, seed=1)
    _compare(fg.cdist, torch.cdist, [x1, x2], rtol=1e-4, atol=1e-4)
    _compare(lambda a, b: fg.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist"),
             lambda a, b: torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist"), [x1, x2], rtol=1e-4)
    with pytest.raises(ValueError, match="columns"):
        fg.cdist(fg.zeros(3, 4), fg.zeros(3, 5))
    with pytest.raises(ValueError, match="p must"):
        fg.cdist(fg.zeros(3, 4), fg.zeros(3, 4), -1.0)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, math.inf])
@pytest.mark.parametrize("rows", [5, 30])  # 30: the GEMM form at p = 2
def test_cdist_double_backward(p, rows):
    a, b = _rand(rows, 3).astype(np.float64), _rand(4, 3, seed=1).astype(np.float64)
    c = np.random.default_rng(2).uniform(-1, 1, size=(rows, 4))
    res = []
    for m in (fg, torch):
        x1, x2 = m.tensor(a, requires_grad=True), m.tensor(b, requires_grad=True)
        if m is fg:
            y = fg.cdist(x1, x2, p)
        else:  # torch's direct cdist has no double backward: the norm of the differences has
            y = torch.linalg.vector_norm(x1[:, None] - x2[None], ord=p, dim=-1)
        g1, g2 = (fg.autograd.grad if m is fg else torch.autograd.grad)(
            (y * m.tensor(c)).sum(), (x1, x2), create_graph=True)
        ((g1 * g1).sum() + (g2 * g2 * g2).sum()).backward()
        res.append((g1.detach().numpy(), x1.grad.numpy(), x2.grad.numpy()))
    for f, t in zip(*res):
        np.testing.assert_allclose(f, t, rtol=1e-6, atol=1e-8)


def test_product_errors():
    with pytest.raises(ValueError, match="1-D"):
        fg.dot(fg.zeros(2, 2), fg.zeros(2))
    with pytest.raises(ValueError, match="sizes"):
        fg.dot(fg.zeros(2), fg.zeros(3))
    with pytest.raises(ValueError, match="differ in size"):
        fg.tensordot(fg.zeros(2, 3), fg.zeros(4, 5), 1)
    with pytest.raises(TypeError, match="'vec'"):
        fg.mv(fg.zeros(2, 2), [1.0, 2.0])
    with pytest.raises(ValueError, match="cannot be multiplied"):
        fg.linalg.multi_dot([fg.zeros(2, 3), fg.zeros(4, 2)])
    with pytest.raises(ValueError, match="range"):
        fg.quantile(fg.zeros(3), 1.5)
    with pytest.raises(ValueError, match="interpolation"):
        fg.quantile(fg.zeros(3), 0.5, interpolation="cubic")
