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


@pytest.fixture(scope="module")
def job_out(tmp_path_factory):
    """One run of the 2-rank job serves both tests."""
    out = tmp_path_factory.mktemp("unreached")
    run_job(2, "unreached_job.py", out, timeout=60)
    return out


def _reference(job, plans_per_step, make_optimizer, unreached_as_zero):
    """One process: each step's loss is the mean over the 2 ranks of their micro-batch losses (each scaled by
    1/micro-batches, as the job does). A gradient nothing reached stays None (the optimizer skips it, as
    torch's), or with ``unreached_as_zero`` becomes a zero (ZeRO's and FSDP's flat shards). Returns the final
    parameters and, per step, the names of those with no gradient at step() and of those it left unchanged."""
    model = job.make_model()
    opt = make_optimizer(model.parameters())
    seen = []
    for step, plans in enumerate(plans_per_step):
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
        if unreached_as_zero:
            for p in model.parameters():
                if p.grad is None:
                    p.grad = fg.zeros(*p.shape)
        named = list(model.named_parameters())
        before = {n: p._data.copy() for n, p in named}
        opt.step()
        seen.append({"grad_none": [n for n, p in named if p.grad is None],
                     "unchanged": [n for n, p in named if np.array_equal(p._data, before[n])]})
    sd = model.state_dict()
    return np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)]), seen


def test_ranks_reaching_different_parameters_or_none_reduce_zeros_for_them(job_out):
    """DDP + Adam, DistributedOptimizer, ZeRO-1, ZeRO-2 and FullyShardedDataParallel + ZeRO-3 (resharding
    after forward or not, prefetching or not) through steps where rank 1's loss reaches no parameter, one
    head only, the other rank's head only, with two micro-batches of which one reaches nothing, after a
    forward without backward, and (except FSDP, whose forwards gather) without forward or backward."""
    job = _job_module()
    res = json.loads((job_out / "result.json").read_text())
    names = ["ddp", "distributed_optimizer", "zero1", "zero2", "fsdp_reshard_True", "fsdp_no_prefetch",
             "fsdp_forward_post", "fsdp_reshard_False"]
    assert res["identical"] == {n: True for n in names + ["ddp_adamw", "distributed_optimizer_adamw"]}
    # FSDP's prefetch (backward's by default, none, forward's with BACKWARD_POST) only moves data: the same bits
    fsdp = np.load(os.path.join(job_out, "fsdp_reshard_True.npy"))
    for name in ("fsdp_no_prefetch", "fsdp_forward_post"):
        assert np.array_equal(np.load(os.path.join(job_out, f"{name}.npy")), fsdp), name
    adam = lambda params: optim.Adam(params, lr=job.LR)  # noqa: E731
    # DDP and DistributedOptimizer leave the gradient of a parameter no rank reached None (head a in the step
    # where rank 0 uses head b only and rank 1 idles), ZeRO and FSDP give it a zero: Adam moves it by its moments
    skipping, _ = _reference(job, job.PLANS, adam, unreached_as_zero=False)
    zeros, _ = _reference(job, job.PLANS, adam, unreached_as_zero=True)
    assert not np.array_equal(skipping, zeros)
    # the FSDP runs replace rank 1's "idle" step by "skip" (a forward without backward): the same losses
    for name in names:
        got = np.load(os.path.join(job_out, f"{name}.npy"))
        ref = skipping if name in ("ddp", "distributed_optimizer") else zeros
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6, err_msg=name)


def test_parameters_no_rank_reached_keep_grad_none_and_adamw_skips_them(job_out):
    """DDP and DistributedOptimizer under AdamW with weight decay: a step() with no backward on any rank (one
    rank runs a forward, the other nothing; or the only backward reaches no parameter) leaves every
    parameter unchanged and every .grad None, as one process (and torch) does; a step in which both ranks
    use head a only leaves head b's .grad None and head b unchanged while the rest is averaged."""
    job = _job_module()
    res = json.loads((job_out / "result.json").read_text())
    ref, seen = _reference(job, job.ADAMW_PLANS,
                           lambda params: optim.AdamW(params, lr=job.LR, weight_decay=job.WEIGHT_DECAY),
                           unreached_as_zero=False)
    everything = sorted(n for n, _ in job.make_model().named_parameters())
    # AdamW skips a None .grad (as torch): no decay either
    assert sorted(seen[1]["grad_none"]) == sorted(seen[1]["unchanged"]) == everything
    assert sorted(seen[2]["grad_none"]) == sorted(seen[2]["unchanged"]) == ["b.bias", "b.weight"]
    for name in ("ddp_adamw", "distributed_optimizer_adamw"):
        assert res["identical"][name], name
        for rank in range(2):
            got = json.loads((job_out / f"adamw_rank{rank}.json").read_text())[name]
            assert got == seen, (name, rank)
        np.testing.assert_allclose(np.load(os.path.join(job_out, f"{name}.npy")), ref, rtol=0, atol=1e-6,
                                   err_msg=name)
