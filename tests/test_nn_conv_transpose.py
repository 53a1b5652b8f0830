"""nn.ConvTranspose1d/2d, F.conv_transpose1d/2d, nn.Unfold/Fold and F.unfold/fold against torch: state_dicts load
unchanged, outputs and gradients match, torch's initialisation, output_size, errors naming the argument, a conv VAE
decoder built on ConvTranspose2d that trains and exports to ONNX. The ops' generated checks (odd shapes, float64,
threads, SIMD paths, ONNX, meta, double backward) are in test_op_registry.py and test_double_backward_registry.py."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import nn
from helpers import assert_close_scaled as _close
from helpers import fg_from_torch

CONFIGS_2D = [
    dict(in_channels=3, out_channels=5, kernel_size=3),
    dict(in_channels=16, out_channels=8, kernel_size=4, stride=2, padding=1),  # DCGAN's upsampling block
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(3, 2), padding=(1, 0), output_padding=(2, 1),
         groups=2),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, output_padding=1, dilation=2, bias=False),
    dict(in_channels=6, out_channels=6, kernel_size=5, stride=2, padding=2, output_padding=1, groups=6),  # depthwise
]


def _compare(ours, theirs, x, rng, output_size=None):
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    ty = theirs(tx) if output_size is None else theirs(tx, output_size=output_size)
    fy = ours(fx) if output_size is None else ours(fx, output_size=output_size)
    assert fy.shape == tuple(ty.shape)
    _close(fy.numpy(), ty.detach().numpy(), "forward")
    gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(gy))
    (fy * fg.tensor(gy)).sum().backward()
    _close(fx.grad.numpy(), tx.grad.numpy(), "grad input")
    _close(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), "grad weight")
    if ours.bias is not None:
        _close(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), "grad bias")


@pytest.mark.parametrize("kwargs", CONFIGS_2D)
def test_conv_transpose2d_module_loads_torch_state_dict_and_matches(rng, kwargs):
    torch.manual_seed(0)
    ours, theirs = nn.ConvTranspose2d(**kwargs), torch.nn.ConvTranspose2d(**kwargs)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert repr(ours) == repr(theirs)
    fg_from_torch(ours, theirs)
    _compare(ours, theirs, rng.standard_normal((2, kwargs["in_channels"], 5, 7)).astype(np.float32), rng)


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=3, out_channels=5, kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(in_channels=4, out_channels=2, kernel_size=(4,), stride=(3,), output_padding=(2,), groups=2, bias=False),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=2, output_padding=1, dilation=2),
])
def test_conv_transpose1d_module_loads_torch_state_dict_and_matches(rng, kwargs):
    torch.manual_seed(1)
    ours, theirs = nn.ConvTranspose1d(**kwargs), torch.nn.ConvTranspose1d(**kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == repr(theirs)
    fg_from_torch(ours, theirs)
    _compare(ours, theirs, rng.standard_normal((3, kwargs["in_channels"], 11)).astype(np.float32), rng)


def test_output_size_picks_output_padding_as_torch(rng):
    torch.manual_seed(2)
    ours, theirs = nn.ConvTranspose2d(4, 3, 3, stride=3, padding=1), torch.nn.ConvTranspose2d(4, 3, 3, stride=3,
                                                                                              padding=1)
    fg_from_torch(ours, theirs)
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    for size in [(13, 16), (15, 18), [2, 3, 14, 17]]:  # the smallest, the largest, with batch and channels
        ours.zero_grad()
        theirs.zero_grad()
        _compare(ours, theirs, x, rng, output_size=size)
    with pytest.raises(ValueError, match="output_size"):
        ours(fg.tensor(x), output_size=(16, 16))
    with pytest.raises(ValueError, match="output_size"):
        ours(fg.tensor(x), output_size=(13,))
    one = nn.ConvTranspose1d(2, 2, 3, stride=2)
    assert one(fg.randn(1, 2, 5), output_size=[12]).shape == (1, 2, 12)


def test_unbatched_inputs_and_functional_forms(rng):
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 2, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    got = F.conv_transpose2d(fg.tensor(x), fg.tensor(w), fg.tensor(b), 2, 1, 1, 2, 1)
    want = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), 2, 1, 1, 2, 1)
    _close(got.numpy(), want.numpy())
    m = nn.ConvTranspose1d(4, 2, 3)
    np.testing.assert_array_equal(m(fg.tensor(x[:, 0])).numpy(), m(fg.tensor(x[None, :, 0])).numpy()[0])


def test_init_follows_torch():
    fg.manual_seed(0)
    m = nn.ConvTranspose2d(64, 32, 4, groups=2)  # fan_in = (32 / 2) * 16 = 256, torch's _calculate_fan_in
    bound = 1 / np.sqrt(16 * 16)
    w, b = m.weight.numpy(), m.bias.numpy()
    assert w.shape == (64, 16, 4, 4) and b.shape == (32,)
    assert 0.95 * bound < np.abs(w).max() <= bound and abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
    assert np.abs(b).max() <= bound


def test_float64_model_matches_torch(rng):
    torch.manual_seed(3)
    theirs = torch.nn.ConvTranspose2d(3, 4, (3, 2), stride=2, padding=1, output_padding=1).double()
    ours = nn.ConvTranspose2d(3, 4, (3, 2), stride=2, padding=1, output_padding=1).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = rng.standard_normal((2, 3, 4, 5))
    fy, ty = ours(fg.tensor(x)), theirs(torch.tensor(x))
    assert fy.dtype == fg.float64
    np.testing.assert_allclose(fy.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=(2, 3)),
                                    dict(kernel_size=3, dilation=2, padding=2, stride=(2, 1))])
def test_unfold_fold_modules_match_torch(rng, kwargs):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    tx, fx = torch.tensor(x, requires_grad=True), fg.tensor(x, requires_grad=True)
    tcols, fcols = torch.nn.Unfold(**kwargs)(tx), nn.Unfold(**kwargs)(fx)
    _close(fcols.numpy(), tcols.detach().numpy(), "unfold")
    ty, fy = torch.nn.Fold((9, 8), **kwargs)(tcols * 2), nn.Fold((9, 8), **kwargs)(fcols * 2)
    _close(fy.numpy(), ty.detach().numpy(), "fold of unfold")
    gy = rng.standard_normal(x.shape).astype(np.float32)
    ty.backward(torch.tensor(gy))
    (fy * fg.tensor(gy)).sum().backward()
    _close(fx.grad.numpy(), tx.grad.numpy(), "gradient through fold(unfold(x))")
    assert repr(nn.Unfold(**kwargs)) == repr(torch.nn.Unfold(**kwargs))
    assert repr(nn.Fold((9, 8), **kwargs)) == repr(torch.nn.Fold((9, 8), **kwargs))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="in_channels .* divisible by groups"):
        nn.ConvTranspose2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels .* divisible by groups"):
        nn.ConvTranspose1d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.ConvTranspose2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(TypeError, match="padding"):
        nn.ConvTranspose2d(3, 4, 3, padding="same")
    with pytest.raises(ValueError, match="output_padding must be >= 0"):
        nn.ConvTranspose2d(3, 4, 3, output_padding=-1)
    m = nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=2)  # torch checks this at the forward too
    with pytest.raises(ValueError, match="output_padding must be smaller than either stride or dilation"):
        m(fg.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose1d(fg.randn(1, 3, 5), fg.randn(3, 2, 3), stride=1, dilation=1, output_padding=1)
    with pytest.raises(ValueError, match="input"):
        m(fg.randn(5, 5))
    with pytest.raises(ValueError, match="input"):
        F.conv_transpose2d(fg.randn(1, 1, 3, 5, 5), fg.randn(3, 4, 3, 3))
    with pytest.raises(ValueError, match="groups"):
        F.conv_transpose2d(fg.randn(1, 3, 5, 5), fg.randn(3, 4, 3, 3), groups=2)
    with pytest.raises(ValueError, match="weight"):
        F.conv_transpose2d(fg.randn(1, 3, 5, 5), fg.randn(4, 4, 3, 3))
    with pytest.raises(TypeError, match="weight"):
        F.conv_transpose2d(fg.randn(1, 3, 5, 5), np.ones((3, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="input"):
        F.unfold(fg.randn(5, 5), 2)
    with pytest.raises(ValueError, match="output_size"):
        F.fold(fg.randn(1, 12, 21), (5, 6), (2, 3))
    with pytest.raises(ValueError, match="kernel_size"):
        F.fold(fg.randn(1, 13, 16), (5, 6), (2, 3))


def test_meta_shapes_and_flops():
    m = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
    x = fg.randn(2, 16, 5, 7).to("meta")
    assert m(x).shape == (2, 8, 10, 14) and m(x).is_meta
    from forgegrad.ops.registry import count_flops
    seen = []
    with count_flops(lambda op, out, raw, kwargs: seen.append(op.flops(out, raw, kwargs))):
        fg.ops.get("conv_transpose2d")(x, m.weight, m.bias, stride=2, padding=1)
    assert seen == [2 * 2 * 16 * 5 * 7 * 8 * 16 + 2 * 8 * 10 * 14]


def test_gradient_penalty_through_conv_transpose_matches_torch(rng):
    """create_graph=True through ConvTranspose2d (and unfold): a penalty on the input gradient, differentiated
    again into the weights, as torch."""
    torch.manual_seed(4)
    theirs = torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
    ours = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
    fg_from_torch(ours, theirs)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    grads = []
    for lib, m in ((torch, theirs), (fg, ours)):
        xt = (torch.tensor(x) if lib is torch else fg.tensor(x)).requires_grad_(True)
        y = m(xt).tanh()
        cols = (torch.nn.functional if lib is torch else F).unfold(y, 2, stride=2)
        (gx,) = lib.autograd.grad((cols * cols).sum(), [xt], create_graph=True)
        (gx * gx).sum().backward()
        grads.append([t.grad.detach().numpy() if lib is torch else t.grad.numpy() for t in (m.weight, m.bias)])
    for want, got in zip(*grads):
        _close(got, want, "second-order gradient", atol_scale=1e-5)


class _ConvDecoderVAE(nn.Module):
    """A DCGAN-style conv VAE on 16x16 images: two strided convs down, two ConvTranspose2d up."""

    def __init__(self, z=4):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 4, 2, 1), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(16 * 4 * 4, 2 * z))
        self.fc = nn.Linear(z, 16 * 4 * 4)
        self.dec = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(8, 1, 4, 2, 1),
                                 nn.Sigmoid())
        self.z = z

    def decode(self, z):
        return self.dec(self.fc(z).reshape(-1, 16, 4, 4))

    def forward(self, x, eps):
        h = self.enc(x)
        mu, logvar = h[:, :self.z], h[:, self.z:]
        return self.decode(mu + eps * (logvar * 0.5).exp()), mu, logvar


class _Decoder(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z)


def _blobs(n, rng):
    """Images of one bright Gaussian blob each, at random centres."""
    yy, xx = np.mgrid[0:16, 0:16]
    c = rng.uniform(4, 12, size=(n, 2))
    img = np.exp(-((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2) / 8.0)
    return img[:, None].astype(np.float32)


def test_conv_vae_decoder_trains_and_exports_to_onnx(rng, tmp_path):
    pytest.importorskip("onnxruntime")
    from test_onnx_common import export_and_check
    fg.manual_seed(0)
    vae = _ConvDecoderVAE()
    opt = fg.optim.Adam(vae.parameters(), lr=1e-2)
    data = fg.tensor(_blobs(64, rng))
    losses = []
    for step in range(40):
        x = data[(step % 2) * 32:(step % 2) * 32 + 32]
        recon, mu, logvar = vae(x, fg.randn(32, vae.z))
        bce = F.binary_cross_entropy(recon, x, reduction="sum")
        kld = -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum()
        loss = (bce + kld) / 32
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses
    report, proto = export_and_check(_Decoder(vae), fg.randn(2, vae.z), tmp_path, batches=(1, 2, 5))
    assert report.ok and [n.op_type for n in proto.graph.node].count("ConvTranspose") == 2


@pytest.mark.parametrize("opset", [17, 18])
def test_fold_unfold_export(tmp_path, opset):
    """fold is Col2Im from opset 18 and ConvTranspose below; unfold a one-hot Conv (dynamic batch, unbatched)."""
    pytest.importorskip("onnxruntime")
    from test_onnx_common import Lambda, export_and_check
    kw = dict(kernel_size=(3, 2), dilation=(1, 2), padding=1, stride=2)
    model = Lambda(lambda m, x: F.fold(F.unfold(x, **kw) * 3.0, (9, 8), **kw))
    _, proto = export_and_check(model, fg.randn(2, 3, 9, 8), tmp_path, opset=opset, batches=(1, 2, 4))
    ops = [n.op_type for n in proto.graph.node]
    assert ("Col2Im" in ops) == (opset >= 18) and "Conv" in ops
    unbatched = Lambda(lambda m, x: F.fold(x, (5, 4), 2))
    report = fg.onnx.export(unbatched, fg.randn(12, 12), str(tmp_path / "u.onnx"), opset=opset, dynamic_axes={})
    assert report.ok


def test_conv_transpose_export_with_dynamic_image_size(tmp_path):
    """ConvTranspose's attributes do not depend on the image size: height and width can be dynamic axes (the
    output_padding >= stride form too, which onnxruntime's ConvTranspose refuses and the export pads instead)."""
    pytest.importorskip("onnxruntime")
    fg.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(4, 2, 2, padding=0, output_padding=2, dilation=3))
    axes = {"input": {0: "batch", 2: "height", 3: "width"}}
    sizes = [{"batch": 1, "height": 9, "width": 4}, {"batch": 3, "height": 5, "width": 11}]
    report = fg.onnx.export(model, fg.randn(2, 3, 6, 7), str(tmp_path / "d.onnx"), dynamic_axes=axes,
                            verify_sizes=sizes)
    assert report.ok
