"""Models written once as functions of the framework module (``torch`` or ``forgegrad``), and the check that runs
both copies from the same weights: outputs, losses, every parameter's gradient and the buffers, in train and eval
mode, then the forgegrad copy exported to ONNX and run in onnxruntime at another batch size against torch.

Used by tests/test_torch_model_ports*.py. Only the import differs between the two copies: each builder takes the
top-level module ``T`` and reads ``T.nn``, ``T.nn.functional`` and ``T.cat`` from it, as a ported program would.
"""
from __future__ import annotations

import numpy as np
import torch

import forgegrad as fg
from helpers import assert_close_scaled

# float32 everywhere; sums run in another order than torch's, so the tolerance scales with the largest value
ATOL, RTOL = 2e-5, 2e-4


def to_fg_state(tm):
    return {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}


def build_pair(builder, *args, seed=0, **kw):
    """(torch model, forgegrad model) holding the same weights: torch's initialisation loaded into ours unchanged."""
    torch.manual_seed(seed)
    tm = builder(torch, *args, **kw)
    fm = builder(fg, *args, **kw)
    result = fm.load_state_dict(to_fg_state(tm))
    assert not getattr(result, "missing_keys", []) and not getattr(result, "unexpected_keys", [])
    return tm, fm


def _np(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x.numpy())


def both(arrays):
    """numpy arrays -> (torch tensors, forgegrad tensors), copies on each side."""
    return [torch.from_numpy(a.copy()) for a in arrays], [fg.tensor(a.copy()) for a in arrays]


def compare_step(tm, fm, inputs, *, loss=None, mode="train", what="", atol=ATOL, rtol=RTOL):
    """One forward + backward on both copies. ``loss(T, out, torch_or_fg_inputs)`` gives the scalar to differentiate;
    default: a fixed random weighting of the output (a plain sum gives ~0 gradients through a batch norm).
    Checks the output, the loss, every parameter's gradient and every buffer (running statistics) afterwards."""
    for m in (tm, fm):
        m.train(mode == "train")
        m.zero_grad()
    t_in, f_in = both(inputs)
    t_out, f_out = tm(*t_in), fm(*f_in)
    assert tuple(f_out.shape) == tuple(t_out.shape), (what, f_out.shape, t_out.shape)
    assert_close_scaled(_np(f_out), _np(t_out), f"{what} {mode} output", atol_scale=atol, rtol=rtol)
    if loss is None:
        w = np.random.default_rng(1).standard_normal(tuple(t_out.shape)).astype(np.float32)
        t_loss, f_loss = (t_out * torch.from_numpy(w)).sum(), (f_out * fg.tensor(w)).sum()
    else:
        t_loss, f_loss = loss(torch, t_out, t_in), loss(fg, f_out, f_in)
    assert_close_scaled(_np(f_loss), _np(t_loss), f"{what} {mode} loss", atol_scale=atol, rtol=rtol)
    t_loss.backward()
    f_loss.backward()
    f_params = dict(fm.named_parameters())
    t_params = dict(tm.named_parameters())
    assert f_params.keys() == t_params.keys()
    for name, tp in t_params.items():
        assert tp.grad is not None, name
        fp = f_params[name]
        assert fp.grad is not None, f"{what} {mode}: no gradient for {name}"
        assert_close_scaled(_np(fp.grad), _np(tp.grad), f"{what} {mode} grad {name}", atol_scale=atol, rtol=rtol)
    f_bufs = dict(fm.named_buffers())
    for name, tb in tm.named_buffers():
        assert_close_scaled(_np(f_bufs[name]), _np(tb), f"{what} {mode} buffer {name}", atol_scale=atol, rtol=rtol)
    return t_out, f_out


def compare_train_eval(tm, fm, inputs, **kw):
    """Train then eval mode (eval reads the running statistics the train step updated on both sides)."""
    compare_step(tm, fm, inputs, mode="train", **kw)
    compare_step(tm, fm, inputs, mode="eval", **kw)


