"""LSTM / GRU kernels vs torch (and onnxruntime for inference), threads pinned on every side.

Run (the OPENBLAS variables are unset only for benchmarks, never for tests):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python3 -m pytest bench/bench_rnn.py --benchmark-only --benchmark-group-by=group -q

On a machine shared with other jobs, add ``--benchmark-timer=time.process_time`` (CPU time of
this process; every side runs one thread) to keep preemption out of the comparison.

The workloads are forgegrad.bench.rnn's (the `forgegrad bench rnn` suite): LSTM and GRU
forward+backward at seq 50, batch 32, input 128, hidden 256; inference at batch 1 and 32, also
timed in onnxruntime on torch's ONNX export. ``extra_info["gflops"]`` is the GEMM work (2*M*N*K
summed over every product) divided by the mean time; the FP32 FMA peak of one Zen 4 core (2 x
256-bit FMA pipes at ~3.7 GHz) is 117 GFLOP/s, so the LSTM forward + backward (~3.8 GFLOP) cannot
run faster than ~32 ms on one such core.
"""
import pytest

from forgegrad.bench import rnn

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in rnn.workloads() for r in w.runtimes], ids=str)
def test_rnn(run_workload, workload, runtime):
    run_workload(workload, runtime, rounds=8 if "fwd+bwd" in workload.name else 50)
