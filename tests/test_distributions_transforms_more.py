"""forgegrad.distributions' structured transforms (StickBreaking, Softmax, Reshape, Cat, Stack, LowerCholesky,
PositiveDefinite, CorrCholesky, CumulativeDistribution, Independent) and biject_to / transform_to against
torch.distributions 2.13: forward, inverse, log|det J| and their gradients w.r.t. the input, float32 and float64,
batch shapes, domain / codomain / event_dim, shapes, reprs, errors."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.distributions as D
from dist_helpers import DTYPES, close

TD = torch.distributions
TT = torch.distributions.transforms
R = np.random.default_rng(11)


def _corr_chol(shape, n):
    a = R.normal(size=shape + (n, n + 2))
    c = a @ np.swapaxes(a, -1, -2)
    d = np.sqrt(np.diagonal(c, axis1=-2, axis2=-1))
    return np.linalg.cholesky(c / d[..., :, None] / d[..., None, :])


# name: (build(module) -> transform, x (domain), y (codomain) or None = t(x), compare ladj)
CASES = {
    "StickBreaking": (lambda m: m.StickBreakingTransform(), R.normal(size=(3, 1, 4)), None, True),
    "Softmax": (lambda m: m.SoftmaxTransform(), R.normal(size=(2, 5)) * 3, None, False),
    "Reshape": (lambda m: m.ReshapeTransform((2, 3), (3, 2)), R.normal(size=(4, 2, 3)), None, True),
    "Independent": (lambda m: m.IndependentTransform(m.ExpTransform(), 2), R.normal(size=(3, 2, 5)), None, True),
    "LowerCholesky": (lambda m: m.LowerCholeskyTransform(), R.normal(size=(2, 3, 3)), None, False),
    "PositiveDefinite": (lambda m: m.PositiveDefiniteTransform(), R.normal(size=(2, 3, 3)), None, False),
    "CorrCholesky": (lambda m: m.CorrCholeskyTransform(), R.normal(size=(2, 1, 6)), None, True),
    "CorrCholesky_inv": (lambda m: m.CorrCholeskyTransform().inv, _corr_chol((3,), 4), None, True),
    "Cat": (lambda m: m.CatTransform([m.ExpTransform(), m.AffineTransform(1.0, -2.0), m.SigmoidTransform()],
                                     dim=1, lengths=[2, 1, 3]), R.normal(size=(3, 6, 2)), None, True),
    "Cat_event": (lambda m: m.CatTransform([m.IndependentTransform(m.ExpTransform(), 1), m.SigmoidTransform()],
                                           dim=-1, lengths=[2, 3]), R.normal(size=(4, 5)), None, True),
    "Stack": (lambda m: m.StackTransform([m.ExpTransform(), m.TanhTransform(), m.SoftplusTransform()], dim=-2),
              R.normal(size=(2, 3, 4)), None, True),
    "CDF": (lambda m: m.CumulativeDistributionTransform(
        (D if m is D else TD).Normal(_t(m, np.array([0.5, -1.0, 0.0])), _t(m, np.array([1.0, 2.0, 0.5])))),
        R.normal(size=(4, 3)), None, True),
}
_DT = {}


def _t(m, a):
    return fg.tensor(a, dtype=_DT["fg"]) if m is D else torch.tensor(a, dtype=_DT["torch"])


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_transform_matches_torch(name, dtype):
    build, x, _, ladj = CASES[name]
    fdt, tdt, tol = DTYPES[dtype]
    _DT["fg"], _DT["torch"] = fdt, tdt
    ft, tt = build(D), build(TD)
    assert repr(ft) == repr(tt)
    assert ft.bijective == tt.bijective
    assert repr(ft.domain) == repr(tt.domain) and repr(ft.codomain) == repr(tt.codomain)
    assert ft.domain.event_dim == tt.domain.event_dim and ft.codomain.event_dim == tt.codomain.event_dim
    fx = fg.tensor(x, dtype=fdt, requires_grad=True)
    tx = torch.tensor(x, dtype=tdt, requires_grad=True)
    fy, ty = ft(fx), tt(tx)
    close(fy, ty, tol, f"{name} forward")
    assert tuple(ft.forward_shape(x.shape)) == tuple(tt.forward_shape(torch.Size(x.shape)))
    assert tuple(ft.inverse_shape(tuple(ty.shape))) == tuple(tt.inverse_shape(ty.shape))
    if name != "Cat_event":  # cat of pieces with different event dims: torch's check raises too
        assert bool(ft.codomain.check(fy.detach()).all()) and bool(tt.codomain.check(ty.detach()).all())
    # inverse on a fresh (uncached) codomain value
    fyv, tyv = fg.tensor(ty.detach().numpy(), dtype=fdt), ty.detach().clone()
    close(ft.inv(fyv), tt.inv(tyv), tol * 10, f"{name} inverse")
    w = R.normal(size=tuple(ty.shape))
    loss_f = (fy * fg.tensor(w, dtype=fdt)).sum()
    loss_t = (ty * torch.tensor(w, dtype=tdt)).sum()
    if ladj:
        fl, tl = ft.log_abs_det_jacobian(fx, fy), tt.log_abs_det_jacobian(tx, ty)
        close(fl, tl, tol * 10, f"{name} log_abs_det_jacobian")
        loss_f, loss_t = loss_f + fl.sum(), loss_t + tl.sum()
    loss_f.backward()
    loss_t.backward()
    close(fx.grad, tx.grad, tol * 100, f"{name} grad x")


def test_cat_event_dim_sums_pieces_over_the_event():
    ft = D.CatTransform([D.IndependentTransform(D.ExpTransform(), 1), D.SigmoidTransform()], dim=-1, lengths=[2, 3])
    assert ft.event_dim == 1
    x = fg.tensor(R.normal(size=(4, 5)))
    assert tuple(ft.log_abs_det_jacobian(x, ft(x)).shape) == (4,)
    ft0 = D.CatTransform([D.ExpTransform(), D.SigmoidTransform()], dim=-1, lengths=[2, 3])
    assert tuple(ft0.log_abs_det_jacobian(x, ft0(x)).shape) == (4, 5)


CONSTRAINTS = {
    "real": lambda c: c.real, "real_vector": lambda c: c.real_vector, "positive": lambda c: c.positive,
    "nonnegative": lambda c: c.nonnegative, "greater_than": lambda c: c.greater_than(-1.5),
    "greater_than_eq": lambda c: c.greater_than_eq(2.0), "less_than": lambda c: c.less_than(3.0),
    "unit_interval": lambda c: c.unit_interval, "interval": lambda c: c.interval(-2.0, 5.0),
    "half_open_interval": lambda c: c.half_open_interval(0.0, 4.0), "simplex": lambda c: c.simplex,
    "lower_cholesky": lambda c: c.lower_cholesky, "positive_definite": lambda c: c.positive_definite,
    "positive_semidefinite": lambda c: c.positive_semidefinite, "corr_cholesky": lambda c: c.corr_cholesky,
    "independent_positive": lambda c: c.independent(c.positive, 2),
    "cat": lambda c: c.cat([c.positive, c.interval(0.0, 2.0)], dim=-1, lengths=[2, 3]),
    "stack": lambda c: c.stack([c.real, c.positive, c.unit_interval], dim=-1),
}
_INPUT = {"lower_cholesky": (2, 3, 3), "positive_definite": (2, 3, 3), "positive_semidefinite": (2, 3, 3),
          "corr_cholesky": (2, 6), "cat": (2, 5), "stack": (4, 3), "simplex": (2, 4), "real_vector": (3, 4),
          "independent_positive": (2, 3, 4)}


@pytest.mark.parametrize("registry", ["biject_to", "transform_to"])
@pytest.mark.parametrize("name", list(CONSTRAINTS))
def test_registries_match_torch(name, registry):
    fc, tc = CONSTRAINTS[name](D.constraints), CONSTRAINTS[name](TD.constraints)
    freg, treg = getattr(D, registry), getattr(TD, registry)
    try:
        tt = treg(tc)
    except NotImplementedError:
        with pytest.raises(NotImplementedError, match="Cannot transform"):
            freg(fc)
        return
    ft = freg(fc)
    assert repr(ft) == repr(tt) and type(ft).__name__ == type(tt).__name__
    assert ft.bijective == tt.bijective
    x = R.normal(size=_INPUT.get(name, (3, 4)))
    fy, ty = ft(fg.tensor(x)), tt(torch.tensor(x))
    close(fy, ty, 1e-10, name)
    assert bool(fc.check(fy).all())
    if ft.bijective and name not in ("lower_cholesky",):
        close(ft.log_abs_det_jacobian(fg.tensor(x), fy), tt.log_abs_det_jacobian(torch.tensor(x), ty), 1e-10)
        close(ft.inv(fy), tt.inv(ty), 1e-9, f"{name} inverse")


def test_errors_and_registration():
    with pytest.raises(ValueError, match="different numbers of elements"):
        D.ReshapeTransform((2, 3), (4,))
    with pytest.raises(ValueError, match="Shape mismatch"):
        D.ReshapeTransform((2, 3), (6,)).forward_shape((5, 3, 2))
    with pytest.raises(AssertionError, match="must be Transform instances"):
        D.CatTransform([D.ExpTransform(), 3])
    with pytest.raises(AssertionError, match="must match transforms"):
        D.CatTransform([D.ExpTransform()], lengths=[1, 2])
    with pytest.raises(AssertionError, match="must equal length 3"):
        D.CatTransform([D.ExpTransform()] * 3, dim=0)(fg.zeros(4))
    with pytest.raises(ValueError, match="flattend lower-diagonal"):
        D.CorrCholeskyTransform().forward_shape((2, 4))
    with pytest.raises(NotImplementedError, match="Cannot transform _Boolean constraints"):
        D.biject_to(D.constraints.boolean)
    with pytest.raises(TypeError, match="Expected constraint"):
        D.biject_to.register(3, lambda c: None)

    class MyConstraint(D.constraints.Constraint):
        pass

    D.transform_to.register(MyConstraint, lambda c: D.ExpTransform())
    assert isinstance(D.transform_to(MyConstraint()), D.ExpTransform)
    from forgegrad.distributions.constraint_registry import biject_to
    assert biject_to is D.biject_to


def test_cache_and_with_cache():
    t = D.StickBreakingTransform(cache_size=1)
    x = fg.randn(3, 4)
    y = t(x)
    assert t.inv(y) is x
    r = D.ReshapeTransform((6,), (2, 3)).with_cache()
    assert r._cache_size == 1 and r.in_shape == (6,)
    c = D.CatTransform([D.ExpTransform()], cache_size=1)
    assert c.transforms[0]._cache_size == 1


def test_transformed_distribution_through_stick_breaking_matches_torch():
    loc, scale = R.normal(size=(2, 3)), R.uniform(0.5, 2.0, (2, 3))
    fd = D.TransformedDistribution(D.Independent(D.Normal(fg.tensor(loc), fg.tensor(scale)), 1),
                                   D.StickBreakingTransform())
    td = TD.TransformedDistribution(TD.Independent(TD.Normal(torch.tensor(loc), torch.tensor(scale)), 1),
                                    TD.StickBreakingTransform())
    assert tuple(fd.event_shape) == tuple(td.event_shape) == (4,)
    v = R.dirichlet(np.ones(4), 2)
    close(fd.log_prob(fg.tensor(v)), td.log_prob(torch.tensor(v)), 1e-10)


def test_public_names_cover_torch_and_mixture_constraint_checks_as_torch():
    assert not set(TD.__all__) - set(dir(D))
    assert not set(TT.__all__) - set(dir(D.transforms))
    assert not set(TD.constraints.__all__) - set(dir(D.constraints))
    fm = D.MixtureSameFamily(D.Categorical(fg.ones(2, 3)), D.Independent(D.Uniform(fg.zeros(2, 3, 4),
                                                                                 fg.ones(2, 3, 4)), 1))
    tm = TD.MixtureSameFamily(TD.Categorical(torch.ones(2, 3)), TD.Independent(TD.Uniform(torch.zeros(2, 3, 4),
                                                                                       torch.ones(2, 3, 4)), 1))
    assert repr(fm.support) == repr(tm.support) and fm.support.event_dim == tm.support.event_dim == 1
    v = R.uniform(-0.2, 1.0, (5, 2, 4))
    assert np.array_equal(fm.support.check(fg.tensor(v)).numpy(), tm.support.check(torch.tensor(v)).numpy())
    with pytest.raises(AssertionError, match="base_constraint must be a Constraint"):
        D.constraints.MixtureSameFamilyConstraint(3)
