"""Dense ops meeting a sparse tensor. forgegrad._op_dispatch.dispatch (the non-float32 path of Function.apply,
which every sparse tensor takes: its storage is no ndarray) calls ``sparse_op`` when an argument's storage is
sparse: the ops with a sparse rule run it (torch.mm / matmul / @ with a sparse lhs, add, mul by a number), every
other op raises TypeError naming itself, as torch refuses an op that has no sparse kernel."""
from __future__ import annotations

from .. import _op_dispatch
from . import _functions as F


def _matmul(a, b):
    return F.mm(a, b, sampled=False)


def _add(a, b, alpha=1):
    return F.add(a, b, alpha=alpha)


RULES = {"matmul": _matmul, "add": _add, "mul": F.mul}


def sparse_op(cls, args, kwargs):
    name = cls.op.name if cls.op is not None else cls.__qualname__
    rule = RULES.get(name)
    if rule is None:
        layouts = sorted({a._data.layout_name for a in args if hasattr(a, "_data")
                          and getattr(type(a._data), "_is_sparse_storage", False)})
        raise TypeError(f"{name}: not supported for sparse tensors (layout {', '.join(layouts)}): forgegrad has no "
                        f"sparse kernel for it; convert with .to_dense() first (see docs/torch_compat.md for the "
                        "sparse ops)")
    return rule(*args, **kwargs)


def install() -> None:
    _op_dispatch.SPARSE_OP = sparse_op
