"""torch's math, reduction and product functions as ``forgegrad.xxx`` and Tensor methods (with torch's in-place
``xxx_`` variants): the pointwise ops of ops/pointwise_more.py and ops/predicates.py, the reductions of
ops/reduce_more.py, einsum and cdist (ops/contract.py), and compositions of existing ops (tensordot, outer, kron,
addmm and kin, var_mean, cov, corrcoef, ...), each differentiable as far as its parts are. ``install()`` puts them
on the package and on the Tensor class (forgegrad/__init__.py calls it once)."""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import return_types
from .amp.autocast_mode import lower_precision_args, outside_policy
from ._torch_install import inplace_method, method, op_function
from ._torch_random import FACTORIES, METHODS as _RANDOM_METHODS
from .ops.contract import einsum
from .ops.registry import _OPS
from .tensor import Tensor

_NUMBER = (int, float, bool, np.number)

# torch.return_types of the reductions here, added to forgegrad.return_types (kept out of that shared file)
for _name, _fields in (("median", ("values", "indices")), ("nanmedian", ("values", "indices")),
                       ("mode", ("values", "indices")), ("aminmax", ("min", "max"))):
    if not hasattr(return_types, _name):
        setattr(return_types, _name, namedtuple(_name, _fields))


def _t(x, name, who):
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}(): argument {name!r} must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


# ---- pointwise --------------------------------------------------------------------------------------
def _op1(name):
    return op_function(name, 1, doc=f"torch.{name}(input), see forgegrad/ops/pointwise_more.py and ops/predicates.py.")


def _op2(name):
    return op_function(name, 2, doc=f"torch.{name}(input, other) with broadcasting and torch's dtype promotion.")


_UNARY = ("erf", "erfc", "erfinv", "lgamma", "digamma", "sign", "sgn", "trunc", "frac", "deg2rad", "rad2deg",
          "isnan", "isinf", "isfinite", "isposinf", "isneginf", "signbit")
_BINARY = ("atan2", "hypot", "logaddexp", "logaddexp2", "xlogy", "copysign", "remainder", "fmod", "floor_divide")
FUNCTIONS = {n: _op1(n) for n in _UNARY}
FUNCTIONS.update({n: _op2(n) for n in _BINARY})
FUNCTIONS["arctan2"], FUNCTIONS["fix"] = FUNCTIONS["atan2"], FUNCTIONS["trunc"]


def lerp(input, end, weight):
    """torch.lerp(input, end, weight): input + weight * (end - input); ``weight`` a number or a tensor."""
    return _OPS["lerp"](input, end, weight)


def round(input, *, decimals=0):  # noqa: A001  (torch.round)
    return _OPS["round"](input, decimals)


def nan_to_num(input, nan=0.0, posinf=None, neginf=None):
    return _OPS["nan_to_num"](input, nan, posinf, neginf)


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    return _OPS["isclose"](input, other, rtol, atol, equal_nan)


def clamp_min(input, min):  # noqa: A002
    return _t(input, "input", "clamp_min").clamp(min=min)


def clamp_max(input, max):  # noqa: A002
    return _t(input, "input", "clamp_max").clamp(max=max)


# ---- reductions -----------------------------------------------------------------------------------
def logsumexp(input, dim, keepdim=False):
    return _OPS["logsumexp"](input, dim, keepdim)


def _cast(x, dtype):
    return x if dtype is None else x.to(dtype)


def prod(input, dim=None, keepdim=False, *, dtype=None):
    return _OPS["prod"](input, dim, keepdim, dtype)


def nansum(input, dim=None, keepdim=False, *, dtype=None):
    return _OPS["nansum"](_cast(input, dtype), dim, keepdim)


def nanmean(input, dim=None, keepdim=False, *, dtype=None):
    return _OPS["nanmean"](_cast(input, dtype), dim, keepdim)


def median(input, dim=None, keepdim=False):
    """torch.median: the lower median of every element (dim None), else (values, indices) along ``dim``."""
    if dim is None:
        return _OPS["median"](input)
    return return_types.median(*_OPS["median_dim"](input, dim, keepdim))


