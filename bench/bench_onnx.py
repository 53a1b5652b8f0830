"""onnxruntime inference of an LSTM exported by forgegrad.onnx vs the same LSTM (same weights)
exported by torch.onnx (TorchScript exporter), threads pinned on every side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python3 -m pytest bench/bench_onnx.py -q --benchmark-group-by=group --benchmark-columns=min,median,mean

The workloads are forgegrad.bench.onnx_lstm's (the `forgegrad bench onnx` suite). Each config is a
group: compare the `forgegrad` and `torch` rows (target: forgegrad's file at least as fast). Both
files are checked to give the same outputs before timing."""
import pytest

from forgegrad.bench import onnx_lstm

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in onnx_lstm.workloads() for r in w.runtimes],
                         ids=str)
def test_lstm_onnxruntime(run_workload, workload, runtime):
    run_workload(workload, runtime)
