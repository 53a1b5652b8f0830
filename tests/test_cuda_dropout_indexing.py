"""Dropout (standalone and inside scaled_dot_product_attention) and indexing with an index array on
the cuda device, against the CPU: under one seed both devices drop the same elements (the keep mask
is drawn on the host), so outputs and gradients agree; index arrays follow numpy's rules, their
gradients accumulate repeated indices. Needs a GPU; skips with the reason without one (CI has none).
The layout logic of the indexing also runs everywhere against numpy stand-ins of its kernels
(test_index_layout_over_a_host_stand_in)."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.cuda as fcuda
import forgegrad.nn.functional as F
from cuda_shape_checks import host_stand_in
from forgegrad.ops import _cuda_index

needs_gpu = pytest.mark.skipif(not fcuda.is_available(),
                               reason=f"needs a CUDA device: {fcuda.unavailable_reason() or 'available'}")

KEYS = [np.array([0, 2, 2, 3]), (slice(None), np.array([4, 0])), (1, slice(None), [0, 2, -1]), (1, [0, 2]),
        (slice(None), 1, np.array([[0, 1], [5, 5]])), (Ellipsis, [1, 1]), (None, [3, 0], 2),
        (slice(1, None), [1, 1, 0], slice(None, None, 2)), (0, slice(None), [True, False, True, False, False, True]),
        ([2, 1], Ellipsis, 0), (slice(None), 2, [1], None), (slice(0, 0), [1]), (slice(None), [])]


def _key_for_numpy(key):
    return key if isinstance(key, tuple) else (key,)


def test_index_layout_over_a_host_stand_in(monkeypatch):
    """ops/_cuda_index.py's axis bookkeeping (where the index dimensions go, numpy's rule for ints
    beside the array, the gradient's way back) over host stand-ins for the device copies and the
    embedding kernels (tests/cuda_shape_checks.py): the Python half, where CI runs; the GPU test
    below runs the kernels."""
    to_device = host_stand_in(monkeypatch)
    x = np.random.default_rng(0).standard_normal((4, 5, 6)).astype(np.float32)
    for key in KEYS:
        want = x[_key_for_numpy(key)]
        got, plan = _cuda_index.getitem(to_device(x), _cuda_index.split_key(key))
        assert got.shape == want.shape and np.array_equal(got, want), key
        g = np.random.default_rng(1).standard_normal(want.shape).astype(np.float32)
        want_g = np.zeros_like(x)
        np.add.at(want_g, _key_for_numpy(key), g)
        np.testing.assert_allclose(_cuda_index.getitem_backward(to_device(g), plan), want_g, rtol=1e-6,
                                   err_msg=str(key))
    with pytest.raises(IndexError, match="index 7 is out of bounds for axis 2 with size 6"):
        _cuda_index.getitem(to_device(x), _cuda_index.split_key((0, slice(None), [7])))
    with pytest.raises(IndexError, match="integer"):
        _cuda_index.split_key(np.array([0.5]))
    with pytest.raises(NotImplementedError, match="more than one index array"):
        _cuda_index.split_key(([0], [1]))
    with pytest.raises(NotImplementedError, match="2-D boolean mask"):
        _cuda_index.split_key(np.ones((4, 5), bool))


@needs_gpu
def test_index_arrays_match_the_cpu():
    x = np.random.default_rng(0).standard_normal((4, 5, 6)).astype(np.float32)
    for key in KEYS:
        t = fg.tensor(x, requires_grad=True)
        c = fg.tensor(x).to("cuda").requires_grad_(True)
        want = t[key]
        got = c[key]
        np.testing.assert_array_equal(got.cpu().numpy(), want.numpy(), err_msg=str(key))
        g = np.random.default_rng(1).standard_normal(want.shape).astype(np.float32)
        (want * fg.tensor(g)).sum().backward()
        (got * fg.tensor(g).to("cuda")).sum().backward()
        np.testing.assert_allclose(c.grad.cpu().numpy(), t.grad.numpy(), rtol=1e-6, atol=1e-7, err_msg=str(key))
    # an index held on the GPU, an integer tensor, and the errors
    idx = fg.tensor(np.array([3, -1, 0])).to("cuda")
    np.testing.assert_array_equal(fg.tensor(x).to("cuda")[idx].cpu().numpy(), x[[3, -1, 0]])
    ints = np.arange(20, dtype=np.int64).reshape(4, 5)
    np.testing.assert_array_equal(fg.tensor(ints).to("cuda")[:, [4, 0]].cpu().numpy(), ints[:, [4, 0]])
    with pytest.raises(IndexError, match="out of bounds"):
        fg.tensor(x).to("cuda")[[0, 4]]


@needs_gpu
def test_dropout_drops_what_the_cpu_drops():
    x = np.random.default_rng(2).standard_normal((7, 33)).astype(np.float32)
    g = np.random.default_rng(3).standard_normal((7, 33)).astype(np.float32)
    for p in (0.3, 1.0):
        results = []
        for device in ("cpu", "cuda"):
            fg.manual_seed(5)
            t = fg.tensor(x).to(device).requires_grad_(True)
            y = F.dropout(t, p, True)
            (y * fg.tensor(g).to(device)).sum().backward()
            results.append((y.cpu().numpy(), t.grad.cpu().numpy()))
        (y_cpu, g_cpu), (y_gpu, g_gpu) = results
        np.testing.assert_array_equal(y_gpu, y_cpu)
        np.testing.assert_array_equal(g_gpu, g_cpu)
    t = fg.tensor(x).to("cuda")
    assert F.dropout(t, 0.5, False) is not None
    np.testing.assert_array_equal(F.dropout(t, 0.5, False).cpu().numpy(), x)


@needs_gpu
@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool", "float"])
def test_attention_dropout_matches_the_cpu(mask_kind):
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 6, 16), (2, 3, 9, 16), (2, 3, 9, 8)))
    if mask_kind == "causal":
        k, v = k[:, :, :6], v[:, :, :6]
    mask = {"bool": rng.random((6, 9)) > 0.3, "float": rng.standard_normal((2, 1, 6, 9)).astype(np.float32)}.get(
        mask_kind)
    g = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    results = []
    for device in ("cpu", "cuda"):
        fg.manual_seed(11)
        ts = [fg.tensor(a).to(device).requires_grad_(True) for a in (q, k, v)]
        m = None
        if mask is not None:
            m = fg.tensor(mask).to(device)
            if mask.dtype == np.float32:
                m.requires_grad_(True)
        out = F.scaled_dot_product_attention(*ts, attn_mask=m, dropout_p=0.25, is_causal=mask_kind == "causal")
        (out * fg.tensor(g).to(device)).sum().backward()
        grads = [t.grad.cpu().numpy() for t in ts]
        if m is not None and m.requires_grad:
            grads.append(m.grad.cpu().numpy())
        results.append((out.cpu().numpy(), grads))
    (out_cpu, grads_cpu), (out_gpu, grads_gpu) = results
    np.testing.assert_allclose(out_gpu, out_cpu, rtol=1e-5, atol=1e-6)
    assert len(grads_gpu) == len(grads_cpu)
    for a, b in zip(grads_gpu, grads_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
