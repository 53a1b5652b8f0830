"""bfloat16 conv2d on the vdpbf16ps GEMM (ops/_bf16_conv.py: im2col + _C.bf16.gemm, one graph node; dispatch routes
1x1 kernels there, ops/_bf16_conv.ALL_GEOMETRIES every groups == 1 conv): values and the input, weight and
bias gradients against torch's bfloat16 conv2d on odd geometries, as a bfloat16 model and under autocast; the same
bits at 1, 2 and 3 threads; routing; the float32 path at a lower SIMD setting (what a CPU without AVX512_BF16 runs)."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C
from forgegrad.ops import _bf16_conv

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F = fg.nn.functional
NATIVE = _C.bf16.gemm_path() == "avx512_bf16"
needs_native = pytest.mark.skipif(not NATIVE, reason="the vdpbf16ps path needs a CPU with AVX512_BF16")

# (N, C, H, W, OC, kH, kW, stride, padding, dilation, bias)
GEOMETRIES = [
    (2, 3, 7, 9, 5, 3, 3, 1, 1, 1, True),
    (2, 3, 11, 8, 4, 3, 2, (2, 3), (1, 2), (2, 1), False),
    (3, 5, 6, 6, 7, 1, 1, 1, 0, 1, True),           # 1x1 (dispatch's own case), im2col is the image
    (2, 5, 6, 9, 7, 1, 1, 1, (2, 1), 1, False),     # 1x1 with padding: the input gradient crops
    (1, 4, 10, 10, 3, 5, 5, 2, 4, 1, True),         # padding past the kernel's extent
    (2, 3, 7, 9, 5, 3, 3, 1, "same", 2, True),
    (2, 3, 9, 9, 4, 2, 3, 3, (3, 0), (1, 2), True),  # stride past the kernel: rows of x no output reads
    (4, 16, 15, 13, 24, 3, 3, 1, 1, 1, True),
    (3, 37, 5, 4, 19, 1, 1, 1, 0, 1, True),
    (2, 6, 9, 8, 5, 1, 1, 2, 0, 1, True),           # strided 1x1: the subsampled image
    (2, 6, 10, 7, 5, 1, 1, (3, 2), (1, 2), 1, False),
]


@pytest.fixture
def all_geometries(monkeypatch):
    monkeypatch.setattr(_bf16_conv, "ALL_GEOMETRIES", True)


def _case(geometry, seed=0):
    n, c, h, w, oc, kh, kw, stride, padding, dilation, bias = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(BF16)
    wt = (rng.standard_normal((oc, c, kh, kw)) * 0.3).astype(BF16)
    b = rng.standard_normal(oc).astype(BF16) if bias else None
    return x, wt, b, dict(stride=stride, padding=padding, dilation=dilation)


def _torch(x, w, b, conv, gy):
    t = [torch.from_numpy(a.astype(np.float32)).bfloat16().requires_grad_() if a is not None else None
         for a in (x, w, b)]
    y = torch.nn.functional.conv2d(*t, **conv)
    y.backward(torch.from_numpy(gy.astype(np.float32)).bfloat16())
    return [y.detach()] + [a.grad for a in t if a is not None]


def _fg(x, w, b, conv, gy):
    t = [fg.tensor(a).requires_grad_() if a is not None else None for a in (x, w, b)]
    y = F.conv2d(*t, **conv)
    y.backward(fg.tensor(gy))
    return y, [y.detach()] + [a.grad for a in t if a is not None]


def _f32(a):
    return a.float().numpy() if isinstance(a, torch.Tensor) else np.asarray(a.float().numpy())


def _close(got, want, scale):
    # Both sides sum exact bfloat16 products in float32 and round the sum once to bfloat16, in different orders: the
    # float32 sums differ by a few float32 ulps of the sum of |terms| (2^-20 of `scale`, that sum's bound, covers a
    # reduction of thousands of terms), which at most moves the rounding across one bfloat16 boundary: one bfloat16
    # ulp, 2^-7 relative (rtol 2^-7 + a float32-level atol). A wrong tap or index is off by whole terms, far beyond.
    np.testing.assert_allclose(_f32(got), _f32(want), rtol=2.0 ** -7, atol=2.0 ** -20 * scale + 1e-30)


@needs_native
# every geometry with ALL_GEOMETRIES on, and the 1x1 ones also as dispatch routes them by default
@pytest.mark.parametrize("geometry, every_geometry", [(g, True) for g in GEOMETRIES] +
                         [(g, False) for g in GEOMETRIES if g[5:7] == (1, 1)])
def test_values_and_gradients_match_torch_bfloat16(geometry, every_geometry, monkeypatch):
    monkeypatch.setattr(_bf16_conv, "ALL_GEOMETRIES", every_geometry)
    x, w, b, conv = _case(geometry)
    ref_y = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float32)).bfloat16(),
                                       torch.from_numpy(w.astype(np.float32)).bfloat16(), None, **conv)
    gy_shape = tuple(ref_y.shape)
    gy = np.random.default_rng(1).standard_normal(gy_shape).astype(BF16)
    y, got = _fg(x, w, b, conv, gy)
    assert type(y.grad_fn).__name__ == "Bf16Conv2dFunction"
    assert y.dtype == fg.bfloat16 and all(g.dtype == fg.bfloat16 for g in got)
    want = _torch(x, w, b, conv, gy)
    # scales: the sums of |terms| of each product (the |x| |w| conv, and the gradients' sums of |gy| |w|, |gy| |x|)
    ax, aw, ag = (torch.from_numpy(np.abs(a.astype(np.float32))) for a in (x, w, gy))
    sy = float(torch.nn.functional.conv2d(ax, aw, **conv).max()) + (float(np.abs(b.astype(np.float32)).max())
                                                                     if b is not None else 0.0)
    ax.requires_grad_(), aw.requires_grad_()
    torch.nn.functional.conv2d(ax, aw, **conv).backward(ag)
    scales = [sy, float(ax.grad.max()), float(aw.grad.max()), float(ag.abs().sum(dim=(0, 2, 3)).max())]
    for g, r, s in zip(got, want, scales):
        assert tuple(g.shape) == tuple(r.shape)
        _close(g, r, s)


@needs_native
@pytest.mark.parametrize("bias", [True, False])
def test_dispatch_routes_1x1_kernels_only(bias):
    rng = np.random.default_rng(2)
    x = fg.tensor(rng.standard_normal((2, 6, 5, 7)).astype(BF16)).requires_grad_()
    cases = [(1, 1, 1, True), (3, 1, 1, False), (1, 2, 1, True), (1, 1, 2, False), (2, 1, 1, False)]
    for k, stride, groups, routed in cases:
        w = fg.tensor(rng.standard_normal((4, 6 // groups, k, k)).astype(BF16)).requires_grad_()
        b = fg.tensor(rng.standard_normal(4).astype(BF16)) if bias else None
        y = F.conv2d(x, w, b, stride=stride, groups=groups)
        assert (type(y.grad_fn).__name__ == "Bf16Conv2dFunction") == routed, (k, stride, groups)
        assert y.dtype == fg.bfloat16


@needs_native
def test_autocast_1x1_conv_matches_torch_autocast():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 24, 9, 7)).astype(np.float32)
    w = (rng.standard_normal((16, 24, 1, 1)) * 0.2).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    fx, fw, fb = (fg.tensor(a).requires_grad_() for a in (x, w, b))
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    with fg.autocast("cpu", dtype=fg.bfloat16):
        fy = F.conv2d(fx, fw, fb, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ty = torch.nn.functional.conv2d(tx, tw, tb, padding=1)
    assert fy.dtype == fg.bfloat16 and ty.dtype == torch.bfloat16
    assert type(fy.grad_fn).__name__ == "Bf16Conv2dFunction"  # autocast's casts, then this path
    fy.float().square().sum().backward()
    ty.float().square().sum().backward()
    scale = float(np.abs(x).max() * np.abs(w).sum(axis=(1, 2, 3)).max() + np.abs(b).max())
    _close(fy.detach(), ty.detach(), scale)
    for f, t in ((fx, tx), (fw, tw), (fb, tb)):  # float32 leaves: their gradients are float32 on both sides
        assert f.grad.dtype == fg.float32
        np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=2.0 ** -6,
                                   atol=1e-2 * float(t.grad.abs().max()))


@needs_native
@pytest.mark.parametrize("geometry", [(4, 32, 12, 10, 40, 3, 3, 1, 1, 1, True), (3, 64, 9, 11, 48, 1, 1, 1, 0, 1, True),
                                      (2, 16, 13, 13, 24, 3, 3, 2, 1, 2, False)])
def test_bits_are_the_same_at_1_2_3_threads(geometry, all_geometries):
    x, w, b, conv = _case(geometry, seed=4)
    n, oc = geometry[0], geometry[4]
    before = fg.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            fg.set_num_threads(threads)
            ref = torch.nn.functional.conv2d(torch.zeros(x.shape), torch.zeros(w.shape), None, **conv)
            gy = np.random.default_rng(5).standard_normal(tuple(ref.shape)).astype(BF16)
            _, got = _fg(x, w, b, conv, gy)
            runs.append([g._data.view(np.uint16).copy() for g in got])
    finally:
        fg.set_num_threads(before)
    assert len(runs[0]) == (4 if b is not None else 3) and runs[0][0].shape[:2] == (n, oc)
    for other in runs[1:]:
        for a, c in zip(runs[0], other):
            np.testing.assert_array_equal(a, c)


def test_a_lower_simd_setting_takes_the_generic_float32_path():
    """Where vdpbf16ps does not run (a lower SIMD setting here, any CPU without AVX512_BF16) the conv stays on the
    float32 kernels: no Bf16Conv2dFunction node, and the generic path's bits (float32 conv of the widened operands,
    rounded once)."""
    x, w, b, conv = _case(GEOMETRIES[2])
    before = fg.get_simd()
    try:
        fg.set_simd("avx2" if before != "scalar" else "scalar")
        assert _C.bf16.gemm_path() == "float32"
        t = [fg.tensor(a).requires_grad_() for a in (x, w, b)]
        y = F.conv2d(*t, **conv)
        assert type(y.grad_fn).__name__ != "Bf16Conv2dFunction" and y.dtype == fg.bfloat16
        want = F.conv2d(*[fg.tensor(a.astype(np.float32)) for a in (x, w, b)], **conv).numpy().astype(BF16)
        np.testing.assert_array_equal(y._data.view(np.uint16), want.view(np.uint16))
    finally:
        fg.set_simd(before)


@needs_native
def test_double_backward_runs_through_float32_rules():
    x, w, b, conv = _case(GEOMETRIES[2])
    fx, fw = fg.tensor(x).requires_grad_(), fg.tensor(w).requires_grad_()
    y = F.conv2d(fx, fw, fg.tensor(b), **conv)
    assert type(y.grad_fn).__name__ == "Bf16Conv2dFunction"
    (gx,) = fg.autograd.grad(y.float().square().sum(), [fx], create_graph=True)
    gx.float().sum().backward()
    tx, tw = (torch.from_numpy(a.astype(np.float32)).bfloat16().requires_grad_() for a in (x, w))
    ty = torch.nn.functional.conv2d(tx, tw, torch.from_numpy(b.astype(np.float32)).bfloat16(), **conv)
    (tgx,) = torch.autograd.grad(ty.float().square().sum(), [tx], create_graph=True)
    tgx.float().sum().backward()
    np.testing.assert_allclose(_f32(gx.detach()), _f32(tgx.detach()), rtol=2.0 ** -6, atol=0.05)
    np.testing.assert_allclose(_f32(fw.grad), _f32(tw.grad), rtol=2.0 ** -5, atol=0.1 * float(tw.grad.abs().max()))
