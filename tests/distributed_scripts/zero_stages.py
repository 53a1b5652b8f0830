"""MPI job: ZeRO stages 1, 2 and 3 against DDP + the plain optimizer, with clipping, accumulation and a scheduler.

Usage: mpiexec -n N python zero_stages.py OUT_DIR. Rank 0 writes OUT_DIR/result.json: per variant the
largest parameter difference from its DDP reference over STEPS steps, and per rank the memory figures.
"""
import sys

import numpy as np
from common import LR, STEPS, batches, flat_params, loss_of, make_model, rank_slice, write_json

import forgegrad.distributed as dist
from forgegrad import nn, optim

dist.init()
rank, size = dist.rank(), dist.size()
out = sys.argv[1]
x, y = batches()
CLIP = 0.05  # below the gradients' norm: every step clips
CAP = 0.0005  # MB: several buckets for this small model


def run(kind, clip=False, accumulate=False, no_sync=False, reshard=True, prefetch=None):
    """STEPS steps of one variant; returns the parameters after every step and the clipped norms.

    kind "ddp": DistributedDataParallel + the plain optimizer (the reference); "zero1"/"zero2": no DDP;
    "zero3": FullyShardedDataParallel. clip: the global 2-norm clipped to CLIP (DDP:
    nn.utils.clip_grad_norm_; ZeRO stages 2 and 3 through max_grad_norm, stage 1 through
    clip_grad_norm_). accumulate: two micro-batches per step (no_sync: the first under no_sync).
    With clip or accumulate the optimizer is AdamW under a StepLR. reshard: stage 3's reshard_after_forward.
    prefetch: stage 3's forward_prefetch / backward_prefetch arguments (default: FSDP's).
    """
    model = make_model(seed=0 if rank == 0 else 30 + rank)  # ZeRO and DDP broadcast rank 0's weights
    cls, kw = (optim.AdamW, {"weight_decay": 0.1}) if clip or accumulate else (optim.Adam, {})
    if kind == "ddp":
        net = dist.DistributedDataParallel(model)
        opt = cls(net.parameters(), lr=LR, **kw)
        sync = net.no_sync
    else:
        stage = int(kind[-1])
        net = dist.FullyShardedDataParallel(model, reshard_after_forward=reshard, **(prefetch or {})) \
            if stage == 3 else model
        extra = {"max_grad_norm": CLIP} if clip and stage >= 2 else {}
        opt = dist.ZeroRedundancyOptimizer(net.parameters(), cls, stage=stage, bucket_cap_mb=CAP, lr=LR, **kw,
                                           **extra)
        sync = opt.no_sync
    sched = optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5) if clip or accumulate else None
    trajectory, norms = [], []
    for s in range(STEPS):
        xs, ys = rank_slice(x[s], rank, size), rank_slice(y[s], rank, size)
        opt.zero_grad()
        if accumulate:
            h = len(xs) // 2
            if no_sync:
                with sync():
                    (loss_of(net, xs[:h], ys[:h]) * 0.5).backward()
            else:
                (loss_of(net, xs[:h], ys[:h]) * 0.5).backward()
            (loss_of(net, xs[h:], ys[h:]) * 0.5).backward()
        else:
            loss_of(net, xs, ys).backward()
        if clip and kind == "ddp":
            norms.append(float(nn.utils.clip_grad_norm_(net.parameters(), CLIP).item()))
        elif clip and kind == "zero1":
            norms.append(float(opt.clip_grad_norm_(CLIP).item()))
        opt.step()
        if sched is not None:
            sched.step()
        # stage 3: the parameters exist only as shards between steps; state_dict gathers them
        trajectory.append(np.concatenate([v.numpy().reshape(-1) for v in net.state_dict().values()])
                          if kind == "zero3" else flat_params(model))
    if kind == "zero3":  # the most parameter bytes gathered at once, and the largest unit's
        name = "no_prefetch" if prefetch == dict(backward_prefetch=None) else f"reshard_{reshard}"
        if prefetch is None or name == "no_prefetch":
            result[f"zero3_peak_gathered_{name}"] = [net.peak_gathered_bytes, max(u.full.nbytes for u in net.units)]
    return np.stack(trajectory), norms, opt


def max_diff(a, b):
    return float(np.abs(a - b).max())


result = {"size": size}
finals, trajectories = {}, {}
ddp, _, _ = run("ddp")
for kind in ("zero1", "zero2", "zero3"):
    traj, _, opt = run(kind)
    trajectories[kind] = traj
    result[kind] = max_diff(traj, ddp)
    finals[kind] = traj[-1]
    result[kind + "_ranks_identical"] = bool((dist.allgather(traj[-1]) == traj[-1]).all())
    mem = opt.memory_bytes()
    mem["peak_staging"] = opt._reducer.peak_staging_bytes if opt._reducer else 0
    mem["launched_in_backward"] = opt._reducer.launched_in_backward if opt._reducer else 0
    mem["buckets"] = sum(len(g.units) for g in opt.groups)
    result[kind + "_memory"] = dist.allgather_object(mem)
result["full_params_bytes"] = int(sum(p._data.nbytes for p in make_model().parameters()))

ddp_b, ddp_norms, _ = run("ddp", clip=True, accumulate=True, no_sync=True)
for name, kwargs in (("zero2_clip_accumulate", dict(clip=True, accumulate=True)),
                     ("zero2_clip_no_sync", dict(clip=True, accumulate=True, no_sync=True)),
                     ("zero1_clip_no_sync", dict(clip=True, accumulate=True, no_sync=True)),
                     ("zero3_clip_accumulate", dict(clip=True, accumulate=True)),
                     ("zero3_clip_no_sync", dict(clip=True, accumulate=True, no_sync=True)),
                     ("zero3_keep_clip_accumulate", dict(clip=True, accumulate=True, reshard=False))):
    traj, norms, _ = run(name.split("_")[0], **kwargs)
    trajectories[name] = traj
    result[name] = max_diff(traj, ddp_b)
    if norms:
        result[name + "_norm_diff"] = max_diff(np.array(norms), np.array(ddp_norms))
result["clipped_steps"] = int(sum(n > CLIP for n in ddp_norms))

# prefetch only moves data: every setting gives the default's parameters bit for bit, after every step
same = {}
for name, default, kwargs in (
        ("none", "zero3", dict(prefetch=dict(backward_prefetch=None))),
        ("post", "zero3", dict(prefetch=dict(backward_prefetch="BACKWARD_POST"))),
        ("forward_pre", "zero3", dict(prefetch=dict(forward_prefetch=True))),
        ("accumulate_none", "zero3_clip_accumulate", dict(clip=True, accumulate=True,
                                                          prefetch=dict(backward_prefetch=None))),
        ("accumulate_forward_post", "zero3_clip_accumulate",
         dict(clip=True, accumulate=True, prefetch=dict(forward_prefetch=True, backward_prefetch="BACKWARD_POST"))),
        ("keep_forward", "zero3_keep_clip_accumulate", dict(clip=True, accumulate=True, reshard=False,
                                                            prefetch=dict(forward_prefetch=True)))):
    same[name] = bool(np.array_equal(run("zero3", **kwargs)[0], trajectories[default]))
result["zero3_prefetch_identical"] = same
if rank == 0:
    np.save(f"{out}/zero2.npy", finals["zero2"])
    np.save(f"{out}/zero3.npy", finals["zero3"])
    write_json(f"{out}/result.json", result)
