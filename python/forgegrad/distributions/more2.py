"""Pareto, Weibull, Kumaraswamy, InverseGamma, LogisticNormal, FisherSnedecor and GeneralizedPareto with torch's
constructions and formulas (torch.distributions 2.13)."""
from __future__ import annotations

import math
import numbers

import forgegrad as fg

from . import constraints
from .composite import TransformedDistribution
from .continuous import Exponential, Gamma, Normal, Uniform
from .distribution import Distribution, _size, _uniform01, broadcast_all
from .transforms import AffineTransform, ExpTransform, PowerTransform
from .transforms_more import StickBreakingTransform

__all__ = ["Pareto", "Weibull", "Kumaraswamy", "InverseGamma", "LogisticNormal", "FisherSnedecor",
           "GeneralizedPareto"]

_EULER = 0.57721566490153286060


def _nan_where(mask, x):
    return fg.where(mask, fg.full_like(x, math.nan), x)


class Pareto(TransformedDistribution):
    """scale * exp(Exponential(alpha)): density alpha scale^alpha / x^(alpha + 1) on [scale, inf)."""
    arg_constraints = {"alpha": constraints.positive, "scale": constraints.positive}

    def __init__(self, scale, alpha, validate_args=None):
        self.scale, self.alpha = broadcast_all(scale, alpha)
        base_dist = Exponential(self.alpha, validate_args=validate_args)
        transforms = [ExpTransform(), AffineTransform(loc=0, scale=self.scale)]
        super().__init__(base_dist, transforms, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Pareto, _instance)
        shape = _size(batch_shape, "batch_shape")
        new.scale, new.alpha = self.scale.expand(*shape), self.alpha.expand(*shape)
        return super().expand(batch_shape, _instance=new)

    @property
    def mean(self):
        a = self.alpha.clamp(min=1)
        return a * self.scale / (a - 1)

    @property
    def mode(self):
        return self.scale

    @property
    def variance(self):
        a = self.alpha.clamp(min=2)
        return self.scale.pow(2) * a / ((a - 1).pow(2) * (a - 2))

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.greater_than_eq(self.scale)

    def entropy(self):
        return (self.scale / self.alpha).log() + (1 + self.alpha.reciprocal())


class Weibull(TransformedDistribution):
    """scale * Exponential(1) ** (1 / concentration)."""
    arg_constraints = {"scale": constraints.positive, "concentration": constraints.positive}
    support = constraints.positive

    def __init__(self, scale, concentration, validate_args=None):
        self.scale, self.concentration = broadcast_all(scale, concentration)
        self.concentration_reciprocal = self.concentration.reciprocal()
        base_dist = Exponential(fg.ones_like(self.scale), validate_args=validate_args)
        transforms = [PowerTransform(exponent=self.concentration_reciprocal), AffineTransform(loc=0, scale=self.scale)]
        super().__init__(base_dist, transforms, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Weibull, _instance)
        shape = _size(batch_shape, "batch_shape")
        new.scale, new.concentration = self.scale.expand(*shape), self.concentration.expand(*shape)
        new.concentration_reciprocal = new.concentration.reciprocal()
        transforms = [PowerTransform(exponent=new.concentration_reciprocal), AffineTransform(loc=0, scale=new.scale)]
        TransformedDistribution.__init__(new, self.base_dist.expand(shape), transforms, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self):
        return self.scale * fg.exp(fg.lgamma(1 + self.concentration_reciprocal))

    @property
    def mode(self):
        return self.scale * ((self.concentration - 1) / self.concentration) ** self.concentration.reciprocal()

    @property
    def variance(self):
        return self.scale.pow(2) * (fg.exp(fg.lgamma(1 + 2 * self.concentration_reciprocal))
                                    - fg.exp(2 * fg.lgamma(1 + self.concentration_reciprocal)))

    def entropy(self):
        return (_EULER * (1 - self.concentration_reciprocal) + fg.log(self.scale * self.concentration_reciprocal)
                + 1)


def _kumaraswamy_moments(a, b, n):
    arg1 = 1 + n / a
    return b * fg.exp(fg.lgamma(arg1) + fg.lgamma(b) - fg.lgamma(arg1 + b))


