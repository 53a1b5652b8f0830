"""torch's scatter-into-a-copy functions (select_scatter, slice_scatter, diagonal_scatter, index_put, put), the
small constructions (block_diag, cartesian_prod, combinations, vander, diagflat), addcmul / addcdiv, dist,
renorm, sum_to_size, fill_diagonal_, and the Tensor methods and properties of both _torch_shape modules.

The scatters place values with one ``where`` over a mask of the written positions and one ``index_select`` of the
source (both registry ops): exact, differentiable in the input (zero where written) and the source. With
repeated indices, index_put / put without accumulate write the last value, and only that value gets a gradient
(torch gives every repeat one, and leaves which value is written unspecified).
"""
from __future__ import annotations

import itertools

import numpy as np

from . import _torch_shape as _ts
from ._torch_shape import _INT, _int, _kind, _refuse_computed, _seq, _t
from .ops._util import single_axis
from .ops.registry import _OPS
from .tensor import Tensor


def _wrap(arr):
    from ._torch_indexing import _wrap as wrap
    return wrap(arr)


def _place(base, src, d, positions):
    """A copy of ``base`` whose entries ``positions`` (distinct ints) along dim d hold src's slices in order (src
    has base's shape but len(positions) along d)."""
    n = base.shape[d]
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    if src.dtype != base.dtype:
        src = src.to(base.dtype)
    if positions.size == 0:
        return _OPS["clone"](base)
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    inv = np.zeros(n, dtype=np.int64)
    inv[positions] = np.arange(positions.size)
    spread = _OPS["index_select"](src, d, _wrap(inv))
    mask = mask.reshape((n,) + (1,) * (base.ndim - d - 1))
    return _OPS["where"](mask, spread, base)


def _check_src(src, want, who):
    if tuple(src.shape) != tuple(want):
        raise RuntimeError(f"{who}(): expected src to have a size equal to the slice of self. src size = "
                           f"{list(src.shape)}, slice size = {list(want)}")


def select_scatter(input, src, dim, index):
    """A copy of input with ``input.select(dim, index)`` replaced by src."""
    _t(input, "input", "select_scatter"), _t(src, "src", "select_scatter")
    view = _ts.select(input, dim, index)
    _check_src(src, view.shape, "select_scatter")
    d = single_axis(dim, input.ndim)
    return _place(input, src.unsqueeze(d), d, [int(index) % input.shape[d]])


def slice_scatter(input, src, dim=0, start=None, end=None, step=1):
    """A copy of input with ``input[start:end:step]`` along dim replaced by src."""
    _t(input, "input", "slice_scatter"), _t(src, "src", "slice_scatter")
    if input.ndim == 0:
        raise IndexError("slice_scatter(): input must have at least 1 dim")
    d = single_axis(dim, input.ndim, "slice_scatter(): dim")
    step = _int(step, "step", "slice_scatter")
    if step <= 0:
        raise RuntimeError(f"slice_scatter(): slice step must be positive, got {step}")
    positions = np.arange(input.shape[d])[slice(start, end, step)]
    want = tuple(input.shape[:d]) + (positions.size,) + tuple(input.shape[d + 1:])
    _check_src(src, want, "slice_scatter")
    return _place(input, src, d, positions)


def diagonal_scatter(input, src, offset=0, dim1=0, dim2=1):
    """A copy of input with ``input.diagonal(offset, dim1, dim2)`` replaced by src (the diagonal as src's last
    dim)."""
    from ._torch_indexing_shape import diagonal, movedim
    _t(input, "input", "diagonal_scatter"), _t(src, "src", "diagonal_scatter")
    _check_src(src, diagonal(input, offset, dim1, dim2).shape, "diagonal_scatter")
    d1, d2 = single_axis(dim1, input.ndim), single_axis(dim2, input.ndim)
    x = movedim(input, (d1, d2), (-2, -1))
    n1, n2 = x.shape[-2:]
    offset = int(offset)
    length = src.shape[-1]
    flat_pos = (np.arange(length) + max(-offset, 0)) * n2 + np.arange(length) + max(offset, 0)
    flat = x.reshape(tuple(x.shape[:-2]) + (n1 * n2,))
    out = _place(flat, src, flat.ndim - 1, flat_pos).reshape(tuple(x.shape))
    return movedim(out, (-2, -1), (d1, d2))


