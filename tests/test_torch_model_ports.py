"""Real convolutional models ported from torch by changing the import: DCGAN generator and discriminator, a U-Net,
a MobileNetV3-style and a ResNet-18-style net. Each is defined once (tests/model_ports.py), built with torch.nn and
with forgegrad.nn, given torch's weights through load_state_dict, and checked against torch: outputs, every
parameter gradient and the running statistics in train then eval mode, and the ONNX export in onnxruntime at
another batch size. The sequence, metric and MLP models are in test_torch_model_ports_seq.py."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from model_ports import (build_pair, check_onnx, compare_step, compare_train_eval, dcgan_discriminator,
                         dcgan_generator, mobilenet_v3, resnet18, to_fg_state, unet, wgan_critic)


def _r(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_dcgan_generator_matches_torch(tmp_path):
    tm, fm = build_pair(dcgan_generator)
    z = _r(3, 8, 1, 1)
    compare_train_eval(tm, fm, [z], what="generator")
    check_onnx(tm, fm, [z], [_r(5, 8, 1, 1, seed=2)], tmp_path, "gen")


def test_dcgan_discriminator_matches_torch(tmp_path):
    tm, fm = build_pair(dcgan_discriminator)
    x = np.tanh(_r(4, 3, 32, 32))
    compare_train_eval(tm, fm, [x], what="discriminator")
    check_onnx(tm, fm, [x], [np.tanh(_r(2, 3, 32, 32, seed=3))], tmp_path, "disc")


def test_dcgan_training_step_through_both_nets_matches_torch():
    """pytorch/examples' dcgan step: D on real and on G(z).detach(), then G through D with BCELoss; Adam(0.5, 0.999)
    on each. The weights after two steps equal torch's."""
    tg, fgen = build_pair(dcgan_generator, seed=1)
    td, fdisc = build_pair(dcgan_discriminator, seed=2)
    real = np.tanh(_r(4, 3, 32, 32, seed=4))

    def run(T, G, D):
        crit = T.nn.BCELoss()
        opt_d = T.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
        opt_g = T.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
        losses = []
        for step in range(2):
            z = T.tensor(_r(4, 8, 1, 1, seed=10 + step))
            x = T.tensor(real)
            D.zero_grad()
            err_real = crit(D(x), T.full((4,), 1.0))
            err_real.backward()
            fake = G(z)
            err_fake = crit(D(fake.detach()), T.full((4,), 0.0))
            err_fake.backward()
            opt_d.step()
            G.zero_grad()
            err_g = crit(D(fake), T.full((4,), 1.0))
            err_g.backward()
            opt_g.step()
            losses += [err_real.item(), err_fake.item(), err_g.item()]
        return losses

    want = run(torch, tg, td)
    got = run(fg, fgen, fdisc)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for tm, fm in ((tg, fgen), (td, fdisc)):
        ours = {k: v.numpy() for k, v in fm.state_dict().items()}
        for k, v in to_fg_state(tm).items():
            np.testing.assert_allclose(ours[k], v, rtol=1e-3, atol=1e-4, err_msg=k)


@pytest.mark.parametrize("up", ["bilinear", "transpose"])
def test_unet_matches_torch(up, tmp_path):
    # 13 x 11: the pooled sizes round down, so the up path's F.pad grows each map back to its skip's size
    tm, fm = build_pair(unet, up=up)
    x = _r(2, 3, 13, 11)
    compare_train_eval(tm, fm, [x], what=f"unet-{up}")
    check_onnx(tm, fm, [x], [_r(3, 3, 13, 11, seed=5)], tmp_path, f"unet_{up}")


def test_mobilenet_v3_matches_torch(tmp_path):
    tm, fm = build_pair(mobilenet_v3)
    x = _r(3, 3, 24, 24)
    for m in (tm, fm):  # random draws cannot match across frameworks: train mode is compared without dropout
        m.classifier[2].p = 0.0
    compare_step(tm, fm, [x], mode="train", what="mobilenet")
    for m in (tm, fm):
        m.classifier[2].p = 0.2
    compare_step(tm, fm, [x], mode="eval", what="mobilenet")
    check_onnx(tm, fm, [x], [_r(2, 3, 24, 24, seed=6)], tmp_path, "mobilenet")


def test_mobilenet_v3_dropout_is_active_in_training():
    _, fm = build_pair(mobilenet_v3)
    fm.train()
    x = fg.tensor(_r(3, 3, 24, 24))
    fg.manual_seed(0)
    a = fm(x).numpy()
    fm.eval()
    b = fm(x).numpy()
    assert not np.allclose(a, b)


def test_resnet18_matches_torch(tmp_path):
    # 48 x 48 leaves layer4 2 x 2 maps: at 1 x 1 with batch 2 its batch norms see two values per channel and
    # torch's own float32 gradients are 5e-4 off its float64 ones (ours as far), past any float32 tolerance
    tm, fm = build_pair(resnet18)
    x = _r(4, 3, 48, 48)
    compare_train_eval(tm, fm, [x], what="resnet18")
    check_onnx(tm, fm, [x], [_r(3, 3, 48, 48, seed=7)], tmp_path, "resnet18")


