"""MPI job: FullyShardedDataParallel's sharding strategies at their edges.
Usage: mpiexec -n N python fsdp_strategy_edges_job.py OUT_DIR CASE.

CASE ``nonmember`` (4 ranks): HYBRID_SHARD with torch's pair of groups where rank 3 is in no shard group;
every rank must get the ValueError (the ranks that are in a group used to wait for rank 3 forever).

CASE ``nograd`` (2 or 4 ranks): under every strategy, a graph-free forward (``no_grad``) between a forward
and its backward, whose losses reach different heads on different ranks, must train exactly as without it
(it used to free the units SHARD_GRAD_OP keeps for that backward, whose gathers then paired one rank's head
a with another's head b).

CASE ``mismatch`` (2 ranks): rank 0 and rank 1 pass different strategies; both must get the ValueError that
says so (they used to meet in unrelated collectives: a TypeError from the other rank's data).

CASE ``skip`` (2 ranks): micro-batches where one rank's last forward has no backward while the other's
has, under every strategy, train as under FULL_SHARD (without resharding, that rank ran one reduction
round fewer than the other at step(), and both waited forever).

CASE ``nosync`` (4 ranks): gradient accumulation with the first micro-batch under the optimizer's no_sync(),
ranks reaching different heads, one whose last forward has no backward, and max_grad_norm: every strategy
(HYBRID_SHARD 2 x 2) ends where FULL_SHARD without no_sync does.

CASE ``two`` (4 ranks): one ZeroRedundancyOptimizer over two wrapped models (NO_SHARD, HYBRID_SHARD with
FORGEGRAD_LOCAL_SIZE=2, SHARD_GRAD_OP) trains as under FULL_SHARD (each wrapper made its own copy of the
strategy's groups, which the optimizer refused as different groups).

CASE ``many`` (2 ranks): wrappers built and dropped one after another, more than MPI has communicators for
(2048 in MPICH): none may be left holding one. Each used to hold its own (MANY), and NO_SHARD's and
HYBRID_SHARD's made one or two groups more each.

Rank 0 writes OUT_DIR/result.json.
"""
import gc
import os
import sys

import numpy as np
from common import write_json
from unreached_job import LR, data, make_model, micro_loss

import forgegrad as fg
import forgegrad.distributed as dist
import forgegrad.nn.functional as F
from forgegrad import nn, optim

STRATEGIES = ["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"]
# wrappers of each strategy: each leaked 1, 2 and 3 communicators of MPICH's 2048
MANY = {"FULL_SHARD": 2100, "NO_SHARD": 1100, "HYBRID_SHARD": 700}


def nonmember():
    shard, _ = dist.new_subgroups_by_enumeration([[0, 1], [2]])  # rank 3: NON_GROUP_MEMBER
    replicate, _ = dist.new_subgroups_by_enumeration([[0, 2], [1], [3]])
    try:
        dist.FullyShardedDataParallel(make_model(), sharding_strategy="HYBRID_SHARD", process_group=(shard, replicate))
        error = None
    except ValueError as e:
        error = str(e)
    return {"errors": dist.allgather_object(error)}


def mismatch():
    errors = {}
    for first, second in (("HYBRID_SHARD", "FULL_SHARD"), ("NO_SHARD", "FULL_SHARD"), ("NO_SHARD", "HYBRID_SHARD"),
                          ("SHARD_GRAD_OP", "NO_SHARD")):
        try:
            dist.FullyShardedDataParallel(make_model(), sharding_strategy=first if dist.rank() == 0 else second)
            error = None
        except (ValueError, TypeError) as e:
            error = f"{type(e).__name__}: {e}"
        errors[f"{first}/{second}"] = dist.allgather_object(error)
    return {"errors": errors}


def train_with_nograd(strategy, nograd, rank, prefetch):
    model = dist.FullyShardedDataParallel(make_model(), sharding_strategy=strategy, **prefetch)
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR)
    for step in range(3):
        opt.zero_grad()
        x, y = data(step, rank, 0)
        a, b = model(fg.tensor(x))
        if nograd:  # e.g. a metric or a teacher's output, between the forward and its backward
            with fg.no_grad():
                model(fg.tensor(x))
        (F.cross_entropy(a if (rank + step) % 2 == 0 else b, fg.tensor(y))).backward()
        opt.step()
    sd = model.state_dict()
    return np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)])


