"""onnxruntime inference of an LSTM exported by forgegrad.onnx vs the same LSTM (same weights)
exported by torch.onnx (TorchScript exporter), one thread on every side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python3 -m pytest bench/bench_onnx.py -q --benchmark-group-by=param:config --benchmark-columns=min,median,mean

Each config is a group: compare the `forgegrad` and `torch` rows (target: forgegrad's file at least
as fast). Both files are checked to give the same outputs before timing."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

pytest.importorskip("forgegrad.ops.rnn", reason="recurrent ops not merged yet")
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import forgegrad as fg  # noqa: E402
import forgegrad.onnx as fonnx  # noqa: E402
from forgegrad import nn  # noqa: E402
from forgegrad.nn.rnn import LSTM  # noqa: E402

INPUT, HIDDEN, SEQ = 32, 128, 50
# name -> (num_layers, bidirectional, batch)
CONFIGS = {"1layer_b1": (1, False, 1), "1layer_b32": (1, False, 32), "2layer_bidir_b8": (2, True, 8)}


class FgModel(nn.Module):
    def __init__(self, layers, bidir):
        super().__init__()
        self.lstm = LSTM(INPUT, HIDDEN, num_layers=layers, bidirectional=bidir, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


class TorchModel(torch.nn.Module):
    def __init__(self, layers, bidir):
        super().__init__()
        self.lstm = torch.nn.LSTM(INPUT, HIDDEN, num_layers=layers, bidirectional=bidir, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


def _session(model_bytes):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def _build(config, tmp_dir):
    layers, bidir, batch = CONFIGS[config]
    fg.manual_seed(0)
    fgm = FgModel(layers, bidir)
    tm = TorchModel(layers, bidir)
    with torch.no_grad():  # same weights (same layout and names) on both sides
        for k, v in fgm.state_dict().items():
            dict(tm.named_parameters())[k].copy_(torch.from_numpy(v.data.copy()))
    x = np.random.default_rng(0).standard_normal((batch, SEQ, INPUT)).astype(np.float32)
    fg_path = str(tmp_dir / f"fg_{config}.onnx")
    fonnx.export(fgm, fg.tensor(x), fg_path, opset=17, verify=False)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tm.eval(), (torch.from_numpy(x),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "seq"}})
    sessions = {"forgegrad": _session(open(fg_path, "rb").read()), "torch": _session(buf.getvalue())}
    outs = {k: s.run(None, {"x": x})[0] for k, s in sessions.items()}
    np.testing.assert_allclose(outs["forgegrad"], outs["torch"], rtol=1e-4, atol=1e-5)
    return sessions, x


_CACHE = {}


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_onnx")


@pytest.mark.parametrize("exporter", ["forgegrad", "torch"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_lstm_onnxruntime(benchmark, tmp_dir, config, exporter):
    torch.set_num_threads(1)
    fg.set_num_threads(1)
    if config not in _CACHE:
        _CACHE[config] = _build(config, tmp_dir)
    sessions, x = _CACHE[config]
    sess = sessions[exporter]
    feed = {"x": x}
    benchmark.extra_info.update(config=config, exporter=exporter, seq=SEQ, hidden=HIDDEN)
    benchmark(sess.run, None, feed)
