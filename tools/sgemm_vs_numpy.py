"""forgegrad's SGEMM against numpy's OpenBLAS at one thread each, interleaved, min of N.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python tools/sgemm_vs_numpy.py [--reps 30]
        [--shapes 512,1024 | --only 'NAME' ...]

OPENBLAS_NUM_THREADS=1 is set before numpy is imported (without threadpoolctl the bench suite
cannot pin numpy's BLAS, so there it may use every core). Each round calls forgegrad then numpy
(then numpy then forgegrad, alternating) on the same arrays and outputs; the table shows the best
time of each in GFLOP/s and the ratio ours / numpy. On a shared machine min-of-N is the robust
statistic: noise from other processes only ever adds time. --clock cpu (the default) times with
the calling thread's CPU time (both sides run on it at one thread), which leaves out the time
slices other processes take on a busy machine; --clock wall times with perf_counter. The last column
is the ratio of the median times: where other tenants share the caches and memory (a VM), min-of-N
picks each side's luckiest round, while the median of interleaved rounds compares like with like.
"""
import argparse
import os
import statistics
import time

os.environ["OPENBLAS_NUM_THREADS"] = "1"
import numpy as np  # noqa: E402

import forgegrad  # noqa: E402
from forgegrad.kernels import matmul  # noqa: E402

# (M, K, N, trans_a, trans_b): squares in every transpose combination, then the network shapes.
SQUARE = [(n, n, n, ta, tb) for n in (256, 512, 1024, 2048) for ta, tb in ((0, 0), (1, 0), (0, 1))]
NETWORK = [(64, 784, 256, 0, 0), (64, 784, 256, 1, 0), (784, 64, 256, 0, 0), (784, 64, 256, 1, 0),
           (256, 64, 784, 0, 0), (64, 256, 128, 0, 0), (8, 784, 256, 0, 0), (1, 784, 256, 0, 0)]


def name(m, k, n, ta, tb):
    return f"{m}x{k}x{n} {'T' if ta else 'N'}{'T' if tb else 'N'}"


def measure(m, k, n, ta, tb, reps, clock):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    opa, opb = (a.T if ta else a), (b.T if tb else b)
    out_fg = np.empty((m, n), np.float32)
    out_np = np.empty((m, n), np.float32)
    fns = [lambda: matmul(a, b, out=out_fg, trans_a=bool(ta), trans_b=bool(tb)),
           lambda: np.matmul(opa, opb, out=out_np)]
    # Inner repeats so that one timing lasts >= ~2 ms (timer resolution, call overhead).
    inner = max(1, int(2e-3 / max(2.0 * m * n * k / 60e9, 1e-7)))
    for f in fns:
        f()
    times = ([], [])
    for r in range(reps):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            t0 = clock()
            for _ in range(inner):
                fns[i]()
            times[i].append((clock() - t0) / inner)
    err = float(np.max(np.abs(out_fg - out_np)) / (np.max(np.abs(out_np)) + 1e-30))
    flop = 2.0 * m * n * k
    median_ratio = statistics.median(times[1]) / statistics.median(times[0])
    return flop / min(times[0]) / 1e9, flop / min(times[1]) / 1e9, median_ratio, err


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--shapes", default="", help="comma-separated square sizes (default: all squares + network)")
    p.add_argument("--only", nargs="*", default=None, help="shape names, e.g. '1024x1024x1024 NN'")
    p.add_argument("--no-network", action="store_true")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = p.parse_args()
    forgegrad.set_num_threads(1)
    shapes = SQUARE + ([] if args.no_network else NETWORK)
    if args.shapes:
        sizes = {int(s) for s in args.shapes.split(",")}
        shapes = [s for s in shapes if s[0] != s[1] or s[0] in sizes]
    if args.only:
        shapes = [s for s in shapes if name(*s) in args.only]
    print(f"{'shape':22s} {'forgegrad':>10s} {'numpy':>10s} {'ratio':>6s} {'median':>6s}   "
          f"(GFLOP/s, min of {args.reps}, {args.clock} time; ratio of the medians)")
    for s in shapes:
        reps = args.reps if s[0] * s[1] * s[2] <= 1024 ** 3 else max(8, args.reps // 3)
        clock = time.thread_time if args.clock == "cpu" else time.perf_counter
        ours, theirs, median_ratio, err = measure(*s, reps, clock)
        row = f"{name(*s):22s} {ours:10.1f} {theirs:10.1f} {ours / theirs:6.3f} {median_ratio:6.3f}"
        print(f"{row}   rel.err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
