"""MPI job (4 ranks): DeviceMesh (torch's API) and the wrappers given one.
Usage: mpiexec -n 4 python device_mesh_job.py OUT_DIR.

* The mesh itself: ``init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))``: its groups,
  coordinates, sub-meshes and a collective over each dimension's group; the errors for a shape that is not
  the world size, bad names and devices other than the CPU.
* Training, each against one process stepping Adam on the same global batch (every rank trains it here,
  on the plain model): FSDP HYBRID_SHARD over the 2-D mesh (replicate over dimension 0, shard over 1),
  FULL_SHARD over a 1-D mesh of the job and DDP over a 1-D sub-mesh (a row: two models trained at once);
  HYBRID_SHARD over part of the job (ranks 0, 1 on a 2 x 1 mesh, ranks 2, 3 on a 1 x 2 mesh). The data comes from
  a DistributedSampler over the group that trains each model (``num_replicas=get_world_size(g),
  rank=get_rank(g)``), so every pair covers the whole data set.

Rank 0 writes OUT_DIR/result.json: every rank's observations, errors and differences from the references.
"""
import sys

import numpy as np
from common import LR, make_model, write_json

import forgegrad as fg
import forgegrad.distributed as dist
import forgegrad.nn.functional as F
from forgegrad import optim

STEPS, PER_RANK, N = 3, 2, 24  # N: the data set's size (each sampler covers it)
rng = np.random.default_rng(7)
X = rng.standard_normal((N, 6)).astype(np.float32)
Y = rng.integers(0, 3, N).astype(np.int64)


def batches(num_replicas, rank):
    sampler = dist.DistributedSampler(X, num_replicas=num_replicas, rank=rank, seed=3)
    sampler.set_epoch(1)
    idx = sampler.indices()
    return [idx[s * PER_RANK:(s + 1) * PER_RANK] for s in range(STEPS)]


def train(model, opt, idx):
    for step in range(STEPS):
        opt.zero_grad()
        F.cross_entropy(model(fg.tensor(X[idx[step]])), fg.tensor(Y[idx[step]])).backward()
        opt.step()
    sd = model.state_dict()
    return np.concatenate([sd[k]._data.reshape(-1) for k in sorted(sd)])


def reference(num_replicas):
    """One process, each step the concatenation of every replica's batch."""
    per = [batches(num_replicas, r) for r in range(num_replicas)]
    model = make_model()
    return train(model, optim.Adam(model.parameters(), lr=LR), [np.concatenate([p[s] for p in per])
                                                                 for s in range(STEPS)])


def errors():
    out = {}
    for name, call in (("shape", lambda: dist.init_device_mesh("cpu", (3,))),
                       ("names_length", lambda: dist.init_device_mesh("cpu", (2, 2), mesh_dim_names=("a",))),
                       ("names_repeat", lambda: dist.init_device_mesh("cpu", (2, 2), mesh_dim_names=("a", "a"))),
                       ("cuda", lambda: dist.init_device_mesh("cuda", (4,))),
                       ("meta", lambda: dist.init_device_mesh("meta", (4,)))):
        try:
            call()
            out[name] = None
        except ValueError as e:
            out[name] = str(e)
    try:  # rank 3 lays the ranks out otherwise: every rank gets the error (none waits in a split)
        dist.DeviceMesh("cpu", [[0, 1], [2, 3]] if dist.rank() < 3 else [[0, 2], [1, 3]])
        out["disagree"] = None
    except ValueError as e:
        out["disagree"] = str(e)
    mesh = dist.init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
    for name, call in (("bad_name", lambda: mesh["nope"]), ("get_group_bad", lambda: mesh.get_group("nope")),
                       ("get_group_2d", lambda: mesh.get_group()),
                       ("fsdp_2d_full", lambda: dist.FullyShardedDataParallel(make_model(), device_mesh=mesh)),
                       ("fsdp_both", lambda: dist.FullyShardedDataParallel(
                           make_model(), device_mesh=mesh["shard"], process_group=mesh.get_group(1))),
                       ("hybrid_1d", lambda: dist.FullyShardedDataParallel(
                           make_model(), device_mesh=mesh["shard"], sharding_strategy="HYBRID_SHARD")),
                       ("ddp_2d", lambda: dist.DistributedDataParallel(make_model(), device_mesh=mesh))):
        try:
            call()
            out[name] = None
        except (KeyError, ValueError) as e:
            out[name] = f"{type(e).__name__}: {e.args[0]}"
    return out


