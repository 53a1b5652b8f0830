"""The direct conv2d forward with output channels along the vector lanes (_C.conv.conv2d_forward_ocv: AVX-512
tiles of 8 pixels x 48 / 32 / 16 channels, padding taps skipped; the implicit GEMM elsewhere) against a float64
torch reference on odd geometries, on every SIMD path, the same bits at 1-3 threads, and against conv2d_forward
where the AVX-512 build routes a shape to it."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels.conv import conv2d_forward

from conv_direct_helpers import data, reference, run_direct


def _ocv(*args, **kwargs):
    return run_direct("conv2d_forward_ocv", *args, **kwargs)


CASES = [
    # (x shape, w shape, stride, padding (top, bottom, left, right) or int, dilation, groups)
    ((3, 5, 13, 11), (48, 5, 4, 4), (2, 2), 1, (1, 1), 1),          # 48 lanes, 6-pixel rows, batch 3
    ((1, 7, 17, 19), (80, 7, 4, 4), (2, 2), 1, (1, 1), 1),          # 48 + 32 channels, 9-pixel rows (8 + 1)
    ((2, 9, 16, 16), (64, 9, 4, 4), (2, 2), 0, (1, 1), 1),          # 48 + 16, no padding, 7-pixel rows
    ((2, 6, 15, 9), (16, 6, 3, 3), (2, 2), 2, (1, 1), 1),           # padding 2: whole kernel rows / columns out
    ((2, 4, 11, 13), (32, 4, 3, 2), (2, 1), (1, 0, 2, 1), (2, 1), 1),  # asymmetric padding, row dilation
    ((2, 4, 12, 14), (32, 4, 3, 3), (2, 2), 2, (1, 2), 1),          # column dilation: other pixel ranges
    ((1, 6, 9, 9), (32, 3, 3, 3), (2, 2), 1, (1, 1), 2),            # groups
    ((3, 3, 10, 10), (16, 3, 3, 3), (1, 1), 1, (1, 1), 1),          # stride 1
    ((1, 2, 4, 4), (16, 2, 4, 4), (2, 2), 0, (1, 1), 1),            # 1x1 output
    ((2, 5, 9, 9), (12, 5, 3, 3), (2, 2), 1, (1, 1), 1),            # 12 channels: the implicit GEMM
    ((2, 5, 13, 13), (16, 5, 3, 3), (3, 3), 1, (1, 1), 1),          # column stride 3: the implicit GEMM
]


@pytest.mark.parametrize("xshape,wshape,stride,padding,dilation,groups", CASES)
def test_ocv_forward_matches_float64(rng, simd_path, xshape, wshape, stride, padding, dilation, groups):
    x, w, b = data(rng, xshape, wshape)
    y = _ocv(x, w, b, stride, padding, dilation, groups)
    ref = reference(x, w, b, stride, padding, dilation, groups)
    assert y.shape == ref.shape
    scale = np.sqrt(wshape[1] * wshape[2] * wshape[3])  # rms of the sums (unit normal data)
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6 * scale * 8)


@pytest.mark.parametrize("xshape,wshape,stride,padding,dilation,groups", CASES[:3] + CASES[5:7])
def test_ocv_forward_same_bits_at_any_thread_count(rng, simd_path, threads, xshape, wshape, stride, padding,
                                                   dilation, groups):
    x, w, b = data(rng, xshape, wshape)
    results = []
    for n in (1, 2, 3):
        threads(n)
        results.append(_ocv(x, w, b, stride, padding, dilation, groups))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_ocv_forward_without_bias_and_with_activation(rng, simd_path):
    x, w, b = data(rng, (3, 5, 11, 9), (32, 5, 4, 4))
    y = _ocv(x, w, None, (2, 2), 1, (1, 1), 1)
    np.testing.assert_allclose(y, reference(x, w, None, (2, 2), 1, (1, 1), 1), rtol=0, atol=1e-4)
    plain = _ocv(x, w, b, (2, 2), 1, (1, 1), 1)
    relu = _ocv(x, w, b, (2, 2), 1, (1, 1), 1, act=_C.activation.RELU)
    np.testing.assert_array_equal(relu, np.maximum(plain, 0))
    leaky = _ocv(x, w, b, (2, 2), 1, (1, 1), 1, act=_C.activation.LEAKY_RELU, alpha=0.2)
    np.testing.assert_allclose(leaky, np.where(plain > 0, plain, np.float32(0.2) * plain), rtol=1e-6, atol=0)


def test_ocv_forward_skips_padding_taps_of_a_non_finite_weight(rng):
    """A padding tap is never multiplied: an infinite weight under it leaves the pixels that tap only meets in the
    padding finite (as torch's direct kernels), on the AVX-512 tile."""
    if fg.cpu_info()["detected_isa"] != "avx512":
        pytest.skip("the AVX-512 tile (other builds run the implicit GEMM, which multiplies the padding zeros)")
    before = fg.get_simd()
    fg.set_simd("avx512")
    try:
        x, w, b = data(rng, (1, 4, 8, 8), (16, 4, 4, 4))
        w[:, :, 0, :] = np.inf  # kernel row 0: in the padding for output row 0 only (padding 1)
        y = _ocv(x, w, b, (2, 2), 1, (1, 1), 1)
        assert np.isfinite(y[:, :, 0, :]).all()
        ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), 2, 1)
        np.testing.assert_array_equal(np.isfinite(y), np.isfinite(ref.numpy()))
    finally:
        fg.set_simd(before)


