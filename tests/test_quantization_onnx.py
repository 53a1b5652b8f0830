"""ONNX export of dynamic-quantized models: onnxruntime runs the integer graph (DynamicQuantizeLinear +
MatMulInteger) and agrees with forgegrad within one output quantization step."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.quantization import export_onnx, quantize_dynamic

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _mlp():
    fg.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Dropout(0.1),
                         nn.Sequential(nn.Linear(48, 32), nn.Tanh()), nn.Linear(32, 10, bias=False))


@pytest.mark.parametrize("reduce_range", [True, False])
def test_export_runs_integer_ops_in_onnxruntime(tmp_path, rng, reduce_range):
    q = quantize_dynamic(_mlp(), {nn.Linear}, reduce_range=reduce_range)
    x = rng.standard_normal((16, 64)).astype(np.float32)
    report = export_onnx(q, x, tmp_path / "q.onnx")
    assert report.max_abs_error <= report.step
    types = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert types.count("MatMulInteger") == 3 and types.count("DynamicQuantizeLinear") == 3
    assert "MatMul" not in types and "Gemm" not in types  # no float matrix product left
    # 8-bit weights in the file (uint8 w + 128, zero point 128, which onnxruntime multiplies exactly on
    # every CPU): it is about a quarter of the float32 model's
    inits = {i.name: i for i in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}
    weights = [onnx.numpy_helper.to_array(i) for n, i in inits.items() if "weight_uint8" in n]
    assert len(weights) == 3 and all(w.dtype == np.uint8 for w in weights)
    np.testing.assert_array_equal(weights[0].T.astype(np.int16) - 128, q[1].weight._data)
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x[:3]})[0]
    assert y.shape == (3, 10)


def test_mixed_float_and_quantized_layers(tmp_path, rng):
    model = nn.Sequential(nn.Linear(20, 30), nn.Sigmoid(), nn.Linear(30, 4))
    q = quantize_dynamic(model, {nn.Linear})
    setattr(q, "2", model[2])  # the last layer stays float32: exported as MatMul + Add
    x = rng.standard_normal((5, 20)).astype(np.float32)
    report = export_onnx(q, x, tmp_path / "m.onnx")
    assert "MatMulInteger" in report.ops and "MatMul" in report.ops


def test_unsupported_module_and_bad_arguments(tmp_path, rng):
    q = quantize_dynamic(nn.Sequential(nn.Linear(8, 4), nn.Softmax(dim=1)), {nn.Linear})
    x = rng.standard_normal((2, 8)).astype(np.float32)
    with pytest.raises(NotImplementedError, match="Softmax"):
        export_onnx(q, x, tmp_path / "s.onnx")
    with pytest.raises(ValueError, match="2-D float32"):
        export_onnx(q, x.astype(np.float64), tmp_path / "s.onnx")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(q, x, tmp_path / "s.onnx", opset=9)
