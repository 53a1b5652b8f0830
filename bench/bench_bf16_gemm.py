"""bfloat16 GEMM at one thread: forgegrad's vdpbf16ps kernel (_C.bf16.gemm where gemm_path() is "avx512_bf16") vs
its float32 path (the operands widened, the float32 sgemm: what every bfloat16 product ran on before), forgegrad's
float32 sgemm, numpy's (OpenBLAS) and torch's bfloat16 and float32 matmul; then bench_autocast.py's MLP training
step (256 x 512, float32 / autocast / bfloat16 model) with the bfloat16 GEMM on and off in the same process.

Runtimes alternate within each round; a call's time is its thread CPU time (the machine may be shared: the kernels
run on the calling thread at one thread), the best of the rounds is reported.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_bf16_gemm.py [--rounds 7]
"""
import argparse
import os
import sys
import time

import ml_dtypes
import numpy as np
import torch

from forgegrad import _C
from forgegrad.bench._timing import pinned_threads

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_autocast import MODES, _step  # noqa: E402  (the same MLP step)

BF16 = np.dtype(ml_dtypes.bfloat16)
# (M, N, K, trans_a, trans_b, name): square products, and the MLP's 512-wide layer: forward y = x W^T, dX = dY W,
# dW = dY^T X at batch 256
SHAPES = [(512, 512, 512, False, False, "512^3 NN"), (1024, 1024, 1024, False, False, "1024^3 NN"),
          (256, 512, 512, False, True, "MLP fwd x W^T"), (256, 512, 512, False, False, "MLP dX = dY W"),
          (512, 512, 256, True, False, "MLP dW = dY^T X")]


CLOCK = {"fn": time.thread_time, "name": "thread CPU time", "threads": 1}


def _time(fn, reps):
    clock = CLOCK["fn"]
    t0 = clock()
    for _ in range(reps):
        fn()
    return (clock() - t0) / reps


def _gemm_runtimes(m, n, k, ta, tb):
    rng = np.random.default_rng(0)
    a32 = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b32 = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    a16, b16 = a32.astype(BF16), b32.astype(BF16)
    out = np.empty((m, n), np.float32)
    ta_t, tb_t = torch.from_numpy(a32).bfloat16(), torch.from_numpy(b32).bfloat16()
    ta_f, tb_f = torch.from_numpy(a32), torch.from_numpy(b32)
    na, nb = (a32.T if ta else a32), (b32.T if tb else b32)

    def fg_bf16(native):
        def run():
            _C.bf16.set_gemm_native(native)
            try:
                _C.bf16.gemm(a16, b16, ta, tb)
            finally:
                _C.bf16.set_gemm_native(True)
        return run

    def op(x, t):
        return x.t() if t else x

    runtimes = {"fg bf16 vdpbf16ps": fg_bf16(True), "fg bf16 float32 path": fg_bf16(False),
                "fg f32 sgemm": lambda: _C.gemm.matmul(a32, b32, out, ta, tb),
                "numpy f32": lambda: np.matmul(na, nb, out=out),
                "torch bf16": lambda: torch.mm(op(ta_t, ta), op(tb_t, tb)),
                "torch f32": lambda: torch.mm(op(ta_f, ta), op(tb_f, tb))}
    if _C.bf16.gemm_path() != "avx512_bf16":
        del runtimes["fg bf16 vdpbf16ps"]  # (the same as the float32 path here)
    return runtimes


def bench_gemm(rounds):
    print(f"GEMM GFLOP/s, {CLOCK['threads']} thread(s), best of {rounds} rounds ({CLOCK['name']}); gemm_path: "
          f"{_C.bf16.gemm_path()}")
    for m, n, k, ta, tb, name in SHAPES:
        runtimes = _gemm_runtimes(m, n, k, ta, tb)
        reps = max(1, int(2e9 / (2 * m * n * k * 40)))
        best = {r: float("inf") for r in runtimes}
        for fn in runtimes.values():
            fn()  # warm-up
        for _ in range(rounds):
            for r, fn in runtimes.items():
                best[r] = min(best[r], _time(fn, reps))
        flops = 2.0 * m * n * k
        print(f"  {name:18s} (M={m} N={n} K={k}): " +
              ", ".join(f"{r} {flops / t / 1e9:6.1f}" for r, t in best.items()))


def bench_mlp(rounds):
    print(f"MLP 256x512 training step (bench_autocast.py's), {CLOCK['threads']} thread(s), best of {rounds} rounds, "
          f"ms ({CLOCK['name']})")
    cases = {}
    for mode in MODES:
        cases[f"torch {mode}"] = (_step("torch", mode), None)
        cases[f"fg {mode}"] = (_step("forgegrad", mode), True)
        if mode != "float32":
            cases[f"fg {mode} (bf16 GEMM off)"] = (_step("forgegrad", mode), False)
    best = {c: float("inf") for c in cases}
    for step, native in cases.values():
        step()
    for _ in range(rounds):
        for c, (step, native) in cases.items():
            if native is not None:
                _C.bf16.set_gemm_native(native)
            try:
                best[c] = min(best[c], _time(step, 20))
            finally:
                _C.bf16.set_gemm_native(True)
    for c, t in best.items():
        print(f"  {c:36s} {t * 1e3:7.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=["gemm", "mlp"])
    parser.add_argument("--threads", type=int, default=1, help="threads of every runtime (past 1, wall time)")
    args = parser.parse_args()
    if args.threads > 1:
        CLOCK.update(fn=time.perf_counter, name="wall time", threads=args.threads)
    with pinned_threads(args.threads):  # forgegrad, torch and numpy's BLAS
        if args.only != "mlp":
            bench_gemm(args.rounds)
        if args.only != "gemm":
            bench_mlp(args.rounds)


if __name__ == "__main__":
    main()
