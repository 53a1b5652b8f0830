"""forgegrad.bench: forgegrad's kernels timed against reference runtimes (numpy/OpenBLAS, torch).

This package is the single source of the benchmark workloads. Each module (one file per area:
gemm.py, conv.py, rnn.py, adam.py, ...) lists its workloads as ``Workload`` records (a name, the
runtimes it times, and a function building one no-argument call per runtime) in ``workloads(quick)``,
and registers a suite with @suite("name") that times them with ``time_workloads``. The
pytest-benchmark files in the repository's bench/ directory are thin wrappers that parametrize
over the same ``workloads()``. A suite takes the thread counts and a `quick` flag and returns rows

    {"workload": str, "threads": int, "seconds": {runtime: seconds or None (absent)},
     "samples": {runtime: [seconds per call in each interleaved round] or None},
     "clock": "cpu" or "wall", "flop": float (optional, gives GFLOP/s columns),
     "note": str (optional, printed under the table)}

that `format_table` turns into one table (a runtime missing from a row's "seconds" is not timed on
that row, e.g. onnxruntime on a training row, and shows as "-"). The command line is
``python -m forgegrad.bench``.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["suite", "suites", "run", "format_table", "format_details", "BASELINE", "Workload", "time_workloads"]

Row = dict
SuiteFn = Callable[[Sequence[int], bool], List[Row]]
_SUITES: Dict[str, SuiteFn] = {}
_DETAILS: Dict[str, Callable[[List[Row]], str]] = {}  # suites whose rows carry more than one table shows

# The runtime forgegrad is compared with first (ratio columns are forgegrad's speed relative to
# each other runtime: > 1 means forgegrad is faster).
SUBJECT = "forgegrad"
BASELINE = "numpy"


@dataclass(frozen=True)
class Workload:
    """One benchmark row: what is timed, on which runtimes, and how to build the timed calls.

    Attributes:
        name: the row's label (unique within a suite).
        runtimes: the runtimes this row times, forgegrad first.
        make: callable(threads) -> {runtime: no-argument callable, or None when that runtime is not
            installed}. Called with every runtime already pinned to ``threads`` (sessions such as
            onnxruntime's take the count when they are built), so the calls are built per count.
        flop: floating-point operations per call (gives GFLOP/s columns), or None.
        info: extra numbers for pytest-benchmark's extra_info (e.g. bytes moved per call).
    """

    name: str
    runtimes: Tuple[str, ...]
    make: Callable[[int], Dict[str, Optional[Callable[[], object]]]]
    flop: Optional[float] = None
    info: Dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:  # the pytest id of a parametrized wrapper
        return self.name.replace(" ", "_")


def time_workloads(workloads: Sequence[Workload], threads: Sequence[int], repeat: int,
                   min_time: float) -> List[Row]:
    """One row per workload and thread count, every runtime timed by _timing.compare."""
    from ._timing import clock_name, compare_samples, pinned_threads, summarize
    rows = []
    for w in workloads:
        for n in threads:
            with pinned_threads(n):
                fns = w.make(n)
                samples = compare_samples({r: fns[r] for r in w.runtimes}, repeat=repeat, min_time=min_time)
                row = {"workload": w.name, "threads": n, "seconds": summarize(samples), "samples": samples,
                       "clock": clock_name()}
            if w.flop is not None:
                row["flop"] = w.flop
            rows.append(row)
    return rows


def suite(name: str, details: Optional[Callable[[List[Row]], str]] = None):
    """Decorator registering a suite function under `name`; ``details(rows)``, if given, formats
    what the rows carry beyond the standard table (printed after it by ``format_details``)."""
    def register(fn: SuiteFn) -> SuiteFn:
        _SUITES[name] = fn
        if details is not None:
            _DETAILS[name] = details
        return fn
    return register


def format_details(name: str, rows: List[Row]) -> Optional[str]:
    """The suite's extra table (e.g. latency percentiles of `serve`), or None."""
    fn = _DETAILS.get(name)
    return fn(rows) if fn is not None else None


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
    out += [f"note: {r['workload']} ({r['threads']} threads): {r['note']}" for r in rows if r.get("note")]
    return "\n".join(out)
