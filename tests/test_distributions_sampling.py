"""Seeded draws of every family: moments (200k draws, 5-sigma bounds from the draws' own higher moments), the
probability integral transform through cdf, discrete frequencies against exp(log_prob); and pathwise (rsample)
gradients against the analytic derivative of the same noise and against torch given that noise."""
import math

import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.distributions as D

TD = torch.distributions
N = 200_000


def _t(*v):
    return fg.tensor(np.array(v, np.float64))


def _check_moments(x, mean, var, what):
    """|sample mean - mean| and |sample E(x - mean)^2 - var| within 5 standard errors."""
    x = x.numpy().astype(np.float64)
    mean, var = np.broadcast_to(mean, x.shape[1:]), np.broadcast_to(var, x.shape[1:])
    se_mean = np.sqrt(var / len(x))
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se_mean + 1e-12), (what, x.mean(0), mean)
    d2 = (x - mean) ** 2
    se_var = np.sqrt(d2.var(0) / len(x))
    assert np.all(np.abs(d2.mean(0) - var) < 5 * se_var + 1e-12), (what, d2.mean(0), var)


CONTINUOUS = {
    "Normal": lambda: D.Normal(_t(0.5, -2.0), _t(1.0, 0.3)),
    "Uniform": lambda: D.Uniform(_t(-1.0, 2.0), _t(3.0, 2.5)),
    "Laplace": lambda: D.Laplace(_t(1.0, -1.0), _t(0.5, 2.0)),
    "Exponential": lambda: D.Exponential(_t(0.5, 4.0)),
    "Gamma": lambda: D.Gamma(_t(0.3, 5.0), _t(2.0, 0.5)),
    "Beta": lambda: D.Beta(_t(0.5, 3.0), _t(2.0, 0.7)),
    "LogNormal": lambda: D.LogNormal(_t(0.0, 1.0), _t(0.3, 0.5)),
    "StudentT": lambda: D.StudentT(_t(5.0, 9.0), _t(1.0, -1.0), _t(2.0, 0.5)),
    "HalfNormal": lambda: D.HalfNormal(_t(0.5, 2.0)),
}


@pytest.mark.parametrize("name", list(CONTINUOUS))
def test_continuous_sample_moments_and_cdf(name):
    fg.manual_seed(0)
    d = CONTINUOUS[name]()
    x = d.sample((N,))
    assert x.shape == (N, 2) and x.dtype == fg.float64
    _check_moments(x, d.mean.detach().numpy(), d.variance.detach().numpy(), name)
    if name not in ("Beta", "StudentT"):  # no cdf (as torch)
        u = d.cdf(x).numpy()
        for q in (0.1, 0.5, 0.9):  # P(F(X) <= q) = q
            frac = (u <= q).mean(0)
            assert np.all(np.abs(frac - q) < 5 * math.sqrt(q * (1 - q) / N)), (name, q, frac)


def test_cauchy_and_rsample_draws_follow_the_quantiles():
    fg.manual_seed(1)
    d = D.Cauchy(_t(1.0), _t(2.0))
    x = d.rsample((N,)).numpy()
    for q in (0.25, 0.5, 0.75):
        frac = (x <= d.icdf(fg.tensor(q, dtype=fg.float64)).numpy()).mean()
        assert abs(frac - q) < 5 * math.sqrt(q * (1 - q) / N)


DISCRETE = {
    "Bernoulli": (lambda: D.Bernoulli(_t(0.2, 0.9)), 2),
    "Categorical": (lambda: D.Categorical(_t(0.1, 0.6, 0.3)), 3),
    "Poisson": (lambda: D.Poisson(_t(0.5, 6.0)), 20),
    "Binomial": (lambda: D.Binomial(_t(5.0, 12.0), _t(0.3, 0.8), validate_args=False), 13),
    "Geometric": (lambda: D.Geometric(_t(0.3, 0.8)), 25),
    "NegativeBinomial": (lambda: D.NegativeBinomial(_t(2.5, 7.0), _t(0.3, 0.6)), 30),
}


@pytest.mark.parametrize("name", list(DISCRETE))
def test_discrete_sample_frequencies_match_pmf(name):
    fg.manual_seed(2)
    make, kmax = DISCRETE[name]
    d = make()
    x = d.sample((N,)).numpy()
    batch = tuple(d.batch_shape)
    for k in range(kmax):
        value = fg.full(batch, float(k), dtype=fg.float64) if name != "Categorical" else fg.tensor(k)
        p = np.exp(d.log_prob(value).detach().numpy())  # Binomial: 0 past total_count (validate_args off there)
        freq = (x == k).mean(0)
        assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / N) + 1e-9), (name, k, freq, p)
    if name != "Categorical":
        _check_moments(d.sample((N,)), d.mean.numpy(), d.variance.numpy(), name)


