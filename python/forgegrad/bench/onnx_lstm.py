"""The `onnx` suite: onnxruntime running forgegrad.onnx's export of an LSTM against the same LSTM
(same weights) exported by torch.onnx (TorchScript exporter, ``dynamo=False``), opset 17.

Workloads: seq 50, input 32, hidden 128; one layer at batch 1 and 32, two bidirectional layers at
batch 8. Both runtimes are onnxruntime (intra_op_num_threads = the thread count); "forgegrad" and
"torch" name the exporter, so the ratio compares the exported graphs. Both files are checked to
give the same outputs before they are timed (target: forgegrad's file at least as fast).
"""
from __future__ import annotations

import io
import os
import tempfile
import warnings
from typing import List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from ._timing import optional_import, ort_session

INPUT, HIDDEN, SEQ = 32, 128, 50
# name -> (num_layers, bidirectional, batch)
CONFIGS = {"1layer_b1": (1, False, 1), "1layer_b32": (1, False, 32), "2layer_bidir_b8": (2, True, 8)}
RUNTIMES = ("forgegrad", "torch")


def _forgegrad_model(layers, bidir):
    from .. import nn

    class LSTMOutput(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(INPUT, HIDDEN, num_layers=layers, bidirectional=bidir, batch_first=True)

        def forward(self, x):
            return self.lstm(x)[0]

    return LSTMOutput()


def _torch_model(torch, layers, bidir):
    class LSTMOutput(torch.nn.Module):  # forgegrad's parameter names and layout
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(INPUT, HIDDEN, num_layers=layers, bidirectional=bidir, batch_first=True)

        def forward(self, x):
            return self.lstm(x)[0]

    return LSTMOutput()


def sessions(config: str, threads: int = 1):
    """({"forgegrad": session, "torch": session}, x), or (None, x) without torch / onnxruntime / onnx.

    Raises AssertionError when the two exports disagree (then the timings would not compare)."""
    from .. import random as fg_random
    from ..tensor import Tensor
    layers, bidir, batch = CONFIGS[config]
    x = np.random.default_rng(0).standard_normal((batch, SEQ, INPUT)).astype(np.float32)
    torch, ort = optional_import("torch"), optional_import("onnxruntime")
    if torch is None or ort is None or optional_import("onnx") is None:
        return None, x
    from .. import onnx as fonnx
    fg_random.manual_seed(0)
    fgm, tm = _forgegrad_model(layers, bidir), _torch_model(torch, layers, bidir)
    with torch.no_grad():  # same weights on both sides
        params = dict(tm.named_parameters())
        for k, v in fgm.state_dict().items():
            params[k].copy_(torch.from_numpy(v._data.copy()))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lstm.onnx")
        fonnx.export(fgm, Tensor._stored(x), path, opset=17, verify=False)
        with open(path, "rb") as f:
            fg_bytes = f.read()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(tm.eval(), (torch.from_numpy(x),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "seq"}})
    sess = {"forgegrad": ort_session(ort, fg_bytes, threads), "torch": ort_session(ort, buf.getvalue(), threads)}
    outs = {k: s.run(None, {s.get_inputs()[0].name: x})[0] for k, s in sess.items()}
    np.testing.assert_allclose(outs["forgegrad"], outs["torch"], rtol=1e-4, atol=1e-5)
    return sess, x


def _fns(config, threads):
    sess, x = sessions(config, threads)
    if sess is None:
        return {k: None for k in RUNTIMES}
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sess.items()}
    return {k: (lambda s=s, feed=feeds[k]: s.run(None, feed)) for k, s in sess.items()}


def workloads(quick: bool = False) -> List[Workload]:
    names = list(CONFIGS)[:1] if quick else list(CONFIGS)
    return [Workload(f"lstm onnxruntime {name} T{SEQ} I{INPUT} H{HIDDEN}", RUNTIMES,
                     lambda threads, name=name: _fns(name, threads)) for name in names]


@suite("onnx")
def onnx_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.01) if quick else (9, 0.05)
    return time_workloads(workloads(quick), threads, repeat, min_time)
