"""MPI job: ZeRO-1 training that saves a consolidated checkpoint, or resumes one at any number of ranks.

Usage: python zero_checkpoint.py save CKPT STEPS [STAGE] | resume CKPT STEPS OUT.npy [plain|STAGE]
"save" trains STEPS steps from the start and writes {"model", "optimizer", "step"} on rank 0; "resume"
loads it (into a ZeroRedundancyOptimizer of STAGE (default 1; 3: the model wrapped in
FullyShardedDataParallel), or with "plain" into a plain Adam at one rank) and trains STEPS more steps, then
rank 0 writes the parameters to OUT.npy.
"""
import sys

import numpy as np
from common import LR, batches, flat_params, loss_of, make_model, rank_slice

import forgegrad as fg
import forgegrad.distributed as dist
from forgegrad import optim

dist.init()
rank, size = dist.rank(), dist.size()
mode, ckpt_path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = make_model()
last = sys.argv[5 if mode == "resume" else 4:]
plain = last == ["plain"]
stage = int(last[0]) if last and not plain else 1
net = dist.FullyShardedDataParallel(model) if stage == 3 else model
opt = optim.Adam(model.parameters(), lr=LR) if plain else dist.ZeroRedundancyOptimizer(
    net.parameters(), optim.Adam, stage=stage, bucket_cap_mb=0.0005, lr=LR)
start = 0
if mode == "resume":
    ck = fg.load(ckpt_path)
    net.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    start = int(ck["step"])
x, y = batches()
for s in range(start, start + steps):
    opt.zero_grad()
    loss_of(net, rank_slice(x[s], rank, size), rank_slice(y[s], rank, size)).backward()
    opt.step()
if mode == "save":
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": start + steps}  # collective
    if rank == 0:
        fg.save(state, ckpt_path)
else:
    final = np.concatenate([v.numpy().reshape(-1) for v in net.state_dict().values()]) if stage == 3 \
        else flat_params(model)
    if rank == 0:
        np.save(sys.argv[4], final)