def nanmedian(input, dim=None, keepdim=False):
    if dim is None:
        return _OPS["nanmedian"](input)
    return return_types.nanmedian(*_OPS["nanmedian_dim"](input, dim, keepdim))


def mode(input, dim=-1, keepdim=False):
    return return_types.mode(*_OPS["mode"](input, dim, keepdim))


def _q(q, input):
    """A q tensor of the input's dtype stays a tensor argument of the op (an ONNX export then reads it from the
    graph: a model input q was exported as the example's values, its graph input unused); another dtype is passed
    as its values."""
    if isinstance(q, Tensor) and not (isinstance(input, Tensor) and q.dtype == input.dtype):
        return q._data
    return q


def quantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    return _OPS["quantile"](input, _q(q, input), dim, keepdim, interpolation)


def nanquantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    return _OPS["nanquantile"](input, _q(q, input), dim, keepdim, interpolation)


def count_nonzero(input, dim=None):
    """The number of non-zero elements (int64) over ``dim`` (an int, a tuple, or None: all)."""
    nz = _t(input, "input", "count_nonzero") != 0
    return nz.sum(dim=dim) if dim is not None else nz.sum()


def aminmax(input, *, dim=None, keepdim=False):
    """(min, max) over ``dim`` (None: every element) as torch.return_types.aminmax."""
    _t(input, "input", "aminmax")
    return return_types.aminmax(input.amin(dim=dim, keepdim=keepdim), input.amax(dim=dim, keepdim=keepdim))


def _var_parts(input, dim, correction, keepdim, unbiased, who):
    _t(input, "input", who)
    if isinstance(dim, bool):  # the old var_mean(input, unbiased) overload
        dim, unbiased = None, dim
    if unbiased is not None:
        correction = 1 if unbiased else 0
    x = input if input.dtype.is_floating_point else input.float()
    axes = tuple(range(x.ndim)) if dim is None else dim
    from .ops._util import normalize_axis
    norm = normalize_axis(axes, x.ndim)
    n = int(np.prod([x.shape[a] for a in norm])) if norm else 1
    mean = x.mean(dim=norm, keepdim=True)
    d = x - mean
    var = (d * d).sum(dim=norm, keepdim=keepdim) / max(n - correction, 0)
    return var, (mean if keepdim else mean.reshape(var.shape))


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=1):
    """(variance, mean) over ``dim`` with torch's ``correction`` (n - correction in the divisor); torch's older
    ``var_mean(input, dim, unbiased, keepdim)`` positional form too."""
    return _var_parts(input, dim, correction, keepdim, unbiased, "var_mean")


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=1):
    var, mean = _var_parts(input, dim, correction, keepdim, unbiased, "std_mean")
    # torch's std gradient is 0 where std == 0 (constant values), not g / (2 * sqrt(0)) * 0 = NaN: take the
    # square root of 1 there and pass var itself (0, with a 0 gradient) through
    zero = (var == 0).detach()
    return _OPS["where"](zero, var, _OPS["where"](zero, 1.0, var).sqrt()), mean


