"""The static int8 convolution's 3x3 stride-1 layers on the AVX2 int8 path run Winograd F(2x2, 3x3) on integers
(cpp/kernels/per_isa/qconv_winograd.cpp): its sums must equal the im2col GEMM's exactly, so the bytes equal the
numpy reference on every int8 path and thread count, for channel and column counts off the kernel's blocks, pools
whose bands of conv rows are odd (those bands take the im2col GEMM) and sums near the int32 bound."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.quantization import _int_ops, int8_paths

# (x shape, OC, pool): Winograd runs where the batch has >= 2048 output pixels, C in [8, 1024] and OW even
CASES = [
    ((3, 20, 28, 30), 13, (2, 2)),   # C = 20 (a partial 16-channel block), OC = 13 (a partial 8-column store)
    ((2, 9, 33, 34), 37, (3, 3)),    # pooled bands of 3 * nr conv rows: odd ones take the GEMM, even ones Winograd
    ((1, 32, 46, 46), 64, (2, 2)),   # LeNet's second block's shape, one image of 2116 pixels
    ((2, 16, 31, 40), 24, (2, 4)),   # odd OH (the pool floors: the last conv row is not computed)
    ((2, 12, 29, 38), 19, (1, 1)),   # no pool: bands of 8 conv rows through the epilogue, the odd last one on the GEMM
]


def _reference(x, w, w_scale, bias, xq_params, out_params, pool, relu):
    xq = _int_ops.quantize_u8(x, *xq_params)
    y = _int_ops.dequantize_u8(_int_ops.reference_conv2d(xq, *xq_params, w, w_scale, bias, (1, 1), (1, 1), (1, 1),
                                                         *out_params), *out_params)
    with fg.no_grad():  # what the float ReLU and MaxPool2d layers give on the dequantized output
        t = fg.tensor(y)
        if relu:
            t = fg.nn.ReLU()(t)
        return (fg.nn.MaxPool2d(pool)(t) if pool != (1, 1) else t)._data


def _check_every_path(x, w, w_scale, bias, xq_params, out_params, pool, relu, threads, use_int8_path):
    ref = _reference(x, w, w_scale, bias, xq_params, out_params, pool, relu)
    packed = fg._C.quant.pack_weight(_int_ops.conv_weight_matrix(w))
    assert "avx2" in int8_paths() or "scalar" in int8_paths()
    for path in int8_paths():
        use_int8_path(path)
        for nt in (1, 2, 3):
            threads(nt)
            got = _int_ops.conv2d_f32(x, *xq_params, packed, w.shape, w_scale, bias, (1, 1), (1, 1), (1, 1),
                                      *out_params, relu=relu, pool=pool)
            assert got.tobytes() == ref.tobytes(), f"{path}, {nt} threads"


@pytest.mark.parametrize("xs, oc, pool", CASES)
@pytest.mark.parametrize("relu", [True, False])
def test_winograd_sums_give_the_im2col_bytes_on_every_path(xs, oc, pool, relu, threads, use_int8_path):
    rng = np.random.default_rng(11)
    w = rng.integers(-128, 128, (oc, xs[1], 3, 3)).astype(np.int8)
    w_scale = rng.uniform(0.001, 0.02, oc).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    x = (rng.standard_normal(xs) * 2).astype(np.float32)
    _check_every_path(x, w, w_scale, bias, (0.031, 131), (0.047, 97), pool, relu, threads, use_int8_path)


def test_winograd_without_a_pool_takes_any_weight_scale(threads, use_int8_path):
    # a zero or negative scale makes the epilogue decreasing: no pool, so the Winograd bands still apply
    rng = np.random.default_rng(5)
    w = rng.integers(-128, 128, (10, 8, 3, 3)).astype(np.int8)
    w_scale = rng.uniform(0.001, 0.02, 10).astype(np.float32)
    w_scale[[2, 7]] = [0.0, -0.01]
    x = (rng.standard_normal((3, 8, 26, 28)) * 2).astype(np.float32)
    _check_every_path(x, w, w_scale, None, (0.031, 131), (0.047, 97), (1, 1), True, threads, use_int8_path)


@pytest.mark.parametrize("c", [1024, 1025])
def test_winograd_sums_near_the_int32_bound(c, threads, use_int8_path):
    # every input byte 255 with zero point 0 and every weight of a channel -128 or 127: each sum is
    # +-9 * C * 255 * 128 (4x that, 1.2e9, inside the transform: still below 2^31); C = 1025 takes the GEMM
    oc = 16
    w = np.where(np.arange(oc)[:, None, None, None] % 2 == 0, -128, 127) * np.ones((oc, c, 3, 3))
    w = w.astype(np.int8)
    w_scale = np.full(oc, 1e-6, np.float32)
    x = np.full((1, c, 46, 46), 1000.0, np.float32)  # quantized to 255 (clamped: the top of the range)
    x[0, :, ::7, ::5] = 0.3  # a few smaller bytes, so that windows differ
    peak = 9 * c * 255 * 128 * 0.5 * 1e-6
    out_params = (np.float32(2 * peak / 250), 128)
    _check_every_path(x, w, w_scale, None, (0.5, 0), out_params, (2, 2), False, threads, use_int8_path)
