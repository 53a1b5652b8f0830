"""``forgegrad bench scaling``: how forgegrad's speed and memory scale with the size of the work.

A sweep times one workload at a series of sizes (SGEMM by N; MLP, LeNet and LSTM training steps
by batch size; SGEMM and the LeNet step by thread count) for forgegrad and each installed
reference, with the same interleaved-rounds timing as the suites. The rows have the suites'
schema plus ``sweep`` and ``x`` (the size), so tables and ``bench compare`` treat them like any
other rows. Where forgegrad's curve crosses a reference's is found by interpolating the log of
the speed-up between neighbouring sizes.

Peak memory of the training steps is measured per batch size in a fresh process (``python -m
forgegrad.bench._scaling --memory MODEL RUNTIME BATCH``) that imports only the runtime it
measures: its peak RSS (VmHWM, or ru_maxrss without /proc) after a few steps, and the step's own
share of it, the peak minus the RSS once the model and optimizer are built.

More sweeps: ``register(Sweep(...))`` from any module (e.g. a suite's) adds one.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import Workload, time_workloads
from ._timing import optional_import

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# the models of the memory probe, as charts name them
MODEL_TITLES = {"mlp": "MLP 784-256-128-10", "lenet": "LeNet 1x28x28", "lstm": "LSTM 28x28 -> 128 classifier"}
QUICK_BATCHES = (1, 16, 128, 512)


@dataclass(frozen=True)
class Sweep:
    """One scaling curve.

    Attributes:
        name: short id ("sgemm", "lenet", ...); rows get suite "scaling: NAME".
        title: chart title.
        xlabel: what the size is ("batch size", "N", "threads").
        points, quick_points: the sizes (ascending).
        runtimes: runtimes timed, forgegrad first.
        make: callable(x, threads) -> {runtime: no-argument callable or None}.
        work: callable(x) -> (units of work per call, unit name), for a throughput axis.
        threads_axis: x is the thread count (every runtime pinned to x threads).
        memory: model name for the peak-memory probe (training steps), or None.
        repeat, min_time: timing rounds and seconds per sample.
    """

    name: str
    title: str
    xlabel: str
    points: Tuple[int, ...]
    quick_points: Tuple[int, ...]
    runtimes: Tuple[str, ...]
    make: Callable[[int, int], Dict[str, Optional[Callable[[], object]]]]
    work: Callable[[int], Tuple[float, str]]
    threads_axis: bool = False
    memory: Optional[str] = None
    repeat: int = 5
    min_time: float = 0.02


_SWEEPS: Dict[str, Sweep] = {}


def register(sweep: Sweep) -> Sweep:
    _SWEEPS[sweep.name] = sweep
    return sweep


def sweeps() -> Dict[str, Sweep]:
    """Every registered sweep: these and those the suite modules register (imported here first)."""
    from . import suites
    suites()
    return dict(_SWEEPS)


# ---- the models of the training-step sweeps, on each side ------------------------------------------------
def _fg_model(name: str):
    from ..models import MLP, LeNet, SequenceClassifier
    if name == "mlp":
        return MLP(784, hidden=(256, 128), out_features=10)
    if name == "lenet":
        return LeNet(in_channels=1, num_classes=10, input_size=28)
    if name == "lstm":
        return SequenceClassifier(28, hidden_size=128, num_classes=10)
    raise ValueError(f"unknown scaling model {name!r}; known: mlp, lenet, lstm")


def _torch_model(torch, name: str):
    """torch twin of _fg_model(name) with the same state_dict names."""
    if name == "mlp":
        L = torch.nn.Linear
        return torch.nn.Sequential(L(784, 256), torch.nn.ReLU(), L(256, 128), torch.nn.ReLU(), L(128, 10))
    if name == "lenet":
        from .cnn import torch_lenet
        return torch_lenet(torch)
    if name == "lstm":
        class TorchSeq(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = torch.nn.LSTM(28, 128, batch_first=True)
                self.fc = torch.nn.Linear(128, 10)

            def forward(self, x):
                return self.fc(self.rnn(x)[0][:, -1, :])
        return TorchSeq()
    raise ValueError(f"unknown scaling model {name!r}; known: mlp, lenet, lstm")


def _batch(name: str, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = {"mlp": (batch, 784), "lenet": (batch, 1, 28, 28), "lstm": (batch, 28, 28)}[name]
    return rng.random(shape, dtype=np.float32), rng.integers(0, 10, batch)


def train_step_fns(name: str, batch: int, torch=None) -> dict:
    """{"forgegrad": step, "torch": step or None}: forward, cross-entropy, backward, Adam; the same
    initial weights and batch on both sides."""
    from ._steps import classifier_step_fns
    x, y = _batch(name, batch)
    tm = _torch_model(torch, name) if torch is not None else None
    return classifier_step_fns(_fg_model(name), tm, x, y, torch)


def _sgemm_fns(n: int, _threads: int) -> dict:
    from .gemm import _gemm_fns
    return _gemm_fns(n, n, n, False, False)


def _train_sweep(name: str, title: str, memory: bool = True) -> Sweep:
    return Sweep(name, title, "batch size", BATCHES, QUICK_BATCHES, ("forgegrad", "torch"),
                 lambda b, _t: train_step_fns(name, b, optional_import("torch")),
                 lambda b: (float(b), "samples"), memory=name if memory else None, repeat=5, min_time=0.02)


def _all_threads() -> Tuple[int, ...]:
    """1, 2, 4, ... up to every core this process may use (the last point is always 'all')."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    pts = [1]
    while pts[-1] * 2 < n:
        pts.append(pts[-1] * 2)
    return tuple(pts + ([n] if n > 1 else []))