def main():
    dist.init()
    rank, out = dist.rank(), sys.argv[1]
    mesh = dist.init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
    sub = mesh["shard"]
    api = {"mesh": mesh.mesh.tolist(), "ndim": mesh.ndim, "size": mesh.size(), "size1": mesh.size(1),
           "coordinate": mesh.get_coordinate(), "local": [mesh.get_local_rank("replicate"), mesh.get_local_rank(1)],
           "groups": [mesh.get_group(0).ranks, mesh.get_group("shard").ranks],
           "group_ranks": [mesh.get_group(0).rank(), mesh.get_group(1).rank()],
           "sub": [sub.mesh.tolist(), sub.ndim, sub.get_local_rank(), sub.get_group() is mesh.get_group(1),
                   sub.mesh_dim_names],
           "whole": mesh["replicate", "shard"] is mesh,
           # a collective over each dimension's group pairs up only within it
           "sums": [float(dist.allreduce(np.array([float(rank)]), op="sum", group=mesh.get_group(d))[0])
                    for d in (0, 1)],
           "repr": repr(mesh)}
    one = dist.init_device_mesh("cpu", (4,))
    api["world_reused"] = one.get_group() is dist.GroupMember.WORLD
    result = {"api": dist.allgather_object(api), "errors": dist.allgather_object(errors())}

    diff = {}
    ref4, ref2 = reference(4), reference(2)  # one process each (every rank trains them: tiny)
    model = dist.FullyShardedDataParallel(make_model(), device_mesh=mesh, sharding_strategy="HYBRID_SHARD")
    result["hybrid_groups"] = dist.allgather_object((model.shard_group.ranks, model.replicate_group.ranks))
    flat = train(model, dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR),
                 batches(4, rank))
    diff["hybrid_2x2"] = float(np.abs(flat - ref4).max())
    model = dist.FullyShardedDataParallel(make_model(), device_mesh=one)
    flat = train(model, dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR),
                 batches(4, rank))
    diff["full_shard_1d"] = float(np.abs(flat - ref4).max())

    # DDP over a row of the mesh: ranks 0, 1 and ranks 2, 3 train two models on the whole data set each
    row = mesh["shard"]
    g = row.get_group()
    ddp = dist.DistributedDataParallel(make_model(), device_mesh=row)
    flat = train(ddp, optim.Adam(ddp.parameters(), lr=LR), batches(dist.get_world_size(g), dist.get_rank(g)))
    diff["ddp_row"] = float(np.abs(flat - ref2).max())

    # HYBRID_SHARD on part of the job: ranks 0, 1 replicate (2 x 1), ranks 2, 3 shard (1 x 2)
    part_a = dist.DeviceMesh("cpu", [[0], [1]], mesh_dim_names=("replicate", "shard"))
    part_b = dist.DeviceMesh("cpu", [[2, 3]], mesh_dim_names=("replicate", "shard"))
    part = part_a if rank < 2 else part_b
    model = dist.FullyShardedDataParallel(make_model(), device_mesh=part, sharding_strategy="HYBRID_SHARD")
    pair = model.process_group
    flat = train(model, dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=LR),
                 batches(dist.get_world_size(pair), dist.get_rank(pair)))
    diff["hybrid_part"] = float(np.abs(flat - ref2).max())
    result["part"] = dist.allgather_object((pair.ranks, model.shard_group.ranks, model.replicate_group.ranks,
                                            part_a.get_coordinate(), part_b.get_coordinate()))
    result["diff"] = dist.allgather_object(diff)
    if rank == 0:
        write_json(f"{out}/result.json", result)


if __name__ == "__main__":
    main()
