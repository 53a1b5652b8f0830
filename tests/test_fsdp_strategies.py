"""FullyShardedDataParallel's sharding strategies (torch's ShardingStrategy) on real MPI jobs
(tests/distributed_scripts/fsdp_strategies_job.py at 2 and 4 ranks; HYBRID_SHARD as 2 x 2 at 4): every
strategy, with prefetch on and off, through steps whose ranks reach different parameters or none, equals
one process stepping on the mean of all ranks' losses (to 1e-6); checkpoints move between strategies; the
gathers per step and the shard each rank holds are each strategy's; and the errors name the argument."""
import json
import os
import sys

import numpy as np
import pytest
from test_distributed import SCRIPTS, run_job

import forgegrad as fg
from forgegrad import nn, optim
from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')

STRATEGIES = ["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"]
RESHARDS = {"FULL_SHARD": True, "SHARD_GRAD_OP": False, "NO_SHARD": False, "HYBRID_SHARD": True,
            "_HYBRID_SHARD_ZERO2": False}


def _script(name):
    sys.path.insert(0, SCRIPTS)
    try:
        return __import__(name)
    finally:
        sys.path.remove(SCRIPTS)


@pytest.fixture(scope="module", params=[2, 4])
def job(request, tmp_path_factory):
    n = request.param
    out = tmp_path_factory.mktemp(f"strategies{n}")
    run_job(n, "fsdp_strategies_job.py", out, timeout=120)
    return n, out, json.loads((out / "result.json").read_text())


def _reference(n, clip=None):
    """One process on the mean over the ``n`` ranks of their micro-batch losses (each x 1/micro-batches); a
    parameter no loss reached gets a zero gradient (the flat shards' rule, as in test_distributed_unreached);
    the gradients clipped to the global norm ``clip``."""
    job, unreached = _script("fsdp_strategies_job"), _script("unreached_job")
    model = unreached.make_model()
    opt = optim.Adam(model.parameters(), lr=unreached.LR)
    for step, plans in enumerate(job.PLANS[n]):
        opt.zero_grad()
        total = None
        for rank, mine in enumerate(plans):
            for micro, plan in enumerate(mine):
                loss = unreached.micro_loss(model, plan, *unreached.data(step, rank, micro))
                if loss is not None:
                    part = loss * (1.0 / (n * len(mine)))
                    total = part if total is None else total + part
        if total is not None:
            total.backward()
        for p in model.parameters():
            if p.grad is None:
                p.grad = fg.zeros(*p.shape)
        if clip is not None:
            assert float(nn.utils.clip_grad_norm_(model.parameters(), clip)) > clip  # it clips
        opt.step()
    sd = model.state_dict()
    return np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)])


def test_every_strategy_equals_one_process_on_the_mean_loss(job):
    """Each strategy (and HYBRID_SHARD's group forms), prefetch on and off, each checkpoint resumed under the
    next strategy, and global-norm clipping: the same parameters on every rank, equal to the one-process
    reference to 1e-6, and the same bits with prefetch as without."""
    n, out, res = job
    names = [f"{s}_{p}" for s in STRATEGIES + (["HYBRID_SHARD_pair", "HYBRID_SHARD_node"] if n == 4
                                                else ["HYBRID_SHARD_local1"]) for p in ("prefetch", "no_prefetch")]
    names += [f"resume_{s}_as_{STRATEGIES[(i + 1) % 5]}" for i, s in enumerate(STRATEGIES)]
    clipped = [f"{s}_clip" for s in ("FULL_SHARD", "NO_SHARD", "HYBRID_SHARD")]
    assert res["identical"] == {name: True for name in names + clipped}
    ref, ref_clip = _reference(n), _reference(n, clip=_script("fsdp_strategies_job").CLIP)
    assert not np.allclose(ref, ref_clip, rtol=0, atol=1e-4)
    for name in clipped:
        np.testing.assert_allclose(np.load(os.path.join(out, f"{name}.npy")), ref_clip, rtol=0, atol=1e-6,
                                   err_msg=name)
    finals = {name: np.load(os.path.join(out, f"{name}.npy")) for name in names}
    for name, got in finals.items():
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6, err_msg=name)
    for name in names:
        if name.endswith("_prefetch") and not name.endswith("no_prefetch"):
            assert np.array_equal(finals[name], finals[name.replace("_prefetch", "_no_prefetch")]), name


