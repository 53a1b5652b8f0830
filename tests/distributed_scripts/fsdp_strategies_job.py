"""MPI job (2 or 4 ranks): FullyShardedDataParallel + ZeRO-3 under every sharding strategy.
Usage: mpiexec -n N python fsdp_strategies_job.py OUT_DIR.

Every configuration trains unreached_job.py's two-headed model through PLANS[N] (micro-batch plans per
rank: losses that reach both heads, one, none, or a forward without backward), with prefetch on (forward
and backward) and off. HYBRID_SHARD (and _HYBRID_SHARD_ZERO2) at 4 ranks: its default node groups with
FORGEGRAD_LOCAL_SIZE=2 (shard groups [0, 1] and [2, 3], replicate groups [0, 2] and [1, 3]), torch's pair
of those groups given explicitly, and the real node (one host: a shard group of 4, as FULL_SHARD); at 2
ranks: the real node (a shard group of 2) and FORGEGRAD_LOCAL_SIZE=1 (shard groups of one rank). A
checkpoint (the model's and the optimizer's state_dict, written by rank 0 with forgegrad.save) taken
after SPLIT steps under each strategy is resumed under the next one. FULL_SHARD, NO_SHARD and
HYBRID_SHARD also train with ``max_grad_norm=CLIP`` (the norm of all the averaged gradients). At 4
ranks it first records the errors of groups that do not tile the job.

Rank 0 writes each configuration's final parameters to OUT_DIR/<name>.npy and OUT_DIR/result.json: whether
every rank ended with the same parameters, the gathers and the peak gathered bytes of the first step
(every rank's loss reaches every unit there), the shard length per rank, and the groups.
tests/test_fsdp_strategies.py checks them against one process stepping on the mean of all ranks' losses.
"""
import os
import sys

import numpy as np
from common import write_json
from unreached_job import LR, data, make_model, micro_loss

import forgegrad as fg
import forgegrad.distributed as dist
from forgegrad import optim

PLANS = {
    2: [(["ab"], ["ab"]), (["ab"], ["none"]), (["a"], ["b"]), (["ab"], ["skip"]), (["none"], ["ab"]),
        (["ab", "ab"], ["none", "a"]), (["b"], ["skip"]), (["ab"], ["ab"])],
    4: [(["ab"], ["ab"], ["ab"], ["ab"]),
        (["ab"], ["none"], ["a"], ["b"]),
        (["a"], ["b"], ["skip"], ["ab"]),  # rank 2 runs no backward; its shard-group partner 3 does
        (["none"], ["ab"], ["b"], ["skip"]),
        (["ab", "ab"], ["none", "a"], ["b", "none"], ["a", "b"]),
        (["b"], ["skip"], ["skip"], ["a"]),
        (["ab"], ["ab"], ["ab"], ["ab"])],
}
SPLIT = 3
CLIP = 0.05  # max_grad_norm of the "_clip" runs: below every step's gradient norm
STRATEGIES = ["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"]
PREFETCH = {"prefetch": dict(forward_prefetch=True), "no_prefetch": dict(backward_prefetch=None)}


def train(model, opt, rank, plans, steps):
    """Steps ``steps`` (a range) of ``plans``; each rank's micro-batch losses scaled by 1/micro-batches."""
    for step in steps:
        mine = plans[step][rank]
        opt.zero_grad()
        for micro, plan in enumerate(mine):
            loss = micro_loss(model, plan, *data(step, rank, micro))
            if loss is not None:
                (loss * (1.0 / len(mine))).backward()
        opt.step()


def count_gathers(model):
    """Count the wrapper's allgathers (each starts in its ``_start``)."""
    model.__dict__["gathers"] = 0
    start = model._start

    def counted(unit):
        model.__dict__["gathers"] += 1
        start(unit)
    model.__dict__["_start"] = counted


def wrap(strategy, groups, local_size=None, max_grad_norm=None, **kwargs):
    """The wrapped model (FORGEGRAD_LOCAL_SIZE=local_size while it is built) and its ZeRO-3 Adam."""
    if local_size is not None:
        os.environ["FORGEGRAD_LOCAL_SIZE"] = local_size
    try:
        model = dist.FullyShardedDataParallel(make_model(), sharding_strategy=strategy, process_group=groups,
                                              **kwargs)
    finally:
        os.environ.pop("FORGEGRAD_LOCAL_SIZE", None)
    count_gathers(model)
    return model, dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR,
                                               max_grad_norm=max_grad_norm)


