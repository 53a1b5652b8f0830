"""MPI job (2 ranks): backward passes that reach different parameters on different ranks, or none, or do
not happen on a rank. Usage: mpiexec -n 2 python unreached_job.py OUT_DIR.

The model has two heads (trunk -> a, trunk -> b). Each step gives every rank a list of micro-batch
plans (PLANS below): "ab" (the loss uses both heads), "a" / "b" (one head: the other head's parameters
get no gradient there), "none" (a loss that reaches no parameter), "skip" (a forward, no backward) and
"idle" (neither forward nor backward; not for FullyShardedDataParallel, whose forwards gather). Every
configuration (DDP + Adam, DistributedOptimizer, ZeRO-1, ZeRO-2, FullyShardedDataParallel + ZeRO-3 with
and without resharding, with and without prefetch) trains through the same plans; rank 0 writes each
one's final parameters to OUT_DIR/<name>.npy and OUT_DIR/result.json (whether all ranks ended with
identical parameters).
DDP and DistributedOptimizer also train through ADAMW_PLANS under AdamW with weight decay; every rank
writes, per step, which parameters had no gradient at step() and which the step left unchanged
(OUT_DIR/adamw_rank<r>.json). tests/test_distributed_unreached.py checks them against one process that
averages the ranks' losses.
"""
import sys

import numpy as np
from common import write_json

import forgegrad as fg
import forgegrad.distributed as dist
import forgegrad.nn.functional as F
from forgegrad import nn, optim

# (rank 0's micro-batches, rank 1's micro-batches) for each step
PLANS = [
    (["ab"], ["ab"]),
    (["ab"], ["none"]),
    (["ab"], ["a"]),
    (["a"], ["b"]),
    (["ab"], ["skip"]),
    (["none"], ["ab"]),
    (["ab", "ab"], ["none", "a"]),
    (["b"], ["idle"]),
    (["ab"], ["ab"]),
]
LR = 1e-2
# DDP and DistributedOptimizer under AdamW with weight decay: steps where no rank runs a backward, where
# no rank reaches head b, and where the only backward reaches nothing leave those parameters untouched
ADAMW_PLANS = [
    (["ab"], ["ab"]),
    (["skip"], ["idle"]),
    (["a"], ["a"]),
    (["none"], ["idle"]),
    (["ab"], ["b"]),
]
WEIGHT_DECAY = 0.1


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(6, 16)
        self.a = nn.Linear(16, 3)
        self.b = nn.Linear(16, 3)

    def forward(self, x):
        h = self.trunk(x).tanh()
        return self.a(h), self.b(h)


def make_model(seed=0):
    fg.manual_seed(seed)
    return TwoHeads()


def data(step, rank, micro):
    rng = np.random.default_rng(1000 * step + 10 * rank + micro)
    return rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 3, 4).astype(np.int64)


def micro_loss(model, plan, x, y):
    """The loss of one micro-batch plan, or None when the plan runs no backward."""
    if plan == "idle":
        return None
    a, b = model(fg.tensor(x))
    if plan == "skip":
        return None
    if plan == "none":  # requires grad, reaches no parameter
        return fg.zeros(1, requires_grad=True).sum()
    t = fg.tensor(y)
    loss = 0.0
    if "a" in plan:
        loss = loss + F.cross_entropy(a, t)
    if "b" in plan:
        loss = loss + F.cross_entropy(b, t)
    return loss


def train(model, opt, rank, fsdp=False, plans_per_step=PLANS, watch=None):
    """Train through ``plans_per_step``; with ``watch`` (the plain module), return per step the names of the
    parameters whose .grad is None at step() and of those the step left bit for bit unchanged."""
    seen = []
    for step, plans in enumerate(plans_per_step):
        mine = plans[rank]
        opt.zero_grad()
        for micro, plan in enumerate(mine):
            if fsdp and plan == "idle":
                plan = "skip"  # FullyShardedDataParallel: every rank runs the same forwards
            loss = micro_loss(model, plan, *data(step, rank, micro))
            if loss is not None:
                (loss * (1.0 / len(mine))).backward()
        before = {n: p._data.copy() for n, p in watch.named_parameters()} if watch is not None else None
        opt.step()
        if watch is not None:
            named = list(watch.named_parameters())
            seen.append({"grad_none": [n for n, p in named if p.grad is None],
                         "unchanged": [n for n, p in named if np.array_equal(p._data, before[n])]})
    return seen


def main():
    dist.init()
    rank = dist.rank()
    out = sys.argv[1]
    finals = {}

    ddp = dist.DistributedDataParallel(make_model(), bucket_cap_mb=0.0002)  # a bucket per tensor or two
    train(ddp, optim.Adam(ddp.parameters(), lr=LR), rank)
    finals["ddp"] = ddp.module

    hvd = make_model()
    train(hvd, dist.DistributedOptimizer(optim.Adam(hvd.parameters(), lr=LR), bucket_cap_mb=0.0002), rank)
    finals["distributed_optimizer"] = hvd

    for stage in (1, 2):
        m = make_model()
        train(m, dist.ZeroRedundancyOptimizer(m.parameters(), optim.Adam, stage=stage, bucket_cap_mb=0.0002,
                                              lr=LR), rank)
        finals[f"zero{stage}"] = m

    # the defaults (backward prefetch), no prefetch, forward prefetch too (with BACKWARD_POST), and no resharding
    for name, kwargs in (("fsdp_reshard_True", {}), ("fsdp_no_prefetch", dict(backward_prefetch=None)),
                         ("fsdp_forward_post", dict(forward_prefetch=True, backward_prefetch="BACKWARD_POST")),
                         ("fsdp_reshard_False", dict(reshard_after_forward=False, forward_prefetch=True))):
        m = dist.FullyShardedDataParallel(make_model(), **kwargs)
        train(m, dist.ZeroRedundancyOptimizer(m.parameters(), optim.Adam, stage=3, lr=LR), rank, fsdp=True)
        finals[name] = m

    adamw = {}
    ddp = dist.DistributedDataParallel(make_model(), bucket_cap_mb=0.0002)
    adamw["ddp_adamw"] = train(ddp, optim.AdamW(ddp.parameters(), lr=LR, weight_decay=WEIGHT_DECAY), rank,
                               plans_per_step=ADAMW_PLANS, watch=ddp.module)
    finals["ddp_adamw"] = ddp.module
    hvd = make_model()
    opt = dist.DistributedOptimizer(optim.AdamW(hvd.parameters(), lr=LR, weight_decay=WEIGHT_DECAY),
                                    bucket_cap_mb=0.0002)
    adamw["distributed_optimizer_adamw"] = train(hvd, opt, rank, plans_per_step=ADAMW_PLANS, watch=hvd)
    finals["distributed_optimizer_adamw"] = hvd

    identical = {}
    for name, m in finals.items():
        sd = m.state_dict()  # collective for FullyShardedDataParallel: the plain model's full arrays
        flat = np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)])
        everyone = dist.allgather(flat)
        identical[name] = bool((everyone == everyone[0]).all())
        if rank == 0:
            np.save(f"{out}/{name}.npy", flat)
    if rank == 0:
        write_json(f"{out}/result.json", {"identical": identical, "adamw": adamw})
    write_json(f"{out}/adamw_rank{rank}.json", adamw)


if __name__ == "__main__":
    main()
