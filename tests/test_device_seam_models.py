"""The model zoo on the seam test device (tests/device_seam_helpers.py): trained or run there, every
model gives the CPU's bits, and a training step copies nothing back to the host."""
from __future__ import annotations

import numpy as np
import pytest

import device_seam_helpers as seam
from zoo_cases import OTHER, fit_run, forward_backward, gpt_run
import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import models, optim

DEV = seam.DEVICE
host = seam.host


@pytest.fixture(autouse=True, scope="module")
def _seam_device():
    with seam.registered():
        yield


def _same(a, b):
    np.testing.assert_array_equal(host(a), host(b))


# ---- the zoo trains on the device to the CPU's bits ----------------------------------------------------------
def _zoo(name):
    from forgegrad.models.vae import vae_loss
    rng = np.random.default_rng(0)
    if name == "mlp":
        return models.MLP(12, hidden=(16,), out_features=3), rng.standard_normal((8, 12)), "ce"
    if name == "lenet":
        return models.LeNet(1, 4, input_size=8, hidden=16), rng.standard_normal((4, 1, 8, 8)), "ce"
    if name == "lstm":
        return models.SequenceClassifier(5, hidden_size=6, num_classes=3), rng.standard_normal((4, 7, 5)), "ce"
    return models.VAE(input_dim=12, hidden=(8,), latent=3), rng.random((6, 12)), vae_loss


def _train_zoo(name, device, steps=3):
    fg.manual_seed(0)
    model, x, loss_kind = _zoo(name)
    model.to(device)
    opt = optim.Adam(model.parameters(), lr=0.01)
    x = fg.tensor(x.astype(np.float32)).to(device)
    y = fg.tensor(np.arange(x.shape[0]) % 3).to(device)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        if loss_kind == "ce":
            loss = F.cross_entropy(model(x), y)
        else:
            recon, mu, logvar = model(x)
            loss = loss_kind(recon, x, mu, logvar, fused=False)  # the registry ops, on both devices
        loss.backward()
        opt.step()
        losses.append(loss)
    return model, [loss.item() for loss in losses]


@pytest.mark.parametrize("name", ["mlp", "lenet", "lstm", "vae"])
def test_zoo_models_train_on_the_device_as_on_the_cpu(name):
    ref, ref_losses = _train_zoo(name, "cpu")
    before = seam.BACKEND.host_copies
    got, losses = _train_zoo(name, DEV)
    # the only host copies: each step's loss.item() at the end (a step itself copies nothing back)
    assert seam.BACKEND.host_copies - before == len(losses)
    assert losses == ref_losses
    for p, r in zip(got.parameters(), ref.parameters()):
        assert p.device == DEV
        np.testing.assert_array_equal(host(p), host(r))
    with fg.no_grad():  # evaluation without a graph: the inference kernels on the device
        got.eval()
        ref.eval()
        x = _zoo(name)[1].astype(np.float32)
        out_ref, out_dev = ref(fg.tensor(x)), got(fg.tensor(x).to(DEV))
        if name == "vae":
            out_ref, out_dev = out_ref[1], out_dev[1]  # mu (the sample is random)
        _same(out_dev, out_ref)


@pytest.mark.parametrize("name", list(OTHER))
def test_other_zoo_models_run_on_the_device_as_on_the_cpu(name):
    (out_c, inf_c, grads_c), (out_s, inf_s, grads_s) = forward_backward(name, "cpu"), forward_backward(name, DEV)
    assert out_s.device == DEV and inf_s.device == DEV
    _same(out_s, out_c)
    _same(inf_s, inf_c)
    for gs, gc in zip(grads_s, grads_c):
        assert (gs is None) == (gc is None)
        if gs is not None:
            assert gs.device == DEV
            _same(gs, gc)


def test_char_lstm_generates_the_same_tokens_on_the_device():
    fg.manual_seed(0)
    model = models.create("char_lstm", vocab_size=11, embed_dim=8, hidden_size=8)
    fg.manual_seed(1)
    want = model.generate([1, 2], 8)
    model.to(DEV)
    fg.manual_seed(1)
    assert model.generate([1, 2], 8) == want


# ---- fit / evaluate / predict with the model on the device ----------------------------------------------------
def test_fit_evaluate_predict_move_cpu_batches_to_the_model_device():
    on_cpu, on_device = fit_run("cpu"), fit_run(DEV)
    for got, want in zip(on_device[:2] + on_device[3:4], on_cpu[:2] + on_cpu[3:4]):
        assert got == want
    np.testing.assert_array_equal(on_device[2], on_cpu[2])
    np.testing.assert_array_equal(on_device[4], on_cpu[4])


def test_gpt_trains_samples_and_saves_on_the_device_as_on_the_cpu(tmp_path):
    on_cpu, on_device = gpt_run("cpu", tmp_path / "cpu.safetensors"), gpt_run(DEV, tmp_path / "dev.safetensors")
    # off the CPU, clip_grad_norm_ sums the norms with the registry's ops, not the CPU's fused kernel:
    # the norms (and so the clipped steps) may differ in the last bit
    for got, want in zip(on_device[:2] + on_device[3:], on_cpu[:2] + on_cpu[3:]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert on_device[2] == on_cpu[2]
