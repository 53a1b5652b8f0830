"""Continuous univariate distributions and Dirichlet, with torch's formulas (torch.distributions 2.13)."""
from __future__ import annotations

import math
import numbers

import forgegrad as fg

from . import constraints
from .distribution import (Distribution, ExponentialFamily, _host, _numpy, _rng, _size, _standard_normal,
                           _uniform01, broadcast_all)

__all__ = ["Normal", "Uniform", "Laplace", "Exponential", "Gamma", "Chi2", "Beta", "Dirichlet", "Cauchy"]


def _batch(*params):
    return () if all(isinstance(p, numbers.Number) for p in params) else None


class _Expandable:
    """``expand`` for distributions whose parameters are all batch-shaped tensors named in ``_params``."""
    _params: tuple = ()

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = _size(batch_shape, "batch_shape")
        for p in self._params:
            setattr(new, p, getattr(self, p).expand(*(batch_shape + self.event_shape)))
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new


class Normal(_Expandable, ExponentialFamily):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True
    _params = ("loc", "scale")

    def __init__(self, loc, scale, validate_args=None):
        batch = _batch(loc, scale)
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(batch if batch is not None else tuple(self.loc.shape), validate_args=validate_args)

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc

    @property
    def stddev(self):
        return self.scale

    @property
    def variance(self):
        return self.stddev.pow(2)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        return self.loc + _standard_normal(shape, self.loc) * self.scale

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        var = self.scale ** 2
        return -((value - self.loc) ** 2) / (2 * var) - self.scale.log() - math.log(math.sqrt(2 * math.pi))

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return 0.5 * (1 + fg.erf((value - self.loc) * self.scale.reciprocal() / math.sqrt(2)))

    def icdf(self, value):
        return self.loc + self.scale * fg.erfinv(2 * value - 1) * math.sqrt(2)

    def entropy(self):
        return 0.5 + 0.5 * math.log(2 * math.pi) + fg.log(self.scale)


class Uniform(_Expandable, Distribution):
    arg_constraints = {"low": constraints.dependent(is_discrete=False, event_dim=0),
                       "high": constraints.dependent(is_discrete=False, event_dim=0)}
    has_rsample = True
    _params = ("low", "high")

    def __init__(self, low, high, validate_args=None):
        batch = _batch(low, high)
        self.low, self.high = broadcast_all(low, high)
        super().__init__(batch if batch is not None else tuple(self.low.shape), validate_args=validate_args)
        if self._validate_args and not bool((self.low < self.high).all()):
            raise ValueError("Uniform is not defined when low>= high")

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.low, self.high)

    @property
    def mean(self):
        return (self.high + self.low) / 2

    @property
    def mode(self):
        return self.high * math.nan

    @property
    def stddev(self):
        return (self.high - self.low) / 12 ** 0.5

    @property
    def variance(self):
        return (self.high - self.low).pow(2) / 12

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        return self.low + _uniform01(shape, self.low) * (self.high - self.low)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        lb = (self.low <= value).type_as(self.low)
        ub = (self.high > value).type_as(self.low)
        return fg.log(lb * ub) - fg.log(self.high - self.low)

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return ((value - self.low) / (self.high - self.low)).clamp(min=0, max=1)

    def icdf(self, value):
        return value * (self.high - self.low) + self.low

    def entropy(self):
        return fg.log(self.high - self.low)


