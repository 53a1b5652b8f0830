"""MPI job (4 ranks): two models trained at once in two disjoint process groups, [0, 1] and [2, 3].
Usage: mpiexec -n 4 python groups_ddp_job.py OUT_DIR.

Every rank builds its model from its own seed (so the wrappers must broadcast the group's first rank's);
group g (its own data) trains with DDP + Adam, DistributedOptimizer, ZeRO-2 and FSDP + ZeRO-3,
each given ``process_group=``; the group's first rank writes each configuration's final parameters to
OUT_DIR/<name>_group<g>.npy, and OUT_DIR/result<g>.json says whether the group's ranks ended identical.
tests/test_distributed_groups.py checks them against one process per group on the mean of its ranks' losses.
"""
import faulthandler
import sys

import numpy as np
from common import write_json

import forgegrad as fg
import forgegrad.distributed as dist
import forgegrad.nn.functional as F
from forgegrad import nn, optim

STEPS = 8
LR = 1e-2
PER_RANK = 4


def make_model(global_rank):
    fg.manual_seed(10 + global_rank)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def data(group_index, step, group_rank):
    """Group rank ``group_rank``'s batch of step ``step`` in group ``group_index``."""
    rng = np.random.default_rng(1000 * group_index + 10 * step + group_rank)
    return rng.standard_normal((PER_RANK, 6)).astype(np.float32), rng.integers(0, 3, PER_RANK).astype(np.int64)


def loss_of(model, x, y):
    return F.cross_entropy(model(fg.tensor(x)), fg.tensor(y))


def flat_params(model):
    sd = model.state_dict()
    return np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)])


def build(name, group):
    """(model, optimizer, plain module) of configuration ``name`` on ``group``, from this rank's own weights."""
    net = make_model(dist.rank())
    if name == "ddp":
        model = dist.DistributedDataParallel(net, bucket_cap_mb=0.0005, process_group=group)  # several buckets
        opt = optim.Adam(model.parameters(), lr=LR)
    elif name == "distributed_optimizer":
        model = net
        dist.broadcast_parameters(model.state_dict(), group.ranks[0], group=group)
        opt = dist.DistributedOptimizer(optim.Adam(model.parameters(), lr=LR), process_group=group)
    elif name == "zero2":
        model = net
        opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=2, bucket_cap_mb=0.0005,
                                           process_group=group, lr=LR)
    else:  # zero3: FullyShardedDataParallel's group is the optimizer's
        model = dist.FullyShardedDataParallel(net, process_group=group)
        opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR)
    return model, opt, net


def finish(name, model, net, group, gi, out, result):
    """Record whether the group's ranks ended identical; its rank 0 saves the parameters."""
    params = flat_params(model if name == "zero3" else net)  # FSDP's state_dict gathers (collective)
    everyone = dist.allgather(params, group=group)
    result[name] = bool(all(np.array_equal(everyone[0], p) for p in everyone))
    if group.rank() == 0:
        np.save(f"{out}/{name}_group{gi}.npy", params)


def train(name, group, gi, out, result):
    model, opt, net = build(name, group)
    for step in range(STEPS):
        opt.zero_grad()
        loss_of(model, *data(gi, step, group.rank())).backward()
        opt.step()
    finish(name, model, net, group, gi, out, result)


def main(out):
    faulthandler.dump_traceback_later(50, exit=True)  # a hang shows where it waits
    dist.init()
    group, _ = dist.new_subgroups(2)
    gi = dist.rank() // 2
    result = {"group": gi, "ranks": group.ranks}
    for name in ("ddp", "distributed_optimizer", "zero2", "zero3"):
        train(name, group, gi, out, result)
    if group.rank() == 0:
        write_json(f"{out}/result{gi}.json", result)


if __name__ == "__main__":
    main(sys.argv[1])