def cov(input, *, correction=1, fweights=None, aweights=None):
    """torch.cov: the covariance of the rows (variables) of ``input`` over its columns (observations)."""
    _t(input, "input", "cov")
    from ._validate import check_int
    correction = check_int(correction, "cov(): correction")
    if input.ndim > 2:
        raise ValueError(f"cov(): expected input to have two or fewer dimensions, got {input.ndim}")
    x = input.reshape(1, -1) if input.ndim < 2 else input
    if not x.dtype.is_floating_point:
        x = x.float()
    n = x.shape[1]
    w = None
    for name, wt in (("fweights", fweights), ("aweights", aweights)):
        if wt is None:
            continue
        _t(wt, name, "cov")
        if wt.ndim > 1 or wt.shape[0] != n:
            raise ValueError(f"cov(): {name} must be 1-D with {n} entries (one per observation), got shape "
                             f"{tuple(wt.shape)}")
        if name == "fweights" and wt.dtype.is_floating_point:
            raise TypeError("cov(): fweights must be integers")
        if bool((wt < 0).numpy().any()):
            raise ValueError(f"cov(): {name} cannot be negative")
        wt = wt.to(x.dtype)
        w = wt if w is None else w * wt
    if w is None:
        avg = x.mean(dim=1)
        w_sum = float(n)
        norm = w_sum - correction
    else:
        w_sum_t = w.sum()
        avg = (x * w).sum(dim=1) / w_sum_t
        w_sum = float(w_sum_t.item())
        if aweights is not None:
            norm = w_sum - correction * float((w * aweights.to(x.dtype)).sum().item()) / w_sum
        else:
            norm = w_sum - correction
    norm = max(norm, 0.0)
    xm = x - avg.reshape(-1, 1)
    xw = xm if w is None else xm * w
    c = (xw @ xm.t()) / norm if norm else (xw @ xm.t()) / 0.0
    return c.reshape(()) if x.shape[0] == 1 else c  # torch squeezes one variable (a 1-D or one-row input) to 0-d


def corrcoef(input):
    """torch.corrcoef: Pearson correlation coefficients of the rows, clipped to [-1, 1]."""
    c = cov(input)
    if c.ndim == 0:
        return c / c
    sd = einsum("ii->i", c).sqrt()
    return (c / sd.reshape(-1, 1) / sd.reshape(1, -1)).clamp(-1, 1)


# ---- products --------------------------------------------------------------------------------------
def tensordot(a, b, dims=2):
    """torch.tensordot: contract the last ``dims`` dims of ``a`` with the first of ``b``, or the dims listed in a
    pair (dims_a, dims_b); one GEMM over the permuted, reshaped operands."""
    _t(a, "a", "tensordot")
    _t(b, "b", "tensordot")
    if isinstance(dims, Tensor):
        dims = dims.tolist()
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        if dims < 0 or dims > min(a.ndim, b.ndim):
            raise ValueError(f"tensordot(): dims must be in [0, {min(a.ndim, b.ndim)}], got {dims}")
        da, db = list(range(a.ndim - dims, a.ndim)), list(range(dims))
    else:
        try:
            da, db = ([d] if isinstance(d, int) else list(d) for d in dims)
        except (TypeError, ValueError):
            raise TypeError(f"tensordot(): dims must be an int or a pair of lists of dims, got {dims!r}") from None
        if len(da) != len(db):
            raise ValueError(f"tensordot(): both dim lists must have the same length, got {da} and {db}")
    da = [d % a.ndim for d in da]
    db = [d % b.ndim for d in db]
    for i, j in zip(da, db):
        if a.shape[i] != b.shape[j]:
            raise ValueError(f"tensordot(): contracted dimensions {i} of a and {j} of b differ in size "
                             f"({a.shape[i]} vs {b.shape[j]})")
    fa = [i for i in range(a.ndim) if i not in da]
    fb = [j for j in range(b.ndim) if j not in db]
    k = int(np.prod([a.shape[i] for i in da])) if da else 1
    pa = a.permute(*fa, *da).reshape(-1, k)
    pb = b.permute(*db, *fb).reshape(k, -1)
    y = pa @ pb if pa.dtype.is_floating_point else (pa.reshape(pa.shape[0], k, 1) * pb.reshape(1, k, -1)).sum(dim=1)
    return y.reshape(*[a.shape[i] for i in fa], *[b.shape[j] for j in fb])


def _vec(x, name, who):
    _t(x, name, who)
    if x.ndim != 1:
        raise ValueError(f"{who}(): {name} must be 1-D, got shape {tuple(x.shape)}")
    return x


def outer(input, vec2):
    _vec(input, "input", "outer")
    _vec(vec2, "vec2", "outer")
    return input.reshape(-1, 1) * vec2.reshape(1, -1)


def inner(input, other):
    _t(input, "input", "inner")
    _t(other, "other", "inner")
    if input.ndim == 0 or other.ndim == 0:
        return input * other
    return tensordot(input, other, ([-1], [-1]))


