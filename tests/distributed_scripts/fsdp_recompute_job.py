"""MPI job (2 ranks): FullyShardedDataParallel over blocks run under utils.checkpoint, with gradient
accumulation, and a backward through a graph made before step(). Usage: mpiexec -n 2 python
fsdp_recompute_job.py OUT_DIR.

Each step every rank runs MICRO micro-batches (forward, backward) and then step(); every block is a unit and
runs as ``checkpoint(block, h)``, so its forward runs again inside the backward pass. That recomputation
used to plan the block for the later passes: the next micro-batch's backward gathered the blocks before it
as "unreached" (their gradients as zeros) and step() gathered the whole model once more, for nothing.

Then ``old = m(x1); step(); new = m(x2); old.backward()``: torch's error (the parameters changed) on both
ranks, where it used to backpropagate the old graph through the updated parameters; ``new`` trains on.

Rank 0 writes OUT_DIR/result.json: the largest difference from one process training the plain model on the
mean of the ranks' losses, per configuration; whether the ranks ended identical; the most bytes gathered at
once inside step() (no gather there: 0) and in the whole run, with 1 and with MICRO micro-batches per step;
each rank's error from the stale backward.
"""
import sys

import numpy as np
from common import write_json

import forgegrad as fg
import forgegrad.distributed as dist
import forgegrad.nn.functional as F
from forgegrad import nn, optim
from forgegrad.utils.checkpoint import checkpoint

LR, STEPS, MICRO = 1e-2, 3, 3


class Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.blocks = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = self.inp(x).tanh()
        for b in self.blocks:
            h = checkpoint(b, h, use_reentrant=False).tanh()
        return self.out(h)


def make():
    fg.manual_seed(0)
    return Blocks()


def loss(model, step, rank, micro):
    rng = np.random.default_rng(1000 * step + 10 * rank + micro)
    x, y = rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 3, 4).astype(np.int64)
    return F.cross_entropy(model(fg.tensor(x)), fg.tensor(y))


def train(model, opt, ranks, micro, fsdp=None):
    """STEPS steps of ``micro`` micro-batches per rank in ``ranks``; the most bytes gathered inside step()."""
    in_step = 0
    for step in range(STEPS):
        opt.zero_grad()
        for mb in range(micro):
            for r in ranks:
                (loss(model, step, r, mb) * (1.0 / (micro * len(ranks)))).backward()
        if fsdp is not None:
            before, fsdp.peak_gathered_bytes = fsdp.peak_gathered_bytes, 0
        opt.step()
        if fsdp is not None:
            in_step = max(in_step, fsdp.peak_gathered_bytes)
            fsdp.peak_gathered_bytes = max(before, fsdp.peak_gathered_bytes)
    return in_step


def flat(sd):
    return np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)])


def main():
    dist.init()
    rank, out = dist.rank(), sys.argv[1]
    res = {"diff": {}, "identical": {}, "in_step": {}, "peak": {}}
    for micro in (1, MICRO):
        if rank == 0:
            plain = make()
            train(plain, optim.Adam(plain.parameters(), lr=LR), [0, 1], micro)
            reference = flat(plain.state_dict())
        for strategy, prefetch in (("FULL_SHARD", "BACKWARD_PRE"), ("SHARD_GRAD_OP", None)):
            base = make()
            model = dist.FullyShardedDataParallel(base, units=list(base.blocks), sharding_strategy=strategy,
                                                  backward_prefetch=prefetch)
            opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR)
            name = f"{strategy}/{micro}"
            res["in_step"][name] = train(model, opt, [rank], micro, model)
            res["peak"][name] = model.peak_gathered_bytes
            mine = flat(model.state_dict())
            everyone = dist.allgather(mine)
            res["identical"][name] = bool((everyone == everyone[0]).all())
            if rank == 0:
                res["diff"][name] = float(np.abs(mine - reference).max())
    # a backward through a graph made before step(), with a forward since: torch's error on every rank
    model = dist.FullyShardedDataParallel(make())
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.SGD, stage=3, lr=0.5)
    old = loss(model, 0, rank, 0)
    opt.step()
    new = loss(model, 1, rank, 0)
    try:
        old.backward()
        error = None
    except RuntimeError as e:
        error = str(e)
    res["stale"] = dist.allgather_object(error)
    # the model trains on: the fresh graph's backward and step
    opt.zero_grad()
    (new * 0.5).backward()
    opt.step()
    mine = flat(model.state_dict())
    if rank == 0:
        plain = make()
        ref_opt = optim.SGD(plain.parameters(), lr=0.5)  # (the first step had no gradient: no change)
        sum(loss(plain, 1, r, 0) * 0.25 for r in (0, 1)).backward()  # the ranks average their gradients
        ref_opt.step()
        res["after_stale"] = float(np.abs(mine - flat(plain.state_dict())).max())
        write_json(f"{out}/result.json", res)


if __name__ == "__main__":
    main()
