"""Small timing helpers shared by ``quickstart``: pinned threads on every runtime, median timings."""
from __future__ import annotations

import contextlib
import statistics
import time

from .. import _runtime
from ._errors import optional


@contextlib.contextmanager
def pinned_threads(n: int):
    """forgegrad, torch (when installed) and numpy's BLAS (through threadpoolctl, when installed) on n threads."""
    torch = optional("torch")
    tpc = optional("threadpoolctl")
    old_fg = _runtime.get_num_threads()
    old_torch = torch.get_num_threads() if torch is not None else None
    _runtime.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    limiter = tpc.threadpool_limits(limits=n) if tpc is not None else contextlib.nullcontext()
    try:
        with limiter:
            yield
    finally:
        _runtime.set_num_threads(old_fg)
        if torch is not None:
            torch.set_num_threads(old_torch)


def median_time(fn, min_seconds: float = 0.15, min_repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds per call of fn over at least min_repeats calls and min_seconds."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 1000:
            break
    return statistics.median(times)
