"""VAE training step (784-400-20, batch 128, Adam, BCE + KL), forgegrad vs torch, 1 thread pinned on
both sides (and numpy's BLAS through threadpoolctl).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_vae.py --benchmark-only --benchmark-group-by=group

Both sides start from the same weights and use the same fixed eps, so they do the same arithmetic.
Target: forgegrad's step at least 1.3x faster than torch's.

On a machine shared with other work, wall-clock rounds are noisy (pytest-benchmark runs one side
after the other); with one thread pinned, CPU time is the steadier measure:
``--benchmark-timer=time.process_time``. ``forgegrad bench train`` times the same step in
interleaved rounds.
"""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import optim
from forgegrad.models import VAE, vae_loss

BATCH, INPUT, HIDDEN, LATENT = 128, 784, 400, 20


pytestmark = pytest.mark.usefixtures("one_thread")  # bench/conftest.py


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = (rng.random((BATCH, INPUT), dtype=np.float32) > 0.7).astype(np.float32)  # binarised pixels
    eps = rng.standard_normal((BATCH, LATENT)).astype(np.float32)
    return x, eps


class TorchVAE(torch.nn.Module):
    """The same network as forgegrad.models.VAE(784, (400,), 20), with its state_dict names."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(INPUT, HIDDEN), torch.nn.ReLU())
        self.fc_mu = torch.nn.Linear(HIDDEN, LATENT)
        self.fc_logvar = torch.nn.Linear(HIDDEN, LATENT)
        self.decoder = torch.nn.Sequential(torch.nn.Linear(LATENT, HIDDEN), torch.nn.ReLU(),
                                           torch.nn.Linear(HIDDEN, INPUT), torch.nn.Sigmoid())

    def forward(self, x, eps):
        h = self.encoder(x)
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        return self.decoder(mu + eps * torch.exp(0.5 * logvar)), mu, logvar


def torch_vae_loss(recon, x, mu, logvar):
    bce = torch.nn.functional.binary_cross_entropy(recon, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (bce + kl) / x.shape[0]


def _models():
    fg.manual_seed(0)
    model = VAE(INPUT, (HIDDEN,), LATENT)
    tmodel = TorchVAE()
    tmodel.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()})
    return model, tmodel


def test_vae_train_step_forgegrad(benchmark, data):
    benchmark.group = "vae-train-step 784-400-20 b128 adam 1 thread"
    x, eps = data
    model, _ = _models()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    xt = fg.tensor(x)

    def step():
        recon, mu, logvar = model(xt, eps=eps)
        loss = vae_loss(recon, xt, mu, logvar)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    loss = benchmark(step)
    assert np.isfinite(loss.item())


def test_vae_train_step_torch(benchmark, data):
    benchmark.group = "vae-train-step 784-400-20 b128 adam 1 thread"
    x, eps = data
    _, tmodel = _models()
    opt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
    xt, et = torch.from_numpy(x), torch.from_numpy(eps)

    def step():
        recon, mu, logvar = tmodel(xt, et)
        loss = torch_vae_loss(recon, xt, mu, logvar)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    loss = benchmark(step)
    assert np.isfinite(loss.item())


def test_vae_step_computes_what_torch_computes(data):
    """Same weights, same eps: the same loss and gradients, so the timings compare equal work."""
    x, eps = data
    model, tmodel = _models()
    xt = fg.tensor(x)
    recon, mu, logvar = model(xt, eps=eps)
    vae_loss(recon, xt, mu, logvar).backward()
    trecon, tmu, tlogvar = tmodel(torch.from_numpy(x), torch.from_numpy(eps))
    tloss = torch_vae_loss(trecon, torch.from_numpy(x), tmu, tlogvar)
    tloss.backward()
    tgrads = dict(tmodel.named_parameters())
    for k, p in model.named_parameters():
        # sums over 128 samples x 784 pixels in float32, accumulated in a different order than torch's
        np.testing.assert_allclose(p.grad.numpy(), tgrads[k].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
