"""MLP speed (issue 3): forgegrad vs torch (training step) and vs onnxruntime (inference).

Model: 784-256-128-10 MLP with ReLU, the same initial weights on every side.
  * train step at batch 64: forward, cross_entropy, backward, forgegrad.optim.Adam / torch.optim.Adam
    (target >= 1.3x torch)
  * inference at batch 1, no grad (target >= 1.0x onnxruntime on torch's ONNX export)
The workloads are forgegrad.bench.mlp's; threads are pinned on every side for each count in
FG_BENCH_THREADS (default "1,2").

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python3 -m pytest bench/bench_mlp.py --benchmark-only --benchmark-group-by=group
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python3 -m forgegrad.bench mlp --threads 1 2
        # interleaved timing, prints a table of times and ratios
"""
import numpy as np
import pytest
import torch

from forgegrad.bench import mlp

BENCH_THREADS_DEFAULT = "1,2"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in mlp.workloads() for r in w.runtimes], ids=str)
def test_mlp(run_workload, workload, runtime):
    run_workload(workload, runtime, rounds=200 if "train" in workload.name else 2000)


def test_models_agree():
    """The benchmarked computations are the same: inference outputs, losses and first updates match."""
    ort = pytest.importorskip("onnxruntime")
    infer = mlp.infer_fns(torch, ort, np.random.default_rng(0), 1)
    want = infer["torch"]().numpy()
    np.testing.assert_allclose(infer["forgegrad"]().numpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(infer["onnxruntime"]()[0], want, rtol=1e-4, atol=1e-5)
    train = mlp.train_fns(torch, np.random.default_rng(0))
    for _ in range(3):
        np.testing.assert_allclose(train["forgegrad"]().item(), train["torch"]().item(), rtol=1e-4)
