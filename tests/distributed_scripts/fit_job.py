"""MPI job: forgegrad.train.fit, unchanged, on a DDP model with a DistributedSampler.

Usage: mpiexec -n N python fit_job.py OUT_DIR. Each rank writes OUT_DIR/rank{r}.json with its history
and the sample indices it saw per epoch; ModelCheckpoint writes OUT_DIR/ckpt-{epoch}.safetensors.
"""
import sys

import numpy as np
from common import make_model, write_json

import forgegrad.distributed as dist
from forgegrad import nn, optim
from forgegrad.data import DataLoader, TensorDataset
from forgegrad.train import ModelCheckpoint, fit

dist.init()
rank = dist.rank()
out = sys.argv[1]
rng = np.random.default_rng(0)
n = 45  # not a multiple of the ranks x batch: padding and a short last batch
x = rng.standard_normal((n, 6)).astype(np.float32)
y = rng.integers(0, 3, n).astype(np.int64)
seen = []


class Recorder(TensorDataset):
    def __getitem__(self, i):
        seen[-1].append(int(i))
        return super().__getitem__(i)


ds = Recorder(x, y)
sampler = dist.DistributedSampler(ds, shuffle=True, seed=3)
loader = DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=lambda items: tuple(
    np.stack([it[k]._data if hasattr(it[k], "data") else it[k] for it in items]) for k in range(2)))
model = dist.DistributedDataParallel(make_model())


class EpochStart(ModelCheckpoint):
    def on_epoch_begin(self, epoch, logs=None):
        seen.append([])


hist = fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-2), loader, epochs=3,
           val_loader=DataLoader(TensorDataset(x, y), batch_size=8, sampler=dist.DistributedSampler(
               TensorDataset(x, y), shuffle=False)),
           callbacks=[EpochStart(out + "/ckpt-{epoch}.safetensors", save_best_only=False)], progress="line")
write_json(f"{out}/rank{rank}.json", {"history": {k: list(v) for k, v in hist.items()}, "seen": seen})
