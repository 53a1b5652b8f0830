"""kl_divergence against torch.distributions.kl_divergence: values and gradients w.r.t. both distributions'
parameters (float32 and float64, broadcast batch shapes), infinities where torch has them, register_kl dispatch and
NotImplementedError for pairs without a rule."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.distributions as D
from dist_helpers import DTYPES, close, grads_close, pair

TD = torch.distributions
R = np.random.default_rng(11)


def _pos(*shape, lo=0.4, hi=3.0):
    return R.uniform(lo, hi, shape)


def _tril(*batch, n=3):
    a = R.normal(size=batch + (n, n)) * 0.4
    return np.tril(a, -1) + np.eye(n) * R.uniform(0.5, 1.5, batch + (n,))[..., None]


# name: (p class, p params, q class, q params)
PAIRS = {
    "Normal": ("Normal", dict(loc=R.normal(size=(3, 1)), scale=_pos(3, 1)), "Normal",
               dict(loc=R.normal(size=(4,)), scale=_pos(4))),
    "Bernoulli": ("Bernoulli", dict(probs=R.uniform(0.1, 0.9, (2, 3))), "Bernoulli",
                  dict(logits=R.normal(size=(2, 3)))),
    "Categorical": ("Categorical", dict(probs=R.uniform(0.1, 1, (2, 1, 4))), "Categorical",
                    dict(logits=R.normal(size=(3, 4)))),
    "OneHotCategorical": ("OneHotCategorical", dict(probs=R.uniform(0.1, 1, (3, 4))), "OneHotCategorical",
                          dict(logits=R.normal(size=(3, 4)))),
    "Uniform": ("Uniform", dict(low=R.uniform(-1, -0.5, (3,)), high=R.uniform(0.5, 1, (3,))), "Uniform",
                dict(low=np.array([-2.0, -0.7, -2.0]), high=np.array([2.0, 2.0, 0.6]))),
    "Exponential": ("Exponential", dict(rate=_pos(2, 3)), "Exponential", dict(rate=_pos(3))),
    "Gamma": ("Gamma", dict(concentration=_pos(2, 3), rate=_pos(2, 3)), "Gamma",
              dict(concentration=_pos(3), rate=_pos(3))),
    "Beta": ("Beta", dict(concentration1=_pos(4), concentration0=_pos(4)), "Beta",
             dict(concentration1=_pos(2, 1), concentration0=_pos(4))),
    "Laplace": ("Laplace", dict(loc=R.normal(size=(5,)), scale=_pos(5)), "Laplace",
                dict(loc=R.normal(size=(5,)), scale=_pos(5))),
    "Dirichlet": ("Dirichlet", dict(concentration=_pos(2, 4)), "Dirichlet", dict(concentration=_pos(2, 4))),
    "Poisson": ("Poisson", dict(rate=_pos(3)), "Poisson", dict(rate=_pos(3))),
    "Geometric": ("Geometric", dict(probs=R.uniform(0.1, 0.9, (3,))), "Geometric",
                  dict(probs=R.uniform(0.1, 0.9, (3,)))),
    "Binomial": ("Binomial", dict(total_count=np.array([5.0, 5.0, 6.0]), probs=R.uniform(0.1, 0.9, (3,))), "Binomial",
                 dict(total_count=np.array([5.0, 5.0, 5.0]), probs=R.uniform(0.1, 0.9, (3,)))),
    "MVN": ("MultivariateNormal", dict(loc=R.normal(size=(2, 3)), scale_tril=_tril(2)), "MultivariateNormal",
            dict(loc=R.normal(size=(3,)), covariance_matrix=(lambda L: L @ L.T)(_tril()))),
    "LowRankMVN": ("LowRankMultivariateNormal", dict(loc=R.normal(size=(3,)), cov_factor=R.normal(size=(3, 2)),
                                                     cov_diag=_pos(3)),
                   "MultivariateNormal", dict(loc=R.normal(size=(3,)), scale_tril=_tril())),
    "Uniform_Normal": ("Uniform", dict(low=R.uniform(-1, -0.5, (3,)), high=R.uniform(0.5, 1, (3,))), "Normal",
                       dict(loc=R.normal(size=(3,)), scale=_pos(3))),
    "Exponential_Gamma": ("Exponential", dict(rate=_pos(3)), "Gamma", dict(concentration=_pos(3), rate=_pos(3))),
    "Exponential_Normal": ("Exponential", dict(rate=_pos(3)), "Normal", dict(loc=R.normal(size=(3,)), scale=_pos(3))),
    "Normal_Laplace": ("Normal", dict(loc=R.normal(size=(3,)), scale=_pos(3)), "Laplace",
                       dict(loc=R.normal(size=(3,)), scale=_pos(3))),
    "Beta_Uniform": ("Beta", dict(concentration1=_pos(2), concentration0=_pos(2)), "Uniform",
                     dict(low=np.array([0.0, 0.2]), high=np.array([1.0, 1.0]))),
}


def _dist(mod, cls, kw):
    kw = dict(kw)
    if cls == "Binomial":
        kw["total_count"] = kw["total_count"].detach()
    return getattr(mod, cls)(**kw)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(PAIRS))
def test_kl_values_and_gradients_match_torch(name, dtype):
    pc, pp, qc, qp = PAIRS[name]
    tol = DTYPES[dtype][2] * (20 if name in ("MVN", "LowRankMVN") and dtype == "float32" else 1)
    fpa, tpa = pair(pp, dtype)
    fqa, tqa = pair(qp, dtype)
    fk = D.kl_divergence(_dist(D, pc, fpa), _dist(D, qc, fqa))
    tk = TD.kl_divergence(_dist(TD, pc, tpa), _dist(TD, qc, tqa))
    close(fk, tk, tol, f"KL {name}")
    assert fk.dtype == DTYPES[dtype][0]
    finite = np.isfinite(tk.detach().numpy())
    w = np.arange(1, finite.size + 1, dtype=np.float64).reshape(finite.shape) * finite
    (fk * fg.tensor(w, dtype=fk.dtype)).where(fg.tensor(finite), fg.zeros_like(fk)).sum().backward()
    (tk * torch.tensor(w, dtype=tk.dtype)).where(torch.tensor(finite), torch.zeros_like(tk)).sum().backward()
    grads_close(fpa, tpa, tol, f"KL {name} p")
    grads_close(fqa, tqa, tol, f"KL {name} q")


def test_kl_infinities_match_torch():
    cases = [
        ("Bernoulli", [0.0, 0.5, 1.0], [0.5, 0.0, 1.0]),
        ("Categorical", [[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]], [[0.5, 0.0, 0.5]] * 2),
    ]
    for cls, p, q in cases:
        f = D.kl_divergence(getattr(D, cls)(fg.tensor(p)), getattr(D, cls)(fg.tensor(q)))
        t = TD.kl_divergence(getattr(TD, cls)(torch.tensor(p)), getattr(TD, cls)(torch.tensor(q)))
        close(f, t, 1e-6, cls)
    low, high, low2, high2 = [0.0, 0.0], [1.0, 1.0], [0.5, -1.0], [2.0, 2.0]
    f = D.kl_divergence(D.Uniform(fg.tensor(low), fg.tensor(high)), D.Uniform(fg.tensor(low2), fg.tensor(high2)))
    t = TD.kl_divergence(TD.Uniform(torch.tensor(low), torch.tensor(high)),
                         TD.Uniform(torch.tensor(low2), torch.tensor(high2)))
    close(f, t, 1e-6, "Uniform")


def test_kl_independent_and_transformed():
    loc, scale = R.normal(size=(2, 3)), _pos(2, 3)
    loc2, scale2 = R.normal(size=(2, 3)), _pos(2, 3)
    f = D.kl_divergence(D.Independent(D.Normal(fg.tensor(loc), fg.tensor(scale)), 1),
                        D.Independent(D.Normal(fg.tensor(loc2), fg.tensor(scale2)), 1))
    t = TD.kl_divergence(TD.Independent(TD.Normal(torch.tensor(loc), torch.tensor(scale)), 1),
                         TD.Independent(TD.Normal(torch.tensor(loc2), torch.tensor(scale2)), 1))
    assert f.shape == (2,)
    close(f, t, 1e-10, "Independent")
    f = D.kl_divergence(D.LogNormal(fg.tensor(loc), fg.tensor(scale)), D.LogNormal(fg.tensor(loc2), fg.tensor(scale2)))
    t = TD.kl_divergence(TD.LogNormal(torch.tensor(loc), torch.tensor(scale)),
                         TD.LogNormal(torch.tensor(loc2), torch.tensor(scale2)))
    close(f, t, 1e-10, "LogNormal")
    with pytest.raises(NotImplementedError):
        D.kl_divergence(D.Independent(D.Normal(fg.tensor(loc), fg.tensor(scale)), 1),
                        D.Independent(D.Normal(fg.tensor(loc2), fg.tensor(scale2)), 2))


def test_kl_missing_pair_raises_not_implemented_naming_types():
    with pytest.raises(NotImplementedError, match="p type Poisson and q type Normal"):
        D.kl_divergence(D.Poisson(fg.tensor([1.0])), D.Normal(fg.tensor([0.0]), fg.tensor([1.0])))
    with pytest.raises(NotImplementedError, match="q.total_count > p.total_count"):
        D.kl_divergence(D.Binomial(fg.tensor([2.0]), probs=fg.tensor([0.5])),
                        D.Binomial(fg.tensor([3.0]), probs=fg.tensor([0.5])))


def test_register_kl_dispatches_to_most_specific_pair():
    class MyNormal(D.Normal):
        pass

    p, q = MyNormal(fg.tensor([0.0]), fg.tensor([1.0])), D.Normal(fg.tensor([1.0]), fg.tensor([2.0]))
    base = D.kl_divergence(p, q)
    assert abs(base.item() - TD.kl_divergence(TD.Normal(0.0, 1.0), TD.Normal(1.0, 2.0)).item()) < 1e-6

    @D.register_kl(MyNormal, D.Normal)
    def _kl(p, q):
        return fg.full_like(p.loc, 42.0)

    assert D.kl_divergence(p, q).item() == 42.0
    assert D.kl_divergence(q, p).item() != 42.0  # (Normal, MyNormal) still uses the Normal rule
    with pytest.raises(TypeError, match="type_p"):
        D.register_kl(int, D.Normal)


_PARAMS = {  # a batch of 3 for each family, in its support
    "Normal": lambda: dict(loc=R.normal(size=3), scale=_pos(3)),
    "Laplace": lambda: dict(loc=R.normal(size=3), scale=_pos(3)),
    "Cauchy": lambda: dict(loc=R.normal(size=3), scale=_pos(3)),
    "Gumbel": lambda: dict(loc=R.normal(size=3), scale=_pos(3)),
    "Uniform": lambda: dict(low=R.uniform(0.05, 0.3, 3), high=R.uniform(0.5, 0.95, 3)),
    "Exponential": lambda: dict(rate=_pos(3)),
    "Gamma": lambda: dict(concentration=_pos(3), rate=_pos(3)),
    "Beta": lambda: dict(concentration1=_pos(3), concentration0=_pos(3)),
    "Bernoulli": lambda: dict(probs=R.uniform(0.1, 0.9, 3)),
    "Poisson": lambda: dict(rate=_pos(3)),
    "Binomial": lambda: dict(total_count=np.array([4.0, 4.0, 4.0]), probs=R.uniform(0.1, 0.9, 3)),
    "Geometric": lambda: dict(probs=R.uniform(0.1, 0.9, 3)),
    "Pareto": lambda: dict(scale=R.uniform(0.01, 0.04, 3), alpha=R.uniform(2.5, 4.0, 3)),
    "ContinuousBernoulli": lambda: dict(probs=np.array([0.2, 0.4995, 0.85])),
}


def _torch_pairs():
    names = set(D.__all__)
    return sorted({(p.__name__, q.__name__) for p, q in TD.kl._KL_REGISTRY
                   if p.__name__ in _PARAMS and q.__name__ in _PARAMS and p.__name__ in names})


def test_every_torch_kl_pair_between_implemented_families_is_registered():
    missing = []
    for pn, qn in _torch_pairs():
        try:
            D.kl_divergence(getattr(D, pn)(**pair(_PARAMS[pn](), "float64", grad=False)[0]),
                            getattr(D, qn)(**pair(_PARAMS[qn](), "float64", grad=False)[0]))
        except NotImplementedError:
            missing.append((pn, qn))
    assert not missing, missing


@pytest.mark.parametrize("pq", _torch_pairs(), ids=lambda pq: f"{pq[0]}-{pq[1]}")
def test_kl_every_pair_matches_torch(pq):
    pn, qn = pq
    fpa, tpa = pair(_PARAMS[pn](), "float64")
    fqa, tqa = pair(_PARAMS[qn](), "float64")
    fk = D.kl_divergence(_dist(D, pn, fpa), _dist(D, qn, fqa))
    tk = TD.kl_divergence(_dist(TD, pn, tpa), _dist(TD, qn, tqa))
    close(fk, tk, 1e-10, f"KL {pn} {qn}")
    if tk.requires_grad and np.isfinite(tk.detach().numpy()).all():
        fk.sum().backward()
        tk.sum().backward()
        grads_close(fpa, tpa, 1e-10, "p")
        grads_close(fqa, tqa, 1e-10, "q")