def check_onnx(tm, fm, example, other, tmp_path, name, *, atol=1e-4, rtol=1e-3, **export_kw):
    """Export the forgegrad copy (eval) with a dynamic batch, then run the file in onnxruntime on ``other`` (another
    batch size) and compare with torch's eval output on the same input."""
    import onnxruntime as ort

    tm.eval()
    fm.eval()
    path = str(tmp_path / f"{name}.onnx")
    report = fg.onnx.export(fm, tuple(fg.tensor(a) for a in example), path, **export_kw)
    assert report.ok, report
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(sess.get_inputs(), other)}
    assert sess.get_inputs()[0].shape[0] == "batch" or isinstance(sess.get_inputs()[0].shape[0], str)
    got = sess.run(None, feeds)[0]
    with torch.no_grad():
        want = tm(*[torch.from_numpy(a.copy()) for a in other]).numpy()
    assert got.shape == want.shape
    assert_close_scaled(got, want, f"{name} onnxruntime vs torch", atol_scale=atol, rtol=rtol)


# ---- models ----------------------------------------------------------------------------------------------------
def dcgan_generator(T, nz=8, ngf=4, nc=3):
    nn = T.nn
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())


def dcgan_discriminator(T, ndf=4, nc=3):
    nn = T.nn
    return nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False), nn.Sigmoid(), nn.Flatten(0))


