"""conv2d kernels on numpy arrays against torch.nn.functional.conv2d (forward and autograd)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import forgegrad as fg
from forgegrad.kernels.conv import conv2d_backward, conv2d_forward, conv2d_output_shape
from forgegrad.kernels.pool import max_pool2d_values

# Our sums run in a different order than torch's (oneDNN) ones: tolerance relative to the largest
# value, 2e-6 of it (the sums here have up to ~10^3 terms of unit size).
from helpers import assert_close_scaled as _close

# torch warns that it copies the input for padding="same" with an even kernel; not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def _check(rng, xshape, wshape, stride=1, padding=0, dilation=1, groups=1, bias=True):
    x = rng.standard_normal(xshape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    b = rng.standard_normal(wshape[0]).astype(np.float32) if bias else None
    y = conv2d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    ty = F.conv2d(tx, tw, tb, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert y.shape == tuple(ty.shape)
    _close(y, ty.detach().numpy(), "forward")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.tensor(gy))
    gx, gw, gb = conv2d_backward(x, w, gy, stride=stride, padding=padding, dilation=dilation, groups=groups,
                                 need=(True, True, bias))
    _close(gx, tx.grad.numpy(), "grad_input")
    _close(gw, tw.grad.numpy(), "grad_weight")
    if bias:
        _close(gb, tb.grad.numpy(), "grad_bias")
    else:
        assert gb is None


CASES = [
    # (x shape, w shape, stride, padding, dilation, groups)
    ((2, 3, 7, 9), (5, 3, 3, 3), 1, 1, 1, 1),                 # odd sizes, "flat" vectors
    ((1, 17, 33, 35), (19, 17, 3, 3), 1, 1, 1, 1),            # batch 1, channel tails, "row" vectors
    ((3, 5, 13, 11), (7, 5, 5, 3), 1, (2, 0), 1, 1),          # rectangular kernel, asymmetric pad pair
    ((2, 4, 11, 10), (8, 2, 3, 3), 1, "same", 2, 2),          # same + dilation + groups
    ((2, 3, 9, 9), (4, 3, 4, 4), 1, "same", 1, 1),            # even kernel: extra pad bottom/right
    ((2, 3, 12, 10), (4, 3, 2, 3), 1, "valid", 1, 1),
    ((2, 3, 7, 9), (5, 3, 3, 2), 2, (1, 0), (1, 2), 1),       # strided (im2col path)
    ((2, 3, 9, 9), (4, 3, 2, 5), (3, 2), 3, 1, 1),
    ((3, 6, 8, 8), (6, 1, 3, 3), 1, 1, 1, 6),                 # depthwise
    ((3, 6, 8, 8), (12, 1, 3, 3), 2, 1, 1, 6),                # depthwise, multiplier 2, strided
    ((13, 3, 6, 5), (4, 3, 2, 3), 1, 2, 1, 1),                # 13 images: several weight-grad chunks
    ((2, 2, 5, 5), (3, 2, 5, 5), 1, 0, 1, 1),                 # kernel = input: 1x1 output
    ((2, 8, 6, 7), (16, 8, 1, 1), 1, 0, 1, 1),                # 1x1 convolution
    ((2, 3, 40, 3), (2, 3, 3, 3), 1, 1, (3, 1), 1),           # tall narrow image
    # Winograd F(2x2, 3x3) path (3x3, stride 1, no dilation, >= 16 channels in and out per group)
    ((2, 16, 9, 10), (17, 16, 3, 3), 1, 1, 1, 1),             # odd output height
    ((1, 20, 6, 7), (16, 20, 3, 3), 1, 0, 1, 1),              # no padding, odd output width
    ((2, 32, 11, 5), (34, 16, 3, 3), 1, "same", 1, 2),        # groups
    ((2, 16, 3, 3), (16, 16, 3, 3), 1, (0, 3), 1, 1),         # 1-pixel-high output, wide padding
    ((3, 18, 37, 34), (22, 18, 3, 3), 1, 2, 1, 1),            # several tile vectors per row
    ((11, 16, 9, 11), (16, 16, 3, 3), 1, 1, 1, 1),            # small images batched, partial last unit
    # forward Winograd needs >= 256 tiles in the batch (49 for wider layers); short tile rows store whole
    # vectors whose extra lanes fall on later rows of the same plane (checked against torch for every
    # row/vector layout):
    ((8, 16, 14, 14), (32, 16, 3, 3), 1, 1, 1, 1),            # LeNet's 14x14: 7 tiles a row
    ((50, 16, 5, 3), (16, 16, 3, 3), 1, 1, 1, 1),             # 2 tiles a row: the spill spans rows
    ((70, 16, 4, 9), (16, 16, 3, 3), 1, 0, 1, 1),             # one tile row per image
    ((2, 16, 30, 33), (16, 16, 3, 3), 1, 1, 1, 1),            # 17 tiles a row: several vectors
    ((1, 32, 14, 13), (40, 32, 3, 3), 1, 1, 1, 1),            # >= 32 channels, >= 25 tiles an image: from 49 tiles
    ((8, 64, 28, 28), (64, 64, 3, 3), 1, 1, 1, 1),            # Winograd weight gradient over several units
    # weight gradient as one batch-wide im2col GEMM (>= 32 output channels and >= 32 taps per group):
    ((4, 32, 8, 8), (64, 32, 4, 4), 2, 1, 1, 1),              # DCGAN's kernel 4, stride 2 on a small image
    ((40, 256, 7, 5), (32, 256, 3, 2), 1, 1, 1, 1),           # blocks of 20 whole images
    ((2, 64, 61, 61), (40, 64, 5, 5), 1, 2, 1, 1),            # blocks of pixel ranges, rows cut mid-way
    ((2, 64, 121, 121), (40, 64, 5, 5), 2, 2, 1, 1),          # the same, strided
    ((2, 64, 9, 9), (64, 32, 3, 3), 2, 1, 1, 2),              # groups
    # the weight gradient's pixel-row slices (strided, KW 2..4, >= 64 taps), the stride-2 col2im of grad_input
    # (even and odd input columns as two planes) and the forward's column slabs (im2col larger than L2):
    ((3, 16, 9, 11), (40, 16, 4, 4), 2, 1, 1, 1),             # k4 s2, odd width: last column even-only
    ((2, 8, 12, 13), (32, 8, 3, 3), 2, (1, 2), (2, 1), 1),    # dilated rows, wide column padding
    ((2, 8, 13, 12), (34, 8, 3, 3), (1, 2), 2, 2, 1),          # dilated columns: the k-major im2col
    ((2, 32, 40, 40), (32, 32, 4, 4), 2, 1, 1, 1),            # strided forward through sgemm
    ((2, 32, 40, 40), (16, 32, 4, 4), 2, 1, 1, 1),            # < 32 channels: tile kernel in slabs of 8 vectors
    ((2, 64, 8, 8), (64, 16, 4, 4), 2, 1, 1, 4),              # groups, pixel-row slices per group
    ((1, 4, 300, 298), (32, 4, 4, 4), 2, 1, 1, 1),            # pixel ranges cut mid-row, odd output width
]


@pytest.mark.parametrize("xshape,wshape,stride,padding,dilation,groups", CASES)
def test_conv2d_matches_torch(rng, simd_path, xshape, wshape, stride, padding, dilation, groups):
    _check(rng, xshape, wshape, stride, padding, dilation, groups)


def test_conv2d_without_bias(rng, simd_path):
    _check(rng, (2, 3, 6, 7), (4, 3, 3, 3), 1, 1, 1, 1, bias=False)
    _check(rng, (2, 3, 6, 7), (4, 3, 3, 3), 2, 1, 1, 1, bias=False)


def test_conv2d_bench_shape_small_batch(rng):
    # The benchmark's layer (64 -> 64 channels, 32x32, 3x3, pad 1) on 2 images.
    _check(rng, (2, 64, 32, 32), (64, 64, 3, 3), 1, 1, 1, 1)


def test_conv2d_zero_batch(rng):
    x = np.zeros((0, 3, 5, 5), np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    assert conv2d_forward(x, w, padding=1).shape == (0, 4, 5, 5)
    gx, gw, gb = conv2d_backward(x, w, np.zeros((0, 4, 5, 5), np.float32), padding=1)
    assert gx.shape == (0, 3, 5, 5)
    assert not gw.any() and not gb.any()


def test_conv2d_need_flags(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    gx, gw, gb = conv2d_backward(x, w, gy, need=(False, True, False))
    assert gx is None and gb is None and gw.shape == w.shape
    gx, gw, gb = conv2d_backward(x, w, gy, need=(True, False, False))
    assert gw is None and gb is None and gx.shape == x.shape


def test_conv2d_non_contiguous_inputs(rng):
    x = rng.standard_normal((2, 3, 8, 10)).astype(np.float32)[:, :, :, ::2]
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = conv2d_forward(x, w, padding=1)
    ref = F.conv2d(torch.tensor(np.ascontiguousarray(x)), torch.tensor(w), padding=1).numpy()
    _close(y, ref, "strided view input")


THREAD_CASES = [
    ((5, 7, 12, 13), (10, 7, 3, 3), 1, 1, 1, 1),     # flat vectors, batch parallel
    ((1, 9, 20, 33), (13, 9, 3, 3), 1, 1, 1, 1),     # batch 1: parallel over channel blocks
    ((3, 4, 11, 9), (6, 2, 3, 3), 2, 1, 1, 2),       # strided, grouped
    ((11, 3, 7, 7), (5, 3, 3, 3), 1, 0, 2, 1),       # several weight-gradient chunks
    ((3, 16, 9, 11), (20, 16, 3, 3), 1, 1, 1, 1),    # Winograd
    ((1, 16, 9, 11), (20, 16, 3, 3), 1, 1, 1, 1),    # Winograd, batch 1
    ((24, 64, 14, 14), (64, 64, 3, 3), 1, 1, 1, 1),  # Winograd weight gradient over several units
    ((3, 32, 8, 8), (64, 32, 4, 4), 2, 1, 1, 1),     # weight gradient by batch-wide GEMM
    ((1, 32, 40, 40), (32, 32, 4, 4), 2, 1, 1, 1),   # strided forward through sgemm, stride-2 col2im
    ((2, 32, 40, 40), (16, 32, 4, 4), 2, 1, 1, 1),   # forward in column slabs
    ((40, 256, 7, 5), (32, 256, 3, 2), 1, 1, 1, 1),  # the same, blocks of whole images
    ((1, 64, 53, 53), (64, 32, 5, 5), 1, 2, 1, 2),   # the same, grouped, blocks of pixel ranges
    ((11, 16, 5, 7), (16, 16, 3, 3), 1, 1, 1, 1),    # Winograd, images batched into units
    ((8, 16, 14, 14), (32, 16, 3, 3), 1, 1, 1, 1),   # Winograd forward (>= 256 tiles), 7 tiles a row
]


@pytest.mark.parametrize("xshape,wshape,stride,padding,dilation,groups", THREAD_CASES)
def test_conv2d_bit_identical_across_thread_counts(rng, threads, xshape, wshape, stride, padding, dilation, groups):
    x = rng.standard_normal(xshape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    b = rng.standard_normal(wshape[0]).astype(np.float32)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = rng.standard_normal(conv2d_output_shape(xshape, wshape, **kw)).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        threads(n)
        results.append((conv2d_forward(x, w, b, **kw),) + conv2d_backward(x, w, gy, **kw))
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("side,channels", [(14, 32), (18, 32), (30, 40)])
def test_winograd_last_few_tiles_match_the_vector_path(rng, simd_path, side, channels):
    """The Winograd forward computes a last partial vector of fewer than 6 tiles (49 tiles of one
    14x14 image: one) with the output channels along the lanes instead; per-tile results do not
    depend on the batching, so an image alone (its last tile on that path) and the same image
    first in a batch of three (on the vector path) must give the same bits, act and pool included."""
    x = rng.standard_normal((3, channels, side, side)).astype(np.float32)
    x[0, 0, 0, :3] = [np.nan, np.inf, -0.0]
    w = rng.standard_normal((70, channels, 3, 3)).astype(np.float32)
    b = rng.standard_normal(70).astype(np.float32)
    for kw in (dict(), dict(activation=fg._C.activation.RELU, max_pool2x2=True)):
        batch = conv2d_forward(x, w, b, padding=1, **kw)
        for i in (0, 2):
            alone = conv2d_forward(x[i:i + 1], w, b, padding=1, **kw)
            assert alone.tobytes() == batch[i:i + 1].tobytes(), (i, kw)


# one case per forward path: direct "flat" and "row" vectors, strided im2col, depthwise, Winograd
FUSED_ACT_CASES = [CASES[0], CASES[1], CASES[6], CASES[8], CASES[20], CASES[21],
                   ((2, 32, 16, 16), (32, 32, 4, 4), 2, 1, 1, 1)]  # strided forward through sgemm
ACT_NAMES = ["RELU", "LEAKY_RELU", "GELU", "GELU_TANH", "SIGMOID", "TANH", "SILU"]


@pytest.mark.parametrize("xshape,wshape,stride,padding,dilation,groups", FUSED_ACT_CASES)
def test_conv2d_fused_activation_is_the_activation_after(rng, simd_path, xshape, wshape, stride, padding, dilation,
                                                          groups):
    """activation= applies the op to each block of y as the kernel writes it: the same bits as the
    activation kernel run over y afterwards, NaN and infinities included."""
    act = fg._C.activation
    assert [n for n in ACT_NAMES if hasattr(act, n)] == ACT_NAMES
    x = rng.standard_normal(xshape).astype(np.float32)
    x.flat[:3] = [np.nan, np.inf, -np.inf]
    w = rng.standard_normal(wshape).astype(np.float32)
    b = rng.standard_normal(wshape[0]).astype(np.float32)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    plain = conv2d_forward(x, w, b, **args)
    for name in ACT_NAMES:
        code, alpha = getattr(act, name), 0.1 if name == "LEAKY_RELU" else 0.0
        want = plain.copy()
        act.act_forward(code, want, want, alpha)
        got = conv2d_forward(x, w, b, activation=code, alpha=alpha, **args)
        np.testing.assert_array_equal(got, want, err_msg=name)


# every forward path with odd and even output sizes; the 2x2 pool drops an odd last row / column
FUSED_POOL_CASES = FUSED_ACT_CASES + [
    ((1, 1, 28, 28), (32, 1, 3, 3), 1, 1, 1, 1),     # LeNet's first conv
    ((8, 16, 13, 11), (16, 16, 3, 3), 1, 1, 1, 1),   # Winograd forward, odd output sizes
    ((1, 32, 14, 14), (64, 32, 3, 3), 1, 1, 1, 1),   # Winograd from 49 tiles: LeNet's second conv at batch 1
    ((2, 32, 15, 13), (40, 32, 3, 3), 1, 1, 1, 1),   # Winograd, odd sizes, 6 pooled columns (a partial vector)
    ((1, 32, 12, 35), (33, 32, 3, 3), 1, 1, 1, 1),   # Winograd, 17 pooled columns (a vector and one more)
]


@pytest.mark.parametrize("xshape,wshape,stride,padding,dilation,groups", FUSED_POOL_CASES)
def test_conv2d_fused_max_pool_is_the_pool_after(rng, simd_path, threads, xshape, wshape, stride, padding, dilation,
                                                 groups):
    """max_pool2x2=True pools each block of act(conv) while in cache: the same bits as the values-only
    2x2 max pool run over the full output afterwards (NaN, infinities and signed zeros included),
    at any thread count."""
    x = rng.standard_normal(xshape).astype(np.float32)
    x.flat[:3] = [np.nan, np.inf, -np.inf]
    x.flat[-2:] = [-0.0, 0.0]
    w = rng.standard_normal(wshape).astype(np.float32)
    b = rng.standard_normal(wshape[0]).astype(np.float32)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    for code, alpha in ((-1, 0.0), (fg._C.activation.RELU, 0.0), (fg._C.activation.LEAKY_RELU, 0.1)):
        want = max_pool2d_values(conv2d_forward(x, w, b, activation=code, alpha=alpha, **args), 2)
        for n in (1, 2, 3):
            threads(n)
            got = conv2d_forward(x, w, b, activation=code, alpha=alpha, max_pool2x2=True, **args)
            assert got.shape == want.shape
            assert got.tobytes() == want.tobytes(), (code, n)


def test_conv2d_fused_max_pool_checks_its_arguments(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with pytest.raises(TypeError, match="max_pool2x2 must be a bool"):
        conv2d_forward(x, w, max_pool2x2=1)
    y = np.empty((2, 4, 4, 4), np.float32)  # the unpooled shape
    with pytest.raises(ValueError, match=r"out must have shape \(2, 4, 2, 2\)"):
        fg._C.conv.conv2d_forward(x, w, None, y, (1, 1), (0, 0, 0, 0), (1, 1), 1, -1, 0.0, True)
    with pytest.raises(TypeError):
        fg._C.conv.conv2d_forward(x, w, None, y[:, :, :2, :2].copy(), (1, 1), (0, 0, 0, 0), (1, 1), 1, -1, 0.0, "yes")
    # a one-row output has no 2 x 2 window: the pool op refuses it, and so does the fused form
    with pytest.raises(ValueError, match=r"max_pool2x2 needs a conv output of at least 2 x 2.*\(1, 6\)"):
        conv2d_forward(x[:, :, :3], w[..., :1], max_pool2x2=True)


def test_conv2d_errors(rng):
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    with pytest.raises(TypeError, match="input"):
        conv2d_forward(x.astype(np.float64), w)
    with pytest.raises(TypeError, match="weight"):
        conv2d_forward(x, w.tolist())
    with pytest.raises(ValueError, match="input must be 4-D"):
        conv2d_forward(x[0], w)
    with pytest.raises(ValueError, match="weight must be 4-D"):
        conv2d_forward(x, w[0])
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv2d_forward(x, rng.standard_normal((6, 4, 7, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv2d_forward(x, w, dilation=3)
    with pytest.raises(ValueError, match="divisible by groups"):
        conv2d_forward(x, rng.standard_normal((6, 4, 3, 3)).astype(np.float32), groups=3)
    with pytest.raises(ValueError, match="out_channels .* divisible by groups"):
        conv2d_forward(x, rng.standard_normal((5, 2, 3, 3)).astype(np.float32), groups=2)
    with pytest.raises(ValueError, match="weight must have shape"):
        conv2d_forward(x, rng.standard_normal((6, 3, 3, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="bias must have shape"):
        conv2d_forward(x, w, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        conv2d_forward(x, w, stride=0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        conv2d_forward(x, w, padding=-1)
    with pytest.raises(ValueError, match="padding must be"):
        conv2d_forward(x, w, padding="full")
    with pytest.raises(ValueError, match="strided"):
        conv2d_forward(x, w, stride=2, padding="same")
    with pytest.raises(TypeError, match="dilation"):
        conv2d_forward(x, w, dilation=1.5)
    with pytest.raises(ValueError, match="groups must be >= 1"):
        conv2d_forward(x, w, groups=0)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        conv2d_backward(x, w, np.zeros((2, 6, 5, 5), np.float32))
    with pytest.raises(ValueError, match="activation must be -1"):
        conv2d_forward(x, w, activation=7)


def test_conv2d_binding_rejects_bad_shapes_directly(rng):
    # The compiled entry points check shapes themselves (never a crash, even bypassing the wrapper).
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="out must have shape"):
        fg._C.conv.conv2d_forward(x, w, None, np.empty((2, 6, 5, 5), np.float32), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="larger than the padded input"):
        fg._C.conv.conv2d_forward(x, w, None, np.empty((2, 6, 4, 4), np.float32), (1, 1), (0, 0, 0, 0), (4, 4), 1)
    with pytest.raises(ValueError, match="grad_weight must have shape"):
        fg._C.conv.conv2d_backward_weight(x, np.zeros((2, 6, 4, 4), np.float32), np.empty((6, 4, 3, 2), np.float32),
                                          None, [6, 4, 3, 3], (1, 1), (0, 0, 0, 0), (1, 1), 1)


def test_bench_conv_suite_runs_quick():
    from forgegrad.bench import run
    rows = run("conv", (1,), quick=True)
    assert [r["workload"].split()[-1] for r in rows] == ["fwd", "fwd+bwd"] * 2 + ["infer"] * 2
    assert all(r["seconds"]["forgegrad"] > 0 and r["seconds"]["torch"] > 0 for r in rows)


@pytest.mark.parametrize("width,padding", [(w, 1) for w in range(1, 17)] + [(5, 0), (12, 0), (9, 2), (14, 2)])
def test_winograd_narrow_images_against_torch(rng, simd_path, threads, width, padding):
    """Winograd on outputs up to 16 wide, where AVX-512 puts two tile rows in one vector (input, output and
    grad_y transforms, 1 to 8 tiles a row, odd heights), in batches whose tile counts leave last vectors of
    every length: forward (>= 256 tiles: the Winograd forward), both gradients, against torch, and the same
    bits at 1 and 2 threads."""
    x = rng.standard_normal((41, 32, 13, width)).astype(np.float32)
    w = rng.standard_normal((33, 32, 3, 3)).astype(np.float32)
    b = rng.standard_normal(33).astype(np.float32)
    results = []
    for n in (1, 2):
        threads(n)
        y = conv2d_forward(x, w, b, padding=padding)
        gy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        results.append((y,) + conv2d_backward(x, w, gy, padding=padding))
    for a, b_ in zip(results[0], results[1]):
        assert a.tobytes() == b_.tobytes()
    tx, tw, tb = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, w, b))
    ty = F.conv2d(tx, tw, tb, padding=padding)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    y, gx, gw, gb = results[0]
    _close(y, ty.detach().numpy(), "forward")
    _close(gx, tx.grad.numpy(), "grad_input")
    _close(gw, tw.grad.numpy(), "grad_weight")
    _close(gb, tb.grad.numpy(), "grad_bias")


def test_narrow_padded_planes_are_not_overwritten_across_threads():
    # padded planes narrower than half a vector (W + pads < 8), no bottom padding: a row's whole-vector store had
    # reached into the next channel's plane, which the other thread may already have filled (2 threads only)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 12, 6, 5)).astype(np.float32)
    w = rng.standard_normal((5, 12, 2, 3)).astype(np.float32)
    want = F.conv2d(torch.tensor(x), torch.tensor(w), padding=(0, 1)).numpy()
    prev = fg.get_num_threads()
    fg.set_num_threads(1)
    one = fg.nn.functional.conv2d(fg.tensor(x), fg.tensor(w), padding=(0, 1)).numpy()
    try:
        fg.set_num_threads(2)
        for _ in range(60):  # the race showed in ~40 % of the calls
            got = fg.nn.functional.conv2d(fg.tensor(x), fg.tensor(w), padding=(0, 1)).numpy()
            np.testing.assert_array_equal(got, one)
    finally:
        fg.set_num_threads(prev)
    np.testing.assert_allclose(one, want, rtol=1e-4, atol=1e-4)
