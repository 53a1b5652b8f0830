"""convert's fusion of a QuantizedConv2d with the nn.ReLU / nn.MaxPool2d after it (applied to the conv's
uint8 output, the float layers become nn.Identity): the same bits as the unfused model on every int8 path
and thread count, only the layers it can fuse, and an ONNX export that still verifies."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.quantization import QuantizedConv2d, calibrate, convert, int8_paths, prepare

R = np.random.default_rng


def _convert_both(model, shape, seed=0):
    prepared = prepare(model)
    calibrate(prepared, [R(seed + i).standard_normal(shape).astype(np.float32) for i in range(2)])
    return convert(prepared), convert(prepared, fuse=False)


def test_lenet_blocks_fuse_and_keep_the_bits(threads, use_int8_path):
    fg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),  # pool first: commutes
                          nn.Flatten(), nn.Linear(16 * 2 * 2, 10))
    fused, plain = _convert_both(model, (4, 1, 9, 9))
    assert [type(m).__name__ for m in fused] == ["QuantizedConv2d", "Identity", "Identity", "QuantizedConv2d",
                                                "Identity", "Identity", "Flatten", "QuantizedLinear"]
    assert fused[0].fused_relu and fused[0].fused_pool == (2, 2) and fused[3].fused_pool == (2, 2)
    assert "fused_pool=(2, 2)" in repr(fused[0])
    assert type(plain[1]) is nn.ReLU and not plain[0].fused_relu and plain[0].fused_pool is None
    assert set(fused.state_dict()) == set(plain.state_dict())
    x = fg.tensor(R(9).standard_normal((3, 1, 9, 9)).astype(np.float32))
    for path in int8_paths():
        use_int8_path(path)
        for nt in (1, 3):
            threads(nt)
            with fg.no_grad():
                a, b = fused(x)._data, plain(x)._data
                a0, b0 = fused[0](x)._data, plain[2](plain[1](plain[0](x)))._data
            assert a0.tobytes() == b0.tobytes(), (path, nt)
            assert a.tobytes() == b.tobytes(), (path, nt)


def test_only_layers_it_can_apply_are_fused():
    fg.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.MaxPool2d(3, stride=2),   # overlapping windows: kept
                          nn.Conv2d(4, 4, 1), nn.MaxPool2d(2, padding=1),  # padding: kept
                          nn.Conv2d(4, 4, 1), nn.Tanh(), nn.ReLU(),        # not right after the conv: kept
                          nn.Conv2d(4, 4, 1), nn.ReLU(), nn.ReLU())        # one ReLU only
    fused, plain = _convert_both(model, (2, 2, 12, 12))
    assert [type(m).__name__ for m in fused] == ["QuantizedConv2d", "MaxPool2d", "QuantizedConv2d", "MaxPool2d",
                                                "QuantizedConv2d", "Tanh", "ReLU", "QuantizedConv2d", "Identity",
                                                "ReLU"]
    x = fg.tensor(R(5).standard_normal((2, 2, 12, 12)).astype(np.float32))
    with fg.no_grad():
        assert fused(x)._data.tobytes() == plain(x)._data.tobytes()


def test_a_watched_layer_is_not_fused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    model[1].register_forward_pre_hook(lambda m, args: None)
    fused, _ = _convert_both(model, (2, 1, 5, 5))
    assert type(fused[1]) is nn.ReLU and not fused[0].fused_relu


def test_fused_model_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from forgegrad.quantization.static_onnx import export_static_onnx
    fg.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3))
    fused, _ = _convert_both(model, (4, 1, 8, 8))
    assert isinstance(fused[0], QuantizedConv2d) and fused[0].fused_relu
    report = export_static_onnx(fused, R(3).standard_normal((2, 1, 8, 8)).astype(np.float32), tmp_path / "m.onnx")
    assert {"Relu", "MaxPool"} <= set(report["ops"])


def test_reduce_range_qconfig_gives_7bit_activations_and_the_same_bits_as_the_reference(tmp_path, threads,
                                                                                         use_int8_path):
    from forgegrad.quantization import _int_ops, get_default_qconfig
    fg.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3))
    data = [R(i).random((4, 1, 8, 8)).astype(np.float32) for i in range(2)]
    prepared = prepare(model, get_default_qconfig(reduce_range=True))
    calibrate(prepared, data)
    q = convert(prepared)
    conv = q[0]
    assert conv.fused_relu and conv.fused_pool == (2, 2)
    xq = _int_ops.quantize_u8(data[0], *conv.qparams("input"))
    assert xq.max() <= 127  # inside the calibrated range: the vpmaddubsw path on AVX2
    ref = _int_ops.dequantize_u8(_int_ops.reference_conv2d(xq, *conv.qparams("input"), conv.weight._data,
                                                           conv.weight_scale._data, conv.bias._data, (1, 1), (1, 1),
                                                           (1, 1), *conv.qparams("output")), *conv.qparams("output"))
    ref = np.maximum(ref, 0).reshape(4, 4, 4, 2, 4, 2).max(axis=(3, 5))
    default_threads = fg.get_num_threads()
    for path in int8_paths():
        use_int8_path(path)
        for nt in (1, 3):
            threads(nt)
            with fg.no_grad():
                np.testing.assert_array_equal(conv(fg.tensor(data[0]))._data, ref, err_msg=f"{path} {nt}")
    use_int8_path(None)  # the rest on the default path and thread count
    threads(default_threads)
    # past the calibrated range the bytes go up to 255 (not clipped, as torch): still exact
    big = data[0] * 3
    bq = _int_ops.quantize_u8(big, *conv.qparams("input"))
    assert bq.max() > 127
    with fg.no_grad():
        out = conv(fg.tensor(big))._data
    ref = _int_ops.dequantize_u8(_int_ops.reference_conv2d(bq, *conv.qparams("input"), conv.weight._data,
                                                           conv.weight_scale._data, conv.bias._data, (1, 1), (1, 1),
                                                           (1, 1), *conv.qparams("output")), *conv.qparams("output"))
    np.testing.assert_array_equal(out, np.maximum(ref, 0).reshape(4, 4, 4, 2, 4, 2).max(axis=(3, 5)))
    pytest.importorskip("onnxruntime")
    from forgegrad.quantization.static_onnx import export_static_onnx
    export_static_onnx(q, big, tmp_path / "rr.onnx")  # onnxruntime quantizes to [0, 255] as forgegrad does