def test_dirichlet_and_mvn_and_mixture_moments():
    fg.manual_seed(3)
    d = D.Dirichlet(_t(0.5, 2.0, 4.0))
    _check_moments(d.sample((N,)), d.mean.numpy(), d.variance.numpy(), "Dirichlet")
    L = np.array([[1.0, 0.0], [0.6, 0.5]])
    m = D.MultivariateNormal(_t(1.0, -1.0), scale_tril=fg.tensor(L))
    x = m.sample((N,)).numpy()
    cov = np.cov(x.T)
    assert np.all(np.abs(x.mean(0) - [1.0, -1.0]) < 5 * np.sqrt(np.diag(L @ L.T) / N))
    assert np.allclose(cov, L @ L.T, atol=0.02)  # sd of each entry of the sample covariance is < 0.004
    mix = D.MixtureSameFamily(D.Categorical(_t(0.3, 0.7)), D.Normal(_t(-2.0, 3.0), _t(0.5, 1.0)))
    _check_moments(mix.sample((N,)).reshape(N, 1), mix.mean.numpy(), mix.variance.numpy(), "Mixture")


def test_same_seed_same_draws():
    d = D.Normal(_t(0.0, 1.0), _t(1.0, 2.0))
    fg.manual_seed(5)
    a = d.sample((10,)).numpy()
    fg.manual_seed(5)
    assert np.array_equal(a, d.sample((10,)).numpy())


def test_rsample_gradients_are_the_pathwise_derivatives():
    fg.manual_seed(4)
    w = np.random.default_rng(0).normal(size=(1000, 3))
    fw = fg.tensor(w)
    cases = {
        # name: (make(params), params, d x / d param from (x, params))
        "Normal": (lambda p: D.Normal(p[0], p[1]), [_t(0.5, -1.0, 2.0), _t(1.0, 0.5, 2.0)],
                   lambda x, p: [np.ones_like(x), (x - p[0]) / p[1]]),
        "Uniform": (lambda p: D.Uniform(p[0], p[1]), [_t(-1.0, 0.0, 2.0), _t(1.0, 3.0, 2.5)],
                    lambda x, p: [1 - (x - p[0]) / (p[1] - p[0]), (x - p[0]) / (p[1] - p[0])]),
        "Laplace": (lambda p: D.Laplace(p[0], p[1]), [_t(0.5, -1.0, 2.0), _t(1.0, 0.5, 2.0)],
                    lambda x, p: [np.ones_like(x), (x - p[0]) / p[1]]),
        "Exponential": (lambda p: D.Exponential(p[0]), [_t(0.5, 1.0, 3.0)], lambda x, p: [-x / p[0]]),
        "LogNormal": (lambda p: D.LogNormal(p[0], p[1]), [_t(0.1, -0.5, 0.3), _t(0.4, 0.2, 0.6)],
                      lambda x, p: [x, x * (np.log(x) - p[0]) / p[1]]),
        "Cauchy": (lambda p: D.Cauchy(p[0], p[1]), [_t(0.5, -1.0, 2.0), _t(1.0, 0.5, 2.0)],
                   lambda x, p: [np.ones_like(x), (x - p[0]) / p[1]]),
    }
    for name, (make, params, dxdp) in cases.items():
        params = [p.detach().requires_grad_() for p in params]
        x = make(params).rsample((1000,))
        assert x.requires_grad
        (x * fw).sum().backward()
        xs = x.detach().numpy()
        pn = [p.detach().numpy() for p in params]
        for p, d in zip(params, dxdp(xs, pn)):
            np.testing.assert_allclose(p.grad.numpy(), (w * d).sum(0), rtol=1e-9, atol=1e-9, err_msg=name)


def test_rsample_gradient_expectation_normal():
    fg.manual_seed(6)
    loc, scale = _t(0.5).requires_grad_(), _t(1.5).requires_grad_()
    x = D.Normal(loc, scale).rsample((N,))
    (x ** 2).mean().backward()  # d/dloc E[x^2] = 2 loc, d/dscale = 2 scale
    eps = (x.detach().numpy() - 0.5) / 1.5
    se_loc = np.std(2 * x.detach().numpy()) / math.sqrt(N)
    se_scale = np.std(2 * x.detach().numpy() * eps) / math.sqrt(N)
    assert abs(loc.grad.item() - 1.0) < 5 * se_loc and abs(scale.grad.item() - 3.0) < 5 * se_scale


