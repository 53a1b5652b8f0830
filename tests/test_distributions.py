"""forgegrad.distributions' univariate families against torch.distributions 2.13: log_prob, cdf/icdf, entropy,
mean/mode/variance/stddev, their gradients w.r.t. the parameters, float32 and float64, broadcast parameters of odd
batch shapes, expand and sample shapes."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.distributions as D
from dist_helpers import DTYPES, close, grads_close, pair, value_pair

TD = torch.distributions
R = np.random.default_rng(7)


def _pos(*shape, lo=0.3, hi=3.0):
    return R.uniform(lo, hi, shape)


# name: (params, value (broadcast against batch (3, 5)), integer value, methods to compare)
CASES = {
    "Normal": (dict(loc=R.normal(size=(3, 1)), scale=_pos(5)), R.normal(size=(3, 5)), False,
               ("log_prob", "cdf", "icdf", "entropy", "mean", "mode", "variance", "stddev")),
    "Laplace": (dict(loc=R.normal(size=(3, 1)), scale=_pos(5)), R.normal(size=(3, 5)), False,
                ("log_prob", "cdf", "icdf", "entropy", "mean", "mode", "variance", "stddev")),
    "Cauchy": (dict(loc=R.normal(size=(3, 1)), scale=_pos(5)), R.normal(size=(3, 5)), False,
               ("log_prob", "cdf", "icdf", "entropy", "mode")),
    "Uniform": (dict(low=R.uniform(-2, -1, (3, 1)), high=R.uniform(1, 2, (5,))), R.uniform(-0.9, 0.9, (3, 5)), False,
                ("log_prob", "cdf", "icdf", "entropy", "mean", "variance", "stddev")),
    "Exponential": (dict(rate=_pos(3, 5)), _pos(3, 5), False,
                    ("log_prob", "cdf", "icdf", "entropy", "mean", "mode", "variance", "stddev")),
    "Gamma": (dict(concentration=_pos(3, 1, lo=0.5), rate=_pos(5)), _pos(3, 5), False,
              ("log_prob", "cdf", "entropy", "mean", "mode", "variance", "stddev")),
    "Chi2": (dict(df=_pos(3, 5, lo=1.0, hi=6.0)), _pos(3, 5), False,
             ("log_prob", "entropy", "mean", "variance")),
    "Beta": (dict(concentration1=_pos(3, 1, lo=1.2), concentration0=_pos(5, lo=1.2)), R.uniform(0.05, 0.95, (3, 5)),
             False, ("log_prob", "entropy", "mean", "mode", "variance", "stddev")),
    "StudentT": (dict(df=_pos(3, 1, lo=0.5, hi=6.0), loc=R.normal(size=(5,)), scale=_pos(3, 5)), R.normal(size=(3, 5)),
                 False, ("log_prob", "entropy", "mean", "mode", "variance")),
    "HalfNormal": (dict(scale=_pos(3, 5)), _pos(3, 5), False,
                   ("log_prob", "cdf", "icdf", "entropy", "mean", "mode", "variance", "stddev")),
    "HalfCauchy": (dict(scale=_pos(3, 5)), _pos(3, 5), False, ("log_prob", "cdf", "icdf", "entropy", "mode")),
    "NegativeBinomial": (dict(total_count=_pos(3, 1, lo=0.5, hi=5.0), probs=R.uniform(0.05, 0.9, (5,))),
                         R.integers(0, 9, (3, 5)).astype(float), False, ("log_prob", "mean", "mode", "variance")),
    "NegativeBinomial_logits": (dict(total_count=_pos(3, 5, lo=0.5, hi=5.0), logits=R.normal(size=(3, 5))),
                                R.integers(0, 9, (3, 5)).astype(float), False, ("log_prob", "mean", "variance")),
    "Bernoulli": (dict(probs=R.uniform(0.05, 0.95, (3, 5))), R.integers(0, 2, (3, 5)).astype(float), False,
                  ("log_prob", "entropy", "mean", "mode", "variance", "stddev")),
    "Bernoulli_logits": (dict(logits=R.normal(size=(3, 5)) * 3), R.integers(0, 2, (3, 5)).astype(float), False,
                         ("log_prob", "entropy", "mean", "variance")),
    "Poisson": (dict(rate=_pos(3, 5, hi=9.0)), R.integers(0, 8, (3, 5)).astype(float), False,
                ("log_prob", "mean", "mode", "variance")),
    "Geometric": (dict(probs=R.uniform(0.05, 0.95, (3, 5))), R.integers(0, 6, (3, 5)).astype(float), False,
                  ("log_prob", "entropy", "mean", "mode", "variance")),
    "Geometric_logits": (dict(logits=R.normal(size=(3, 5))), R.integers(0, 6, (3, 5)).astype(float), False,
                         ("log_prob", "entropy", "mean", "variance")),
    "Binomial": (dict(total_count=np.full((3, 1), 7.0), probs=R.uniform(0.05, 0.95, (5,))),
                 R.integers(0, 8, (3, 5)).astype(float), False, ("log_prob", "entropy", "mean", "mode", "variance")),
    "Binomial_logits": (dict(total_count=np.full((3, 5), 6.0), logits=R.normal(size=(3, 5))),
                        R.integers(0, 7, (3, 5)).astype(float), False, ("log_prob", "entropy", "mean", "variance")),
}


def _build(name, params, dtype):
    cls = name.split("_")[0]
    fa, ta = pair(params, dtype)
    if cls == "Binomial":  # total_count is an integer parameter: no gradient
        fa["total_count"] = fa["total_count"].detach()
        ta["total_count"] = ta["total_count"].detach()
    return getattr(D, cls)(**fa), getattr(TD, cls)(**ta), fa, ta


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_match_torch(name, dtype):
    params, value, integer, methods = CASES[name]
    tol = DTYPES[dtype][2]
    fd, td, fa, ta = _build(name, params, dtype)
    assert tuple(fd.batch_shape) == tuple(td.batch_shape) and tuple(fd.event_shape) == tuple(td.event_shape)
    fv, tv = value_pair(value, dtype, integer)
    fsum, tsum = 0, 0
    for m in methods:
        if m in ("log_prob", "cdf"):
            f, t = getattr(fd, m)(fv), getattr(td, m)(tv)
        elif m == "icdf":
            q = R.uniform(0.05, 0.95, tuple(td.batch_shape))
            fq, tq = value_pair(q, dtype)
            f, t = fd.icdf(fq), td.icdf(tq)
        elif m == "entropy":
            f, t = fd.entropy(), td.entropy()
        else:
            f, t = getattr(fd, m), getattr(td, m)
        close(f, t, tol, f"{name}.{m}")
        if f.dtype.is_floating_point and m != "mode":
            assert f.dtype == DTYPES[dtype][0], (m, f.dtype)
            finite = np.isfinite(t.detach().numpy())
            # Gamma.cdf: torch has no derivative of gammainc w.r.t. the concentration either
            if finite.all() and t.requires_grad and (name, m) != ("Gamma", "cdf"):
                fsum, tsum = fsum + f.sum(), tsum + t.sum()
    if isinstance(fsum, fg.Tensor):
        fsum.backward()
        tsum.backward()
        grads_close(fa, ta, tol, name)


@pytest.mark.parametrize("name", list(CASES))
def test_expand_and_sample_shapes(name):
    params, value, integer, _ = CASES[name]
    fd, td, _, _ = _build(name, params, "float64")
    e = fd.expand((2, 3, 5))
    assert e.batch_shape == (2, 3, 5) == tuple(td.expand((2, 3, 5)).batch_shape)
    fv, tv = value_pair(value, "float64", integer)
    close(e.log_prob(fv), td.expand((2, 3, 5)).log_prob(tv), 1e-10, name)
    for shape in ((), (4,), (2, 1)):
        s = fd.sample(shape)
        assert s.shape == tuple(td.sample(shape).shape), (name, shape)
        assert not s.requires_grad
        assert bool(fd.support.check(s).all()), name
    assert fd.sample(4).shape == (4, 3, 5)  # an int sample_shape is taken as (n,) (torch refuses an int)


def test_scalar_parameters_give_empty_batch_shape():
    n = D.Normal(0.0, 1.0)
    assert n.batch_shape == () and n.sample().shape == () and n.sample((3,)).shape == (3,)
    assert n.loc.dtype == fg.get_default_dtype()
    assert D.Bernoulli(0.3).batch_shape == () and D.Exponential(2.0).rsample((2, 2)).shape == (2, 2)
    for d in (D.Gamma(2.0, 1.0), D.Poisson(2.0), D.Binomial(3, probs=0.5), D.Beta(2.0, 3.0), D.Geometric(0.5),
              D.Laplace(0.0, 1.0), D.Uniform(0.0, 1.0), D.Categorical(fg.ones(3)), D.Bernoulli(logits=0.0)):
        assert d.sample().shape == () and d.sample((2,)).shape == (2,), d
    lp = D.Normal(0.0, 2.0).log_prob(fg.tensor(1.0))
    assert abs(lp.item() - TD.Normal(0.0, 2.0).log_prob(torch.tensor(1.0)).item()) < 1e-6


def test_parameter_broadcasting_mixed_number_and_tensor():
    loc = fg.tensor(np.zeros((2, 3)), dtype=fg.float64)
    n = D.Normal(loc, 2.0)
    assert n.scale.dtype == fg.float64 and n.scale.shape == (2, 3) and n.batch_shape == (2, 3)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_categorical_matches_torch(dtype):
    tol = DTYPES[dtype][2]
    probs = R.uniform(0.1, 1.0, (3, 1, 4))
    for kw in ("probs", "logits"):
        p = probs if kw == "probs" else np.log(probs) * 1.7
        fa, ta = pair({kw: p}, dtype)
        fd, td = D.Categorical(**fa), TD.Categorical(**ta)
        assert fd.batch_shape == (3, 1) and fd.event_shape == ()
        v = R.integers(0, 4, (2, 3, 5))
        fv, tv = value_pair(v, dtype, integer=True)
        close(fd.log_prob(fv), td.log_prob(tv), tol, "log_prob")
        close(fd.entropy(), td.entropy(), tol, "entropy")
        close(fd.probs, td.probs, tol, "probs")
        close(fd.logits, td.logits, tol, "logits")
        assert np.array_equal(fd.mode.numpy(), td.mode.numpy())
        assert np.isnan(fd.mean.numpy()).all() and fd.mean.shape == tuple(td.mean.shape)
        (fd.log_prob(fv).sum() + fd.entropy().sum()).backward()
        (td.log_prob(tv).sum() + td.entropy().sum()).backward()
        grads_close(fa, ta, tol, kw)
        assert fd.sample((6,)).shape == (6, 3, 1) and fd.sample().dtype == fg.int64
        assert fd.enumerate_support().shape == tuple(td.enumerate_support().shape)
        assert fd.expand((2, 3, 7)).sample().shape == (2, 3, 7)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_one_hot_categorical_matches_torch(dtype):
    tol = DTYPES[dtype][2]
    fa, ta = pair({"logits": R.normal(size=(2, 5))}, dtype)
    fd, td = D.OneHotCategorical(**fa), TD.OneHotCategorical(**ta)
    assert fd.batch_shape == (2,) and fd.event_shape == (5,)
    v = np.eye(5)[R.integers(0, 5, (3, 2))]
    fv, tv = value_pair(v, dtype)
    close(fd.log_prob(fv), td.log_prob(tv), tol, "log_prob")
    for m in ("mean", "mode", "variance"):
        close(getattr(fd, m), getattr(td, m), tol, m)
    close(fd.entropy(), td.entropy(), tol, "entropy")
    s = fd.sample((4,))
    assert s.shape == (4, 2, 5) and bool(fd.support.check(s).all())
    assert fd.enumerate_support().shape == tuple(td.enumerate_support().shape)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_dirichlet_matches_torch(dtype):
    tol = DTYPES[dtype][2]
    fa, ta = pair({"concentration": _pos(3, 4, lo=0.6)}, dtype)
    fd, td = D.Dirichlet(**fa), TD.Dirichlet(**ta)
    assert fd.batch_shape == (3,) and fd.event_shape == (4,)
    v = R.dirichlet(np.ones(4), 3)
    fv, tv = value_pair(v, dtype)
    lp_f, lp_t = fd.log_prob(fv), td.log_prob(tv)
    close(lp_f, lp_t, tol, "log_prob")
    close(fd.entropy(), td.entropy(), tol, "entropy")
    for m in ("mean", "variance", "mode"):
        close(getattr(fd, m), getattr(td, m), tol, m)
    (lp_f.sum() + fd.entropy().sum()).backward()
    (lp_t.sum() + td.entropy().sum()).backward()
    grads_close(fa, ta, tol, "Dirichlet")
    low = fg.tensor([[0.5, 0.2, 0.9], [2.0, 3.0, 1.5]], dtype=fg.float64)  # every entry < 1: a vertex
    close(D.Dirichlet(low).mode, TD.Dirichlet(torch.tensor(low.numpy())).mode, 1e-12, "mode < 1")
    s = fd.sample((5,))
    assert s.shape == (5, 3, 4) and bool(fd.support.check(s).all())


def test_reparameterisation_flags_match_torch():
    for name in ("Normal", "Uniform", "Laplace", "Exponential", "MultivariateNormal", "LogNormal", "Gamma", "Beta",
                 "Dirichlet", "Chi2", "Cauchy", "LowRankMultivariateNormal", "Bernoulli", "Categorical", "Poisson",
                 "Binomial", "Geometric", "OneHotCategorical", "MixtureSameFamily", "RelaxedBernoulli", "StudentT",
                 "HalfNormal", "HalfCauchy", "Multinomial", "NegativeBinomial"):
        assert getattr(D, name).has_rsample == getattr(TD, name).has_rsample, name
    assert D.Gumbel(0.0, 1.0).has_rsample and D.Independent(D.Gamma(fg.ones(2), fg.ones(2)), 1).has_rsample
    with pytest.raises(NotImplementedError, match="rsample"):
        D.Poisson(fg.tensor([2.0])).rsample()


def test_binomial_entropy_inhomogeneous_total_count_refuses_as_torch():
    d = D.Binomial(fg.tensor([3.0, 4.0]), probs=fg.tensor([0.3, 0.4]))
    with pytest.raises(NotImplementedError, match="Inhomogeneous total count"):
        d.entropy()


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_multinomial_matches_torch(dtype):
    tol = DTYPES[dtype][2]
    for kw in ("probs", "logits"):
        p = R.uniform(0.1, 1.0, (2, 4))
        fa, ta = pair({kw: p if kw == "probs" else np.log(p)}, dtype)
        fd, td = D.Multinomial(6, **fa), TD.Multinomial(6, **ta)
        assert fd.batch_shape == (2,) and fd.event_shape == (4,)
        v = np.stack([R.multinomial(6, [0.25] * 4) for _ in range(6)]).reshape(3, 2, 4).astype(float)
        fv, tv = value_pair(v, dtype)
        f_lp, t_lp = fd.log_prob(fv), td.log_prob(tv)
        close(f_lp, t_lp, tol, "log_prob")
        # torch's entropy takes lgamma(total_count + 1) of an int64 tensor, in float32: 1e-8 relative off
        close(fd.entropy(), td.entropy(), max(tol, 1e-7), "entropy")
        close(fd.mean, td.mean, tol, "mean")
        close(fd.variance, td.variance, tol, "variance")
        (f_lp.sum() + fd.entropy().sum()).backward()
        (t_lp.sum() + td.entropy().sum()).backward()
        grads_close(fa, ta, tol, kw)
        s = fd.sample((5,))
        assert s.shape == (5, 2, 4) and bool((s.sum(-1) == 6).all()) and s.dtype == DTYPES[dtype][0]
        assert fd.expand((3, 2)).sample().shape == (3, 2, 4)
    with pytest.raises(NotImplementedError, match="inhomogeneous total_count"):
        D.Multinomial(fg.tensor([2, 3]), probs=fg.ones(2, 3))


@pytest.mark.parametrize("name", ["Normal", "Laplace", "Cauchy", "Exponential", "Gamma", "Beta", "StudentT",
                                  "HalfNormal", "Uniform", "Chi2"])
def test_log_prob_gradient_wrt_value_matches_torch(name):
    params, value, _, _ = CASES[name]
    fd, td, _, _ = _build(name, params, "float64")
    fv = fg.tensor(value, dtype=fg.float64, requires_grad=True)
    tv = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    fd.log_prob(fv).sum().backward()
    td.log_prob(tv).sum().backward()
    if tv.grad is None:  # Uniform: the value only meets comparisons (forgegrad: no gradient or zeros)
        assert fv.grad is None or not np.any(fv.grad.numpy()), name
    else:
        close(fv.grad, tv.grad, 1e-10, name)
