"""torch's stacking, splitting, view and difference functions (hstack, tensor_split, unflatten, rot90, diff,
repeat_interleave, trapezoid, ...) as ``forgegrad.xxx``; _torch_shape_more.py has the scatters, index_put and the
Tensor methods, and installs both (``install(globals())`` from forgegrad/__init__.py).

Each is made of registry ops (getitem, reshape, permute, cat, index_select, where, ...), so it has gradients, double
backward and ONNX export through its parts, and is exact: these functions move and combine values, they do not
approximate anything. Where torch returns views (tensor_split and its kin, swapaxes, select, ravel of a contiguous
tensor, unflatten, Tensor.unfold) these are views too: writing through one changes the input. Tensor.unfold
(ops/window.py, "tensor_unfold": a strided window view), rot90, diff, repeat_interleave and cross (ops/shape_more.py)
are registry ops; the functions here check torch's arguments and forms and call them.
"""
from __future__ import annotations

import numpy as np

from .ops._util import single_axis
from .ops.registry import _OPS
from .tensor import Tensor

_INT = (int, np.integer)


def _t(x, name, who):
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}(): argument {name!r} must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


def _int(v, name, who):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, _INT):
        raise TypeError(f"{who}(): argument {name!r} must be an int, got {type(v).__name__}")
    return int(v)


def _seq(tensors, who, name="tensors"):
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{who}(): argument {name!r} must be a tuple or list of Tensors, not {type(tensors).__name__}")
    for i, t in enumerate(tensors):
        _t(t, f"{name}[{i}]", who)
    if not tensors:
        raise ValueError(f"{who}(): argument {name!r} must be a non-empty sequence of tensors")
    return list(tensors)


def _kind(t):
    """numpy's dtype kind of a tensor ("f", "i", "u", "b")."""
    from .dtypes import to_numpy
    return np.dtype(to_numpy(t.dtype)).kind


def _refuse_computed(t, what):
    """Refuse, inside an export trace, a tensor whose values are read here and that an op of the trace computed:
    the graph would keep its values as constants. (A constant tensor, or a model input, is not detected.)"""
    from . import grad_mode
    rec = grad_mode.recorder()
    if rec is None:
        return
    if t._ctx is not None or any(o is t for r in rec.records for o in r[3]):
        raise RuntimeError(f"{what}: its values are read with numpy, and an ONNX graph would keep them as constants; "
                           "it cannot take a tensor computed inside forgegrad.autograd.trace() (export)")


def _along(d, ndim):
    return (slice(None),) * d


def _narrow(x, d, start, stop, step=None):
    return x[_along(d, x.ndim) + (slice(start, stop, step),)]


# ---- cat's aliases and the numpy-style stacks ---------------------------------------------------------------
def concat(tensors, dim=0):
    """torch.concat: cat under numpy's name."""
    return _OPS["cat"](*_seq(tensors, "concat"), dim=dim)


def concatenate(tensors, axis=0, *, dim=None):
    """torch.concatenate(tensors, axis=0): cat (``dim=`` is taken too, as torch's)."""
    return _OPS["cat"](*_seq(tensors, "concatenate"), dim=axis if dim is None else dim)


def clone(input, *, memory_format=None):
    """torch.clone: a copy with its own storage; the gradient passes through."""
    return _OPS["clone"](_t(input, "input", "clone"))


def _atleast(n, tensors, who):
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        return tuple(_atleast(n, (t,), who) for t in _seq(tensors[0], who))
    if len(tensors) != 1:
        return tuple(_atleast(n, (t,), who) for t in _seq(list(tensors), who))
    x = _t(tensors[0], "tensors", who)
    if x.ndim >= n:
        return x  # the tensor itself, as torch's
    shape = tuple(x.shape)
    if n == 1 or x.ndim == 0:
        return x.reshape((1,) * (n - x.ndim) + shape)
    if n == 2:
        return x.reshape((1,) + shape)
    return x.reshape((1,) + shape + (1,) if x.ndim == 1 else shape + (1,))  # n == 3: (n,) -> (1, n, 1)


def atleast_1d(*tensors):
    """A view with at least 1 dim (the tensor itself when it has one); several tensors or a list: a tuple."""
    return _atleast(1, tensors, "atleast_1d")


def atleast_2d(*tensors):
    """A view with at least 2 dims: 0-d -> (1, 1), (n,) -> (1, n)."""
    return _atleast(2, tensors, "atleast_2d")


