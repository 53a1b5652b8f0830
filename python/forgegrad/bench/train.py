"""The `train` suite: whole training steps (forward, loss, backward, optimizer) of zoo models,
forgegrad against torch with the same weights, inputs and (for the VAE) the same noise.

Workloads: MLP 784-256-10 (cross-entropy, Adam) and VAE 784-400-20 (BCE + KL, Adam), batch 128.
numpy has no autograd, so it is not part of this suite.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from . import suite
from ._timing import compare, optional_import, pinned_threads

BATCH = 128


def _mlp_step(torch, rng):
    from ..models import MLP
    from ._steps import classifier_step_fns
    x = rng.random((BATCH, 784), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    model = MLP(784, hidden=(256,), out_features=10)
    tm = None
    if torch is not None:
        tm = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    return "MLP 784-256-10 step, batch 128, Adam", classifier_step_fns(model, tm, x, y, torch)


def _vae_step(torch, rng):
    from .. import optim
    from ..models import VAE, vae_loss
    from ..tensor import Tensor
    x = (rng.random((BATCH, 784), dtype=np.float32) > 0.7).astype(np.float32)
    eps = rng.standard_normal((BATCH, 20)).astype(np.float32)
    model = VAE(784, (400,), 20)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    xt = Tensor(x)

    def fg_step():
        recon, mu, logvar = model(xt, eps=eps)
        loss = vae_loss(recon, xt, mu, logvar)
        opt.zero_grad()
        loss.backward()
        opt.step()

    fns = {"forgegrad": fg_step, "torch": None}
    if torch is not None:
        F = torch.nn.functional
        enc, fc_mu, fc_lv = torch.nn.Linear(784, 400), torch.nn.Linear(400, 20), torch.nn.Linear(400, 20)
        dec1, dec2 = torch.nn.Linear(20, 400), torch.nn.Linear(400, 784)
        tmods = {"encoder.0": enc, "fc_mu": fc_mu, "fc_logvar": fc_lv, "decoder.0": dec1, "decoder.2": dec2}
        state = model.state_dict()
        params = []
        for prefix, lin in tmods.items():
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(state[prefix + ".weight"].numpy()))
                lin.bias.copy_(torch.from_numpy(state[prefix + ".bias"].numpy()))
            params += list(lin.parameters())
        topt = torch.optim.Adam(params, lr=1e-3)
        tx, te = torch.from_numpy(x), torch.from_numpy(eps)

        def torch_step():
            h = torch.relu(enc(tx))
            mu, logvar = fc_mu(h), fc_lv(h)
            recon = torch.sigmoid(dec2(torch.relu(dec1(mu + te * torch.exp(0.5 * logvar)))))
            loss = (F.binary_cross_entropy(recon, tx, reduction="sum")
                    - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())) / BATCH
            topt.zero_grad()
            loss.backward()
            topt.step()

        fns["torch"] = torch_step
    return "VAE 784-400-20 step, batch 128, Adam", fns


@suite("train")
def train_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    torch = optional_import("torch")
    repeat, min_time = (3, 0.01) if quick else (9, 0.05)
    rows = []
    for make in (_mlp_step, _vae_step):
        for n in threads:
            rng = np.random.default_rng(0)
            with pinned_threads(n):
                name, fns = make(torch, rng)
                sec = compare(fns, repeat=repeat, min_time=min_time)
            rows.append({"workload": name, "threads": n, "seconds": sec})
    return rows
