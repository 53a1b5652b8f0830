"""ONNX export of the ops that used to bypass Function.apply (comparisons, casts, argmax/argmin,
where's condition, var/std): exported through the real ops (no export-time patching), checked by
onnx.checker and compared with onnxruntime at batch 1, 3 and 64 (rtol 1e-5 / atol 1e-6); and a
model that assigns in place refuses to export."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import forgegrad as fg
import forgegrad.onnx as fonnx
from forgegrad import nn
from forgegrad.onnx import _capture

from test_onnx_common import BATCHES, Lambda, export_and_check

# at batch 1 an unbiased variance over the batch axis is nan (with a warning), in forgegrad, torch and
# the exported graph alike; the comparisons treat nan == nan
pytestmark = pytest.mark.filterwarnings("ignore:var\\(\\). degrees of freedom:UserWarning")


def combo(m, x):
    """x is (B, 6). Comparisons, where, argmax/argmin, casts and var/std in one model. The masks and
    indices are computed from x itself (exact in numpy and onnxruntime alike), so no near-tie can flip
    a comparison between the two."""
    mask = x > m.v                       # tensor vs parameter, broadcast (runs as m.v < x: Parameter
                                         # subclasses Tensor, so Python tries its reflected op first)
    y = fg.where(mask, x, x * 0.1)
    y = fg.where(x <= -1.0, -1.0, y)     # scalar branch
    flags = ((x >= 0).float() + (x < -0.5).float() * 2 + (x == x[:, :1]).long().float()
             + (x != 0.25).to(fg.float32) + (x > -0.2).float())
    cls = x.argmax(dim=1)                           # (B,) int64
    low = x.argmin(dim=1, keepdim=True)             # (B, 1) int64
    first = x.argmax()                              # over the flattened input: a scalar
    v_batch = y.var(dim=0)                          # divides by B - 1 of the run, not of the example
    s_feat = y.std(dim=1, keepdim=True, unbiased=False)
    v_all = x.var()
    return y + s_feat * flags + v_all, cls, low, first, v_batch, mask


def make_combo():
    fg.manual_seed(0)
    return Lambda(combo, v=nn.Parameter(fg.randn(6)._data * 0.5)), fg.randn(3, 6)


def op_types(proto):
    return [n.op_type for n in proto.graph.node]


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_combo_model_matches_onnxruntime(tmp_path, opset):
    model, x = make_combo()
    report, proto = export_and_check(model, x, tmp_path, opset=opset, batches=BATCHES)
    types = op_types(proto)
    for t in ("Greater", "LessOrEqual", "GreaterOrEqual", "Less", "Equal", "Not", "Where", "Cast", "ArgMax",
              "ArgMin", "ReduceMean", "ReduceSum", "Sqrt"):
        assert t in types, (t, types)
    # the batch-axis variance reads its divisor from the input's shape at run time
    assert "Shape" in types and "ReduceProd" in types
    arg_nodes = [n for n in proto.graph.node if n.op_type in ("ArgMax", "ArgMin")]
    for n in arg_nodes:
        attrs = {a.name: a.i for a in n.attribute}
        assert attrs["select_last_index"] == 0 and attrs["keepdims"] in (0, 1)
    outs = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    assert list(outs.values()) == [onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.INT64,
                                   onnx.TensorProto.INT64, onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL]


def test_var_over_batch_is_not_baked(tmp_path):
    """Exported at batch 3, run at 64: the divisor is 63 (a baked one would be 2)."""
    import onnxruntime as ort
    model = Lambda(lambda m, x: (x.var(dim=0), x.std(dim=(0, 1)), x.var(dim=1, unbiased=False), x.var(dim=())))
    path = tmp_path / "var.onnx"
    fonnx.export(model, fg.randn(3, 4, 5), str(path), input_names=["x"], verify_sizes=[{"batch": b} for b in (1, 64)])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((64, 4, 5)).astype(np.float32)
    v0, s01, v1, v_all = sess.run(None, {"x": x})
    np.testing.assert_allclose(v0, x.var(axis=0, ddof=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s01, x.std(axis=(0, 1), ddof=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1, x.var(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v_all, x.var(ddof=1), rtol=1e-5, atol=1e-6)


def int_bool_model(m, x, i):
    """x (B, 5) float, i (B, 3) int64: integer comparisons / argmax, bool argmax, float/bool casts."""
    pos = x > 0
    return (i > 1, i == i[:, :1], i.argmax(dim=1), pos.argmax(dim=1), pos.long().argmin(1, keepdim=True),
            x.long(), x.bool(), x.clamp(min=0).bool(), (i < 2.5).float(), i.float().var(dim=1),
            fg.where(x.clamp(min=0), x, -1.0), fg.where(i, x[:, :3], 0.0), pos < (x < 1.0), pos >= (x < 1.0))


@pytest.mark.parametrize("opset", [13, 17])
def test_int_and_bool_inputs(tmp_path, opset):
    x = fg.randn(3, 5) * 3
    i = fg.tensor(np.array([[0, 1, 2], [2, 2, 0], [1, 0, 1]]))
    report, proto = export_and_check(Lambda(int_bool_model), (x, i), tmp_path, opset=opset)
    casts = [a.i for n in proto.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
    assert onnx.TensorProto.INT64 in casts and onnx.TensorProto.BOOL in casts and onnx.TensorProto.FLOAT in casts


def test_argmax_keepdim_over_all_and_0d(tmp_path):
    model = Lambda(lambda m, x: (x.argmax(keepdim=True), x.argmin(), x.sum(1).argmax(dim=0, keepdim=True)))
    export_and_check(model, fg.randn(3, 4), tmp_path)


def test_export_does_not_patch_tensor_methods(tmp_path):
    """The exporter runs the model with forgegrad's own Tensor methods and where."""
    seen = []
    originals = (fg.Tensor.__gt__, fg.Tensor.argmax, fg.Tensor.float, fg.Tensor.to, fg.where)

    def fwd(m, x):
        seen.append((fg.Tensor.__gt__, fg.Tensor.argmax, fg.Tensor.float, fg.Tensor.to, fg.where) == originals)
        return fg.where(x > 0, x, 0.0), x.argmax(1)

    export_and_check(Lambda(fwd), fg.randn(3, 4), tmp_path)
    assert seen and all(seen)
    assert not hasattr(_capture, "_patched_tensor_methods")


def test_setitem_in_forward_refuses_to_export(tmp_path):
    def fwd(m, x):
        y = x * 2.0
        y[:, 0] = 0.0  # in place: not an op of the trace
        return y

    path = tmp_path / "inplace.onnx"
    with pytest.raises(RuntimeError, match="in-place assignment.*trace"):
        fonnx.export(Lambda(fwd), fg.randn(3, 4), str(path))
    assert not path.exists()
    with fg.no_grad():  # the model itself still runs outside export
        out = Lambda(fwd)(fg.ones(2, 3))
    np.testing.assert_array_equal(out._data, [[0, 2, 2], [0, 2, 2]])
