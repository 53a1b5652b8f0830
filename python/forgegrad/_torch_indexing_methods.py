"""The Tensor methods of forgegrad._torch_indexing and _torch_indexing_shape (``x.gather(1, idx)``, ``x.sort()``,
``x.scatter_(0, idx, src)``, ...), installed on TensorMethods when forgegrad is imported.

An in-place method (``scatter_``, ``index_add_``, ``masked_fill_``, ...) is its out-of-place function run through
forgegrad._inplace (torch's rules: a leaf that requires grad refuses, a graph tensor is rebound to the result,
views and the version counter see the write); the tensors among its arguments (src, source, a 0-d value) take part
in the graph as its other inputs.
"""
from __future__ import annotations

from . import _torch_indexing as _ti
from . import _torch_indexing_shape as _ts

# methods whose signature is the function's, self as input
_SAME = ["gather", "scatter", "scatter_add", "scatter_reduce", "index_select", "index_add", "index_copy",
         "index_fill", "masked_fill", "masked_select", "masked_scatter", "take", "take_along_dim", "nonzero",
         "argwhere", "sort", "argsort", "topk", "kthvalue", "msort", "fliplr", "flipud", "roll", "movedim",
         "moveaxis", "diag", "diagonal", "as_strided", "diag_embed", "trace", "cumprod", "cummax", "cummin",
         "logcumsumexp", "unique", "unique_consecutive", "bincount", "broadcast_to"]
_INPLACE = ["scatter", "scatter_add", "scatter_reduce", "index_add", "index_copy", "index_fill", "masked_fill",
            "masked_scatter", "cumprod"]


def _function(name):
    return getattr(_ti, name) if hasattr(_ti, name) else getattr(_ts, name)


def _inplace_method(fn, name):
    def method(self, *args, **kwargs):
        from .tensor import Tensor
        pos = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        keys = [k for k, a in kwargs.items() if isinstance(a, Tensor)]
        others = [args[i] for i in pos] + [kwargs[k] for k in keys]

        def compute(t, *o):
            a, kw = list(args), dict(kwargs)
            for i, v in zip(pos, o):
                a[i] = v
            for k, v in zip(keys, o[len(pos):]):
                kw[k] = v
            return fn(t, *a, **kw)

        return self._inplace(compute, name, *others)

    method.__name__ = name
    method.__doc__ = f"In-place {fn.__name__} (torch's Tensor.{name})."
    return method


def flip(self, *dims, **kwargs):
    """Tensor.flip(dims), Tensor.flip(d0, d1, ...) or Tensor.flip(dims=...) (torch's keyword)."""
    if kwargs:
        if set(kwargs) != {"dims"} or dims:
            raise TypeError(f"flip() got unexpected arguments {sorted(kwargs)} (it takes dims)")
        dims = (kwargs["dims"],)
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = tuple(dims[0])
    return _ts.flip(self, dims)


def install(cls) -> None:
    for name in _SAME:
        setattr(cls, name, _function(name))
    for name in _INPLACE:
        setattr(cls, name + "_", _inplace_method(_function(name), name + "_"))
    cls.flip = flip