class Kumaraswamy(TransformedDistribution):
    """(1 - U ** (1 / concentration0)) ** (1 / concentration1), U uniform on (0, 1)."""
    arg_constraints = {"concentration1": constraints.positive, "concentration0": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, concentration1, concentration0, validate_args=None):
        self.concentration1, self.concentration0 = broadcast_all(concentration1, concentration0)
        base_dist = Uniform(fg.full_like(self.concentration0, 0), fg.full_like(self.concentration0, 1),
                            validate_args=validate_args)
        transforms = [PowerTransform(exponent=self.concentration0.reciprocal()), AffineTransform(loc=1.0, scale=-1.0),
                      PowerTransform(exponent=self.concentration1.reciprocal())]
        super().__init__(base_dist, transforms, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Kumaraswamy, _instance)
        shape = _size(batch_shape, "batch_shape")
        new.concentration1, new.concentration0 = self.concentration1.expand(*shape), self.concentration0.expand(*shape)
        return super().expand(batch_shape, _instance=new)

    @property
    def mean(self):
        return _kumaraswamy_moments(self.concentration1, self.concentration0, 1)

    @property
    def mode(self):
        log_mode = (self.concentration0.reciprocal() * (-self.concentration0).log1p()
                    - (-self.concentration0 * self.concentration1).log1p())
        return _nan_where((self.concentration0 < 1) | (self.concentration1 < 1), log_mode).exp()

    @property
    def variance(self):
        return _kumaraswamy_moments(self.concentration1, self.concentration0, 2) - self.mean.pow(2)

    def entropy(self):
        t1 = 1 - self.concentration1.reciprocal()
        t0 = 1 - self.concentration0.reciprocal()
        H0 = fg.digamma(self.concentration0 + 1) + _EULER
        return t0 + t1 * H0 - fg.log(self.concentration1) - fg.log(self.concentration0)


