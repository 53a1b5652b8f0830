"""float32 conv3d / conv_transpose3d on the C++ 2-D conv kernels (ops/_conv3d_planes.py: the depth taps unfolded as
channels) against torch: odd geometries, the transposed conv's negative end pads, chunked images, non-contiguous and
unaligned inputs, the same bits at 1, 2 and 3 threads, and bad geometry raising before any kernel runs."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.ops import _conv3d_planes as planes

from helpers import assert_close_scaled, assert_same_bits_across_threads

F = fg.nn.functional


def _close(a, b, what):
    assert_close_scaled(a, b, what, atol_scale=1e-5, rtol=1e-4)  # Winograd tiles round differently from torch


@pytest.fixture
def calls(monkeypatch):
    """How many times each planes function ran (to see that float32 takes this path)."""
    counts = {}
    for name in ("conv_forward", "conv_input_grad", "conv_weight_grad"):
        fn = getattr(planes, name)

        def counted(*a, _fn=fn, _name=name):
            counts[_name] = counts.get(_name, 0) + 1
            return _fn(*a)
        monkeypatch.setattr(planes, name, counted)
    return counts


def _both(op, x, w, b, rng, **kw):
    """op's forward and gradients (input, weight, bias) in forgegrad and torch, compared."""
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    fx, fw = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    fb = None if b is None else fg.tensor(b, requires_grad=True)
    ty, fy = getattr(torch.nn.functional, op)(tx, tw, tb, **kw), getattr(F, op)(fx, fw, fb, **kw)
    _close(fy._data, ty.detach().numpy(), f"{op} forward {kw}")
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(g))
    (fy * fg.tensor(g)).sum().backward()
    _close(fx.grad._data, tx.grad.numpy(), f"{op} grad input {kw}")
    _close(fw.grad._data, tw.grad.numpy(), f"{op} grad weight {kw}")
    if b is not None:
        _close(fb.grad._data, tb.grad.numpy(), f"{op} grad bias {kw}")


CONV_CASES = [
    ((2, 4, 5, 6, 7), (6, 4, 3, 3, 3), dict(padding=1)),
    ((1, 4, 5, 7, 6), (6, 2, 3, 2, 3), dict(stride=(2, 1, 2), padding=(1, 0, 2), groups=2)),
    ((2, 3, 1, 5, 4), (4, 3, 1, 3, 3), dict(padding=(0, 1, 1))),  # depth 1
    ((2, 3, 6, 5, 7), (4, 3, 3, 2, 2), dict(dilation=(2, 1, 2), padding=(2, 1, 0), stride=(3, 2, 1))),
    ((1, 6, 4, 4, 4), (6, 1, 3, 3, 3), dict(padding=1, groups=6)),  # depthwise
    ((3, 2, 3, 3, 3), (5, 2, 3, 3, 3), dict(padding=2, stride=2)),  # padding wider than the kernel's reach
    ((1, 8, 9, 9, 9), (32, 8, 3, 3, 3), dict(padding="same")),  # enough channels for the Winograd tiles
    ((1, 3, 4, 5, 6), (4, 3, 2, 2, 3), dict(padding="same", dilation=(3, 1, 2))),  # odd 'same' padding
]


@pytest.mark.parametrize("xs,ws,kw", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv3d_matches_torch_on_the_2d_kernels(rng, calls, xs, ws, kw, bias):
    x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) if bias else None
    _both("conv3d", x, w, b, rng, **kw)
    assert calls == {"conv_forward": 1, "conv_input_grad": 1, "conv_weight_grad": 1}


