"""The resampling and padding layers (nn.Upsample, the padding layers, PixelShuffle/Unshuffle, ChannelShuffle)
against torch: outputs, gradients, reprs; gradients equal to the transposed forward (also where torch's nearest
backward is not); double backward through them; bad arguments; ONNX export with dynamic image sizes and the
opset-dependent circular pad; a small U-Net-like block that trains like torch's and exports.

The ops' own generated checks (odd shapes, float64, threads, meta, errors) are in tests/test_op_registry.py."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.nn import functional as F

torch = pytest.importorskip("torch")

MODULES = [  # (constructor, input shape): the same expression builds torch's and forgegrad's layer
    ("Upsample(scale_factor=2)", (2, 3, 5, 4)),
    ("Upsample(scale_factor=(1.5, 3), mode='bilinear')", (1, 2, 5, 3)),
    ("Upsample(size=(7, 6), mode='bicubic', align_corners=True)", (2, 2, 4, 5)),
    ("Upsample(scale_factor=2.5, mode='linear', recompute_scale_factor=True)", (2, 3, 5)),
    ("Upsample(size=9, mode='nearest-exact')", (1, 2, 4)),
    ("UpsamplingNearest2d(scale_factor=3)", (1, 1, 3, 2)),
    ("UpsamplingBilinear2d(size=(5, 8))", (2, 2, 3, 3)),
    ("ZeroPad1d((2, 1))", (2, 3, 5)), ("ZeroPad2d((1, 0, 2, -1))", (2, 2, 4, 5)), ("ZeroPad3d(1)", (1, 2, 2, 3, 3)),
    ("ConstantPad1d(2, 3.5)", (3, 4)), ("ConstantPad2d((1, 2, 0, 3), -1.0)", (1, 2, 3, 4)),
    ("ConstantPad3d((1, 0, 0, 1, 2, 0), 0.5)", (2, 1, 2, 3, 2)),
    ("ReflectionPad1d((3, 1))", (2, 3, 5)), ("ReflectionPad2d(2)", (1, 2, 4, 5)),
    ("ReflectionPad2d((1, 3, 2, 0))", (3, 4, 6)),
    ("ReplicationPad1d(4)", (2, 2, 3)), ("ReplicationPad2d((2, 0, 1, 3))", (2, 2, 3, 4)),
    ("CircularPad1d((2, 3))", (2, 2, 4)), ("CircularPad2d(1)", (1, 3, 3, 4)),
    ("CircularPad2d((2, 1, 0, 3))", (2, 3, 4)),
    ("PixelShuffle(2)", (2, 8, 3, 5)), ("PixelShuffle(3)", (9, 2, 2)), ("PixelUnshuffle(2)", (1, 3, 4, 6)),
    ("ChannelShuffle(3)", (2, 6, 2, 3)),
]


def _pair(expr):
    return eval("nn." + expr, {"nn": nn}), eval("torch.nn." + expr, {"torch": torch})


@pytest.mark.parametrize("expr,shape", MODULES, ids=[m[0] for m in MODULES])
def test_module_matches_torch_output_gradient_and_repr(expr, shape):
    ours, theirs = _pair(expr)
    assert repr(ours) == repr(theirs)
    assert ours.state_dict() == {} and not list(ours.parameters())
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    xf, xt = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yf, yt = ours(xf), theirs(xt)
    assert tuple(yf.shape) == tuple(yt.shape)
    np.testing.assert_allclose(yf.numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    c = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    (yf * fg.tensor(c)).sum().backward()
    (yt * torch.tensor(c)).sum().backward()
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-5)


def _jacobian(fn, shape):
    """d out / d in of a linear fn, column by column from its forward on the unit vectors (float64)."""
    n = int(np.prod(shape))
    cols = [fn(fg.tensor(np.eye(n)[i].reshape(shape))).numpy().ravel() for i in range(n)]
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("call", [
    lambda x: F.interpolate(x, scale_factor=1.1, mode="nearest"),  # torch's 1-D backward takes a shortcut here
    lambda x: F.interpolate(x, scale_factor=2.1, mode="nearest"),
    lambda x: F.interpolate(x, size=3, mode="linear", align_corners=True),
    lambda x: F.interpolate(x[:, :, None].expand(1, 2, 3, 7).reshape(1, 2, 3, 7), size=(2, 3), mode="bicubic"),
    lambda x: F.pad(x, (3, -2), mode="reflect"), lambda x: F.pad(x, (6, 5), mode="replicate"),
    lambda x: F.pad(x, (-2, 4), mode="circular"),
], ids=["nearest-1.1", "nearest-2.1", "linear-down-ac", "bicubic-down", "reflect", "replicate", "circular"])
def test_gradient_is_the_transposed_forward(call):
    """Where windows overlap (downsampling, pads reflecting or wrapping onto the same pixels) the summed gradient
    is the transpose of the forward's Jacobian, in float64."""
    shape = (1, 2, 7)
    jac = _jacobian(call, shape)
    x = fg.tensor(np.random.default_rng(1).standard_normal(shape), requires_grad=True)
    y = call(x)
    c = np.random.default_rng(2).standard_normal(tuple(y.shape))
    (y * fg.tensor(c)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy().ravel(), jac.T @ c.ravel(), rtol=1e-12, atol=1e-12)


