"""Model, data and the one-process reference shared by the MPI job scripts and tests/test_distributed*.py."""
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# forgegrad comes from PYTHONPATH, which tests/test_distributed.py sets to the package the test run uses
import forgegrad as fg  # noqa: E402
import forgegrad.nn.functional as F  # noqa: E402
from forgegrad import nn, optim  # noqa: E402

STEPS = 20
GLOBAL_BATCH = 8  # divisible by 1, 2 and 4 ranks
LR = 1e-2


def make_model(hidden=16, seed=0):
    fg.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def batches(steps=STEPS, global_batch=GLOBAL_BATCH):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((steps, global_batch, 6)).astype(np.float32)
    y = rng.integers(0, 3, (steps, global_batch)).astype(np.int64)
    return x, y


def rank_slice(a, rank, size):
    b = a.shape[0] // size
    return a[rank * b:(rank + 1) * b]


def loss_of(model, x, y):
    return F.cross_entropy(model(fg.tensor(x)), fg.tensor(y))


def train_reference(steps=STEPS, start=0, model=None, opt=None):
    """One process, the whole global batch each step, plain Adam: what N ranks must reproduce."""
    model = model or make_model()
    opt = opt or optim.Adam(model.parameters(), lr=LR)
    x, y = batches()
    for s in range(start, start + steps):
        opt.zero_grad()
        loss_of(model, x[s], y[s]).backward()
        opt.step()
    return model, opt


def flat_params(model):
    return np.concatenate([p._data.reshape(-1) for p in model.parameters()])


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
