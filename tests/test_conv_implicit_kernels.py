"""The implicit-GEMM conv2d forward (_C.conv.conv2d_forward_implicit: sgemm tiles whose B panels are gathered
straight from the image) on odd geometries against a float64 torch reference, on every SIMD path, with the same
bits at 1-3 threads, and against conv2d_forward where that routes the shape to it (the AVX-512 build)."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels.conv import conv2d_forward

from conv_direct_helpers import data, reference, run_direct

def _implicit(*args, **kwargs):
    return run_direct("conv2d_forward_implicit", *args, **kwargs)


CASES = [
    # (x shape, w shape, stride, padding (top, bottom, left, right) or int, dilation, groups)
    ((2, 3, 7, 9), (5, 3, 3, 3), (2, 2), 1, (1, 1), 1),            # odd everything, panels across images
    ((3, 5, 13, 11), (7, 5, 4, 4), (2, 2), 0, (1, 1), 1),          # k4 s2, no padding
    ((2, 7, 15, 9), (9, 7, 3, 3), (2, 2), 2, (1, 1), 1),           # padding 2: whole rows / columns of zeros
    ((2, 4, 11, 13), (6, 4, 3, 2), (2, 3), (1, 0, 2, 1), (2, 1), 1),  # asymmetric padding, dilation
    ((1, 6, 9, 9), (10, 3, 3, 3), (2, 2), 1, (1, 1), 2),           # groups
    ((3, 6, 8, 8), (12, 1, 3, 3), (2, 2), 1, (1, 1), 6),           # depthwise, multiplier 2
    ((2, 3, 10, 10), (4, 3, 3, 3), (1, 1), 1, (1, 1), 1),          # stride 1 (any geometry works)
    ((1, 2, 4, 4), (3, 2, 4, 4), (2, 2), 0, (1, 1), 1),            # 1x1 output
    ((2, 33, 17, 19), (35, 33, 4, 4), (2, 2), 1, (1, 1), 1),       # row panels past the register tile
    ((5, 16, 9, 9), (40, 16, 4, 4), (2, 2), 1, (1, 1), 1),         # several K slices (K = 256 .. 320 +)
]


@pytest.mark.parametrize("xshape,wshape,stride,padding,dilation,groups", CASES)
def test_implicit_forward_matches_float64(rng, simd_path, xshape, wshape, stride, padding, dilation, groups):
    x, w, b = data(rng, xshape, wshape)
    y = _implicit(x, w, b, stride, padding, dilation, groups)
    ref = reference(x, w, b, stride, padding, dilation, groups)
    assert y.shape == ref.shape
    scale = np.sqrt(wshape[1] * wshape[2] * wshape[3])  # rms of the sums (unit normal data)
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6 * scale * 8)


def test_implicit_forward_k_slices_match_float64(rng, simd_path):
    """K = 576 and 2048: two and seven KC slices, the later ones adding into the output."""
    for xshape, wshape in (((2, 64, 9, 9), (24, 64, 3, 3)), ((1, 128, 8, 8), (17, 128, 4, 4))):
        x, w, b = data(rng, xshape, wshape)
        y = _implicit(x, w, b, (2, 2), 1, (1, 1), 1)
        np.testing.assert_allclose(y, reference(x, w, b, (2, 2), 1, (1, 1), 1), rtol=0, atol=5e-4)


@pytest.mark.parametrize("xshape,wshape,stride,padding,dilation,groups", CASES[:4] + CASES[8:])
def test_implicit_forward_same_bits_at_any_thread_count(rng, simd_path, threads, xshape, wshape, stride, padding,
                                                        dilation, groups):
    x, w, b = data(rng, xshape, wshape)
    results = []
    for n in (1, 2, 3):
        threads(n)
        results.append(_implicit(x, w, b, stride, padding, dilation, groups))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_implicit_forward_without_bias_and_with_activation(rng, simd_path):
    x, w, b = data(rng, (3, 5, 11, 9), (7, 5, 4, 4))
    y = _implicit(x, w, None, (2, 2), 1, (1, 1), 1)
    np.testing.assert_allclose(y, reference(x, w, None, (2, 2), 1, (1, 1), 1), rtol=0, atol=1e-4)
    plain = _implicit(x, w, b, (2, 2), 1, (1, 1), 1)
    relu = _implicit(x, w, b, (2, 2), 1, (1, 1), 1, act=_C.activation.RELU)
    np.testing.assert_array_equal(relu, np.maximum(plain, 0))


@pytest.mark.skipif(fg.cpu_info()["detected_isa"] != "avx512", reason="the AVX-512 build routes these (CPU lacks it)")
@pytest.mark.parametrize("xshape,wshape,padding", [
    ((4, 64, 16, 16), (24, 64, 4, 4), 1),    # K = 1024, output channels not a multiple of 16
    ((2, 32, 29, 27), (64, 32, 6, 6), 1),    # K = 1152 from 32 input channels, odd sizes
    ((2, 16, 9, 9), (3, 16, 3, 3), 0),       # 3 output channels (was the tile kernel)
])
def test_conv2d_forward_routes_strided_shapes_to_the_implicit_kernel(rng, xshape, wshape, padding):
    """The AVX-512 conv2d_forward sends strided layers with >= 16 input channels and >= 3x3 kernels here (the ones
    the im2col + sgemm path took: with K >= 1024), except those with >= 64 input channels and output channels a
    multiple of 16, which go to the direct kernel (test_conv_direct_ocv.py)."""
    before = fg.get_simd()
    fg.set_simd("avx512")
    try:
        x, w, b = data(rng, xshape, wshape)
        y = conv2d_forward(x, w, b, stride=2, padding=padding)
        np.testing.assert_array_equal(y, _implicit(x, w, b, (2, 2), padding, (1, 1), 1))
    finally:
        fg.set_simd(before)


def test_implicit_forward_checks_its_arguments(rng):
    x, w, b = data(rng, (2, 3, 8, 8), (4, 3, 3, 3))
    y = np.empty((2, 4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="out"):
        _C.conv.conv2d_forward_implicit(x, w, b, np.empty((2, 4, 3, 3), np.float32), (2, 2), (1, 1, 1, 1), (1, 1), 1)
    with pytest.raises(ValueError, match="bias"):
        _C.conv.conv2d_forward_implicit(x, w, b[:3], y, (2, 2), (1, 1, 1, 1), (1, 1), 1)
    with pytest.raises(ValueError, match="activation"):
        _C.conv.conv2d_forward_implicit(x, w, b, y, (2, 2), (1, 1, 1, 1), (1, 1), 1, 99)
    with pytest.raises(ValueError, match="groups"):
        _C.conv.conv2d_forward_implicit(x, w, b, y, (2, 2), (1, 1, 1, 1), (1, 1), 2)
    with pytest.raises(ValueError, match="overlap"):
        a = np.zeros((1, 1, 4, 4), np.float32)
        _C.conv.conv2d_forward_implicit(a, np.ones((1, 1, 1, 1), np.float32), None, a, (1, 1), (0, 0, 0, 0), (1, 1), 1)
