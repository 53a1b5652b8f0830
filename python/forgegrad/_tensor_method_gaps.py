"""Tensor methods (and their package functions) that torch scripts call and forgegrad lacked: ``in`` and
``reversed()``, addr / addr_, cumsum_, frexp, nextafter / nextafter_, hardshrink, prelu, multinomial, the in-place
samplers exponential_ / geometric_ / cauchy_ / log_normal_ / random_, the in-place metadata changes squeeze_ /
unsqueeze_ / t_ / transpose_ / swapaxes_ / swapdims_, narrow_copy, the legacy constructor ``new`` and
share_memory_. ``install()`` adds each one Tensor (or the package) does not have yet."""
from __future__ import annotations

import builtins
import numbers

import numpy as np

from . import devices as _devices
from . import grad_mode, return_types
from . import random as _random
from ._inplace import LEAF_MESSAGE, VIEW_OF_LEAF_MESSAGE, _views_a_leaf
from . import _version_counter as _vc
from .autograd import Function, _note_rebind
from .tensor import Tensor

__all__ = ["addr", "frexp", "nextafter", "narrow_copy", "METHODS", "FUNCTIONS", "install"]

_NUMBER = (builtins.bool, builtins.int, builtins.float, np.number, np.bool_)


def _host(t: Tensor) -> np.ndarray:
    return np.asarray(t.detach().cpu().numpy())


def _meta(shape, dtype) -> Tensor:
    """A meta tensor (no values) of this shape and dtype: the result of a value-computing function of meta tensors."""
    from .factories import empty
    return empty(tuple(shape), dtype=dtype, device="meta")


def _like(arr: np.ndarray, t: Tensor) -> Tensor:
    """``arr`` as a tensor on ``t``'s device."""
    out = Tensor(np.ascontiguousarray(arr), dtype=arr.dtype)
    return out if t.device.type == "cpu" else out.to(t.device)


# ---- containment and reversal ----------------------------------------------------------------------------------
def __contains__(self, element) -> bool:
    """``element in t``: whether any element of t equals element (a number or a tensor, broadcast), as torch."""
    if not isinstance(element, (Tensor,) + _NUMBER):
        raise RuntimeError(f"Tensor.__contains__ only supports Tensor or scalar, but you passed in a "
                           f"{type(element)}.")
    return builtins.bool((self == element).any().item())


def __reversed__(self) -> Tensor:
    """``reversed(t)``: t flipped along dim 0 (a 0-d tensor is returned as is), as torch."""
    return self if self.ndim == 0 else self.flip(0)


# ---- addr ------------------------------------------------------------------------------------------------------
def addr(input, vec1, vec2, *, beta=1, alpha=1) -> Tensor:
    """torch.addr: ``beta * input + alpha * outer(vec1, vec2)``; with beta=0 input is ignored (its nan and inf do
    not propagate), as torch."""
    for name, v in (("input", input), ("vec1", vec1), ("vec2", vec2)):
        if not isinstance(v, Tensor):
            raise TypeError(f"addr(): argument {name!r} must be Tensor, not {type(v).__name__}")
    for name, v in (("vec1", vec1), ("vec2", vec2)):
        if v.ndim != 1:
            raise RuntimeError(f"addr: Expected 1-D argument {name}, but got {v.ndim}-D")
    for name, v in (("beta", beta), ("alpha", alpha)):
        if not isinstance(v, _NUMBER):
            raise TypeError(f"addr(): argument {name!r} must be Number, not {type(v).__name__}")
        integral = not any(t.dtype.is_floating_point or t.is_complex() for t in (input, vec1, vec2))
        if integral and isinstance(v, (builtins.float, np.floating)):
            raise RuntimeError(f"For integral input tensors, argument {name} must not be a floating point number.")
    prod = vec1.outer(vec2)
    prod = prod if alpha == 1 else prod * alpha
    if beta == 0:  # input's values are not read; its gradient is zeros, as torch's
        from ._torch_namespace_gaps import fill
        return prod + fill(input, 0)
    return prod + (input if beta == 1 else input * beta)


