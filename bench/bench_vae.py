"""VAE training step (784-400-20, batch 128, Adam, BCE + KL), forgegrad vs torch, threads pinned on
both sides (and numpy's BLAS through threadpoolctl).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_vae.py --benchmark-only --benchmark-group-by=group

The workload is forgegrad.bench.train's VAE step (`forgegrad bench vae` times it in interleaved
rounds). Both sides start from the same weights and use the same fixed eps, so they do the same
arithmetic. Target: forgegrad's step at least 1.3x faster than torch's.

On a machine shared with other work, wall-clock rounds are noisy (pytest-benchmark runs one side
after the other); with one thread pinned, CPU time is the steadier measure:
``--benchmark-timer=time.process_time``.
"""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.bench import train
from forgegrad.models import vae_loss

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`, `run_workload`: bench/conftest.py
VAE = [w for w in train.workloads() if w.name == train.VAE_WORKLOAD]


@pytest.mark.parametrize("workload,runtime", [(w, r) for w in VAE for r in w.runtimes], ids=str)
def test_vae_train_step(run_workload, workload, runtime):
    run_workload(workload, runtime)


def test_vae_step_computes_what_torch_computes():
    """Same weights, same eps: the same loss and gradients, so the timings compare equal work."""
    x, eps = train.vae_data(np.random.default_rng(0))
    model, tmodel = train.vae_models(torch)
    xt = fg.tensor(x)
    recon, mu, logvar = model(xt, eps=eps)
    loss = vae_loss(recon, xt, mu, logvar)
    loss.backward()
    tx = torch.from_numpy(x)
    trecon, tmu, tlogvar = tmodel(tx, torch.from_numpy(eps))
    tloss = train.torch_vae_loss(torch, trecon, tx, tmu, tlogvar)
    tloss.backward()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
    tgrads = dict(tmodel.named_parameters())
    for k, p in model.named_parameters():
        # sums over 128 samples x 784 pixels in float32, accumulated in a different order than torch's
        np.testing.assert_allclose(p.grad.numpy(), tgrads[k].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)

