"""LSTM / GRU / RNN and Embedding exported as ONNX LSTM/GRU/RNN/Gather nodes: 1-2 layers,
bidirectional, batch_first, initial states; dynamic batch and sequence axes, checked by onnxruntime
at sequence lengths 1, 7 and 50 (batch 1, 3, 64) against forgegrad."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import forgegrad as fg
import forgegrad.onnx as fonnx
from forgegrad import nn
from forgegrad.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell
from forgegrad.nn.sparse import Embedding

SIZES = [{"batch": 1, "seq": 1}, {"batch": 64, "seq": 50}]  # plus the example's batch 3, seq 7


class Head(nn.Module):
    def __init__(self, rnn, out_features=3):
        super().__init__()
        self.rnn = rnn
        d = 2 if rnn.bidirectional else 1
        self.fc = nn.Linear(rnn.hidden_size * d, out_features)

    def forward(self, x):
        y, state = self.rnn(x)
        return (self.fc(y),) + (tuple(state) if isinstance(state, tuple) else (state,))


def _example(batch_first):
    return fg.randn(3, 7, 5) if batch_first else fg.randn(7, 3, 5)


CONFIGS = [(1, False, True), (2, True, False), (2, True, True)]  # (num_layers, bidirectional, batch_first)


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("layers,bidirectional,batch_first", CONFIGS)
@pytest.mark.parametrize("cls", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_recurrent(tmp_path, cls, layers, bidirectional, batch_first, opset):
    fg.manual_seed(0)
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    rnn = {"lstm": lambda: LSTM(5, 6, **kw), "gru": lambda: GRU(5, 6, **kw),
           "rnn_tanh": lambda: RNN(5, 6, **kw), "rnn_relu": lambda: RNN(5, 6, nonlinearity="relu", **kw)}[cls]()
    path = tmp_path / "r.onnx"
    report = fonnx.export(Head(rnn), _example(batch_first), str(path), opset=opset, verify_sizes=SIZES)
    assert report.ok
    assert report.dynamic_axes == {"x": {0: "batch", 1: "seq"} if batch_first else {0: "seq", 1: "batch"}}
    assert [r.sizes for r in report.runs] == [{"batch": 3, "seq": 7}] + SIZES
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    want = {"lstm": "LSTM", "gru": "GRU"}.get(cls, "RNN")
    assert ops.count(want) == layers  # a bidirectional layer is one node, as torch exports it


def test_onnx_gate_order_and_attributes(tmp_path):
    """torch's GRU gates r, z, n become ONNX's z, r, h; LSTM's i, f, g, o become i, o, f, c."""
    fg.manual_seed(1)
    for rnn, order, op_type in ((GRU(5, 4), [1, 0, 2], "GRU"), (LSTM(5, 4), [0, 3, 1, 2], "LSTM")):
        path = tmp_path / "g.onnx"
        fonnx.export(Head(rnn), fg.randn(7, 3, 5), str(path), verify=False)
        proto = onnx.load(str(path))
        node = next(n for n in proto.graph.node if n.op_type == op_type)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["hidden_size"] == 4
        if op_type == "GRU":
            assert attrs["linear_before_reset"] == 1  # torch applies the reset gate after the matmul
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
        src = rnn.weight_ih_l0._data
        want = np.concatenate([src[g * 4:(g + 1) * 4] for g in order])
        np.testing.assert_array_equal(inits[node.input[1]][0], want)


class LanguageModel(nn.Module):
    """Embedding -> LSTM with given initial states -> Linear on the last step."""

    def __init__(self):
        super().__init__()
        self.emb = Embedding(20, 5, padding_idx=0)
        self.lstm = LSTM(5, 8, num_layers=2, batch_first=True)
        self.fc = nn.Linear(8, 20)

    def forward(self, ids, h0, c0):
        y, (h, c) = self.lstm(self.emb(ids), (h0, c0))
        return self.fc(y[:, -1]), h, c


@pytest.mark.parametrize("opset", [13, 17])
def test_embedding_lstm_with_initial_states(tmp_path, opset):
    fg.manual_seed(2)
    ids = fg.tensor(np.random.default_rng(0).integers(0, 20, (3, 7)))
    report = fonnx.export(LanguageModel(), (ids, fg.randn(2, 3, 8), fg.randn(2, 3, 8)), str(tmp_path / "lm.onnx"),
                          opset=opset, verify_sizes=SIZES)
    assert report.dynamic_axes == {"ids": {0: "batch", 1: "seq"}, "h0": {1: "batch"}, "c0": {1: "batch"}}
    assert report.ok


