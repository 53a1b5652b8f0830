"""forgegrad.distributions' Pareto, Weibull, Kumaraswamy, InverseGamma, LogisticNormal, FisherSnedecor,
GeneralizedPareto, ContinuousBernoulli, VonMises, ExpRelaxedCategorical, RelaxedOneHotCategorical and
OneHotCategoricalStraightThrough against torch.distributions 2.13: values and gradients w.r.t. the parameters in
float32 and float64 on odd broadcast batch shapes, expand and sample shapes, seeded sampling moments, validation
and reprs. (Their KL pairs are in tests/test_distributions_kl.py's every-pair test.)"""
import math

import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.distributions as D
from dist_helpers import DTYPES, close, grads_close, pair, value_pair

TD = torch.distributions
R = np.random.default_rng(23)


def _pos(*shape, lo=0.3, hi=3.0):
    return R.uniform(lo, hi, shape)


ALL = ("log_prob", "cdf", "icdf", "entropy", "mean", "mode", "variance", "stddev")
# name: (params, value broadcast against the batch, methods)
CASES = {
    "Pareto": (dict(scale=_pos(3, 1, lo=0.2, hi=0.9), alpha=_pos(5, lo=2.5, hi=5.0)), _pos(3, 5, lo=1.0, hi=4.0),
               ("log_prob", "cdf", "icdf", "entropy", "mean", "mode", "variance")),
    "Weibull": (dict(scale=_pos(3, 1), concentration=_pos(5, lo=1.2)), _pos(3, 5),
                ("log_prob", "cdf", "icdf", "entropy", "mean", "mode", "variance")),
    "Kumaraswamy": (dict(concentration1=_pos(3, 1, lo=1.2), concentration0=_pos(5, lo=1.2)),
                    R.uniform(0.05, 0.95, (3, 5)), ("log_prob", "entropy", "mean", "mode", "variance")),
    "InverseGamma": (dict(concentration=_pos(3, 1, lo=2.5, hi=5.0), rate=_pos(5)), _pos(3, 5),
                     ("log_prob", "entropy", "mean", "mode", "variance")),
    "FisherSnedecor": (dict(df1=_pos(3, 1, lo=2.5, hi=9.0), df2=_pos(5, lo=4.5, hi=12.0)), _pos(3, 5),
                       ("log_prob", "mean", "mode", "variance")),
    "GeneralizedPareto": (dict(loc=R.normal(size=(3, 1)), scale=_pos(5),
                               concentration=np.array([-0.2, 0.0, 0.1, 0.3, 0.4])),
                          None, ("log_prob", "cdf", "icdf", "entropy", "mean", "mode", "variance")),
    "ContinuousBernoulli": (dict(probs=np.array([[0.1, 0.3, 0.4995, 0.5005, 0.8]] * 3)),
                            R.uniform(0.02, 0.98, (3, 5)), tuple(m for m in ALL if m != "mode")),
    "ContinuousBernoulli_logits": (dict(logits=R.normal(size=(3, 5)) * 2), R.uniform(0.02, 0.98, (3, 5)),
                                   ("log_prob", "cdf", "icdf", "entropy", "mean", "variance")),
    "VonMises": (dict(loc=R.uniform(-3, 3, (3, 1)), concentration=np.array([0.05, 0.7, 2.0, 3.74, 9.0])),
                 R.uniform(-3, 3, (3, 5)), ("log_prob", "mean", "mode", "variance")),
    "LogisticNormal": (dict(loc=R.normal(size=(2, 1, 3)), scale=_pos(5, 3)), R.dirichlet(np.ones(4), (2, 5)),
                       ("log_prob",)),
    "RelaxedOneHotCategorical": (dict(temperature=np.array(0.7), logits=R.normal(size=(3, 1, 4))),
                                 R.dirichlet(np.ones(4), (3, 2)), ("log_prob",)),
    "ExpRelaxedCategorical": (dict(temperature=np.array(1.3), probs=R.dirichlet(np.ones(4), (2, 3))),
                              np.log(R.dirichlet(np.ones(4), (2, 3))), ("log_prob",)),
}


def _value(name, fd):
    params, value, _ = CASES[name]
    if value is None:  # GeneralizedPareto: inside each member's support
        lo, hi = fd.support.lower_bound.detach().numpy(), fd.support.upper_bound.detach().numpy()
        value = lo + np.minimum(hi - lo, 4.0) * R.uniform(0.05, 0.95, lo.shape)
    return value