def kron(input, other):
    """torch.kron: the Kronecker product (the operands padded with leading 1 dims to the same rank)."""
    _t(input, "input", "kron")
    _t(other, "other", "kron")
    nd = max(input.ndim, other.ndim)
    a = input.reshape(*(1,) * (nd - input.ndim), *input.shape)
    b = other.reshape(*(1,) * (nd - other.ndim), *other.shape)
    sa = [s for d in a.shape for s in (d, 1)]
    sb = [s for d in b.shape for s in (1, d)]
    return (a.reshape(*sa) * b.reshape(*sb)).reshape(*[x * y for x, y in zip(a.shape, b.shape)])


def _add_scaled(input, prod, beta, alpha):
    out = prod if alpha == 1 else prod * alpha
    if beta == 0:  # torch: input is ignored (its NaN and inf too), only its shape broadcasts
        shape = np.broadcast_shapes(tuple(input.shape), tuple(out.shape))
        return out if tuple(out.shape) == shape else out.expand(*shape)
    return (input if beta == 1 else input * beta) + out


def _mat(x, name, who, nd=2):
    _t(x, name, who)
    if x.ndim != nd:
        raise ValueError(f"{who}(): {name} must be {nd}-D, got shape {tuple(x.shape)}")
    return x


def mv(input, vec):
    with outside_policy():  # torch's autocast leaves mv alone (matmul would lower it)
        return _mat(input, "input", "mv") @ _vec(vec, "vec", "mv")


def _dot(input, tensor, who, name):
    _vec(input, "input", who)
    _vec(tensor, name, who)
    if input.shape[0] != tensor.shape[0]:
        raise ValueError(f"{who}(): 1-D tensors of sizes {input.shape[0]} and {tensor.shape[0]} cannot be multiplied")
    if input.dtype.is_floating_point and tensor.dtype.is_floating_point:
        return (input * tensor).sum()
    if input.dtype != tensor.dtype:
        raise TypeError(f"{who}(): expected both vectors to have the same dtype, got {input.dtype} and {tensor.dtype}")
    return input @ tensor  # integers: in their own dtype, as torch's (a sum would widen int32 to int64)


def dot(input, tensor):
    return _dot(input, tensor, "dot", "tensor")


def vdot(input, other):
    """torch.vdot(input, other): the dot product of conj(input) with other (of real tensors, the dot product)."""
    if isinstance(input, Tensor) and input._data.dtype.kind == "c":
        from ._complex_tensor import conj
        input = conj(input)
    return _dot(input, other, "vdot", "other")


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    input, mat1, mat2 = lower_precision_args(input, mat1, mat2)  # autocast gives the sum in its dtype, as torch's
    return _add_scaled(_t(input, "input", "addmm"), _mat(mat1, "mat1", "addmm") @ _mat(mat2, "mat2", "addmm"),
                       beta, alpha)


def addmv(input, mat, vec, *, beta=1, alpha=1):
    return _add_scaled(_t(input, "input", "addmv"), mv(mat, vec), beta, alpha)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    input, batch1, batch2 = lower_precision_args(input, batch1, batch2)
    return _add_scaled(_t(input, "input", "baddbmm"), _mat(batch1, "batch1", "baddbmm", 3) @
                       _mat(batch2, "batch2", "baddbmm", 3), beta, alpha)


def addbmm(input, batch1, batch2, *, beta=1, alpha=1):
    input, batch1, batch2 = lower_precision_args(input, batch1, batch2)
    b1, b2 = _mat(batch1, "batch1", "addbmm", 3), _mat(batch2, "batch2", "addbmm", 3)
    # sum_b batch1[b] @ batch2[b] is one GEMM of (n, b*k) by (b*k, p)
    prod = b1.permute(1, 0, 2).reshape(b1.shape[1], -1) @ b2.reshape(-1, b2.shape[2])
    return _add_scaled(_t(input, "input", "addbmm"), prod, beta, alpha)