def atleast_3d(*tensors):
    """A view with at least 3 dims: 0-d -> (1, 1, 1), (n,) -> (1, n, 1), (m, n) -> (m, n, 1), as numpy's."""
    return _atleast(3, tensors, "atleast_3d")


def hstack(tensors):
    """Concatenated along dim 1 (dim 0 for 1-d tensors), after atleast_1d."""
    ts = [atleast_1d(t) for t in _seq(tensors, "hstack")]
    return _OPS["cat"](*ts, dim=0 if ts[0].ndim == 1 else 1)


def vstack(tensors):
    """Concatenated along dim 0 after atleast_2d (row_stack is this)."""
    return _OPS["cat"](*[atleast_2d(t) for t in _seq(tensors, "vstack")], dim=0)


row_stack = vstack


def dstack(tensors):
    """Concatenated along dim 2 after atleast_3d."""
    return _OPS["cat"](*[atleast_3d(t) for t in _seq(tensors, "dstack")], dim=2)


def column_stack(tensors):
    """0-d and 1-d tensors as columns (n, 1), the others as they are, concatenated along dim 1."""
    ts = _seq(tensors, "column_stack")
    return _OPS["cat"](*[t.reshape(t.numel(), 1) if t.ndim <= 1 else t for t in ts], dim=1)


# ---- splits (views of the input) ----------------------------------------------------------------------------
def tensor_split(input, indices_or_sections=None, dim=0, *, sections=None, indices=None,
                 tensor_indices_or_sections=None):
    """Views of input along dim: ``sections`` (an int) pieces whose sizes differ by at most one (the first ones
    larger), or the pieces between ``indices`` (python slice rules: a negative index counts from the end, an index
    past the end is the end). A tensor argument: 0-d int is sections, 1-d int is indices."""
    _t(input, "input", "tensor_split")
    given = [v for v in (indices_or_sections, sections, indices, tensor_indices_or_sections) if v is not None]
    if len(given) != 1:
        raise TypeError("tensor_split(): pass exactly one of indices_or_sections, sections, indices or "
                        "tensor_indices_or_sections")
    arg = given[0]
    if input.ndim == 0:
        raise RuntimeError("tensor_split expected at least a 1-dimensional tensor, but got a tensor with 0 dims")
    d = single_axis(dim, input.ndim, "tensor_split(): dim")
    if isinstance(arg, Tensor):
        if _kind(arg) not in "iu":
            raise TypeError(f"tensor_split(): argument 'tensor_indices_or_sections' must be an integer tensor, got "
                            f"{arg.dtype}")
        if arg.ndim > 1:
            raise RuntimeError("tensor_split expected tensor_indices_or_sections to be a zero-dimensional or "
                               f"one-dimensional tensor, but got a tensor with {arg.ndim} dims")
        values = arg.cpu().numpy()
        arg = int(values) if arg.ndim == 0 else [int(v) for v in values]
    if isinstance(arg, _INT) and not isinstance(arg, bool):
        n = int(arg)
        if n <= 0:
            raise RuntimeError(f"tensor_split(): number of sections must be larger than 0, got {n}")
        size = input.shape[d]
        small, extra = divmod(size, n)
        bounds = np.cumsum([0] + [small + 1] * extra + [small] * (n - extra))
        return tuple(_narrow(input, d, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]))
    if not isinstance(arg, (list, tuple)) or not all(isinstance(i, _INT) and not isinstance(i, bool) for i in arg):
        raise TypeError(f"tensor_split(): argument 'indices' must be an int or a sequence of ints, got {arg!r:.60}")
    cuts = [0] + [int(i) for i in arg]
    return tuple(_narrow(input, d, a, b) for a, b in zip(cuts, cuts[1:] + [None]))


def _split_along(input, indices_or_sections, d, who):
    if isinstance(indices_or_sections, _INT) and not isinstance(indices_or_sections, bool):
        n = int(indices_or_sections)
        size = input.shape[d]
        if n <= 0 or size % n:
            raise RuntimeError(f"torch.{who} attempted to split along dimension {d}, but the size of the dimension "
                               f"{size} is not divisible by the split_size {n}!")
    return tensor_split(input, indices_or_sections, d)


def _sections(indices_or_sections, sections, indices, who):
    """numpy's (and forgegrad's) indices_or_sections, or torch's keywords sections= (an int) / indices= (a list)."""
    given = [v for v in (indices_or_sections, sections, indices) if v is not None]
    if len(given) != 1:
        raise TypeError(f"{who}() takes one of indices_or_sections, sections= (an int) or indices= (a list)")
    if sections is not None and not isinstance(sections, _INT):
        raise TypeError(f"{who}(): argument 'sections' must be an int, got {type(sections).__name__}")
    if indices is not None and isinstance(indices, _INT):
        raise TypeError(f"{who}(): argument 'indices' must be a list of ints, got an int (use sections=)")
    return given[0]