def _addr_method(self, vec1, vec2, *, beta=1, alpha=1) -> Tensor:
    return addr(self, vec1, vec2, beta=beta, alpha=alpha)


def addr_(self, vec1, vec2, *, beta=1, alpha=1) -> Tensor:
    """In-place addr (Tensor.addr_ of torch)."""
    return self._inplace(lambda t, a, b: addr(t, a, b, beta=beta, alpha=alpha), "addr_", vec1, vec2)


def cumsum_(self, dim, dtype=None) -> Tensor:
    """In-place cumsum along dim (Tensor.cumsum_ of torch)."""
    return self._inplace(lambda t: t.cumsum(dim, dtype=dtype), "cumsum_", cast=dtype is not None)


# ---- frexp and nextafter ---------------------------------------------------------------------------------------
class _FrexpMantissa(Function):
    """frexp's mantissa; its gradient is grad * 2^-exponent (torch's), exact (a power-of-two scaling)."""
    exact_dtype = True
    handles_float64 = True

    @staticmethod
    def forward(ctx, x):
        m, e = np.frexp(x)
        ctx.exponent = e
        return m.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        return np.ldexp(g, -ctx.exponent).astype(g.dtype, copy=False)


def frexp(input) -> "return_types.frexp":
    """torch.frexp: (mantissa, exponent) with input = mantissa * 2^exponent, |mantissa| in [0.5, 1) (0, inf and
    nan give themselves and exponent 0); exponent is int32. Differentiable in the mantissa."""
    if not isinstance(input, Tensor):
        raise TypeError(f"frexp(): argument 'input' (position 1) must be Tensor, not {type(input).__name__}")
    if not input.dtype.is_floating_point:
        raise RuntimeError(f"torch.frexp() only supports floating-point dtypes (argument 'input' is {input.dtype})")
    if not _devices.has_data(input._data):
        return return_types.frexp(_meta(input.shape, input.dtype), _meta(input.shape, np.int32))
    x = _host(input)
    exponent = _like(np.frexp(x)[1].astype(np.int32), input)
    if input.requires_grad and grad_mode.records_graph():
        mantissa = _FrexpMantissa.apply(input)
    else:
        mantissa = _like(np.frexp(x)[0].astype(x.dtype, copy=False), input)
    return return_types.frexp(mantissa, exponent)


class _Nextafter(Function):
    """nextafter's gradient as torch 2.13's: the incoming gradient to input (the step is one ulp), zero to other."""
    exact_dtype = True
    handles_float64 = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        dt = np.result_type(a, b)
        return np.nextafter(a.astype(dt, copy=False), b.astype(dt, copy=False))

    @staticmethod
    def backward(ctx, g):
        from .ops._util import unbroadcast
        return unbroadcast(g, ctx.shapes[0]), np.zeros(ctx.shapes[1], g.dtype)


def nextafter(input, other) -> Tensor:
    """torch.nextafter: the next floating-point value after input towards other, elementwise (broadcast, the
    promoted floating dtype); gradient 1 to input and 0 to other, as torch."""
    for name, v in (("input", input), ("other", other)):
        if not isinstance(v, Tensor):
            raise TypeError(f"nextafter(): argument {name!r} must be Tensor, not {type(v).__name__}")
    dt = np.result_type(input._data.dtype, other._data.dtype)
    if dt.kind != "f":
        raise NotImplementedError(f"nextafter: not implemented for {input.dtype} and {other.dtype} (arguments "
                                  "'input' and 'other' must be floating point)")
    if not (_devices.has_data(input._data) and _devices.has_data(other._data)):
        return _meta(np.broadcast_shapes(tuple(input.shape), tuple(other.shape)), dt)
    if grad_mode.records_graph() and (input.requires_grad or other.requires_grad):
        return _Nextafter.apply(input, other)
    a, b = _host(input), _host(other)
    return _like(np.nextafter(a.astype(dt, copy=False), b.astype(dt, copy=False)), input)


