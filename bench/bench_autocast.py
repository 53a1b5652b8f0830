"""An MLP training step (forward, cross-entropy, backward) in float32, under autocast("cpu") (bfloat16) and with the
whole model in bfloat16: forgegrad vs torch, threads pinned on both sides. forgegrad computes bfloat16 in float32
(each op widens to float32 and rounds back, with the C++ conversions of _C.bf16; linear as one C++ call and graph
node that widens its operands as it reads them), so its bfloat16 steps cost about its float32 one plus the
conversions; torch's CPU runs bfloat16 GEMM kernels.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python -m pytest bench/bench_autocast.py --benchmark-group-by=group --benchmark-columns=min,median
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts.
"""
import contextlib

import numpy as np
import pytest
import torch

import forgegrad as fg

pytest.importorskip("ml_dtypes")
BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
RUNTIMES = ["forgegrad", "torch"]
MODES = ["float32", "autocast", "bfloat16 model"]
BATCH, WIDTH, CLASSES = 256, 512, 10


def _step(runtime, mode):
    lib = fg if runtime == "forgegrad" else torch
    lib.manual_seed(0)
    model = lib.nn.Sequential(lib.nn.Linear(WIDTH, WIDTH), lib.nn.ReLU(), lib.nn.Linear(WIDTH, WIDTH), lib.nn.ReLU(),
                              lib.nn.Linear(WIDTH, CLASSES))
    x = lib.from_numpy(np.random.default_rng(0).standard_normal((BATCH, WIDTH)).astype(np.float32))
    y = lib.from_numpy(np.random.default_rng(1).integers(0, CLASSES, BATCH))
    if mode == "bfloat16 model":
        model, x = model.to(lib.bfloat16), x.to(lib.bfloat16)

    def step():
        model.zero_grad()
        with lib.autocast("cpu") if mode == "autocast" else contextlib.nullcontext():
            loss = lib.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
    return step


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("mode", MODES)
def test_mlp_training_step(benchmark, nthreads, runtime, mode):
    step = _step(runtime, mode)
    step()  # warm-up
    benchmark.group = f"MLP {BATCH}x{WIDTH} step, {mode}, threads={nthreads}"
    benchmark(step)