def test_overlapping_backward_has_the_same_bits_at_any_thread_count(threads):
    x = np.random.default_rng(3).standard_normal((2, 3, 37, 29)).astype(np.float32)

    def run():
        out = []
        for kw in (dict(size=(11, 7), mode="bicubic"), dict(size=(5, 9), mode="bilinear", align_corners=True)):
            t = fg.tensor(x, requires_grad=True)
            (F.interpolate(t, **kw) ** 2).sum().backward()
            out.append(t.grad.numpy().copy())
        return out

    from helpers import assert_same_bits_across_threads
    assert_same_bits_across_threads(run, threads)


def test_double_backward_gradient_penalty_matches_torch():
    """A gradient penalty (the gradient's norm, differentiated again) through the pads (reflect, circular, constant
    with crops), interpolate, pixel_shuffle, channel_shuffle and a conv: the penalty's gradient with respect to the
    conv's weight equals torch's."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 5, 6))
    w = rng.standard_normal((8, 2, 3, 3)) * 0.3

    def run(lib, fn):
        xs, ws = (fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)) if lib is fg else (
            torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True))
        h = fn.pad(xs, (1, 1, 2, 1), mode="reflect")
        h = fn.conv2d(h, ws)
        h = fn.channel_shuffle(fn.pixel_shuffle(fn.interpolate(h, scale_factor=1.5, mode="bicubic"), 2), 2)
        h = fn.pad(h, (1, 2, 0, 1), mode="circular")
        h = fn.pad(h, (2, -1, -1, 1), value=0.3)
        out = (fn.interpolate(h, size=(4, 5), mode="bilinear", align_corners=True).tanh() ** 2).sum()
        (g,) = (fg.autograd.grad if lib is fg else torch.autograd.grad)(out, [xs], create_graph=True)
        penalty = (g * g).sum()
        penalty.backward()
        return penalty.detach().numpy() if lib is torch else penalty.numpy(), ws.grad.numpy()

    p_fg, gw_fg = run(fg, F)
    p_t, gw_t = run(torch, torch.nn.functional)
    np.testing.assert_allclose(p_fg, p_t, rtol=1e-10)
    np.testing.assert_allclose(gw_fg, gw_t, rtol=1e-9, atol=1e-12)


BAD = [  # (call, error, what the message must name)
    (lambda x: F.interpolate(x, size=3, scale_factor=2.0), ValueError, "only one of size or scale_factor"),
    (lambda x: F.interpolate(x), ValueError, "size or scale_factor"),
    (lambda x: F.interpolate(x, scale_factor=2.0, align_corners=True), ValueError, "align_corners"),
    (lambda x: nn.Upsample(scale_factor=2, mode="nearest-exact", align_corners=False)(x), ValueError, "align_corners"),
    (lambda x: F.interpolate(x[0, 0], scale_factor=2.0), ValueError, "input must be 3-D .* 4-D .* or 5-D"),
    (lambda x: F.interpolate(x, scale_factor=2.0, mode="linear"), ValueError, "mode 'linear' needs a 3-D input"),
    (lambda x: F.interpolate(x[0], scale_factor=2.0, mode="bicubic"), ValueError, "mode 'bicubic' needs a 4-D input"),
    (lambda x: F.interpolate(x, size=(3, 4, 5)), ValueError, "size must have one entry per spatial dimension"),
    (lambda x: F.interpolate(x, scale_factor=0.0), ValueError, "scale_factor must be positive"),
    (lambda x: F.interpolate(x, scale_factor=0.1), ValueError, "output sizes should be greater than 0"),
    (lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest", antialias=True), ValueError, "antialias"),
    (lambda x: F.interpolate(x, scale_factor=2.0, mode="trilinear"), NotImplementedError, "mode 'trilinear'"),
    (lambda x: F.pad(x[0], (5, 0), mode="reflect"), ValueError, "reflect padding size should be less than"),
    (lambda x: nn.ReflectionPad2d((0, 0, 0, 3))(x), ValueError, "reflect padding size should be less than"),
    (lambda x: nn.ReflectionPad2d(1)(x[0, 0, 0]), ValueError, "needs a 3-D or 4-D input"),
    (lambda x: F.pad(x, (1, 1), mode="replicate", value=1.0), ValueError, "doesn't take in value"),
    (lambda x: F.pad(x, (1, 2, 3)), ValueError, "pad length must be divisible by 2"),
    (lambda x: F.pad(x, (1, 1), mode="symmetric"), ValueError, "mode must be one of"),
    (lambda x: F.pad(x, (-3, -3)), ValueError, "negative output size"),
    (lambda x: nn.ZeroPad2d((1, 2, 3))(x), ValueError, "padding must be an int or a tuple of 4 ints"),
    (lambda x: F.pixel_shuffle(x, 2), ValueError, "divisible by the square of upscale_factor"),
    (lambda x: F.pixel_shuffle(x[0, 0], 1), ValueError, "at least 3 dimensions"),
    (lambda x: F.pixel_unshuffle(x, 2), ValueError, "divisible by downscale_factor"),
    (lambda x: nn.PixelShuffle(0), ValueError, "upscale_factor"),
    (lambda x: F.channel_shuffle(x, 2), ValueError, "divisible by groups"),
    (lambda x: F.channel_shuffle(x[0, 0], 1), ValueError, "at least 3 dimensions"),
    (lambda x: F.interpolate(x.numpy(), scale_factor=2.0), TypeError, "input must be a forgegrad.Tensor"),
]


@pytest.mark.parametrize("call,error,match", BAD, ids=[b[2] for b in BAD])
def test_bad_arguments_raise_naming_them(call, error, match):
    x = fg.randn(1, 3, 3, 5)
    with pytest.raises(error, match=match):
        call(x)


def _export(model, x, tmp_path, name, **kw):
    from forgegrad import onnx as fonnx
    report = fonnx.export(model, x, str(tmp_path / f"{name}.onnx"), **kw)
    assert report.ok, report
    return report


AXES = {"input": {0: "batch", 2: "height", 3: "width"}}


@pytest.mark.parametrize("kw", [dict(scale_factor=2, mode="nearest"), dict(scale_factor=1.5, mode="nearest-exact"),
                                dict(scale_factor=(2, 3), mode="bilinear"),
                                dict(scale_factor=2, mode="bilinear", align_corners=True),
                                dict(scale_factor=0.5, mode="bicubic"),
                                dict(scale_factor=2.5, mode="bilinear", recompute_scale_factor=True),
                                dict(scale_factor=0.7, mode="nearest"),
                                dict(scale_factor=(2.3, 1.7), mode="nearest-exact"),
                                dict(scale_factor=2.3, mode="bicubic", align_corners=True)],
                         ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_interpolate_exports_with_dynamic_image_sizes(kw, tmp_path):
    class Up(nn.Module):
        def forward(self, input):
            return F.interpolate(input, **kw)

    _export(Up(), fg.randn(2, 3, 6, 8), tmp_path, "up", dynamic_axes=AXES, rtol=1e-4, atol=1e-5,
            verify_sizes=[{"batch": 1, "height": 9, "width": 5}, {"batch": 3, "height": 4, "width": 10}])


@pytest.mark.parametrize("shape,kw", [
    ((1, 2, 4, 5), dict(scale_factor=2.1, mode="nearest")),  # torch's 2-D kernel: doubled sizes take i // 2
    ((1, 2, 4, 5), dict(scale_factor=(1.1, 2.0), mode="nearest")),  # and an unchanged size is copied
    ((2, 3, 8), dict(scale_factor=1.1, mode="nearest")),  # its 1-D kernel does not copy (onnxruntime would)
    ((2, 3, 8), dict(scale_factor=1.1, mode="nearest-exact")),
    ((1, 2, 10, 9), dict(scale_factor=2.3, mode="bilinear")),  # 10 * 2.3 is 22 in double, 23 in float
    ((1, 2, 10, 9), dict(scale_factor=0.7, mode="bicubic")),  # 7 in double, 6 in onnx's shape inference
    ((1, 2, 4, 5), dict(scale_factor=(1.1, 2.0), mode="bilinear")),  # an unchanged linear axis is copied
], ids=["nearest-2.1", "nearest-1.1-2", "nearest-1d-1.1", "nearest-exact-1d-1.1", "bilinear-2.3", "bicubic-0.7",
        "bilinear-1.1"])
@pytest.mark.parametrize("opset", [13, 21])
def test_interpolate_exports_torch_sizes_and_shortcuts(shape, kw, opset, tmp_path):
    class Up(nn.Module):
        def forward(self, input):
            return F.interpolate(input, **kw)

    _export(Up(), fg.randn(*shape), tmp_path, "up", opset=opset, dynamic_axes={}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [13, 17, 19, 21])
def test_pads_export_at_every_opset_with_dynamic_sizes(opset, tmp_path):
    """Circular padding is Pad's wrap mode from opset 19, Slice + Concat before; reflect and edge pads, crops and
    the pixel rearrangements follow the image size."""
    class Pads(nn.Module):
        def __init__(self):
            super().__init__()
            self.circ, self.refl = nn.CircularPad2d((1, 2, 2, 0)), nn.ReflectionPad2d((2, 1, 0, 1))

        def forward(self, input):
            h = self.refl(self.circ(input)) + F.pad(input, (4, 2, 2, 1), mode="replicate")
            h = F.pad(h, (-1, 1, 1, -2), value=0.5)
            return F.channel_shuffle(F.pixel_unshuffle(F.pixel_shuffle(h, 1), 1), 3)

    report = _export(Pads(), fg.randn(2, 3, 6, 8), tmp_path, f"pads{opset}", opset=opset, dynamic_axes=AXES,
                     verify_sizes=[{"batch": 1, "height": 3, "width": 5}, {"batch": 2, "height": 9, "width": 4}])
    import onnx
    ops = {n.op_type for n in onnx.load(report.path).graph.node}
    modes = {a.s.decode() for n in onnx.load(report.path).graph.node for a in n.attribute if a.name == "mode"}
    assert ("wrap" in modes) == (opset >= 19)
    assert "Pad" in ops


def test_pixel_shuffle_exports_with_dynamic_sizes(tmp_path):
    class Sub(nn.Module):
        def forward(self, input):
            return F.pixel_unshuffle(F.pixel_shuffle(input, 2) * 2.0, 2)

    _export(Sub(), fg.randn(2, 8, 6, 4), tmp_path, "ps", dynamic_axes=AXES,
            verify_sizes=[{"batch": 1, "height": 2, "width": 2}, {"batch": 3, "height": 10, "width": 6}])


def _unet_block(lib, fn, cat):
    """One U-Net level as the common PyTorch U-Nets write it: down (conv, pool), up (Upsample), the upsampled map
    padded to the skip's size (odd sizes), concatenation, a reflection-padded conv."""

    class Block(lib.Module):
        def __init__(self):
            super().__init__()
            self.enc = lib.Conv2d(2, 4, 3, padding=1)
            self.pool = lib.MaxPool2d(2)
            self.mid = lib.Conv2d(4, 4, 3, padding=1)
            self.up = lib.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.pad = lib.ReflectionPad2d(1)
            self.dec = lib.Conv2d(8, 2, 3)

        def forward(self, input):
            skip = self.enc(input).relu()
            h = self.up(self.mid(self.pool(skip)).relu())
            dy, dx = skip.shape[2] - h.shape[2], skip.shape[3] - h.shape[3]
            h = fn.pad(h, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            return self.dec(self.pad(cat([h, skip], 1)))

    return Block()


def test_unet_block_trains_like_torch_and_exports(tmp_path):
    from helpers import fg_from_torch
    from forgegrad import onnx as fonnx
    torch.manual_seed(0)
    theirs, ours = _unet_block(torch.nn, torch.nn.functional, torch.cat), _unet_block(nn, F, fg.cat)
    fg_from_torch(ours, theirs)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 9, 12)).astype(np.float32)
    target = (0.5 * x[:, ::-1] + 0.2).astype(np.float32)  # learnable: a channel swap, scaled and shifted
    opt_f = fg.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(8):
        lf = ((ours(fg.tensor(x)) - fg.tensor(target)) ** 2).mean()
        lt = ((theirs(torch.tensor(x)) - torch.tensor(target)) ** 2).mean()
        np.testing.assert_allclose(lf.item(), lt.item(), rtol=1e-4)
        for o in (opt_f, opt_t):
            o.zero_grad()
        lf.backward()
        lt.backward()
        for name, p in theirs.named_parameters():
            np.testing.assert_allclose(dict(ours.named_parameters())[name].grad.numpy(), p.grad.numpy(), rtol=2e-4,
                                       atol=2e-5, err_msg=name)
        opt_f.step()
        opt_t.step()
        losses.append(lf.item())
    assert losses[-1] < 0.5 * losses[0]
    ours.eval()
    _export(ours, fg.tensor(x), tmp_path, "unet", dynamic_axes={"input": {0: "batch"}}, rtol=1e-4, atol=1e-5)
    # its pad follows the parity of the image size, which a graph cannot compute: a dynamic size is refused
    with pytest.raises(fonnx.UnsupportedOpError, match="pad amounts that change with the input's dynamic sizes"):
        fonnx.export(ours, fg.tensor(x), str(tmp_path / "unet_dyn.onnx"), dynamic_axes=AXES)


def test_interpolate_to_a_traced_size_exports_with_dynamic_image_sizes(tmp_path):
    """``size=skip.shape[2:]`` (the size-agnostic U-Net form) becomes sizes read off the input's shape."""
    class Level(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool, self.pad = nn.MaxPool2d(2), nn.ReplicationPad2d((1, 0, 0, 1))

        def forward(self, input):
            h = F.interpolate(self.pool(input), size=tuple(input.shape[2:]), mode="bicubic")
            return self.pad(fg.cat([h, input], 1))

    _export(Level(), fg.randn(2, 3, 9, 12), tmp_path, "level", dynamic_axes=AXES, rtol=1e-4, atol=1e-5,
            verify_sizes=[{"batch": 1, "height": 7, "width": 5}, {"batch": 3, "height": 16, "width": 11}])
