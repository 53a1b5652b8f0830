"""torch's module-level functions (``torch.flatten(x, 1)``, ``torch.max(x, 1)``, ``torch.randn_like``,
``torch.from_numpy`` ...): each is the Tensor method of the same name, or a factory over forgegrad's
generator, so there is one implementation of each op."""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from . import dtypes as _dtypes
from . import random as _random
from . import devices as _devices
from .factories import _NO_FILL, _factory, _shape, tensor
from .tensor import Tensor

__all__ = ["flatten", "reshape", "squeeze", "unsqueeze", "transpose", "permute", "exp", "log", "sqrt", "abs",
           "sin", "cos", "tril", "triu",
           "sigmoid", "tanh", "relu", "softmax", "log_softmax", "clamp", "clip", "sum", "mean", "var", "std", "max",
           "min", "amax", "amin", "argmax", "argmin", "matmul", "mm", "bmm", "split", "chunk", "unbind", "narrow",
           "numel", "is_tensor", "is_floating_point", "from_numpy", "randn_like", "rand_like", "randint_like",
           "full_like", "empty_like", "multinomial", "LongTensor", "FloatTensor", "DoubleTensor", "IntTensor",
           "BoolTensor", "ByteTensor", "zeros_like", "ones_like", "randint", "add", "sub", "mul", "div", "pow",
           "neg", "t", "allclose", "equal", "maximum", "minimum", "fmax", "fmin", "tile", "norm"]


def _method(name, doc=None):
    def fn(input, *args, **kwargs):
        if "out" in kwargs:
            raise TypeError(f"{name}(): forgegrad has no out= (results are new tensors): write y = torch.{name}(...) "
                            f"or, into an existing tensor, y.copy_(torch.{name}(...))")
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}(): argument 'input' must be a forgegrad.Tensor, got {type(input).__name__}")
        return getattr(input, name)(*args, **kwargs)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc or f"torch.{name}(input, ...): the same as ``input.{name}(...)``."
    return fn


flatten = _method("flatten")
reshape = _method("reshape")
squeeze = _method("squeeze")
unsqueeze = _method("unsqueeze")
transpose = _method("transpose")
permute = _method("permute")
exp = _method("exp")
log = _method("log")
sqrt = _method("sqrt")
sin = _method("sin")
cos = _method("cos")
abs = _method("abs")  # noqa: A001
sigmoid = _method("sigmoid")
tanh = _method("tanh")
relu = _method("relu")
softmax = _method("softmax")
log_softmax = _method("log_softmax")
clamp = _method("clamp")
clip = _method("clip")
sum = _method("sum")  # noqa: A001
mean = _method("mean")
var = _method("var")
std = _method("std")
max = _method("max")  # noqa: A001
min = _method("min")  # noqa: A001
amax = _method("amax")
cumsum = _method("cumsum")
amin = _method("amin")
argmax = _method("argmax")
argmin = _method("argmin")
matmul = _method("matmul")
split = _method("split")
chunk = _method("chunk")
unbind = _method("unbind")
narrow = _method("narrow")
numel = _method("numel")
is_floating_point = _method("is_floating_point")
add = _method("add")
sub = _method("sub")
mul = _method("mul")
div = _method("div")
pow = _method("pow")  # noqa: A001
neg = _method("neg")
maximum = _method("maximum")
minimum = _method("minimum")
fmax = _method("fmax")
fmin = _method("fmin")
tile = _method("tile")
norm = _method("norm", "torch.norm(input, p='fro', dim=None, keepdim=False): the same as "
                       "``input.norm(p, dim, keepdim)`` (vector p-norms; 'fro' is the 2-norm)")
t = _method("t")
mm = bmm = matmul


def _triangle(name, keep):
    def fn(input, diagonal: int = 0) -> Tensor:
        """torch.NAME(input, diagonal=0): the elements on and below (tril) / above (triu) the diagonal of the
        last two axes, the others zero (a mask multiply, so gradients flow to the kept elements)."""
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}(): argument 'input' must be a forgegrad.Tensor, got {type(input).__name__}")
        if input.ndim < 2:
            raise RuntimeError(f"{name}: input tensor must have at least 2 dimensions, got {input.ndim}")
        if not isinstance(diagonal, int) or isinstance(diagonal, bool):
            raise TypeError(f"{name}(): argument 'diagonal' must be an int, got {type(diagonal).__name__}")
        rows, cols = input.shape[-2:]
        mask = keep(np.ones((rows, cols), dtype=bool), diagonal)
        if not input.requires_grad:
            return Tensor._wrap_exact(np.where(mask, input.numpy(), np.zeros((), input.numpy().dtype)))
        return input * Tensor._wrap_exact(mask.astype(input.numpy().dtype))
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = fn.__doc__.replace("NAME", name)
    return fn


