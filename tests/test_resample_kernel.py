"""forgegrad._C.resample (cpp/kernels/per_isa/resample.cpp), the float32 (N, C, H, W) path of F.interpolate's
nearest / nearest-exact / bilinear and of F.pad: the same bits as the numpy path (ops/_resample_maps.py applied
axis by axis, the reference) forward and backward, at 1, 2 and 3 threads; its argument checks."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C
from forgegrad.nn import functional as F
from forgegrad.ops import pad as P
from forgegrad.ops import resample as R
from forgegrad.ops._resample_maps import adjoint_axis, apply_axis

CASES = [  # (input shape, interpolate kwargs)
    ((2, 3, 5, 7), {"scale_factor": 2.0, "mode": "nearest"}),
    ((2, 3, 5, 7), {"scale_factor": (1.5, 3.0), "mode": "nearest"}),
    ((1, 2, 9, 8), {"size": (4, 3), "mode": "nearest"}),
    ((2, 3, 5, 7), {"scale_factor": (2.5, 1.3), "mode": "nearest-exact"}),
    ((1, 2, 9, 8), {"size": (4, 11), "mode": "nearest-exact"}),
    ((2, 3, 5, 7), {"scale_factor": 2, "mode": "bilinear"}),
    ((2, 3, 5, 7), {"scale_factor": (1.5, 3.0), "mode": "bilinear", "align_corners": True}),
    ((2, 3, 5, 7), {"size": (5, 12), "mode": "bilinear"}),  # height copied, as torch's kernel
    ((2, 2, 9, 10), {"scale_factor": (0.5, 0.7), "mode": "bilinear"}),
    ((1, 3, 6, 4), {"size": (1, 9), "mode": "bilinear", "align_corners": True}),
    ((2, 4, 33, 47), {"scale_factor": 2, "mode": "bilinear", "align_corners": False}),
]

PADS = [((2, 3, 5, 7), pad, mode) for mode in ("reflect", "replicate", "circular")
        for pad in ((2, 3, 1, 4), (1, 1, 0, 0), (-1, 3, 2, -2), (0, 0, 3, 0))]
PADS += [((2, 3, 5, 7), (1, 2, 3, 0), "constant"), ((2, 3, 5, 7), (-2, 1, 0, -3), "constant"),
         ((1, 2, 4, 6), (2, 2), "constant")]


def _numpy_apply(x, maps):
    for axis, m in maps:
        x = apply_axis(x, axis, m)
    return x


def _numpy_adjoint(g, maps):
    for axis, m in reversed(maps):
        g = adjoint_axis(g, axis, m)
    return g


@pytest.fixture(params=[1, 2, 3])
def threads(request):
    before = fg.get_num_threads()
    fg.set_num_threads(request.param)
    yield request.param
    fg.set_num_threads(before)


def _same_bits(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("shape, kw", CASES)
def test_interpolate_equals_numpy_bits(shape, kw, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    maps = R.maps_for(x.shape, x.dtype, **kw)
    x_t = fg.tensor(x, requires_grad=True)
    y = F.interpolate(x_t, **kw)
    _same_bits(y.numpy(), _numpy_apply(x, maps))
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(fg.tensor(g))
    _same_bits(x_t.grad.numpy(), _numpy_adjoint(g, maps))


@pytest.mark.parametrize("shape, pad, mode", PADS)
def test_pad_equals_numpy_bits(shape, pad, mode, threads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    x_t = fg.tensor(x, requires_grad=True)
    y = F.pad(x_t, pad, mode=mode, **({"value": 1.25} if mode == "constant" else {}))
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(fg.tensor(g))
    axes, out_shape = P.resolve(x.shape, pad, mode)
    if mode == "constant":
        src, dst = P._slices(axes, x.shape, out_shape)
        want = np.full(out_shape, 1.25, np.float32)
        want[dst] = x[src]
        want_g = np.zeros(x.shape, np.float32)
        want_g[src] = g[dst]
    else:
        maps = [(axis, P.axis_map(mode, x.shape[axis], left, right)) for axis, left, right in axes]
        want, want_g = _numpy_apply(x, maps), _numpy_adjoint(g, maps)
    _same_bits(y.numpy(), want)
    _same_bits(x_t.grad.numpy(), want_g)


def test_matches_torch_large_bilinear():
    torch = pytest.importorskip("torch")  # the reference, an optional dependency
    x = np.random.default_rng(2).standard_normal((2, 3, 17, 23)).astype(np.float32)
    for ac in (False, True):
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.nn.functional.interpolate(xt, scale_factor=2, mode="bilinear", align_corners=ac)
        yt.sum().backward()
        xf = fg.tensor(x, requires_grad=True)
        yf = F.interpolate(xf, scale_factor=2, mode="bilinear", align_corners=ac)
        yf.sum().backward()
        np.testing.assert_allclose(yf.numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_bad_arguments_name_the_argument():
    x = np.zeros((1, 2, 3, 4), np.float32)
    ih, iw = np.arange(3, dtype=np.int64)[None], np.arange(4, dtype=np.int64)[None]
    out = np.empty((1, 2, 3, 4), np.float32)
    f = _C.resample.resample2d_forward
    with pytest.raises(ValueError, match="idx_w entries"):
        f(x, ih, None, iw + 1, None, 0.0, out)
    with pytest.raises(ValueError, match="idx_h entries"):
        f(x, np.stack([ih[0], ih[0] - 1]), np.ones((2, 3), np.float32), iw, None, 0.0, out)
    with pytest.raises(ValueError, match="w_w"):
        f(x, ih, None, iw, np.ones((1, 5), np.float32), 0.0, out)
    with pytest.raises(ValueError, match="out"):
        f(x, ih, None, iw, None, 0.0, np.empty((1, 2, 3, 5), np.float32))
    with pytest.raises(TypeError, match="x"):
        f(x.astype(np.float64), ih, None, iw, None, 0.0, out)
    with pytest.raises(ValueError, match="x"):
        f(np.zeros((2, 3, 4), np.float32), ih, None, iw, None, 0.0, out)
    with pytest.raises(TypeError, match="idx_h"):
        f(x, ih.astype(np.int32), None, iw, None, 0.0, out)
    with pytest.raises(ValueError, match="rows"):
        f(x, np.zeros((5, 3), np.int64), None, iw, None, 0.0, out)
    with pytest.raises(ValueError, match="x|out"):
        f(x, ih, None, iw, None, 0.0, x)  # writes what it reads
    with pytest.raises(ValueError, match="idx_h entries"):  # the backward takes no fill (-1) entries
        _C.resample.resample2d_backward(out, ih - 1, None, iw, None, np.empty_like(x))
    with pytest.raises(ValueError, match="grad"):
        _C.resample.resample2d_backward(np.zeros((1, 2, 3, 3), np.float32), ih, None, iw, None, np.empty_like(x))
