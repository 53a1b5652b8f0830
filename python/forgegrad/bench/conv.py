"""The `conv` suite: forgegrad's conv2d (forward, and forward + all three gradients) against torch.

Workloads (3x3 kernels, stride 1, padding 1): (32, 64, 32, 32) -> 64 filters, (64, 1, 28, 28) -> 32
filters, (64, 32, 14, 14) -> 64 filters. torch runs F.conv2d under no_grad for the forward and
conv2d + backward (input, weight and bias gradients) for the training step; forgegrad runs
forgegrad.kernels.conv2d_forward / conv2d_backward on the same arrays. The inference rows run
LeNet's two blocks (conv -> ReLU -> 2x2 max pool) at batch 1 and 16: forgegrad's one fused call
(``activation=RELU, max_pool2x2=True``) against torch's three ops.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from forgegrad import _C
from forgegrad.kernels.conv import conv2d_backward, conv2d_forward

from . import Workload, suite, time_workloads
from ._timing import optional_import

SHAPES = (((32, 64, 32, 32), 64), ((64, 1, 28, 28), 32), ((64, 32, 14, 14), 64))
RUNTIMES = ("forgegrad", "torch")


def _fns(xshape, filters, backward: bool):
    """{"forgegrad": call, "torch": call or None}: the forward, or forward + backward when asked."""
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
    n, c, h, w = xshape
    x = rng.standard_normal(xshape).astype(np.float32)
    wt = (rng.standard_normal((filters, c, 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    gy = rng.standard_normal((n, filters, h, w)).astype(np.float32)

    def fg_step():
        conv2d_forward(x, wt, b, padding=1)
        conv2d_backward(x, wt, gy, padding=1)

    fns = {"forgegrad": fg_step if backward else (lambda: conv2d_forward(x, wt, b, padding=1)), "torch": None}
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

        fns["torch"] = t_step if backward else t_fwd
    return fns


# LeNet's blocks at the batch sizes a server sees
BLOCK_SHAPES = (((1, 1, 28, 28), 32), ((1, 32, 14, 14), 64), ((16, 1, 28, 28), 32), ((16, 32, 14, 14), 64))


def _block_fns(xshape, filters):
    """conv3x3 -> ReLU -> maxpool2: forgegrad's fused call and torch's three ops (no_grad)."""
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xshape).astype(np.float32)
    wt = (rng.standard_normal((filters, xshape[1], 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    relu = _C.activation.RELU
    fns = {"forgegrad": lambda: conv2d_forward(x, wt, b, padding=1, activation=relu, max_pool2x2=True), "torch": None}
    if torch is not None:
        F = torch.nn.functional
        tx, tw, tb = (torch.tensor(a) for a in (x, wt, b))

        def t_block():
            with torch.no_grad():
                F.max_pool2d(F.relu(F.conv2d(tx, tw, tb, padding=1)), 2)

        fns["torch"] = t_block
    return fns


def workloads(quick: bool = False) -> List[Workload]:
    """Per shape: the forward, then forward + backward; then LeNet's conv blocks for inference."""
    out = []
    for xshape, filters in SHAPES[1:] if quick else SHAPES:
        n, c, h, w = xshape
        flop = 2.0 * n * filters * c * 9 * h * w
        name = f"conv3x3 {n}x{c}x{h}x{w}->{filters}"
        out.append(Workload(name + " fwd", RUNTIMES, lambda _t, s=xshape, f=filters: _fns(s, f, False), flop=flop))
        out.append(Workload(name + " fwd+bwd", RUNTIMES, lambda _t, s=xshape, f=filters: _fns(s, f, True),
                            flop=3 * flop))
    for xshape, filters in BLOCK_SHAPES[2:] if quick else BLOCK_SHAPES:
        n, c, h, w = xshape
        out.append(Workload(f"conv3x3+relu+maxpool2 {n}x{c}x{h}x{w}->{filters} infer", RUNTIMES,
                            lambda _t, s=xshape, f=filters: _block_fns(s, f), flop=2.0 * n * filters * c * 9 * h * w))
    return out


@suite("conv")
def conv_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.0) if quick else (7, 0.05)
    return time_workloads(workloads(quick), threads, repeat, min_time)
