"""The `cnn` suite: one training step of an MNIST-shape CNN, forgegrad against torch.

Workload: forgegrad.models.LeNet(input_size=28) = conv32(3x3, pad 1)-ReLU-maxpool2-conv64(3x3, pad 1)-
ReLU-maxpool2-fc128-ReLU-fc10 on a (64, 1, 28, 28) batch; cross-entropy loss, backward, Adam step.
torch runs the same architecture with the same initial weights and data.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from ._timing import optional_import

BATCH = 64
WORKLOAD = f"LeNet CNN step 1x28x28, batch {BATCH}, Adam"


def torch_lenet(torch):
    """torch twin of forgegrad.models.LeNet(input_size=28): same submodule names, so state dicts match."""
    tnn = torch.nn

    class TorchLeNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                                           tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2))
            self.classifier = tnn.Sequential(tnn.Flatten(), tnn.Linear(64 * 7 * 7, 128), tnn.ReLU(),
                                             tnn.Linear(128, 10))

        def forward(self, x):
            return self.classifier(self.features(x))

    return TorchLeNet()


def cnn_step_fns(torch, rng, batch: int = BATCH):
    """{"forgegrad": step, "torch": step or None}: each call is forward, loss, backward and Adam step."""
    from ..models import LeNet
    from ._steps import classifier_step_fns
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = LeNet(in_channels=1, num_classes=10, input_size=28)
    return classifier_step_fns(model, torch_lenet(torch) if torch is not None else None, x, y, torch)


def workloads(quick: bool = False) -> List[Workload]:
    return [Workload(WORKLOAD, ("forgegrad", "torch"),
                     lambda _threads: cnn_step_fns(optional_import("torch"), np.random.default_rng(0)))]


@suite("cnn")
def cnn_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.0) if quick else (7, 0.1)
    return time_workloads(workloads(quick), threads, repeat, min_time)
