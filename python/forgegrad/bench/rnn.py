"""The `rnn` suite: one LSTM / GRU layer (forgegrad.kernels.rnn) against torch.nn.LSTM / GRU.

Workloads: forward + backward through time at seq 50, batch 32, input 128, hidden 256 (LSTM and
GRU), and inference (no saved activations) at batch 1 and batch 32. Every runtime gets the same
weights and inputs; the torch side runs the module (its fused CPU RNN path). Inference rows also
time onnxruntime running torch's ONNX export of that module (TorchScript exporter, ``dynamo=False``;
ORT with intra_op_num_threads = the thread count), the reference of issue 5's batch-1 LSTM target.
GFLOP/s counts the GEMM work: 2*T*B*G*H*(I+H) forward, three times that for forward + backward.
"""
from __future__ import annotations

import io
import warnings
from typing import List, Sequence

import numpy as np

from forgegrad.kernels import rnn as K

from . import Workload, suite, time_workloads
from ._timing import optional_import, ort_session

T, I, H = 50, 128, 256
# (kind, batch, train)
WORKLOADS = (("lstm", 32, True), ("gru", 32, True), ("lstm", 1, False), ("lstm", 32, False),
             ("gru", 1, False))


def _ort_session(ort, torch, m, xt, kind, threads):
    """onnxruntime session running torch's ONNX export of module m (input "x")."""
    buf = io.BytesIO()
    outputs = ["y", "h_n", "c_n"] if kind == "lstm" else ["y", "h_n"]
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (xt,), buf, input_names=["x"], output_names=outputs, dynamo=False)
    return ort_session(ort, buf.getvalue(), threads)


def _aligned_copy(a):
    from .._memory import empty_aligned
    out = empty_aligned(a.shape, a.dtype)
    out[...] = a
    return out


def _fns(kind, batch, train, threads):
    torch = optional_import("torch")
    ort = optional_import("onnxruntime")
    rng = np.random.default_rng(0)
    G = 4 if kind == "lstm" else 3
    x = rng.standard_normal((T, batch, I)).astype(np.float32)
    gy = rng.standard_normal((T, batch, H)).astype(np.float32)
    k = 1.0 / np.sqrt(H)
    w = [rng.uniform(-k, k, s).astype(np.float32) for s in ((G * H, I), (G * H, H), (G * H,), (G * H,))]
    # W_hh 64-byte aligned, as nn.LSTM / GRU allocate it (numpy's 16-byte alignment would cost the
    # small-batch kernels a copy of W_hh per call; see forgegrad._memory)
    w[1] = _aligned_copy(w[1])
    fwd, bwd = (K.lstm_forward, K.lstm_backward) if kind == "lstm" else (K.gru_forward, K.gru_backward)
    states = (None, None) if kind == "lstm" else (None,)

    def fg_run():
        out = fwd(x, *states, *w, training=train)
        if train:
            bwd(out[-1], gy)

    fns = {"forgegrad": fg_run, "torch": None}
    if not train:
        fns["onnxruntime"] = None
    if torch is not None:
        m = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(I, H)
        with torch.no_grad():
            for name, arr in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), w):
                getattr(m, name).copy_(torch.from_numpy(arr))
        xt = torch.from_numpy(x).requires_grad_(train)
        gyt = torch.from_numpy(gy)

        def torch_run():
            if train:
                m(xt)[0].backward(gyt)
            else:
                with torch.no_grad():
                    m(xt)

        fns["torch"] = torch_run
        if not train and ort is not None:
            sess = _ort_session(ort, torch, m, xt, kind, threads)
            feed = {"x": x}
            fns["onnxruntime"] = lambda: sess.run(None, feed)
    return fns


def workloads(quick: bool = False) -> List[Workload]:
    out = []
    for kind, batch, train in WORKLOADS[:3] if quick else WORKLOADS:
        G = 4 if kind == "lstm" else 3
        flop = 2.0 * T * batch * G * H * (I + H) * (3 if train else 1)
        name = f"{kind} {'fwd+bwd' if train else 'inference'} T{T} B{batch} I{I} H{H}"
        runtimes = ("forgegrad", "torch") if train else ("forgegrad", "torch", "onnxruntime")
        out.append(Workload(name, runtimes, lambda threads, a=(kind, batch, train): _fns(*a, threads), flop=flop))
    return out


@suite("rnn")
def rnn_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.05) if quick else (7, 0.2)
    return time_workloads(workloads(quick), threads, repeat, min_time)
