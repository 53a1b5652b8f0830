"""The shapes an exported graph declares for its outputs: every dimension that follows a dynamic input axis
is a named dim_param (the axis' own name where it passes through, "batch*seq" where a reshape folds axes
together, "<output>_dim<k>" where a stride or a pool makes it some other function of the sizes), and only
dimensions that no input size changes are fixed numbers. The exporter traces at three sizes just above the
example's; a stride-4 conv maps heights 16, 17 and 18 all to 4, so the traces alone would declare that 4
fixed and onnxruntime would warn "Expected shape ... does not match" at every other height."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import forgegrad as fg
import forgegrad.onnx as fonnx
from forgegrad import models, nn
from forgegrad.nn import conv as NC
from forgegrad.onnx._shapes import declared_dims
from forgegrad.onnx._symbolic import Symbols

from test_onnx_common import Lambda

AXES = {"input": {0: "batch", 2: "height", 3: "width"}}
VERIFY_SIZES = [{"batch": 1, "height": 9, "width": 13}, {"batch": 3, "height": 33, "width": 24}]
RUN_SIZES = [(1, 9, 13), (3, 33, 12), (2, 64, 41), (1, 4, 4)]  # (batch, height, width)


def _declared(path, i=0):
    """Output i's declared dims: the dim_param where there is one, else the dim_value (None: neither)."""
    dims = onnx.load(str(path)).graph.output[i].type.tensor_type.shape.dim
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in dims]


def _strided(*tail):
    fg.manual_seed(0)
    model = nn.Sequential(NC.Conv2d(3, 4, 4, stride=4), *tail)
    model.eval()
    return model


