"""MPI job (4 ranks): forgegrad.train.fit on two models at once, one per process group ([0, 1] and [2, 3]).
Usage: mpiexec -n 4 python fit_groups_job.py OUT_DIR.

Group g trains a DDP model (process_group=) on its own data, sharded over its two ranks with
DistributedSampler(num_replicas=get_world_size(g), rank=get_rank(g)), with a validation set every rank of
the group holds whole, and ModelCheckpoint(OUT_DIR/g<g>-{epoch}.safetensors). fit averages the losses and
metrics over the model's group (not the job: the other group trains another model on other data), prints
and checkpoints on the group's rank 0. Each rank writes OUT_DIR/rank<r>.json (its history);
tests/test_distributed_groups.py checks the validation loss against the group's last checkpoint.
"""
import faulthandler
import sys

import numpy as np
from common import make_model, write_json

import forgegrad.distributed as dist
from forgegrad import nn, optim
from forgegrad.data import DataLoader, TensorDataset
from forgegrad.train import ModelCheckpoint, fit

EPOCHS = 2


def group_data(gi):
    """Group ``gi``'s (train x, train y, val x, val y)."""
    rng = np.random.default_rng(100 + gi)
    return (rng.standard_normal((24, 6)).astype(np.float32), rng.integers(0, 3, 24).astype(np.int64),
            rng.standard_normal((10, 6)).astype(np.float32), rng.integers(0, 3, 10).astype(np.int64))


def main(out):
    faulthandler.dump_traceback_later(40, exit=True)  # a hang shows where it waits
    dist.init()
    group, _ = dist.new_subgroups(2)
    gi = dist.rank() // 2
    x, y, vx, vy = group_data(gi)
    train = TensorDataset(x, y)
    sampler = dist.DistributedSampler(train, num_replicas=dist.get_world_size(group), rank=dist.get_rank(group),
                                      seed=gi)
    model = dist.DistributedDataParallel(make_model(seed=gi), process_group=group)
    hist = fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-2),
               DataLoader(train, batch_size=4, sampler=sampler), epochs=EPOCHS,
               val_loader=DataLoader(TensorDataset(vx, vy), batch_size=5), metrics=("accuracy",),
               callbacks=[ModelCheckpoint(f"{out}/g{gi}-{{epoch}}.safetensors")], progress="line")
    write_json(f"{out}/rank{dist.rank()}.json", {"history": {k: list(v) for k, v in hist.items()}})


if __name__ == "__main__":
    main(sys.argv[1])