def diagflat(input, offset=0):
    """A 2-d matrix with the flattened input on its ``offset`` diagonal."""
    from ._torch_indexing_shape import diag_embed
    return diag_embed(_t(input, "input", "diagflat").reshape(-1), _int(offset, "offset", "diagflat"))


# ---- constructions --------------------------------------------------------------------------------------------
def block_diag(*tensors):
    """The tensors (0-d: 1x1, 1-d: one row) as the blocks of a block-diagonal matrix; zeros elsewhere; torch's
    dtype promotion."""
    from .dtypes import to_numpy
    from .factories import zeros
    if not tensors:
        return zeros((1, 0))
    ts = []
    for i, t in enumerate(tensors):
        _t(t, f"tensors[{i}]", "block_diag")
        if t.ndim > 2:
            raise RuntimeError(f"torch.block_diag: Input tensors must have 2 or fewer dimensions. Input {i} has "
                               f"{t.ndim} dimensions")
        ts.append(t.reshape(1, 1) if t.ndim == 0 else t.reshape(1, -1) if t.ndim == 1 else t)
    dtypes = [np.dtype(to_numpy(t.dtype)) for t in ts]
    floats = [d for d in dtypes if d.kind == "f"]  # torch's promotion: a float dtype wins over any integer one
    dtype = np.result_type(*(floats or dtypes))
    ts = [t if to_numpy(t.dtype) == dtype else t.to(dtype) for t in ts]
    width = sum(t.shape[1] for t in ts)
    rows, at = [], 0
    for t in ts:
        r, c = t.shape
        parts = [p for p in (zeros((r, at), dtype=dtype), t, zeros((r, width - at - c), dtype=dtype))]
        rows.append(_OPS["cat"](*parts, dim=1))
        at += c
    return _OPS["cat"](*rows, dim=0)


def cartesian_prod(*tensors):
    """The rows of every combination of the 1-d tensors' elements (one tensor: itself)."""
    from ._torch_indexing_shape import meshgrid
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    ts = _seq(list(tensors), "cartesian_prod")
    for i, t in enumerate(ts):
        if t.ndim != 1:
            raise RuntimeError(f"cartesian_prod(): expect a 1D vector, but got tensors[{i}] of shape "
                               f"{list(t.shape)}")
    if len(ts) == 1:
        return ts[0]
    return _OPS["stack"](*[g.reshape(-1) for g in meshgrid(*ts, indexing="ij")], dim=1)


def combinations(input, r=2, with_replacement=False):
    """The r-element combinations of a 1-d tensor's elements (itertools' order), one per row."""
    _t(input, "input", "combinations")
    if input.ndim != 1:
        raise RuntimeError(f"combinations(): expect a 1D vector, but got shape {list(input.shape)}")
    r = _int(r, "r", "combinations")
    if r < 0:
        raise RuntimeError(f"combinations(): expect a non-negative number, but got {r}")
    make = itertools.combinations_with_replacement if with_replacement else itertools.combinations
    if r == 0:  # torch: an empty 1-d tensor (reshape(-1, 0) of no indices is ambiguous for numpy)
        return _OPS["index_select"](input, 0, _wrap(np.zeros(0, dtype=np.int64)))
    idx = np.array(list(make(range(input.shape[0]), r)), dtype=np.int64).reshape(-1, r)
    out = _OPS["index_select"](input, 0, _wrap(idx.reshape(-1)))  # (empty results stay in the graph, as torch's)
    return out.reshape(idx.shape)


