"""Timing and thread pinning shared by the benchmark suites.

Every runtime in a comparison runs with the same thread count (forgegrad.set_num_threads,
torch.set_num_threads, threadpoolctl for numpy's BLAS), and the runtimes are timed in interleaved
rounds so that a burst of load from elsewhere on the machine hits all of them alike. A runtime
that is not installed is reported as "absent" instead of failing the run.

Clock (CLOCK): "auto" times single-threaded rows by the CPU time of the calling thread (on a
machine shared with other work, wall time there mostly measures the scheduler; every runtime
pinned to one thread computes on the calling thread) and multithreaded rows by wall time; "wall"
uses wall time everywhere. Statistic (STAT): "median" of the samples (default) or "min" (the
least disturbed sample, for a busy machine). `python -m forgegrad.bench --clock/--stat` set them.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import statistics
import time
from typing import Callable, Dict, List, Optional

import forgegrad

# Environment variables that change OpenBLAS's kernel choice when numpy loads it (they make numpy
# slower on this project's machines); benchmarks run with them unset: `env -u OPENBLAS_CORETYPE
# -u OPENBLAS_L2_SIZE python -m forgegrad.bench ...`.
OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


CLOCK = "auto"   # "auto" or "wall"
STAT = "median"  # "median" or "min"
_pinned = [0]    # thread count set by the innermost pinned_threads (0: none)
# Seconds of idle before each multithreaded sample. After a call, a runtime's worker threads keep
# spinning for a while (OpenBLAS's for tens of milliseconds, torch's OpenMP's and forgegrad's for
# less) and on a 2-core machine that steals a core from whichever runtime is timed next; the pause
# lets them park.
COOL_DOWN = 0.1


def optional_import(name: str):
    """The module, or None when it is not installed (the runtime is then reported "absent")."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def openblas_env_warning() -> Optional[str]:
    found = [v for v in OPENBLAS_ENV if v in os.environ]
    if not found:
        return None
    return (f"warning: {', '.join(found)} set; numpy's OpenBLAS may run slower than usual "
            f"(run with `env -u {' -u '.join(OPENBLAS_ENV)} ...`)")


@contextlib.contextmanager
def pinned_threads(n: int):
    """Run forgegrad, torch and numpy's BLAS with n threads each; restore the old counts after."""
    torch = optional_import("torch")
    threadpoolctl = optional_import("threadpoolctl")
    old_fg = forgegrad.get_num_threads()
    old_torch = torch.get_num_threads() if torch is not None else None
    forgegrad.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    limits = (threadpoolctl.threadpool_limits(limits=n, user_api="blas")
              if threadpoolctl is not None else contextlib.nullcontext())
    old_pinned = _pinned[0]
    _pinned[0] = n
    try:
        with limits:
            yield
    finally:
        _pinned[0] = old_pinned
        forgegrad.set_num_threads(old_fg)
        if torch is not None:
            torch.set_num_threads(old_torch)


def best_of_interleaved(fns: Dict[str, Callable[[], object]], rounds: int, warmup: int = 0,
                        clock: Callable[[], float] = time.perf_counter):
    """({name: least seconds of its call over ``rounds`` rounds}, {name: its last call's result}) with the calls
    interleaved in each round (a burst of load from elsewhere hits them alike) after ``warmup`` untimed rounds: the
    one-shot comparisons of the bench/ scripts. ``clock``: wall time, or ``time.thread_time`` (CPU time, for a
    shared machine)."""
    best = {name: float("inf") for name in fns}
    results: Dict[str, object] = {}
    for i in range(warmup + rounds):
        for name, fn in fns.items():
            start = clock()
            results[name] = fn()
            if i >= warmup:
                best[name] = min(best[name], clock() - start)
    return best, results

def _clock() -> Callable[[], float]:
    if CLOCK == "auto" and _pinned[0] == 1:
        return time.thread_time
    return time.perf_counter


def _loops_for(fn: Callable[[], object], min_time: float, clock: Callable[[], float]) -> int:
    """Calls per timed sample so that one sample lasts about min_time (timer resolution, noise)."""
    t0 = clock()
    fn()
    once = max(clock() - t0, 1e-7)
    return max(1, int(min_time / once))


def compare(fns: Dict[str, Optional[Callable[[], object]]], *, repeat: int = 9, warmup: int = 2,
            min_time: float = 0.02) -> Dict[str, Optional[float]]:
    """Median (or STAT) seconds per call of each function, timed in interleaved rounds.

    fns maps a runtime name to a no-argument callable, or to None for an absent runtime (its
    result is None). See compare_samples for how the rounds are timed.
    """
    return summarize(compare_samples(fns, repeat=repeat, warmup=warmup, min_time=min_time))


def summarize(samples: Dict[str, Optional[List[float]]]) -> Dict[str, Optional[float]]:
    """{runtime: STAT of its per-round samples, or None for an absent runtime}."""
    stat = min if STAT == "min" else statistics.median
    return {k: (stat(v) if v else None) for k, v in samples.items()}


def compare_samples(fns: Dict[str, Optional[Callable[[], object]]], *, repeat: int = 9, warmup: int = 2,
                    min_time: float = 0.02) -> Dict[str, Optional[List[float]]]:
    """Seconds per call of each function in each of `repeat` interleaved rounds ({runtime: [s, ...]},
    None for an absent runtime).

    Each function first runs `warmup` times (caches, thread pools, lazy allocation); then each
    round times every function once, for enough calls that a sample lasts about min_time. Sample
    i of every runtime comes from the same round, so a burst of load from elsewhere hits all of
    them alike and per-round ratios are fair. Multithreaded samples each start after a COOL_DOWN
    pause.
    """
    present = {k: f for k, f in fns.items() if f is not None}
    for f in present.values():
        for _ in range(warmup):
            f()
    clock = _clock()
    loops = {k: _loops_for(f, min_time, clock) for k, f in present.items()}
    samples: Dict[str, list] = {k: [] for k in present}
    cool_down = COOL_DOWN if _pinned[0] > 1 and len(present) > 1 else 0.0
    for _ in range(repeat):
        for k, f in present.items():
            n = loops[k]
            if cool_down:
                time.sleep(cool_down)
            t0 = clock()
            for _ in range(n):
                f()
            samples[k].append((clock() - t0) / n)
    return {k: samples.get(k) for k in fns}


def clock_name() -> str:
    """The clock compare_samples uses now: "cpu" (calling thread's CPU time) or "wall"."""
    return "cpu" if _clock() is time.thread_time else "wall"


def ort_session(ort, model, threads: int):
    """An onnxruntime CPU session for ``model`` (an ONNX file's path or bytes) pinned to ``threads``
    intra-op threads and one inter-op thread, as every suite compares it."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
