"""forgegrad.distributions: torch.distributions' API (torch 2.13) made of forgegrad ops, so log_prob, entropy,
kl_divergence and rsample differentiate through autograd, in float32 or float64, on the parameters' device.

Sampling draws from forgegrad's global generator (``forgegrad.manual_seed`` makes it repeatable). Gamma, Chi2, Beta
and Dirichlet rsample with the implicit reparameterisation gradient of a gamma draw w.r.t. its concentration.
See docs/torch_compat.md ("torch.distributions")."""
from . import constraints, transforms
from .composite import Independent, LogNormal, MixtureSameFamily, TransformedDistribution
from .continuous import Beta, Cauchy, Chi2, Dirichlet, Exponential, Gamma, Laplace, Normal, Uniform
from .discrete import Bernoulli, Binomial, Categorical, Geometric, OneHotCategorical, Poisson
from .distribution import Distribution, ExponentialFamily
from .kl import kl_divergence, register_kl
from .more import HalfCauchy, HalfNormal, Multinomial, NegativeBinomial, StudentT
from .matrix import LKJCholesky, Wishart
from .more2 import (FisherSnedecor, GeneralizedPareto, InverseGamma, Kumaraswamy, LogisticNormal, Pareto,
                    Weibull)
from .more3 import (ContinuousBernoulli, ExpRelaxedCategorical, OneHotCategoricalStraightThrough,
                    RelaxedOneHotCategorical, VonMises)
from .multivariate import LowRankMultivariateNormal, MultivariateNormal
from .relaxed import Gumbel, LogitRelaxedBernoulli, RelaxedBernoulli
from . import kl_cross, kl_more  # noqa: E402,F401  (register the cross-family KL rules)
from .transforms import (AbsTransform, AffineTransform, CatTransform, ComposeTransform, CorrCholeskyTransform,
                         CumulativeDistributionTransform, ExpTransform, IndependentTransform, LowerCholeskyTransform,
                         PositiveDefiniteTransform, PowerTransform, ReshapeTransform, SigmoidTransform,
                         SoftmaxTransform, SoftplusTransform, StackTransform, StickBreakingTransform, TanhTransform,
                         Transform, identity_transform)
from .constraint_registry import biject_to, transform_to

__all__ = [
    "LKJCholesky", "Wishart",
    "ContinuousBernoulli", "ExpRelaxedCategorical", "FisherSnedecor", "GeneralizedPareto", "InverseGamma",
    "Kumaraswamy", "LogisticNormal", "OneHotCategoricalStraightThrough", "Pareto", "RelaxedOneHotCategorical",
    "VonMises", "Weibull",
    "AbsTransform", "AffineTransform", "Bernoulli", "Beta", "Binomial", "CatTransform", "Categorical", "Cauchy",
    "Chi2", "ComposeTransform", "CorrCholeskyTransform", "CumulativeDistributionTransform", "Dirichlet",
    "Distribution", "ExpTransform", "Exponential", "ExponentialFamily", "Gamma", "Geometric", "Gumbel",
    "HalfCauchy", "HalfNormal", "Independent", "IndependentTransform", "Laplace", "LogNormal",
    "LogitRelaxedBernoulli", "LowRankMultivariateNormal", "LowerCholeskyTransform", "MixtureSameFamily",
    "Multinomial", "MultivariateNormal", "NegativeBinomial", "Normal", "OneHotCategorical", "Poisson",
    "PositiveDefiniteTransform", "PowerTransform", "RelaxedBernoulli", "ReshapeTransform", "SigmoidTransform",
    "SoftmaxTransform", "SoftplusTransform", "StackTransform", "StickBreakingTransform", "StudentT",
    "TanhTransform", "Transform", "TransformedDistribution", "Uniform", "biject_to", "constraints", "kl_divergence",
    "register_kl", "transform_to", "identity_transform", "transforms",
]
