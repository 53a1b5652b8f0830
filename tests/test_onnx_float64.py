"""float64 models export as double graphs that onnxruntime runs (forgegrad.onnx._float64, docs/onnx.md).

Whole models (MLP, CNN, LSTM, GRU, a Transformer encoder layer) converted with ``.double()`` or built
under ``set_default_dtype(float64)``, and every registry op with an ONNX mapping on its samples in
float64: the file's inputs, initializers and outputs are double, and the exporter's onnxruntime check
passes (1e-9 relative where the graph is double throughout; float32's tolerance where a node without
a double kernel in onnxruntime runs in float32 between Casts)."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
DOUBLE = onnx.TensorProto.DOUBLE
FLOAT = onnx.TensorProto.FLOAT


def _float_types(path):
    """Element types of the file's float inputs, outputs and initializers (Cast targets aside)."""
    g = onnx.load(path).graph
    vals = [v.type.tensor_type.elem_type for v in list(g.input) + list(g.output)]
    vals += [t.data_type for t in g.initializer]
    return {t for t in vals if t in (DOUBLE, FLOAT)}


def _casts_to_float(path):
    return [n.name for n in onnx.load(path).graph.node if n.op_type == "Cast"
            and any(a.name == "to" and a.i == FLOAT for a in n.attribute)]


class _First(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


def _models():
    fg.manual_seed(0)
    yield "mlp", nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)), (3, 8), ()
    yield ("cnn", nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)), (2, 3, 8, 8), ("Conv", "AveragePool"))
    yield "lstm", _First(nn.LSTM(5, 7, batch_first=True)), (2, 4, 5), ("LSTM",)
    yield "gru", _First(nn.GRU(5, 7)), (4, 2, 5), ("GRU",)
    yield ("transformer", nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True), (2, 5, 16), ())


MODELS = list(_models())


@pytest.mark.parametrize("how", ["double", "default_dtype"])
@pytest.mark.parametrize("name", [m[0] for m in MODELS])
def test_float64_model_exports_double(name, how, tmp_path):
    if how == "double":
        _, model, shape, islands = next(m for m in MODELS if m[0] == name)
        model = model.double()
    else:
        fg.set_default_dtype(fg.float64)
        try:
            _, model, shape, islands = next(m for m in _models() if m[0] == name)
        finally:
            fg.set_default_dtype(fg.float32)
    assert all(p.dtype == fg.float64 for p in model.parameters())
    x = fg.tensor(np.random.default_rng(1).standard_normal(shape))  # float64 array -> float64 with .double()
    x = x.double()
    path = str(tmp_path / f"{name}.onnx")
    report = fg.onnx.export(model.eval(), x, path)
    assert report.ok
    assert _float_types(path) == {DOUBLE}, "a float64 model must export double inputs, weights and outputs"
    assert sorted({s.split(" ")[0] for s in report.float32_nodes}) == sorted(islands)
    # float32 only between the Casts around the nodes onnxruntime cannot run in double
    assert len(_casts_to_float(path)) >= len(islands) and (islands or not _casts_to_float(path))
    if not islands:
        assert (report.rtol, report.atol) == (1e-9, 1e-10)
        assert max(report.max_abs_error().values()) < 1e-10
    # the same graph run by hand: double in, double out, equal to forgegrad's float64 forward
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {report.input_names[0]: x.numpy()})[0]
    with fg.no_grad():
        want = model(x).numpy()
    assert got.dtype == np.float64 and want.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-9 if not islands else 1e-5, atol=1e-10 if not islands else 1e-6)


def test_strict_names_the_node_without_a_double_kernel(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU()).double()
    with pytest.raises(fg.onnx.UnsupportedOpError, match=r"float64 export: .*Conv"):
        fg.onnx.export(model.eval(), fg.randn(1, 2, 6, 6).double(), str(tmp_path / "c.onnx"), float64="strict")
    with pytest.raises(ValueError, match="float64 must be"):
        fg.onnx.export(model.eval(), fg.randn(1, 2, 6, 6).double(), str(tmp_path / "c.onnx"), float64="no")


def test_float32_model_unchanged(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.GELU()).eval()
    path = str(tmp_path / "f.onnx")
    report = fg.onnx.export(model, fg.randn(1, 2, 6, 6), path)
    assert _float_types(path) == {FLOAT} and not report.float32_nodes and (report.rtol, report.atol) == (1e-5, 1e-6)


# ---- every registry op with a mapping, on its samples in float64 ------------------------------------------
# ops whose graph runs a node in float32 (GridSample, Resize: no double kernel in onnxruntime) near zero
# outputs: verified at the op's own float32 tolerance rather than the exporter's default
_ISLAND_TOL = {"grid_sample", "interpolate"}
F64_MAX_ELEMENTS = 20_000


def _float64_samples(op):
    """(index, sample with its float32 arrays as float64) for the exportable samples that hold a float tensor."""
    for k, s in enumerate(op.samples()):
        if not s.onnx or any(isinstance(a, np.ndarray) and a.size > F64_MAX_ELEMENTS for a in s.args):
            continue
        args = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32
                     and i not in op.float32_args else a for i, a in enumerate(s.args))
        if any(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in args):
            yield k, fg.ops.Sample(args, s.kwargs, s.name)


def _float64_cases():
    for op in fg.ops.all_ops():
        if "onnx" in op.gaps or op.float64 is None or op.onnx_mapping() is None:
            continue
        if any(True for _ in _float64_samples(op)):  # integer-only ops (bitwise_and...) have none
            yield pytest.param(op, id=op.name)


@pytest.mark.parametrize("op", list(_float64_cases()))
def test_registry_op_exports_in_float64(op, tmp_path):
    for k, s in _float64_samples(op):
        args = s.args
        pos = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]

        class OneOp(fg.nn.Module):
            def forward(self, *tensors):
                a = list(args)
                for i, t in zip(pos, tensors):
                    a[i] = t
                return op(*a, **s.kwargs)

        inputs = tuple(fg.Tensor(args[i], dtype=args[i].dtype) for i in pos)
        tol = dict(rtol=max(op.tol[0], 1e-5), atol=max(op.tol[1], 1e-6)) if op.name in _ISLAND_TOL else {}
        path = str(tmp_path / f"{op.name}_{k}.onnx")
        report = fg.onnx.export(OneOp(), inputs, path, dynamic_axes={}, **tol)
        assert report.ok, f"{op.name}: sample {s.name!r}: {report}"
        if not report.float32_nodes and not tol:
            outs = {o.type.tensor_type.elem_type for o in onnx.load(path).graph.output}
            assert (report.rtol, report.atol) == (1e-9, 1e-10) or DOUBLE not in outs  # (bool / int outputs)