tril = _triangle("tril", np.tril)
triu = _triangle("triu", np.triu)


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def from_numpy(ndarray: np.ndarray) -> Tensor:
    """A tensor sharing ``ndarray``'s memory, keeping its dtype (float64 stays float64)."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"from_numpy: expected np.ndarray, got {type(ndarray).__name__}")
    if ndarray.dtype not in _dtypes._BY_NUMPY:  # the tensor would share memory it cannot describe
        supported = ", ".join(str(d) for d in _dtypes._BY_NUMPY)
        raise TypeError(f"from_numpy: forgegrad has no tensor dtype for numpy {ndarray.dtype} (supported: "
                        f"{supported}); convert the array first, e.g. ndarray.astype(np.int64)")
    return Tensor(ndarray, dtype=ndarray.dtype)


def _like(t, dtype, device):
    """shape, dtype and device of a tensor like ``t`` (its dtype and device unless given)."""
    # (a vmap-batched t has no storage of its own: its batch's, forgegrad.func._batched)
    dt = getattr(t, "_phys", t)._data.dtype if dtype is None else _dtypes.to_numpy(dtype)
    return tuple(t.shape), dt, t.device.type if device is None else device


def zeros_like(input, dtype=None, requires_grad=False, device=None) -> Tensor:
    shape, dt, dev = _like(input, dtype, device)
    return _factory(dev, shape, dt, lambda: np.zeros(shape, dt), requires_grad, fill=0)


def ones_like(input, dtype=None, requires_grad=False, device=None) -> Tensor:
    shape, dt, dev = _like(input, dtype, device)
    return _factory(dev, shape, dt, lambda: np.ones(shape, dt), requires_grad, fill=1)


def empty_like(input, dtype=None, requires_grad=False, device=None) -> Tensor:
    shape, dt, dev = _like(input, dtype, device)
    return _factory(dev, shape, dt, lambda: np.empty(shape, dt), requires_grad, fill=None)


def full_like(input, fill_value, dtype=None, requires_grad=False, device=None) -> Tensor:
    shape, dt, dev = _like(input, dtype, device)
    return _factory(dev, shape, dt, lambda: np.full(shape, fill_value, dt), requires_grad, fill=fill_value)


# While forgegrad.onnx.export traces and verifies a model, sampling (randn_like, rand_like) gives the
# distribution's mean, computed from the input (recorded, so the graph follows its shape): the export is
# deterministic and its verification meaningful; a VAE exports decoding z = mu. (ONNX's
# RandomNormalLike could not be verified against forgegrad's own draws.)
_sampling = threading.local()


@contextlib.contextmanager
def sampling_at_mean():
    prev = getattr(_sampling, "mean", False)
    _sampling.mean = True
    try:
        yield
    finally:
        _sampling.mean = prev


def _float_like(input, dtype, draw, requires_grad, device, mean=0.0):
    if getattr(_sampling, "mean", False):
        out = input * 0.0 + mean if mean else input * 0.0
        return out if dtype is None else out.to(dtype)
    shape, dt, dev = _like(input, dtype, device)
    if dt.kind == "c":  # complex: as randn / rand (forgegrad.factories)
        from .factories import _complex_draw
        scale = np.sqrt(0.5) if mean == 0.0 else 1.0
        return _factory(dev, shape, dt, lambda: _complex_draw(draw, shape, dt, scale), requires_grad)
    if not _dtypes.is_floating(dt):
        raise TypeError(f"expected a floating point dtype, got {_dtypes.of(dt)}")
    # drawn on the host on every device (a device gets the CPU's numbers), in the dtype itself when
    # numpy can (float32, float64: a float64 tensor gets float64 draws)
    native = dt if dt in (np.float32, np.float64) else np.dtype(np.float32)
    return _factory(dev, shape, dt, lambda: draw(shape, native).astype(dt, copy=False), requires_grad)


def randn_like(input, dtype=None, requires_grad=False, device=None, *, generator=None) -> Tensor:
    gen = _random.resolve(generator, "randn_like")
    return _float_like(input, dtype, lambda s, dt: gen.standard_normal(s, dtype=dt), requires_grad, device)


def rand_like(input, dtype=None, requires_grad=False, device=None, *, generator=None) -> Tensor:
    gen = _random.resolve(generator, "rand_like")
    return _float_like(input, dtype, lambda s, dt: gen.random(s, dtype=dt), requires_grad, device, mean=0.5)


def randint(low=None, high=None, size=None, *, dtype=None, requires_grad=False, device=None,
            generator=None) -> Tensor:
    """randint(high, size) or randint(low, high, size): int64 values in [low, high) (torch's signatures; by keyword
    too: ``randint(low=0, high=5, size=(3,))``, ``randint(high=5, size=(3,))``)."""
    if size is None and low is not None and high is not None:  # randint(high, size), positionally
        low, high, size = 0, low, high
    elif high is None and low is not None:  # randint(high, size=...)
        low, high = 0, low
    elif low is None:  # randint(high=..., size=...)
        low = 0
    if high is None or size is None:
        raise TypeError("randint() takes (high, size) or (low, high, size)")
    if isinstance(size, (int, np.integer)):
        raise TypeError(f"randint(): size must be a tuple of ints, got {size!r} (write ({size},))")
    if high <= low:
        raise RuntimeError(f"randint(): random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    dt = np.dtype(np.int64) if dtype is None else _dtypes.to_numpy(dtype)
    shape, gen = _shape((size,)), _random.resolve(generator, "randint")
    return _factory(device, shape, dt,
                    lambda: gen.integers(low, high, size=shape, dtype=np.int64).astype(dt, copy=False),
                    requires_grad, fill=_NO_FILL)


def randint_like(input, low=0, high=None, dtype=None, device=None, requires_grad=False, *, generator=None) -> Tensor:
    if high is None:
        low, high = 0, low
    return randint(low, high, tuple(input.shape), dtype=input.dtype if dtype is None else dtype,
                   device=input.device.type if device is None else device, requires_grad=requires_grad,
                   generator=generator)


def multinomial(input, num_samples: int, replacement: bool = False, generator=None) -> Tensor:
    """Indices drawn from the categorical distribution(s) in the rows of ``input`` (non-negative
    weights, not necessarily summing to one), as torch.multinomial; int64."""
    if isinstance(input, Tensor) and not input.dtype.is_floating_point:
        raise TypeError(f"multinomial: input must be a floating-point tensor of weights, got {input.dtype}")
    if isinstance(num_samples, (bool, np.bool_)) or not isinstance(num_samples, (int, np.integer)):
        raise TypeError(f"multinomial: num_samples must be an int, got {type(num_samples).__name__}")
    from ._validate import check_bool
    replacement = check_bool(replacement, "multinomial: replacement")
    if num_samples <= 0:
        raise RuntimeError(f"multinomial: cannot sample num_samples <= 0 samples, got {num_samples}")
    w = np.asarray(_host(input), dtype=np.float64)
    if w.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got {w.ndim}")
    rows = w.reshape(-1, w.shape[-1])
    if (rows < 0).any() or not np.isfinite(rows).all():
        raise RuntimeError("multinomial: probability tensor contains either inf, nan or element < 0")
    if not replacement and num_samples > rows.shape[1]:
        raise RuntimeError(f"multinomial: cannot sample n_sample > prob_dist.size(-1) ({rows.shape[1]}) samples "
                           "without replacement")
    gen = _random.resolve(generator, "multinomial")
    out = np.empty((rows.shape[0], num_samples), np.int64)
    for i, r in enumerate(rows):
        total = r.sum()
        if total <= 0:
            raise RuntimeError("multinomial: invalid multinomial distribution (sum of probabilities <= 0)")
        nonzero = np.flatnonzero(r)
        if not replacement and nonzero.size < num_samples:
            # torch (CPU, 2.13) then draws every weighted category first and fills up with zero-weight ones
            picked = gen.choice(nonzero, size=nonzero.size, replace=False, p=r[nonzero] / total)
            rest = gen.permutation(np.flatnonzero(r == 0))[:num_samples - nonzero.size]
            out[i] = np.concatenate([picked, rest])
            continue
        out[i] = gen.choice(r.size, size=num_samples, replace=replacement, p=r / total)
    out = Tensor._stored(out.reshape(w.shape[:-1] + (num_samples,)))
    return out.to(input.device) if isinstance(input, Tensor) else out


def _typed(name, np_dtype):
    def make(*args):
        """Legacy constructor: ``LongTensor([1, 2])`` (data) or ``LongTensor(2, 3)`` (uninitialised shape)."""
        if len(args) == 1 and not isinstance(args[0], (int, np.integer)):
            return tensor(np.asarray(args[0].numpy() if isinstance(args[0], Tensor) else args[0]), dtype=np_dtype)
        return Tensor._stored(np.zeros(_shape(args), np_dtype))
    make.__name__ = make.__qualname__ = name
    return make


LongTensor = _typed("LongTensor", np.int64)
FloatTensor = _typed("FloatTensor", np.float32)
DoubleTensor = _typed("DoubleTensor", np.float64)
IntTensor = _typed("IntTensor", np.int32)
BoolTensor = _typed("BoolTensor", np.bool_)
ByteTensor = _typed("ByteTensor", np.uint8)


def _host(x):
    """Values for a host-side comparison: a tensor's from any device."""
    return _devices.to_host(x._data) if isinstance(x, Tensor) and _devices.has_data(x._data) else np.asarray(x)


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    return bool(np.allclose(_host(input), _host(other), rtol=rtol, atol=atol, equal_nan=equal_nan))


def equal(input, other) -> bool:
    return tuple(input.shape) == tuple(other.shape) and bool(np.array_equal(_host(input), _host(other)))
