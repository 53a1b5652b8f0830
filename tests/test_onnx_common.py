"""Shared helpers of the ONNX export tests (no tests here)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

import forgegrad as fg
import forgegrad.onnx as fonnx

RTOL, ATOL = 1e-5, 1e-6
BATCHES = (1, 3, 64)


class Lambda(fg.nn.Module):
    """A module whose forward is a function of the inputs (one op or a few under test)."""

    def __init__(self, fn, **params):
        super().__init__()
        self.fn = fn
        for k, v in params.items():
            setattr(self, k, v)

    def forward(self, *xs):
        return self.fn(self, *xs)


def _resize(x: np.ndarray, axes, sizes, rng):
    shape = list(x.shape)
    for a, s in axes.items():
        shape[a] = sizes[s]
    if x.dtype.kind in "iu":
        return rng.integers(int(x.min()), int(x.max()) + 1, size=shape).astype(x.dtype)
    if x.dtype == bool:
        return rng.random(shape) < 0.5
    return rng.standard_normal(shape).astype(x.dtype)


def export_and_check(model, inputs, tmp_path, opset=17, batches=BATCHES, rtol=RTOL, atol=ATOL,
                     dynamic_axes=None, name="m.onnx", **kw):
    """Export (verify=True checks onnxruntime at the other batch sizes), run onnx.checker on the file,
    then compare onnxruntime with forgegrad ourselves at every batch size in `batches`."""
    if not isinstance(inputs, tuple):
        inputs = (inputs,)
    path = tmp_path / name
    others = [{"batch": b} for b in batches if b != inputs[0].shape[0]]
    report = fonnx.export(model, inputs, str(path), opset=opset, rtol=rtol, atol=atol, dynamic_axes=dynamic_axes,
                          verify_sizes=others if dynamic_axes is None else None, **kw)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == opset
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    model.eval()
    for b in batches if dynamic_axes is None else (inputs[0].shape[0],):
        arrays = []
        for name_, x in zip(report.input_names, inputs):
            x = np.asarray(x)
            axes = report.dynamic_axes.get(name_, {})
            arrays.append(_resize(x, axes, {"batch": b, "seq": x.shape[1] if x.ndim > 1 else 1}, rng)
                          if b != inputs[0].shape[0] else x)
        with fg.no_grad():
            want = model(*[fg.tensor(a) for a in arrays])
        want = [want] if isinstance(want, fg.Tensor) else list(want)
        got = sess.run(None, dict(zip(report.input_names, arrays)))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            w = np.asarray(w._data)
            assert g.shape == w.shape, (g.shape, w.shape)
            assert g.dtype == w.dtype, (g.dtype, w.dtype)
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return report, proto
