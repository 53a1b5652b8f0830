"""torch's factories that forgegrad lacked: linspace, logspace, tril_indices, triu_indices, and the random ones
drawn from forgegrad's generator (forgegrad.random: ``manual_seed`` makes them repeatable, and no kernel thread draws,
so the numbers do not depend on the thread count): randperm, bernoulli, normal, poisson; Tensor.bernoulli(_),
normal_, uniform_."""
from __future__ import annotations

import numpy as np

from . import random as _random
from .factories import _factory
from .tensor import Tensor


def _np_dtype(dtype, default):
    if dtype is None:
        if default == np.float32:  # the floating factories follow forgegrad.set_default_dtype
            from .dtypes import default_float
            return default_float()
        return np.dtype(default)
    from .dtypes import to_numpy
    return np.dtype(to_numpy(dtype))


def _steps(steps, who):
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"{who}(): steps must be a non-negative int, got {steps!r}")
    return int(steps)


def _linspace_values(start, end, steps):
    """torch's symmetric formula: start + i * step for the first half, end - (steps - 1 - i) * step after."""
    if steps == 1:
        return np.array([start], np.float64)
    step = (end - start) / (steps - 1)
    i = np.arange(steps, dtype=np.float64)
    half = steps // 2
    with np.errstate(all="ignore"):  # an infinite start or end: torch's NaN / inf (0 * inf), without a warning
        return np.where(i < half, start + i * step, end - (steps - 1 - i) * step)


def _scalar(v, name, who):
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"{who}(): {name} must be a number or a one-element tensor, got shape {v.shape}")
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
        raise TypeError(f"{who}(): {name} must be a number, got {type(v).__name__}")
    return float(v)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``steps`` evenly spaced values from start to end (both included), float32 unless ``dtype``."""
    start, end = _scalar(start, "start", "linspace"), _scalar(end, "end", "linspace")
    steps = _steps(steps, "linspace")
    dt = _np_dtype(dtype, np.float32)
    def host():
        with np.errstate(all="ignore"):  # values past the dtype's range: inf, without numpy's cast warning
            v = _linspace_values(start, end, steps)
            return v.astype(dt) if dt.kind == "f" else v.astype(np.int64).astype(dt)
    return _factory(device, (steps,), dt, host, requires_grad)


def logspace(start, end, steps, base=10.0, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``base ** linspace(start, end, steps)``."""
    start, end = _scalar(start, "start", "logspace"), _scalar(end, "end", "logspace")
    steps, base = _steps(steps, "logspace"), _scalar(base, "base", "logspace")
    dt = _np_dtype(dtype, np.float32)
    def host():
        with np.errstate(all="ignore"):  # past the dtype's range: inf, as torch's, without a warning
            return np.power(base, _linspace_values(start, end, steps)).astype(dt)
    return _factory(device, (steps,), dt, host, requires_grad)


