"""GPT (n_layer 4, n_head 4, n_embd 256, block 128, vocab 256) train step at batch 16 with AdamW, and
its forward at batch 1, T = 128: forgegrad vs torch eager (attention on torch's SDPA) and, for the
forward, onnxruntime running forgegrad's export. Threads pinned on every side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_gpt.py --benchmark-only --benchmark-group-by=group

The workloads are forgegrad.bench.gpt's (`forgegrad bench gpt` times them in interleaved rounds).
Targets (issue #14): the train step >= 1.3x torch, the forward >= 1.0x onnxruntime.
"""
import numpy as np
import pytest
import torch

from forgegrad.bench import gpt

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py
WORKLOADS = gpt.workloads()


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in WORKLOADS for r in w.runtimes], ids=str)
def test_gpt(run_workload, workload, runtime):
    run_workload(workload, runtime)


def test_gpt_step_computes_what_torch_computes():
    """Same weights, same batch: the same loss, so the timings compare equal work."""
    fns = gpt.train_fns(torch)
    np.testing.assert_allclose(fns["forgegrad"]().item(), fns["torch"]().item(), rtol=1e-5)
