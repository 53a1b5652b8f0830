"""What the autograd graph keeps (forgegrad._graph_memory) and what the backward engine allocates, per model:

    PYTHONPATH=python python bench/bench_graph_memory.py [--batch 64 --steps 5]

Models: LeNet (conv, relu, pool, flatten, linear), a ViT-style patch embedding (conv, flatten(2), transpose,
+ position, layer norm, linear: views whose output no rule reads) and a ResNet-like stack of residual blocks
(skip connections: gradients added in the engine's pending slots). For each, with tracemalloc (numpy memory):
``kept`` is the memory the graph holds after the forward pass once user code has dropped its intermediates,
``peak`` the largest amount alive during forward + backward, both above the parameters; ``new_sums`` the
gradient additions that allocated a new array in one step (the others went in place); ``step`` the median
training step time (forward, backward, SGD; threads pinned to 1, measured without tracemalloc). Compare two
checkouts by running this with each one's PYTHONPATH.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc

import numpy as np


def _models(fg):
    nn = fg.nn

    class Patches(nn.Module):  # (N, 3, 32, 32) -> 64 patches of 4x4 -> (N, 64, 96) -> mean -> 10 classes
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 96, 4, stride=4)
            self.pos = nn.Parameter(fg.zeros(1, 64, 96))
            self.norm = nn.LayerNorm(96)
            self.head = nn.Linear(96, 10)

        def forward(self, x):
            x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
            return self.head(self.norm(x).mean(1))

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return (x + self.c2(self.c1(x).relu())).relu()

    class ResNetLike(nn.Module):
        def __init__(self, c=16, blocks=3):
            super().__init__()
            self.stem = nn.Conv2d(3, c, 3, padding=1)
            self.blocks = nn.Sequential(*[Block(c) for _ in range(blocks)])
            self.head = nn.Linear(c, 10)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x).relu()).mean((2, 3)))

    from forgegrad.models import LeNet
    return {"lenet": (lambda: LeNet(1, 10, 28), (1, 28, 28)), "patches": (Patches, (3, 32, 32)),
            "resnet_like": (ResNetLike, (3, 16, 16))}


def measure(name: str, batch: int, steps: int) -> dict:
    import forgegrad as fg
    fg.set_num_threads(1)
    fg.manual_seed(0)
    make, shape = _models(fg)[name]
    model = make()
    opt = fg.optim.SGD(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = fg.tensor(rng.standard_normal((batch,) + shape).astype(np.float32))
    y = fg.tensor(rng.integers(0, 10, batch))

    def step():
        opt.zero_grad()
        fg.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # (optimizer state and caches made once)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    loss = fg.nn.functional.cross_entropy(model(x), y)
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - base
    opt.zero_grad()
    loss.backward()
    opt.step()
    del loss
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    # the gradient sums that made a new array in one step (the engine's additions of pending gradients and the
    # leaves' accumulation both go through devices.add; an addition in place does not)
    from forgegrad import devices
    add, made = devices.add, [0]

    def counted(a, b):
        made[0] += 1
        return add(a, b)

    devices.add = counted
    try:
        step()
    finally:
        devices.add = add
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"model": name, "batch": batch, "kept_kib": round(kept / 1024), "peak_kib": round(peak / 1024),
            "new_sums": made[0], "step_ms": round(1e3 * statistics.median(times), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--models", nargs="*", default=["lenet", "patches", "resnet_like"])
    args = ap.parse_args()
    for name in args.models:
        print(json.dumps(measure(name, args.batch, args.steps)))


if __name__ == "__main__":
    main()
