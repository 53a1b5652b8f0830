"""The Distribution base class and the helpers the distributions share (torch.distributions.distribution and
torch.distributions.utils). Everything is made of forgegrad ops, so log_prob, entropy, KL and rsample differentiate
through autograd, in float32 or float64, on the parameters' device."""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

import forgegrad as fg
from forgegrad.tensor import Tensor

from . import constraints

__all__ = ["Distribution", "broadcast_all", "lazy_property", "logits_to_probs", "probs_to_logits",
           "clamp_probs"]


class lazy_property:
    """A property computed on first access and cached on the instance (torch.distributions.utils.lazy_property)."""

    def __init__(self, wrapped):
        self.wrapped = wrapped
        self.__doc__ = wrapped.__doc__
        self.__name__ = wrapped.__name__

    def __get__(self, instance, obj_type=None):
        if instance is None:
            return self
        with fg.enable_grad():
            value = self.wrapped(instance)
        setattr(instance, self.wrapped.__name__, value)
        return value


def _default_dtype():
    return fg.get_default_dtype()


def broadcast_all(*values):
    """Tensors and numbers broadcast to one shape; numbers take the first tensor's dtype and device (else the
    default dtype)."""
    if not all(isinstance(v, (Tensor, numbers.Number)) for v in values):
        raise ValueError("Input arguments must all be instances of numbers.Number, forgegrad.Tensor or objects "
                         "implementing __torch_function__.")
    like = next((v for v in values if isinstance(v, Tensor)), None)
    if like is None:
        return tuple(fg.tensor(float(v), dtype=_default_dtype()) for v in values)
    out = [v if isinstance(v, Tensor) else fg.tensor(float(v), dtype=like.dtype, device=like.device) for v in values]
    return tuple(fg.broadcast_tensors(*out))


def clamp_probs(probs: Tensor) -> Tensor:
    eps = fg.finfo(probs.dtype).eps
    return probs.clamp(min=eps, max=1 - eps)


def logits_to_probs(logits: Tensor, is_binary: bool = False) -> Tensor:
    if is_binary:
        return fg.sigmoid(logits)
    return fg.softmax(logits, dim=-1)


def probs_to_logits(probs: Tensor, is_binary: bool = False) -> Tensor:
    ps_clamped = clamp_probs(probs)
    if is_binary:
        return fg.log(ps_clamped) - fg.log1p(-ps_clamped)
    return fg.log(ps_clamped)


class _BinaryProbsLogits:
    """``probs`` and ``logits`` of a two-outcome parameter: __init__ sets the one given, the other is computed from
    it on first use (Bernoulli, Binomial, Geometric, NegativeBinomial, LogitRelaxedBernoulli)."""

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self):
        return logits_to_probs(self.logits, is_binary=True)



def _size(shape, who="sample_shape"):
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        return (int(shape),)
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{who} must be a tuple of ints (a torch.Size), got {type(shape).__name__}") from None
    if any(s < 0 for s in out):
        raise ValueError(f"{who} must have non-negative sizes, got {out}")
    return out


def _host(shape, values: np.ndarray, like: Tensor) -> Tensor:
    """A numpy draw as a tensor of like's dtype, on like's device."""
    from forgegrad.dtypes import to_numpy
    arr = np.array(values, dtype=to_numpy(like.dtype), order="C").reshape(shape)  # (ascontiguousarray: 0-d -> 1-d)
    t = Tensor._wrap_exact(arr)
    return t if like.device.type == "cpu" else t.to(like.device)


def _rng():
    from forgegrad import random as _random
    return _random.generator()


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy().astype(np.float64)