register(Sweep("sgemm", "SGEMM N x N x N (float32)", "N", (32, 64, 128, 256, 512, 1024, 2048), (64, 256, 1024),
               ("forgegrad", "numpy", "torch"), _sgemm_fns, lambda n: (2.0 * n ** 3 / 1e9, "GFLOP"),
               repeat=5, min_time=0.02))
register(_train_sweep("mlp", "MLP 784-256-128-10 training step (Adam)"))
register(_train_sweep("lenet", "LeNet 1x28x28 training step (Adam)"))
register(_train_sweep("lstm", "LSTM 28x28 -> 128 classifier training step (Adam)"))
register(Sweep("threads_sgemm", "SGEMM 1024 x 1024 x 1024 by thread count", "threads", (), (),
               ("forgegrad", "numpy", "torch"), lambda _t, t: _sgemm_fns(1024, t),
               lambda _t: (2.0 * 1024 ** 3 / 1e9, "GFLOP"), threads_axis=True, repeat=5, min_time=0.05))
register(Sweep("threads_lenet", "LeNet training step, batch 64, by thread count", "threads", (), (),
               ("forgegrad", "torch"), lambda _t, t: train_step_fns("lenet", 64, optional_import("torch")),
               lambda _t: (64.0, "samples"), threads_axis=True, repeat=5, min_time=0.05))


def points(sweep: Sweep, quick: bool) -> Tuple[int, ...]:
    if sweep.threads_axis:
        return _all_threads()
    return sweep.quick_points if quick else sweep.points


def run_sweep(sweep: Sweep, quick: bool = False, threads: int = 1, log=None) -> List[dict]:
    """Rows for every point of the sweep: the suites' schema + sweep, x, work (per call), work_unit,
    and the sweep's title, xlabel and threads_axis (so a report needs only the rows)."""
    from . import _timing
    rows = []
    repeat = min(sweep.repeat, 3) if quick else sweep.repeat
    for x in points(sweep, quick):
        n = x if sweep.threads_axis else threads
        w = Workload(f"{sweep.name} {sweep.xlabel}={x}", sweep.runtimes, lambda t, x=x: sweep.make(x, t))
        # one clock along a thread sweep: wall time (the suites' "auto" clock times 1-thread rows by CPU
        # time, which would make the 1-thread point look better than the others for a different reason)
        old_clock, _timing.CLOCK = _timing.CLOCK, ("wall" if sweep.threads_axis else _timing.CLOCK)
        try:
            row = time_workloads([w], [n], repeat, sweep.min_time / (2 if quick else 1))[0]
        finally:
            _timing.CLOCK = old_clock
        work, unit = sweep.work(x)
        row.update(suite=f"scaling: {sweep.name}", sweep=sweep.name, x=x, work=work, work_unit=unit,
                   title=sweep.title, xlabel=sweep.xlabel, threads_axis=sweep.threads_axis)
        rows.append(row)
        if log is not None:
            log(f"  {w.name}: " + ", ".join(
                f"{k} {v * 1e3:.3f} ms" if v else f"{k} absent" for k, v in row["seconds"].items()))
    return rows