def _indices(kind, row, col, offset, dtype, device):
    for name, v in (("row", row), ("col", col), ("offset", offset)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{kind}_indices(): {name} must be an int, got {type(v).__name__}")
    if row < 0 or col < 0:
        raise ValueError(f"{kind}_indices(): row and col must be non-negative, got {row} and {col}")
    dt = _np_dtype(dtype, np.int64)
    fn = np.tril_indices if kind == "tril" else np.triu_indices
    r, c = fn(int(row), int(offset), int(col))  # row-major order, as torch's
    data = np.stack([r, c]).astype(dt).reshape(2, -1)
    return _factory(device, data.shape, dt, lambda: data)


def tril_indices(row, col, offset=0, *, dtype=None, device=None) -> Tensor:
    return _indices("tril", row, col, offset, dtype, device)


def triu_indices(row, col, offset=0, *, dtype=None, device=None) -> Tensor:
    return _indices("triu", row, col, offset, dtype, device)


def randperm(n, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A random permutation of 0 .. n - 1 (int64 unless ``dtype``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"randperm(): n must be a non-negative int, got {n!r}")
    dt = _np_dtype(dtype, np.int64)
    gen = generator if generator is not None else _random.generator()
    return _factory(device, (int(n),), dt, lambda: gen.permutation(int(n)).astype(dt), requires_grad)


def _host(x):
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def _like(values, like: Tensor) -> Tensor:
    out = Tensor._wrap_exact(np.array(values, order="C"))  # not ascontiguousarray: it makes a 0-d draw 1-d
    return out if like.device.type == "cpu" else out.to(like.device)


def bernoulli(input, p=None, *, generator=None) -> Tensor:
    """0/1 draws (in input's dtype) with probability ``input`` (or ``p`` for every element)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"bernoulli(): argument 'input' must be a forgegrad.Tensor, got {type(input).__name__}")
    probs = _host(input) if p is None else np.full(tuple(input.shape), float(_scalar(p, "p", "bernoulli")))
    if probs.size and (np.any(probs < 0) or np.any(probs > 1) or np.any(np.isnan(probs))):
        raise ValueError("bernoulli(): probabilities must be in [0, 1]")
    gen = generator if generator is not None else _random.generator()
    dt = input.dtype if input.dtype.is_floating_point else np.float32
    from .dtypes import to_numpy
    return _like((gen.random(probs.shape) < probs).astype(to_numpy(dt)), input)


def normal(mean=0.0, std=1.0, size=None, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """torch.normal: a tensor mean and/or std (broadcast), or numbers with ``size``. Not differentiable (torch's
    gradient for its mean and std is zero)."""
    gen = generator if generator is not None else _random.generator()
    tensors = [a for a in (mean, std) if isinstance(a, Tensor)]
    if not tensors:
        if size is None:
            raise TypeError("normal(): with a number mean and std, size is required")
        shape = tuple(size) if isinstance(size, (tuple, list)) else (size,)
        m, s = _scalar(mean, "mean", "normal"), _scalar(std, "std", "normal")
        if s < 0:
            raise ValueError(f"normal(): std must be >= 0, got {s}")
        dt = _np_dtype(dtype, np.float32)
        return _factory(device, shape, dt, lambda: (m + s * gen.standard_normal(shape)).astype(dt), requires_grad)
    if size is not None:
        raise TypeError("normal(): size is only taken with number mean and std")
    m, s = _host(mean), _host(std)
    if np.any(s < 0):
        raise ValueError("normal(): std must be >= 0")
    for name, v in (("mean", mean), ("std", std)):
        if isinstance(v, Tensor) and not v.dtype.is_floating_point:
            raise TypeError(f"normal(): {name} must be a floating point tensor, got {v.dtype}")
    dt = np.result_type(*[t.numpy().dtype for t in tensors])
    shape = np.broadcast_shapes(np.shape(m), np.shape(s))
    return _like((m + s * gen.standard_normal(shape)).astype(dt), tensors[0])


def poisson(input, generator=None) -> Tensor:
    """Counts drawn from Poisson distributions of rates ``input`` (in input's dtype)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"poisson(): argument 'input' must be a forgegrad.Tensor, got {type(input).__name__}")
    rates = _host(input)
    if np.any(rates < 0) or np.any(np.isnan(rates)):
        raise ValueError("poisson(): rates must be >= 0")
    gen = generator if generator is not None else _random.generator()
    return _like(np.asarray(gen.poisson(rates)).astype(rates.dtype), input)  # a 0-d rate: numpy returns an int


def _bernoulli_(self, p=0.5, *, generator=None):
    draw = bernoulli(self, p, generator=generator) if not isinstance(p, Tensor) else bernoulli(
        p.expand(*self.shape), generator=generator)
    return self._inplace(lambda t: draw, "bernoulli_", cast=True)


def _normal_(self, mean=0.0, std=1.0, *, generator=None):
    draw = normal(float(mean), float(std), tuple(self.shape), generator=generator, dtype=self.dtype)
    return self._inplace(lambda t: draw, "normal_", cast=True)


def _uniform_(self, a=0.0, b=1.0, *, generator=None):
    gen = generator if generator is not None else _random.generator()
    draw = Tensor._wrap_exact((a + (b - a) * gen.random(tuple(self.shape))).astype(self.numpy().dtype))
    return self._inplace(lambda t: draw, "uniform_", cast=True)


FACTORIES = {f.__name__: f for f in (linspace, logspace, tril_indices, triu_indices, randperm, bernoulli, normal,
                                     poisson)}
METHODS = {"bernoulli": lambda self, p=None, *, generator=None: bernoulli(self, p, generator=generator),
           "bernoulli_": _bernoulli_, "normal_": _normal_, "uniform_": _uniform_}
