"""MPI job: DistributedDataParallel over a model whose blocks run under forgegrad.utils.checkpoint (with dropout,
and a layer used inside and outside a checkpoint) against the same DDP model without checkpointing.

Usage: mpiexec -n N python checkpoint_ddp_job.py OUT_DIR. Rank 0 writes OUT_DIR/result.json: the largest
difference between the two runs' averaged gradients and parameters over the steps (0: bit for bit), the buckets
and how many reductions the gradient hooks started during backward, and whether the ranks ended identical.
"""
import os
import sys

import numpy as np
from common import batches, flat_params, rank_slice, write_json

import forgegrad as fg
import forgegrad.distributed as dist
import forgegrad.nn.functional as F
from forgegrad import nn, optim
from forgegrad.utils.checkpoint import checkpoint

STEPS = 4


class Net(nn.Module):
    def __init__(self, ckpt):
        super().__init__()
        self.ckpt = ckpt
        self.inp = nn.Linear(6, 16)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Dropout(0.2), nn.Linear(32, 16))
                                     for _ in range(3)])
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + (checkpoint(b, h, use_reentrant=False) if self.ckpt else b(h))
        h = checkpoint(lambda v: self.blocks[0](v).tanh(), h, use_reentrant=False) if self.ckpt \
            else self.blocks[0](h).tanh()  # block 0's weights again, after its reduction may have started
        return self.out(h)


dist.init()
rank, size = dist.rank(), dist.size()
x, y = batches(steps=STEPS)
runs = []
for ckpt in (False, True):
    fg.manual_seed(0)
    model = dist.DistributedDataParallel(Net(ckpt), bucket_cap_mb=0.002)
    opt = optim.SGD(model.parameters(), lr=0.05)
    fg.manual_seed(100 + rank)  # each rank its own dropout masks, the same in both runs
    grads = []
    for s in range(STEPS):
        opt.zero_grad()
        xs, ys = rank_slice(x[s], rank, size), rank_slice(y[s], rank, size)
        F.cross_entropy(model(fg.tensor(xs)), fg.tensor(ys)).backward()
        grads.append(np.concatenate([p.grad.numpy().reshape(-1) for p in model.parameters()]))
        opt.step()
    runs.append((grads, flat_params(model.module), model._reducer))
(g0, p0, _), (g1, p1, reducer) = runs
every = dist.allgather_object(p1.tobytes())
if rank == 0:
    write_json(os.path.join(sys.argv[1], "result.json"), {
        "size": size, "grad_max_diff": max(float(np.abs(a - b).max()) for a, b in zip(g0, g1)),
        "param_max_diff": float(np.abs(p0 - p1).max()), "ranks_identical": len(set(every)) == 1,
        "buckets": len(reducer.buckets), "launched_in_backward": reducer.launched_in_backward,
        "rounds": reducer.rounds})
