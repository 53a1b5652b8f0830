"""The model zoo trained on a GPU: the same model, initial weights and batches on the CPU and on cuda
give the same first losses (within float32 rounding) and the same accuracy after training on the
bundled digits; every other zoo model's forward and gradients agree on both devices. Needs a GPU and
skips with the reason without one (CI has none); tests/test_device_seam_models.py runs the same models
through the device seam on the CPU."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.cuda as fcuda
import forgegrad.nn.functional as F
from forgegrad import models, optim
from forgegrad.datasets import load_digits
from zoo_cases import OTHER, fit_run, forward_backward, gpt_run

pytestmark = pytest.mark.skipif(not fcuda.is_available(),
                                reason=f"needs a CUDA device: {fcuda.unavailable_reason() or 'available'}")

EPOCHS, BATCH = 6, 64


def _digits():
    (X_train, y_train), (X_test, y_test) = load_digits(return_split=True)  # float32 in [0, 1], int64
    return X_train, X_test, y_train, y_test


def _model_and_view(name):
    """The zoo model and how a (N, 64) batch of digits is shaped for it."""
    if name == "mlp":
        return models.MLP(64, hidden=(64,), out_features=10), lambda x: x
    if name == "lenet":
        return models.LeNet(1, 10, input_size=8, hidden=32), lambda x: x.reshape(-1, 1, 8, 8)
    if name == "lstm":  # the 8 rows of each image as a sequence of 8 steps
        return models.SequenceClassifier(8, hidden_size=32, num_classes=10), lambda x: x.reshape(-1, 8, 8)
    return models.VAE(input_dim=64, hidden=(32,), latent=4), lambda x: x


def _train(name, device):
    from forgegrad.models.vae import vae_loss
    X_train, X_test, y_train, y_test = _digits()
    fg.manual_seed(0)
    model, view = _model_and_view(name)
    model.to(device)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    order = np.random.default_rng(0)
    losses = []
    for _ in range(EPOCHS):
        perm = order.permutation(len(X_train))
        for s in range(0, len(perm), BATCH):
            idx = perm[s:s + BATCH]
            x = fg.tensor(view(X_train[idx])).to(device)
            opt.zero_grad()
            if name == "vae":
                fg.manual_seed(len(losses))  # the same noise on both devices (drawn on the host)
                recon, mu, logvar = model(x)
                loss = vae_loss(recon, x, mu, logvar)
            else:
                loss = F.cross_entropy(model(x), fg.tensor(y_train[idx]).to(device))
            loss.backward()
            opt.step()
            losses.append(loss.item())
    for p in model.parameters():
        assert p.device == device, f"{name}: a parameter left {device}"
    model.eval()
    with fg.no_grad():
        x = fg.tensor(view(X_test)).to(device)
        if name == "vae":
            score = float(((model(x)[1]).cpu().numpy() ** 2).mean())  # the test set's mean mu^2
        else:
            score = float((model(x).cpu().numpy().argmax(1) == y_test).mean())
    return losses, score


@pytest.mark.parametrize("name", ["mlp", "lenet", "lstm", "vae"])
def test_zoo_model_trains_on_the_gpu_as_on_the_cpu(name):
    cpu_losses, cpu_score = _train(name, "cpu")
    gpu_losses, gpu_score = _train(name, "cuda")
    # the first steps agree to float32 rounding; later ones drift apart as rounding differences grow
    # (on an H200, LeNet's last ten losses averaged 0.065 on cuda and 0.059 on the CPU)
    np.testing.assert_allclose(gpu_losses[:3], cpu_losses[:3], rtol=1e-4)
    np.testing.assert_allclose(np.mean(gpu_losses[-10:]), np.mean(cpu_losses[-10:]), rtol=0.05, atol=0.02)
    if name == "vae":
        np.testing.assert_allclose(gpu_score, cpu_score, rtol=0.05)
    else:
        assert cpu_score > 0.85, f"{name} learned too little on the CPU: {cpu_score:.3f}"
        assert abs(gpu_score - cpu_score) <= 0.02, (name, gpu_score, cpu_score)


def _forward_backward(name, device):
    out, _, grads = forward_backward(name, device)
    return out.cpu().numpy(), [None if g is None else g.cpu().numpy() for g in grads]


def _close(got, want, what):
    scale = max(float(np.max(np.abs(want))), 1e-30)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


@pytest.mark.parametrize("name", list(OTHER))
def test_other_zoo_models_match_the_cpu_on_the_gpu(name):
    (out_c, grads_c), (out_g, grads_g) = _forward_backward(name, "cpu"), _forward_backward(name, "cuda")
    _close(out_g, out_c, f"{name} output")
    for i, (gg, gc) in enumerate(zip(grads_g, grads_c)):
        assert (gg is None) == (gc is None)
        if gg is not None:
            _close(gg, gc, f"{name} gradient of parameter {i}")


def test_fit_evaluate_predict_train_a_model_on_the_gpu():
    # forgegrad.train.fit / evaluate / predict and the Keras-style API with the model on cuda and the
    # loader's batches on the CPU: the same epochs, losses and predictions as on the CPU (to rounding)
    (hist_c, scores_c, pred_c, keras_c, kpred_c), (hist_g, scores_g, pred_g, keras_g, kpred_g) = \
        fit_run("cpu"), fit_run("cuda")
    for got, want in ((hist_g, hist_c), (scores_g, scores_c), (keras_g, keras_c)):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(pred_g, pred_c, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(kpred_g, kpred_c, rtol=1e-4, atol=1e-5)


def test_gpt_trains_samples_and_saves_on_the_gpu(tmp_path):
    # dropout, AdamW, gradient clipping, a cosine schedule, greedy sampling and a save / load round trip
    (loss_c, norm_c, ids_c, logits_c), (loss_g, norm_g, ids_g, logits_g) = \
        gpt_run("cpu", tmp_path / "cpu.safetensors"), gpt_run("cuda", tmp_path / "gpu.safetensors")
    np.testing.assert_allclose(loss_g, loss_c, rtol=1e-4)
    np.testing.assert_allclose(norm_g, norm_c, rtol=1e-4)
    assert ids_g == ids_c
    np.testing.assert_allclose(logits_g, logits_c, rtol=1e-4, atol=1e-4)
