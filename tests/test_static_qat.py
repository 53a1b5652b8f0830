"""FakeQuantize (vs torch.ao's, gradients included), static quantization (prepare / calibrate /
convert; quantized Linear/Conv2d against torch.ao.nn.quantized with the same qparams), QAT, errors."""
import numpy as np
import pytest
import torch
from torch.ao import quantization as tq

import forgegrad as fg
from forgegrad import nn
from forgegrad.quantization import observers as O
from forgegrad.quantization.fake_quant import FakeQuantize, default_weight_fake_quant
from forgegrad.quantization.qat import QATConv2d, QATLinear, prepare_qat
from forgegrad.quantization.static import (QuantizedConv2d, QuantizedLinear, calibrate, convert,
                                           get_default_qconfig, prepare)

R = np.random.default_rng


def test_fake_quantize_module_matches_torch_with_gradient():
    fq = FakeQuantize(O.MovingAverageMinMaxObserver, averaging_constant=0.3, dtype="quint8")
    tfq = tq.FakeQuantize(tq.MovingAverageMinMaxObserver, averaging_constant=0.3, quant_min=0, quant_max=255,
                          dtype=torch.quint8)
    for seed in range(3):
        x = (R(seed).standard_normal((4, 9)) * (seed + 1)).astype(np.float32)
        xf = fg.tensor(x, requires_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        yf, yt = fq(xf), tfq(xt)
        np.testing.assert_array_equal(yf._data, yt.detach().numpy())
        g = R(9).standard_normal(x.shape).astype(np.float32)
        yf.backward(g)
        yt.backward(torch.tensor(g))
        np.testing.assert_array_equal(xf.grad._data, xt.grad.numpy())
    np.testing.assert_array_equal(fq.scale._data, tfq.scale.numpy())
    np.testing.assert_array_equal(fq.zero_point._data, tfq.zero_point.numpy())
    # per channel weights (symmetric qint8): same as torch's default per-channel weight fake quant
    w = R(5).standard_normal((6, 4)).astype(np.float32)
    wq = default_weight_fake_quant()(fg.tensor(w))
    twq = tq.default_per_channel_weight_fake_quant()(torch.tensor(w))
    np.testing.assert_array_equal(wq._data, twq.numpy())


def _qparams_from(m):
    return (float(m.input_scale._data[0]), int(m.input_zero_point._data[0]),
            float(m.output_scale._data[0]), int(m.output_zero_point._data[0]))


def _torch_quantized_like(qm, x):
    """torch.ao.nn.quantized Linear/Conv2d with qm's int8 weights and qparams, run on x.

    On torch's qnnpack engine, which sums u8 x s8 exactly on every CPU as our kernels do. torch's
    default x86/fbgemm (and onednn) engines run vpmaddubsw on AVX2-only CPUs, whose int16 pair sums
    saturate with full 8-bit activations: on an AVX2-only Zen 4 their conv output was up to 46 output
    steps off the exact result."""
    engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"  # weights are prepacked for the engine set at set_weight_bias
    try:
        return _torch_quantized_run(qm, x)
    finally:
        torch.backends.quantized.engine = engine


def _torch_quantized_run(qm, x):
    import torch.ao.nn.quantized as nnq

    sx, zx, so, zo = _qparams_from(qm)
    w = torch._make_per_channel_quantized_tensor(torch.tensor(qm.weight._data), torch.tensor(qm.weight_scale._data,
                                                 dtype=torch.float64), torch.zeros(qm.weight._data.shape[0],
                                                 dtype=torch.int64), 0)
    if isinstance(qm, QuantizedLinear):
        t = nnq.Linear(qm.in_features, qm.out_features)
    else:
        t = nnq.Conv2d(qm.in_channels, qm.out_channels, qm.kernel_size, qm.stride, qm.padding, qm.dilation)
    t.set_weight_bias(w, torch.tensor(qm.bias._data))
    t.scale, t.zero_point = so, zo
    xq = torch.quantize_per_tensor(torch.tensor(x), sx, zx, torch.quint8)
    return t(xq).dequantize().numpy(), so


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
@pytest.mark.parametrize("observer", ["minmax", "moving_average", "percentile", "histogram"])
def test_static_quantization_against_torch_quantized_modules(observer):
    fg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(5 * 3 * 3, 4))
    data = [R(i).standard_normal((8, 2, 6, 6)).astype(np.float32) for i in range(4)]
    prepared = prepare(model, get_default_qconfig(observer))
    assert isinstance(model[0], nn.Conv2d) and type(model[0]) is nn.Conv2d  # the float model is untouched
    assert calibrate(prepared, [(d, None) for d in data]) == 4
    qmodel = convert(prepared, fuse=False)  # the conv alone, as torch's (the fused model: test_quantization_fuse)
    conv, lin = qmodel[0], qmodel[4]
    assert isinstance(conv, QuantizedConv2d) and isinstance(lin, QuantizedLinear)
    assert conv.weight._data.dtype == np.int8 and lin.weight._data.dtype == np.int8
    x = data[0]
    with fg.no_grad():
        y_conv = conv(fg.tensor(x))._data
    ref, step = _torch_quantized_like(conv, x)
    assert np.abs(y_conv - ref).max() <= step * 1.0001  # at most one output step (rounding of the requantize)
    assert np.mean(y_conv == ref) > 0.99
    h = np.maximum(y_conv, 0).reshape(8, 5, 3, 2, 3, 2).max(axis=(3, 5)).reshape(8, -1)
    with fg.no_grad():
        y_lin = lin(fg.tensor(h))._data
    ref, step = _torch_quantized_like(lin, h)
    assert np.abs(y_lin - ref).max() <= step * 1.0001 and np.mean(y_lin == ref) > 0.95
    with fg.no_grad():
        out_q = qmodel(fg.tensor(x))._data
        out_f = model(fg.tensor(x))._data
    # close to float (the percentile and histogram observers clip the largest activations of this small sample)
    assert np.abs(out_q - out_f).max() < (0.2 if observer in ("percentile", "histogram") else 0.1) * np.abs(out_f).max()