def hsplit(input, indices_or_sections=None, *, sections=None, indices=None):
    """tensor_split along dim 1 (dim 0 for a 1-d tensor); an int must divide that dim."""
    indices_or_sections = _sections(indices_or_sections, sections, indices, "hsplit")
    if _t(input, "input", "hsplit").ndim < 1:
        raise RuntimeError("torch.hsplit requires a tensor with at least 1 dimension, but got a tensor with 0 dims")
    return _split_along(input, indices_or_sections, 0 if input.ndim == 1 else 1, "hsplit")


def vsplit(input, indices_or_sections=None, *, sections=None, indices=None):
    indices_or_sections = _sections(indices_or_sections, sections, indices, "vsplit")
    if _t(input, "input", "vsplit").ndim < 2:
        raise RuntimeError(f"torch.vsplit requires a tensor with at least 2 dimension, but got a tensor with "
                           f"{input.ndim} dimensions")
    return _split_along(input, indices_or_sections, 0, "vsplit")


def dsplit(input, indices_or_sections=None, *, sections=None, indices=None):
    indices_or_sections = _sections(indices_or_sections, sections, indices, "dsplit")
    if _t(input, "input", "dsplit").ndim < 3:
        raise RuntimeError(f"torch.dsplit requires a tensor with at least 3 dimension, but got a tensor with "
                           f"{input.ndim} dimensions")
    return _split_along(input, indices_or_sections, 2, "dsplit")


def split_with_sizes(input, split_sizes, dim=0):
    """Views of the given sizes along dim (they must sum to its size)."""
    _t(input, "input", "split_with_sizes")
    if isinstance(split_sizes, _INT) or not all(isinstance(n, _INT) and not isinstance(n, bool) for n in split_sizes):
        raise TypeError(f"split_with_sizes(): argument 'split_sizes' must be a sequence of ints, got {split_sizes!r}")
    return input.split([int(n) for n in split_sizes], dim)


def unsafe_split(input, split_size, dim=0):
    """torch.unsafe_split: split (forgegrad's views are always safe to write through)."""
    return _t(input, "input", "unsafe_split").split(split_size, dim)


def unsafe_chunk(input, chunks, dim=0):
    return _t(input, "input", "unsafe_chunk").chunk(chunks, dim)


# ---- views -------------------------------------------------------------------------------------------------
def swapaxes(input, axis0, axis1):
    """transpose under numpy's name: a view."""
    return _t(input, "input", "swapaxes").transpose(axis0, axis1)


def swapdims(input, dim0, dim1):
    return _t(input, "input", "swapdims").transpose(dim0, dim1)


def ravel(input):
    """The elements as 1-d: a view of a contiguous tensor, else a copy (torch's rule)."""
    return _t(input, "input", "ravel").reshape(-1)


def unflatten(input, dim, sizes):
    """dim split into ``sizes`` (one of them may be -1): a view."""
    _t(input, "input", "unflatten")
    if input.ndim == 0:
        raise RuntimeError("unflatten: Provided input tensor must have at least one dimension (got 0)")
    d = single_axis(dim, input.ndim, "unflatten(): dim")
    if isinstance(sizes, _INT) or not isinstance(sizes, (list, tuple)) or not all(
            isinstance(s, _INT) and not isinstance(s, bool) for s in sizes):
        raise TypeError(f"unflatten(): argument 'sizes' must be a tuple of ints, got {sizes!r}")
    sizes = [int(s) for s in sizes]
    if not sizes:
        raise RuntimeError("unflatten: sizes must be non-empty")
    if sizes.count(-1) > 1 or any(s < -1 for s in sizes):
        raise RuntimeError(f"unflatten: sizes {sizes} may hold one -1 at most and no other negative size")
    n = input.shape[d]
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if known == 0 or n % known:
            raise RuntimeError(f"unflatten: Provided sizes {sizes} don't multiply up to the size of dim {d} ({n}) "
                               "in the input tensor")
        sizes[sizes.index(-1)] = n // known
    elif known != n:
        raise RuntimeError(f"unflatten: Provided sizes {sizes} don't multiply up to the size of dim {d} ({n}) in "
                           "the input tensor")
    return input.reshape(tuple(input.shape[:d]) + tuple(sizes) + tuple(input.shape[d + 1:]))


