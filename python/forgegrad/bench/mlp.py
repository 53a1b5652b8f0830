"""The `mlp` suite (issue 3's targets): an MLP 784-256-128-10 with ReLU, the same weights on every side.

Workloads:
  * training step at batch 64 (forward, cross_entropy, backward, Adam): forgegrad vs torch
  * inference at batch 1 (no grad): forgegrad vs torch vs onnxruntime running torch's ONNX export
    (TorchScript exporter, ``dynamo=False``; ORT with intra_op_num_threads = the thread count)
bench/bench_mlp.py is the pytest-benchmark wrapper over the same workloads.
"""
from __future__ import annotations

import io
import warnings
from typing import List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from ._timing import optional_import, ort_session

SIZES = (784, 256, 128, 10)
BATCH_TRAIN, BATCH_INFER = 64, 1


def _models(torch):
    """forgegrad model and (when torch is there) a torch copy with the same weights."""
    from .. import nn
    layers = []
    for i in range(len(SIZES) - 1):
        layers.append(nn.Linear(SIZES[i], SIZES[i + 1]))
        if i < len(SIZES) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    if torch is None:
        return model, None
    tlayers = []
    for layer in layers:
        if isinstance(layer, nn.Linear):
            lin = torch.nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(layer.weight._data))
                lin.bias.copy_(torch.from_numpy(layer.bias._data))
            tlayers.append(lin)
        else:
            tlayers.append(torch.nn.ReLU())
    return model, torch.nn.Sequential(*tlayers)


def train_fns(torch, rng):
    """{"forgegrad": step, "torch": step or None}; each step returns its loss (before the update)."""
    from ..nn import functional as F
    from ..tensor import Tensor
    from ._steps import adam_step_fns
    x = rng.standard_normal((BATCH_TRAIN, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH_TRAIN)
    model, tmodel = _models(torch)
    xt, yt = Tensor._stored(x), Tensor._stored(y)
    torch_loss = None
    if torch is not None:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def torch_loss():
            return torch.nn.functional.cross_entropy(tmodel(tx), ty)

    return adam_step_fns(model, tmodel, lambda: F.cross_entropy(model(xt), yt), torch_loss, torch)


def infer_fns(torch, ort, rng, threads):
    """{"forgegrad", "torch", "onnxruntime": forward of one batch (None for an absent runtime)}."""
    from ..autograd import no_grad
    from ..tensor import Tensor
    x = rng.standard_normal((BATCH_INFER, SIZES[0])).astype(np.float32)
    model, tmodel = _models(torch)
    model.eval()
    xt = Tensor._stored(x)

    def fg_infer():
        with no_grad():
            return model(xt)

    fns = {"forgegrad": fg_infer, "torch": None, "onnxruntime": None}
    if torch is not None:
        tmodel.eval()
        tx = torch.from_numpy(x)

        def torch_infer():
            with torch.no_grad():
                return tmodel(tx)

        fns["torch"] = torch_infer
        if ort is not None:
            buf = io.BytesIO()
            with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
                warnings.simplefilter("ignore")
                torch.onnx.export(tmodel, (tx,), buf, input_names=["x"], output_names=["y"], dynamo=False)
            sess = ort_session(ort, buf.getvalue(), threads)
            feed = {"x": x}
            fns["onnxruntime"] = lambda: sess.run(None, feed)
    return fns


def workloads(quick: bool = False) -> List[Workload]:
    return [
        Workload(f"MLP 784-256-128-10 train step, batch {BATCH_TRAIN}, Adam", ("forgegrad", "torch"),
                 lambda _threads: train_fns(optional_import("torch"), np.random.default_rng(0))),
        Workload(f"MLP 784-256-128-10 inference, batch {BATCH_INFER}", ("forgegrad", "torch", "onnxruntime"),
                 lambda threads: infer_fns(optional_import("torch"), optional_import("onnxruntime"),
                                           np.random.default_rng(0), threads)),
    ]


@suite("mlp")
def mlp_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.01) if quick else (9, 0.05)
    return time_workloads(workloads(quick), threads, repeat, min_time)