def test_quantized_state_dict_roundtrip(tmp_path):
    fg.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    p = prepare(model)
    calibrate(p, [R(0).standard_normal((16, 6)).astype(np.float32)])
    q = convert(p)
    fg.save(q.state_dict(), str(tmp_path / "q.safetensors"))
    state = fg.load(str(tmp_path / "q.safetensors"))
    assert state["0.weight"].dtype == np.int8
    fresh = nn.Sequential(QuantizedLinear(6, 5), nn.ReLU(), QuantizedLinear(5, 3))
    fresh.load_state_dict(state)
    x = fg.tensor(R(1).standard_normal((3, 6)).astype(np.float32))
    with fg.no_grad():
        np.testing.assert_array_equal(fresh(x)._data, q(x)._data)


def test_qat_trains_through_fake_quant_and_converts():
    fg.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    qat = prepare_qat(model)
    assert isinstance(qat[0], QATConv2d) and isinstance(qat[3], QATLinear)
    x = R(3).standard_normal((6, 1, 6, 6)).astype(np.float32)
    y = R(4).integers(0, 3, 6)
    opt = fg.optim.SGD(qat.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(qat(fg.tensor(x)), fg.tensor(y))
        loss.backward()
        opt.step()
    # the QAT forward equals torch's composition of the same fake quants (straight-through grads)
    lin = qat[3]
    h = R(5).standard_normal((2, 48)).astype(np.float32)
    hf = fg.tensor(h, requires_grad=True)
    for m in (lin.input_fake_quant, lin.weight_fake_quant, lin.activation_post_process):
        m.disable_observer()
    qat.zero_grad()
    out = lin(hf)
    out.sum().backward()
    ht = torch.tensor(h, requires_grad=True)
    wt = torch.tensor(lin.weight._data.copy(), requires_grad=True)

    def fq(t, m):
        s, z = m.scale._data, m.zero_point._data
        if m.is_per_channel:
            return torch.fake_quantize_per_channel_affine(t, torch.tensor(s), torch.tensor(z, dtype=torch.int32), 0,
                                                          m.quant_min, m.quant_max)
        return torch.fake_quantize_per_tensor_affine(t, float(s[0]), int(z[0]), m.quant_min, m.quant_max)

    ref = fq(torch.nn.functional.linear(fq(ht, lin.input_fake_quant), fq(wt, lin.weight_fake_quant),
                                        torch.tensor(lin.bias._data)), lin.activation_post_process)
    ref.sum().backward()
    np.testing.assert_allclose(out._data, ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hf.grad._data, ht.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin.weight.grad._data, wt.grad.numpy(), rtol=1e-5, atol=1e-5)
    qmodel = convert(qat)
    with fg.no_grad():
        yq = qmodel(fg.tensor(x))._data
        qat.eval()
        yf = qat(fg.tensor(x))._data
    step = float(qmodel[3].output_scale._data[0])
    assert np.abs(yq - yf).max() <= 2 * step


def test_errors():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="0 has seen no data"):
        convert(prepare(model))
    with pytest.raises(ValueError, match="unsupported layer type.*LSTM"):
        prepare(model, modules={nn.Linear, nn.LSTM})
    with pytest.raises(ValueError, match="no Linear or Conv2d"):
        prepare(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="no prepared layers"):
        convert(model)
    with pytest.raises(TypeError, match="float32, got float64"):
        calibrate(prepare(model), [np.ones((2, 4))])
    with pytest.raises(ValueError, match="grouped Conv2d"):
        prepare(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)))
    with pytest.raises(TypeError, match="qconfig"):
        prepare(model, qconfig="fbgemm")


def test_quantized_layers_run_the_int8_kernels_exactly_on_every_path(use_int8_path):
    from forgegrad.quantization import _int_ops, int8_paths

    fg.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 7, 3, stride=2, padding=1, dilation=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(7 * 4 * 4, 5))
    p = prepare(model)
    calibrate(p, [R(i).standard_normal((4, 3, 8, 8)).astype(np.float32) for i in range(2)])
    q = convert(p)
    conv, lin = q[0], q[3]
    x = R(7).standard_normal((3, 3, 8, 8)).astype(np.float32)
    xq = _int_ops.quantize_u8(x, *conv.qparams("input"))
    ref_c = _int_ops.reference_conv2d(xq, *conv.qparams("input"), conv.weight._data, conv.weight_scale._data,
                                      conv.bias._data, conv.stride, conv.padding, conv.dilation,
                                      *conv.qparams("output"))
    h = np.maximum(_int_ops.dequantize_u8(ref_c, *conv.qparams("output")), 0).reshape(3, -1)
    hq = _int_ops.quantize_u8(h, *lin.qparams("input"))
    ref_l = _int_ops.reference_linear(hq, *lin.qparams("input"), lin.weight._data, lin.weight_scale._data,
                                      lin.bias._data, *lin.qparams("output"))
    for path in int8_paths():
        use_int8_path(path)
        with fg.no_grad():
            # convert fused the ReLU into the conv: max(q, zp) on its bytes, then dequantized
            assert conv.fused_relu
            np.testing.assert_array_equal(conv(fg.tensor(x))._data, h.reshape(3, 7, 4, 4), err_msg=path)
            np.testing.assert_array_equal(q(fg.tensor(x))._data,
                                          _int_ops.dequantize_u8(ref_l, *lin.qparams("output")), err_msg=path)
