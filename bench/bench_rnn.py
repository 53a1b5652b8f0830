"""LSTM / GRU kernels vs torch, one thread pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks, never for tests):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python3 -m pytest bench/bench_rnn.py --benchmark-only --benchmark-group-by=group -q

On a machine shared with other jobs, add ``--benchmark-timer=time.process_time`` (CPU time of
this process; both sides run one thread) to keep preemption out of the comparison.

Cases: LSTM and GRU forward+backward at seq 50, batch 32, input 128, hidden 256; LSTM inference
at batch 1, seq 50 (also onnxruntime on torch's ONNX export). ``extra_info["gflops"]`` is the GEMM work (2*M*N*K summed over every product)
divided by the mean time; ``peak_fraction`` relates it to 117 GFLOP/s, the FP32 FMA peak of one
Zen 4 core (2 x 256-bit FMA pipes at ~3.7 GHz). Forward + backward is ~3.8 GFLOP for the LSTM case,
so no implementation can run it faster than ~32 ms on one such core.
"""
import io
import warnings

import numpy as np
import pytest
import torch

from forgegrad.kernels import rnn as K

T, B, I, H = 50, 32, 128, 256


pytestmark = pytest.mark.usefixtures("one_thread")  # bench/conftest.py


def _flops(G, T, B, I, H, backward):
    fwd = 2 * T * B * G * H * (I + H)
    return fwd * 3 if backward else fwd  # backward: dX, dH (same as forward) plus dW_ih, dW_hh


def _layer(kind, batch):
    torch.manual_seed(0)
    m = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(I, H)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, batch, I)).astype(np.float32)
    p = {k: v.detach().numpy() for k, v in m.named_parameters()}
    return m, x, p


def _record(benchmark, flops):
    benchmark.extra_info["gflops"] = round(flops / benchmark.stats.stats.mean / 1e9, 1)
    benchmark.extra_info["peak_fraction"] = round(flops / benchmark.stats.stats.mean / 1e9 / 117.0, 3)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("side", ["forgegrad", "torch"])
def test_train_step(benchmark, kind, side):
    """Forward + backward through time, seq 50, batch 32, input 128, hidden 256."""
    benchmark.group = f"{kind} fwd+bwd T{T} B{B} I{I} H{H}"
    m, x, p = _layer(kind, B)
    gy = np.random.default_rng(1).standard_normal((T, B, H)).astype(np.float32)
    if side == "torch":
        xt, gyt = torch.tensor(x, requires_grad=True), torch.tensor(gy)

        def run():
            y, _ = m(xt)
            y.backward(gyt)
    else:
        args = (x, None) + ((None,) if kind == "lstm" else ()) + (
            p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"])
        fwd, bwd = (K.lstm_forward, K.lstm_backward) if kind == "lstm" else (K.gru_forward, K.gru_backward)

        def run():
            out = fwd(*args)
            bwd(out[-1], gy)
    benchmark.pedantic(run, rounds=8, warmup_rounds=1)
    _record(benchmark, _flops(4 if kind == "lstm" else 3, T, B, I, H, True))


@pytest.mark.parametrize("side", ["forgegrad", "torch", "onnxruntime"])
def test_lstm_inference_batch1(benchmark, side):
    """LSTM forward without saving activations, seq 50, batch 1 (issue 5: onnxruntime runs torch's
    ONNX export of the same layer with one intra-op thread)."""
    benchmark.group = f"lstm inference T{T} B1 I{I} H{H}"
    m, x, p = _layer("lstm", 1)
    if side == "torch":
        xt = torch.tensor(x)

        def run():
            with torch.no_grad():
                m(xt)
    elif side == "onnxruntime":
        ort = pytest.importorskip("onnxruntime")
        buf = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (torch.tensor(x),), buf, input_names=["x"], output_names=["y", "h_n", "c_n"],
                              dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])

        def run():
            sess.run(None, {"x": x})
    else:
        w = (p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"])

        def run():
            K.lstm_forward(x, None, None, *w, training=False)
    benchmark.pedantic(run, rounds=50, warmup_rounds=3)
    _record(benchmark, _flops(4, T, 1, I, H, False))
