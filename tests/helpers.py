"""Helpers shared by the test files (fixtures live in conftest.py; torch_ref.compare runs one
computation in forgegrad and torch).

    assert_close_scaled   allclose with atol relative to the largest expected value
    load_example          import examples/NAME.py as a fresh module
    fg_from_torch         copy a torch module's state_dict into a forgegrad module
    torch_from_fg         copy a forgegrad module's state_dict into a torch module
    assert_same_bits_across_threads   run() at 2 and 3 threads gives the bits it gives at 1
    assert_sum_and_mean_match_torch   x.sum/mean(dim, keepdim) and their gradients against float64 numpy and torch
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

import forgegrad as fg

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")


def _numpy(a) -> np.ndarray:
    if isinstance(a, fg.Tensor):
        return a._data
    if hasattr(a, "detach"):  # a torch tensor
        return a.detach().numpy()
    return np.asarray(a)


def assert_close_scaled(actual, expected, what: str = "", *, atol_scale: float = 2e-6, rtol: float = 1e-5):
    """np.testing.assert_allclose with atol = atol_scale * max(1, max |expected|).

    Our sums run in a different order than torch's, so the float32 rounding error grows with the
    magnitude of the sums: the tolerance is relative to the largest value. Takes numpy arrays,
    forgegrad tensors and torch tensors on either side."""
    a, b = _numpy(actual), _numpy(expected)
    atol = atol_scale * max(1.0, float(np.abs(b).max(initial=0)))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


def load_example(name: str, module_name: str = None):
    """examples/<name>.py imported as a new module (not registered in sys.modules)."""
    spec = importlib.util.spec_from_file_location(module_name or f"example_{name}",
                                                  os.path.join(EXAMPLES, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fg_from_torch(ours, theirs):
    """Load torch module ``theirs``'s weights into forgegrad module ``ours`` (same state_dict names)."""
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def torch_from_fg(theirs, ours):
    """Load forgegrad module ``ours``'s weights into torch module ``theirs`` (copies, same names)."""
    import torch
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})


def assert_same_bits_across_threads(run, set_threads, counts=(2, 3)):
    """run() returns a list of arrays; at each thread count in counts they must hold the same bits
    as at 1 thread. set_threads is the ``threads`` fixture (it restores the count afterwards)."""
    set_threads(1)
    ref = run()
    for t in counts:
        set_threads(t)
        for a, b in zip(ref, run()):
            assert a.tobytes() == b.tobytes()


def assert_sum_and_mean_match_torch(x: np.ndarray, dim, keepdim: bool, grad_seed: int = 0):
    """sum and mean of float32 x over dim: within 1.2e-7 of float64 numpy and 2e-6 of torch, the gradient equal to
    torch's (a broadcast of the incoming gradient, scaled for mean)."""
    import torch
    for name in ("sum", "mean"):
        xt = fg.tensor(x, requires_grad=True)
        y = getattr(xt, name)(dim, keepdim=keepdim)
        tx = torch.tensor(x, requires_grad=True)
        ty = getattr(tx, name)(dim, keepdim=keepdim)
        assert y.shape == tuple(ty.shape)
        ref = getattr(x.astype(np.float64), name)(dim, keepdims=keepdim)
        np.testing.assert_allclose(y.numpy(), ref, rtol=1.2e-7, atol=0)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=2e-6, atol=0)
        g = np.random.default_rng(grad_seed).standard_normal(y.shape).astype(np.float32) + 3.0
        y.backward(fg.tensor(g))
        ty.backward(torch.tensor(g))
        np.testing.assert_array_equal(xt.grad.numpy(), tx.grad.numpy())
