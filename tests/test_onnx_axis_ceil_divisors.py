"""The exporter's axis_ceil_divisors (onnx/_symbolic.py): a dynamic axis cut into whole blocks of d, the last one
padded (a block-local attention), where the number of blocks ceil(T / d) and the padded length d * ceil(T / d) are
computed from the input's shape. A model padding by a whole block and slicing to the blocks exports with one graph for
every length (shorter than a block, exact multiples, one past); together with a floor divisor of the same axis; the
trace sizes it picks; the refusals (a remainder padded directly, bad arguments, the same divisor both ways)."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.nn import functional as F
from forgegrad.onnx import OnnxExportError, export
from forgegrad.onnx._symbolic import Dyn, Symbols

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

AXES = {"x": {0: "n", 1: "t"}, "mask": {0: "n", 1: "t"}}


class _Blocks(nn.Module):
    """Blocks of 4 (a whole zero block padded, sliced to ceil(t / 4) blocks): each block's sum plus its neighbours'
    (padded block axis), and the sums of the t // 3 whole blocks of 3 (floor)."""

    def forward(self, x, mask):
        B, T, C = x.shape
        nb = -(-T // 4)
        blocks = F.pad(x * mask.unsqueeze(-1), (0, 0, 0, 4))[:, :nb * 4].reshape(B, nb, 4, C).sum(2)
        around = F.pad(blocks, (0, 0, 1, 1))
        G = T // 3
        return around[:, 0:nb] + around[:, 1:nb + 1] + around[:, 2:nb + 2], x[:, :G * 3].reshape(B, G, 3, C).sum(2)


def _reference(x, mask):
    B, T, C = x.shape
    nb = -(-T // 4)
    padded = np.zeros((B, nb * 4 + 8, C), np.float32)
    padded[:, 4:4 + T] = x * mask[..., None]
    sums = padded.reshape(B, nb + 2, 4, C).sum(2)
    G = T // 3
    return sums[:, :nb] + sums[:, 1:nb + 1] + sums[:, 2:], x[:, :G * 3].reshape(B, G, 3, C).sum(2)


def _inputs(B, T, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, T, 3)).astype(np.float32), (rng.random((B, T)) < 0.8).astype(np.float32)


def test_blocks_of_any_length_in_one_graph(tmp_path):
    x, m = _inputs(2, 5)
    path = tmp_path / "blocks.onnx"
    report = export(_Blocks(), (fg.Tensor(x), fg.Tensor(m)), str(path), input_names=["x", "mask"], dynamic_axes=AXES,
                    axis_divisors={"t": 3}, axis_ceil_divisors={"t": 4},
                    verify_sizes=[{"n": 1, "t": 1}, {"n": 3, "t": 8}, {"n": 1, "t": 13}])
    assert report.ok
    outputs = onnx.load(path).graph.output
    declared = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in outputs]
    assert declared == [["n", "ceil(t/4)", 3], ["n", "t//3", 3]]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for B, T in [(1, 1), (2, 3), (3, 4), (1, 12), (2, 17), (1, 40)]:  # shorter than a block, multiples, one past
        x, m = _inputs(B, T, T)
        got = sess.run(None, {"x": x, "mask": m})
        for g, w in zip(got, _reference(x, m)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"B={B}, T={T}")


def test_trace_sizes_tell_every_quotient_apart():
    s = Symbols()
    s.add("n", 2, ("x", 0))
    s.add("t", 5, ("x", 1))
    assert s.divide("t", 128, ceil=True) == "ceil(t/128)"
    assert s.divide("t", 16) == "t//16"
    s.choose_sizes()
    assert s.a == {"n": 2, "t": 5, "ceil(t/128)": 1, "t//16": 0}
    for sizes in (s.b, s.c):
        assert sizes["ceil(t/128)"] == -(-sizes["t"] // 128) and sizes["t//16"] == sizes["t"] // 16
        assert sizes["t"] % 128  # never a multiple: ceil and floor differ there
    assert len({s.a["ceil(t/128)"], s.b["ceil(t/128)"], s.c["ceil(t/128)"]}) == 3
    assert s.free == ["n", "t"]
    assert s.full({"n": 1, "t": 300}) == {"n": 1, "t": 300, "ceil(t/128)": 3, "t//16": 18}
    # a padded length and a block count past the first solve to expressions of the ceil symbol
    e = s.solve(Dyn(128 * s.a["ceil(t/128)"], 128 * s.b["ceil(t/128)"], 128 * s.c["ceil(t/128)"]))
    assert str(e) == "128*ceil(t/128)"
    e = s.solve(Dyn(s.a["ceil(t/128)"] + 2, s.b["ceil(t/128)"] + 2, s.c["ceil(t/128)"] + 2))
    assert str(e) == "ceil(t/128)+2"


def test_refusals(tmp_path):
    x, m = _inputs(2, 5)
    args = ((fg.Tensor(x), fg.Tensor(m)), str(tmp_path / "no.onnx"))
    kw = dict(input_names=["x", "mask"], dynamic_axes=AXES)
    # without the divisor the padded length (and the remainder a direct pad would add) is no expression of the axes
    with pytest.raises(OnnxExportError, match="cannot express"):
        export(_Blocks(), *args, **kw, axis_divisors={"t": 3})
    with pytest.raises(ValueError, match="axis_ceil_divisors names 'time', which is not a dynamic input axis"):
        export(_Blocks(), *args, **kw, axis_ceil_divisors={"time": 4})
    with pytest.raises(ValueError, match=r"axis_ceil_divisors\['t'\] must be an int of at least 2, got 1"):
        export(_Blocks(), *args, **kw, axis_ceil_divisors={"t": 1})
    with pytest.raises(TypeError, match="axis_ceil_divisors must map dynamic axis names to ints"):
        export(_Blocks(), *args, **kw, axis_ceil_divisors=[4])
    with pytest.raises(ValueError, match="divided by 4 rounding both down .* and up"):
        export(_Blocks(), *args, **kw, axis_divisors={"t": 4}, axis_ceil_divisors={"t": 4})
