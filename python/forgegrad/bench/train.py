"""The `train` suite: whole training steps (forward, loss, backward, optimizer) of zoo models,
forgegrad against torch with the same weights, inputs and (for the VAE) the same noise.

Workloads: MLP 784-256-10 (cross-entropy, Adam) and VAE 784-400-20 (BCE + KL, Adam), batch 128.
numpy has no autograd, so it is not part of this suite. bench/bench_vae.py wraps the VAE workload
for pytest-benchmark and checks that both sides compute the same loss and gradients.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from ._timing import optional_import

BATCH = 128
INPUT, HIDDEN, LATENT = 784, 400, 20
MLP_WORKLOAD = "MLP 784-256-10 step, batch 128, Adam"
VAE_WORKLOAD = "VAE 784-400-20 step, batch 128, Adam"


def _mlp_step(torch, rng):
    from ..models import MLP
    from ._steps import classifier_step_fns
    x = rng.random((BATCH, 784), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    model = MLP(784, hidden=(256,), out_features=10)
    tm = None
    if torch is not None:
        tm = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    return MLP_WORKLOAD, classifier_step_fns(model, tm, x, y, torch)


def vae_data(rng):
    """(x, eps): a batch of binarised pixels and the reparameterisation noise both sides use."""
    x = (rng.random((BATCH, INPUT), dtype=np.float32) > 0.7).astype(np.float32)
    eps = rng.standard_normal((BATCH, LATENT)).astype(np.float32)
    return x, eps


def vae_models(torch):
    """forgegrad.models.VAE(784, (400,), 20) and (when torch is there) a torch twin with its weights."""
    from ..models import VAE
    model = VAE(INPUT, (HIDDEN,), LATENT)
    if torch is None:
        return model, None
    tnn = torch.nn

    class TorchVAE(tnn.Module):  # the same network, with forgegrad's state_dict names
        def __init__(self):
            super().__init__()
            self.encoder = tnn.Sequential(tnn.Linear(INPUT, HIDDEN), tnn.ReLU())
            self.fc_mu = tnn.Linear(HIDDEN, LATENT)
            self.fc_logvar = tnn.Linear(HIDDEN, LATENT)
            self.decoder = tnn.Sequential(tnn.Linear(LATENT, HIDDEN), tnn.ReLU(), tnn.Linear(HIDDEN, INPUT),
                                          tnn.Sigmoid())

        def forward(self, x, eps):
            h = self.encoder(x)
            mu, logvar = self.fc_mu(h), self.fc_logvar(h)
            return self.decoder(mu + eps * torch.exp(0.5 * logvar)), mu, logvar

    tmodel = TorchVAE()
    tmodel.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()})
    return model, tmodel


def torch_vae_loss(torch, recon, x, mu, logvar):
    """forgegrad.models.vae_loss in torch: (BCE summed + KL) / batch."""
    bce = torch.nn.functional.binary_cross_entropy(recon, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (bce + kl) / x.shape[0]


def _vae_step(torch, rng):
    from ..models import vae_loss
    from ..tensor import Tensor
    from ._steps import adam_step_fns
    x, eps = vae_data(rng)
    model, tmodel = vae_models(torch)
    xt = Tensor._stored(x)

    def fg_loss():
        recon, mu, logvar = model(xt, eps=eps)
        return vae_loss(recon, xt, mu, logvar)

    torch_loss = None
    if torch is not None:
        tx, te = torch.from_numpy(x), torch.from_numpy(eps)

        def torch_loss():
            recon, mu, logvar = tmodel(tx, te)
            return torch_vae_loss(torch, recon, tx, mu, logvar)

    return VAE_WORKLOAD, adam_step_fns(model, tmodel, fg_loss, torch_loss, torch)


def workloads(quick: bool = False) -> List[Workload]:
    return [Workload(MLP_WORKLOAD, ("forgegrad", "torch"),
                     lambda _threads: _mlp_step(optional_import("torch"), np.random.default_rng(0))[1]),
            Workload(VAE_WORKLOAD, ("forgegrad", "torch"),
                     lambda _threads: _vae_step(optional_import("torch"), np.random.default_rng(0))[1])]


@suite("train")
def train_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.01) if quick else (9, 0.05)
    return time_workloads(workloads(quick), threads, repeat, min_time)