def nograd(rank):
    os.environ["FORGEGRAD_LOCAL_SIZE"] = "2" if dist.size() == 4 else "1"
    same = {}
    for strategy in STRATEGIES:
        for pname, prefetch in (("prefetch", dict(forward_prefetch=True)), ("no_prefetch",
                                                                            dict(backward_prefetch=None))):
            plain = train_with_nograd(strategy, False, rank, prefetch)
            got = train_with_nograd(strategy, True, rank, prefetch)
            same[f"{strategy}_{pname}"] = bool(np.array_equal(plain, got))
    return {"same": same}


def many():
    os.environ["FORGEGRAD_LOCAL_SIZE"] = "1"
    built = {}
    for strategy, count in MANY.items():
        for i in range(count):
            dist.FullyShardedDataParallel(nn.Linear(2, 2), sharding_strategy=strategy)
            if i % 500 == 0:
                gc.collect()  # the wrappers are cycles (hooks on their modules); collected at the same points
        built[strategy] = count
    gc.collect()
    dist.barrier()
    return {"built": built}


SKIP_PLANS = [(["a", "skip"], ["ab", "ab"]), (["ab", "b"], ["a", "skip"]), (["none", "skip"], ["b", "skip"]),
              (["ab", "skip"], ["b", "a"])]


def skip(rank):
    os.environ["FORGEGRAD_LOCAL_SIZE"] = "1"
    finals = {}
    for strategy in STRATEGIES:
        model = dist.FullyShardedDataParallel(make_model(), sharding_strategy=strategy)
        opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR)
        for step, plans in enumerate(SKIP_PLANS):
            opt.zero_grad()
            for micro, plan in enumerate(plans[rank]):
                loss = micro_loss(model, plan, *data(step, rank, micro))
                if loss is not None:
                    loss.backward()
            opt.step()
        sd = model.state_dict()
        finals[strategy] = np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)])
    return {"diff": {s: float(np.abs(v - finals["FULL_SHARD"]).max()) for s, v in finals.items()}}


NOSYNC_PLANS = (["ab", "a"], ["b", "ab"], ["none", "b"], ["a", "skip"])


def nosync(rank):
    os.environ["FORGEGRAD_LOCAL_SIZE"] = "2"
    finals = {}
    for strategy in STRATEGIES:
        for accumulate in (False, True):
            model = dist.FullyShardedDataParallel(make_model(), sharding_strategy=strategy)
            opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR, max_grad_norm=0.05)
            for step in range(3):
                opt.zero_grad()
                for micro, plan in enumerate(NOSYNC_PLANS[rank]):
                    loss = micro_loss(model, plan, *data(step, rank, micro))
                    if loss is None:
                        continue
                    if accumulate and micro == 0:
                        with opt.no_sync():
                            loss.backward()
                    else:
                        loss.backward()
                opt.step()
            sd = model.state_dict()
            finals[f"{strategy}_{'no_sync' if accumulate else 'plain'}"] = np.concatenate(
                [sd[k]._data.reshape(-1) for k in sorted(sd)])
    return {"diff": {s: float(np.abs(v - finals["FULL_SHARD_plain"]).max()) for s, v in finals.items()}}


def two(rank):
    os.environ["FORGEGRAD_LOCAL_SIZE"] = "2"
    finals = {}
    for strategy in ("FULL_SHARD", "NO_SHARD", "HYBRID_SHARD", "SHARD_GRAD_OP"):
        fg.manual_seed(0)
        first = dist.FullyShardedDataParallel(nn.Linear(4, 8), sharding_strategy=strategy)
        second = dist.FullyShardedDataParallel(nn.Linear(8, 2), sharding_strategy=strategy)
        opt = dist.ZeroRedundancyOptimizer(list(first.parameters()) + list(second.parameters()), optim.Adam,
                                           stage=3, lr=LR)
        rng = np.random.default_rng(rank)
        for _ in range(3):
            opt.zero_grad()
            second(first(fg.tensor(rng.standard_normal((3, 4)).astype(np.float32))).tanh()).sum().backward()
            opt.step()
        finals[strategy] = np.concatenate([v._data.reshape(-1) for m in (first, second)
                                           for v in m.state_dict().values()])
    return {"diff": {s: float(np.abs(v - finals["FULL_SHARD"]).max()) for s, v in finals.items()}}


def main():
    dist.init()
    out, case = sys.argv[1], sys.argv[2]
    result = {"nonmember": nonmember, "nograd": lambda: nograd(dist.rank()), "many": many,
              "two": lambda: two(dist.rank()), "mismatch": mismatch,
              "skip": lambda: skip(dist.rank()), "nosync": lambda: nosync(dist.rank())}[case]()
    if dist.rank() == 0:
        write_json(os.path.join(out, "result.json"), result)


if __name__ == "__main__":
    main()
