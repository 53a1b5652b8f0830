"""Comparisons, dtype casts and argmax/argmin.

Their outputs are bool / int64, so they carry no gradient (``Function.apply`` links only float
outputs to the graph), but they are Functions all the same: ``forgegrad.autograd.trace()`` sees only
``Function.apply`` calls, and the ONNX exporter must see the comparison behind ``where(x > 0, ...)``
or ``out.argmax(1)`` to export it as an op of the input rather than as a constant of the example.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as _dtypes
from ..autograd import Function
from . import _meta as M
from . import _samples as S
from .._validate import check_bool, is_array_or_number
from ._logic_common import cast, promote
from ._util import single_axis
from .registry import BadInput, Sample, register_op

_NO_GRADIENT = "its output is bool/int64: there is no gradient to check"


def _compare_samples():
    a, b = S.rand(3, 7), S.rand(3, 7, seed=1)
    b[0, :3] = a[0, :3]  # ties, for le/ge/eq/ne
    return ([Sample((a, b), {"op": op}, op) for op in COMPARISONS]
            + [Sample((S.rand(4, 5), S.rand(5, seed=2)), {"op": "gt"}, "broadcast"),
               Sample((S.rand(4, 5), 0.25), {"op": "le"}, "scalar")])


def _argmax_samples():
    x = S.rand(3, 5, 7)
    return [Sample((x,), {}, "flat"), Sample((x,), {"dim": 1}, "dim 1"),
            Sample((x,), {"dim": -1, "keepdim": True}, "keepdim")]


def _torch_arg(fn):
    return lambda torch, a, dim=None, keepdim=False: getattr(torch, fn)(a, dim, keepdim=keepdim)

# torch's short names (Tensor.lt/le/...) -> the numpy ufunc that computes them
COMPARISONS = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
               "eq": np.equal, "ne": np.not_equal}


@register_op("compare", meta=M.broadcast_bool, flops=M.no_flops, samples=_compare_samples,
             torch=lambda torch, a, b, op="lt": getattr(torch, op)(a, b), gaps={"backward": _NO_GRADIENT},
             bad_inputs=lambda: [BadInput((S.rand(2, 3), S.rand(2, 3)), {"op": "less"}, ValueError, "op")])
class CompareFunction(Function):
    """``a <op> b`` elementwise with numpy broadcasting and promotion; op is one of COMPARISONS.

    ``b`` may be a tensor, a numpy array or a Python/numpy scalar. The result is bool.
    """

    non_differentiable_outputs = (0,)

    @staticmethod
    def forward(ctx, a, b, op="lt"):
        fn = COMPARISONS.get(op)
        if fn is None:
            raise ValueError(f"Compare: op must be one of {sorted(COMPARISONS)}, got {op!r}")
        if not is_array_or_number(b):
            raise TypeError(f"Compare: the other operand must be a tensor, an array or a number, got "
                            f"{type(b).__name__} {b!r:.60}")
        # torch's promotion (int8 > 300 compares in int8, int64 < 0.5 in float32), not numpy's
        dt = promote(a, b)
        return np.asarray(fn(cast(a, dt), cast(b, dt)))

    @staticmethod
    def backward(ctx, g):  # pragma: no cover - the bool output never reaches backward
        return None, None


@register_op("cast", meta=lambda a, dtype: M.MetaArray(a.shape, dtype), flops=M.no_flops,
             samples=lambda: [Sample((S.rand(3, 7) * 4,), {"dtype": np.int64}, "to int64"),
                              Sample((S.rand(3, 7),), {"dtype": np.bool_}, "to bool")],
             torch=lambda torch, a, dtype: a.to({np.int64: torch.int64, np.bool_: torch.bool}[dtype]),
             gaps={"backward": "casts to int64/bool cut the graph (float casts: tests/test_float64.py)"},
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"dtype": "no-such-type"}, TypeError, "data type")])
class CastFunction(Function):
    """``a.astype(dtype)``: a copy in the new dtype.

    Differentiable between float dtypes (the gradient is cast back to the input's dtype); a cast to
    or from an integer / bool dtype cuts the graph, as in torch.
    """

    exact_dtype = True

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.in_dtype = a.dtype
        return _dtypes.astype(a, np.dtype(dtype))  # (to bfloat16 through float32, as torch)

    @staticmethod
    def backward(ctx, g):
        if not _dtypes.is_floating(ctx.in_dtype):
            return None
        return g if g.dtype == ctx.in_dtype else _dtypes.astype(g, ctx.in_dtype)


class CastCudaFunction(Function):
    """The cast on the cuda device (forgegrad.cuda's cast kernel; the same gradient rule)."""

    exact_dtype = True

    @staticmethod
    def forward(ctx, a, dtype):
        from .. import cuda
        ctx.in_dtype = a.dtype
        return cuda.cast(a, np.dtype(dtype))

    @staticmethod
    def backward(ctx, g):
        from .. import cuda
        return cuda.cast(g, ctx.in_dtype) if ctx.in_dtype.kind == "f" else None


CastFunction.op.add_device("cuda", CastCudaFunction)


@register_op("argmax", meta=M.arg_reduction, flops=M.per_input_element(1), samples=_argmax_samples,
             torch=_torch_arg("argmax"), gaps={"backward": _NO_GRADIENT},
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"dim": 2}, IndexError, "dim"),
                                 BadInput((S.rand(0, 3),), {}, ValueError, "empty")])
class ArgMaxFunction(Function):
    """Index of the first largest value along ``dim`` (of the flattened input when dim is None), int64.

    keepdim keeps the reduced axis with size 1 (every axis, when dim is None), as torch does.
    """

    non_differentiable_outputs = (0,)
    pick = staticmethod(np.argmax)

    @classmethod
    def _fwd(cls, a, dim, keepdim):
        name = cls.__name__.lower()
        keepdim = check_bool(keepdim, f"{name}(): keepdim")  # not truthiness: 'False' is no bool
        if dim is None:
            if a.size == 0:
                raise ValueError(f"{name}(): cannot take the {name} of an empty tensor (shape {a.shape})")
            return np.asarray(cls.pick(a, axis=None, keepdims=bool(keepdim))).astype(np.int64, copy=False)
        axis = single_axis(dim, a.ndim)
        if a.ndim and a.shape[axis] == 0:
            raise ValueError(f"{name}(): expected reduction dim {dim} to have non-zero size (input shape {a.shape})")
        if a.ndim == 0:  # torch allows dim 0 / -1 on a 0-d tensor: the index is 0
            return np.zeros((), np.int64)
        return np.asarray(cls.pick(a, axis=axis, keepdims=bool(keepdim))).astype(np.int64, copy=False)

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        return ArgMaxFunction._fwd(a, dim, keepdim)

    @staticmethod
    def backward(ctx, g):  # pragma: no cover - the int64 output never reaches backward
        return None


@register_op("argmin", meta=M.arg_reduction, flops=M.per_input_element(1), samples=_argmax_samples,
             torch=_torch_arg("argmin"), gaps={"backward": _NO_GRADIENT},
             bad_inputs=lambda: [BadInput((S.rand(2, 3),), {"dim": -4}, IndexError, "dim")])
class ArgMinFunction(ArgMaxFunction):
    """Index of the first smallest value along ``dim``; see ArgMax."""

    pick = staticmethod(np.argmin)

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        return ArgMinFunction._fwd(a, dim, keepdim)
