"""MPI job: DDP, DistributedOptimizer, no_sync and ZeRO-1 against each other over STEPS Adam steps.

Usage: mpiexec -n N python ddp_checks.py OUT_DIR. Rank 0 writes OUT_DIR/params.npy (the DDP model's
final parameters) and OUT_DIR/result.json.
"""
import sys

import numpy as np
from common import LR, STEPS, batches, flat_params, loss_of, make_model, rank_slice, write_json

import forgegrad as fg
import forgegrad.distributed as dist
from forgegrad import nn, optim

dist.init()
rank, size = dist.rank(), dist.size()
out = sys.argv[1]
x, y = batches()

# every rank starts from different weights: DDP must broadcast rank 0's
ddp = dist.DistributedDataParallel(make_model(seed=rank), bucket_cap_mb=0.0005)  # several buckets
opt = optim.Adam(ddp.parameters(), lr=LR)
# Horovod's shape
hvd_model = make_model(seed=0 if rank == 0 else 10 + rank)
dist.broadcast_parameters(hvd_model.state_dict(), 0)
hvd_opt = dist.DistributedOptimizer(optim.Adam(hvd_model.parameters(), lr=LR), bucket_cap_mb=0.0005)
# ZeRO-1: its own model copy, no DDP wrapper (the reduce-scatter averages)
zero_model = make_model(seed=0 if rank == 0 else 20 + rank)  # rank 0's weights are broadcast
zero = dist.ZeroRedundancyOptimizer(zero_model.parameters(), optim.Adam, lr=LR)
# gradient accumulation: two micro-batches per step, the first under no_sync
acc = dist.DistributedDataParallel(make_model(seed=0))
acc_opt = optim.Adam(acc.parameters(), lr=LR)

zero_diff, hvd_diff, acc_diff = 0.0, 0.0, 0.0
for s in range(STEPS):
    xs, ys = rank_slice(x[s], rank, size), rank_slice(y[s], rank, size)
    opt.zero_grad()
    loss_of(ddp, xs, ys).backward()
    opt.step()

    hvd_opt.zero_grad()
    loss_of(hvd_model, xs, ys).backward()
    hvd_opt.step()

    zero.zero_grad()
    loss_of(zero_model, xs, ys).backward()
    zero.step()

    acc_opt.zero_grad()
    h = len(xs) // 2
    with acc.no_sync():
        (loss_of(acc, xs[:h], ys[:h]) * 0.5).backward()
    (loss_of(acc, xs[h:], ys[h:]) * 0.5).backward()
    acc_opt.step()

    ref = flat_params(ddp.module)
    zero_diff = max(zero_diff, float(np.abs(flat_params(zero_model) - ref).max()))
    hvd_diff = max(hvd_diff, float(np.abs(flat_params(hvd_model) - ref).max()))
    acc_diff = max(acc_diff, float(np.abs(flat_params(acc.module) - ref).max()))

# Horovod's broadcast_optimizer_state: a fresh optimizer on the other ranks gets rank 0's trained state
fresh = opt if rank == 0 else optim.Adam(make_model().parameters(), lr=LR)
dist.broadcast_optimizer_state(fresh, 0)
pairs = list(zip(fresh.state_dict()["state"].values(), opt.state_dict()["state"].values()))
state_ok = len(fresh.state) == len(opt.state) > 0 and all(
    np.array_equal(a["exp_avg"]._data, b["exp_avg"]._data) and float(a["step"]._data) == STEPS for a, b in pairs)
state_ok = bool(dist.allreduce(np.array([state_ok], np.int64), op="min")[0])

# buffers: BatchNorm running statistics follow rank 0's on every rank (broadcast before each forward)
bn = dist.DistributedDataParallel(nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4)))
for s in range(3):
    bn(fg.tensor(rank_slice(x[s], rank, size))).sum().backward()
bn(fg.tensor(x[3]))  # the same batch everywhere: equal statistics only if they started from rank 0's
stats = dist.allgather(bn.module[1].running_mean)
buffers_identical = bool((stats._data == stats._data[0]).all())

final = flat_params(ddp.module)
everyone = dist.allgather(final)
full_adam_bytes = sum(st["exp_avg"]._data.nbytes + st["exp_avg_sq"]._data.nbytes for st in opt.state.values())
zero_bytes = dist.allgather(np.array([zero.local_state_bytes()], np.int64)).reshape(-1).tolist()
if rank == 0:
    np.save(f"{out}/params.npy", final)
    write_json(f"{out}/result.json", {
        "size": size, "ranks_identical": bool((everyone == everyone[0]).all()),
        "optimizer_state_broadcast": state_ok, "buffers_identical": buffers_identical,
        "zero_max_diff": zero_diff, "hvd_max_diff": hvd_diff, "no_sync_max_diff": acc_diff,
        "full_adam_state_bytes": full_adam_bytes, "zero_state_bytes": zero_bytes,
        "buckets": len(ddp._reducer.buckets), "launched_in_backward": ddp._reducer.launched_in_backward})
