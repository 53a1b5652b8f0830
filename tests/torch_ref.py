"""Run the same computation in forgegrad and torch and compare values and gradients."""
from __future__ import annotations

import numpy as np
import torch

import forgegrad as fg


def compare(fn_fg, fn_torch, inputs, *, rtol=1e-5, atol=1e-6, grad=True, seed_grad=None, extra=(), constant=()):
    """inputs: list of numpy arrays. Float arrays require grad on both sides (except the positions
    listed in `constant`); ints are passed as is.

    fn_fg(*fg_tensors, *extra) and fn_torch(*torch_tensors, *extra) must return one tensor (or a
    tuple whose first element is the output to compare and backprop through).
    """
    req = [a.dtype.kind == "f" and grad and i not in constant for i, a in enumerate(inputs)]
    fg_in = [fg.tensor(a.copy(), requires_grad=r) for a, r in zip(inputs, req)]
    th_in = [torch.tensor(a.copy(), requires_grad=r) for a, r in zip(inputs, req)]
    out_fg = fn_fg(*fg_in, *extra)
    out_th = fn_torch(*th_in, *extra)
    if isinstance(out_fg, tuple):
        out_fg, out_th = out_fg[0], out_th[0]
    np.testing.assert_allclose(out_fg._data, out_th.detach().numpy(), rtol=rtol, atol=atol, err_msg="forward")
    assert out_fg.shape == tuple(out_th.shape)
    if not grad:
        return out_fg
    if seed_grad is not None:
        g = seed_grad
    else:
        g = np.random.default_rng(7).standard_normal(out_fg.shape).astype(np.float32)
    out_fg.backward(g if out_fg.ndim else None) if out_fg.ndim else out_fg.backward()
    out_th.backward(torch.tensor(g) if out_th.ndim else None)
    for i, (a, b) in enumerate(zip(fg_in, th_in)):
        if b.grad is None:
            continue
        assert a.grad is not None, f"input {i}: forgegrad has no gradient"
        np.testing.assert_allclose(a.grad._data, b.grad.numpy(), rtol=rtol, atol=atol, err_msg=f"grad of input {i}")
    return out_fg