@pytest.fixture
def torch_default_dtype(request):
    # torch's GeneralizedPareto.log_prob builds torch.tensor(0.0) in the default dtype and fails on float64
    # parameters otherwise (torch 2.13)
    old = torch.get_default_dtype()
    yield torch.set_default_dtype
    torch.set_default_dtype(old)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_match_torch(name, dtype, torch_default_dtype):
    torch_default_dtype(DTYPES[dtype][1])
    params, _, methods = CASES[name]
    cls = name.split("_")[0]
    tcls = getattr(TD, cls, None) or getattr(TD.relaxed_categorical, cls)
    tol = DTYPES[dtype][2]
    fa, ta = pair(params, dtype)
    fd, td = getattr(D, cls)(**fa), tcls(**ta)
    assert tuple(fd.batch_shape) == tuple(td.batch_shape) and tuple(fd.event_shape) == tuple(td.event_shape)
    assert repr(fd) == repr(td)
    fv, tv = value_pair(_value(name, fd), dtype)
    fsum, tsum = 0, 0
    for m in methods:
        if m in ("log_prob", "cdf"):
            f, t = getattr(fd, m)(fv), getattr(td, m)(tv)
        elif m == "icdf":
            fq, tq = value_pair(R.uniform(0.05, 0.95, tuple(td.batch_shape)), dtype)
            f, t = fd.icdf(fq), td.icdf(tq)
        elif m == "entropy":
            f, t = fd.entropy(), td.entropy()
        else:
            f, t = getattr(fd, m), getattr(td, m)
        # VonMises: torch's Bessel polynomials are float32-accurate only, the same formula in both
        close(f, t, tol, f"{name}.{m}")
        assert f.dtype == DTYPES[dtype][0], (m, f.dtype)
        if np.isfinite(t.detach().numpy()).all() and t.requires_grad:
            fsum, tsum = fsum + f.sum(), tsum + t.sum()
    fsum.backward()
    tsum.backward()
    grads_close(fa, ta, tol, name)


@pytest.mark.parametrize("name", [n for n in CASES if "_" not in n])
def test_expand_and_sample_shapes(name, torch_default_dtype):
    torch_default_dtype(torch.float64)
    params, _, _ = CASES[name]
    fa, ta = pair(params, "float64", grad=False)
    fd, td = getattr(D, name)(**fa), (getattr(TD, name, None) or getattr(TD.relaxed_categorical, name))(**ta)
    batch = (2,) + tuple(td.batch_shape)
    e, te = fd.expand(batch), td.expand(batch)
    assert tuple(e.batch_shape) == tuple(te.batch_shape) and type(e) is type(fd)
    fv, tv = value_pair(_value(name, fd), "float64")
    close(e.log_prob(fv), te.log_prob(tv), 1e-10, name)
    for shape in ((), (4,), (2, 1)):
        s = fd.sample(shape)
        assert s.shape == tuple(td.sample(shape).shape), (name, shape)
        assert not s.requires_grad
        if name != "VonMises":  # VonMises' support is all reals, draws are in [-pi, pi)
            assert bool(fd.support.check(s).all()), name
    assert fd.has_rsample == td.has_rsample


N = 200_000


def _t(*v):
    return fg.tensor(np.array(v, np.float64))


def _check_moments(x, mean, var, what):
    x = x.numpy().astype(np.float64)
    mean, var = np.broadcast_to(mean, x.shape[1:]), np.broadcast_to(var, x.shape[1:])
    assert np.all(np.abs(x.mean(0) - mean) < 5 * np.sqrt(var / len(x)) + 1e-12), (what, x.mean(0), mean)
    d2 = (x - mean) ** 2
    assert np.all(np.abs(d2.mean(0) - var) < 5 * np.sqrt(d2.var(0) / len(x)) + 1e-12), (what, d2.mean(0), var)


MOMENTS = {  # parameters with finite fourth moments, so the variance check's own standard error is meaningful
    "Pareto": lambda: D.Pareto(_t(1.0, 0.5), _t(9.0, 12.0)),
    "Weibull": lambda: D.Weibull(_t(1.0, 2.0), _t(0.8, 3.0)),
    "Kumaraswamy": lambda: D.Kumaraswamy(_t(0.5, 3.0), _t(2.0, 0.7)),
    "InverseGamma": lambda: D.InverseGamma(_t(9.0, 12.0), _t(2.0, 0.5)),
    "FisherSnedecor": lambda: D.FisherSnedecor(_t(3.0, 10.0), _t(20.0, 30.0)),
    "GeneralizedPareto": lambda: D.GeneralizedPareto(_t(0.0, 1.0), _t(1.0, 2.0), _t(-0.3, 0.1)),
    "ContinuousBernoulli": lambda: D.ContinuousBernoulli(_t(0.1, 0.5, 0.7)),
}


@pytest.mark.parametrize("name", list(MOMENTS))
def test_sample_moments(name):
    fg.manual_seed(0)
    d = MOMENTS[name]()
    _check_moments(d.sample((N,)), d.mean.numpy(), d.variance.numpy(), name)
    _check_moments(d.rsample((N,)).detach(), d.mean.detach().numpy(), d.variance.detach().numpy(), name)


