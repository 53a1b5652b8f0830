"""F.grid_sample and F.affine_grid against torch: every mode x padding_mode x align_corners, grid points on the
borders and far outside, gradients for the input and the grid, the C++ kernel against the numpy reference and across
thread counts, a small spatial transformer network (outputs, gradients, ONNX in onnxruntime), and the errors."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad.ops import _grid_sample_math as M

torch = pytest.importorskip("torch")
TF = torch.nn.functional

MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")


def _grid(rng, n, *spatial, d=2, reach=1.3):
    """Random points, plus points exactly on the borders (-1, 1, 0) and far outside (+-7, +-1e4)."""
    g = rng.uniform(-reach, reach, (n,) + spatial + (d,)).astype(np.float32)
    flat = g.reshape(-1)
    special = np.array([-1.0, 1.0, 0.0, -1.0, 1.0, 1.0, 7.0, -7.0, 1e4, -1e4, -1.0, -1.0], np.float32)
    flat[:special.size] = special
    return g


def _both(x, g, cot, **kw):
    """(forgegrad (y, dx, dgrid), torch (y, dx, dgrid)) as numpy arrays."""
    fx, fg_ = fg.tensor(x, requires_grad=True), fg.tensor(g, requires_grad=True)
    fy = F.grid_sample(fx, fg_, **kw)
    (fy * fg.tensor(cot)).sum().backward()
    tx, tg = torch.from_numpy(x).requires_grad_(), torch.from_numpy(g).requires_grad_()
    ty = TF.grid_sample(tx, tg, **kw)
    (ty * torch.from_numpy(cot)).sum().backward()
    return ((fy.numpy(), fx.grad.numpy(), fg_.grad.numpy()),
            (ty.detach().numpy(), tx.grad.numpy(), tg.grad.numpy()))


@pytest.mark.parametrize("mode,padding_mode,align_corners", list(itertools.product(MODES, PADDINGS, (False, True))))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grid_sample_4d_matches_torch(mode, padding_mode, align_corners, dtype):
    rng = np.random.default_rng(hash((mode, padding_mode, align_corners)) % 2 ** 32)
    x = rng.standard_normal((2, 3, 5, 6)).astype(dtype)
    g = _grid(rng, 2, 4, 7).astype(dtype)
    cot = rng.standard_normal((2, 3, 4, 7)).astype(dtype)
    kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    got, want = _both(x, g, cot, **kw)
    tol = 2e-5 if dtype == np.float32 else 1e-10
    for name, a, b in zip(("output", "input gradient", "grid gradient"), got, want):
        assert a.dtype == dtype, name
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{name} {kw}")
    if mode == "nearest":
        assert not got[2].any(), "nearest: the grid's gradient is zero, as torch's"


@pytest.mark.parametrize("mode,padding_mode,align_corners",
                         list(itertools.product(("bilinear", "nearest"), PADDINGS, (False, True))))
def test_grid_sample_5d_matches_torch(mode, padding_mode, align_corners):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 3, 4, 5)).astype(np.float32)
    g = _grid(rng, 2, 2, 3, 4, d=3)
    cot = rng.standard_normal((2, 2, 2, 3, 4)).astype(np.float32)
    got, want = _both(x, g, cot, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_border_points_and_one_pixel_axes():
    """Points exactly on pixel centres / edges (where floor and round decide) and inputs one pixel wide."""
    rng = np.random.default_rng(1)
    for shape in ((1, 2, 4, 5), (1, 1, 1, 6), (2, 1, 3, 1)):
        x = rng.standard_normal(shape).astype(np.float32)
        h, w = shape[2:]
        xs = np.linspace(-1, 1, 2 * w + 1, dtype=np.float32)
        ys = np.linspace(-1, 1, 2 * h + 1, dtype=np.float32)
        gy, gx = np.meshgrid(ys, xs, indexing="ij")
        g = np.broadcast_to(np.stack([gx, gy], -1), (shape[0],) + gx.shape + (2,)).copy()
        cot = rng.standard_normal((shape[0], shape[1]) + gx.shape).astype(np.float32)
        for mode, pad, ac in itertools.product(MODES, PADDINGS, (False, True)):
            got, want = _both(x, g, cot, mode=mode, padding_mode=pad, align_corners=ac)
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=f"{shape} {mode} {pad} {ac}")


@pytest.mark.parametrize("dims", [2, 3])
def test_nan_and_infinite_points_as_torch(dims):
    """torch's 4-D (vectorized) and 5-D (scalar) kernels treat NaN / infinite / huge points differently."""
    x = np.arange(60 if dims == 3 else 12, dtype=np.float32).reshape((1, 1, 3, 4, 5)[:dims + 2])
    vals = [np.nan, 0.2, 0.1, np.inf, 0.1, 0.3, -np.inf, 0.3, 0.5, 0.5, np.nan, 0.2, 1e30, 0, 0, 0.3, 0.2, -1e30]
    g = np.array(vals, np.float32).reshape((1, 1, 9, 2) if dims == 2 else (1, 1, 2, 3, 3))
    for mode, pad, ac in itertools.product(("bilinear", "nearest"), PADDINGS, (False, True)):
        y = F.grid_sample(fg.tensor(x), fg.tensor(g), mode=mode, padding_mode=pad, align_corners=ac).numpy()
        t = TF.grid_sample(torch.from_numpy(x), torch.from_numpy(g), mode=mode, padding_mode=pad,
                           align_corners=ac).numpy()
        np.testing.assert_allclose(y, t, rtol=1e-6, atol=1e-6, err_msg=f"{mode} {pad} {ac}")  # NaN where torch


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_kernel_matches_reference_and_is_deterministic(mode, padding_mode):
    assert hasattr(fg._C, "grid_sample"), "forgegrad._C lacks the grid_sample kernel (rebuild the extension)"
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 17, 23)).astype(np.float32)
    g = _grid(rng, 3, 19, 21, reach=1.6)
    cot = rng.standard_normal((3, 5, 19, 21)).astype(np.float32)
    before = fg.get_num_threads()
    runs = []
    try:
        for n in (1, 3):
            fg.set_num_threads(n)
            fx, fgr = fg.tensor(x, requires_grad=True), fg.tensor(g, requires_grad=True)
            y = F.grid_sample(fx, fgr, mode=mode, padding_mode=padding_mode, align_corners=False)
            (y * fg.tensor(cot)).sum().backward()
            runs.append((y.numpy(), fx.grad.numpy(), fgr.grad.numpy()))
    finally:
        fg.set_num_threads(before)
    for a, b in zip(*runs):
        assert a.tobytes() == b.tobytes(), "the kernel's bits depend on the thread count"
    ref_y = M.forward(x, g, mode, padding_mode, False)
    ref_gx, ref_gg = M.backward(x, g, cot, mode, padding_mode, False)
    np.testing.assert_allclose(runs[0][0], ref_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(runs[0][1], ref_gx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(runs[0][2], ref_gg, rtol=1e-4, atol=1e-4)


def test_only_the_needed_gradient():
    rng = np.random.default_rng(4)
    x = fg.tensor(rng.standard_normal((1, 2, 4, 5)).astype(np.float32), requires_grad=True)
    g = fg.tensor(_grid(rng, 1, 3, 3))
    F.grid_sample(x, g, align_corners=True).sum().backward()
    assert x.grad is not None and g.grad is None


@pytest.mark.parametrize("size,align_corners", [((2, 3, 5, 7), False), ((2, 3, 5, 7), True), ((2, 1, 1, 4), False),
                                                ((2, 1, 3, 4, 5), False), ((2, 1, 3, 4, 5), True)])
def test_affine_grid_matches_torch(size, align_corners):
    rng = np.random.default_rng(6)
    d = len(size) - 2
    theta = rng.uniform(-1, 1, (2, d, d + 1)).astype(np.float32)
    ft = fg.tensor(theta, requires_grad=True)
    fgrid = F.affine_grid(ft, size, align_corners=align_corners)
    cot = rng.standard_normal(fgrid.shape).astype(np.float32)
    (fgrid * fg.tensor(cot)).sum().backward()
    tt = torch.from_numpy(theta).requires_grad_()
    tgrid = TF.affine_grid(tt, size, align_corners=align_corners)
    (tgrid * torch.from_numpy(cot)).sum().backward()
    np.testing.assert_allclose(fgrid.numpy(), tgrid.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ft.grad.numpy(), tt.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_identity_affine_grid_has_torch_bits():
    """The base grid is torch's linspace to the bit, so identity grids land where torch's do."""
    for n in range(1, 70):
        for ac in (False, True):
            theta = np.array([[[1, 0, 0], [0, 1, 0]]], np.float32)
            with warnings.catch_warnings():  # n = 1 with align_corners: torch's warning, on both sides
                warnings.simplefilter("ignore")
                got = F.affine_grid(fg.tensor(theta), (1, 1, n, n + 3), align_corners=ac).numpy()
                want = TF.affine_grid(torch.from_numpy(theta), (1, 1, n, n + 3), align_corners=ac).numpy()
            assert got.tobytes() == want.tobytes(), (n, ac)


# ---- a spatial transformer network --------------------------------------------------------------------------------
def _stn(lib):
    nn = lib.nn

    class STN(nn.Module):
        def __init__(self):
            super().__init__()
            self.loc = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(4 * 5 * 5, 6))
            self.head = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(3 * 12 * 12, 5))

        def forward(self, x):
            theta = self.loc(x).view(-1, 2, 3)
            grid = lib.nn.functional.affine_grid(theta, list(x.size()), align_corners=False)
            warped = lib.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                                   align_corners=False)
            return self.head(warped)

    return STN()