@pytest.mark.parametrize("xs,ws,kw", [
    ((2, 4, 3, 4, 5), (4, 3, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((1, 4, 3, 4, 5), (4, 2, 2, 3, 3), dict(stride=(1, 2, 3), output_padding=(0, 1, 2), groups=2)),  # end pads < 0
    ((1, 2, 3, 3, 3), (2, 3, 3, 3, 3), dict(stride=2, padding=(0, 0, 1), output_padding=1, dilation=(1, 2, 2))),
])
def test_conv_transpose3d_matches_torch_on_the_2d_kernels(rng, calls, xs, ws, kw):
    x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
    _both("conv_transpose3d", x, w, rng.standard_normal(ws[1] * kw.get("groups", 1)).astype(np.float32), rng, **kw)
    assert calls == {"conv_forward": 1, "conv_input_grad": 1, "conv_weight_grad": 1}


def test_all_padding_geometry_stays_on_numpy(rng, calls):
    # the output's one row is end padding only (output_padding 2 past padding 1): the cropped input is empty
    x, w = rng.standard_normal((1, 2, 1, 1, 1)).astype(np.float32), rng.standard_normal((2, 3, 1, 1, 1))
    _both("conv_transpose3d", x, w.astype(np.float32), None, rng, stride=3, padding=1, output_padding=2)
    assert calls == {}


@pytest.mark.parametrize("ws,kw", [((5, 4, 1, 1, 1), {}), ((5, 4, 2, 2, 2), dict(stride=2)),
                                   ((5, 4, 3, 1, 1), dict(padding=(1, 0, 0)))])
def test_disjoint_windows_stay_on_numpy(rng, calls, ws, kw):
    x, w = rng.standard_normal((2, 4, 4, 6, 5)).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
    _both("conv3d", x, w, None, rng, **kw)
    assert calls == {}


def test_float64_stays_on_numpy(rng, calls):
    x, w = rng.standard_normal((1, 2, 3, 4, 5)), rng.standard_normal((3, 2, 2, 2, 2))
    _both("conv3d", x, w, None, rng, padding=1)
    assert calls == {}


# one output plane of one image per block, two planes, two images (an output plane unfolds to 360 floats here):
# the blocks' weight and input gradients add in order
@pytest.mark.parametrize("floats", [1, 720, 2160])
def test_chunked_images_and_planes_match_torch(rng, monkeypatch, floats):
    monkeypatch.setattr(planes, "_UNFOLD_FLOATS", floats)
    assert planes._chunks(3, 3, 360) == {1: [(n, n + 1, o, o + 1) for n in range(3) for o in range(3)],
                                         720: [(n, n + 1, o, min(o + 2, 3)) for n in range(3) for o in (0, 2)],
                                         2160: [(0, 2, 0, 3), (2, 3, 0, 3)]}[floats]
    x, w = rng.standard_normal((3, 4, 5, 6, 5)).astype(np.float32), rng.standard_normal((5, 4, 3, 2, 3))
    _both("conv3d", x, w.astype(np.float32), None, rng, padding=(1, 0, 1), stride=(2, 1, 1))


def test_empty_batch(rng):
    w = fg.tensor(rng.standard_normal((3, 2, 2, 2, 2)).astype(np.float32), requires_grad=True)
    x = fg.tensor(np.zeros((0, 2, 3, 4, 5), np.float32), requires_grad=True)
    y = F.conv3d(x, w, padding=1)
    assert y.shape == (0, 3, 4, 5, 6)
    y.sum().backward()
    assert x.grad.shape == (0, 2, 3, 4, 5) and not np.any(w.grad._data)


def test_non_contiguous_and_unaligned_inputs(rng):
    x = rng.standard_normal((2, 3, 7, 6, 5)).astype(np.float32).transpose(0, 1, 4, 3, 2)  # strided view
    raw = np.frombuffer(b"\0" + rng.standard_normal(4 * 3 * 2 * 3 * 3).astype(np.float32).tobytes(), np.float32,
                        offset=1)
    w = raw.reshape(4, 3, 2, 3, 3)
    assert not w.flags.aligned and not x.flags.c_contiguous
    got = F.conv3d(fg.tensor(x), fg.tensor(w), None, padding=1, stride=(1, 2, 1))
    want = torch.nn.functional.conv3d(torch.tensor(x), torch.tensor(np.array(w)), None, padding=1, stride=(1, 2, 1))
    _close(got._data, want.numpy(), "forward")
    gy = np.ascontiguousarray(rng.standard_normal(tuple(want.shape)).astype(np.float32)[..., ::-1])[..., ::-1]
    from forgegrad.ops import _window3d as W
    geo = W.conv_geometry(x.shape, w.shape, (1, 2, 1), 1)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(np.array(w), requires_grad=True)
    torch.nn.functional.conv3d(tx, tw, None, padding=1, stride=(1, 2, 1)).backward(torch.tensor(gy.copy()))
    _close(planes.conv_input_grad(gy, w, geo, x.shape), tx.grad.numpy(), "grad input")
    _close(planes.conv_weight_grad(x, gy, w.shape, geo), tw.grad.numpy(), "grad weight")


@pytest.mark.parametrize("kw,shape", [(dict(padding=1), (32, 32, 3, 3, 3)),  # Winograd 2-D tiles
                                      (dict(stride=(2, 1, 2), groups=2, dilation=(1, 2, 1)), (6, 2, 3, 2, 2))])
def test_same_bits_at_1_2_3_threads(rng, threads, kw, shape):
    x = fg.tensor(rng.standard_normal((2, shape[1] * kw.get("groups", 1), 6, 9, 10)).astype(np.float32),
                  requires_grad=True)
    w = fg.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)

    def run():
        x.grad = w.grad = None
        y = F.conv3d(x, w, None, **kw)
        (y * y).sum().backward()
        return [y._data, x.grad._data, w.grad._data]

    assert_same_bits_across_threads(run, threads)


def test_bad_geometry_raises_before_the_kernels(calls):
    x = fg.tensor(np.zeros((1, 2, 3, 4, 5), np.float32))
    w = fg.tensor(np.zeros((2, 2, 2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="padding is too large|input is too large"):
        F.conv3d(x, w, padding=2 ** 62)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        F.conv3d(x, w, stride=(1, 0, 1))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        F.conv3d(x, w, padding=(0, -1, 0))
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.conv3d(x, w, dilation=(3, 1, 1))
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        F.conv3d(x, w, dilation=0)
    with pytest.raises(ValueError, match="input is too large"):
        F.conv_transpose3d(x, fg.tensor(np.zeros((2, 1, 1, 1, 1), np.float32)), stride=2 ** 40)
    assert calls == {}


class _Recording:
    """_C with its conv kernels wrapped: the largest array (in floats) any of them is handed."""

    def __init__(self, real):
        self._real, self.largest = real, 0
        self.conv = self

    def __getattr__(self, name):
        fn = getattr(self._real.conv, name)

        def call(*args):
            self.largest = max([self.largest] + [a.size for a in args if isinstance(a, np.ndarray)])
            return fn(*args)
        return call


def test_chunks_bound_the_output_copy_too(rng, monkeypatch):
    # few input channels into many output channels: an output plane (16 * 6 * 7 floats) outweighs its unfold
    # (1 * 3 * 6 * 7); the chunks' output / output-gradient copies stay within _UNFOLD_FLOATS as the unfolds do
    monkeypatch.setattr(planes, "_UNFOLD_FLOATS", 2000)
    rec = _Recording(planes._C)
    monkeypatch.setattr(planes, "_C", rec)
    x, w = rng.standard_normal((3, 1, 5, 6, 7)).astype(np.float32), rng.standard_normal((16, 1, 3, 3, 3))
    _both("conv3d", x, w.astype(np.float32), rng.standard_normal(16).astype(np.float32), rng, padding=1)
    assert 0 < rec.largest <= 2000


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ws,kw", [((3, 2, 1, 1, 1), {}), ((3, 2, 2, 2, 2), dict(stride=2)),  # numpy's vol2col
                                   ((3, 2, 3, 3, 3), dict(padding=1))])
def test_empty_batch_backward_on_every_path(rng, dtype, ws, kw):
    w = fg.tensor(rng.standard_normal(ws).astype(dtype), requires_grad=True)
    x = fg.tensor(np.zeros((0, 2, 4, 4, 4), dtype), requires_grad=True)
    b = fg.tensor(np.ones(3, dtype), requires_grad=True)
    y = F.conv3d(x, w, b, **kw)
    assert y.shape == tuple(torch.nn.functional.conv3d(torch.zeros((0, 2, 4, 4, 4)), torch.zeros(ws), **kw).shape)
    y.sum().backward()
    assert x.grad.shape == x.shape and not np.any(w.grad._data) and not np.any(b.grad._data)
    wt = fg.tensor(rng.standard_normal((2,) + ws[:1] + ws[2:]).astype(dtype), requires_grad=True)
    yt = F.conv_transpose3d(x, wt, **kw)
    assert yt.shape == tuple(torch.nn.functional.conv_transpose3d(
        torch.zeros((0, 2, 4, 4, 4)), torch.zeros((2,) + ws[:1] + ws[2:]), **kw).shape)
    yt.sum().backward()
    assert not np.any(wt.grad._data)
