"""forgegrad.models: the zoo registry, MLP, the VAE (reparameterisation, ELBO vs torch, training on
the real digits) and the models that need layers from other branches (built when present)."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.models as zoo
from forgegrad import nn
from forgegrad.cli._data import _digits
from forgegrad.models import VAE, VAELoss, vae_loss
from helpers import load_example, torch_from_fg


# ---- registry ------------------------------------------------------------------------------------
def test_available_lists_every_model():
    assert zoo.available() == sorted(["mlp", "lenet", "lenet8", "lstm", "gru", "char_lstm", "vae", "conv_vae", "gpt",
                                      "transformer_classifier"])


def test_create_mlp_remembers_its_config_and_rebuilds():
    fg.manual_seed(0)
    m = zoo.create("mlp", in_features=64, hidden=(32, 16), out_features=10)
    assert isinstance(m, zoo.MLP)
    assert m(fg.zeros(5, 64)).shape == (5, 10)
    cfg = zoo.config_of(m)
    assert cfg == {"name": "mlp", "kwargs": {"in_features": 64, "hidden": [32, 16], "out_features": 10}}
    m2 = zoo.from_config(cfg)
    assert [k for k in m2.state_dict()] == [k for k in m.state_dict()]
    assert all(a.shape == b.shape for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


def test_unknown_model_name_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        zoo.create("mpl")
    msg = str(e.value)
    assert "'mpl'" in msg and "did you mean 'mlp'" in msg
    for name in zoo.available():
        assert name in msg


def test_bad_kwargs_are_value_errors_naming_the_arguments():
    with pytest.raises(ValueError, match="unexpected keyword argument 'units'.*in_features"):
        zoo.create("mlp", in_features=4, units=3)
    with pytest.raises(ValueError, match="missing a required argument: 'in_features'"):
        zoo.create("mlp")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        zoo.create("mlp", in_features=4, activation="swish")
    with pytest.raises(ValueError, match="hidden sizes must be positive ints"):
        zoo.create("mlp", in_features=4, hidden=(8, 0))
    with pytest.raises(ValueError, match="dropout must be in"):
        zoo.create("mlp", in_features=4, dropout=1.0)
    with pytest.raises(ValueError, match="not built by forgegrad.models.create"):
        zoo.config_of(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="must be a dict"):
        zoo.from_config(["mlp"])


_TINY = {
    "lenet": ({"input_size": 28}, lambda: fg.rand(2, 1, 28, 28), (2, 10)),
    "lenet8": ({}, lambda: fg.rand(2, 1, 8, 8), (2, 10)),
    "lstm": ({"input_size": 8, "hidden_size": 16}, lambda: fg.rand(2, 8, 8), (2, 10)),
    "gru": ({"input_size": 8, "hidden_size": 16}, lambda: fg.rand(2, 8, 8), (2, 10)),
    "char_lstm": ({"vocab_size": 11, "embed_dim": 8, "hidden_size": 16}, lambda: fg.randint(0, 11, (2, 5)), (2, 5, 11)),
    "conv_vae": ({"image_size": 8, "latent": 4, "hidden": 16}, lambda: fg.rand(2, 1, 8, 8), (2, 1, 8, 8)),
}


@pytest.mark.parametrize("name", sorted(_TINY))
def test_models_with_conv_and_recurrent_layers_build_run_and_backprop(name):
    kwargs, make_input, out_shape = _TINY[name]
    fg.manual_seed(0)
    model = zoo.create(name, **kwargs)
    out = model(make_input())
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == out_shape
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    if name == "char_lstm":
        ids = model.generate([1, 2], length=4)
        assert len(ids) == 6 and all(0 <= i < 11 for i in ids)
    if name == "conv_vae":
        assert model.sample(3).shape == (3, 1, 8, 8)
        assert model.reconstruct(make_input()).shape == (2, 1, 8, 8)


def test_conv_vae_upsampling_is_nearest_neighbour_with_summed_gradients(rng):
    from forgegrad.models.vae import _Upsample2x
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    t = fg.tensor(x, requires_grad=True)
    y = _Upsample2x()(t)
    np.testing.assert_array_equal(y.numpy(), x.repeat(2, axis=2).repeat(2, axis=3))
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    np.testing.assert_allclose(t.grad.numpy(), g.reshape(2, 3, 4, 2, 5, 2).sum(axis=(3, 5)), rtol=1e-6, atol=1e-6)


# ---- MLP -----------------------------------------------------------------------------------------
def test_mlp_matches_torch_with_the_same_weights(rng):
    fg.manual_seed(1)
    m = zoo.MLP(13, hidden=(17, 7), out_features=5, activation="tanh")
    t = torch.nn.Sequential(torch.nn.Linear(13, 17), torch.nn.Tanh(), torch.nn.Linear(17, 7), torch.nn.Tanh(),
                            torch.nn.Linear(7, 5))
    torch_from_fg(t, m)
    x = rng.standard_normal((3, 13)).astype(np.float32)
    np.testing.assert_allclose(m(fg.tensor(x)).numpy(), t(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_mlp_dropout_only_in_training():
    fg.manual_seed(2)
    m = zoo.MLP(8, hidden=(64,), out_features=3, dropout=0.5)
    assert any(isinstance(layer, nn.Dropout) for layer in m)
    x = fg.ones(4, 8)
    m.eval()
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())
    m.train()
    assert not np.array_equal(m(x).numpy(), m(x).numpy())


# ---- VAE: parts ----------------------------------------------------------------------------------
def test_vae_shapes_and_explicit_eps_make_forward_deterministic(rng):
    fg.manual_seed(3)
    m = VAE(input_dim=64, hidden=(32,), latent=5)
    x = fg.tensor(rng.random((6, 64), dtype=np.float32))
    eps = rng.standard_normal((6, 5)).astype(np.float32)
    r1, mu, logvar = m(x, eps=eps)
    r2, _, _ = m(x, eps=eps)
    assert r1.shape == (6, 64) and mu.shape == (6, 5) and logvar.shape == (6, 5)
    np.testing.assert_array_equal(r1.numpy(), r2.numpy())
    z = m.reparameterize(mu, logvar, eps)
    np.testing.assert_allclose(z.numpy(), mu.numpy() + eps * np.exp(0.5 * logvar.numpy()), rtol=1e-6, atol=1e-6)
    # 8x8 images are flattened
    assert m(fg.tensor(x.numpy().reshape(6, 8, 8)), eps=eps)[0].shape == (6, 64)


def test_vae_forward_and_gradients_match_torch(rng):
    fg.manual_seed(4)
    m = VAE(input_dim=29, hidden=(17, 11), latent=3)
    t = _TorchVAE(29, (17, 11), 3)
    torch_from_fg(t, m)
    x = rng.random((5, 29), dtype=np.float32)
    eps = rng.standard_normal((5, 3)).astype(np.float32)
    out = m(fg.tensor(x), eps=eps)
    tout = t(torch.from_numpy(x), torch.from_numpy(eps))
    for a, b in zip(out, tout):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
    vae_loss(*out[:1], fg.tensor(x), *out[1:]).backward()
    _torch_vae_loss(tout[0], torch.from_numpy(x), tout[1], tout[2], 1.0, "bce").backward()
    tgrads = dict(t.named_parameters())
    for k, p in m.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tgrads[k].grad.numpy(), rtol=1e-5, atol=1e-5, err_msg=k)
    rec = m.reconstruct(x).numpy()
    with torch.no_grad():
        h = t.encoder(torch.from_numpy(x))
        np.testing.assert_allclose(rec, t.decoder(t.fc_mu(h)).numpy(), rtol=1e-5, atol=1e-6)


class _TorchVAE(torch.nn.Module):
    """torch twin of forgegrad.models.VAE with the same state_dict names."""

    def __init__(self, d, hidden, k):
        super().__init__()
        enc, prev = [], d
        for h in hidden:
            enc += [torch.nn.Linear(prev, h), torch.nn.ReLU()]
            prev = h
        self.encoder = torch.nn.Sequential(*enc)
        self.fc_mu, self.fc_logvar = torch.nn.Linear(prev, k), torch.nn.Linear(prev, k)
        dec, prev = [], k
        for h in reversed(hidden):
            dec += [torch.nn.Linear(prev, h), torch.nn.ReLU()]
            prev = h
        self.decoder = torch.nn.Sequential(*dec, torch.nn.Linear(prev, d), torch.nn.Sigmoid())

    def forward(self, x, eps):
        h = self.encoder(x)
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        return self.decoder(mu + eps * torch.exp(0.5 * logvar)), mu, logvar


def test_vae_noise_comes_from_the_seeded_generator(rng):
    m = VAE(input_dim=16, hidden=(8,), latent=3)
    x = fg.tensor(rng.random((4, 16), dtype=np.float32))
    fg.manual_seed(7)
    a = m(x)[0].numpy().copy()
    s1 = m.sample(3).numpy().copy()
    fg.manual_seed(7)
    b = m(x)[0].numpy()
    s2 = m.sample(3).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(m(x)[0].numpy(), a)  # a fresh draw differs


def test_vae_input_and_eps_errors():
    m = VAE(input_dim=16, hidden=(8,), latent=3)
    with pytest.raises(ValueError, match=r"expected input \(N, 16\)"):
        m(fg.zeros(2, 15))
    with pytest.raises(ValueError, match=r"eps must have shape \(2, 3\)"):
        m(fg.zeros(2, 16), eps=np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="n must be a positive int"):
        m.sample(0)
    with pytest.raises(ValueError, match="hidden needs at least one"):
        VAE(input_dim=4, hidden=())
    with pytest.raises(ValueError, match="latent must be a positive int"):
        VAE(input_dim=4, latent=0)


def _torch_vae_loss(recon, x, mu, logvar, beta, reconstruction):
    if reconstruction == "bce":
        rec = torch.nn.functional.binary_cross_entropy(recon, x, reduction="sum")
    else:
        rec = torch.nn.functional.mse_loss(recon, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (rec + beta * kl) / x.shape[0]


@pytest.mark.parametrize("reconstruction", ["bce", "mse"])
@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_vae_loss_and_gradients_match_torch(rng, reconstruction, beta):
    n, d, k = 7, 13, 3
    recon = rng.uniform(0.02, 0.98, (n, d)).astype(np.float32)
    x = rng.random((n, d), dtype=np.float32)
    mu = rng.standard_normal((n, k)).astype(np.float32)
    logvar = (0.5 * rng.standard_normal((n, k))).astype(np.float32)
    fr, fm, fl = (fg.tensor(a.copy(), requires_grad=True) for a in (recon, mu, logvar))
    tr, tm, tl = (torch.tensor(a, requires_grad=True) for a in (recon, mu, logvar))
    out = vae_loss(fr, fg.tensor(x), fm, fl, beta=beta, reconstruction=reconstruction)
    ref = _torch_vae_loss(tr, torch.tensor(x), tm, tl, beta, reconstruction)
    assert out.shape == ()
    # sums over n*d terms in float32: rtol 1e-5 covers the different summation order
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-5)
    out.backward()
    ref.backward()
    for f, t in ((fr, tr), (fm, tm), (fl, tl)):
        np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reconstruction", ["bce", "mse"])
def test_vae_loss_gradient_in_the_target_and_saturated_probabilities_match_torch(rng, reconstruction):
    # recon exactly 0 and 1 hit the -100 clamp of the log terms, as in torch's binary_cross_entropy
    recon = np.array([[0.0, 1.0, 0.3], [1.0, 0.5, 0.0]], np.float32)
    x = np.array([[0.2, 0.9, 1.0], [0.0, 0.5, 0.7]], np.float32)
    mu = rng.standard_normal((2, 2)).astype(np.float32)
    logvar = rng.standard_normal((2, 2)).astype(np.float32)
    fr, fx = fg.tensor(recon.copy(), requires_grad=True), fg.tensor(x.copy(), requires_grad=True)
    tr, tx = torch.tensor(recon, requires_grad=True), torch.tensor(x, requires_grad=True)
    out = vae_loss(fr, fx, fg.tensor(mu), fg.tensor(logvar), beta=0.5, reconstruction=reconstruction)
    ref = _torch_vae_loss(tr, tx, torch.tensor(mu), torch.tensor(logvar), 0.5, reconstruction)
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-6)
    out.backward()
    ref.backward()
    np.testing.assert_allclose(fr.grad.numpy(), tr.grad.numpy(), rtol=1e-6, atol=1e-6)
    if reconstruction == "mse":
        np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=1e-6)
    else:
        # d/dx is -(log p - log(1 - p)): torch leaves it unclamped (+-inf where p is 0 or 1); forgegrad
        # differentiates the clamped value it returned (+-100 per log term), so it stays finite
        sat = (recon == 0) | (recon == 1)
        np.testing.assert_allclose(fx.grad.numpy()[~sat], tx.grad.numpy()[~sat], rtol=1e-6, atol=1e-6)
        assert np.all(np.isfinite(fx.grad.numpy())) and np.all(np.isinf(tx.grad.numpy()[sat]))


def test_vae_loss_module_and_errors():
    recon, x = fg.full((2, 4), 0.5), fg.ones(2, 4)
    mu, logvar = fg.zeros(2, 3), fg.zeros(2, 3)
    expected = 4 * np.log(2.0)  # KL of N(0, 1) against itself is 0
    assert VAELoss()((recon, mu, logvar), x).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="reconstruction must be 'bce' or 'mse'"):
        vae_loss(recon, x, mu, logvar, reconstruction="l1")
    with pytest.raises(ValueError, match="beta must be"):
        vae_loss(recon, x, mu, logvar, beta=-1)
    with pytest.raises(ValueError, match="x has shape"):
        vae_loss(recon, fg.ones(2, 5), mu, logvar)
    with pytest.raises(ValueError, match="reconstruction must be"):
        VAELoss(reconstruction="kl")
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        vae_loss(fg.full((2, 4), 1.5), x, mu, logvar)
    with pytest.raises(TypeError, match="float32"):
        vae_loss(recon, fg.tensor(np.ones((2, 4), np.int64)), mu, logvar)
    assert vae_loss(fg.full((2, 4), 1.5), x, mu, logvar, reconstruction="mse").item() == pytest.approx(0.25 * 4)


# ---- VAE: training on the real digits ---------------------------------------------------------------
def _adam(params, lr):
    from forgegrad import optim
    return optim.Adam(params, lr=lr)


@pytest.fixture(scope="module")
def trained_vae():
    x, _ = _digits()
    perm = np.random.default_rng(0).permutation(len(x))
    x_test, x_train = x[perm[:300]], x[perm[300:]]
    fg.manual_seed(0)
    model = VAE(input_dim=64, hidden=(64,), latent=8)
    opt = _adam(model.parameters(), 5e-3)
    order_rng = np.random.default_rng(1)
    epoch_losses = []
    for _ in range(6):
        order, total = order_rng.permutation(len(x_train)), 0.0
        for i in range(0, len(order), 64):
            xb = fg.tensor(x_train[order[i:i + 64]])
            recon, mu, logvar = model(xb)
            loss = vae_loss(recon, xb, mu, logvar)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        epoch_losses.append(total / len(x_train))
    return model, x_train, x_test, epoch_losses


def test_vae_elbo_decreases_on_digits(trained_vae):
    _, _, _, losses = trained_vae
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 5.0  # -ELBO per digit drops by several nats
    assert losses[-1] < losses[len(losses) // 2] < losses[0]


def test_vae_samples_have_the_right_shape_and_range(trained_vae):
    model = trained_vae[0]
    s = model.sample(25)
    assert s.shape == (25, 64) and s.dtype == np.float32
    assert s.numpy().min() >= 0.0 and s.numpy().max() <= 1.0
    assert not s.requires_grad


def test_vae_reconstructions_beat_the_mean_image_on_held_out_digits(trained_vae):
    model, x_train, x_test, _ = trained_vae
    recon = model.reconstruct(x_test).numpy()
    mse = ((recon - x_test) ** 2).mean()
    baseline = ((x_train.mean(axis=0) - x_test) ** 2).mean()
    assert recon.shape == x_test.shape
    assert mse < 0.75 * baseline, (mse, baseline)


# ---- examples/vae_digits.py ------------------------------------------------------------------------------
def test_vae_digits_example_writes_the_png(tmp_path, capsys):
    mod = load_example("vae_digits")
    out = tmp_path / "grid.png"
    assert mod.main(["--epochs", "2", "--hidden", "32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "test reconstruction MSE" in text and f"wrote {out}" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vae_digits_example_without_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    import sys
    mod = load_example("vae_digits")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert mod.main(["--epochs", "1", "--out", str(tmp_path / "x.png")]) == 1
    assert 'pip install "forgegrad[plot]"' in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
