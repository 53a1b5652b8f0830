"""forgegrad.utils.checkpoint with nested arguments and outputs (lists, tuples, dicts of tensors, as a
transformer layer's (hidden, (key, value)) or a dict of heads), against torch.utils.checkpoint."""
import gc
import tracemalloc

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


def _four_blocks():
    fg.manual_seed(0)
    return [fg.nn.Sequential(fg.nn.Linear(32, 128), fg.nn.GELU(), fg.nn.Linear(128, 32), fg.nn.Tanh())
            for _ in range(4)]


def _peaks(blocks, x0, ckpt):
    """(bytes held after the forward, peak over forward and backward), with the garbage collector off: what
    reference counting alone frees."""
    for p in [x0] + [p for b in blocks for p in b.parameters()]:
        p.grad = None
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        x = x0
        for b in blocks:
            x = checkpoint(b, {"h": [x]}, use_reentrant=False)["h"][0] if ckpt else b({"h": [x]})["h"][0]
        loss = x.sum()
        held = tracemalloc.get_traced_memory()[0]
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        gc.enable()
    return held, peak


def test_activations_are_freed_after_the_forward_and_after_each_recomputed_block():
    blocks = _four_blocks()
    blocks = [_DictBlock(b) for b in blocks]
    x0 = fg.tensor(np.random.default_rng(2).standard_normal((512, 32)).astype(np.float32), requires_grad=True)
    plain_held, plain_peak = _peaks(blocks, x0, False)
    ckpt_held, ckpt_peak = _peaks(blocks, x0, True)
    block = 512 * 128 * 4 * 2  # one block's two (512, 128) activations
    assert ckpt_held < plain_held - 2 * block
    assert ckpt_peak < plain_peak - block  # one block recomputed at a time, no cycle keeping the others
    assert gc.collect() == 0


class _DictBlock:
    """A block taking and returning {"h": [tensor]} (a nested structure through the checkpoint)."""

    def __init__(self, block):
        self.block = block

    def __call__(self, d):
        return {"h": [self.block(d["h"][0])]}

    def parameters(self):
        return self.block.parameters()


def test_a_graph_tensor_the_function_captures_gets_its_gradient_as_torch():
    # h is no argument: the function reads it from its closure (as a layer reading a rotary table computed
    # with a gradient); h is also used outside the checkpoint, and its retained grad counts both uses
    def run(lib, ck):
        x = lib.tensor(_A, requires_grad=True)
        w = lib.tensor(_W, requires_grad=True)
        h = x * 3
        h.retain_grad()
        o = ck(lambda v: (v @ w * h).sin(), x, use_reentrant=False)
        (o.sum() + (h * h).sum()).backward()
        return x.grad.numpy(), w.grad.numpy(), h.grad.numpy()
    for got, want in zip(run(fg, checkpoint), run(torch, tckpt.checkpoint)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_model_output_dict_keeps_its_type_and_its_tensors_get_gradients():
    from transformers.modeling_outputs import BaseModelOutput
    x = fg.tensor(_A, requires_grad=True)
    out = checkpoint(lambda t: BaseModelOutput(last_hidden_state=t * 2, hidden_states=(t * 3,)), x,
                     use_reentrant=False)
    assert type(out) is BaseModelOutput and out[0] is out.last_hidden_state
    (out.last_hidden_state.sum() + out.hidden_states[0].sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full_like(_A, 5))