def nextafter_(self, other) -> Tensor:
    """In-place nextafter (Tensor.nextafter_ of torch)."""
    return self._inplace(lambda t, o: nextafter(t, o), "nextafter_", other)


def narrow_copy(input, dim, start, length) -> Tensor:
    """torch.narrow_copy: narrow(input, dim, start, length) as a new tensor (a copy, not a view)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"narrow_copy(): argument 'input' must be Tensor, not {type(input).__name__}")
    return input.narrow(dim, start, length).clone()


def hardshrink(self, lambd=0.5) -> Tensor:
    from .nn import functional as F
    return F.hardshrink(self, lambd)


def prelu(self, weight) -> Tensor:
    from .nn import functional as F
    return F.prelu(self, weight)


def multinomial(self, num_samples, replacement=False, *, generator=None) -> Tensor:
    from ._functions import multinomial as _multinomial
    return _multinomial(self, num_samples, replacement, generator=generator)


# ---- in-place samplers -----------------------------------------------------------------------------------------
def _real(v, name: str, who: str) -> float:
    if isinstance(v, Tensor):
        v = v.item()
    if isinstance(v, (builtins.bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{who}(): argument {name!r} must be float, not {type(v).__name__}")
    return builtins.float(v)


def _write_draw(self, values: np.ndarray, name: str) -> Tensor:
    """Write the drawn ``values`` (self's shape) into self through forgegrad._inplace (version counter, the leaf
    refusal, views)."""
    values = values.astype(self._data.dtype, copy=False)
    return self._inplace(lambda t: _like(values, t), name)


def _continuous(self, name: str, dist: str) -> None:
    if not self.dtype.is_floating_point:
        raise RuntimeError(f"{dist} distribution is a continuous probability distribution. dtype must be a floating "
                           f"point but you specified {self.dtype}")


def exponential_(self, lambd=1.0, *, generator=None) -> Tensor:
    """In place, draws from Exp(lambd) (density lambd * exp(-lambd x)) with forgegrad's generator."""
    lambd = _real(lambd, "lambd", "exponential_")
    if not lambd > 0:
        raise RuntimeError(f"exponential_ expects lambda > 0.0, but found lambda={lambd:g}")
    _continuous(self, "exponential_", "Exponential")
    g = _random.resolve(generator, "exponential_")
    return _write_draw(self, g.exponential(1.0 / lambd, size=self.shape), "exponential_")


def geometric_(self, p, *, generator=None) -> Tensor:
    """In place, draws from the geometric distribution on {1, 2, ...} (trials to the first success, success
    probability p); any dtype, as torch."""
    p = _real(p, "p", "geometric_")
    if not 0 < p < 1:
        raise RuntimeError(f"geometric_ expects p to be in (0, 1), but got p={p:g}")
    g = _random.resolve(generator, "geometric_")
    return _write_draw(self, g.geometric(p, size=self.shape), "geometric_")


def cauchy_(self, median=0.0, sigma=1.0, *, generator=None) -> Tensor:
    """In place, draws from the Cauchy distribution (location median, scale sigma)."""
    median, sigma = _real(median, "median", "cauchy_"), _real(sigma, "sigma", "cauchy_")
    if not sigma > 0:
        raise RuntimeError(f"cauchy_ expects sigma > 0.0, but found sigma={sigma:g}")
    _continuous(self, "cauchy_", "Cauchy")
    g = _random.resolve(generator, "cauchy_")
    return _write_draw(self, median + sigma * g.standard_cauchy(size=self.shape), "cauchy_")


def log_normal_(self, mean=1.0, std=2.0, *, generator=None) -> Tensor:
    """In place, draws from the log-normal distribution whose logarithm is N(mean, std^2)."""
    mean, std = _real(mean, "mean", "log_normal_"), _real(std, "std", "log_normal_")
    if not std > 0:
        raise RuntimeError(f"log_normal_ expects std > 0.0, but found std={std:g}")
    _continuous(self, "log_normal_", "LogNormal")
    g = _random.resolve(generator, "log_normal_")
    return _write_draw(self, g.lognormal(mean, std, size=self.shape), "log_normal_")


