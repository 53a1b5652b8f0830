"""StudentT, HalfNormal, HalfCauchy, Multinomial and NegativeBinomial (torch's formulas)."""
from __future__ import annotations

import math

import numpy as np

import forgegrad as fg
import forgegrad.nn.functional as F

from . import constraints
from .composite import TransformedDistribution
from .continuous import Cauchy, Chi2, Gamma, Normal
from .discrete import Binomial, Categorical
from .distribution import (Distribution, _BinaryProbsLogits, _host, _numpy, _rng, _size, _standard_normal,
                           broadcast_all)
from .transforms import AbsTransform

__all__ = ["StudentT", "HalfNormal", "HalfCauchy", "Multinomial", "NegativeBinomial"]


class StudentT(Distribution):
    arg_constraints = {"df": constraints.positive, "loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, df, loc=0.0, scale=1.0, validate_args=None):
        self.df, self.loc, self.scale = broadcast_all(df, loc, scale)
        self._chi2 = Chi2(self.df)
        super().__init__(tuple(self.df.shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StudentT, _instance)
        batch_shape = _size(batch_shape, "batch_shape")
        new.df, new.loc, new.scale = (t.expand(*batch_shape) for t in (self.df, self.loc, self.scale))
        new._chi2 = self._chi2.expand(batch_shape)
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self):
        return fg.where(self.df <= 1, fg.full_like(self.loc, math.nan), self.loc)

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        safe_df = fg.where(self.df > 2, self.df, fg.full_like(self.df, 3.0))  # no 0 / 0 in the discarded branch
        v = self.scale.pow(2) * safe_df / (safe_df - 2)
        v = fg.where((self.df <= 2) & (self.df > 1), fg.full_like(v, math.inf), v)
        return fg.where(self.df <= 1, fg.full_like(v, math.nan), v)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        X = _standard_normal(shape, self.df)
        Z = self._chi2.rsample(sample_shape)
        Y = X * fg.rsqrt(Z / self.df)
        return self.loc + self.scale * Y

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        y = (value - self.loc) / self.scale
        Z = (self.scale.log() + 0.5 * self.df.log() + 0.5 * math.log(math.pi) + fg.lgamma(0.5 * self.df)
             - fg.lgamma(0.5 * (self.df + 1.0)))
        return -0.5 * (self.df + 1.0) * fg.log1p(y ** 2.0 / self.df) - Z

    def entropy(self):
        lbeta = fg.lgamma(0.5 * self.df) + math.lgamma(0.5) - fg.lgamma(0.5 * (self.df + 1))
        return (self.scale.log() + 0.5 * (self.df + 1) * (fg.digamma(0.5 * (self.df + 1)) - fg.digamma(0.5 * self.df))
                + 0.5 * self.df.log() + lbeta)


class _HalfBase(TransformedDistribution):
    """|X| for a distribution X symmetric about 0 with scale ``scale``."""
    arg_constraints = {"scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    @property
    def scale(self):
        return self.base_dist.scale

    @property
    def mode(self):
        return fg.zeros_like(self.scale)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_prob = self.base_dist.log_prob(value) + math.log(2)
        return fg.where(value >= 0, log_prob, fg.full_like(log_prob, -math.inf))

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return 2 * self.base_dist.cdf(value) - 1

    def icdf(self, prob):
        return self.base_dist.icdf((prob + 1) / 2)

    def entropy(self):
        return self.base_dist.entropy() - math.log(2)


class HalfNormal(_HalfBase):
    def __init__(self, scale, validate_args=None):
        super().__init__(Normal(0, scale, validate_args=False), AbsTransform(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HalfNormal, _instance)
        return super().expand(batch_shape, _instance=new)

    @property
    def mean(self):
        return self.scale * math.sqrt(2 / math.pi)

    @property
    def variance(self):
        return self.scale.pow(2) * (1 - 2 / math.pi)


class HalfCauchy(_HalfBase):
    def __init__(self, scale, validate_args=None):
        super().__init__(Cauchy(0, scale, validate_args=False), AbsTransform(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HalfCauchy, _instance)
        return super().expand(batch_shape, _instance=new)

    @property
    def mean(self):
        return fg.full(self._extended_shape(), math.inf, dtype=self.scale.dtype, device=self.scale.device)

    @property
    def variance(self):
        return self.base_dist.variance


class Multinomial(Distribution):
    """Counts of ``total_count`` (an int, as torch) Categorical draws over the last dim of probs / logits."""
    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}

    def __init__(self, total_count=1, probs=None, logits=None, validate_args=None):
        if not isinstance(total_count, int):
            raise NotImplementedError("inhomogeneous total_count is not supported")
        self.total_count = total_count
        self._categorical = Categorical(probs=probs, logits=logits)
        self._binomial = Binomial(total_count=total_count, probs=self.probs)
        super().__init__(self._categorical.batch_shape, self._categorical.param_shape[-1:],
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Multinomial, _instance)
        batch_shape = _size(batch_shape, "batch_shape")
        new.total_count = self.total_count
        new._categorical = self._categorical.expand(batch_shape)
        new._binomial = Binomial(total_count=self.total_count, probs=new._categorical.probs, validate_args=False)
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.multinomial(self.total_count)

    @property
    def logits(self):
        return self._categorical.logits

    @property
    def probs(self):
        return self._categorical.probs

    @property
    def param_shape(self):
        return self._categorical.param_shape

    @property
    def mean(self):
        return self.probs * self.total_count

    @property
    def variance(self):
        return self.total_count * self.probs * (1 - self.probs)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        p = _numpy(self.probs)
        p = p / p.sum(-1, keepdims=True)
        counts = _rng().multinomial(self.total_count, np.broadcast_to(p, shape), size=shape[:-1])
        return _host(shape, counts, self.probs)

    def entropy(self):
        n = float(self.total_count)
        term1 = n * self._categorical.entropy() - math.lgamma(n + 1)
        support = self._binomial.enumerate_support(expand=False)[1:]
        binomial_probs = fg.exp(self._binomial.log_prob(support))
        weights = fg.lgamma(support + 1)
        return term1 + (binomial_probs * weights).sum(0).sum(-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        log_factorial_n = fg.lgamma(value.sum(-1) + 1)
        log_factorial_xs = fg.lgamma(value + 1).sum(-1)
        # a zero count of an impossible class contributes 0, not 0 * -inf
        logits = fg.where((value == 0) & (logits == -math.inf), fg.zeros_like(logits), logits)
        return log_factorial_n - log_factorial_xs + (logits * value).sum(-1)


class NegativeBinomial(_BinaryProbsLogits, Distribution):
    """Number of successes before ``total_count`` failures, success probability ``probs``."""
    arg_constraints = {"total_count": constraints.greater_than_eq(0),
                       "probs": constraints.half_open_interval(0.0, 1.0), "logits": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, total_count, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        if probs is not None:
            self.total_count, self.probs = broadcast_all(total_count, probs)
            self.total_count = self.total_count.type_as(self.probs)
        else:
            self.total_count, self.logits = broadcast_all(total_count, logits)
            self.total_count = self.total_count.type_as(self.logits)
        self._param = self.probs if probs is not None else self.logits
        super().__init__(tuple(self._param.shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(NegativeBinomial, _instance)
        batch_shape = _size(batch_shape, "batch_shape")
        new.total_count = self.total_count.expand(*batch_shape)
        for name in ("probs", "logits"):
            if name in self.__dict__:
                setattr(new, name, getattr(self, name).expand(*batch_shape))
                new._param = getattr(new, name)
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def param_shape(self):
        return tuple(self._param.shape)

    @property
    def mean(self):
        return self.total_count * fg.exp(self.logits)

    @property
    def mode(self):
        return ((self.total_count - 1) * self.logits.exp()).floor().clamp(min=0.0)

    @property
    def variance(self):
        return self.mean / fg.sigmoid(-self.logits)

    def sample(self, sample_shape=()):
        with fg.no_grad():
            rate = Gamma(self.total_count, fg.exp(-self.logits), validate_args=False).sample(sample_shape)
            return fg.poisson(rate)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_unnormalized_prob = self.total_count * F.logsigmoid(-self.logits) + value * F.logsigmoid(self.logits)
        log_normalization = (-fg.lgamma(self.total_count + value) + fg.lgamma(1.0 + value)
                             + fg.lgamma(self.total_count))
        log_normalization = fg.where(self.total_count + value == 0.0, fg.zeros_like(log_normalization),
                                     log_normalization)
        return log_unnormalized_prob - log_normalization
