"""Named tuples that ops return, as torch.return_types: ``values, indices = x.max(1)`` and
``x.max(1).indices`` both work (a plain tuple otherwise)."""
from collections import namedtuple

__all__ = ["max", "min", "sort", "topk", "kthvalue", "cummax", "cummin"]

max = namedtuple("max", ["values", "indices"])  # noqa: A001  (torch.return_types.max)
min = namedtuple("min", ["values", "indices"])  # noqa: A001
sort = namedtuple("sort", ["values", "indices"])
topk = namedtuple("topk", ["values", "indices"])
kthvalue = namedtuple("kthvalue", ["values", "indices"])
cummax = namedtuple("cummax", ["values", "indices"])
cummin = namedtuple("cummin", ["values", "indices"])