def select(input, dim, index):
    """input[..., index, ...] at dim: a view with dim removed; a negative index counts from the end."""
    _t(input, "input", "select")
    if input.ndim == 0:
        raise IndexError("select() cannot be applied to a 0-dim tensor.")
    d = single_axis(dim, input.ndim, "select(): dim")
    i, n = _int(index, "index", "select"), input.shape[d]
    if not -n <= i < n:
        raise IndexError(f"select(): index {i} out of range for tensor of size {list(input.shape)} at dimension {d}")
    return input[_along(d, input.ndim) + (i % n,)]


def unfold(input, dimension, size, step):
    """Tensor.unfold: windows of ``size`` every ``step`` along dimension, as a new last dim (a view)."""
    return _OPS["tensor_unfold"](_t(input, "input", "unfold"), dimension, size, step)


def rot90(input, k=1, dims=(0, 1)):
    """input rotated by 90 degrees k times in the plane of dims, from the first towards the second: a copy (the
    registry op "rot90", ops/shape_more.py)."""
    _t(input, "input", "rot90")
    if isinstance(dims, _INT) or not isinstance(dims, (list, tuple)):
        raise TypeError(f"rot90(): argument 'dims' must be a list of two ints, got {dims!r}")
    return _OPS["rot90"](input, k, tuple(dims))


# ---- differences, products, integrals ------------------------------------------------------------------------
def diff(input, n=1, dim=-1, prepend=None, append=None):
    """The n-th forward difference along dim (``x[i+1] - x[i]``; for bool, ``!=``), after prepend / append are
    concatenated there (same number of dims; same shape outside dim)."""
    _t(input, "input", "diff")
    n = _int(n, "n", "diff")
    if n < 0:
        raise RuntimeError(f"diff(): order must be non-negative but got {n}")
    if input.ndim == 0:
        raise RuntimeError("diff expects input to be at least one-dimensional")
    d = single_axis(dim, input.ndim, "diff(): dim")
    for name, extra in (("prepend", prepend), ("append", append)):
        if extra is not None:
            _t(extra, name, "diff")
            if extra.ndim != input.ndim:
                raise RuntimeError(f"diff expects {name} to be the same dimension as input ({input.ndim}), got "
                                   f"{extra.ndim}")
    x = input
    if prepend is not None or append is not None:
        x = _OPS["cat"](*[t for t in (prepend, input, append) if t is not None], dim=d)
    return _OPS["diff"](x, n, d)


def cross(input, other, dim=None):
    """torch.cross: linalg.cross along dim; dim=None takes input's first dim of size 3 (torch's deprecated
    default)."""
    _t(input, "input", "cross"), _t(other, "other", "cross")
    if dim is None:
        dim = next((k for k, s in enumerate(input.shape) if s == 3), None)
        if dim is None:
            raise RuntimeError(f"cross(): no dimension of size 3 in input {tuple(input.shape)}")
    return _OPS["cross"](input, other, dim)


def _spacing(y, x, dx, dim, who):
    """(y's left points, y's right points, the spacing: a tensor or a number) along dim."""
    _t(y, "y", who)
    if y.ndim == 0:
        raise IndexError(f"{who}(): y must have at least 1 dim, got 0")
    d = single_axis(dim, y.ndim, f"{who}(): dim")
    if x is not None and dx is not None:
        raise TypeError(f"{who}(): pass x or dx, not both")
    left, right = _narrow(y, d, None, -1 if y.shape[d] else 0), _narrow(y, d, 1, None)
    if x is None:
        spacing = 1.0 if dx is None else dx
        if isinstance(spacing, Tensor) or isinstance(spacing, bool) or not isinstance(spacing, (int, float, np.number)):
            raise TypeError(f"{who}(): argument 'dx' must be a number, got {type(spacing).__name__}")
        return left, right, float(spacing), d
    _t(x, "x", who)
    if x.ndim == 1:
        if x.shape[0] != y.shape[d]:
            raise RuntimeError(f"{who}(): x (size {x.shape[0]}) must have the size of y along dim {d} "
                               f"({y.shape[d]})")
        x = x.reshape(tuple(x.shape[0] if k == d else 1 for k in range(y.ndim)))
    elif x.ndim < y.ndim:
        x = x.reshape((1,) * (y.ndim - x.ndim) + tuple(x.shape))
    xd = d + x.ndim - y.ndim
    if xd < 0:
        raise RuntimeError(f"{who}(): x {tuple(x.shape)} has no dim {dim}")
    spacing = _narrow(x, xd, 1, None) - _narrow(x, xd, None, -1 if x.shape[xd] else 0)
    return left, right, spacing, d