def vander(x, N=None, increasing=False):
    """Columns x**(N-1), ..., x**0 (increasing: x**0 first) of a 1-d x; made with cumprod (exact gradients at 0);
    integer and bool x give int64, as torch's."""
    from ._torch_indexing import cumprod
    from .factories import ones
    _t(x, "x", "vander")
    if x.ndim != 1:
        raise RuntimeError(f"vander(): x must be a one-dimensional tensor, got {x.ndim} dims")
    n = x.shape[0] if N is None else _int(N, "N", "vander")
    if n < 0:
        raise RuntimeError(f"vander(): N must be non-negative, got {n}")
    if _kind(x) in "biu":
        x = x.long()
    if n == 0:
        return x.new_zeros(x.shape[0], 0)
    first = ones((x.shape[0], 1), dtype=x.dtype)
    cols = [first]
    if n > 1:
        cols.append(cumprod(x.unsqueeze(1).expand(x.shape[0], n - 1), 1))
    out = _OPS["cat"](*cols, dim=1) if len(cols) > 1 else first
    return out if increasing else out.flip(1)


# ---- arithmetic --------------------------------------------------------------------------------------------
def _value(value, who, *tensors):
    """value as a Python number (a one-element tensor is taken as its number, as torch's Scalar); cast to an int,
    truncating, when every tensor is an integer or bool one (torch casts value to the result's integer dtype)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not isinstance(value.item(), bool):
        value = value.item()
    if isinstance(value, Tensor) or isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{who}(): argument 'value' must be a number, got {type(value).__name__}")
    if tensors and all(_kind(t) in "biu" for t in tensors) and isinstance(value, (float, np.floating)):
        value = int(value)
    return value


def addcmul(input, tensor1, tensor2, *, value=1):
    """input + value * tensor1 * tensor2 (broadcast)."""
    for name, t in (("input", input), ("tensor1", tensor1), ("tensor2", tensor2)):
        _t(t, name, "addcmul")
    value = _value(value, "addcmul", input, tensor1, tensor2)
    prod = tensor1 * tensor2
    return input + (prod if value == 1 else prod * value)


def addcdiv(input, tensor1, tensor2, *, value=1):
    """input + value * tensor1 / tensor2 (broadcast); integer tensor1 and tensor2 raise, as torch's."""
    for name, t in (("input", input), ("tensor1", tensor1), ("tensor2", tensor2)):
        _t(t, name, "addcdiv")
    value = _value(value, "addcdiv")
    if _kind(tensor1) in "biu" and _kind(tensor2) in "biu":
        raise RuntimeError("addcdiv(): Integer division with addcdiv is no longer supported; use "
                           "(input + value * torch.trunc(tensor1 / tensor2)).to(input.dtype)")
    quot = tensor1 / tensor2
    return input + (quot if value == 1 else quot * value)


def dist(input, other, p=2):
    """The p-norm of input - other (broadcast): p a number, inf, -inf or 0 (the count of differing elements)."""
    from .linalg import vector_norm
    _t(input, "input", "dist"), _t(other, "other", "dist")
    if isinstance(p, Tensor) or isinstance(p, bool) or not isinstance(p, (int, float, np.number)):
        raise TypeError(f"dist(): argument 'p' must be a number, got {type(p).__name__}")
    return vector_norm(input - other, ord=p)


def renorm(input, p, dim, maxnorm):
    """Each slice along dim whose p-norm exceeds maxnorm scaled to norm maxnorm (by maxnorm / (norm + 1e-7), as
    torch's); the gradient includes the norm's."""
    from .linalg import vector_norm
    _t(input, "input", "renorm")
    if _kind(input) != "f":
        raise RuntimeError(f"renorm(): expected a floating point input, got {input.dtype}")
    for name, v in (("p", p), ("maxnorm", maxnorm)):
        if isinstance(v, Tensor) or isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
            raise TypeError(f"renorm(): argument {name!r} must be a number, got {type(v).__name__}")
    if p <= 0:
        raise RuntimeError(f"renorm(): non-positive-norm not supported, got p={p}")
    if maxnorm < 0:
        raise RuntimeError(f"renorm(): expected maxnorm to be >= 0 but got {maxnorm}")
    if input.ndim < 2:
        raise RuntimeError(f"renorm(): input needs at least 2 dimensions, got {input.ndim} dimensions")
    d = single_axis(dim, input.ndim, "renorm(): dim")
    others = tuple(k for k in range(input.ndim) if k != d)
    norm = vector_norm(input, ord=p, dim=others, keepdim=True)
    big = norm > maxnorm
    factor = _OPS["where"](big, float(maxnorm) / (norm + 1e-7), 1.0)
    return input * factor