def _default_to(dt: np.dtype) -> int:
    """random_'s exclusive upper bound without ``to``: every integer the dtype holds exactly, as torch."""
    if dt == np.bool_:
        return 2
    if dt.kind == "f":
        return 2 ** (np.finfo(dt).nmant + 1) + 1  # [0, 2^significand bits] (float32: 2^24)
    return builtins.int(np.iinfo(dt).max) + 1


def random_(self, from_=None, to=None, *, generator=None, **kwargs) -> Tensor:
    """In place, integers drawn uniformly: ``random_()`` from [0, the largest integer the dtype holds exactly],
    ``random_(to)`` from [0, to), ``random_(from, to)`` from [from, to) (``from``, a Python keyword, is taken by
    keyword through ``**{"from": ...}`` or as ``from_``), as torch."""
    if "from" in kwargs:
        if from_ is not None:
            raise TypeError("random_() got multiple values for argument 'from'")
        from_ = kwargs.pop("from")
        given = {"from": from_, "to": to}
    elif from_ is not None and to is None:
        given = {"to": from_}  # random_(to)
    else:
        given = {"from": 0 if from_ is None else from_, "to": to}
    if kwargs:
        raise TypeError(f"random_() got unexpected keyword arguments {sorted(kwargs)}")
    dt = np.dtype(self._data.dtype)
    lo = given.get("from", 0)
    hi = given.get("to")
    for name, v in (("from", lo), ("to", hi)):
        if v is not None and (isinstance(v, (builtins.bool, np.bool_)) or not isinstance(v, (builtins.int,
                                                                                                np.integer))):
            raise TypeError(f"random_(): argument {name!r} must be int, not {type(v).__name__}")
    lo = builtins.int(lo)
    hi = _default_to(dt) if hi is None else builtins.int(hi)
    if lo >= hi:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={lo} >= to={hi}")
    if dt.kind in "iub" and (lo < (0 if dt.kind == "b" else np.iinfo(dt).min) or hi - 1 > _default_to(dt) - 1):
        raise RuntimeError(f"random_: from={lo} and to={hi} are out of the range of {self.dtype}")
    g = _random.resolve(generator, "random_")
    return _write_draw(self, g.integers(lo, hi, size=self.shape, dtype=np.int64), "random_")


# ---- in-place metadata changes ---------------------------------------------------------------------------------
def _metadata_inplace(self, name: str, view) -> Tensor:
    """Make ``self`` the view ``view(self)`` in place (its shape or strides change, not its values), as torch's
    squeeze_ / transpose_: one write counted in the version; a leaf that requires grad refuses; a graph tensor is
    rebound to the view's node (the ops that used it before keep its old shape)."""
    if grad_mode.recorder() is not None:  # an export names tensors by identity: the change would be lost
        raise RuntimeError(f"{name} (on a tensor of shape {tuple(self.shape)}) ran inside "
                           "forgegrad.autograd.trace(): in-place view changes are not recorded, so an export would "
                           f"leave it out. Use the out-of-place {name.rstrip('_')} instead")
    tracking = grad_mode.records_graph() and self.requires_grad
    if tracking and self._ctx is None:
        raise RuntimeError(LEAF_MESSAGE)
    if tracking and _views_a_leaf(self):
        raise RuntimeError(VIEW_OF_LEAF_MESSAGE)
    if not tracking:
        with grad_mode.no_grad():
            out = view(self)
        _vc.bump(self)
        self._data = out._data  # a numpy view of the same storage: the version counter is shared
        return self
    old = Tensor._wrap_exact(self._data)
    old._ctx, old._out_index, old.requires_grad = self._ctx, self._out_index, self.requires_grad
    out = view(old)
    _vc.bump(self)
    self._data = out._data
    self._ctx, self._out_index = out._ctx, out._out_index
    _note_rebind(self, old)  # the ops that used self before keep using it as it was (old)
    if self._ctx is not None:
        self._ctx.rebound_from = old
    return self


