"""MPI job that goes wrong on purpose.
Usage: mpiexec -n N python failing_job.py kill|raise|exit|mismatch|zero_mismatch|zero_stage_mismatch|fsdp_mismatch

kill: rank 1 is SIGKILLed at step 5 of a training loop; raise: rank 1 raises at step 5; exit: rank 1
calls sys.exit(3) at step 5;
mismatch: rank 1 builds a different model, which DistributedDataParallel must reject at wrap time;
zero_mismatch: the same for a ZeRO-2 ZeroRedundancyOptimizer at construction; zero_stage_mismatch: rank 1
asks for ZeRO stage 1, the others for stage 2; fsdp_mismatch: rank 1 wraps the model in a FullyShardedDataParallel
with reshard_after_forward=False, the others with True (the ranks' collectives would not pair up).
The other ranks keep training (they would block in the next allreduce): the job must still end.
"""
import os
import signal
import sys

from common import batches, loss_of, make_model, rank_slice

import forgegrad.distributed as dist
from forgegrad import optim

dist.init()
rank, size = dist.rank(), dist.size()
mode = sys.argv[1]
if mode.startswith("zero_"):
    hidden, stage = (17 if mode == "zero_mismatch" else 16, 1 if mode == "zero_stage_mismatch" else 2) if rank == 1 \
        else (16, 2)
    dist.ZeroRedundancyOptimizer(make_model(hidden=hidden).parameters(), optim.Adam, stage=stage)
if mode == "fsdp_mismatch":
    model = dist.FullyShardedDataParallel(make_model(), reshard_after_forward=rank == 1)
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=1e-3)
else:
    model = dist.DistributedDataParallel(make_model(hidden=17 if (mode == "mismatch" and rank == 1) else 16))
    opt = optim.Adam(model.parameters(), lr=1e-3)
x, y = batches(steps=1)
for step in range(10_000):
    if rank == 1 and step == 5:
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "exit":
            sys.exit(3)
        raise RuntimeError("rank 1 failed on purpose")
    opt.zero_grad()
    loss_of(model, rank_slice(x[0], rank, size), rank_slice(y[0], rank, size)).backward()
    opt.step()
print("a rank finished although another one failed", flush=True)