def _stn_pair():
    from helpers import fg_from_torch
    torch.manual_seed(0)
    theirs = _stn(torch)
    with torch.no_grad():  # start near the identity map, as an STN is initialised
        theirs.loc[-1].weight.mul_(0.1)
        theirs.loc[-1].bias.copy_(torch.tensor([1.0, 0.05, 0.1, -0.05, 0.9, 0.0]))
    ours = _stn(fg)
    fg_from_torch(ours, theirs)
    return ours, theirs


def test_spatial_transformer_matches_torch():
    ours, theirs = _stn_pair()
    x = np.random.default_rng(8).standard_normal((3, 1, 12, 12)).astype(np.float32)
    fx, tx = fg.tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    fy, ty = ours(fx), theirs(tx)
    np.testing.assert_allclose(fy.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    (fy * fy).sum().backward()
    (ty * ty).sum().backward()
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-3, atol=1e-5)
    got = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(got[name].grad.numpy(), p.grad.numpy(), rtol=1e-3, atol=1e-5, err_msg=name)


def test_spatial_transformer_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    ours, _ = _stn_pair()
    x = fg.tensor(np.random.default_rng(9).standard_normal((2, 1, 12, 12)).astype(np.float32))
    # the batch axis dynamic (the default): affine_grid's size follows it, its image sizes are static
    report = fg.onnx.export(ours, (x,), str(tmp_path / "stn.onnx"), rtol=1e-4, atol=1e-5)
    assert report.ok, str(report)


