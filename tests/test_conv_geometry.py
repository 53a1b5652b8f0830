"""The conv / pool geometry (C++: _C.conv.resolve_padding / geometry / weight_shape, _C.pool.output_shape;
Python: forgegrad.kernels.geometry) against torch, its errors, the shared argument helpers
(forgegrad._args), and the #12 regression: huge paddings / strides / kernels given to the raw
bindings raise ValueError naming the argument instead of overflowing (run in a subprocess, so a
crash fails the test rather than killing pytest)."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import forgegrad as fg
import forgegrad.nn as nn
from forgegrad import _args, _C
from forgegrad.kernels import geometry as G

# torch's own note that it pads a copy for an even "same" kernel: expected here
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")


def _torch_conv_shape(x_shape, w_shape, **kw):
    return tuple(TF.conv2d(torch.zeros(x_shape), torch.zeros(w_shape), **kw).shape)


@pytest.mark.parametrize("hw,k,stride,padding,dilation", [
    ((9, 10), (3, 3), 1, 0, 1), ((9, 10), (3, 2), (2, 3), (1, 2), 1), ((7, 7), (4, 4), 1, "same", 1),
    ((7, 8), (2, 3), 1, "same", (3, 2)), ((6, 5), (5, 5), 1, "valid", 1), ((12, 11), (3, 3), 3, 4, 2),
    ((5, 5), (1, 1), 1, "same", 1), ((3, 4), (4, 5), 1, "same", 1),
])
def test_conv_output_shape_and_same_padding_match_torch(hw, k, stride, padding, dilation):
    x_shape, w_shape = (2, 4) + hw, (6, 4) + k
    ours = G.conv2d_geometry(x_shape, w_shape, stride, padding, dilation)
    assert ours.output_shape == _torch_conv_shape(x_shape, w_shape, stride=stride, padding=padding,
                                                  dilation=dilation)
    if padding == "same":  # torch: the odd pixel of an odd total goes to the bottom / right
        for (lo, hi), kk, d in zip((ours.padding[:2], ours.padding[2:]), k, _args.pair(dilation, "d", "t")):
            assert lo + hi == d * (kk - 1) and hi - lo in (0, 1)


def test_conv_padding_forms():
    assert G.conv2d_padding(2, 3) == (2, 2, 2, 2)
    assert G.conv2d_padding((1, 3), 3) == (1, 1, 3, 3)
    assert G.conv2d_padding([1, 2, 3, 4], 3) == (1, 2, 3, 4)
    assert G.conv2d_padding("valid", 3) == (0, 0, 0, 0)
    assert G.conv2d_padding("same", (4, 3), 1, (1, 2)) == (1, 2, 2, 2)
    # Keras "same": any stride, from the input size; TF's split (the extra pixel at the end)
    for n, k, s, d in itertools.product((1, 5, 8, 9), (1, 2, 3, 4), (1, 2, 3), (1, 2)):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        want = (total // 2, total - total // 2)
        got = G.conv2d_padding("same", (k, 1), (s, 1), (d, 1), input_size=(n, 1), keras=True)
        assert got[:2] == want, (n, k, s, d)
    assert G.conv2d_padding("Same", 3, 2, keras=True) is None  # needs the input size: validated only
    assert G.conv2d_padding("VALID", 3, 2, input_size=(5, 5), keras=True) == (0, 0, 0, 0)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("hw,k,stride,padding,dilation", [
    ((9, 10), 2, None, 0, 1), ((9, 10), 3, 2, 1, 1), ((9, 10), (2, 3), (2, 2), 0, 1), ((11, 7), 3, 2, 1, 2),
    ((8, 8), 3, 3, 1, 1), ((5, 6), (4, 2), (3, 1), (2, 1), (1, 3)), ((6, 6), 1, 4, 0, 1),
])
def test_pool_output_shape_matches_torch(hw, k, stride, padding, dilation, ceil_mode):
    x_shape = (2, 3) + hw
    want = tuple(TF.max_pool2d(torch.zeros(x_shape), k, stride, padding, dilation, ceil_mode).shape)
    assert G.pool2d_output_shape(x_shape, k, stride, padding, dilation, ceil_mode) == want


def test_geometry_errors_name_owner_and_argument():
    with pytest.raises(ValueError, match=r"Conv2d: in_channels \(6\) must be divisible by groups \(4\)"):
        nn.Conv2d(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match=r"Conv2d: out_channels \(5\) must be divisible by groups \(2\)"):
        nn.Conv2d(4, 5, 3, groups=2)
    with pytest.raises(ValueError, match="Conv2d: stride must be >= 1"):
        nn.Conv2d(2, 2, 3, stride=(1, 0))
    with pytest.raises(ValueError, match="Conv2d: padding must be >= 0"):
        nn.Conv2d(2, 2, 3, padding=-1)
    with pytest.raises(TypeError, match="Conv2d: kernel_size must be an int or a pair of ints"):
        nn.Conv2d(2, 2, 2.5)
    with pytest.raises(TypeError, match="Conv2d: padding must be an int"):
        nn.Conv2d(2, 2, 3, padding=1.5)
    with pytest.raises(ValueError, match="Conv2D: padding must be 'valid' or 'same'"):
        nn.Conv2D(2, 3, padding="full")
    with pytest.raises(ValueError, match="Conv2D: dilation must be >= 1"):
        nn.Conv2D(2, 3, dilation_rate=0)
    with pytest.raises(ValueError, match="Conv2D: in_channels .* divisible by groups"):
        nn.Conv2D(4, 3, groups=2, in_channels=3)
    with pytest.raises(ValueError, match=r"conv2d: kernel size \(7, 3\) .* larger than the padded input \(5, 5\)"):
        G.conv2d_output_shape((1, 1, 5, 5), (1, 1, 7, 3))
    with pytest.raises(ValueError, match="max_pool2d: padding must be >= 0 and at most half of kernel_size"):
        fg.nn.functional.max_pool2d(fg.randn(1, 1, 6, 6), 2, padding=2)
    with pytest.raises(ValueError, match=r"pool2d: kernel_size \(7, 7\) .* larger than the padded input \(6, 6\)"):
        G.pool2d_output_shape((1, 1, 6, 6), 7)
    with pytest.raises(ValueError, match="input_shape must have 4 entries"):
        _C.pool.output_shape((1, 6, 6), (2, 2), None)


def test_args_helpers():
    assert _args.pair(3, "k", "F") == (3, 3)
    assert _args.pair((2, np.int64(5)), "k", "F") == (2, 5)
    assert _args.pair([4], "k", "F") == (4, 4)
    for bad in (True, 1.0, "2", (1, 2, 3), (1, True), None):
        with pytest.raises(TypeError, match=r"F: k must be an int or a pair of ints"):
            _args.pair(bad, "k", "F")
    with pytest.raises(ValueError, match=r"F: k must be >= 1, got \(1, 0\)"):
        _args.pair((1, 0), "k", "F", minimum=1)
    assert _args.positive_int(np.int32(4), "n", "F") == 4
    for bad in (0, -1, True, 2.0, "3"):
        with pytest.raises(ValueError, match=r"F: n must be a positive int"):
            _args.positive_int(bad, "n", "F")
    with pytest.raises(TypeError, match="F: groups must be an int"):
        _args.integer(1.5, "groups", "F")


# ---- #12: signed overflow in the raw conv / pool geometry -----------------------------------------

_HUGE_SCRIPT = textwrap.dedent(r"""
    import numpy as np
    from forgegrad import _C
    B = 2 ** 62
    M = 2 ** 63 - 1
    x = np.zeros((1, 2, 9, 10), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    y = np.zeros((1, 3, 7, 8), np.float32)
    p = np.zeros((1, 2, 4, 5), np.float32)
    i = np.zeros((1, 2, 4, 5), np.int64)
    conv = _C.conv
    pool = _C.pool
    cases = [
        ("padding", lambda: conv.conv2d_forward(x, w, None, y, (1, 1), (B, B, 0, 0), (1, 1), 1)),
        ("padding", lambda: conv.conv2d_forward(x, w, None, y, (1, 1), (M, 0, M, 0), (1, 1), 1)),
        ("padding", lambda: conv.conv2d_forward(x, w, None, y, (1, 1), (B // 2,) * 4, (1, 1), 1)),
        ("stride", lambda: conv.conv2d_forward(x, w, None, y, (M, 1), (0, 0, 0, 0), (1, 1), 1)),
        ("dilation", lambda: conv.conv2d_forward(x, w, None, y, (1, 1), (0, 0, 0, 0), (B, 1), 1)),
        ("padding", lambda: conv.conv2d_backward_input(y, w, x, (1, 1), (B, B, B, B), (1, 1), 1)),
        ("stride", lambda: conv.conv2d_backward_input(y, w, x, (1, M), (1, 1, 1, 1), (1, 1), 1)),
        ("kernel_size", lambda: conv.conv2d_backward_weight(x, y, None, np.zeros(3, np.float32), [3, 2, B, 3],
                                                            (1, 1), (B // 2 - 1, B // 2, 1, 1), (1, 1), 1)),
        ("kernel_size", lambda: conv.conv2d_backward_weight(x, y, None, np.zeros(3, np.float32),
                                                            [3, 2, 2 ** 30, 2 ** 30], (1, 1), (2 ** 30,) * 4,
                                                            (1, 1), 1)),
        ("padding", lambda: conv.conv2d_backward_weight(x, y, None, np.zeros(3, np.float32), [3, 2, 3, 3],
                                                        (1, 1), (M, M, 1, 1), (1, 1), 1)),
        ("kernel_size", lambda: pool.max_pool2d_forward(x, p, i, (B, B), (1, 1), (B // 2, B // 2), (1, 1), False)),
        ("kernel_size", lambda: pool.max_pool2d_forward(x, p, i, (M, 3), (1, 1), (M // 2, 1), (1, 1), True)),
        ("dilation", lambda: pool.max_pool2d_forward(x, p, i, (3, 3), (1, 1), (0, 0), (B, 1), False)),
        ("stride", lambda: pool.max_pool2d_forward(x, p, i, (3, 3), (M, M), (1, 1), (1, 1), True)),
        ("padding", lambda: pool.max_pool2d_forward(x, p, i, (2 ** 40, 2 ** 40), (1, 1), (2 ** 39, 2 ** 39), (1, 1),
                                                    False)),
        ("stride", lambda: pool.avg_pool2d_forward(x, p, (3, 3), (M, 2), (1, 1), True, True, 0)),
        ("kernel_size", lambda: pool.avg_pool2d_forward(x, p, (M, M), (1, 1), (M // 2, M // 2), False, True, 0)),
        ("kernel_size", lambda: pool.avg_pool2d_backward(p, x, (M, 3), (2, 2), (M // 2, 1), True, False, 0)),
        ("padding", lambda: conv.geometry((1, 2, 9, 10), (3, 2, 3, 3), (1, 1), M, (1, 1), 1)),
        ("kernel_size", lambda: conv.geometry((1, 2, 9, 10), (3, 2, B, 3), (1, 1), "same", (4, 1), 1)),
        ("dilation", lambda: conv.resolve_padding("same", (3, 3), (1, 1), (M, 1))),
        ("dilation", lambda: conv.resolve_padding("same", (3, 3), (2, 2), (M, 1), (9, 9), True)),
        ("kernel_size", lambda: conv.weight_shape(2 ** 40, 2 ** 40, (3, 3), 1)),
        ("stride", lambda: pool.output_shape((1, 2, 9, 10), (3, 3), (M, 1), (1, 1), (1, 1), True)),
        ("int64", lambda: conv.resolve_padding(2 ** 64, (3, 3))),
    ]
    for arg, call in cases:
        try:
            call()
        except ValueError as e:
            assert arg in str(e), (arg, str(e))
            print("ok", arg)
        else:
            raise AssertionError(f"no error for {arg}")
    # Windows that start far inside a huge padding used to be walked one dilation step at a time
    # (2^39 iterations); now the first tap is computed directly. A whole-column max / mean:
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 10)).astype(np.float32)
    out = np.zeros((1, 2, 1, 10), np.float32)
    idx = np.zeros((1, 2, 1, 10), np.int64)
    pool.max_pool2d_forward(x, out, idx, (2 ** 40, 1), (2 ** 40, 1), (2 ** 39, 0), (1, 1), False)
    assert (out[:, :, 0] == x.max(axis=2)).all()
    pool.avg_pool2d_forward(x, out, (2 ** 40, 1), (2 ** 40, 1), (2 ** 39, 0), False, False, 0)
    assert np.allclose(out[:, :, 0], x.mean(axis=2), atol=1e-6)
    print("done")
""")


def test_huge_geometry_raises_value_error_naming_the_argument():
    env = dict(os.environ, PYTHONPATH=str(Path(fg.__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-c", _HUGE_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.stdout.count("ok ") == 25 and r.stdout.rstrip().endswith("done"), r.stdout
