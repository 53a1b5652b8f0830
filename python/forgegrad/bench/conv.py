"""The `conv` suite: forgegrad's conv2d (forward, and forward + all three gradients) against torch.

Workloads (3x3 kernels, stride 1, padding 1): (32, 64, 32, 32) -> 64 filters, (64, 1, 28, 28) -> 32
filters, (64, 32, 14, 14) -> 64 filters. torch runs F.conv2d under no_grad for the forward and
conv2d + backward (input, weight and bias gradients) for the training step; forgegrad runs
forgegrad.kernels.conv2d_forward / conv2d_backward on the same arrays.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from forgegrad.kernels.conv import conv2d_backward, conv2d_forward

from . import suite
from ._timing import compare, optional_import, pinned_threads

SHAPES = (((32, 64, 32, 32), 64), ((64, 1, 28, 28), 32), ((64, 32, 14, 14), 64))


def _rows(xshape, filters, threads, torch, rng, repeat, min_time) -> List[dict]:
    n, c, h, w = xshape
    x = rng.standard_normal(xshape).astype(np.float32)
    wt = (rng.standard_normal((filters, c, 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    gy = rng.standard_normal((n, filters, h, w)).astype(np.float32)
    flop = 2.0 * n * filters * c * 9 * h * w
    name = f"conv3x3 {n}x{c}x{h}x{w}->{filters}"

    def fg_step():
        conv2d_forward(x, wt, b, padding=1)
        conv2d_backward(x, wt, gy, padding=1)

    fwd = {"forgegrad": lambda: conv2d_forward(x, wt, b, padding=1), "torch": None}
    step = {"forgegrad": fg_step, "torch": None}
    if torch is not None:
        F = torch.nn.functional
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, wt, b))
        tgy = torch.tensor(gy)

        def t_fwd():
            with torch.no_grad():
                F.conv2d(tx, tw, tb, padding=1)

        def t_step():
            tx.grad = tw.grad = tb.grad = None
            F.conv2d(tx, tw, tb, padding=1).backward(tgy)

        fwd["torch"], step["torch"] = t_fwd, t_step
    with pinned_threads(threads):
        s_fwd = compare(fwd, repeat=repeat, min_time=min_time)
        s_step = compare(step, repeat=repeat, min_time=min_time)
    return [{"workload": name + " fwd", "threads": threads, "seconds": s_fwd, "flop": flop},
            {"workload": name + " fwd+bwd", "threads": threads, "seconds": s_step, "flop": 3 * flop}]


@suite("conv")
def conv_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
    repeat, min_time = (3, 0.0) if quick else (7, 0.05)
    rows = []
    for xshape, filters in SHAPES[1:] if quick else SHAPES:
        for t in threads:
            rows += _rows(xshape, filters, t, torch, rng, repeat, min_time)
    return rows