def unet(T, c_in=3, width=4, groups=2, up="bilinear", n_out=2):
    nn, F = T.nn, T.nn.functional

    class Block(nn.Module):
        def __init__(self, a, b):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.GroupNorm(groups, b), nn.SiLU(),
                                     nn.Conv2d(b, b, 3, padding=1), nn.GroupNorm(groups, b), nn.SiLU())

        def forward(self, x):
            return self.net(x)

    class Up(nn.Module):
        def __init__(self, a, b):
            super().__init__()
            if up == "bilinear":
                self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                        nn.Conv2d(a, a // 2, 1))
            else:
                self.up = nn.ConvTranspose2d(a, a // 2, 2, stride=2)
            self.block = Block(a, b)

        def forward(self, x, skip):
            x = self.up(x)
            dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            return self.block(T.cat([skip, x], dim=1))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.inc = Block(c_in, w)
            self.down1 = nn.Sequential(nn.MaxPool2d(2), Block(w, 2 * w))
            self.down2 = nn.Sequential(nn.MaxPool2d(2), Block(2 * w, 4 * w))
            self.up1 = Up(4 * w, 2 * w)
            self.up2 = Up(2 * w, w)
            self.outc = nn.Conv2d(w, n_out, 1)

        def forward(self, x):
            x1 = self.inc(x)
            x2 = self.down1(x1)
            x3 = self.down2(x2)
            return self.outc(self.up2(self.up1(x3, x2), x1))

    return UNet()


def mobilenet_v3(T, width=8, n_classes=5, p_drop=0.2):
    nn = T.nn

    class SqueezeExcite(nn.Module):
        def __init__(self, c, r=4):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(c, max(c // r, 2), 1)
            self.relu = nn.ReLU(inplace=True)
            self.fc2 = nn.Conv2d(max(c // r, 2), c, 1)
            self.gate = nn.Hardsigmoid(inplace=True)

        def forward(self, x):
            return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))

    def conv_bn(a, b, k, s, groups=1, act=None):
        layers = [nn.Conv2d(a, b, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(b)]
        return nn.Sequential(*layers, *([act] if act is not None else []))

    class InvertedResidual(nn.Module):
        def __init__(self, a, exp, b, k, s, se, hs):
            super().__init__()
            act = nn.Hardswish if hs else nn.ReLU
            self.use_res = s == 1 and a == b
            layers = [] if exp == a else [conv_bn(a, exp, 1, 1, act=act())]
            layers.append(conv_bn(exp, exp, k, s, groups=exp, act=act()))
            if se:
                layers.append(SqueezeExcite(exp))
            layers.append(conv_bn(exp, b, 1, 1))
            self.block = nn.Sequential(*layers)

        def forward(self, x):
            y = self.block(x)
            return x + y if self.use_res else y

    class MobileNetV3(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.features = nn.Sequential(
                conv_bn(3, w, 3, 2, act=nn.Hardswish()),
                InvertedResidual(w, w, w, 3, 1, True, False),
                InvertedResidual(w, 4 * w, 2 * w, 3, 2, False, False),
                InvertedResidual(2 * w, 3 * w, 2 * w, 5, 1, True, True),
                InvertedResidual(2 * w, 6 * w, 3 * w, 5, 2, True, True),
                conv_bn(3 * w, 6 * w, 1, 1, act=nn.Hardswish()))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Linear(6 * w, 8 * w), nn.Hardswish(inplace=True),
                                            nn.Dropout(p_drop, inplace=True), nn.Linear(8 * w, n_classes))

        def forward(self, x):
            return self.classifier(T.flatten(self.avgpool(self.features(x)), 1))

    return MobileNetV3()


def resnet18(T, width=4, n_classes=5):
    nn = T.nn

    class BasicBlock(nn.Module):
        def __init__(self, a, b, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(a, b, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(b)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(b, b, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(b)
            self.downsample = None
            if stride != 1 or a != b:
                self.downsample = nn.Sequential(nn.Conv2d(a, b, 1, stride, bias=False), nn.BatchNorm2d(b))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(w)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            chans = [w, 2 * w, 4 * w, 8 * w]
            layers, a = [], w
            for i, c in enumerate(chans):
                s = 1 if i == 0 else 2
                layers.append(nn.Sequential(BasicBlock(a, c, s), BasicBlock(c, c, 1)))
                a = c
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8 * w, n_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(T.flatten(self.avgpool(x), 1))

    return ResNet()


def audio_ctc(T, n_mels=8, chans=8, hidden=6, n_classes=5):
    """Conv1d front end, InstanceNorm1d, MaxPool1d, a BiLSTM and per-frame log-probabilities (T, N, C) for CTC."""
    nn, F = T.nn, T.nn.functional

    class SpeechNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.front = nn.Sequential(nn.Conv1d(n_mels, chans, 3, padding=1), nn.InstanceNorm1d(chans, affine=True),
                                       nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(chans, chans, 3, padding=1),
                                       nn.InstanceNorm1d(chans), nn.ReLU())
            self.rnn = nn.LSTM(chans, hidden, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(2 * hidden, n_classes)

        def forward(self, x):
            h = self.front(x).transpose(1, 2)
            h, _ = self.rnn(h)
            return F.log_softmax(self.fc(h), dim=-1).transpose(0, 1)

    return SpeechNet()


def siamese(T, emb=6):
    """A shared embedding net applied to anchor, positive and negative; the three L2-normalised embeddings stacked."""
    nn, F = T.nn, T.nn.functional

    class Siamese(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                       nn.Conv2d(4, 8, 3, padding=1), nn.ELU(), nn.AdaptiveMaxPool2d(2),
                                       nn.Flatten(), nn.Linear(32, emb))

        def forward(self, a, p, n):
            return T.stack([F.normalize(self.embed(x), dim=1) for x in (a, p, n)])

    return Siamese()


def espcn(T, r=3):
    """ESPCN super-resolution: convolutions in low resolution, PixelShuffle to r times the size."""
    nn = T.nn
    return nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.Tanh(), nn.Conv2d(8, 6, 3, padding=1), nn.Tanh(),
                         nn.Conv2d(6, r * r, 3, padding=1), nn.PixelShuffle(r))


def activation_mlp(T):
    """An MLP through GLU, PReLU (per-feature and shared), Mish and a few more of the added activations."""
    nn = T.nn
    return nn.Sequential(nn.Linear(6, 16), nn.GLU(), nn.PReLU(8), nn.Linear(8, 12), nn.Mish(), nn.Linear(12, 10),
                         nn.PReLU(), nn.Hardswish(), nn.Linear(10, 10), nn.SELU(), nn.Linear(10, 10), nn.CELU(0.7),
                         nn.Linear(10, 8), nn.Softsign(), nn.Linear(8, 8), nn.ReLU6(), nn.Linear(8, 3))


def wgan_critic(T):
    """A WGAN-GP critic (no batch norm, as the paper asks): InstanceNorm2d, GroupNorm, LeakyReLU and Mish."""
    nn = T.nn
    return nn.Sequential(nn.Conv2d(3, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 8, 4, 2, 1),
                         nn.InstanceNorm2d(8, affine=True), nn.LeakyReLU(0.2), nn.Conv2d(8, 8, 3, 1, 1),
                         nn.GroupNorm(2, 8), nn.Mish(), nn.Conv2d(8, 1, 4, 1, 0), nn.Flatten(0))