def test_groups_gathers_and_shards_per_strategy(job):
    """The groups each strategy uses, the allgathers of a step in which every rank reaches every unit (3 units:
    two per unit when resharding after forward, one when not), and the shard a rank holds: 1/size of the
    padded parameters, all of them under NO_SHARD, 1/2 in a 2 x 2 HYBRID_SHARD. The peak of gathered bytes
    is the whole model when units stay gathered, one unit (two with prefetch) when they reshard."""
    n, _, res = job
    info = res["info"]
    everyone = list(range(n))
    for name, got in info.items():
        strategy = got["strategy"]
        assert got["process_group"] == everyone, name  # every rank trains the model (fit averages over it)
        assert got["shard"] * len(got["shard_group"]) >= 214, name
        assert got["gathers"] == (6 if RESHARDS[strategy] else 3), name
        shard_size = len(got["shard_group"])
        if strategy == "NO_SHARD":
            assert got["shard_group"] == [0] and got["replicate_group"] == everyone and got["shard"] == 214, name
        elif strategy in ("FULL_SHARD", "SHARD_GRAD_OP"):
            assert got["shard_group"] == everyone and got["replicate_group"] is None, name
        else:
            replicate = got["replicate_group"]
            assert shard_size * len(replicate) == n and set(got["shard_group"]) & set(replicate) == {0}, name
        # the units: the trunk (6x16+16) and two heads (16x3+3), each zero-padded to a multiple of the shard group
        padded = sum(-(-k // shard_size) * shard_size for k in (112, 51, 51))
        assert got["shard"] == padded // shard_size, name
        whole = 4 * padded
        if not RESHARDS[strategy]:
            assert got["peak_gathered_bytes"] == whole, name
        elif name.endswith("no_prefetch"):
            assert got["peak_gathered_bytes"] == 4 * 112, name  # the trunk, the largest unit
    if n == 4:
        for name in ("HYBRID_SHARD_prefetch", "_HYBRID_SHARD_ZERO2_prefetch", "HYBRID_SHARD_pair_prefetch"):
            assert info[name]["shard_group"] == [0, 1] and info[name]["replicate_group"] == [0, 2], name
        # one host, no FORGEGRAD_LOCAL_SIZE: the node is the whole job (torch's default on one machine)
        assert info["HYBRID_SHARD_node_prefetch"]["shard_group"] == everyone
        assert info["HYBRID_SHARD_node_prefetch"]["replicate_group"] == [0]
        _check_tiling_errors(res["errors"])
    else:
        assert info["HYBRID_SHARD_local1_prefetch"]["shard_group"] == [0]
        assert info["HYBRID_SHARD_local1_prefetch"]["replicate_group"] == everyone


def _check_tiling_errors(errors):
    """4 ranks: HYBRID_SHARD with groups that do not tile the job is a ValueError on every rank (no hang)."""
    prefix = "ValueError: FullyShardedDataParallel: process_group=(shard_group, replicate_group) must tile"
    assert errors["same_group_twice"].startswith(prefix) and "[0, 2]" in errors["same_group_twice"]
    assert errors["uneven"].startswith(prefix) and "one size" in errors["uneven"]
    assert errors["crossed"].startswith(prefix) and "rank 0's replicate group is [0, 3]" in errors["crossed"]
    assert "process_group None or a tuple (shard_group, replicate_group)" in errors["one_group"]
    assert "FORGEGRAD_LOCAL_SIZE=3" in errors["local_size_3"] and "dividing the job's 4 ranks" in errors["local_size_3"]


def test_strategy_arguments_are_checked_at_construction(monkeypatch):
    """In a one-rank world: an unknown strategy, a reshard_after_forward that contradicts it, torch's pair of
    groups under a strategy that takes one, and a bad FORGEGRAD_LOCAL_SIZE are ValueErrors naming the
    argument; names work as well as the enum, and reshard_after_forward=False alone means SHARD_GRAD_OP."""
    import forgegrad.distributed as dist
    from forgegrad import nn
    comm.init()
    world = dist.GroupMember.WORLD
    cases = [
        (dict(sharding_strategy="FULL"), "sharding_strategy must be a ShardingStrategy"),
        (dict(sharding_strategy=3), "sharding_strategy must be a ShardingStrategy"),
        (dict(sharding_strategy="NO_SHARD", reshard_after_forward=True),
         "reshard_after_forward=True contradicts sharding_strategy=NO_SHARD"),
        (dict(sharding_strategy=dist.ShardingStrategy.HYBRID_SHARD, reshard_after_forward=False),
         "reshard_after_forward=False contradicts sharding_strategy=HYBRID_SHARD"),
        (dict(process_group=(world, world)), "process_group is a pair of groups, torch's form for HYBRID_SHARD"),
        (dict(sharding_strategy="HYBRID_SHARD", process_group=world),
         "expects process_group None or a tuple (shard_group, replicate_group)"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            dist.FullyShardedDataParallel(nn.Linear(2, 2), **kwargs)
    for bad in ("0", "two"):
        monkeypatch.setenv("FORGEGRAD_LOCAL_SIZE", bad)
        with pytest.raises(ValueError, match="FORGEGRAD_LOCAL_SIZE .* must be a positive integer"):
            dist.FullyShardedDataParallel(nn.Linear(2, 2), sharding_strategy="HYBRID_SHARD")
    monkeypatch.delenv("FORGEGRAD_LOCAL_SIZE")
    model = dist.FullyShardedDataParallel(nn.Linear(2, 2), reshard_after_forward=False)
    assert model.sharding_strategy is dist.ShardingStrategy.SHARD_GRAD_OP and not model.reshard_after_forward
    model = dist.FullyShardedDataParallel(nn.Linear(2, 2), sharding_strategy="_HYBRID_SHARD_ZERO2")
    assert model.sharding_strategy is dist.ShardingStrategy._HYBRID_SHARD_ZERO2 and not model.reshard_after_forward
    assert model.shard_group.ranks == model.replicate_group.ranks == [0]