class Distribution:
    """torch.distributions.Distribution: batch_shape, event_shape, sample/rsample, log_prob, ... Subclasses set
    arg_constraints, support, has_rsample."""
    has_rsample = False
    has_enumerate_support = False
    _validate_args = __debug__

    @staticmethod
    def set_default_validate_args(value: bool) -> None:
        if value not in [True, False]:
            raise ValueError(f"set_default_validate_args: value must be True or False, got {value!r}")
        Distribution._validate_args = value

    def __init__(self, batch_shape=(), event_shape=(), validate_args=None):
        self._batch_shape = tuple(batch_shape)
        self._event_shape = tuple(event_shape)
        if validate_args is not None:
            self._validate_args = validate_args
        if self._validate_args:
            try:
                arg_constraints = self.arg_constraints
            except NotImplementedError:
                arg_constraints = {}
                warnings.warn(f"{self.__class__} does not define `arg_constraints`. Please set "
                              "`arg_constraints = {}` or initialize the distribution with `validate_args=False` "
                              "to turn off validation.",
                              stacklevel=2)
            for param, constraint in arg_constraints.items():
                if constraints.is_dependent(constraint):
                    continue
                if param not in self.__dict__ and isinstance(getattr(type(self), param), lazy_property):
                    continue  # lazily built from another parameter, which was checked
                value = getattr(self, param)
                valid = constraint.check(value)
                if not bool(valid.all()):
                    raise ValueError(f"Expected parameter {param} ({type(value).__name__} of shape "
                                     f"{tuple(value.shape)}) of distribution {self!r} to satisfy the constraint "
                                     f"{constraint!r}, but found invalid values:\n{value}")

    def expand(self, batch_shape, _instance=None):
        raise NotImplementedError

    @property
    def batch_shape(self):
        return self._batch_shape

    @property
    def event_shape(self):
        return self._event_shape

    @property
    def arg_constraints(self):
        raise NotImplementedError

    @property
    def support(self):
        raise NotImplementedError

    @property
    def mean(self):
        raise NotImplementedError(f"{self.__class__} does not implement mean")

    @property
    def mode(self):
        raise NotImplementedError(f"{self.__class__} does not implement mode")

    @property
    def variance(self):
        raise NotImplementedError(f"{self.__class__} does not implement variance")

    @property
    def stddev(self):
        return self.variance.sqrt()

    def sample(self, sample_shape=()):
        with fg.no_grad():
            return self.rsample(sample_shape)

    def rsample(self, sample_shape=()):
        raise NotImplementedError(f"{self.__class__.__name__} does not have rsample (has_rsample is False)")

    def sample_n(self, n):
        warnings.warn("sample_n will be deprecated. Use .sample((n,)) instead", UserWarning, stacklevel=2)
        return self.sample((n,))

    def log_prob(self, value):
        raise NotImplementedError

    def cdf(self, value):
        raise NotImplementedError

    def icdf(self, value):
        raise NotImplementedError

    def enumerate_support(self, expand=True):
        raise NotImplementedError

    def entropy(self):
        raise NotImplementedError

    def perplexity(self):
        return fg.exp(self.entropy())

    def _extended_shape(self, sample_shape=()):
        return _size(sample_shape) + self._batch_shape + self._event_shape

    def _validate_sample(self, value):
        if not isinstance(value, Tensor):
            raise ValueError("The value argument to log_prob must be a Tensor")
        shape = tuple(value.shape)
        event_dim_start = len(shape) - len(self._event_shape)
        if shape[event_dim_start:] != self._event_shape:
            raise ValueError(f"The right-most size of value must match event_shape: {shape} vs {self._event_shape}.")
        expected = self._batch_shape + self._event_shape
        for i, j in zip(reversed(shape), reversed(expected)):
            if i != 1 and j != 1 and i != j:
                raise ValueError(f"Value is not broadcastable with batch_shape+event_shape: {shape} vs {expected}.")
        try:
            support = self.support
        except NotImplementedError:
            warnings.warn(f"{self.__class__} does not define `support` to enable sample validation. Please "
                          "initialize the distribution with `validate_args=False` to turn off validation.",
                          stacklevel=2)
            return
        if not bool(support.check(value).all()):
            raise ValueError(f"Expected value argument ({type(value).__name__} of shape {shape}) to be within the "
                             f"support ({support!r}) of the distribution {self!r}, but found invalid values:\n{value}")

    def _get_checked_instance(self, cls, _instance=None):
        if _instance is None and type(self).__init__ != cls.__init__:
            raise NotImplementedError(f"Subclass {self.__class__.__name__} of {cls.__name__} that defines a custom "
                                      "__init__ method must also define a custom .expand() method.")
        return self.__new__(type(self)) if _instance is None else _instance

    def __repr__(self):
        try:
            names = [k for k in self.arg_constraints if k in self.__dict__]
        except NotImplementedError:
            names = []
        parts = []
        for p in names:
            v = self.__dict__[p]
            # torch's f-string: a 0-d tensor formats as its number, other one-element tensors as tensors
            shown = (v.item() if v.dim() == 0 else v) if v.numel() == 1 else f"torch.Size({list(v.shape)})"
            parts.append(f"{p}: {shown}")
        return self.__class__.__name__ + "(" + ", ".join(parts) + ")"


class ExponentialFamily(Distribution):
    """torch's ExponentialFamily base: entropy by Bregman divergence is not used; the members define it directly."""


def _sum_rightmost(value: Tensor, dim: int) -> Tensor:
    if dim == 0:
        return value
    return value.reshape(*tuple(value.shape[:-dim]), -1).sum(-1)


def _standard_normal(shape, like: Tensor) -> Tensor:
    return fg.randn(*shape, dtype=like.dtype, device=like.device) if shape else fg.randn(
        1, dtype=like.dtype, device=like.device).reshape(())


def _uniform01(shape, like: Tensor) -> Tensor:
    u = fg.rand(*shape, dtype=like.dtype, device=like.device) if shape else fg.rand(
        1, dtype=like.dtype, device=like.device).reshape(())
    return u


_LOG_2PI = math.log(2 * math.pi)