def test_grid_sample_5d_exports_at_opset_20(tmp_path):
    pytest.importorskip("onnxruntime")

    class Warp(fg.nn.Module):
        def forward(self, x, g):
            return F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=True)

    rng = np.random.default_rng(10)
    x = fg.tensor(rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32))
    g = fg.tensor(rng.uniform(-1.1, 1.1, (1, 2, 3, 2, 3)).astype(np.float32))
    report = fg.onnx.export(Warp(), (x, g), str(tmp_path / "warp5.onnx"), opset=20, dynamic_axes={})
    assert report.ok, str(report)
    with pytest.raises(Exception, match="opset 20"):
        fg.onnx.export(Warp(), (x, g), str(tmp_path / "warp5_17.onnx"), opset=17, dynamic_axes={})


def test_affine_warp_with_dynamic_image_sizes_exports_at_opset_20(tmp_path):
    """Image sizes that follow the input's shape: AffineGrid at opset 20; refused below (MatMul needs them)."""
    pytest.importorskip("onnxruntime")

    class Warp(fg.nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = fg.nn.Parameter(fg.tensor(np.array([[[0.9, 0.1, 0.05], [-0.1, 1.05, 0.0]]], np.float32)))

        def forward(self, x):
            grid = F.affine_grid(self.theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
            return F.grid_sample(x, grid, align_corners=False)

    x = fg.tensor(np.random.default_rng(11).standard_normal((2, 3, 9, 11)).astype(np.float32))
    dyn = {"x": {0: "batch", 2: "h", 3: "w"}}
    report = fg.onnx.export(Warp(), (x,), str(tmp_path / "warp20.onnx"), opset=20, dynamic_axes=dyn, rtol=1e-4,
                            atol=1e-5)
    assert report.ok, str(report)
    with pytest.raises(Exception, match="opset 20"):
        fg.onnx.export(Warp(), (x,), str(tmp_path / "warp17.onnx"), opset=17, dynamic_axes=dyn)


@pytest.mark.parametrize("x_shape,grid_shape", [((0, 2, 3, 4), (0, 2, 2, 2)), ((1, 0, 3, 4), (1, 2, 2, 2)),
                                                ((1, 2, 3, 4), (1, 0, 2, 2)), ((1, 2, 3, 4, 2), (1, 0, 2, 2, 3))])
@pytest.mark.parametrize("mode", MODES)
def test_empty_shapes_as_torch(x_shape, grid_shape, mode):
    if len(x_shape) == 5 and mode == "bicubic":
        return
    x = np.ones(x_shape, np.float32)
    g = np.zeros(grid_shape, np.float32)
    cot = np.ones(x_shape[:2] + grid_shape[1:-1], np.float32)
    got, want = _both(x, g, cot, mode=mode, align_corners=False)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)


# ---- errors and constants ---------------------------------------------------------------------------------------
def test_errors_name_the_argument():
    x, g = fg.tensor(np.zeros((2, 3, 4, 5), np.float32)), fg.tensor(np.zeros((2, 3, 3, 2), np.float32))
    with pytest.raises(ValueError, match="last dimension"):
        F.grid_sample(x, fg.tensor(np.zeros((2, 3, 3, 3), np.float32)), align_corners=False)
    with pytest.raises(ValueError, match="batch size"):
        F.grid_sample(x, fg.tensor(np.zeros((1, 3, 3, 2), np.float32)), align_corners=False)
    with pytest.raises(ValueError, match="mode"):
        F.grid_sample(x, g, mode="trilinear", align_corners=False)
    with pytest.raises(ValueError, match="padding_mode"):
        F.grid_sample(x, g, padding_mode="circular", align_corners=False)
    with pytest.raises(TypeError, match="align_corners"):
        F.grid_sample(x, g, align_corners=1)
    with pytest.raises(TypeError, match="same dtype"):
        F.grid_sample(x, fg.tensor(np.zeros((2, 3, 3, 2))), align_corners=False)
    with pytest.raises(TypeError, match="grid"):
        F.grid_sample(x, np.zeros((2, 3, 3, 2), np.float32))
    theta = fg.tensor(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 2, 3\)"):
        F.affine_grid(fg.tensor(np.zeros((2, 3, 4), np.float32)), (2, 1, 4, 4), align_corners=False)
    with pytest.raises(NotImplementedError, match="size"):
        F.affine_grid(theta, (2, 1, 4), align_corners=False)
    with pytest.raises(ValueError, match="batch size"):
        F.affine_grid(theta, (3, 1, 4, 4), align_corners=False)
    with pytest.raises(ValueError, match="positive"):
        F.affine_grid(theta, (2, 1, 0, 4), align_corners=False)


def test_default_align_corners_warns_as_torch():
    x, g = fg.tensor(np.ones((1, 1, 2, 2), np.float32)), fg.tensor(np.zeros((1, 1, 1, 2), np.float32))
    with pytest.warns(UserWarning, match="align_corners=False"):
        y = F.grid_sample(x, g)
    assert y.shape == (1, 1, 1, 1)
    assert F.GRID_SAMPLE_INTERPOLATION_MODES == TF.GRID_SAMPLE_INTERPOLATION_MODES
    assert F.GRID_SAMPLE_PADDING_MODES == TF.GRID_SAMPLE_PADDING_MODES
