"""export's max pools: a plain MaxPool by default (as torch.onnx writes, which onnxruntime's quantize_static takes),
the NaN-exact pattern (an IsNaN mask pooled alongside) only under export(nan_exact_pooling=True)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
tf = torch.nn.functional


class _Pools(fg.nn.Module):
    def forward(self, x):  # x (N, C, 6, 8)
        row, vol = x[:, :, 1], x.reshape(x.shape[0], x.shape[1], 2, 3, 8)
        return (F.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 2, return_indices=True)[0], F.max_pool1d(row, 3, 2, 1),
                F.adaptive_max_pool2d(x, (3, 4)), F.adaptive_max_pool2d(x, (4, 3)), F.adaptive_max_pool1d(row, 3),
                F.max_pool3d(vol, 2, 1, ceil_mode=True), F.adaptive_max_pool3d(vol, (1, 3, 4)))


def _torch_pools(t):
    row, vol = t[:, :, 1], t.reshape(t.shape[0], t.shape[1], 2, 3, 8)
    return (tf.max_pool2d(t, 3, 2, 1), tf.max_pool2d(t, 2), tf.max_pool1d(row, 3, 2, 1),
            tf.adaptive_max_pool2d(t, (3, 4)), tf.adaptive_max_pool2d(t, (4, 3)), tf.adaptive_max_pool1d(row, 3),
            tf.max_pool3d(vol, 2, 1, ceil_mode=True), tf.adaptive_max_pool3d(vol, (1, 3, 4)))


def _export(tmp_path, **kw):
    path = str(tmp_path / "pools.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 8)).astype(np.float32)
    fg.onnx.export(_Pools(), fg.tensor(x), path, input_names=["x"], dynamic_axes={}, **kw)  # verified vs eager
    return path, onnx.load(path)


def test_default_export_is_a_plain_max_pool(tmp_path):
    path, model = _export(tmp_path)
    ops = [n.op_type for n in model.graph.node]
    assert "IsNaN" not in ops and "Where" not in ops
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 8)).astype(np.float32)
    got = ort.InferenceSession(path).run(None, {"x": x})
    for g, w in zip(got, _torch_pools(torch.tensor(x)), strict=True):
        np.testing.assert_array_equal(g, w.numpy())


def test_nan_exact_pooling_keeps_nan_windows_in_every_max_pool(tmp_path):
    path, model = _export(tmp_path, nan_exact_pooling=True)
    assert "IsNaN" in [n.op_type for n in model.graph.node]
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 8)).astype(np.float32)
    x[0, 0, 1, 1] = x[0, 0, 4, 6] = x[1, 2, 5, 7] = x[1, 1, 1, 5] = np.nan
    x[0, 1, 3, 5], x[0, 1, 0, 0] = np.inf, -np.inf
    want = _torch_pools(torch.tensor(x))
    assert all(torch.isnan(w).any() for w in want)
    got = ort.InferenceSession(path).run(None, {"x": x})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w.numpy())


def test_nan_exact_pooling_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match="nan_exact_pooling"):
        _export(tmp_path, nan_exact_pooling="yes")


def test_onnxruntime_quantize_static_takes_the_lenet_export(tmp_path):
    """onnxruntime's quantizer rejected the NaN-exact pattern ("unknown initializers/tensors ..MaxPool_out")."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    fg.manual_seed(0)
    model = fg.models.create("lenet").eval()
    rng = np.random.default_rng(0)
    batches = [rng.random((8, 1, 28, 28)).astype(np.float32) for _ in range(3)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"x": b} for b in batches])

        def get_next(self):
            return next(self._it, None)

    fp, i8 = str(tmp_path / "lenet.onnx"), str(tmp_path / "lenet8.onnx")
    fg.onnx.export(model, fg.tensor(batches[0]), fp, input_names=["x"], output_names=["y"])
    quantize_static(fp, i8, Reader(), quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    ops = {n.op_type for n in onnx.load(i8).graph.node}
    assert "QLinearConv" in ops and "MaxPool" in ops
    got = ort.InferenceSession(i8).run(None, {"x": batches[1]})[0]
    with fg.no_grad():
        want = model(fg.tensor(batches[1])).numpy()
    # 8-bit activations and weights: close to the float model, not equal
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max() + 1e-3
