"""The static int8 convolution in one C++ call (_C.quant.conv2d_f32) against the numpy im2col reference:
equal bits for every geometry, int8 path and thread count, and clear errors for bad arguments."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.quantization import _int_ops, int8_paths

R = np.random.default_rng

# (x shape, weight shape, stride, padding, dilation)
GEOMETRIES = [
    ((2, 1, 9, 11), (4, 1, 3, 3), (1, 1), (1, 1), (1, 1)),          # one input channel (LeNet's first conv)
    ((3, 5, 7, 6), (7, 5, 3, 2), (2, 1), (0, 1), (1, 1)),           # odd channels, rectangular kernel, stride
    ((1, 3, 10, 9), (2, 3, 3, 3), (1, 2), (2, 0), (2, 1)),          # dilation, padding on one axis
    ((2, 4, 6, 6), (33, 4, 1, 1), (1, 1), (0, 0), (1, 1)),          # 1x1, OC past one 32-column block
    ((2, 17, 5, 8), (3, 17, 5, 5), (1, 1), "same", (1, 1)),         # K = 425 (not a multiple of 64), "same"
    # rows of K <= 16 bytes, assembled whole (im2col_short_rows): 8-byte runs filling K = 16, strides
    ((2, 2, 7, 9), (3, 2, 2, 4), (2, 3), (1, 0), (1, 1)),
    ((1, 1, 8, 8), (5, 1, 5, 3), (1, 2), (2, 1), (1, 1)),           # K = 15, five kernel rows
    # channels-last repack and dequantize in 16 x 16 byte tiles: a full and a partial channel tile,
    # rows over two tiles (W, OW = 21), OC over one full and a partial tile; then a partial tile only
    ((2, 19, 5, 21), (22, 19, 3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 4, 3, 35), (3, 4, 1, 2), (1, 1), (0, 0), (1, 1)),
]


def _layer(xs, ws, seed):
    rng = R(seed)
    w = rng.integers(-127, 128, ws).astype(np.int8)
    w_scale = rng.uniform(0.001, 0.02, ws[0]).astype(np.float32)
    bias = rng.standard_normal(ws[0]).astype(np.float32)
    x = (rng.standard_normal(xs) * 2).astype(np.float32)
    packed = fg._C.quant.pack_weight(_int_ops.conv_weight_matrix(w))
    return x, w, w_scale, bias, packed


@pytest.mark.parametrize("xs, ws, stride, padding, dilation", GEOMETRIES)
def test_conv2d_f32_equals_the_im2col_reference_on_every_path_and_thread_count(xs, ws, stride, padding, dilation,
                                                                              threads, use_int8_path, simd_path):
    x, w, w_scale, bias, packed = _layer(xs, ws, 0)
    xq_params, out_params = (0.031, 131), (0.047, 97)
    xq = _int_ops.quantize_u8(x, *xq_params)
    ref = _int_ops.dequantize_u8(_int_ops.reference_conv2d(xq, *xq_params, w, w_scale, bias, stride, padding, dilation,
                                                           *out_params), *out_params)
    for path in int8_paths():
        use_int8_path(path)
        for nt in (1, 2, 3):
            threads(nt)
            y = _int_ops.conv2d_f32(x, *xq_params, packed, ws, w_scale, bias, stride, padding, dilation,
                                    *out_params)
            np.testing.assert_array_equal(y, ref, err_msg=f"{path}, {nt} threads")


def test_conv2d_f32_small_activations_take_the_same_bits():
    # every quantized input byte <= 127 lets the AVX2 kernel use vpmaddubsw: still the exact sums
    x, w, w_scale, bias, packed = _layer((2, 6, 8, 7), (9, 6, 3, 3), 1)
    params = (0.05, 60)
    xq = _int_ops.quantize_u8(np.clip(x, -3, 3), *params)
    assert xq.max() < 128
    ref = _int_ops.dequantize_u8(_int_ops.reference_conv2d(xq, *params, w, w_scale, None, (1, 1), (1, 1), (1, 1),
                                                           0.02, 128), 0.02, 128)
    y = _int_ops.conv2d_f32(np.clip(x, -3, 3), *params, packed, w.shape, w_scale, None, (1, 1), (1, 1), (1, 1),
                            0.02, 128)
    np.testing.assert_array_equal(y, ref)


def test_conv2d_f32_rejects_bad_arguments_by_name():
    x, w, w_scale, bias, (pw, colsum) = _layer((1, 3, 6, 6), (4, 3, 3, 3), 2)
    C = fg._C.quant

    def call(**kw):
        args = dict(x=x, x_scale=0.1, x_zero_point=3, packed=pw, colsum=colsum, w_scale=w_scale, bias=bias,
                    weight_shape=list(w.shape), stride=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1], out_scale=0.1,
                    out_zero_point=0)
        args.update(kw)
        return C.conv2d_f32(**args)

    assert call().shape == (1, 4, 4, 4)
    assert call(x=np.zeros((0, 3, 6, 6), np.float32)).shape == (0, 4, 4, 4)  # an empty batch
    with pytest.raises(ValueError, match="x must have 5 channels"):
        call(weight_shape=[4, 5, 3, 3])
    with pytest.raises(TypeError, match="x must have dtype float32"):
        call(x=x.astype(np.float64))
    with pytest.raises(ValueError, match="x must be 4-D"):
        call(x=x[0])
    with pytest.raises(ValueError, match="stride entries must be >= 1"):
        call(stride=[0, 1])
    with pytest.raises(ValueError, match="padding"):
        call(padding=[1, 1])
    with pytest.raises(ValueError, match="out_scale must be a finite number > 0"):
        call(out_scale=0.0)
    with pytest.raises(ValueError, match="x_zero_point must be in"):
        call(x_zero_point=300)
    with pytest.raises(ValueError, match="w_scale must have shape"):
        call(w_scale=w_scale[:2])
    with pytest.raises(ValueError, match="larger than the padded input"):
        call(weight_shape=[4, 3, 7, 7], packed=C.pack_weight(np.zeros((4, 147), np.int8))[0])
    with pytest.raises(ValueError, match="padding"):
        call(padding=[2**62, 2**62, 0, 0])


# (x shape, weight shape, padding, pool, relu): ReLU and a max-pool (window = stride) on the u8 output
FUSED = [
    ((2, 1, 9, 11), (4, 1, 3, 3), (1, 1), (2, 2), True),     # LeNet's first block, odd sizes (the pool floors)
    ((3, 5, 7, 6), (40, 5, 3, 3), (1, 1), (3, 2), False),    # pool only, rectangular window, OC past 32
    ((2, 6, 6, 6), (9, 6, 3, 3), (0, 0), (1, 1), True),      # ReLU only
    ((1, 32, 6, 6), (64, 32, 3, 3), (1, 1), (2, 2), True),   # LeNet's second block (K = 288)
    ((2, 3, 4, 38), (20, 3, 3, 3), (1, 1), (2, 2), True),    # pooled rows of 19 (two dequantize tiles), OC 20
    ((1, 2, 37, 9), (32, 2, 3, 3), (1, 1), (2, 2), True),    # 18 pooled rows: bands of 6 (pool before requantizing)
    ((2, 1, 11, 10), (64, 1, 3, 3), (0, 1), (3, 3), False),  # 3x3 window, two 32-column blocks
]


@pytest.mark.parametrize("xs, ws, padding, pool, relu", FUSED)
def test_conv2d_f32_fused_relu_and_pool_equal_the_float_layers(xs, ws, padding, pool, relu, threads, use_int8_path,
                                                               simd_path):
    # (simd_path: the dequantizing copy has a kernel per SIMD path)
    x, w, w_scale, bias, packed = _layer(xs, ws, 3)
    xq_params, out_params = (0.031, 131), (0.047, 97)
    xq = _int_ops.quantize_u8(x, *xq_params)
    y = _int_ops.dequantize_u8(_int_ops.reference_conv2d(xq, *xq_params, w, w_scale, bias, (1, 1), padding, (1, 1),
                                                         *out_params), *out_params)
    with fg.no_grad():  # what the float ReLU and MaxPool2d layers give on the dequantized output
        t = fg.tensor(y)
        if relu:
            t = fg.nn.ReLU()(t)
        if pool != (1, 1):
            t = fg.nn.MaxPool2d(pool)(t)
        ref = t._data
    for path in int8_paths():
        use_int8_path(path)
        for nt in (1, 2, 3):
            threads(nt)
            got = _int_ops.conv2d_f32(x, *xq_params, packed, ws, w_scale, bias, (1, 1), padding, (1, 1),
                                      *out_params, relu=relu, pool=pool)
            assert got.tobytes() == ref.tobytes(), f"{path}, {nt} threads"  # -0 vs +0 would count too


@pytest.mark.parametrize("bad_scale", [0.0, -0.01])
def test_conv2d_f32_pools_after_requantizing_when_a_scale_is_not_positive(bad_scale, threads):
    # the pool runs on the s32 sums only where requantizing cannot reverse their order (every scale > 0);
    # a zero or negative weight scale takes the bytes path, which still equals the float layers
    x, w, w_scale, bias, packed = _layer((2, 3, 8, 9), (33, 3, 3, 3), 5)
    w_scale[[0, 32]] = bad_scale
    xq_params, out_params = (0.031, 131), (0.047, 97)
    xq = _int_ops.quantize_u8(x, *xq_params)
    y = _int_ops.dequantize_u8(_int_ops.reference_conv2d(xq, *xq_params, w, w_scale, bias, (1, 1), (1, 1), (1, 1),
                                                         *out_params), *out_params)
    with fg.no_grad():
        ref = fg.nn.MaxPool2d(2)(fg.nn.ReLU()(fg.tensor(y)))._data
    for nt in (1, 2):
        threads(nt)
        got = _int_ops.conv2d_f32(x, *xq_params, packed, w.shape, w_scale, bias, (1, 1), (1, 1), (1, 1), *out_params,
                                  relu=True, pool=(2, 2))
        assert got.tobytes() == ref.tobytes(), f"{nt} threads"


def test_conv2d_f32_rejects_a_pool_larger_than_the_output():
    x, w, w_scale, bias, (pw, colsum) = _layer((1, 3, 6, 6), (4, 3, 3, 3), 2)
    args = (x, 0.1, 3, pw, colsum, w_scale, bias, list(w.shape), [1, 1], [0, 0, 0, 0], [1, 1], 0.1, 0)
    assert fg._C.quant.conv2d_f32(*args, relu=True, pool=[4, 3]).shape == (1, 4, 1, 1)
    with pytest.raises(ValueError, match="pool"):
        fg._C.quant.conv2d_f32(*args, relu=False, pool=[5, 1])
    with pytest.raises(ValueError, match="pool entries must be >= 1"):
        fg._C.quant.conv2d_f32(*args, relu=False, pool=[0, 1])