def trapezoid(y, x=None, *, dx=None, dim=-1):
    """The trapezoid rule along dim: sum((x[i+1] - x[i]) * (y[i] + y[i+1]) / 2); spacing dx (default 1) without
    x. x: 1-d (the sample points along dim) or broadcastable with y."""
    left, right, spacing, d = _spacing(y, x, dx, dim, "trapezoid")
    return ((left + right) * spacing).sum(dim=d) * 0.5


def trapz(y, x=None, *, dx=None, dim=-1):
    """torch.trapz: trapezoid."""
    left, right, spacing, d = _spacing(y, x, dx, dim, "trapz")
    return ((left + right) * spacing).sum(dim=d) * 0.5


def cumulative_trapezoid(y, x=None, *, dx=None, dim=-1):
    """The running trapezoid rule along dim (one element fewer than y there)."""
    left, right, spacing, d = _spacing(y, x, dx, dim, "cumulative_trapezoid")
    return ((left + right) * spacing * 0.5).cumsum(dim=d)


# ---- repeats ---------------------------------------------------------------------------------------------------
def repeat_interleave(input=None, repeats=None, dim=None, *, output_size=None):
    """Each element (dim=None: of the flattened input) or slice along dim repeated ``repeats`` times in place;
    ``repeats`` an int or an int tensor (one count per slice, or one for all). ``repeat_interleave(counts)`` (or
    ``repeat_interleave(repeats=counts)``, torch's other overload) alone: arange(len(counts)) repeated by the counts."""
    from ._torch_indexing import _wrap
    if input is None and repeats is not None:  # torch's repeat_interleave(repeats) by keyword
        if dim is not None:
            raise TypeError("repeat_interleave(): repeats alone takes no dim (give input too)")
        input, repeats = repeats, None
    _t(input, "input", "repeat_interleave")
    if repeats is None:  # the tensor-only form
        if input.ndim > 1 or _kind(input) not in "iu":
            raise RuntimeError("repeat_interleave(): repeats must be a 0-d or 1-d integer tensor")
        counts = input.numpy().reshape(-1)
        if (counts < 0).any():
            raise RuntimeError("repeat_interleave(): repeats can not be negative")
        out = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
        _check_output_size(output_size, out.size)
        return _wrap(out)
    x = input.reshape(-1) if dim is None else input
    if x.ndim == 0:
        x = x.reshape(1)
    d = 0 if dim is None else single_axis(dim, x.ndim, "repeat_interleave(): dim")
    n = x.shape[d]
    if isinstance(repeats, Tensor):
        counts = repeats.cpu().numpy()
        if counts.dtype.kind not in "iu" or counts.ndim > 1:
            raise RuntimeError("repeat_interleave(): argument 'repeats' must be a 0-d or 1-d integer tensor")
        counts = counts.reshape(-1)
        if counts.size == 1 and n != 1:
            repeats = int(counts[0])
        elif counts.size != n:
            raise RuntimeError(f"repeat_interleave(): repeats must have the same size as input along dim, but got "
                               f"repeats.size(0) = {counts.size} and input.size({d}) = {n}")
        else:
            if (counts < 0).any():
                raise RuntimeError("repeat_interleave(): repeats can not be negative")
            _check_output_size(output_size, int(counts.sum()))
            _refuse_computed(repeats, "repeat_interleave with tensor repeats")
            return _OPS["repeat_interleave"](x, tuple(int(c) for c in counts), d)
    r = _int(repeats, "repeats", "repeat_interleave")
    if r < 0:
        raise RuntimeError(f"repeat_interleave(): repeats can not be negative, got {r}")
    _check_output_size(output_size, n * r)
    return _OPS["repeat_interleave"](x, r, d)


def _check_output_size(output_size, total):
    if output_size is not None and int(output_size) != total:
        raise RuntimeError(f"repeat_interleave(): Invalid output_size, expected {total} but got {output_size}")


__all__ = ["concat", "concatenate", "clone", "atleast_1d", "atleast_2d", "atleast_3d", "hstack", "vstack",
           "row_stack", "dstack", "column_stack", "tensor_split", "hsplit", "vsplit", "dsplit", "split_with_sizes",
           "unsafe_split", "unsafe_chunk", "swapaxes", "swapdims", "ravel", "unflatten", "select", "rot90", "diff",
           "cross", "trapezoid", "trapz", "cumulative_trapezoid", "repeat_interleave"]