def multi_dot(tensors):
    """torch.linalg.multi_dot (forgegrad.linalg's: the cheapest order, a 1-D first / last operand as a row / column)."""
    from .linalg import multi_dot as _multi_dot
    return _multi_dot(tensors)


def chain_matmul(*matrices):
    if len(matrices) == 1:
        return _mat(matrices[0], "matrices[0]", "chain_matmul").clone()
    for i, m in enumerate(matrices):
        _mat(m, f"matrices[{i}]", "chain_matmul")
    return multi_dot(matrices)


def cdist(x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    return _OPS["cdist"](x1, x2, p, compute_mode)


ger = outer

FUNCTIONS.update({f.__name__: f for f in (
    lerp, round, nan_to_num, isclose, clamp_min, clamp_max, logsumexp, prod, nansum, nanmean, median, nanmedian,
    mode, quantile, nanquantile, count_nonzero, aminmax, var_mean, std_mean, cov, corrcoef, einsum, tensordot, outer,
    inner, kron, mv, dot, addmm, addmv, baddbmm, addbmm, chain_matmul, cdist)})
FUNCTIONS.update({"ger": outer, "vdot": vdot})
FUNCTIONS.update(FACTORIES)


# ---- Tensor methods ------------------------------------------------------------------------------------
_method = method

_METHOD_NAMES = (_UNARY + _BINARY + (
    "arctan2", "fix", "lerp", "nan_to_num", "isclose", "clamp_min", "clamp_max", "logsumexp", "prod", "nansum",
    "nanmean", "median", "nanmedian", "mode", "quantile", "nanquantile", "count_nonzero", "aminmax", "cov", "corrcoef",
    "outer", "ger", "inner", "kron", "mv", "dot", "vdot", "addmm", "addmv", "baddbmm", "addbmm"))

# in-place variants (forgegrad/_inplace.py: torch's rules on leaves, views, versions and dtypes)
_INPLACE = (tuple(n for n in _UNARY if not n.startswith("is") and n != "signbit") + _BINARY + (
    "arctan2", "fix", "lerp", "nan_to_num", "clamp_min", "clamp_max", "addmm", "addmv", "baddbmm", "addbmm"))
_INPLACE = tuple(n for n in _INPLACE if n not in ("logaddexp", "logaddexp2"))  # torch has no logaddexp_


def _inplace_method(name):
    return inplace_method(FUNCTIONS[name], name)


def _round_method(self, decimals=0):
    return round(self, decimals=decimals)


def _round_inplace(self, decimals=0):
    return self._inplace(lambda t: round(t, decimals=decimals), "round_")


def install(package_namespace: dict) -> None:
    """Put the functions on the package and the methods on Tensor (never replacing one it has)."""
    from ._tensor_methods import TensorMethods
    for name, fn in FUNCTIONS.items():
        package_namespace.setdefault(name, fn)
    methods = {n: _method(FUNCTIONS[n]) for n in _METHOD_NAMES}
    methods.update({n + "_": _inplace_method(n) for n in _INPLACE})
    methods.update({"round": _round_method, "round_": _round_inplace, "allclose": _method(_allclose),
                    "equal": _method(_equal)}, **_RANDOM_METHODS)
    # torch's // and % operators: floor_divide and remainder (Python's rounding and sign rules, as torch's)
    methods.update({"__floordiv__": lambda self, other: FUNCTIONS["floor_divide"](self, other),
                    "__rfloordiv__": lambda self, other: FUNCTIONS["floor_divide"](other, self),
                    "__mod__": lambda self, other: FUNCTIONS["remainder"](self, other),
                    "__rmod__": lambda self, other: FUNCTIONS["remainder"](other, self),
                    "__ifloordiv__": methods["floor_divide_"], "__imod__": methods["remainder_"]})
    for name, m in methods.items():
        if not hasattr(TensorMethods, name):
            setattr(TensorMethods, name, m)


def _allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    from ._functions import allclose
    return allclose(input, other, rtol, atol, equal_nan)


def _equal(input, other):
    from ._functions import equal
    return equal(input, other)


__all__ = sorted(FUNCTIONS) + ["install", "multi_dot"]
