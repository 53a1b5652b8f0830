"""The functions of _torch_shape and _torch_shape_more as ``forgegrad.xxx`` (FUNCTIONS) and their Tensor methods,
in-place ``xxx_`` variants and the properties mT, mH, H; ``install(globals())`` from forgegrad/__init__.py puts
them where nothing of that name is yet (never replacing a function or method that exists)."""
from __future__ import annotations

from . import _torch_shape as _ts
from . import _torch_shape_more as _tm
from ._torch_install import method
from .tensor import Tensor

FUNCTIONS = {n: getattr(_ts, n) for n in _ts.__all__}
FUNCTIONS.update({n: getattr(_tm, n) for n in _tm.__all__})


def _index_put_(input, indices, values, accumulate=False):
    """torch.index_put_: index_put written into input (torch's in-place rules)."""
    return _tm._t(input, "input", "index_put_")._inplace(
        lambda t, v: _tm.index_put(t, indices, v, accumulate), "index_put_", values)


FUNCTIONS["index_put_"] = _index_put_


_method = method


def _inplace(fn, name, tensor_args=()):
    """The in-place method of fn: its tensor arguments (at the positions ``tensor_args`` of the method's args) take
    part in the graph."""
    def m(self, *args, **kwargs):
        args = list(args)
        others = [args[i] for i in tensor_args if i < len(args) and isinstance(args[i], Tensor)]
        at = [i for i in tensor_args if i < len(args) and isinstance(args[i], Tensor)]

        def compute(t, *o):
            full = list(args)
            for i, v in zip(at, o):
                full[i] = v
            return fn(t, *full, **kwargs)
        return self._inplace(compute, name, *others)
    m.__name__ = name
    m.__doc__ = f"In-place {fn.__name__} (torch's Tensor.{name})."
    return m


def _tril(self, diagonal=0):
    from ._functions import tril
    return tril(self, diagonal)


def _triu(self, diagonal=0):
    from ._functions import triu
    return triu(self, diagonal)


def _where(self, condition, other):
    """Tensor.where(condition, other): self where condition, else other."""
    from .factories import where
    return where(condition, self, other)


def _mm(self, mat2):
    """The matrix product of two 2-d tensors (torch's mm: no broadcasting, no batches)."""
    _tm._t(mat2, "mat2", "mm")
    if self.ndim != 2 or mat2.ndim != 2:
        raise RuntimeError(f"mm(): self and mat2 must be matrices, got {self.ndim}-d and {mat2.ndim}-d")
    if self.shape[1] != mat2.shape[0]:
        raise RuntimeError(f"mm(): mat1 and mat2 shapes cannot be multiplied ({self.shape[0]}x{self.shape[1]} and "
                           f"{mat2.shape[0]}x{mat2.shape[1]})")
    return self @ mat2


def _bmm(self, mat2):
    """Batched matrix product of two 3-d tensors with the same batch size (torch's bmm: no broadcasting)."""
    _tm._t(mat2, "mat2", "bmm")
    if self.ndim != 3 or mat2.ndim != 3:
        raise RuntimeError(f"bmm(): batch1 and batch2 must be 3D tensors, got {self.ndim}-d and {mat2.ndim}-d")
    if self.shape[0] != mat2.shape[0] or self.shape[2] != mat2.shape[1]:
        raise RuntimeError(f"bmm(): shapes {list(self.shape)} and {list(mat2.shape)} do not match (batch sizes "
                           "equal, and self's last dim equal to mat2's middle dim)")
    return self @ mat2


def _cross(self, other, dim=None):
    return _ts.cross(self, other, dim)


def _sum_to_size(self, *args, size=None):
    return _tm.sum_to_size(self, *args, size=size)


def _mT(self):
    if self.ndim < 2:
        raise RuntimeError(f"tensor.mT is only supported on matrices or batches of matrices. Got {self.ndim}-D "
                           "tensor.")
    return self.transpose(-2, -1)


def _mH(self):
    if self.ndim < 2:
        raise RuntimeError(f"tensor.mH is only supported on matrices or batches of matrices. Got {self.ndim}-D "
                           "tensor.")
    return self.transpose(-2, -1)  # real tensors: the conjugate is the tensor


def _H(self):
    if self.ndim not in (0, 2):
        raise RuntimeError(f"tensor.H is only supported on matrices (2-D tensors). Got {self.ndim}-D tensor."
                           + (" For batches of matrices, consider using tensor.mH" if self.ndim > 2 else ""))
    return self.transpose(0, 1) if self.ndim == 2 else self


def _fill_diagonal_(self, fill_value, wrap=False):
    return _tm.fill_diagonal_(self, fill_value, wrap)


_SAME = ("tensor_split", "hsplit", "vsplit", "dsplit", "split_with_sizes", "unsafe_split", "unsafe_chunk",
         "swapaxes", "swapdims", "ravel", "unflatten", "select", "rot90", "diff", "repeat_interleave",
         "select_scatter", "slice_scatter", "diagonal_scatter", "diagflat", "addcmul", "addcdiv", "dist", "renorm",
         "index_put", "put", "adjoint")

METHODS = {n: _method(FUNCTIONS[n]) for n in _SAME}
METHODS.update({
    "unfold": _method(_ts.unfold), "tril": _tril, "triu": _triu, "where": _where, "mm": _mm, "bmm": _bmm,
    "cross": _cross,    "sum_to_size": _sum_to_size, "fill_diagonal_": _fill_diagonal_,
    "tril_": _inplace(_tril, "tril_"), "triu_": _inplace(_triu, "triu_"),
    "addcmul_": _inplace(_tm.addcmul, "addcmul_", (0, 1)), "addcdiv_": _inplace(_tm.addcdiv, "addcdiv_", (0, 1)),
    "renorm_": _inplace(_tm.renorm, "renorm_"),
    "index_put_": _inplace(_tm.index_put, "index_put_", (1,)), "put_": _inplace(_tm.put, "put_", (1,)),
})
PROPERTIES = {"mT": _mT, "mH": _mH, "H": _H}


def install(package_namespace: dict) -> None:
    """Put the functions on the package and the methods and properties on Tensor, where none has the name."""
    from ._tensor_methods import TensorMethods
    for name, fn in FUNCTIONS.items():
        package_namespace.setdefault(name, fn)
    for name, m in METHODS.items():
        if not hasattr(Tensor, name):
            setattr(TensorMethods, name, m)
    for name, getter in PROPERTIES.items():
        if not hasattr(Tensor, name):
            setattr(TensorMethods, name, property(getter, doc=getter.__doc__))


__all__ = sorted(FUNCTIONS)
