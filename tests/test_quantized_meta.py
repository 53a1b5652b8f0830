"""Quantized layers on the meta device (shapes only): Module.summary and the exporter's shape checks run
them without kernels, and every output shape equals the real forward's."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.quantization import calibrate, convert, prepare, quantize_dynamic, quantize_weight_only


def _meta(shape):
    return fg.zeros(*shape).to("meta")


def _shapes(out):
    if isinstance(out, (tuple, list)):
        return [s for o in out for s in _shapes(o)]
    return [tuple(out.shape)]


@pytest.mark.parametrize("kind", ["dynamic", "weight_only"])
@pytest.mark.parametrize("shape", [(3, 20), (2, 5, 20), (20,)])
def test_quantized_linear_meta_shapes(kind, shape):
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    q = quantize_dynamic(model) if kind == "dynamic" else quantize_weight_only(model)
    assert _shapes(q(_meta(shape))) == _shapes(q(fg.zeros(*shape)))
    with pytest.raises(ValueError, match="input must have shape \\(\\*, 20\\)"):
        q(_meta((3, 7)))


def test_static_lenet_meta_shapes_and_summary():
    from forgegrad.models.cnn import LeNet
    fg.manual_seed(0)
    prepared = prepare(LeNet().eval())
    calibrate(prepared, [np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)])
    for fuse in (True, False):
        q = convert(prepared, fuse=fuse)
        assert _shapes(q(_meta((3, 1, 28, 28)))) == [(3, 10)]
        text = str(q.summary((1, 28, 28)))
        assert "QuantizedConv2d" in text and "(1, 64, 7, 7)" in text


@pytest.mark.parametrize("mode", ["lstm", "gru"])
@pytest.mark.parametrize("kw", [{}, {"batch_first": True, "bidirectional": True, "num_layers": 2}])
@pytest.mark.parametrize("shape", [(5, 3, 6), (5, 6)])
def test_quantized_rnn_meta_shapes(mode, kw, shape):
    rnn = (nn.LSTM if mode == "lstm" else nn.GRU)(6, 12, **kw)
    q = quantize_dynamic(rnn, {type(rnn)})
    assert _shapes(q(_meta(shape))) == _shapes(q(fg.zeros(*shape)))