def test_mvn_rsample_gradient_matches_torch_with_the_same_noise():
    fg.manual_seed(7)
    L = np.array([[1.0, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.2, 0.4, 0.6]])
    loc = np.array([0.1, -0.3, 1.0])
    fl, fL = fg.tensor(loc, requires_grad=True), fg.tensor(L, requires_grad=True)
    x = D.MultivariateNormal(fl, scale_tril=fL).rsample((50,))
    eps = np.linalg.solve(L, (x.detach().numpy() - loc).T).T  # the noise the draw used
    tl, tL = torch.tensor(loc, requires_grad=True), torch.tensor(L, requires_grad=True)
    tx = tl + (tL @ torch.tensor(eps).unsqueeze(-1)).squeeze(-1)
    np.testing.assert_allclose(x.detach().numpy(), tx.detach().numpy(), atol=1e-12)
    w = np.random.default_rng(1).normal(size=(50, 3))
    (x * fg.tensor(w)).sum().backward()
    (tx * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(fl.grad.numpy(), tl.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(fL.grad.numpy(), tL.grad.numpy(), atol=1e-10)


def test_gamma_rsample_gradient_is_the_implicit_reparameterisation_one():
    sp = pytest.importorskip("scipy.special", reason="scipy gives the exact quantile derivative to compare with")
    fg.manual_seed(8)
    alpha = fg.tensor([0.05, 0.5, 1.0, 2.5, 30.0, 400.0], dtype=fg.float64, requires_grad=True)
    rate = fg.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0], dtype=fg.float64, requires_grad=True)
    x = D.Gamma(alpha, rate).rsample((20,))
    x.sum().backward()
    a, r, xs = alpha.detach().numpy(), rate.detach().numpy(), x.detach().numpy()
    # the derivative of the quantile function at the draw's own quantile: x = Q(alpha, u) / rate
    u = sp.gammainc(a, xs * r)
    h = 1e-6 * a
    dq = (sp.gammaincinv(a + h, u) - sp.gammaincinv(a - h, u)) / (2 * h) / r
    np.testing.assert_allclose(alpha.grad.numpy(), dq.sum(0), rtol=1e-5)
    np.testing.assert_allclose(rate.grad.numpy(), (-xs / r).sum(0), rtol=1e-10)
    # torch's own (approximate) rule for d x / d alpha of the standard draws
    t = torch._standard_gamma_grad(torch.tensor(np.broadcast_to(a, xs.shape).copy()), torch.tensor(xs * r))
    mine = dq * r
    np.testing.assert_allclose(mine, t.numpy(), rtol=2e-3)


def test_gamma_beta_dirichlet_rsample_gradients_are_unbiased():
    fg.manual_seed(9)
    c = fg.tensor([0.7, 3.0], dtype=fg.float64, requires_grad=True)
    x = D.Gamma(c, 2.0).rsample((N,))
    x.mean(0).sum().backward()  # d/dc E[x] = 1 / rate; the estimate's standard error is 7e-4 at most here
    np.testing.assert_allclose(c.grad.numpy(), [0.5, 0.5], atol=0.004)
    a1 = fg.tensor(2.0, dtype=fg.float64, requires_grad=True)
    a0 = fg.tensor(3.0, dtype=fg.float64, requires_grad=True)
    b = D.Beta(a1, a0).rsample((N,))
    b.mean().backward()  # E[x] = a1 / (a1 + a0): d/da1 = a0 / s^2 = 0.12, d/da0 = -a1 / s^2 = -0.08
    assert abs(a1.grad.item() - 0.12) < 0.001 and abs(a0.grad.item() + 0.08) < 0.001  # 5 standard errors
    conc = fg.tensor([1.0, 2.0, 3.0], dtype=fg.float64, requires_grad=True)
    y = D.Dirichlet(conc).rsample((N,))
    y[:, 0].mean().backward()  # E[x0] = c0 / sum: gradient (s - c0, -c0, -c0) / s^2
    np.testing.assert_allclose(conc.grad.numpy(), np.array([5.0, -1.0, -1.0]) / 36, atol=0.0015)
    assert y.shape == (N, 3) and D.Dirichlet(conc).support.check(y.detach()).all().item()


def test_multinomial_sample_moments():
    fg.manual_seed(10)
    d = D.Multinomial(7, fg.tensor([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], dtype=fg.float64))
    _check_moments(d.sample((N,)), d.mean.numpy(), d.variance.numpy(), "Multinomial")