def sum_to_size(input, *args, size=None):
    """input summed down to ``size`` (the reverse of expand; by keyword too, as torch's); the tensor itself when it
    has that size."""
    _t(input, "input", "sum_to_size")
    if size is not None:
        if args:
            raise TypeError("sum_to_size() got multiple values for argument 'size'")
        args = (size,)
    size = args
    size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (list, tuple)) else tuple(size)
    if not all(isinstance(s, _INT) and not isinstance(s, bool) for s in size):
        raise TypeError(f"sum_to_size(): argument 'size' must be ints, got {size!r}")
    shape = tuple(input.shape)
    lead = len(shape) - len(size)
    if lead < 0 or any(s != 1 and s != n for s, n in zip(size, shape[lead:])):
        raise RuntimeError(f"sum_to_size(): size {list(size)} is not expandable to size {list(shape)}.")
    if size == shape:
        return input
    out = input.sum(dim=tuple(range(lead))) if lead else input
    keep = tuple(k for k, (s, n) in enumerate(zip(size, shape[lead:])) if s == 1 and n != 1)
    return out.sum(dim=keep, keepdim=True) if keep else out


# ---- writes at indices ----------------------------------------------------------------------------------------
def _write_at(input, flat_positions, values, accumulate, who):
    """input with values (already flat, one per position) written at, or added to (accumulate), its flat
    positions."""
    if values.dtype != input.dtype:
        raise RuntimeError(f"{who}(): Index put requires the source and destination dtypes match, got "
                           f"{input.dtype} for the destination and {values.dtype} for the source.")
    flat = input.reshape(-1)
    if flat_positions.size == 0:
        return _OPS["clone"](input)
    if accumulate:
        from ._torch_indexing import index_add
        return index_add(flat, 0, _wrap(flat_positions), values).reshape(tuple(input.shape))
    inv = np.full(flat.shape[0], -1, dtype=np.int64)
    inv[flat_positions] = np.arange(flat_positions.size)  # a repeated position keeps its last value
    mask = inv >= 0
    spread = _OPS["index_select"](values, 0, _wrap(np.where(mask, inv, 0)))
    return _OPS["where"](mask, spread, flat).reshape(tuple(input.shape))


def index_put(input, indices, values, accumulate=False):
    """A copy of input with ``input[indices] = values`` (indices: a tuple of int / bool tensors;
    values broadcast to the indexed shape); accumulate: added, repeated indices adding up."""
    _t(input, "input", "index_put"), _t(values, "values", "index_put")
    if isinstance(indices, Tensor) or not isinstance(indices, (list, tuple)):
        raise TypeError(f"index_put(): argument 'indices' must be a tuple of Tensors, got {type(indices).__name__}")
    key = []
    for i, k in enumerate(indices):
        _t(k, f"indices[{i}]", "index_put")  # (torch refuses None here too)
        if _kind(k) not in "biu":
            raise IndexError(f"index_put(): tensors used as indices must be long, int or bool tensors, got "
                             f"indices[{i}] of {k.dtype}")
        arr = k.cpu().numpy()
        if arr.dtype == np.uint8:  # torch takes a uint8 index as a mask (deprecated, with a warning)
            import warnings
            warnings.warn("index_put(): indexing with a uint8 tensor is deprecated, use a bool tensor instead",
                          UserWarning, stacklevel=2)
            arr = arr.astype(bool)
        key.append(arr)
    if len(indices) > max(input.ndim, 1):
        raise IndexError(f"index_put(): too many indices for tensor of dimension {input.ndim} (got {len(indices)})")
    for k in indices:
        _refuse_computed(k, "index_put's indices")
    pos = np.arange(input.numel(), dtype=np.int64).reshape(tuple(input.shape))
    try:
        sel = pos[tuple(key)]
    except IndexError as e:
        raise IndexError(f"index_put(): {e}") from None
    try:
        vals = values.expand(*sel.shape) if tuple(values.shape) != sel.shape else values
    except ValueError:
        raise RuntimeError(f"index_put(): shape mismatch: value tensor of shape {list(values.shape)} cannot be "
                           f"broadcast to indexing result of shape {list(sel.shape)}") from None
    return _write_at(input, sel.reshape(-1), vals.reshape(-1), accumulate, "index_put")


