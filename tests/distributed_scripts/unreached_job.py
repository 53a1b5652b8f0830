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
tests/test_distributed_unreached.py checks them against one process that averages the ranks' losses.
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


def train(model, opt, rank, fsdp=False):
    for step, plans in enumerate(PLANS):
        mine = plans[rank]
        opt.zero_grad()
        for micro, plan in enumerate(mine):
            if fsdp and plan == "idle":
                plan = "skip"  # FullyShardedDataParallel: every rank runs the same forwards
            loss = micro_loss(model, plan, *data(step, rank, micro))
            if loss is not None:
                (loss * (1.0 / len(mine))).backward()
        opt.step()


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

    identical = {}
    for name, m in finals.items():
        sd = m.state_dict()  # collective for FullyShardedDataParallel: the plain model's full arrays
        flat = np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)])
        everyone = dist.allgather(flat)
        identical[name] = bool((everyone == everyone[0]).all())
        if rank == 0:
            np.save(f"{out}/{name}.npy", flat)
    if rank == 0:
        write_json(f"{out}/result.json", {"identical": identical})


if __name__ == "__main__":
    main()