class Laplace(_Expandable, Distribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True
    _params = ("loc", "scale")

    def __init__(self, loc, scale, validate_args=None):
        batch = _batch(loc, scale)
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(batch if batch is not None else tuple(self.loc.shape), validate_args=validate_args)

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        return 2 * self.scale.pow(2)

    @property
    def stddev(self):
        return (2 ** 0.5) * self.scale

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        eps = fg.finfo(self.loc.dtype).eps
        u = (eps - 1) + _uniform01(shape, self.loc) * (2 - eps)  # in [eps - 1, 1): log1p(-|u|) stays finite
        return self.loc - self.scale * u.sign() * fg.log1p(-u.abs())

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return -fg.log(2 * self.scale) - (value - self.loc).abs() / self.scale

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return 0.5 - 0.5 * (value - self.loc).sign() * fg.expm1(-(value - self.loc).abs() / self.scale)

    def icdf(self, value):
        term = value - 0.5
        return self.loc - self.scale * term.sign() * fg.log1p(-2 * term.abs())

    def entropy(self):
        return 1 + fg.log(2 * self.scale)


class Cauchy(_Expandable, Distribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True
    _params = ("loc", "scale")

    def __init__(self, loc, scale, validate_args=None):
        batch = _batch(loc, scale)
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(batch if batch is not None else tuple(self.loc.shape), validate_args=validate_args)

    @property
    def mean(self):
        return fg.full(tuple(self._extended_shape()), math.nan, dtype=self.loc.dtype, device=self.loc.device)

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        return fg.full(tuple(self._extended_shape()), math.inf, dtype=self.loc.dtype, device=self.loc.device)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        u = _uniform01(shape, self.loc)
        return self.loc + self.scale * fg.tan(math.pi * (u - 0.5))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return -math.log(math.pi) - self.scale.log() - (((value - self.loc) / self.scale) ** 2).log1p()

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return fg.atan((value - self.loc) / self.scale) / math.pi + 0.5

    def icdf(self, value):
        return fg.tan(math.pi * (value - 0.5)) * self.scale + self.loc

    def entropy(self):
        return math.log(4 * math.pi) + self.scale.log()


class Exponential(_Expandable, ExponentialFamily):
    arg_constraints = {"rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True
    _params = ("rate",)

    def __init__(self, rate, validate_args=None):
        batch = _batch(rate)
        (self.rate,) = broadcast_all(rate)
        super().__init__(batch if batch is not None else tuple(self.rate.shape), validate_args=validate_args)

    @property
    def mean(self):
        return self.rate.reciprocal()

    @property
    def mode(self):
        return fg.zeros_like(self.rate)

    @property
    def stddev(self):
        return self.rate.reciprocal()

    @property
    def variance(self):
        return self.rate.pow(-2)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        u = _uniform01(shape, self.rate)  # in [0, 1): -log1p(-u) is a standard exponential draw, finite
        return -fg.log1p(-u) / self.rate

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self.rate.log() - self.rate * value

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return 1 - fg.exp(-self.rate * value)

    def icdf(self, value):
        return -fg.log1p(-value) / self.rate

    def entropy(self):
        return 1.0 - fg.log(self.rate)


def _standard_gamma(concentration):
    """Gamma(concentration, 1) draws from the global generator (no gradient: see Gamma's has_rsample)."""
    c = _numpy(concentration)
    draw = _rng().standard_gamma(c)
    tiny = fg.finfo(concentration.dtype).tiny
    return _host(c.shape, draw, concentration).clamp(min=tiny)


def _gamma_dx_dalpha(x, alpha):
    """d x / d alpha of a Gamma(alpha, 1) draw x held at its quantile u = P(alpha, x) (implicit reparameterisation:
    -(dP/dalpha) / pdf(x)). dP/dalpha is a central difference of the regularised incomplete gamma in float64 (the
    upper one, Q, where x > alpha, so the difference does not cancel); relative error about 1e-9."""
    a = alpha.detach().to("cpu").double()
    xx = x.detach().to("cpu").double()
    h = a * 1e-5
    upper = xx > a

    def p(at):
        return fg.where(upper, -fg.special.gammaincc(at, xx), fg.special.gammainc(at, xx))
    dp = (p(a + h) - p(a - h)) / (2 * h)
    log_pdf = (a - 1) * xx.log() - xx - fg.lgamma(a)
    # -dp / pdf through logs: both are tiny far in a tail
    out = -dp.sign() * (dp.abs().log() - log_pdf).exp()
    out = fg.where(fg.isfinite(out), out, fg.zeros_like(out))  # a draw clamped at the smallest float: no gradient
    out = out.to(alpha.dtype)
    return out if alpha.device.type == "cpu" else out.to(alpha.device)


def _standard_gamma_rsample(concentration):
    """Gamma(concentration, 1) draws whose gradient w.r.t. concentration is the implicit reparameterisation one
    (first order: the draw plus dx/dalpha * (alpha - stop_gradient(alpha)))."""
    x = _standard_gamma(concentration.detach())
    if not (concentration.requires_grad and fg.is_grad_enabled()):
        return x
    return x + _gamma_dx_dalpha(x, concentration) * (concentration - concentration.detach())


class Gamma(_Expandable, ExponentialFamily):
    """Gamma(concentration, rate). rsample's gradient w.r.t. the concentration is the implicit reparameterisation
    gradient (as torch's, computed to ~1e-9 where torch's approximation is ~1e-3), w.r.t. the rate exact."""
    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True
    _params = ("concentration", "rate")

    def __init__(self, concentration, rate, validate_args=None):
        batch = _batch(concentration, rate)
        self.concentration, self.rate = broadcast_all(concentration, rate)
        super().__init__(batch if batch is not None else tuple(self.rate.shape), validate_args=validate_args)

    @property
    def mean(self):
        return self.concentration / self.rate

    @property
    def mode(self):
        return ((self.concentration - 1) / self.rate).clamp(min=0)

    @property
    def variance(self):
        return self.concentration / self.rate.pow(2)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        value = _standard_gamma_rsample(self.concentration.expand(*shape)) / self.rate.expand(*shape)
        return value.clamp(min=fg.finfo(value.dtype).tiny)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        if value.dtype != self.rate.dtype:  # torch's as_tensor(value, dtype=rate.dtype): integer counts too
            value = value.to(self.rate.dtype)
        return (fg.xlogy(self.concentration, self.rate) + fg.xlogy(self.concentration - 1, value)
                - self.rate * value - fg.lgamma(self.concentration))

    def entropy(self):
        return (self.concentration - fg.log(self.rate) + fg.lgamma(self.concentration)
                + (1.0 - self.concentration) * fg.digamma(self.concentration))

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return fg.special.gammainc(self.concentration, self.rate * value)


class Chi2(Gamma):
    """Chi2(df) = Gamma(df / 2, 1 / 2)."""
    arg_constraints = {"df": constraints.positive}

    def __init__(self, df, validate_args=None):
        (df,) = broadcast_all(df)
        super().__init__(0.5 * df, fg.full_like(df, 0.5), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Chi2, _instance)
        return super().expand(batch_shape, new)

    @property
    def df(self):
        return self.concentration * 2


def _dirichlet_log_prob(concentration, value):
    return (fg.xlogy(concentration - 1.0, value).sum(-1) + fg.lgamma(concentration.sum(-1))
            - fg.lgamma(concentration).sum(-1))


def _dirichlet_entropy(concentration):
    k = concentration.shape[-1]
    a0 = concentration.sum(-1)
    return (fg.lgamma(concentration).sum(-1) - fg.lgamma(a0) - (k - a0) * fg.digamma(a0)
            - ((concentration - 1.0) * fg.digamma(concentration)).sum(-1))


class Dirichlet(ExponentialFamily):
    """Dirichlet(concentration) over the last dim. rsample normalises reparameterised Gamma draws: an unbiased
    pathwise gradient, though not per draw the one torch's (marginal-Beta based) rule gives."""
    arg_constraints = {"concentration": constraints.independent(constraints.positive, 1)}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, concentration, validate_args=None):
        if concentration.dim() < 1:
            raise ValueError("`concentration` parameter must be at least one-dimensional.")
        self.concentration = concentration
        shape = tuple(concentration.shape)
        super().__init__(shape[:-1], shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Dirichlet, _instance)
        batch_shape = _size(batch_shape, "batch_shape")
        new.concentration = self.concentration.expand(*(batch_shape + self.event_shape))
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        g = _standard_gamma_rsample(self.concentration.expand(*shape))
        return (g / g.sum(-1, keepdim=True)).clamp(min=fg.finfo(g.dtype).tiny)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return _dirichlet_log_prob(self.concentration, value)

    @property
    def mean(self):
        return self.concentration / self.concentration.sum(-1, keepdim=True)

    @property
    def mode(self):
        concm1 = (self.concentration - 1).clamp(min=0.0)
        mode = concm1 / concm1.sum(-1, keepdim=True)
        # every concentration < 1: a vertex; torch takes the argmax of that row of mode, which is all NaN (0 / 0),
        # so its first vertex; kept for agreement with torch
        mask = (self.concentration < 1).all(-1, keepdim=True)
        k = self.concentration.shape[-1]
        vertex = fg.nn.functional.one_hot(mode.detach().argmax(-1), k).type_as(mode)
        return fg.where(mask, vertex, mode)

    @property
    def variance(self):
        con0 = self.concentration.sum(-1, keepdim=True)
        return self.concentration * (con0 - self.concentration) / (con0.pow(2) * (con0 + 1))

    def entropy(self):
        return _dirichlet_entropy(self.concentration)


class Beta(_Expandable, ExponentialFamily):
    """Beta(concentration1, concentration0) on [0, 1]; rsample as a two-component Dirichlet's."""
    arg_constraints = {"concentration1": constraints.positive, "concentration0": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True
    _params = ("concentration1", "concentration0")

    def __init__(self, concentration1, concentration0, validate_args=None):
        batch = _batch(concentration1, concentration0)
        self.concentration1, self.concentration0 = broadcast_all(concentration1, concentration0)
        super().__init__(batch if batch is not None else tuple(self.concentration1.shape),
                         validate_args=validate_args)

    @property
    def _concentration(self):
        return fg.stack([self.concentration1, self.concentration0], -1)

    @property
    def mean(self):
        return self.concentration1 / (self.concentration1 + self.concentration0)

    @property
    def mode(self):
        return (self.concentration1 - 1) / (self.concentration1 + self.concentration0 - 2)

    @property
    def variance(self):
        total = self.concentration1 + self.concentration0
        return self.concentration1 * self.concentration0 / (total.pow(2) * (total + 1))

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        a = _standard_gamma_rsample(self.concentration1.expand(*shape))
        b = _standard_gamma_rsample(self.concentration0.expand(*shape))
        eps = fg.finfo(a.dtype).eps
        return (a / (a + b)).clamp(min=eps, max=1 - eps)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        heads_tails = fg.stack([value, 1.0 - value], -1)
        return _dirichlet_log_prob(self._concentration, heads_tails)

    def entropy(self):
        return _dirichlet_entropy(self._concentration)