def put(input, index, source, accumulate=False):
    """A copy of input with source written at (accumulate: added to) the flat positions index (negative: from
    the end)."""
    from .ops.indexing import check_index
    _t(input, "input", "put"), _t(index, "index", "put"), _t(source, "source", "put")
    if _kind(index) not in "iu":
        raise TypeError(f"put(): argument 'index' must be an int64 tensor, got {index.dtype}")
    if index.numel() != source.numel():
        raise RuntimeError(f"put(): Expected source and index to have the same number of elements, but got "
                           f"source.numel() = {source.numel()}, index.numel() = {index.numel()}")
    _refuse_computed(index, "put's index")
    flat = check_index(index.cpu().numpy().reshape(-1), input.numel(), "index", allow_negative=True)
    return _write_at(input, flat, source.reshape(-1), accumulate, "put")


def _diagonal_mask(shape, wrap):
    if len(shape) < 2:
        raise RuntimeError(f"fill_diagonal_(): dimensions must larger than 1, got {len(shape)}")
    if len(shape) > 2 and len(set(shape)) != 1:
        raise RuntimeError(f"fill_diagonal_(): all dimensions of input must be of equal length, got {list(shape)}")
    mask = np.zeros(int(np.prod(shape)), dtype=bool)
    if len(shape) == 2:
        h, w = shape
        end = h * w if wrap and h > w + 1 else min(h, w) * w
        mask[:end:w + 1] = True
    else:
        n = shape[0]
        step = int(sum(n ** k for k in range(len(shape))))
        mask[:n * step:step] = True
    return mask.reshape(shape)


def fill_diagonal_(input, fill_value, wrap=False):
    """In place: fill_value on the main diagonal (2-d; or every dim equal); wrap: a tall matrix's diagonal starts
    again N + 1 rows down, as numpy's fill_diagonal."""
    _t(input, "input", "fill_diagonal_")
    if isinstance(fill_value, Tensor) or not isinstance(fill_value, (int, float, bool, np.number)):
        raise TypeError(f"fill_diagonal_(): argument 'fill_value' must be a number, got {type(fill_value).__name__}")
    mask = _diagonal_mask(tuple(input.shape), bool(wrap))
    return input._inplace(lambda t: _OPS["where"](mask, fill_value, t), "fill_diagonal_", cast=True)


def adjoint(input):
    """The conjugate transpose of the last two dims (a view; forgegrad's tensors are real)."""
    _t(input, "input", "adjoint")
    if input.ndim < 2:
        raise RuntimeError(f"adjoint(): tensor.adjoint() is only supported on matrices or batches of matrices. "
                           f"Got {input.ndim}-D tensor.")
    return input.transpose(-2, -1)


__all__ = ["select_scatter", "slice_scatter", "diagonal_scatter", "diagflat", "block_diag", "cartesian_prod",
           "combinations", "vander", "addcmul", "addcdiv", "dist", "renorm", "index_put", "put", "adjoint"]
