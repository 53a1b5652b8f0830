"""MPI job: forgegrad.train.fit with a ZeRO-2 optimizer (and ZeRO-3, FullyShardedDataParallel), an lr scheduler
and ModelCheckpoint(save_optimizer=True), against the same fit with DDP + Adam.

Usage: mpiexec -n N python zero_fit.py OUT_DIR. Rank 0 writes OUT_DIR/result.json and the checkpoints
OUT_DIR/{ddp,zero,zero3}-{epoch}.safetensors (only rank 0 writes files).
"""
import sys

import numpy as np
from common import flat_params, make_model, write_json

import forgegrad as fg
import forgegrad.distributed as dist
from forgegrad import nn, optim
from forgegrad.data import DataLoader, TensorDataset
from forgegrad.train import ModelCheckpoint, fit

dist.init()
rank = dist.rank()
out = sys.argv[1]
rng = np.random.default_rng(0)
n = 48
x = rng.standard_normal((n, 6)).astype(np.float32)
y = rng.integers(0, 3, n).astype(np.int64)
ds = TensorDataset(x, y)


def train(kind):
    model = make_model()
    if kind == "ddp":
        net = dist.DistributedDataParallel(model)
        opt = optim.Adam(net.parameters(), lr=1e-2)
    else:
        net = dist.FullyShardedDataParallel(model) if kind == "zero3" else model
        opt = dist.ZeroRedundancyOptimizer(net.parameters(), optim.Adam, stage=3 if kind == "zero3" else 2,
                                           bucket_cap_mb=0.0005, lr=1e-2)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    loader = DataLoader(ds, batch_size=4, sampler=dist.DistributedSampler(ds, shuffle=True, seed=3))
    hist = fit(net, nn.CrossEntropyLoss(), opt, loader, epochs=2, scheduler=sched, progress=False,
               callbacks=[ModelCheckpoint(out + "/" + kind + "-{epoch}.safetensors", save_optimizer=True)])
    final = np.concatenate([v.numpy().reshape(-1) for v in net.state_dict().values()]) if kind == "zero3" \
        else flat_params(model)
    return final, {k: list(v) for k, v in hist.items()}


ddp_params, ddp_hist = train("ddp")
zero_params, zero_hist = train("zero")
zero3_params, zero3_hist = train("zero3")
if rank == 0:
    zero3_ck = fg.load(out + "/zero3-2.safetensors")
    ddp_ck, zero_ck = fg.load(out + "/ddp-2.safetensors"), fg.load(out + "/zero-2.safetensors")
    state_diff = max(float(np.abs(np.asarray(zero_ck["optimizer"]["state"][i][k]) - np.asarray(v)).max())
                     for i, st in ddp_ck["optimizer"]["state"].items() for k, v in st.items())
    write_json(f"{out}/result.json", {
        "params_diff": float(np.abs(zero_params - ddp_params).max()),
        "zero3_params_diff": float(np.abs(zero3_params - ddp_params).max()),
        "zero3_loss_diff": max(abs(a - b) for a, b in zip(zero3_hist["loss"], ddp_hist["loss"])),
        "zero3_checkpoint_diff": max(  # the plain model's names; DDP's have "module." in front
            float(np.abs(np.asarray(zero3_ck["model"][k.removeprefix("module.")]) - np.asarray(v)).max())
            for k, v in ddp_ck["model"].items()),
        "loss_diff": max(abs(a - b) for a, b in zip(zero_hist["loss"], ddp_hist["loss"])),
        "lr": zero_hist["lr"], "state_diff": state_diff, "epoch": int(zero_ck["epoch"]),
        "scheduler_epoch": zero_ck["scheduler"]["last_epoch"],
        "same_keys": sorted(ddp_ck["optimizer"]["state"]) == sorted(zero_ck["optimizer"]["state"])})
