"""MPI job (1, 2 or 3 ranks): nn.SyncBatchNorm on uneven (and empty) per-rank batches, a DDP + SyncBatchNorm
training run, and (3 ranks) SyncBatchNorm over a sub-group. Usage: mpiexec -n N python sync_batchnorm_job.py OUT_DIR.

Every rank takes its rows of one global batch (``rows``); rank r writes OUT_DIR/rank<r>.npz with its outputs, input
gradients, its share of the weight/bias gradients and the running statistics, and OUT_DIR/ddp<r>.npy with the
DDP model's final parameters. tests/test_sync_batchnorm.py checks them against one process (forgegrad's and
torch's BatchNorm) on the concatenated batch.
"""
import faulthandler
import sys

import numpy as np

import forgegrad as fg
import forgegrad.distributed as dist
import forgegrad.nn.functional as F
from forgegrad import nn, optim

C = 3
STEPS = 2
# name: (per-sample shape after the channels, SyncBatchNorm keyword arguments, per-rank batch sizes by world size)
CASES = {
    "4d": ((4, 5), {"momentum": 0.3}, {1: [7], 2: [3, 5], 3: [2, 1, 4]}),
    "2d_cumulative": ((), {"momentum": None}, {1: [9], 2: [4, 6], 3: [5, 1, 3]}),  # rank 1: one value
    "3d_no_affine": ((6,), {"affine": False}, {1: [5], 2: [1, 4], 3: [2, 2, 3]}),
    "empty_rank": ((2, 3), {"eps": 1e-3}, {1: [4], 2: [0, 4], 3: [3, 0, 2]}),
    "no_running_stats": ((4,), {"track_running_stats": False}, {1: [6], 2: [2, 3], 3: [1, 3, 2]}),
    "5d_no_bias": ((2, 3, 2), {"bias": False}, {1: [3], 2: [2, 1], 3: [1, 1, 2]}),
    "3d_float64": ((5,), {"dtype": fg.float64}, {1: [6], 2: [2, 4], 3: [3, 1, 2]}),
    "6d": ((2, 2, 3, 2), {"momentum": 0.5}, {1: [3], 2: [1, 2], 3: [1, 1, 1]}),
}
DDP_SIZES = {1: [10], 2: [4, 7], 3: [5, 2, 4]}
DDP_STEPS = 3


def data(case, world, step):
    """The global batch (x, upstream gradient) of ``case`` at ``step``, and the per-rank sizes."""
    tail, _, sizes = CASES[case]
    sizes = sizes[world]
    rng = np.random.default_rng([len(case), step, sum(map(ord, case))])
    shape = (sum(sizes), C) + tail
    dtype = np.float64 if CASES[case][1].get("dtype") is fg.float64 else np.float32
    x = (rng.standard_normal(shape) * 2 + rng.standard_normal((1, C) + (1,) * len(tail))).astype(dtype)
    return x, rng.standard_normal(shape).astype(dtype), sizes


def affine(case):
    rng = np.random.default_rng(sum(map(ord, case)) + 1)
    dtype = np.float64 if CASES[case][1].get("dtype") is fg.float64 else np.float32
    return rng.uniform(0.5, 1.5, C).astype(dtype), rng.standard_normal(C).astype(dtype)


def rows(a, sizes, rank):
    start = sum(sizes[:rank])
    return a[start:start + sizes[rank]]


def ddp_model(sync, seed=3):
    fg.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    return nn.SyncBatchNorm.convert_sync_batchnorm(net) if sync else net


def ddp_data(world, step):
    sizes = DDP_SIZES[world]
    rng = np.random.default_rng(100 + step)
    n = sum(sizes)
    return rng.standard_normal((n, 5)).astype(np.float32), rng.integers(0, 3, n).astype(np.int64), sizes


def run_case(case, world, rank, group=None, prefix=""):
    """Forward and backward of ``STEPS`` training batches, then one eval forward: this rank's results."""
    kw = CASES[case][1]
    m = nn.SyncBatchNorm(C, process_group=group, **kw)
    if m.weight is not None:
        w, b = affine(case)
        with fg.no_grad():
            m.weight.copy_(fg.tensor(w))
            if m.bias is not None:
                m.bias.copy_(fg.tensor(b))
    out = {}
    for step in range(STEPS):
        x, g, sizes = data(case, world, step)
        xf = fg.tensor(rows(x, sizes, rank), requires_grad=True)
        y = m(xf)
        (y * fg.tensor(rows(g, sizes, rank))).sum().backward()
        out[f"y{step}"], out[f"dx{step}"] = y.detach().numpy(), xf.grad.numpy()
        for name in ("weight", "bias"):
            p = getattr(m, name)
            if p is not None:
                out[f"d{name}{step}"] = p.grad.numpy().copy()
                p.grad = None
    if m.track_running_stats:
        out.update(running_mean=m.running_mean.numpy(), running_var=m.running_var.numpy(),
                   num_batches_tracked=m.num_batches_tracked.numpy())
    m.eval()
    x, _, sizes = data(case, world, 0)
    out["y_eval"] = m(fg.tensor(rows(x, sizes, rank))).numpy()
    return {f"{prefix}{case}/{k}": v for k, v in out.items()}


def run_ddp(world, rank):
    """DDP over a model with SyncBatchNorm: every rank's loss is its rows' share of the global mean loss, times the
    world size (DDP averages), so the steps are one process's on the whole batch. SGD, not Adam: the Linear bias
    before the norm has a true gradient of 0, and Adam would turn its rounding noise into full-size steps."""
    # tiny buckets: the last layer's allreduce is in flight while SyncBatchNorm's backward reduces its sums
    model = dist.DistributedDataParallel(ddp_model(sync=True), bucket_cap_mb=0.0001)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(DDP_STEPS):
        x, y, sizes = ddp_data(world, step)
        opt.zero_grad()
        loss = F.cross_entropy(model(fg.tensor(rows(x, sizes, rank))), fg.tensor(rows(y, sizes, rank)),
                               reduction="sum") * (world / sum(sizes))
        loss.backward()
        opt.step()
    sd = model.module.state_dict()
    return np.concatenate([sd[k].numpy().astype(np.float64).reshape(-1) for k in sorted(sd)])


def main(out_dir):
    faulthandler.dump_traceback_later(100, exit=True)
    dist.init()
    world, rank = dist.size(), dist.rank()
    res = {}
    for case in CASES:
        res.update(run_case(case, world, rank))
    try:
        nn.SyncBatchNorm(C, process_group="world")(fg.randn(4, C))
    except TypeError as e:
        res["bad_group_error"] = np.array(str(e))
    if world == 3:  # statistics over ranks 0 and 2 only; rank 1 is outside the group
        g = dist.new_group([0, 2])
        if rank == 1:
            try:
                nn.SyncBatchNorm(C, process_group=g).train()(fg.randn(2, C))
            except ValueError as e:
                res["subgroup_error"] = np.array(str(e))
        else:
            res.update(run_case("4d", 2, rank // 2, group=g, prefix="subgroup_"))  # world 2's rows
            conv = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(C)), process_group=g)
            res["converted_group_ranks"] = np.array(conv[0].process_group.ranks)
    np.savez(f"{out_dir}/rank{rank}.npz", **res)
    np.save(f"{out_dir}/ddp{rank}.npy", run_ddp(world, rank))


if __name__ == "__main__":
    main(sys.argv[1])