def test_resnet18_cross_entropy_and_sgd_steps_match_torch():
    tm, fm = build_pair(resnet18)
    x, y = _r(4, 3, 48, 48), np.array([0, 3, 1, 4])

    def run(T, m):
        m.train()
        opt = T.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        losses = []
        for _ in range(3):
            opt.zero_grad()
            loss = T.nn.functional.cross_entropy(m(T.tensor(x)), T.tensor(y))
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    np.testing.assert_allclose(run(fg, fm), run(torch, tm), rtol=1e-4, atol=1e-5)


def test_dcgan_weights_init_with_tensor_normal_():
    """pytorch/examples' weights_init writes through ``m.weight.data.normal_(0.0, 0.02)`` (Tensor.normal_ was
    missing: AttributeError). The draw is nn.init.normal_'s from the same seed; on a leaf that requires grad it
    raises as torch's; integer tensors are refused."""
    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            m.weight.data.normal_(0.0, 0.02)
        elif classname.find("BatchNorm") != -1:
            m.weight.data.normal_(1.0, 0.02)
            m.bias.data.fill_(0)

    net = dcgan_generator(fg)
    fg.manual_seed(3)
    net.apply(weights_init)
    fg.manual_seed(3)
    want = fg.zeros(*net[0].weight.shape)
    fg.nn.init.normal_(want, 0.0, 0.02)
    np.testing.assert_array_equal(net[0].weight.numpy(), want.numpy())
    assert abs(float(net[1].weight.numpy().mean()) - 1.0) < 0.05 and not net[1].bias.numpy().any()
    assert all(abs(float(net[i].weight.numpy().std()) - 0.02) < 0.005 for i in (0, 3, 6, 9))
    u = fg.zeros(1000).uniform_(-2.0, 3.0)
    assert -2.0 <= u.numpy().min() and u.numpy().max() < 3.0 and u.numpy().std() > 1.0
    with pytest.raises(RuntimeError, match="leaf Variable"):
        net[0].weight.normal_()
    with pytest.raises(TypeError, match="floating point"):
        fg.zeros(3, dtype=fg.int64).normal_()
    with pytest.raises(RuntimeError, match="std"):
        fg.zeros(3).normal_(0.0, -1.0)


def test_wgan_gradient_penalty_matches_torch():
    """WGAN-GP: the critic's input gradient (autograd.grad with create_graph) enters the loss; the second-order
    gradients through instance norm, group norm, LeakyReLU and Mish equal torch's."""
    tm, fm = build_pair(wgan_critic)
    real, fake = _r(3, 3, 16, 16), _r(3, 3, 16, 16, seed=1)
    eps = np.random.default_rng(2).random((3, 1, 1, 1)).astype(np.float32)

    def run(T, D):
        x = (T.tensor(eps) * T.tensor(real) + (1 - T.tensor(eps)) * T.tensor(fake)).requires_grad_(True)
        g, = T.autograd.grad(D(x).sum(), x, create_graph=True)
        penalty = ((g.reshape(g.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()
        (10 * penalty - D(T.tensor(real)).mean() + D(T.tensor(fake)).mean()).backward()
        return penalty.item(), {k: p.grad for k, p in D.named_parameters()}

    (want, t_grads), (got, f_grads) = run(torch, tm), run(fg, fm)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    for k, g in t_grads.items():
        np.testing.assert_allclose(f_grads[k].numpy(), g.numpy(), rtol=1e-3, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv_padding_modes_in_a_resnet_generator_block_match_torch(mode, tmp_path):
    """CycleGAN/pix2pix-style residual blocks written with ``Conv2d(padding_mode=...)`` (it was refused: only
    'zeros'); Conv1d too, with ``padding="same"`` and a dilation (the extra element goes after, as torch's)."""
    def build(T):
        nn = T.nn

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode=mode), nn.InstanceNorm2d(3),
                                          nn.ReLU(True), nn.Conv2d(3, 3, (3, 4), padding="same", dilation=(1, 2),
                                                                   padding_mode=mode), nn.InstanceNorm2d(3))
                self.seq = nn.Conv1d(3, 2, 4, padding="same", padding_mode=mode)

            def forward(self, x):
                y = x + self.body(x)
                return y + self.seq(y.mean(2)).mean(1).unsqueeze(1).unsqueeze(1)

        return Block()

    tm, fm = build_pair(build)
    x = _r(2, 3, 7, 9)
    compare_train_eval(tm, fm, [x], what=f"padding_mode={mode}")
    check_onnx(tm, fm, [x], [_r(3, 3, 7, 9, seed=1)], tmp_path, f"pad_{mode}")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        fg.nn.Conv2d(2, 2, 3, padding_mode="mirror")
