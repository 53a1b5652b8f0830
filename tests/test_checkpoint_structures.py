"""forgegrad.utils.checkpoint with nested arguments and outputs (lists, tuples, dicts of tensors, as a
transformer layer's (hidden, (key, value)) or a dict of heads), against torch.utils.checkpoint."""
import numpy as np
import pytest
import torch
import torch.utils.checkpoint as tckpt

import forgegrad as fg
from forgegrad.utils.checkpoint import checkpoint

_A = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
_W = np.random.default_rng(1).standard_normal((4, 4)).astype(np.float32)


def _run(lib, ck, fn, use_ckpt):
    """x -> (x * 2) -> fn(ck) -> loss; returns x's gradient and w's."""
    x = lib.tensor(_A, requires_grad=True)
    w = lib.tensor(_W, requires_grad=True)
    h = x * 2
    out = ck(fn(lib, w), {"h": h, "pair": [x, (h, 3)]}, use_reentrant=False) if use_ckpt \
        else fn(lib, w)({"h": h, "pair": [x, (h, 3)]})
    loss = out["y"].sum() + (out["kv"][0] * out["kv"][1][0]).sum() + out["kv"][1][1] + (h * h).sum()
    loss.backward()
    return x.grad.detach().numpy(), w.grad.detach().numpy(), out


def _fn(lib, w):
    def f(d):
        h, (x, (h2, k)) = d["h"], d["pair"]
        y = (h @ w).tanh() * x
        return {"y": y, "kv": (y * h2, [y.sin(), k]), "none": None}
    return f


def test_nested_arguments_and_outputs_get_torch_gradients():
    tx, tw, tout = _run(torch, tckpt.checkpoint, _fn, True)
    fx, fw, fout = _run(fg, checkpoint, _fn, True)
    px, pw, _ = _run(fg, checkpoint, _fn, False)
    np.testing.assert_allclose(fx, tx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fw, tw, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fx, px)  # the plain run's, bit for bit
    np.testing.assert_array_equal(fw, pw)
    assert fout["none"] is None and fout["kv"][1][1] == 3 and isinstance(fout["kv"][1], list)
    assert fout["y"].requires_grad and fout["kv"][1][0].requires_grad


def test_a_dict_output_requires_grad_as_torch():
    x = fg.tensor(_A, requires_grad=True)
    out = checkpoint(lambda t: {"a": t * 2}, x, use_reentrant=False)
    assert out["a"].requires_grad
    out["a"].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full_like(_A, 2))


def test_a_function_writing_into_its_input_is_refused_in_backward_as_torch():
    # the recomputation would read the written input and write it again: silently wrong gradients
    w_t = torch.tensor(_W, requires_grad=True)
    out = tckpt.checkpoint(lambda t: t.mul_(2) @ w_t, torch.tensor(_A), use_reentrant=False)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    w = fg.tensor(_W, requires_grad=True)
    x = fg.tensor(_A.copy())
    out = checkpoint(lambda t: t.mul_(2) @ w, x, use_reentrant=False)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    np.testing.assert_array_equal(x.numpy(), 2 * _A)  # written once, by the forward
