"""A mixture-of-experts layer's expert GEMMs as the eager prefill runs them: x @ W^T on the few rows routed to an
expert, W (out, in) a weight read from DRAM (each call takes the next of ``--weights`` distinct matrices, as the
experts of a layer come one after another), forgegrad's Linear kernel against numpy (OpenBLAS), one thread.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_moe_experts.py \
        [--rows 1,4,9,16,32 --out 512,1024 --in 512 --weights 96 --rounds 5]

Reports, per shape, the least thread CPU time per call over the rounds, its GFLOP/s and the rate the weight streams
at (GB/s). Then the same rows with the weight hot (one matrix, in cache), which is the compute-bound limit.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1,4,9,16,32")
    p.add_argument("--out", default="512,1024")
    p.add_argument("--in", dest="inp", type=int, default=512)
    p.add_argument("--weights", type=int, default=96)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    import numpy as np

    import forgegrad as fg
    from forgegrad import _C
    from forgegrad.bench._timing import pinned_threads

    rng = np.random.default_rng(0)
    K = args.inp
    with pinned_threads(1):
        for N in (int(n) for n in args.out.split(",")):
            ws = [rng.standard_normal((N, K), dtype=np.float32) for _ in range(args.weights)]
            for M in (int(m) for m in args.rows.split(",")):
                x = rng.standard_normal((M, K), dtype=np.float32)
                calls = {"forgegrad": lambda w: _C.gemm.linear(x, w), "numpy": lambda w: x @ w.T}
                line = []
                for hot in (False, True):
                    for name, fn in calls.items():
                        best = float("inf")
                        for _ in range(args.rounds + 1):
                            start = time.thread_time()
                            for i in range(args.weights):
                                fn(ws[0] if hot else ws[i])
                            best = min(best, (time.thread_time() - start) / args.weights)
                        line.append(f"{name}{' hot' if hot else ''} {best * 1e6:6.1f} us "
                                    f"{2 * M * N * K / best / 1e9:5.1f} GF/s {N * K * 4 / best / 1e9:4.1f} GB/s")
                print(f"{M:3d} x {K} @ ({N} x {K})^T: " + " | ".join(line))
    print(f"forgegrad {fg.__version__ if hasattr(fg, '__version__') else ''}, 1 thread")


if __name__ == "__main__":
    main()
