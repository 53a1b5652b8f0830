"""Ranks whose backward reaches different parameters, none, or does not run: a real 2-rank MPI job
(tests/distributed_scripts/unreached_job.py) must end (the launcher's timeout is the "never a hang" check)
and every configuration must equal one process that averages the ranks' losses, the gradients a rank's
loss does not reach counting as zeros (torch DDP's find_unused_parameters=True)."""
import json
import os
import sys

import numpy as np
import pytest
from test_distributed import SCRIPTS, run_job

import forgegrad as fg
from forgegrad import optim
from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


def _job_module():
    sys.path.insert(0, SCRIPTS)
    try:
        import unreached_job
    finally:
        sys.path.remove(SCRIPTS)
    return unreached_job


def _reference(job):
    """One process, Adam: each step's loss is the mean over the 2 ranks of their micro-batch losses
    (each scaled by 1/micro-batches, as the job does); a gradient nothing reached is a zero."""
    model = job.make_model()
    opt = optim.Adam(model.parameters(), lr=job.LR)
    for step, plans in enumerate(job.PLANS):
        opt.zero_grad()
        total = None
        for rank, mine in enumerate(plans):
            for micro, plan in enumerate(mine):
                loss = job.micro_loss(model, plan, *job.data(step, rank, micro))
                if loss is not None:
                    part = loss * (0.5 / len(mine))
                    total = part if total is None else total + part
        if total is not None:
            total.backward()
        for p in model.parameters():
            if p.grad is None:
                p.grad = fg.zeros(*p.shape)
        opt.step()
    sd = model.state_dict()
    return np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)])


def test_ranks_reaching_different_parameters_or_none_reduce_zeros_for_them(tmp_path):
    """DDP + Adam, DistributedOptimizer, ZeRO-1, ZeRO-2 and FullyShardedDataParallel + ZeRO-3 (resharding
    after forward or not, prefetching or not) through steps where rank 1's loss reaches no parameter, one
    head only, the other rank's head only, with two micro-batches of which one reaches nothing, after a
    forward without backward, and (except FSDP, whose forwards gather) without forward or backward."""
    run_job(2, "unreached_job.py", tmp_path, timeout=60)
    job = _job_module()
    res = json.loads((tmp_path / "result.json").read_text())
    names = ["ddp", "distributed_optimizer", "zero1", "zero2", "fsdp_reshard_True", "fsdp_no_prefetch",
             "fsdp_forward_post", "fsdp_reshard_False"]
    assert res["identical"] == {n: True for n in names}
    # FSDP's prefetch (backward's by default, none, forward's with BACKWARD_POST) only moves data: the same bits
    fsdp = np.load(os.path.join(tmp_path, "fsdp_reshard_True.npy"))
    for name in ("fsdp_no_prefetch", "fsdp_forward_post"):
        assert np.array_equal(np.load(os.path.join(tmp_path, f"{name}.npy")), fsdp), name
    ref = _reference(job)
    # the FSDP runs replace rank 1's "idle" step by "skip" (a forward without backward): the same losses
    for name in names:
        got = np.load(os.path.join(tmp_path, f"{name}.npy"))
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6, err_msg=name)
