"""The `cnn` suite: an MNIST-shape CNN's training step (forgegrad against torch) and its inference
(forgegrad against torch and onnxruntime).

Model: forgegrad.models.LeNet(input_size=28) = conv32(3x3, pad 1)-ReLU-maxpool2-conv64(3x3, pad 1)-
ReLU-maxpool2-fc128-ReLU-fc10, the same weights on every side.
  * training step on a (64, 1, 28, 28) batch: cross-entropy loss, backward, Adam step;
  * inference at batch 1 and 16 (what `forgegrad serve` runs): forgegrad's `nn.utils.freeze` copy
    under no_grad, torch's twin under no_grad, onnxruntime on forgegrad's ONNX export of the model.
"""
from __future__ import annotations

import os
import tempfile
from typing import List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from ._timing import optional_import, ort_session

BATCH = 64
WORKLOAD = f"LeNet CNN step 1x28x28, batch {BATCH}, Adam"
INFER_BATCHES = (1, 16)


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


def infer_fns(torch, ort, rng, threads: int, batch: int) -> dict:
    """{"forgegrad", "torch", "onnxruntime": one forward of the batch}, None for an absent runtime."""
    from .. import nn
    from ..autograd import no_grad
    from ..models import LeNet
    from ..random import manual_seed
    from ..tensor import Tensor
    manual_seed(0)
    model = LeNet(in_channels=1, num_classes=10, input_size=28).eval()
    frozen = nn.utils.freeze(model)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    xt = Tensor._stored(x)

    def fg_infer():
        with no_grad():
            return frozen(xt)

    fns = {"forgegrad": fg_infer, "torch": None, "onnxruntime": None}
    if torch is not None:
        tm = torch_lenet(torch).eval()
        tm.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()})
        tx = torch.from_numpy(x)

        def torch_infer():
            with torch.no_grad():
                return tm(tx)

        fns["torch"] = torch_infer
    if ort is not None and optional_import("onnx") is not None:
        from .. import onnx as fonnx
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "lenet.onnx")
            fonnx.export(model, Tensor._stored(x[:1]), path, input_names=["x"], verify=False)
            with open(path, "rb") as f:
                data = f.read()
        sess = ort_session(ort, data, threads)
        fns["onnxruntime"] = lambda: sess.run(None, {"x": x})
    return fns


def _infer_workload(batch: int) -> Workload:
    return Workload(f"LeNet CNN inference 1x28x28, batch {batch}", ("forgegrad", "torch", "onnxruntime"),
                    lambda threads: infer_fns(optional_import("torch"), optional_import("onnxruntime"),
                                              np.random.default_rng(0), threads, batch))


def workloads(quick: bool = False) -> List[Workload]:
    return [Workload(WORKLOAD, ("forgegrad", "torch"),
                     lambda _threads: cnn_step_fns(optional_import("torch"), np.random.default_rng(0)))] + \
        [_infer_workload(b) for b in INFER_BATCHES]


@suite("cnn")
def cnn_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.0) if quick else (7, 0.1)
    return time_workloads(workloads(quick), threads, repeat, min_time)