def test_von_mises_rejection_draws_follow_the_density():
    fg.manual_seed(1)
    d = D.VonMises(_t(2.5, -1.0, 0.0), _t(0.5, 4.0, 1e-6))
    x = d.sample((N,)).numpy()
    assert x.min() >= -math.pi and x.max() < math.pi
    # circular moments: E cos(x - loc) = I1(k) / I0(k) = 1 - variance
    c = np.cos(x - d.loc.numpy())
    expect = 1 - d.variance.numpy()
    assert np.all(np.abs(c.mean(0) - expect) < 5 * np.sqrt(c.var(0) / N)), (c.mean(0), expect)
    s = np.sin(x - d.loc.numpy())
    assert np.all(np.abs(s.mean(0)) < 5 * np.sqrt(s.var(0) / N))
    # histogram against exp(log_prob) on 8 bins, by a midpoint rule on a fine grid
    edges = np.linspace(-math.pi, math.pi, 9)
    grid = np.linspace(-math.pi, math.pi, 8001)
    dens = np.exp(d.log_prob(fg.tensor(grid[:, None].repeat(3, 1))).numpy())
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (grid >= lo) & (grid <= hi)
        p = np.trapezoid(dens[m], grid[m], axis=0)
        freq = ((x >= lo) & (x < hi)).mean(0)
        assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / N) + 2e-3), (lo, freq, p)


def test_relaxed_and_straight_through_draws():
    fg.manual_seed(2)
    logits = fg.tensor(np.log(np.array([0.2, 0.5, 0.3])), requires_grad=True)
    d = D.RelaxedOneHotCategorical(fg.tensor(0.05, dtype=fg.float64), logits=logits)
    x = d.rsample((N,))
    assert x.shape == (N, 3) and bool(D.constraints.simplex.check(x.detach()).all())
    # at a low temperature the argmax of a relaxed draw is a categorical draw
    freq = np.bincount(x.detach().numpy().argmax(-1), minlength=3) / N
    p = np.array([0.2, 0.5, 0.3])
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / N))
    x.sum(0)[0].backward()
    assert logits.grad is not None and np.isfinite(logits.grad.numpy()).all()
    fl = fg.tensor([[0.1, 1.0, -0.5]], requires_grad=True)
    tl = torch.tensor([[0.1, 1.0, -0.5]], dtype=torch.float32, requires_grad=True)
    st, ts = D.OneHotCategoricalStraightThrough(logits=fl), TD.OneHotCategoricalStraightThrough(logits=tl)
    y, ty = st.rsample((5,)), ts.rsample((5,))
    assert y.shape == tuple(ty.shape) and set(np.unique(y.detach().numpy())) <= {0.0, 1.0}
    assert st.has_rsample and bool(D.constraints.one_hot.check(y.detach()).all())
    # the gradient of rsample is the gradient of probs, whatever was drawn
    w = R.normal(size=(5, 1, 3))
    (y * fg.tensor(w, dtype=fg.float32)).sum().backward()
    (ty * torch.tensor(w, dtype=torch.float32)).sum().backward()
    close(fl.grad, tl.grad, 1e-5)

BAD = [
    (lambda: D.Pareto(fg.tensor([1.0, -1.0]), 2.0), "scale"),
    (lambda: D.Pareto(1.0, fg.tensor([0.0])), "rate"),  # torch checks the base Exponential first
    (lambda: D.Weibull(1.0, fg.tensor([-2.0])), "concentration"),
    (lambda: D.Kumaraswamy(fg.tensor([-1.0]), 1.0), "concentration1"),
    (lambda: D.InverseGamma(1.0, fg.tensor([0.0])), "rate"),
    (lambda: D.FisherSnedecor(fg.tensor([-1.0]), 1.0), "concentration"),  # torch's inner Gamma, as torch
    (lambda: D.GeneralizedPareto(0.0, fg.tensor([-1.0]), 0.5), "scale"),
    (lambda: D.VonMises(0.0, fg.tensor([-1.0])), "concentration"),
    (lambda: D.LogisticNormal(fg.zeros(3), fg.tensor([1.0, 0.0, 1.0])), "scale"),
    (lambda: D.RelaxedOneHotCategorical(fg.tensor(1.0), probs=fg.tensor([-0.5, 1.5])), "probs"),
]


@pytest.mark.parametrize("make,param", BAD)
def test_invalid_parameters_raise_naming_the_parameter(make, param):
    with pytest.raises(ValueError, match=f"Expected parameter {param} "):
        make()


