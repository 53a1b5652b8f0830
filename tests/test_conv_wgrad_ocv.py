"""The weight gradient of 4-wide kernels with >= 64 input channels per group (conv2d_backward_weight's direct
tile on AVX-512, conv_wgrad_ocv.cpp, where the batch-wide GEMM path ran (>= 32 output channels per group): 48 / 32 /
16 output channels x 8 taps in registers over the whole batch, padding taps skipped; the GEMM on other ISAs) against
a float64 torch reference on odd shapes, on every SIMD path, and the same bits at 1-3 threads."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forgegrad import _C

CASES = [
    # (x shape, w shape, stride, padding, groups)
    ((3, 64, 13, 11), (48, 64, 4, 4), 2, 1, 1),    # batch 3, odd sizes, 48 lanes
    ((1, 64, 9, 9), (80, 64, 4, 4), 2, 0, 1),      # batch 1, no padding, 48 + 32 channels
    ((2, 64, 15, 9), (112, 64, 4, 4), 2, 2, 1),    # padding 2: whole kernel rows / columns out, 48+48+16
    ((2, 65, 7, 5), (32, 65, 2, 4), 1, 1, 1),      # stride 1, 2x4 kernel, odd channels, narrow images
    ((3, 64, 8, 8), (64, 64, 6, 4), 2, 1, 1),      # 6x4 kernel: three kernel-row pairs
    ((2, 128, 9, 7), (64, 64, 4, 4), 2, 1, 2),     # groups (32 channels each)
]


def _grads(rng, xshape, wshape, stride, padding):
    x = rng.standard_normal(xshape).astype(np.float32)
    oh = (xshape[2] + 2 * padding - wshape[2]) // stride + 1
    ow = (xshape[3] + 2 * padding - wshape[3]) // stride + 1
    gy = rng.standard_normal((xshape[0], wshape[0], oh, ow)).astype(np.float32)
    return x, gy


def _ours(x, gy, wshape, stride, padding, groups):
    gw = np.full(wshape, np.nan, np.float32)
    gb = np.full(wshape[0], np.nan, np.float32)
    _C.conv.conv2d_backward_weight(x, gy, gw, gb, list(wshape), [stride] * 2, [padding] * 4, [1, 1], groups)
    return gw, gb


@pytest.mark.parametrize("xshape,wshape,stride,padding,groups", CASES)
def test_k4_weight_grad_matches_float64(rng, simd_path, xshape, wshape, stride, padding, groups):
    x, gy = _grads(rng, xshape, wshape, stride, padding)
    gw, gb = _ours(x, gy, wshape, stride, padding, groups)
    tx = torch.tensor(x, dtype=torch.float64)
    tw = torch.zeros(wshape, dtype=torch.float64, requires_grad=True)
    tb = torch.zeros(wshape[0], dtype=torch.float64, requires_grad=True)
    F.conv2d(tx, tw, tb, stride, padding, 1, groups).backward(torch.tensor(gy, dtype=torch.float64))
    scale = np.sqrt(xshape[0] * gy.shape[2] * gy.shape[3])  # rms of the sums (unit normal data)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=0, atol=2e-6 * scale * 8)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=0, atol=2e-6 * scale * 8)


@pytest.mark.parametrize("xshape,wshape,stride,padding,groups", CASES[:3] + CASES[5:])
def test_k4_weight_grad_same_bits_at_any_thread_count(rng, simd_path, threads, xshape, wshape, stride, padding,
                                                      groups):
    x, gy = _grads(rng, xshape, wshape, stride, padding)
    results = []
    for n in (1, 2, 3):
        threads(n)
        results.append(_ours(x, gy, wshape, stride, padding, groups))
    for gw, gb in results[1:]:
        np.testing.assert_array_equal(results[0][0], gw)
        np.testing.assert_array_equal(results[0][1], gb)
