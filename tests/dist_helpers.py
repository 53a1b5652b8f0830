"""Shared by tests/test_distributions*.py: the same distribution built in forgegrad and in torch from the same
numpy parameters, and comparisons of tensors and gradients."""
import numpy as np
import torch

import forgegrad as fg

DTYPES = {"float32": (fg.float32, torch.float32, 2e-5), "float64": (fg.float64, torch.float64, 1e-10)}


def pair(params, dtype, grad=True):
    """params: name -> numpy array or number. Returns (fg kwargs, torch kwargs)."""
    fdt, tdt, _ = DTYPES[dtype]
    fa, ta = {}, {}
    for k, v in params.items():
        if isinstance(v, np.ndarray):
            fa[k] = fg.tensor(v, dtype=fdt, requires_grad=grad and v.dtype.kind == "f")
            ta[k] = torch.tensor(v, dtype=tdt, requires_grad=grad and v.dtype.kind == "f")
        else:
            fa[k], ta[k] = v, v
    return fa, ta


def value_pair(v, dtype, integer=False):
    fdt, tdt, _ = DTYPES[dtype]
    if integer:
        return fg.tensor(np.asarray(v, np.int64)), torch.tensor(np.asarray(v, np.int64))
    return fg.tensor(np.asarray(v), dtype=fdt), torch.tensor(np.asarray(v), dtype=tdt)


def close(a, b, tol, what=""):
    a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
    b = b.detach().numpy()
    assert a.shape == b.shape, (what, a.shape, b.shape)
    np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol * 50, atol=tol * 50,
                               equal_nan=True, err_msg=what)


def grads_close(fa, ta, tol, what=""):
    for k, v in fa.items():
        if isinstance(v, fg.Tensor) and v.requires_grad:
            tg = ta[k].grad
            fgr = v.grad
            if tg is None:
                assert fgr is None or not np.any(fgr.numpy()), (what, k)
                continue
            assert fgr is not None, (what, k, "no gradient")
            close(fgr, tg, tol * 10, f"{what} grad {k}")
