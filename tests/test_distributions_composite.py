"""MultivariateNormal (three parametrisations), LowRankMultivariateNormal, Independent, MixtureSameFamily,
TransformedDistribution with the common transforms, and LogNormal against torch.distributions 2.13."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.distributions as D
from dist_helpers import DTYPES, close, grads_close, pair, value_pair

TD = torch.distributions
R = np.random.default_rng(3)


def _spd(*batch, n=3):
    a = R.normal(size=batch + (n, n))
    return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("param", ["covariance_matrix", "precision_matrix", "scale_tril"])
def test_multivariate_normal_matches_torch(param, dtype):
    tol = DTYPES[dtype][2] * (20 if dtype == "float32" else 1)
    m = _spd(2, 1)
    m = np.linalg.cholesky(m) if param == "scale_tril" else m
    fa, ta = pair({"loc": R.normal(size=(4, 3)), param: m}, dtype)
    fd, td = D.MultivariateNormal(**fa), TD.MultivariateNormal(**ta)
    assert fd.batch_shape == (2, 4) == tuple(td.batch_shape) and fd.event_shape == (3,)
    fv, tv = value_pair(R.normal(size=(5, 1, 4, 3)), dtype)
    f_lp, t_lp = fd.log_prob(fv), td.log_prob(tv)
    close(f_lp, t_lp, tol, "log_prob")
    close(fd.entropy(), td.entropy(), tol, "entropy")
    for m_ in ("mean", "mode", "variance", "stddev", "covariance_matrix", "precision_matrix", "scale_tril"):
        close(getattr(fd, m_), getattr(td, m_), tol, m_)
    (f_lp.sum() + fd.entropy().sum()).backward()
    (t_lp.sum() + td.entropy().sum()).backward()
    grads_close(fa, ta, tol, param)
    assert fd.rsample((6,)).shape == (6, 2, 4, 3) and fd.expand((5, 2, 4)).sample().shape == (5, 2, 4, 3)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_lowrank_multivariate_normal_matches_torch(dtype):
    tol = DTYPES[dtype][2] * (20 if dtype == "float32" else 1)
    fa, ta = pair({"loc": R.normal(size=(2, 4)), "cov_factor": R.normal(size=(4, 2)),
                   "cov_diag": R.uniform(0.5, 2.0, (4,))}, dtype)
    fd, td = D.LowRankMultivariateNormal(**fa), TD.LowRankMultivariateNormal(**ta)
    assert fd.batch_shape == (2,) and fd.event_shape == (4,)
    fv, tv = value_pair(R.normal(size=(3, 2, 4)), dtype)
    f_lp, t_lp = fd.log_prob(fv), td.log_prob(tv)
    close(f_lp, t_lp, tol, "log_prob")
    close(fd.entropy(), td.entropy(), tol, "entropy")
    for m in ("variance", "covariance_matrix", "precision_matrix", "scale_tril"):
        close(getattr(fd, m), getattr(td, m), tol, m)
    (f_lp.sum() + fd.entropy().sum()).backward()
    (t_lp.sum() + td.entropy().sum()).backward()
    grads_close(fa, ta, tol, "lowrank")
    assert fd.rsample((5,)).shape == (5, 2, 4)
    with pytest.raises(ValueError, match="cov_factor must be a batch of matrices with shape 4 x m"):
        D.LowRankMultivariateNormal(fg.zeros(4), fg.zeros(3, 2), fg.ones(4))


def test_multivariate_normal_argument_errors():
    with pytest.raises(ValueError, match="Exactly one of covariance_matrix or precision_matrix or scale_tril"):
        D.MultivariateNormal(fg.zeros(2))
    with pytest.raises(ValueError, match="loc must be at least one-dimensional"):
        D.MultivariateNormal(fg.tensor(0.0), covariance_matrix=fg.eye(1))
    with pytest.raises(ValueError, match="covariance_matrix matrix must be at least two-dimensional"):
        D.MultivariateNormal(fg.zeros(2), covariance_matrix=fg.ones(2))
    not_pd = fg.tensor([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="covariance_matrix .*PositiveDefinite"):
        D.MultivariateNormal(fg.zeros(2), covariance_matrix=not_pd)
    with pytest.raises(ValueError, match="scale_tril .*LowerCholesky"):
        D.MultivariateNormal(fg.zeros(2), scale_tril=fg.tensor([[1.0, 0.0], [0.0, -1.0]]))


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_independent_matches_torch(dtype):
    tol = DTYPES[dtype][2]
    fa, ta = pair({"loc": R.normal(size=(2, 3, 4)), "scale": R.uniform(0.5, 2, (2, 3, 4))}, dtype)
    fd, td = D.Independent(D.Normal(**fa), 2), TD.Independent(TD.Normal(**ta), 2)
    assert fd.batch_shape == (2,) and fd.event_shape == (3, 4)
    fv, tv = value_pair(R.normal(size=(5, 2, 3, 4)), dtype)
    close(fd.log_prob(fv), td.log_prob(tv), tol, "log_prob")
    close(fd.entropy(), td.entropy(), tol, "entropy")
    assert fd.has_rsample and fd.rsample((7,)).shape == (7, 2, 3, 4)
    e = fd.expand((6, 2))
    assert e.batch_shape == (6, 2) and e.event_shape == (3, 4) and e.sample().shape == (6, 2, 3, 4)
    assert repr(fd) == repr(td).replace("torch.Size", "torch.Size")
    with pytest.raises(ValueError, match="Expected reinterpreted_batch_ndims <= len"):
        D.Independent(D.Normal(fg.zeros(3), fg.ones(3)), 2)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_mixture_same_family_matches_torch(dtype):
    tol = DTYPES[dtype][2]
    fa, ta = pair({"logits": R.normal(size=(2, 5)), "loc": R.normal(size=(2, 5)) * 3,
                   "scale": R.uniform(0.5, 2, (2, 5))}, dtype)
    fd = D.MixtureSameFamily(D.Categorical(logits=fa["logits"]), D.Normal(fa["loc"], fa["scale"]))
    td = TD.MixtureSameFamily(TD.Categorical(logits=ta["logits"]), TD.Normal(ta["loc"], ta["scale"]))
    assert fd.batch_shape == (2,) and fd.event_shape == ()
    fv, tv = value_pair(R.normal(size=(4, 2)) * 3, dtype)
    f_lp, t_lp = fd.log_prob(fv), td.log_prob(tv)
    close(f_lp, t_lp, tol, "log_prob")
    close(fd.cdf(fv), td.cdf(tv), tol, "cdf")
    close(fd.mean, td.mean, tol, "mean")
    close(fd.variance, td.variance, tol, "variance")
    f_lp.sum().backward()
    t_lp.sum().backward()
    grads_close(fa, ta, tol, "mixture")
    s = fd.sample((3,))
    assert s.shape == (3, 2) and fd.expand((4, 2)).sample().shape == (4, 2)
    # a mixture of multivariate components (event dims)
    loc = fg.tensor(R.normal(size=(5, 2)))
    mvn = D.MixtureSameFamily(D.Categorical(logits=fg.zeros(5)), D.Independent(D.Normal(loc, fg.ones(5, 2)), 1))
    tmvn = TD.MixtureSameFamily(TD.Categorical(logits=torch.zeros(5)),
                                TD.Independent(TD.Normal(torch.tensor(loc.numpy()), torch.ones(5, 2)), 1))
    x = R.normal(size=(3, 2))
    close(mvn.log_prob(fg.tensor(x)), tmvn.log_prob(torch.tensor(x)), 1e-10, "mixture of Independent")
    assert mvn.sample((4,)).shape == (4, 2)
    with pytest.raises(ValueError, match="does not equal `component_distribution.batch_shape"):
        D.MixtureSameFamily(D.Categorical(logits=fg.zeros(4)), D.Normal(fg.zeros(5), fg.ones(5)))
    with pytest.raises(ValueError, match="instance of torch.distributions.Categorical"):
        D.MixtureSameFamily(D.Normal(0.0, 1.0), D.Normal(fg.zeros(5), fg.ones(5)))


def _transform_pairs(loc, scale):
    return [
        ([D.ExpTransform()], [TD.ExpTransform()]),
        ([D.AffineTransform(loc[0], scale[0])], [TD.AffineTransform(loc[1], scale[1])]),
        ([D.AffineTransform(0.5, -2.0)], [TD.AffineTransform(0.5, -2.0)]),
        ([D.SigmoidTransform()], [TD.SigmoidTransform()]),
        ([D.TanhTransform()], [TD.TanhTransform()]),
        ([D.AffineTransform(1.0, 0.5), D.SigmoidTransform()], [TD.AffineTransform(1.0, 0.5), TD.SigmoidTransform()]),
        ([D.ExpTransform().inv, D.AffineTransform(1.0, 3.0)], [TD.ExpTransform().inv, TD.AffineTransform(1.0, 3.0)]),
    ]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("k", range(7))
def test_transformed_distribution_matches_torch(k, dtype):
    tol = DTYPES[dtype][2] * 10
    fa, ta = pair({"loc": R.normal(size=(3,)) * 0.5, "scale": R.uniform(0.5, 1.5, (3,)),
                   "tloc": R.normal(size=(2, 1)), "tscale": R.uniform(0.5, 2, (2, 1))}, dtype)
    ft, tt = _transform_pairs((fa["tloc"], ta["tloc"]), (fa["tscale"], ta["tscale"]))[k]
    if k == 6:  # log then affine: the base must be positive
        fd = D.TransformedDistribution(D.Gamma(fa["scale"] + 1, fa["scale"]), ft)
        td = TD.TransformedDistribution(TD.Gamma(ta["scale"] + 1, ta["scale"]), tt)
    else:
        fd = D.TransformedDistribution(D.Normal(fa["loc"], fa["scale"]), ft)
        td = TD.TransformedDistribution(TD.Normal(ta["loc"], ta["scale"]), tt)
    assert fd.batch_shape == tuple(td.batch_shape) and fd.event_shape == tuple(td.event_shape)
    with torch.no_grad():
        y = td.sample((4,))
    fv, tv = value_pair(y.numpy(), dtype)
    f_lp, t_lp = fd.log_prob(fv), td.log_prob(tv)
    close(f_lp, t_lp, tol, "log_prob")
    f_lp.sum().backward()
    t_lp.sum().backward()
    grads_close(fa, ta, tol, "transformed")
    if k != 6:
        close(fd.cdf(fv), td.cdf(tv), tol, "cdf")
        q = R.uniform(0.1, 0.9, tuple(td.batch_shape))
        fq, tq = value_pair(q, dtype)
        close(fd.icdf(fq), td.icdf(tq), tol, "icdf")
    s = fd.sample((5,))
    assert s.shape == (5,) + tuple(td.batch_shape) and bool(fd.support.check(s).all())


def test_transforms_inverse_and_log_abs_det_jacobian():
    x = fg.tensor(R.normal(size=(4,)) * 2, dtype=fg.float64)
    tx = torch.tensor(x.numpy())
    for f, t in [(D.ExpTransform(), TD.ExpTransform()), (D.SigmoidTransform(), TD.SigmoidTransform()),
                 (D.TanhTransform(), TD.TanhTransform()), (D.SoftplusTransform(), TD.SoftplusTransform()),
                 (D.AffineTransform(2.0, -3.0), TD.AffineTransform(2.0, -3.0))]:
        y, ty = f(x), t(tx)
        close(y, ty, 1e-12, repr(f))
        close(f.inv(y), t.inv(ty), 1e-9, repr(f) + ".inv")
        close(f.log_abs_det_jacobian(x, y), t.log_abs_det_jacobian(tx, ty), 1e-12, repr(f) + " ladj")
        assert f.sign == t.sign and f.bijective == t.bijective
    assert D.ExpTransform() == D.ExpTransform() and D.ExpTransform() != D.SigmoidTransform()
    assert D.ExpTransform().inv.inv == D.ExpTransform()
    cached = D.ExpTransform(cache_size=1)
    y = cached(x)
    assert cached.inv(y) is x


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_lognormal_matches_torch(dtype):
    tol = DTYPES[dtype][2]
    fa, ta = pair({"loc": R.normal(size=(3, 1)) * 0.5, "scale": R.uniform(0.3, 1.0, (4,))}, dtype)
    fd, td = D.LogNormal(**fa), TD.LogNormal(**ta)
    assert fd.batch_shape == (3, 4)
    fv, tv = value_pair(R.uniform(0.1, 4, (3, 4)), dtype)
    total_f, total_t = fd.log_prob(fv).sum(), td.log_prob(tv).sum()
    close(fd.log_prob(fv), td.log_prob(tv), tol, "log_prob")
    for m in ("mean", "mode", "variance", "stddev"):
        close(getattr(fd, m), getattr(td, m), tol * 10, m)
        total_f, total_t = total_f + getattr(fd, m).sum(), total_t + getattr(td, m).sum()
    close(fd.entropy(), td.entropy(), tol, "entropy")
    close(fd.cdf(fv), td.cdf(tv), tol, "cdf")
    total_f.backward()
    total_t.backward()
    grads_close(fa, ta, tol * 10, "LogNormal")
    assert fd.has_rsample and fd.rsample((2,)).shape == (2, 3, 4)
    assert fd.expand((2, 3, 4)).batch_shape == (2, 3, 4)
    with pytest.raises(ValueError, match="Expected value argument"):
        fd.log_prob(fg.tensor(-1.0, dtype=fd.loc.dtype))


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_gumbel_and_relaxed_bernoulli_match_torch(dtype):
    tol = DTYPES[dtype][2] * 10
    fa, ta = pair({"loc": R.normal(size=(3, 1)), "scale": R.uniform(0.5, 2, (4,))}, dtype)
    fd, td = D.Gumbel(**fa), TD.Gumbel(**ta)
    fv, tv = value_pair(R.normal(size=(2, 3, 4)), dtype)
    total_f, total_t = fd.log_prob(fv).sum() + fd.entropy().sum(), td.log_prob(tv).sum() + td.entropy().sum()
    close(fd.log_prob(fv), td.log_prob(tv), tol, "Gumbel log_prob")
    close(fd.cdf(fv), td.cdf(tv), tol, "Gumbel cdf")
    for m in ("mean", "mode", "variance", "stddev"):
        close(getattr(fd, m), getattr(td, m), tol, m)
    close(fd.entropy(), td.entropy(), tol, "Gumbel entropy")
    total_f.backward()
    total_t.backward()
    grads_close(fa, ta, tol, "Gumbel")
    assert fd.rsample((5,)).shape == (5, 3, 4) and fd.expand((2, 3, 4)).sample().shape == (2, 3, 4)
    fa, ta = pair({"temperature": np.array([0.7]), "logits": R.normal(size=(3,))}, dtype)
    fr, tr = D.RelaxedBernoulli(**fa), TD.RelaxedBernoulli(**ta)
    fv, tv = value_pair(R.uniform(0.05, 0.95, (2, 3)), dtype)
    f_lp, t_lp = fr.log_prob(fv), tr.log_prob(tv)
    close(f_lp, t_lp, tol, "RelaxedBernoulli log_prob")
    f_lp.sum().backward()
    t_lp.sum().backward()
    grads_close(fa, ta, tol, "RelaxedBernoulli")
    s = fr.rsample((4,))
    assert s.shape == (4, 3) and s.requires_grad and bool(fr.support.check(s.detach()).all())


def test_gumbel_sample_moments():
    fg.manual_seed(12)
    d = D.Gumbel(fg.tensor([0.5], dtype=fg.float64), fg.tensor([2.0], dtype=fg.float64))
    x = d.sample((200_000,)).numpy()
    se = np.sqrt(d.variance.numpy() / len(x))
    assert np.all(np.abs(x.mean(0) - d.mean.numpy()) < 5 * se)
    u = d.cdf(fg.tensor(x)).numpy()
    assert abs((u <= 0.5).mean() - 0.5) < 5 * 0.5 / np.sqrt(len(x))


@pytest.mark.parametrize("mix_shape, comp_shape, event", [
    ((5,), (3, 5), False), ((5,), (2, 3, 5), False), ((3, 5), (2, 3, 5), False), ((1, 5), (3, 5), False),
    ((5,), (3, 5), True), ((2, 3, 5), (2, 3, 5), False)])
def test_mixture_broadcast_batch_shapes(mix_shape, comp_shape, event):
    logits = R.normal(size=mix_shape)
    loc = R.normal(size=comp_shape + ((2,) if event else ()))
    scale = R.uniform(0.5, 2, loc.shape)
    fc, tc = D.Normal(fg.tensor(loc), fg.tensor(scale)), TD.Normal(torch.tensor(loc), torch.tensor(scale))
    if event:
        fc, tc = D.Independent(fc, 1), TD.Independent(tc, 1)
    f = D.MixtureSameFamily(D.Categorical(logits=fg.tensor(logits)), fc)
    t = TD.MixtureSameFamily(TD.Categorical(logits=torch.tensor(logits)), tc)
    assert f.batch_shape == tuple(t.batch_shape) and f.event_shape == tuple(t.event_shape)
    x = R.normal(size=(4,) + f.batch_shape + f.event_shape)
    close(f.log_prob(fg.tensor(x)), t.log_prob(torch.tensor(x)), 1e-10, "log_prob")
    close(f.mean, t.mean, 1e-10, "mean")
    close(f.variance, t.variance, 1e-10, "variance")
    # sample_shape + batch_shape + event_shape, also where the mixture has fewer batch dims than the components
    # (torch's gather refuses those, or returns a (n, 1) sample for a (1, k) mixture)
    assert f.sample((3,)).shape == (3,) + f.batch_shape + f.event_shape
