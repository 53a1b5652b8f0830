"""How a sparse op joins the autograd graph. ``SparseFunction.apply`` is Function.apply's graph recording for
inputs and outputs that may be sparse storages (forgegrad.sparse._storage): dense arrays are wrapped as Tensors,
storages as SparseTensors. The engine (forgegrad.autograd) runs the backward rules unchanged: a sparse input's
gradient is a storage of its shape (or a dense array, as torch.mm gives), checked and summed like any other."""
from __future__ import annotations

import numpy as np

from .. import _version_counter as _vc
from ..autograd import Function
from ..grad_mode import records_graph
from ..tensor import Tensor
from ._storage import _SparseStorage


def wrap(out):
    """A Function's output as a tensor: a storage as a SparseTensor, an array as a Tensor (dtype kept)."""
    if isinstance(out, _SparseStorage):
        from ._tensor import SparseTensor
        return SparseTensor._from_storage(out)
    return Tensor._wrap_exact(np.asarray(out) if isinstance(out, np.generic) else out)


def accumulate(t, g) -> None:
    """Add gradient ``g`` (a sparse storage or a dense array) into ``t.grad`` (Tensor._accumulate_grad's sparse
    case, for a sparse leaf or a dense one with a sparse gradient such as Embedding(sparse=True)'s weight)."""
    if isinstance(g, np.generic):
        g = np.asarray(g)
    if t.grad is None:
        t.grad = wrap(g.copy() if isinstance(g, _SparseStorage) else np.array(g, copy=True))
    else:
        t.grad = wrap(add_grads(t.grad._data, g))


def add_grads(a, b):
    """a + b for two gradients of one tensor, either sparse storages or dense arrays (dense wins, as torch's)."""
    if isinstance(a, np.ndarray) and isinstance(b, _SparseStorage):
        return b + a
    return a + b


class SparseFunction(Function):
    """A Function whose forward takes and returns dense arrays or sparse storages (CPU only)."""

    name = "sparse op"

    @classmethod
    def apply(cls, *args, **kwargs):
        raw, needs = [], []
        for a in args:
            if isinstance(a, Tensor):
                d = a._data
                if not isinstance(d, (np.ndarray, _SparseStorage)):
                    raise RuntimeError(f"{cls.name}: sparse tensors and their ops are CPU only, got a tensor on "
                                       f"{a.device}; move it with .cpu()")
                raw.append(d)
                needs.append(bool(a.requires_grad))
            else:
                raw.append(a)
                needs.append(False)
        ctx = cls.__new__(cls)
        ctx.needs_input_grad = needs
        ctx.saved_at = None
        with np.errstate(all="ignore"):
            out = cls.forward(ctx, *raw, **kwargs)
        single = type(out) is not tuple
        results = tuple(wrap(o) for o in ((out,) if single else out))
        if any(needs) and records_graph():
            ctx.parents = tuple(a if isinstance(a, Tensor) else None for a in args)
            ctx.call = (args, kwargs)
            ctx.made_at = _vc.clock
            ctx.out_meta = tuple((t._data.shape, t._data.dtype) for t in results)
            ctx.released = False
            for i, t in enumerate(results):
                if t._data.dtype.kind in "fc":
                    t.requires_grad, t._ctx, t._out_index = True, ctx, i
        return results[0] if single else results
