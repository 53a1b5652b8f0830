"""forgegrad.bench: forgegrad's kernels timed against reference runtimes (numpy/OpenBLAS, torch).

Suites live in a registry: each module of this package (one file per area: gemm.py, later conv,
lstm, adam...) registers a function with @suite("name"). A suite takes the thread counts and a
`quick` flag and returns rows

    {"workload": str, "threads": int, "seconds": {runtime: seconds or None (absent)},
     "flop": float (optional, gives GFLOP/s columns)}

that `format_table` turns into one table (a runtime missing from a row's "seconds" is not timed on
that row, e.g. onnxruntime on a training row, and shows as "-"). The command line is
``python -m forgegrad.bench``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Dict, List, Sequence

__all__ = ["suite", "suites", "run", "format_table", "BASELINE"]

Row = dict
SuiteFn = Callable[[Sequence[int], bool], List[Row]]
_SUITES: Dict[str, SuiteFn] = {}

# The runtime forgegrad is compared with first (ratio columns are forgegrad's speed relative to
# each other runtime: > 1 means forgegrad is faster).
SUBJECT = "forgegrad"
BASELINE = "numpy"


def suite(name: str):
    """Decorator registering a suite function under `name`."""
    def register(fn: SuiteFn) -> SuiteFn:
        _SUITES[name] = fn
        return fn
    return register


def suites() -> Dict[str, SuiteFn]:
    """All registered suites, importing every public module of this package first."""
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    return dict(_SUITES)


def run(name: str, threads: Sequence[int] = (1,), quick: bool = False) -> List[Row]:
    all_suites = suites()
    if name not in all_suites:
        raise ValueError(f"unknown benchmark suite {name!r}; known: {', '.join(sorted(all_suites))}")
    return all_suites[name](tuple(threads), quick)


def format_table(rows: List[Row]) -> str:
    """Plain-text table: workload, threads, speed of each runtime, forgegrad's speed ratios."""
    runtimes: List[str] = []
    for r in rows:
        for k in r["seconds"]:
            if k not in runtimes:
                runtimes.append(k)
    others = [k for k in runtimes if k != SUBJECT]
    use_flop = all("flop" in r for r in rows)
    unit = "GFLOP/s" if use_flop else "ms"
    head = ["workload", "threads"] + [f"{k} {unit}" for k in runtimes]
    if SUBJECT in runtimes:
        head += [f"x {k}" for k in others]
    lines = [head]
    for r in rows:
        sec = r["seconds"]
        cells = [r["workload"], str(r["threads"])]
        for k in runtimes:
            s = sec.get(k)
            if k not in sec:  # this row does not time k (e.g. onnxruntime on a training row)
                cells.append("-")
            elif s is None:
                cells.append("absent")
            elif use_flop:
                cells.append(f"{r['flop'] / s / 1e9:.1f}")
            else:
                cells.append(f"{s * 1e3:.3f}")
        if SUBJECT in runtimes:
            for k in others:
                a, b = sec.get(SUBJECT), sec.get(k)
                cells.append("-" if a is None or b is None else f"{b / a:.2f}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
