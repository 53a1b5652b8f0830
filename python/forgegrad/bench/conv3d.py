"""The `conv3d` suite: nn.Conv3d (forward, and forward + input, weight and bias gradients) against torch's, from
the same weights, at a 3-D U-Net layer's shape: batch 2, 32 -> 32 channels, 16x32x32 volumes, kernel 3, padding 1.
forgegrad runs vol2col + its C++ sgemm (ops/_window3d.py), torch its own kernel; the forward rows under no_grad
on both sides.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from ._steps import layer_fns

SHAPES = (((2, 32, 16, 32, 32), 32), ((1, 8, 8, 16, 16), 16))  # the second: quick
RUNTIMES = ("forgegrad", "torch")


def _fns(xshape, out_channels, backward: bool):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xshape).astype(np.float32)
    gy = rng.standard_normal((xshape[0], out_channels) + tuple(xshape[2:])).astype(np.float32)
    return layer_fns(lambda nn: nn.Conv3d(xshape[1], out_channels, 3, padding=1), x, gy, backward)


def workloads(quick: bool = False) -> List[Workload]:
    """Per shape: the forward, then forward + backward."""
    out = []
    for xshape, oc in SHAPES[1:] if quick else SHAPES[:1]:
        n, c, d, h, w = xshape
        flop = 2.0 * n * c * d * h * w * oc * 27
        name = f"conv3d k3p1 {n}x{c}x{d}x{h}x{w}->{oc}"
        out.append(Workload(name + " fwd", RUNTIMES, lambda _t, s=xshape, o=oc: _fns(s, o, False), flop=flop))
        out.append(Workload(name + " fwd+bwd", RUNTIMES, lambda _t, s=xshape, o=oc: _fns(s, o, True), flop=3 * flop))
    return out


@suite("conv3d")
def conv3d_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.0) if quick else (5, 0.05)
    return time_workloads(workloads(quick), threads, repeat, min_time)
