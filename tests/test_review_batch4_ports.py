"""Review of the torch-port additions: Tensor.normal_/uniform_ take 0-d tensors for their numbers (torch converts
them), Conv1d/Conv2d's repr names a non-zero padding_mode as torch's, and the ONNX default sequence axis of a
token-id model with a Conv1d before its LSTM (the 1-d conv skip is for a 3-D (batch, channels, length) input)."""
import importlib.util

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn

torch = pytest.importorskip("torch", reason="the reference is torch")


def test_normal_and_uniform_take_0d_tensor_arguments():
    fg.manual_seed(0)
    w = fg.zeros(2000)
    w.normal_(fg.tensor(3.0), fg.tensor(0.5))  # AttributeError ('Tensor' has no astype) before
    assert w.dtype == fg.float32
    assert abs(float(w.mean()) - 3.0) < 0.1 and abs(float(w.std()) - 0.5) < 0.1
    w.uniform_(fg.tensor(-2.0), np.float64(-1.0))
    values = w.numpy()
    assert values.min() >= -2.0 and values.max() <= -1.0 and w.dtype == fg.float32
    t = torch.zeros(3)
    t.normal_(torch.tensor(3.0), torch.tensor(0.5))  # torch accepts them too
    with pytest.raises(RuntimeError, match="std"):
        w.normal_(0.0, fg.tensor(-1.0))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv_repr_names_the_padding_mode(mode):
    for fcls, tcls in ((nn.Conv1d, torch.nn.Conv1d), (nn.Conv2d, torch.nn.Conv2d)):
        assert repr(fcls(4, 2, 3, padding=1, padding_mode=mode)) == repr(tcls(4, 2, 3, padding=1, padding_mode=mode))


class _TextConvLSTM(nn.Module):
    """Embedding -> Conv1d over (batch, channels, length) -> LSTM: the model's input is (batch, seq) token ids."""

    def __init__(self):
        super().__init__()
        self.emb, self.conv = nn.Embedding(20, 8), nn.Conv1d(8, 8, 3, padding=1)
        self.lstm, self.fc = nn.LSTM(8, 6, batch_first=True), nn.Linear(6, 3)

    def forward(self, ids):
        h = self.conv(self.emb(ids).transpose(1, 2)).relu().transpose(1, 2)
        out, _ = self.lstm(h)
        return self.fc(out[:, -1])


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="the export is run in onnxruntime")
def test_token_id_model_with_conv1d_before_lstm_keeps_a_dynamic_sequence_axis(tmp_path):
    import onnxruntime as ort
    fg.manual_seed(0)
    model = _TextConvLSTM().eval()
    rng = np.random.default_rng(0)
    path = str(tmp_path / "text.onnx")
    assert fg.onnx.export(model, (fg.tensor(rng.integers(0, 20, (2, 7))),), path).ok
    session = ort.InferenceSession(path)
    assert session.get_inputs()[0].shape == ["batch", "seq"]  # the sequence axis was static (7) after the change
    ids = rng.integers(0, 20, (3, 11))
    with fg.no_grad():
        want = model(fg.tensor(ids)).numpy()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: ids})[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="the export is run in onnxruntime")
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_embedding_max_norm_export_renorms_rows_the_example_did_not_name(norm_type, tmp_path):
    # the export looked rows up in the weight as it was: rows the example did not name came out unscaled in ORT
    import onnxruntime as ort
    fg.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4, max_norm=1.0, norm_type=norm_type), nn.Linear(4, 2)).eval()
    path = str(tmp_path / "emb.onnx")
    assert fg.onnx.export(model, (fg.tensor([[1, 2, 3]]),), path).ok
    ids = np.array([[5, 6, 1]])
    session = ort.InferenceSession(path)
    got = session.run(None, {session.get_inputs()[0].name: ids})[0]
    with fg.no_grad():
        want = model(fg.tensor(ids)).numpy()  # eager: rows 5 and 6 renormed in place first, as torch's
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