# name: (the model after a stride-4 conv, the declared output shape: "dyn" where any named dim_param is right)
CASES = {
    "conv": (lambda: _strided(nn.ReLU()), ["batch", 4, "dyn", "dyn"]),
    "adaptive_keep_height": (lambda: _strided(NC.AdaptiveAvgPool2d((None, 3))), ["batch", 4, "dyn", 3]),
    "flatten": (lambda: _strided(nn.Flatten()), ["batch", "dyn"]),
    "global_pool_head": (lambda: _strided(NC.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)), ["batch", 5]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_sizes_a_stride_makes_look_static_are_declared_dynamic(tmp_path, capfd, name):
    """The declared output shape names the dims a strided conv computes from the image size and keeps the truly
    constant ones (channels, an adaptive pool's fixed width, a linear head's classes) fixed; onnxruntime then
    runs at other image sizes without a shape-mismatch warning, matching forgegrad."""
    make, want = CASES[name]
    model = make()
    path = tmp_path / "m.onnx"
    report = fonnx.export(model, fg.randn(2, 3, 16, 20), str(path), dynamic_axes=AXES, verify_sizes=VERIFY_SIZES)
    assert report.ok
    got = _declared(path)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        if w == "dyn":
            assert isinstance(g, str) and g, (k, got)
        else:
            assert g == w, (k, got)
    options = ort.SessionOptions()
    options.log_severity_level = 1  # warnings (and info) to stderr
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    capfd.readouterr()
    for n, h, w in RUN_SIZES:
        x = np.random.default_rng(h).standard_normal((n, 3, h, w)).astype(np.float32)
        (out,) = sess.run(None, {"input": x})
        np.testing.assert_allclose(out, np.asarray(model(fg.tensor(x))._data), rtol=1e-5, atol=1e-6)
    assert "does not match" not in capfd.readouterr().err


def test_a_dim_a_stride_computes_is_named_after_its_output_axis(tmp_path):
    """The flattened features of a strided conv depend on height and width but are no product of them: the
    dim_param is "<output>_dim<axis>", a name onnxruntime can tell apart from other outputs' dims."""
    path = tmp_path / "m.onnx"
    fonnx.export(_strided(nn.Flatten()), fg.randn(2, 3, 16, 20), str(path), dynamic_axes=AXES,
                 output_names=["features"], verify_sizes=VERIFY_SIZES)
    assert _declared(path) == ["batch", "features_dim1"]


def test_user_names_for_output_axes_win(tmp_path):
    """dynamic_axes naming an output's axes names them so, whatever the exporter infers."""
    path = tmp_path / "m.onnx"
    fonnx.export(_strided(), fg.randn(2, 3, 16, 20), str(path), verify_sizes=VERIFY_SIZES,
                 dynamic_axes={**AXES, "output": {0: "n", 2: "h_out", 3: "w_out"}})
    assert _declared(path) == ["n", 4, "h_out", "w_out"]


class _LSTMRows(nn.Module):
    """LSTM outputs (batch, seq, hidden) flattened to rows of hidden units, and its last hidden state."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 6, batch_first=True)

    def forward(self, x):
        out, (h, _) = self.lstm(x)
        return out.reshape(-1, 6), h


def test_lstm_outputs_through_a_reshape_name_batch_and_seq(tmp_path):
    """Default dynamic axes of a recurrent model (batch and seq): rows = batch*seq after the reshape, the
    final hidden state (layers, batch, hidden)."""
    fg.manual_seed(0)
    path = tmp_path / "m.onnx"
    report = fonnx.export(_LSTMRows(), fg.randn(2, 7, 5), str(path))
    assert report.ok and report.dynamic_axes == {"x": {0: "batch", 1: "seq"}}
    assert _declared(path, 0) == ["batch*seq", 6]
    assert _declared(path, 1) == [1, "batch", 6]


def test_zoo_sequence_models_name_their_dynamic_axes(tmp_path):
    """The zoo's gpt (logits per token) and transformer_classifier (a pooled head) with dynamic batch and
    sequence: the vocabulary and the classes stay fixed, batch and seq are named."""
    fg.manual_seed(0)
    gpt = models.create("gpt", vocab_size=17, n_embd=16, n_head=2, n_layer=1, block_size=16)
    clf = models.create("transformer_classifier", vocab_size=17, num_classes=3, d_model=16, nhead=2, num_layers=1,
                        dim_feedforward=32, dropout=0.0)
    ids = fg.randint(1, 17, (2, 6))
    for model, want in ((gpt, ["batch", "seq", 17]), (clf, ["batch", 3])):
        path = tmp_path / f"{type(model).__name__}.onnx"
        report = fonnx.export(model, ids, str(path), input_names=["ids"], dynamic_axes={"ids": {0: "batch", 1: "seq"}})
        assert report.ok
        assert _declared(path) == want, type(model).__name__


def _symbols():
    s = Symbols()
    s.add("batch", 2, ("x", 0))
    s.add("height", 16, ("x", 2))
    s.choose_sizes()
    s.b.update(batch=3, height=17)
    s.c.update(batch=5, height=18)
    return s


def test_an_expression_the_traces_fit_but_a_probe_refutes_is_not_used_as_a_name():
    """x[:, 8:18] is 8, 9, 10 long at heights 16, 17, 18, which fits "height-8", but at height 37 it is 10: the
    name is the output's own, not an expression that is wrong at other sizes."""
    s = _symbols()
    probe = ({"batch": 5, "height": 37}, [(5, 10)])
    assert declared_dims([(2, 8)], [(3, 9)], [(5, 10)], [probe], s, ["out"], {}) == [["batch", "out_dim1"]]
    # where the probe agrees, the expression names it
    probe = ({"batch": 5, "height": 37}, [(5, 29)])
    assert declared_dims([(2, 8)], [(3, 9)], [(5, 10)], [probe], s, ["out"], {}) == [["batch", "height-8"]]
    # a dim the traces and the probe agree on is fixed; one only the probe changes is named
    probe = ({"batch": 5, "height": 37}, [(5, 7, 3)])
    assert declared_dims([(2, 4, 3)], [(3, 4, 3)], [(5, 4, 3)], [probe], s, ["out"], {}) == [["batch", "out_dim1", 3]]


def test_a_slice_clamped_by_the_example_sizes_is_not_named_by_the_traces(tmp_path):
    """End to end: x[:, :, 8:18] over a dynamic height is declared by the output's own name."""
    path = tmp_path / "m.onnx"
    fonnx.export(Lambda(lambda m, x: x[:, :, 8:18]), fg.randn(2, 3, 16, 20), str(path), dynamic_axes=AXES,
                 verify_sizes=VERIFY_SIZES)
    assert _declared(path) == ["batch", 3, "output_dim2", "width"]
