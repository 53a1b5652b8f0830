"""validate_args as torch's (on by default): parameter constraints name the parameter, values outside the support
or of the wrong shape refuse, validate_args=False and set_default_validate_args turn it off; argument errors, reprs,
constraints and the package aliases."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.distributions as D
from forgegrad.distributions import constraints

TD = torch.distributions


@pytest.mark.parametrize("make, param", [
    (lambda: D.Normal(fg.tensor([0.0, 1.0]), fg.tensor([1.0, 0.0])), "scale"),
    (lambda: D.Normal(0.0, -1.0), "scale"),
    (lambda: D.Laplace(fg.tensor([0.0]), fg.tensor([-2.0])), "scale"),
    (lambda: D.Normal(fg.tensor([float("nan")]), fg.tensor([1.0])), "loc"),
    (lambda: D.Bernoulli(probs=fg.tensor([0.5, 1.2])), "probs"),
    (lambda: D.Bernoulli(probs=fg.tensor([-0.1])), "probs"),
    (lambda: D.Binomial(fg.tensor([2.5]), probs=fg.tensor([0.5])), "total_count"),
    (lambda: D.Categorical(probs=fg.tensor([0.5, -0.5, 1.0])), "probs"),
    (lambda: D.Exponential(fg.tensor([0.0])), "rate"),
    (lambda: D.Gamma(fg.tensor([1.0]), fg.tensor([-1.0])), "rate"),
    (lambda: D.Gamma(fg.tensor([-1.0]), fg.tensor([1.0])), "concentration"),
    (lambda: D.Beta(fg.tensor([0.0]), fg.tensor([1.0])), "concentration1"),
    (lambda: D.Dirichlet(fg.tensor([1.0, -1.0])), "concentration"),
    (lambda: D.Poisson(fg.tensor([-1.0])), "rate"),
    (lambda: D.Geometric(probs=fg.tensor([0.0])), "probs"),
    (lambda: D.LogNormal(fg.tensor([0.0]), fg.tensor([0.0])), "scale"),
    (lambda: D.Chi2(fg.tensor([-1.0])), "df"),
    (lambda: D.StudentT(fg.tensor([0.0])), "df"),
    (lambda: D.HalfNormal(fg.tensor([-1.0])), "scale"),
    (lambda: D.NegativeBinomial(fg.tensor([2.0]), probs=fg.tensor([1.0])), "probs"),
    (lambda: D.NegativeBinomial(fg.tensor([-2.0]), probs=fg.tensor([0.5])), "total_count"),
    (lambda: D.Multinomial(3, probs=fg.tensor([-0.5, 1.0])), "probs"),
])
def test_invalid_parameters_raise_naming_the_parameter(make, param):
    with pytest.raises(ValueError, match=f"Expected parameter {param} "):
        make()


def test_validate_args_false_and_default_switch():
    d = D.Normal(fg.tensor([0.0]), fg.tensor([-1.0]), validate_args=False)
    assert d.scale.item() == -1.0
    D.Distribution.set_default_validate_args(False)
    try:
        assert D.Bernoulli(probs=fg.tensor([1.5])).probs.item() == 1.5
    finally:
        D.Distribution.set_default_validate_args(True)
    with pytest.raises(ValueError, match="Expected parameter probs"):
        D.Bernoulli(probs=fg.tensor([1.5]))
    with pytest.raises(ValueError, match="True or False"):
        D.Distribution.set_default_validate_args("yes")


@pytest.mark.parametrize("d, bad", [
    (lambda: D.Exponential(fg.tensor([1.0])), fg.tensor([-0.5])),
    (lambda: D.Bernoulli(probs=fg.tensor([0.3])), fg.tensor([0.5])),
    (lambda: D.Categorical(probs=fg.tensor([0.3, 0.7])), fg.tensor([2])),
    (lambda: D.Poisson(fg.tensor([1.0])), fg.tensor([1.5])),
    (lambda: D.Uniform(fg.tensor([0.0]), fg.tensor([1.0])), fg.tensor([1.5])),
    (lambda: D.Beta(fg.tensor([2.0]), fg.tensor([2.0])), fg.tensor([1.5])),
    (lambda: D.Dirichlet(fg.tensor([1.0, 2.0])), fg.tensor([0.3, 0.3])),
    (lambda: D.Binomial(fg.tensor([3.0]), probs=fg.tensor([0.5])), fg.tensor([4.0])),
    (lambda: D.OneHotCategorical(probs=fg.tensor([0.5, 0.5])), fg.tensor([1.0, 1.0])),
    (lambda: D.Multinomial(3, probs=fg.tensor([0.5, 0.5])), fg.tensor([3.0, 1.0])),
    (lambda: D.HalfNormal(fg.tensor([1.0])), fg.tensor([-1.0])),
    (lambda: D.NegativeBinomial(fg.tensor([2.0]), probs=fg.tensor([0.5])), fg.tensor([0.5])),
])
def test_value_outside_support_raises_and_is_allowed_without_validation(d, bad):
    with pytest.raises(ValueError, match="Expected value argument .* to be within the support"):
        d().log_prob(bad)
    dist = d()
    dist._validate_args = False
    if isinstance(dist, D.Categorical):  # an index past the last class: the gather refuses (torch too)
        with pytest.raises(IndexError, match="out of bounds"):
            dist.log_prob(bad)
    else:
        dist.log_prob(bad)  # no check: a number (maybe -inf or nan), as torch


def test_value_shape_errors():
    d = D.MultivariateNormal(fg.zeros(3), fg.eye(3))
    with pytest.raises(ValueError, match="The right-most size of value must match event_shape"):
        d.log_prob(fg.zeros(2))
    n = D.Normal(fg.zeros(3), fg.ones(3))
    with pytest.raises(ValueError, match="Value is not broadcastable with batch_shape"):
        n.log_prob(fg.zeros(4))
    with pytest.raises(ValueError, match="must be a Tensor"):
        n.log_prob(0.5)


def test_constructor_argument_errors_as_torch():
    for cls in (D.Bernoulli, D.Categorical, D.Geometric, D.OneHotCategorical):
        with pytest.raises(ValueError, match="Either `probs` or `logits` must be specified, but not both"):
            cls()
        with pytest.raises(ValueError, match="Either `probs` or `logits` must be specified, but not both"):
            cls(probs=fg.tensor([0.5, 0.5]), logits=fg.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="`probs` parameter must be at least one-dimensional"):
        D.Categorical(probs=fg.tensor(0.5))
    with pytest.raises(ValueError, match="Uniform is not defined when low>= high"):
        D.Uniform(fg.tensor([1.0]), fg.tensor([1.0]))
    with pytest.raises(ValueError, match="`concentration` parameter must be at least one-dimensional"):
        D.Dirichlet(fg.tensor(1.0))
    with pytest.raises(ValueError, match="transforms must be a Transform or list"):
        D.TransformedDistribution(D.Normal(0.0, 1.0), "exp")
    with pytest.raises(ValueError, match="Input arguments must all be instances of numbers.Number"):
        D.Normal("a", 1.0)


def test_reprs_match_torch():
    pairs = [
        (D.Normal(fg.tensor(0.5), fg.tensor(2.0)), TD.Normal(torch.tensor(0.5), torch.tensor(2.0))),
        (D.Normal(fg.zeros(2, 3), fg.ones(2, 3)), TD.Normal(torch.zeros(2, 3), torch.ones(2, 3))),
        (D.Bernoulli(logits=fg.zeros(4)), TD.Bernoulli(logits=torch.zeros(4))),
        (D.Categorical(probs=fg.ones(2, 3)), TD.Categorical(probs=torch.ones(2, 3))),
        (D.MultivariateNormal(fg.zeros(2), scale_tril=fg.eye(2)),
         TD.MultivariateNormal(torch.zeros(2), scale_tril=torch.eye(2))),
        (D.Independent(D.Normal(fg.zeros(2, 3), fg.ones(2, 3)), 1),
         TD.Independent(TD.Normal(torch.zeros(2, 3), torch.ones(2, 3)), 1)),
        (D.LogNormal(fg.zeros(2), fg.ones(2)), TD.LogNormal(torch.zeros(2), torch.ones(2))),
        (D.OneHotCategorical(logits=fg.zeros(3)), TD.OneHotCategorical(logits=torch.zeros(3))),
    ]
    for f, t in pairs:
        assert repr(f).replace("dtype=float64", "") == repr(t), (repr(f), repr(t))
    for c in ("real", "positive", "unit_interval", "simplex", "nonnegative_integer", "boolean", "real_vector",
              "lower_cholesky", "positive_definite", "one_hot"):
        assert repr(getattr(constraints, c)) == repr(getattr(TD.constraints, c)), c
    assert repr(constraints.interval(0.0, 2.0)) == repr(TD.constraints.interval(0.0, 2.0))


def test_constraints_check_like_torch():
    x = np.array([[0.2, 0.8], [0.5, 0.6], [-0.1, 1.1]])
    for name in ("real", "positive", "nonnegative", "unit_interval", "simplex", "boolean", "nonnegative_integer"):
        f = getattr(constraints, name).check(fg.tensor(x)).numpy()
        t = getattr(TD.constraints, name).check(torch.tensor(x)).numpy()
        assert np.array_equal(f, t), name
    m = np.array([[[1.0, 0.0], [0.5, 2.0]], [[1.0, 0.3], [0.0, 1.0]], [[-1.0, 0.0], [0.0, 1.0]]])
    for name in ("lower_triangular", "lower_cholesky", "symmetric", "positive_definite", "positive_semidefinite",
                 "corr_cholesky", "square"):
        f = getattr(constraints, name).check(fg.tensor(m)).numpy()
        t = getattr(TD.constraints, name).check(torch.tensor(m)).numpy()
        assert np.array_equal(f, t), name
    ind = constraints.independent(constraints.positive, 1)
    assert ind.event_dim == 1 and np.array_equal(ind.check(fg.tensor(x)).numpy(), [True, True, False])
    assert constraints.is_dependent(constraints.dependent) and not constraints.is_dependent(constraints.real)
    with pytest.raises(ValueError, match="Cannot determine validity of dependent constraint"):
        constraints.dependent.check(fg.zeros(1))


def test_package_aliases_and_torch_style_import():
    import forgegrad as torch_like
    assert torch_like.distributions is D
    assert torch_like.distributions.Normal is D.Normal
    assert "distributions" in torch_like.__all__
    assert set(D.__all__) <= set(dir(D))
    for name in ("Normal", "Bernoulli", "Categorical", "kl_divergence", "MultivariateNormal", "Independent",
                 "MixtureSameFamily", "TransformedDistribution", "LogNormal", "constraints", "transforms"):
        assert hasattr(TD, name) and hasattr(D, name), name


def test_gradients_flow_in_float64_on_meta_free_cpu():
    loc = fg.tensor([0.3], dtype=fg.float64, requires_grad=True)
    d = D.Normal(loc, 1.0)
    assert d.scale.dtype == fg.float64
    d.log_prob(fg.tensor([1.0], dtype=fg.float64)).sum().backward()
    assert loc.grad.dtype == fg.float64 and abs(loc.grad.item() - 0.7) < 1e-12


def test_zero_dim_random_draws_keep_their_shape_as_torch():
    for f, t in ((fg.bernoulli(fg.tensor(0.5)), torch.bernoulli(torch.tensor(0.5))),
                 (fg.poisson(fg.tensor(2.0)), torch.poisson(torch.tensor(2.0)))):
        assert f.shape == tuple(t.shape) == () and f.dtype == fg.float32