def squeeze_(self, dim=None) -> Tensor:
    """In place, the dims of size 1 (all, or those of ``dim``) removed."""
    return _metadata_inplace(self, "squeeze_", lambda t: t.squeeze(dim))


def unsqueeze_(self, dim) -> Tensor:
    """In place, a dim of size 1 inserted at ``dim``."""
    return _metadata_inplace(self, "unsqueeze_", lambda t: t.unsqueeze(dim))


def transpose_(self, dim0, dim1) -> Tensor:
    """In place, dims dim0 and dim1 swapped."""
    return _metadata_inplace(self, "transpose_", lambda t: t.transpose(dim0, dim1))


def swapaxes_(self, axis0, axis1) -> Tensor:
    return _metadata_inplace(self, "swapaxes_", lambda t: t.transpose(axis0, axis1))


def swapdims_(self, dim0, dim1) -> Tensor:
    return _metadata_inplace(self, "swapdims_", lambda t: t.transpose(dim0, dim1))


def t_(self) -> Tensor:
    """In place, a matrix transposed (a tensor of fewer than 2 dims is left as is)."""
    if self.ndim > 2:
        raise RuntimeError(f"t_() expects a tensor with <= 2 dimensions, but self is {self.ndim}D")
    return _metadata_inplace(self, "t_", lambda t: t.t())


# ---- legacy constructor and shared memory ----------------------------------------------------------------------
def new(self, *args, device=None) -> Tensor:
    """The legacy constructor: ``t.new()`` (empty), ``t.new(2, 3)`` / ``t.new(size)`` (uninitialised), or
    ``t.new(data)`` (a list, tuple or array: a copy), in t's dtype and on t's device (a tensor of another dtype
    as ``data`` refuses, as torch)."""
    if not args:
        return self.new_empty((0,), device=device)
    if builtins.all(isinstance(a, (builtins.int, np.integer)) and not isinstance(a, builtins.bool) for a in args):
        return self.new_empty(tuple(builtins.int(a) for a in args), device=device)
    if len(args) == 1 and isinstance(args[0], Tensor):
        if args[0].dtype != self.dtype:
            raise TypeError(f"new(): expected a tensor of dtype {self.dtype} (argument 'data'), got {args[0].dtype}")
        return args[0] if device is None else args[0].to(device)
    if len(args) == 1 and type(args[0]).__name__ == "Size":
        return self.new_empty(tuple(args[0]), device=device)
    if len(args) == 1 and isinstance(args[0], (list, tuple, np.ndarray)):
        return self.new_tensor(args[0], device=device)
    raise TypeError(f"new(): expected ints (a size), a Size, or a list / tuple / array of data, got "
                    f"{tuple(type(a).__name__ for a in args)}")


def share_memory_(self) -> Tensor:
    """Returns self: a CPU tensor's storage is already shareable with forked workers (torch moves it to shared
    memory for torch.multiprocessing; forgegrad's DataLoader workers receive tensors by pickling)."""
    return self


METHODS = {f.__name__: f for f in (
    __contains__, __reversed__, addr_, cumsum_, nextafter_, hardshrink, prelu, multinomial, exponential_,
    geometric_, cauchy_, log_normal_, random_, squeeze_, unsqueeze_, t_, transpose_, swapaxes_, swapdims_, new,
    share_memory_)}
METHODS.update(addr=_addr_method, frexp=frexp, nextafter=nextafter, narrow_copy=narrow_copy)
FUNCTIONS = {f.__name__: f for f in (addr, frexp, nextafter, narrow_copy)}


def install(package_namespace: dict, tensor_class) -> None:
    for name, fn in METHODS.items():
        if name not in tensor_class.__dict__ and not hasattr(tensor_class, name):
            setattr(tensor_class, name, fn)
    for name, fn in FUNCTIONS.items():
        package_namespace.setdefault(name, fn)
