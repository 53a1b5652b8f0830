"""The `conv_transpose` suite: nn.ConvTranspose2d (forward, and forward + input, weight and bias gradients) against
torch's, from the same weights, at DCGAN generator shapes (kernel 4, stride 2, padding 1: each layer doubles the
image): 256 -> 128 channels at 8x8 -> 16x16, and the last layer 64 -> 3 channels at 32x32 -> 64x64, batch 16.
forgegrad runs the layer on Tensors (its op, on conv2d's backward-input kernel), torch its module; the forward
rows under no_grad on both sides.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from ._steps import layer_fns

SHAPES = (((16, 256, 8, 8), 128), ((16, 64, 32, 32), 3))
RUNTIMES = ("forgegrad", "torch")


def _fns(xshape, out_channels, backward: bool):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xshape).astype(np.float32)
    gy = rng.standard_normal((xshape[0], out_channels, 2 * xshape[2], 2 * xshape[3])).astype(np.float32)
    return layer_fns(lambda nn: nn.ConvTranspose2d(xshape[1], out_channels, 4, stride=2, padding=1), x, gy, backward)


def workloads(quick: bool = False) -> List[Workload]:
    """Per shape: the forward, then forward + backward."""
    out = []
    for xshape, oc in SHAPES[1:] if quick else SHAPES:
        n, c, h, w = xshape
        flop = 2.0 * n * c * h * w * oc * 16
        name = f"convT4x4s2 {n}x{c}x{h}x{w}->{oc}"
        out.append(Workload(name + " fwd", RUNTIMES, lambda _t, s=xshape, o=oc: _fns(s, o, False), flop=flop))
        out.append(Workload(name + " fwd+bwd", RUNTIMES, lambda _t, s=xshape, o=oc: _fns(s, o, True), flop=3 * flop))
    return out


@suite("conv_transpose")
def conv_transpose_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.0) if quick else (7, 0.05)
    return time_workloads(workloads(quick), threads, repeat, min_time)
