"""linear_cross_entropy forward + backward (a language-model head's loss): forgegrad's chunked op vs torch 2.13's
nn.LinearCrossEntropyLoss (its reference path, options=None, and its chunked path, LinearCrossEntropyOptions())
and vs forgegrad's own Linear + cross_entropy (the logits held whole). Threads pinned on both sides.

N=2048 rows, C=32000 classes, in_features=512, float32, no bias, index targets, reduction 'mean'; the gradients
of the input and the weight. The (N, C) logits alone are 262 MB.

Times and peak memory (one fresh process per runtime: its peak RSS over one step minus its RSS before; rough,
and on a shared machine the times are too):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_linear_cross_entropy.py
pytest-benchmark (times only):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python -m pytest bench/bench_linear_cross_entropy.py --benchmark-group-by=group --benchmark-columns=min,median
FG_BENCH_THREADS="1,2" picks the thread counts (default 1).
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

BENCH_THREADS_DEFAULT = "1"
N, C, D = 2048, 32000, 512
RUNTIMES = ["forgegrad_lce", "forgegrad_lce_options", "forgegrad_linear_ce", "torch_lce", "torch_lce_chunked"]


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D), dtype=np.float32)
    w = rng.standard_normal((C, D), dtype=np.float32) * np.float32(D ** -0.5)
    y = rng.integers(0, C, N)
    y[::17] = -100  # padding tokens
    return x, w, y


def _step(runtime):
    x, w, y = _inputs()
    if runtime.startswith("forgegrad"):
        import forgegrad as fg
        F = fg.nn.functional
        yt = fg.tensor(y)
        opts = fg.nn.LinearCrossEntropyOptions() if runtime == "forgegrad_lce_options" else None

        def step():
            xs, ws = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)
            if runtime == "forgegrad_linear_ce":
                loss = F.cross_entropy(F.linear(xs, ws), yt)
            else:
                loss = F.linear_cross_entropy(xs, ws, yt, options=opts)
            loss.backward()
            return loss.item()
        return step
    import torch
    yt = torch.from_numpy(y)
    opts = torch.nn.LinearCrossEntropyOptions() if runtime == "torch_lce_chunked" else None

    def step():
        xs, ws = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
        loss = torch.nn.functional.linear_cross_entropy(xs, ws, yt, options=opts)
        loss.backward()
        return loss.item()
    return step


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_linear_cross_entropy_forward_backward(benchmark, nthreads, runtime):
    fn = _step(runtime)
    benchmark.group = f"linear_cross_entropy fwd+bwd N={N} C={C} in={D} threads={nthreads}"
    fn()
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=0)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _one(runtime: str, threads: int, rounds: int) -> dict:
    from forgegrad.bench._timing import pinned_threads
    with pinned_threads(threads):
        fn = _step(runtime)
        before = _rss()
        loss = fn()  # the first step: its peak is the memory figure
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return {"runtime": runtime, "loss": loss, "median_s": statistics.median(times), "min_s": min(times),
            "peak_mb": peak / 1e6}


def main():
    threads = int(os.environ.get("FG_BENCH_THREADS", BENCH_THREADS_DEFAULT).split(",")[0])
    if len(sys.argv) > 1:
        print(json.dumps(_one(sys.argv[1], threads, int(os.environ.get("FG_BENCH_ROUNDS", "5")))))
        return
    print(f"linear_cross_entropy fwd+bwd, N={N} C={C} in={D}, {threads} thread(s); logits alone "
          f"{N * C * 4 / 1e6:.0f} MB")
    print(f"{'runtime':24s} {'median s':>9s} {'min s':>8s} {'peak MB':>8s}  loss")
    for rt in RUNTIMES:
        out = subprocess.run([sys.executable, __file__, rt], capture_output=True, text=True, env=os.environ)
        if out.returncode:
            print(f"{rt:24s} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{rt:24s} {r['median_s']:9.3f} {r['min_s']:8.3f} {r['peak_mb']:8.0f}  {r['loss']:.6f}")


if __name__ == "__main__":
    main()