@pytest.mark.skipif(fg.cpu_info()["detected_isa"] != "avx512", reason="the AVX-512 build routes these (CPU lacks it)")
@pytest.mark.parametrize("xshape,wshape,padding", [
    ((3, 64, 16, 16), (128, 64, 4, 4), 1),   # DCGAN discriminator / ConvTranspose2d 128 -> 64's input gradient
    ((1, 128, 8, 8), (256, 128, 4, 4), 1),   # ConvTranspose2d 256 -> 128's input gradient (8x8 planes), batch 1
    ((2, 128, 15, 13), (256, 128, 3, 3), 1),  # ResNet downsampling (K = 1152), odd sizes
])
def test_conv2d_forward_routes_strided_wide_layers_to_the_ocv_kernel(rng, xshape, wshape, padding):
    before = fg.get_simd()
    fg.set_simd("avx512")
    try:
        x, w, b = data(rng, xshape, wshape)
        y = conv2d_forward(x, w, b, stride=2, padding=padding)
        np.testing.assert_array_equal(y, _ocv(x, w, b, (2, 2), padding, (1, 1), 1))
        scale = np.sqrt(wshape[1] * wshape[2] * wshape[3])
        np.testing.assert_allclose(y, reference(x, w, b, (2, 2), padding, (1, 1), 1), rtol=0, atol=2e-6 * scale * 8)
    finally:
        fg.set_simd(before)


def test_ocv_forward_checks_its_arguments(rng):
    x, w, b = data(rng, (2, 3, 8, 8), (16, 3, 3, 3))
    with pytest.raises(ValueError, match="out"):
        _C.conv.conv2d_forward_ocv(x, w, b, np.empty((2, 16, 3, 3), np.float32), (2, 2), (1, 1, 1, 1), (1, 1), 1)
    y = np.empty((2, 16, 4, 4), np.float32)
    with pytest.raises(ValueError, match="bias"):
        _C.conv.conv2d_forward_ocv(x, w, b[:3], y, (2, 2), (1, 1, 1, 1), (1, 1), 1)
    with pytest.raises(ValueError, match="activation"):
        _C.conv.conv2d_forward_ocv(x, w, b, y, (2, 2), (1, 1, 1, 1), (1, 1), 1, 99)