def crossings(rows: Sequence[dict], reference: str) -> List[dict]:
    """Where forgegrad's time crosses the reference's along x: [{"x", "between", "direction"}] with
    direction "forgegrad ahead" (forgegrad becomes faster past x) or "reference ahead".

    A tie (see ``_tie``) takes no side; a crossing is where two neighbouring points that do take
    sides take opposite ones, at the x where the log of the median speed-up, interpolated between
    them on log x, is 0."""
    from ._compare import speedup
    pts = []
    for r in sorted(rows, key=lambda r: r["x"]):
        s = speedup(r, reference)
        if s is not None and not _tie(s):
            pts.append((r["x"], math.log(s["median"]), 1 if s["median"] > 1.0 else -1))
    out = []
    for (x0, s0, d0), (x1, s1, d1) in zip(pts, pts[1:]):
        if d0 != d1:
            f = s0 / (s0 - s1) if s0 != s1 else 0.5
            f = min(max(f, 0.0), 1.0)  # medians may sit on the same side as the band says they do not
            x = math.exp(math.log(x0) + f * (math.log(x1) - math.log(x0)))
            out.append({"x": x, "between": (x0, x1), "direction": "forgegrad ahead" if d1 > 0 else "reference ahead"})
    return out


TIE = 0.03  # speed-ups within 3 % of 1.0x count as level, whatever the rounds say


def _tie(s: dict) -> bool:
    """A speed-up band (_compare.speedup) that says neither side is ahead: its rounds straddle 1.0x,
    or its median is within TIE of it."""
    return abs(s["median"] - 1.0) < TIE or (s["n"] > 1 and s["min"] <= 1.0 <= s["max"])


def ties(rows: Sequence[dict], reference: str) -> List[int]:
    """The x values where forgegrad and `reference` are level (see _tie)."""
    from ._compare import speedup
    return [r["x"] for r in sorted(rows, key=lambda r: r["x"])
            if (s := speedup(r, reference)) is not None and _tie(s)]


def growth_slope(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """Least-squares slope dy/dx over the upper half of the points (at least the last two): the
    memory one more sample costs once the batch dominates any fixed cost (a runtime's allocator
    caches, scratch buffers). None with fewer than 2 usable points."""
    pts = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None]
    if len(pts) < 2:
        return None
    pts = pts[min(len(pts) // 2, len(pts) - 2):]
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


# ---- peak memory in a fresh process ---------------------------------------------------------------
def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_kib() -> int:
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm
    import resource
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru // 1024 if sys.platform == "darwin" else ru  # bytes on macOS, KiB elsewhere


def memory_probe(model: str, runtime: str, batch: int, steps: int = 3) -> dict:
    """Runs in the fresh child: builds `model` for `runtime` only, runs `steps` training steps at
    `batch`, returns {"peak_kib", "base_kib", "step_kib", "peak_reset"} (base: RSS after imports,
    model and optimizer; step: peak - base)."""
    if runtime == "forgegrad":
        from .. import set_num_threads
        set_num_threads(1)
        from ._steps import classifier_step_fns
        m = _fg_model(model)
        x, y = _batch(model, batch)
        step = classifier_step_fns(m, None, x, y, None)["forgegrad"]
    elif runtime == "torch":
        import torch
        torch.set_num_threads(1)
        m = _torch_model(torch, model)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        xn, yn = _batch(model, batch)
        x, y = torch.from_numpy(xn), torch.from_numpy(yn)
        lossf = torch.nn.CrossEntropyLoss()

        def step():
            loss = lossf(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        raise ValueError(f"memory probe: runtime must be 'forgegrad' or 'torch', got {runtime!r}")
    base = _status_kib("VmRSS")
    reset = _reset_peak()
    for _ in range(steps):
        step()
    peak = _peak_kib()
    return {"peak_kib": peak, "base_kib": base, "step_kib": (peak - base) if (reset and base) else None,
            "peak_reset": reset}


def measure_memory(model: str, runtime: str, batch: int, timeout: float = 300) -> Optional[dict]:
    """memory_probe in a fresh interpreter (None when that runtime is not installed)."""
    if runtime == "torch" and optional_import("torch") is None:
        return None
    env = dict(os.environ, FORGEGRAD_NUM_THREADS="1", OMP_NUM_THREADS="1")
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "forgegrad.bench._scaling", "--memory", model, runtime,
                           str(batch)], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {model}/{runtime}/batch {batch} failed: {proc.stderr.strip()[-500:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(model=model, runtime=runtime, batch=batch)
    return out


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 4 or args[0] != "--memory":
        print("usage: python -m forgegrad.bench._scaling --memory MODEL RUNTIME BATCH", file=sys.stderr)
        return 2
    print(json.dumps(memory_probe(args[1], args[2], int(args[3]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