def test_cells(tmp_path):
    class Cells(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = LSTMCell(5, 6)
            self.gru = GRUCell(6, 4)

        def forward(self, x, h, c):
            h2, c2 = self.lstm(x, (h, c))
            return self.gru(h2), c2

    fg.manual_seed(3)
    report = fonnx.export(Cells(), (fg.randn(3, 5), fg.randn(3, 6), fg.randn(3, 6)), str(tmp_path / "c.onnx"),
                          verify_sizes=[{"batch": 1}, {"batch": 64}])
    assert report.ok


def test_direct_onnxruntime_seq50(tmp_path):
    """Independent of export()'s own check: run the file in onnxruntime at T=50, B=64."""
    fg.manual_seed(4)
    model = Head(LSTM(5, 6, num_layers=2, bidirectional=True, batch_first=True))
    path = tmp_path / "d.onnx"
    fonnx.export(model, fg.randn(3, 7, 5), str(path), verify=False)
    x = np.random.default_rng(1).standard_normal((64, 50, 5)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})
    model.eval()
    with fg.no_grad():
        want = model(fg.tensor(x))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w._data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_bidirectional_with_initial_states(tmp_path, cls):
    """Both directions' initial states feed the one fused bidirectional node."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cls(5, 6, num_layers=2, bidirectional=True, batch_first=True)

        def forward(self, x, h0, c0=None):
            if c0 is None:
                return self.rnn(x, h0)
            y, (h, c) = self.rnn(x, (h0, c0))
            return y, h, c

    fg.manual_seed(5)
    inputs = (fg.randn(3, 7, 5), fg.randn(4, 3, 6)) + ((fg.randn(4, 3, 6),) if cls is LSTM else ())
    path = tmp_path / "bi.onnx"
    report = fonnx.export(M(), inputs, str(path), verify_sizes=SIZES)
    assert report.ok
    nodes = onnx.load(str(path)).graph.node
    fused = [n for n in nodes if n.op_type == cls.__name__]
    assert len(fused) == 2 and all(len(n.input) >= 6 and n.input[5] for n in fused)  # initial_h given


class LengthsHead(nn.Module):
    """A padded batch with each sequence's length: the recurrent layer's outputs and final states."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, lengths):
        y, state = self.rnn(x, lengths=lengths)
        return (y,) + (tuple(state) if isinstance(state, tuple) else (state,))


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_variable_lengths_export_as_sequence_lens(tmp_path, cls, layers, bidirectional):
    """lengths= (pack_padded_sequence's meaning) as a graph input: one LSTM/GRU/RNN node per layer (a bidirectional
    one fused) with sequence_lens, not the example's segments; onnxruntime then equals forgegrad at other batch
    sizes and lengths (outputs zero past a sequence, final states at its end, the reverse direction from its last
    step), left-padded lengths included."""
    fg.manual_seed(1)
    model = LengthsHead(cls(5, 6, num_layers=layers, bidirectional=bidirectional, batch_first=True))
    path = str(tmp_path / "lengths.onnx")
    example = (fg.randn(3, 9, 5), fg.tensor(np.array([9, 4, 6], np.int64)))
    report = fonnx.export(model, example, path, input_names=["x", "lengths"],
                          dynamic_axes={"x": {0: "batch", 1: "seq"}, "lengths": {0: "batch"}},
                          verify_sizes=[{"batch": 1, "seq": 9}, {"batch": 6, "seq": 20}], rtol=1e-4, atol=1e-5)
    assert report.ok
    nodes = [n for n in onnx.load(path).graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert len(nodes) == layers and all(len(n.input) > 4 and n.input[4] for n in nodes)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 12, 5)).astype(np.float32)
    lengths = np.array([12, 1, 7, 3, 12], np.int64)
    got = sess.run(None, {"x": x, "lengths": lengths})
    with fg.no_grad():
        want = model(fg.Tensor(x), fg.as_tensor(lengths))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)
    assert not got[0][1, 1:].any()  # past the second sequence's single step


def test_full_length_export_has_no_sequence_lens(tmp_path):
    fg.manual_seed(1)
    path = str(tmp_path / "plain.onnx")
    fonnx.export(Head(LSTM(5, 6, batch_first=True)), fg.randn(3, 7, 5), path,
                 dynamic_axes={"x": {0: "batch", 1: "seq"}})
    (node,) = [n for n in onnx.load(path).graph.node if n.op_type == "LSTM"]
    assert len(node.input) <= 4 or not node.input[4]