class InverseGamma(TransformedDistribution):
    """1 / Gamma(concentration, rate)."""
    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, concentration, rate, validate_args=None):
        base_dist = Gamma(concentration, rate, validate_args=validate_args)
        neg_one = -fg.ones((), dtype=base_dist.rate.dtype, device=base_dist.rate.device)
        super().__init__(base_dist, PowerTransform(neg_one), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(InverseGamma, _instance)
        return super().expand(batch_shape, _instance=new)

    @property
    def concentration(self):
        return self.base_dist.concentration

    @property
    def rate(self):
        return self.base_dist.rate

    @property
    def mean(self):
        c = self.concentration
        result = self.rate / fg.where(c > 1, c - 1, fg.ones_like(c))
        return fg.where(c > 1, result, fg.full_like(result, math.inf))

    @property
    def mode(self):
        return self.rate / (self.concentration + 1)

    @property
    def variance(self):
        c = self.concentration
        safe = fg.where(c > 2, c, fg.full_like(c, 3.0))  # no 0 / 0 in the discarded branch
        result = self.rate.square() / ((safe - 1).square() * (safe - 2))
        return fg.where(c > 2, result, fg.full_like(result, math.inf))

    def entropy(self):
        c = self.concentration
        return c + self.rate.log() + c.lgamma() - (1 + c) * c.digamma()


class LogisticNormal(TransformedDistribution):
    """StickBreakingTransform()(Normal(loc, scale)) on the simplex with one more entry than loc."""
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        base_dist = Normal(loc, scale, validate_args=validate_args)
        if not base_dist.batch_shape:
            base_dist = base_dist.expand([1])
        super().__init__(base_dist, StickBreakingTransform(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LogisticNormal, _instance)
        return super().expand(batch_shape, _instance=new)

    @property
    def loc(self):
        return self.base_dist.base_dist.loc

    @property
    def scale(self):
        return self.base_dist.base_dist.scale


class FisherSnedecor(Distribution):
    """(Chi2(df1) / df1) / (Chi2(df2) / df2)."""
    arg_constraints = {"df1": constraints.positive, "df2": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, df1, df2, validate_args=None):
        self.df1, self.df2 = broadcast_all(df1, df2)
        self._gamma1 = Gamma(self.df1 * 0.5, self.df1)
        self._gamma2 = Gamma(self.df2 * 0.5, self.df2)
        scalar = isinstance(df1, numbers.Number) and isinstance(df2, numbers.Number)
        super().__init__(() if scalar else tuple(self.df1.shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(FisherSnedecor, _instance)
        shape = _size(batch_shape, "batch_shape")
        new.df1, new.df2 = self.df1.expand(*shape), self.df2.expand(*shape)
        new._gamma1, new._gamma2 = self._gamma1.expand(shape), self._gamma2.expand(shape)
        Distribution.__init__(new, shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self):
        df2 = fg.where(self.df2 > 2, self.df2, fg.full_like(self.df2, 3.0))
        return _nan_where(self.df2 <= 2, df2 / (df2 - 2))

    @property
    def mode(self):
        mode = (self.df1 - 2) / self.df1 * self.df2 / (self.df2 + 2)
        return _nan_where(self.df1 <= 2, mode)

    @property
    def variance(self):
        df2 = fg.where(self.df2 > 4, self.df2, fg.full_like(self.df2, 5.0))
        v = 2 * df2.pow(2) * (self.df1 + df2 - 2) / (self.df1 * (df2 - 2).pow(2) * (df2 - 4))
        return _nan_where(self.df2 <= 4, v)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        X1 = self._gamma1.rsample(sample_shape).reshape(*shape)
        X2 = self._gamma2.rsample(sample_shape).reshape(*shape)
        tiny = fg.finfo(X2.dtype).tiny
        return (X1 / X2.clamp(min=tiny)).clamp(min=tiny)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        ct1, ct2, ct3 = self.df1 * 0.5, self.df2 * 0.5, self.df1 / self.df2
        t1 = (ct1 + ct2).lgamma() - ct1.lgamma() - ct2.lgamma()
        t2 = ct1 * ct3.log() + (ct1 - 1) * fg.log(value)
        t3 = (ct1 + ct2) * fg.log1p(ct3 * value)
        return t1 + t2 - t3


class GeneralizedPareto(Distribution):
    """Generalized Pareto (loc, scale, concentration); concentration 0 is the shifted exponential."""
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive, "concentration": constraints.real}
    has_rsample = True

    def __init__(self, loc, scale, concentration, validate_args=None):
        self.loc, self.scale, self.concentration = broadcast_all(loc, scale, concentration)
        scalar = all(isinstance(v, numbers.Number) for v in (loc, scale, concentration))
        super().__init__(() if scalar else tuple(self.loc.shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GeneralizedPareto, _instance)
        shape = _size(batch_shape, "batch_shape")
        new.loc, new.scale, new.concentration = (t.expand(*shape) for t in (self.loc, self.scale, self.concentration))
        Distribution.__init__(new, shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _safe(self):
        eq_zero = fg.isclose(self.concentration, fg.zeros_like(self.concentration))
        return eq_zero, fg.where(eq_zero, fg.ones_like(self.concentration), self.concentration)

    def rsample(self, sample_shape=()):
        return self.icdf(_uniform01(self._extended_shape(sample_shape), self.loc))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        eq_zero, safe_conc = self._safe()
        y = 1 / safe_conc + fg.ones_like(z)
        where_nonzero = fg.where(y == 0, y, y * fg.log1p(safe_conc * z))
        return -self.scale.log() - fg.where(eq_zero, z, where_nonzero)

    def log_survival_function(self, value):
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        eq_zero, safe_conc = self._safe()
        return fg.where(eq_zero, -z, -fg.log1p(safe_conc * z) / safe_conc)

    def log_cdf(self, value):
        return fg.log1p(-fg.exp(self.log_survival_function(value)))

    def cdf(self, value):
        return fg.exp(self.log_cdf(value))

    def icdf(self, value):
        eq_zero, safe_conc = self._safe()
        logu = fg.log1p(-value)
        where_nonzero = self.loc + self.scale / safe_conc * fg.expm1(-safe_conc * logu)
        return fg.where(eq_zero, self.loc - self.scale * logu, where_nonzero)

    @property
    def mean(self):
        valid = self.concentration < 1
        safe_conc = fg.where(valid, self.concentration, fg.full_like(self.concentration, 0.5))
        return _nan_where(~valid, self.loc + self.scale / (1 - safe_conc))

    @property
    def variance(self):
        valid = self.concentration < 0.5
        safe_conc = fg.where(valid, self.concentration, fg.full_like(self.concentration, 0.25))
        return _nan_where(~valid, self.scale ** 2 / ((1 - safe_conc) ** 2 * (1 - 2 * safe_conc)))

    def entropy(self):
        ans = fg.log(self.scale) + self.concentration + 1
        return ans.expand(*self._batch_shape) if self._batch_shape else ans.reshape(())

    @property
    def mode(self):
        return self.loc

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        lower = self.loc
        neg = self.concentration < 0
        safe = fg.where(neg, self.concentration, -fg.ones_like(self.concentration))
        upper = fg.where(neg, lower - self.scale / safe, fg.full_like(lower, math.inf))
        return constraints.interval(lower, upper)
