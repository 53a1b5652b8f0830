"""Dynamic dimensions, found by running the model twice.

The exporter traces the model at the example's sizes (trace A) and again twice with every dynamic
axis (batch, sequence, ...) set to other sizes (traces B and C). A dimension or integer argument that
is equal in all traces is static; one that differs is a ``Dyn`` and is solved, when an op needs its
value at run time (a Reshape target, a Slice bound), as an ``Expr`` of the dynamic input axes:
``coef * prod(symbols)`` (flatten/unflatten of batch and sequence) or ``symbol + offset``
(``x[:, :-1]`` on the sequence axis). Two traces fix such an expression; the third checks it, so
that e.g. ``batch // 2`` is refused instead of being taken for ``batch - 3``. The sizes of B and C
are chosen so that the solution is unique.

An input axis may also be named as a sum of other axes' symbols, ``"past_sequence+sequence"`` (a KV-cache
decoder's attention mask covers the cached and the new tokens): its size in every trace is that sum, and
it is a symbol of its own for the expressions, read off its input's shape at run time.

A symbol may also be divided (``divide``: an image side by a patch size): ``"height//14"`` is then a symbol whose
size is floor(height / 14) in every trace, computed at run time by an integer Div, and the traces step ``height`` by
more than 14 (with remainders that differ, so floor(height / 14) is told from height / 14), so that a patch grid's
sizes and the products of its sides (``1 + height//14 * width//14`` tokens) solve to expressions.

A symbol may also be divided rounding up (``divide(..., ceil=True)``): ``"ceil(sequence/128)"`` is the number of whole
blocks of 128 that cover ``sequence`` (a block-local attention pads its input to them), computed at run time as
(sequence + 127) // 128; the padded length is then ``128*ceil(sequence/128)``, and a model pads by a whole block and
slices to that length rather than pad by the remainder (which is no product of symbols).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["Dyn", "Expr", "Symbols"]


@dataclass(frozen=True)
class Dyn:
    """A dimension (or integer) that was ``a`` in trace A, ``b`` in trace B, ``c`` in trace C."""

    a: int
    b: int
    c: Optional[int] = None

    def shifted(self, delta: int) -> "Dyn":
        return Dyn(self.a + delta, self.b + delta, None if self.c is None else self.c + delta)

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




class Symbols:
    """The named dynamic axes of the graph inputs: their sizes in traces A and B and their source."""

    def __init__(self):
        self.names: List[str] = []
        self.a: Dict[str, int] = {}
        self.b: Dict[str, int] = {}
        self.c: Dict[str, int] = {}
        self.source: Dict[str, Tuple[str, int]] = {}  # symbol -> (graph input name, axis)
        self.axes: List[Tuple[str, int]] = []  # every (graph input name, axis) a symbol names, in order
        self.derived: Dict[str, Tuple[str, ...]] = {}  # "a+b" -> ("a", "b"): a sum of other symbols
        self.quotients: Dict[str, Tuple[str, int]] = {}  # "height//14" -> ("height", 14)
        self.ceilings: Dict[str, Tuple[str, int]] = {}  # "ceil(sequence/128)" -> ("sequence", 128)

    @property
    def free(self) -> List[str]:
        """The symbols whose sizes are chosen (not sums of others, nor quotients)."""
        return [n for n in self.names if n not in self.derived and n not in self.quotients and n not in self.ceilings]

    def full(self, sizes: Dict[str, int]) -> Dict[str, int]:
        """The example's sizes with ``sizes`` (free symbols) over them, and every sum and quotient recomputed."""
        out = {**self.a, **sizes}
        for name, parts in self.derived.items():
            out[name] = sum(out[p] for p in parts)
        for name, (parent, d) in self.quotients.items():
            out[name] = out[parent] // d
        for name, (parent, d) in self.ceilings.items():
            out[name] = -(-out[parent] // d)
        return out

    def divide(self, name: str, divisor: int, ceil: bool = False) -> str:
        """Add the symbol ``name//divisor`` (floor(name / divisor)), or with ``ceil`` ``ceil(name/divisor)``, before
        ``choose_sizes``; returns its name."""
        what = "axis_ceil_divisors" if ceil else "axis_divisors"
        if name not in self.a or name in self.derived or name in self.quotients or name in self.ceilings:
            raise ValueError(f"{what} names {name!r}, which is not a dynamic input axis (those are {self.free})")
        if isinstance(divisor, bool) or not isinstance(divisor, (int, np.integer)) or divisor < 2:
            raise ValueError(f"{what}[{name!r}] must be an int of at least 2, got {divisor!r}")
        d = int(divisor)
        other = self.quotients if ceil else self.ceilings
        if (name, d) in other.values():  # the traces' sizes are never multiples of d: the two would differ by 1 in all
            raise ValueError(f"{what}[{name!r}] = {d}: the axis is divided by {d} rounding both down (axis_divisors) "
                             f"and up (axis_ceil_divisors); the traces cannot tell the two apart")
        q, table = (f"ceil({name}/{d})", self.ceilings) if ceil else (f"{name}//{d}", self.quotients)
        if q not in table:
            table[q] = (name, d)
            self.names.append(q)
            self.a[q] = -(-self.a[name] // d) if ceil else self.a[name] // d
            self.source[q] = self.source[name]
        return q

    def divide_all(self, axis_divisors, ceil: bool = False) -> None:
        """``divide`` each of export's ``axis_divisors`` (or, with ``ceil``, ``axis_ceil_divisors``; None: none)."""
        if axis_divisors is not None and not isinstance(axis_divisors, dict):
            what = "axis_ceil_divisors" if ceil else "axis_divisors"
            raise TypeError(f"export: {what} must map dynamic axis names to ints, got {axis_divisors!r}")
        for name, d in (axis_divisors or {}).items():
            self.divide(name, d, ceil)

    def _divisors(self, name: str) -> List[int]:
        return [d for p, d in (*self.quotients.values(), *self.ceilings.values()) if p == name]

    def _quotients_of(self, name: str, v: int) -> Dict[str, int]:
        """The sizes of ``name``'s quotient symbols (floor and ceil) when it is ``v``."""
        out = {q: v // d for q, (p, d) in self.quotients.items() if p == name}
        out.update({q: -(-v // d) for q, (p, d) in self.ceilings.items() if p == name})
        return out

    def add(self, name: str, size: int, source: Tuple[str, int]) -> None:
        if "+" in name and name not in self.derived:
            parts = tuple(p.strip() for p in name.split("+"))
            if not all(parts) or len(set(parts)) != len(parts):
                raise ValueError(f"dynamic axis {name!r} of input {source[0]!r}: a sum must name distinct axes, "
                                 "as 'past_sequence+sequence'")
            self.derived[name] = parts
        self.axes.append(source)
        if name in self.a:
            if self.a[name] != size:
                src = self.source[name]
                raise ValueError(f"dynamic axis {name!r} has size {self.a[name]} on input {src[0]!r} axis "
                                 f"{src[1]} but {size} on input {source[0]!r} axis {source[1]}")
            return
        self.names.append(name)
        self.a[name] = int(size)
        self.source[name] = source

    def choose_sizes(self) -> None:
        """Pick the sizes of traces B and C: each differs from the others' for the same symbol, and no
        two symbols share a size, a ratio to trace A's or a difference from it, so a Dyn maps to one
        Expr only. The sizes are just above the example's: a model that runs at the example's sizes
        (a minimum sequence length, say) runs at these too, at about the same cost."""
        for name, parts in self.derived.items():
            missing = [p for p in parts if p not in self.a or p in self.derived]
            if missing:
                raise ValueError(f"dynamic axis {name!r} (on input {self.source[name][0]!r}) sums {missing}, "
                                 f"which name no axis of the other inputs (dynamic axes: {self.free})")
            if self.a[name] != sum(self.a[p] for p in parts):
                raise ValueError(f"dynamic axis {name!r} has size {self.a[name]} on input {self.source[name][0]!r} "
                                 f"but {' + '.join(f'{p} ({self.a[p]})' for p in parts)} = "
                                 f"{sum(self.a[p] for p in parts)}")
        def distinct(name, v, sizes):  # v differs from the others' sizes, ratios to trace A and steps from it
            a = self.a[name]
            return all(v != sizes[o] and v * self.a[o] != sizes[o] * a and v - a != sizes[o] - self.a[o]
                       for o in sizes)

        for trace, sizes in enumerate((self.b, self.c)):
            for name in self.free:
                a, divs = self.a[name], self._divisors(name)
                for v in self._candidates(a, divs, trace):
                    if v == a or v == self.b.get(name) or not distinct(name, v, sizes):
                        continue
                    quot = self._quotients_of(name, v)
                    if all(q != self.b.get(n) and distinct(n, q, {**sizes, name: v}) for n, q in quot.items()):
                        sizes[name] = v
                        sizes.update(quot)
                        break
                else:  # pragma: no cover - needs more than ~4 dynamic axes
                    raise ValueError(f"could not choose a trace size for dynamic axis {name!r}")
            sizes.update({k: v for k, v in self.full(sizes).items() if k in self.derived})

    @staticmethod
    def _candidates(a: int, divs: List[int], trace: int):
        """Trace sizes to try for an axis of example size ``a``: just above it, or, for a divided axis, a whole
        multiple of the largest divisor more, with remainder 1 in trace B and divisor - 1 in trace C (floor(v / d)
        then changes, and v is no multiple of d)."""
        if not divs:
            yield from range(a + 1, a + 64)
            return
        d = max(divs)
        r = 1 if trace == 0 else d - 1
        for k in range(1, 64):
            yield (a // d + k) * d + r

    def solve(self, dim: Dyn) -> Optional[Expr]:
        """The unique Expr that gives dim.a, dim.b (and dim.c) at the traces' sizes, else None."""
        traces = [(dim.a, self.a), (dim.b, self.b)] + ([(dim.c, self.c)] if dim.c is not None and self.c else [])
        found = []
        for r in range(1, len(self.names) + 1):
            for subset in itertools.combinations(self.names, r):
                coefs = set()
                for v, sizes in traces:
                    m = 1
                    for sym in subset:
                        m *= sizes[sym]
                    coefs.add(v // m if m and v % m == 0 else None)  # m 0: a quotient of an axis below its divisor
                if len(coefs) == 1 and None not in coefs and next(iter(coefs)) > 0:
                    found.append(Expr(coefs.pop(), subset, 0))
        if len(found) == 1:
            return found[0]
        if found:
            return None
        for sym in self.names:
            offsets = {v - sizes[sym] for v, sizes in traces}
            if len(offsets) == 1:
                found.append(Expr(1, (sym,), offsets.pop()))
        if found or len(traces) < 3:
            return found[0] if len(found) == 1 else None
        for r in range(1, len(self.names) + 1):  # coef * prod(symbols) + offset (1 + h//p * w//p tokens)
            for subset in itertools.combinations(self.names, r):
                ms = [int(np.prod([sizes[s] for s in subset])) for _, sizes in traces]
                if ms[0] == ms[1]:
                    continue
                coef, rem = divmod(traces[0][0] - traces[1][0], ms[0] - ms[1])
                offset = traces[0][0] - coef * ms[0]
                if rem == 0 and coef > 0 and all(v == coef * m + offset for (v, _), m in zip(traces, ms)):
                    found.append(Expr(coef, subset, offset))
        return found[0] if len(found) == 1 else None

    def label(self, dim) -> Optional[str]:
        """A dim_param name for a graph output dimension: the symbol itself, or e.g. 'batch*seq'."""
        if not isinstance(dim, Dyn):
            return None
        e = self.solve(dim)
        return None if e is None else str(e)
