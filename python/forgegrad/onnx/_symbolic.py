"""Dynamic dimensions, found by running the model twice.

The exporter traces the model at the example's sizes (trace A) and again with every dynamic axis
(batch, sequence, ...) set to another size (trace B). A dimension or integer argument that is equal
in both traces is static; one that differs is a ``Dyn`` and is solved, when an op needs its value at
run time (a Reshape target, a Slice bound), as an ``Expr`` of the dynamic input axes:
``coef * prod(symbols)`` (flatten/unflatten of batch and sequence) or ``symbol + offset``
(``x[:, :-1]`` on the sequence axis). Trace B's sizes are chosen so that this solution is unique.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

__all__ = ["Dyn", "Expr", "Symbols"]


@dataclass(frozen=True)
class Dyn:
    """A dimension (or integer) that was ``a`` in trace A and ``b`` in trace B."""

    a: int
    b: int

    def __str__(self) -> str:
        return f"dyn({self.a})"


@dataclass(frozen=True)
class Expr:
    """coef * prod(symbols) + offset, evaluated at run time from the graph inputs' shapes."""

    coef: int
    syms: Tuple[str, ...]
    offset: int = 0

    def __str__(self) -> str:
        s = "*".join(([str(self.coef)] if self.coef != 1 else []) + list(self.syms))
        if self.offset:
            s += f"{self.offset:+d}"
        return s

    def shifted(self, delta: int) -> "Expr":
        return Expr(self.coef, self.syms, self.offset + delta)


# sizes tried for trace B; small primes keep the extra forward pass cheap
_CANDIDATES = (5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


class Symbols:
    """The named dynamic axes of the graph inputs: their sizes in traces A and B and their source."""

    def __init__(self):
        self.names: List[str] = []
        self.a: Dict[str, int] = {}
        self.b: Dict[str, int] = {}
        self.source: Dict[str, Tuple[str, int]] = {}  # symbol -> (graph input name, axis)

    def add(self, name: str, size: int, source: Tuple[str, int]) -> None:
        if name in self.a:
            if self.a[name] != size:
                src = self.source[name]
                raise ValueError(f"dynamic axis {name!r} has size {self.a[name]} on input {src[0]!r} axis "
                                 f"{src[1]} but {size} on input {source[0]!r} axis {source[1]}")
            return
        self.names.append(name)
        self.a[name] = int(size)
        self.source[name] = source

    def choose_b(self) -> None:
        """Pick trace-B sizes: each differs from trace A's, and no two symbols share a B size, a
        ratio b/a or a difference b-a, so Dyn values map to one Expr only."""
        for name in self.names:
            a = self.a[name]
            for v in _CANDIDATES:
                if v == a:
                    continue
                ok = all(v != self.b[o] and v * self.a[o] != self.b[o] * a and v - a != self.b[o] - self.a[o]
                         for o in self.b)
                if ok:
                    self.b[name] = v
                    break
            else:  # pragma: no cover - needs more than ~8 dynamic axes
                raise ValueError(f"could not choose a trace size for dynamic axis {name!r}")

    def solve(self, dim: Dyn) -> Optional[Expr]:
        """The unique Expr that is dim.a under trace A's sizes and dim.b under trace B's, else None."""
        found = []
        for r in range(1, len(self.names) + 1):
            for subset in itertools.combinations(self.names, r):
                ma = mb = 1
                for s in subset:
                    ma *= self.a[s]
                    mb *= self.b[s]
                if dim.a % ma == 0 and dim.b % mb == 0 and dim.a // ma == dim.b // mb and dim.a // ma > 0:
                    found.append(Expr(dim.a // ma, subset, 0))
        if len(found) == 1:
            return found[0]
        if found:
            return None
        for s in self.names:
            off = dim.a - self.a[s]
            if dim.b - self.b[s] == off:
                found.append(Expr(1, (s,), off))
        return found[0] if len(found) == 1 else None

    def label(self, dim) -> Optional[str]:
        """A dim_param name for a graph output dimension: the symbol itself, or e.g. 'batch*seq'."""
        if not isinstance(dim, Dyn):
            return None
        e = self.solve(dim)
        return None if e is None else str(e)