def test_value_and_constructor_errors_as_torch():
    with pytest.raises(ValueError, match="support"):
        D.Pareto(fg.tensor([1.0]), fg.tensor([2.0])).log_prob(fg.tensor([0.5]))
    with pytest.raises(ValueError, match="support"):
        D.ContinuousBernoulli(fg.tensor([0.3])).log_prob(fg.tensor([1.5]))
    with pytest.raises(ValueError, match="Either `probs` or `logits`"):
        D.ContinuousBernoulli()
    with pytest.raises(ValueError, match="The parameter probs has invalid values"):
        D.ContinuousBernoulli(fg.tensor([1.5]), validate_args=True)
    with pytest.raises(ValueError, match="support"):
        D.GeneralizedPareto(fg.tensor([0.0]), fg.tensor([1.0]), fg.tensor([-0.5])).log_prob(fg.tensor([2.5]))
    with pytest.raises(ValueError, match="support"):
        D.LogisticNormal(fg.zeros(2), fg.ones(2)).log_prob(fg.tensor([0.5, 0.6, 0.1]))


def test_pareto_and_continuous_bernoulli_kl_infinities_match_torch():
    cases = [("Pareto", dict(scale=np.array([1.0, 0.5, 0.5]), alpha=np.array([0.8, 1.5, 3.0])),
              "Exponential", dict(rate=np.array([1.0, 1.0, 1.0]))),
             ("Pareto", dict(scale=np.array([1.0, 0.5, 0.5]), alpha=np.array([0.8, 1.5, 3.0])),
              "Gamma", dict(concentration=np.array([2.0, 2.0, 2.0]), rate=np.array([1.0, 1.0, 1.0]))),
             ("Pareto", dict(scale=np.array([1.0, 0.5, 0.5]), alpha=np.array([1.8, 1.5, 3.0])),
              "Normal", dict(loc=np.zeros(3), scale=np.ones(3))),
             ("Pareto", dict(scale=np.array([1.0, 0.5]), alpha=np.array([2.0, 3.0])),
              "Pareto", dict(scale=np.array([0.5, 1.0]), alpha=np.array([1.0, 2.0]))),
             ("Uniform", dict(low=np.array([0.2, 1.5]), high=np.array([3.0, 4.0])),
              "Pareto", dict(scale=np.array([1.0, 1.0]), alpha=np.array([2.0, 2.0]))),
             ("ContinuousBernoulli", dict(probs=np.array([0.3, 0.3])),
              "Uniform", dict(low=np.array([-0.5, 0.1]), high=np.array([1.5, 2.0])))]
    for pn, pp, qn, qp in cases:
        fk = D.kl_divergence(getattr(D, pn)(**pair(pp, "float64")[0]), getattr(D, qn)(**pair(qp, "float64")[0]))
        tk = TD.kl_divergence(getattr(TD, pn)(**pair(pp, "float64")[1]), getattr(TD, qn)(**pair(qp, "float64")[1]))
        close(fk, tk, 1e-10, f"{pn} {qn}")


PATHWISE = {  # rsample is pathwise: d/dparams of the draws' mean estimates d/dparams of the analytic mean
    "Pareto": (dict(scale=[1.0, 0.5], alpha=[9.0, 12.0]), lambda d: d.mean),
    "Weibull": (dict(scale=[1.0, 2.0], concentration=[0.8, 3.0]), lambda d: d.mean),
    "Kumaraswamy": (dict(concentration1=[0.5, 3.0], concentration0=[2.0, 0.7]), lambda d: d.mean),
    "InverseGamma": (dict(concentration=[9.0, 12.0], rate=[2.0, 0.5]), lambda d: d.mean),
    "FisherSnedecor": (dict(df1=[3.0, 10.0], df2=[20.0, 30.0]), lambda d: d.mean),
    "GeneralizedPareto": (dict(loc=[0.0, 1.0], scale=[1.0, 2.0], concentration=[-0.3, 0.1]), lambda d: d.mean),
    "ContinuousBernoulli": (dict(probs=[0.1, 0.7]), lambda d: d.mean),
}


@pytest.mark.parametrize("name", list(PATHWISE))
def test_rsample_gradient_estimates_the_mean_gradient(name):
    params, target = PATHWISE[name]
    fa = {k: fg.tensor(np.array(v), requires_grad=True) for k, v in params.items()}
    d = getattr(D, name)(**fa)
    fg.manual_seed(4)
    x = d.rsample((N,))
    grads = fg.autograd.grad(x.mean(0).sum(), list(fa.values()))
    exact = fg.autograd.grad(target(getattr(D, name)(**fa)).sum(), list(fa.values()), allow_unused=True)
    for k, g, e in zip(fa, grads, exact):  # FisherSnedecor's mean does not depend on df1: exact gradient 0
        e = np.zeros(2) if e is None else e.numpy()
        # seeded draws (deterministic); over seeds 4-6 the estimates stayed within 1.5% / 0.0015 of the exact values
        np.testing.assert_allclose(g.numpy(), e, rtol=0.02, atol=0.002, err_msg=f"{name} d/d{k}")