def error_of(fn):
    try:
        fn()
    except (ValueError, TypeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def tiling_errors():
    """4 ranks: HYBRID_SHARD with groups that do not tile the job (every rank gets the error, none hangs)."""
    halves, _ = dist.new_subgroups(2)
    uneven, _ = dist.new_subgroups_by_enumeration([[0, 1, 2], [3]])
    uneven_rep, _ = dist.new_subgroups_by_enumeration([[0, 3], [1], [2]])
    crossed, _ = dist.new_subgroups_by_enumeration([[0, 3], [1, 2]])
    hybrid = "HYBRID_SHARD"
    return {
        "same_group_twice": error_of(lambda: wrap(hybrid, (halves, halves))),
        "uneven": error_of(lambda: wrap(hybrid, (uneven, uneven_rep))),
        "crossed": error_of(lambda: wrap(hybrid, (halves, crossed))),
        "one_group": error_of(lambda: wrap(hybrid, halves)),
        "local_size_3": error_of(lambda: wrap(hybrid, None, "3")),
    }


def flat(model):
    sd = model.state_dict()  # collective: the plain model's full arrays
    return np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)])


def main():
    dist.init()
    rank, n = dist.rank(), dist.size()
    out = sys.argv[1]
    plans = PLANS[n]
    pair = None
    if n == 4:
        shard, _ = dist.new_subgroups(2)
        replicate, _ = dist.new_subgroups_by_enumeration([[0, 2], [1, 3]])
        pair = (shard, replicate)
    errors = tiling_errors() if n == 4 else {}
    # FORGEGRAD_LOCAL_SIZE for each strategy's main run (and its checkpoint's resume)
    local = {"HYBRID_SHARD": "2", "_HYBRID_SHARD_ZERO2": "2"} if n == 4 else {}
    runs = [(strategy, strategy, None, local.get(strategy)) for strategy in STRATEGIES]  # (name, ..., groups, env)
    if n == 4:
        runs.append(("HYBRID_SHARD_pair", "HYBRID_SHARD", pair, None))
        runs.append(("HYBRID_SHARD_node", "HYBRID_SHARD", None, None))
    else:
        runs.append(("HYBRID_SHARD_local1", "HYBRID_SHARD", None, "1"))
    finals, info = {}, {}
    for name, strategy, groups, env in runs:
        for pname, kwargs in PREFETCH.items():
            model, opt = wrap(strategy, groups, env, **kwargs)
            train(model, opt, rank, plans, range(1))
            first = {"gathers": model.gathers, "peak_gathered_bytes": model.peak_gathered_bytes}
            train(model, opt, rank, plans, range(1, SPLIT))
            if pname == "prefetch" and name == strategy:  # a checkpoint for the next strategy
                state = {"model": model.state_dict(), "optimizer": opt.state_dict()}  # collective
                if rank == 0:
                    fg.save(state, os.path.join(out, f"ckpt_{strategy}.pt"))
            train(model, opt, rank, plans, range(SPLIT, len(plans)))
            key = f"{name}_{pname}"
            finals[key] = flat(model)
            info[key] = dict(first, shard=sum(u.per_rank for u in model.units), strategy=model.sharding_strategy.name,
                             shard_group=model.shard_group.ranks,
                             replicate_group=model.replicate_group.ranks if model.replicate_group else None,
                             process_group=model.process_group.ranks)
    dist.barrier()
    for strategy in ("FULL_SHARD", "NO_SHARD", "HYBRID_SHARD"):  # the global norm over every shard, once
        model, opt = wrap(strategy, None, local.get(strategy), max_grad_norm=CLIP)
        train(model, opt, rank, plans, range(len(plans)))
        finals[f"{strategy}_clip"] = flat(model)
    for i, saved in enumerate(STRATEGIES):  # resume each checkpoint under the next strategy
        strategy = STRATEGIES[(i + 1) % len(STRATEGIES)]
        model, opt = wrap(strategy, None, local.get(strategy))
        ck = fg.load(os.path.join(out, f"ckpt_{saved}.pt"))
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        train(model, opt, rank, plans, range(SPLIT, len(plans)))
        finals[f"resume_{saved}_as_{strategy}"] = flat(model)
    identical = {}
    for name, v in finals.items():
        everyone = dist.allgather(v)
        identical[name] = bool((everyone == everyone[0]).all())
        if rank == 0:
            np.save(os.path.join(out, f"{name}.npy"), v)
    if rank == 0:
        write_json(os.path.join(out, "result.json"), {"identical": identical, "info": info, "errors": errors})


if __name__ == "__main__":
    main()
