"""float32 conv_transpose3d with kernel == stride (ops/_conv_transpose3d_disjoint.py: one sgemm per image and a
tap scatter) against torch: odd kernels per axis, non-contiguous input, bias, one gradient requested at a time,
the same bits at 1, 2 and 3 threads, and the geometries that must stay on the generic path."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.ops import _conv_transpose3d_disjoint as disjoint

from helpers import assert_close_scaled, assert_same_bits_across_threads

F = fg.nn.functional


@pytest.fixture
def calls(monkeypatch):
    counts = {}
    for name in ("forward", "backward"):
        fn = getattr(disjoint, name)

        def counted(*a, _fn=fn, _name=name):
            counts[_name] = counts.get(_name, 0) + 1
            return _fn(*a)
        monkeypatch.setattr(disjoint, name, counted)
    return counts


def _run(lib, x, w, b, g, stride, grads=(True, True, True)):
    """[output, then the gradients asked for], numpy arrays."""
    xs = [lib.tensor(a, requires_grad=r) if a is not None else None for a, r in zip((x, w, b), grads)]
    y = getattr(lib.nn.functional, "conv_transpose3d")(*xs, stride=stride)
    (y * lib.tensor(g)).sum().backward()
    out = [y.detach().numpy() if lib is torch else y.numpy()]
    for t, r in zip(xs, grads):
        if t is not None and r:
            out.append(t.grad.numpy())
    return out


CASES = [
    ((2, 5, 3, 4, 2), (5, 3, 2, 2, 2), 2),
    ((1, 3, 2, 5, 3), (3, 4, 1, 2, 3), (1, 2, 3)),  # a kernel of 1 along depth
    ((3, 7, 2, 3, 1), (7, 2, 3, 3, 3), 3),
    ((2, 1, 1, 1, 1), (1, 1, 2, 2, 2), 2),  # one input element, one channel
]


@pytest.mark.parametrize("xs,ws,stride", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_matches_torch(rng, calls, xs, ws, stride, bias):
    x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[1]).astype(np.float32) if bias else None
    out_shape = torch.nn.functional.conv_transpose3d(torch.tensor(x), torch.tensor(w), stride=stride).shape
    g = rng.standard_normal(tuple(out_shape)).astype(np.float32)
    ours, theirs = _run(fg, x, w, b, g, stride), _run(torch, x, w, b, g, stride)
    assert len(ours) == len(theirs)
    for a, t, what in zip(ours, theirs, ("output", "grad input", "grad weight", "grad bias")):
        assert_close_scaled(a, t, what, atol_scale=1e-5, rtol=1e-4)
    assert calls == {"forward": 1, "backward": 1}


@pytest.mark.parametrize("grads", [(True, False, False), (False, True, False), (False, False, True)])
def test_one_gradient_at_a_time(rng, grads):
    x, w = rng.standard_normal((2, 3, 2, 3, 2)).astype(np.float32), rng.standard_normal((3, 2, 2, 1, 2))
    w, b = w.astype(np.float32), rng.standard_normal(2).astype(np.float32)
    g = rng.standard_normal((2, 2, 4, 3, 4)).astype(np.float32)
    ours, theirs = _run(fg, x, w, b, g, (2, 1, 2), grads), _run(torch, x, w, b, g, (2, 1, 2), grads)
    assert len(ours) == len(theirs) == 2
    for a, t in zip(ours, theirs):
        assert_close_scaled(a, t, f"{grads}", atol_scale=1e-5, rtol=1e-4)


def test_non_contiguous_input(rng, calls):
    base = rng.standard_normal((2, 6, 3, 4, 10)).astype(np.float32)
    x = base[:, ::2, :, :, 1::3]  # strided channels and width
    w = rng.standard_normal((3, 2, 2, 2, 2)).astype(np.float32)
    g = rng.standard_normal((2, 2, 6, 8, 6)).astype(np.float32)
    ours, theirs = _run(fg, x, w, None, g, 2), _run(torch, np.ascontiguousarray(x), w, None, g, 2)
    for a, t in zip(ours, theirs):
        assert_close_scaled(a, t, "non-contiguous", atol_scale=1e-5, rtol=1e-4)
    assert calls == {"forward": 1, "backward": 1}


def test_same_bits_across_threads(rng, threads):
    x = rng.standard_normal((2, 16, 3, 9, 7)).astype(np.float32)
    w = rng.standard_normal((16, 5, 2, 2, 2)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    g = rng.standard_normal((2, 5, 6, 18, 14)).astype(np.float32)
    assert_same_bits_across_threads(lambda: _run(fg, x, w, b, g, 2), threads)


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(stride=2, output_padding=1), dict(stride=3),
                                dict(stride=2, groups=2), dict(stride=2, dilation=2)])
def test_other_geometries_stay_generic(rng, calls, kw):
    x = rng.standard_normal((1, 4, 3, 3, 3)).astype(np.float32)
    w = rng.standard_normal((4, 2, 2, 2, 2)).astype(np.float32)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    fx, fw = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)
    ty, fy = torch.nn.functional.conv_transpose3d(tx, tw, **kw), F.conv_transpose3d(fx, fw, **kw)
    ty.sum().backward()
    fy.sum().backward()
    for a, t in ((fy, ty), (fx.grad, tx.grad), (fw.grad, tw.grad)):
        assert_close_scaled(a.numpy(), t.detach().numpy(), f"{kw}", atol_scale=1e-5, rtol=1e-4)
    assert calls == {}


def test_float64_stays_generic(rng, calls):
    x, w = rng.standard_normal((1, 2, 2, 2, 2)), rng.standard_normal((2, 3, 2, 2, 2))
    y = F.conv_transpose3d(fg.tensor(x), fg.tensor(w), stride=2)
    np.testing.assert_allclose(y.numpy(), torch.nn.functional.conv_transpose3d(
        torch.tensor(x), torch.tensor(w), stride=2).numpy(), rtol=1e-12, atol=1e-12)
    assert calls == {}
