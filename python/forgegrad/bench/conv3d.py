"""The `conv3d` suite: nn.Conv3d (forward, and forward + input, weight and bias gradients) against torch's, from
the same weights, at a 3-D U-Net layer's shape: batch 2, 32 -> 32 channels, 16x32x32 volumes, kernel 3, padding 1.
forgegrad runs vol2col + its C++ sgemm (ops/_window3d.py), torch its own kernel; the forward rows under no_grad
on both sides.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from ._timing import optional_import

SHAPES = (((2, 32, 16, 32, 32), 32), ((1, 8, 8, 16, 16), 16))  # the second: quick
RUNTIMES = ("forgegrad", "torch")


def _fns(xshape, out_channels, backward: bool):
    import forgegrad as fg
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xshape).astype(np.float32)
    fg.manual_seed(0)
    ours = fg.nn.Conv3d(xshape[1], out_channels, 3, padding=1)
    fx = fg.tensor(x, requires_grad=backward)
    gy = rng.standard_normal((xshape[0], out_channels) + xshape[2:]).astype(np.float32)
    fgy = fg.tensor(gy)

    def fg_fwd():
        with fg.no_grad():
            ours(fx)

    def fg_step():
        fx.grad = ours.weight.grad = ours.bias.grad = None
        (ours(fx) * fgy).sum().backward()

    fns = {"forgegrad": fg_step if backward else fg_fwd, "torch": None}
    if torch is not None:
        theirs = torch.nn.Conv3d(xshape[1], out_channels, 3, padding=1)
        theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
        tx, tgy = torch.tensor(x, requires_grad=backward), torch.tensor(gy)

        def t_fwd():
            with torch.no_grad():
                theirs(tx)

        def t_step():
            tx.grad = theirs.weight.grad = theirs.bias.grad = None
            theirs(tx).backward(tgy)

        fns["torch"] = t_step if backward else t_fwd
    return fns


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
