"""Samples, torch references and bad inputs of the 1-d pools, the indexed pools (max_unpool, adaptive max), the
power-average pools and the channel / alpha dropouts (ops/pool1d.py, pool_index.py, pool_lp.py, dropout_feature.py).

Lengths are odd (7, 9), kernels 3 with stride 2, ceil_mode with and without padding, batch 1, and for each op one
sample large enough that a C++ kernel splits it over threads.
"""
from __future__ import annotations

import numpy as np

from ._samples import positive, rand
from .registry import BadInput, Sample


def _F():
    import torch.nn.functional as F
    return F


# ---- max_pool1d / avg_pool1d -------------------------------------------------------------------------------
def max_pool1d_samples():
    return [
        Sample((rand(2, 3, 7),), {"kernel_size": 3, "stride": 2}, "length 7, k 3, stride 2"),
        Sample((rand(2, 3, 9),), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
               "length 9, ceil_mode with padding"),
        Sample((rand(1, 4, 9, seed=1),), {"kernel_size": 2, "padding": 1, "dilation": 3}, "batch 1, dilation 3"),
        Sample((rand(2, 2, 8, seed=2),), {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True},
               "ceil_mode, a last window that would start in the padding (dropped)"),
        Sample((rand(2, 3, 7, seed=3),), {"kernel_size": (3,), "stride": (1,)}, "1-tuples"),
        Sample((rand(4, 16, 801, seed=4),), {"kernel_size": 3, "stride": 2}, "large (several threads)"),
    ]


def max_pool1d_torch(torch, x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
    return _F().max_pool1d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)


def _pool1d_bad(kwargs):
    return [BadInput((rand(3, 7),), dict(kwargs), ValueError, "input"),
            BadInput((rand(2, 3, 7, 1),), dict(kwargs), ValueError, "input"),
            BadInput((rand(2, 3, 7),), {**kwargs, "kernel_size": 0}, ValueError, "kernel_size"),
            BadInput((rand(2, 3, 7),), {**kwargs, "kernel_size": (2, 2)}, TypeError, "kernel_size"),
            BadInput((rand(2, 3, 7),), {**kwargs, "stride": 0}, ValueError, "stride"),
            BadInput((rand(2, 3, 7),), {**kwargs, "padding": 2}, ValueError, "padding"),
            BadInput((rand(2, 3, 2),), {**kwargs, "kernel_size": 5, "padding": 1}, ValueError, "kernel_size")]


def max_pool1d_bad_inputs():
    return _pool1d_bad({"kernel_size": 3}) + [
        BadInput((rand(2, 3, 7),), {"kernel_size": 2, "dilation": 0}, ValueError, "dilation")]


def avg_pool1d_samples():
    return [
        Sample((rand(2, 3, 7),), {"kernel_size": 3, "stride": 2}, "length 7, k 3, stride 2"),
        Sample((rand(2, 3, 9),), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
               "length 9, ceil_mode, padding counted"),
        Sample((rand(1, 3, 9, seed=1),), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                                          "count_include_pad": False}, "batch 1, ceil_mode, padding not counted"),
        Sample((rand(2, 2, 8, seed=2),), {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True},
               "ceil_mode, a last window that would start in the padding (dropped)"),
        Sample((rand(2, 2, 7, seed=3),), {"kernel_size": 2}, "stride None (= kernel)"),
        Sample((rand(4, 16, 801, seed=4),), {"kernel_size": 3, "stride": 2, "padding": 1}, "large (several threads)"),
    ]


def avg_pool1d_torch(torch, x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    return _F().avg_pool1d(x, kernel_size, stride, padding, ceil_mode, count_include_pad)


def avg_pool1d_bad_inputs():
    return _pool1d_bad({"kernel_size": 3})


# ---- adaptive_avg_pool1d / adaptive_max_pool1d / adaptive_max_pool2d ------------------------------------------
def adaptive_pool1d_samples():
    return [Sample((rand(2, 3, 7),), {"output_size": 3}, "3 from 7: overlapping windows"),
            Sample((rand(1, 5, 9, seed=1),), {"output_size": 1}, "global, batch 1"),
            Sample((rand(2, 2, 9, seed=2),), {"output_size": (3,)}, "sizes that divide, a 1-tuple"),
            Sample((rand(1, 2, 4, seed=3),), {"output_size": 6}, "larger than the input"),
            Sample((rand(2, 3, 7, seed=5),), {"output_size": None}, "None keeps the length"),
            Sample((rand(4, 16, 801, seed=4),), {"output_size": 37}, "large (several threads)"),
            Sample((np.round(rand(2, 3, 11, seed=6)),), {"output_size": 4}, "equal values (ties)")]


def adaptive_avg_pool1d_torch(torch, x, output_size=1):
    return _F().adaptive_avg_pool1d(x, x.shape[-1] if output_size is None else output_size)


def adaptive_max_pool1d_torch(torch, x, output_size=1):
    return _F().adaptive_max_pool1d(x, x.shape[-1] if output_size is None else output_size, return_indices=True)


def adaptive_pool1d_bad_inputs():
    return [BadInput((rand(3, 7),), {"output_size": 2}, ValueError, "input"),
            BadInput((rand(2, 3, 7),), {"output_size": 0}, ValueError, "output_size"),
            BadInput((rand(2, 3, 7),), {"output_size": (2, 2)}, TypeError, "output_size"),
            BadInput((rand(2, 3, 7),), {"output_size": "2"}, TypeError, "output_size")]


def adaptive_max_pool2d_samples():
    return [Sample((rand(2, 3, 7, 9),), {"output_size": (3, 4)}, "(3, 4) from 7x9: overlapping windows"),
            Sample((rand(1, 5, 7, 9, seed=1),), {"output_size": 1}, "global, batch 1"),
            Sample((rand(1, 3, 6, 9, seed=2),), {"output_size": (None, 2)}, "(None, 2)"),
            Sample((rand(2, 2, 6, 9, seed=3),), {"output_size": (2, 3)}, "sizes that divide"),
            Sample((rand(1, 2, 5, 4, seed=4),), {"output_size": (7, 6)}, "larger than the input"),
            Sample((rand(4, 16, 33, 35, seed=5),), {"output_size": (5, 7)}, "large"),
            Sample((rand(2, 3, 17, 17, seed=6),), {"output_size": 3}, "3 from 17"),
            Sample((np.round(rand(2, 3, 9, 9, seed=7)),), {"output_size": 4}, "4 from 9 with equal maxima (ties)")]


def adaptive_max_pool2d_torch(torch, x, output_size=1):
    if isinstance(output_size, tuple):
        output_size = tuple(n if o is None else o for o, n in zip(output_size, x.shape[2:]))
    return _F().adaptive_max_pool2d(x, output_size, return_indices=True)


def adaptive_max_pool2d_bad_inputs():
    x = rand(2, 3, 7, 9)
    return [BadInput((rand(3, 7, 9),), {"output_size": 2}, ValueError, "input"),
            BadInput((x,), {"output_size": (0, 2)}, ValueError, "output_size"),
            BadInput((x,), {"output_size": (1, 2, 3)}, TypeError, "output_size"),
            BadInput((x,), {"output_size": "2"}, TypeError, "output_size")]


# ---- max_unpool1d / max_unpool2d ------------------------------------------------------------------------------
def _pooled(x, kernel_size, stride=None, padding=0):
    """(values, indices) of max_pool2d (torch's flat per-plane convention; the max_pool2d op's own checks compare
    them with torch's) on a 4-D x, or of max_pool1d on a 3-D one."""
    from ..kernels import pool
    if x.ndim == 3:
        k = kernel_size
        s = k if stride is None else stride
        y, idx = pool.max_pool2d_forward(x[:, :, None, :], (1, k), (1, s), (0, padding))
        return y[:, :, 0, :].copy(), idx[:, :, 0, :].copy()
    return pool.max_pool2d_forward(x, kernel_size, stride, padding)


def max_unpool2d_samples():
    def s(x, k, stride=None, padding=0, name="", **kw):
        y, idx = _pooled(x, k, stride, padding)
        return Sample((y, idx), {"kernel_size": k, "stride": stride, "padding": padding, **kw}, name, grad=(0,))
    return [s(rand(2, 3, 6, 8), 2, name="k 2 from 6x8"),
            s(rand(2, 3, 7, 9, seed=1), 3, 2, name="k 3, stride 2: overlapping windows share an index"),
            s(rand(1, 2, 7, 9, seed=2), 2, 2, 1, output_size=(7, 9), name="padding 1, batch 1, output_size"),
            s(rand(2, 3, 7, 9, seed=3), 2, 2, output_size=(7, 9), name="output_size (7, 9)"),
            s(rand(2, 3, 7, 9, seed=4), 2, 2, output_size=(2, 3, 7, 9), name="output_size with (N, C)"),
            s(rand(4, 16, 33, 35, seed=5), 3, 2, name="large")]


def max_unpool2d_torch(torch, x, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _F().max_unpool2d(x, indices, kernel_size, stride, padding, output_size)


def max_unpool2d_bad_inputs():
    y, idx = _pooled(rand(2, 3, 6, 8), 2)
    return [BadInput((y[0], idx[0]), {"kernel_size": 2}, ValueError, "input"),
            BadInput((y, idx[:, :2]), {"kernel_size": 2}, ValueError, "indices"),
            BadInput((y, idx.astype(np.float32)), {"kernel_size": 2}, TypeError, "indices"),
            BadInput((y, idx + 100), {"kernel_size": 2}, ValueError, "indices"),
            BadInput((y, idx), {"kernel_size": 0}, ValueError, "kernel_size"),
            BadInput((y, idx), {"kernel_size": 2, "output_size": (9, 9)}, ValueError, "output_size"),
            BadInput((y, idx), {"kernel_size": 2, "output_size": (7,)}, ValueError, "output_size")]


def max_unpool1d_samples():
    def s(x, k, stride=None, padding=0, name="", **kw):
        y, idx = _pooled(x, k, stride, padding)
        return Sample((y, idx), {"kernel_size": k, "stride": stride, "padding": padding, **kw}, name, grad=(0,))
    return [s(rand(2, 3, 7), 2, name="k 2 from length 7"),
            s(rand(2, 3, 9, seed=1), 3, 2, name="k 3, stride 2: overlapping windows share an index"),
            s(rand(1, 2, 9, seed=2), 3, 2, 1, name="padding 1, batch 1"),
            s(rand(2, 3, 7, seed=3), 2, 2, output_size=(7,), name="output_size (7,)"),
            s(rand(4, 16, 801, seed=5), 3, 2, name="large")]


def max_unpool1d_torch(torch, x, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _F().max_unpool1d(x, indices, kernel_size, stride, padding, output_size)


def max_unpool1d_bad_inputs():
    y, idx = _pooled(rand(2, 3, 7), 2)
    return [BadInput((y[0], idx[0]), {"kernel_size": 2}, ValueError, "input"),
            BadInput((y, idx[:, :2]), {"kernel_size": 2}, ValueError, "indices"),
            BadInput((y, idx - 10), {"kernel_size": 2}, ValueError, "indices"),
            BadInput((y, idx), {"kernel_size": (2, 2)}, TypeError, "kernel_size"),
            BadInput((y, idx), {"kernel_size": 2, "output_size": 12}, ValueError, "output_size")]


# ---- lp_pool1d / lp_pool2d ------------------------------------------------------------------------------------
def lp_pool2d_samples():
    return [Sample((rand(2, 3, 7, 9), 2.0, 3, 2), {}, "p 2, k 3, stride 2 (LpPool)"),
            Sample((positive(2, 3, 7, 9), 3, (3, 2), (2, 1)), {"ceil_mode": True}, "p 3, ceil_mode"),
            Sample((positive(1, 2, 7, 9, seed=1), 1.5, 2), {}, "p 1.5, stride None, batch 1"),
            Sample((rand(2, 2, 7, 9, seed=2), 1, 3, 2), {"ceil_mode": True}, "p 1 (a window sum), ceil_mode"),
            Sample((rand(4, 16, 33, 35, seed=3), 2, 3, 2), {}, "large (several threads)")]


def lp_pool2d_torch(torch, x, norm_type, kernel_size, stride=None, ceil_mode=False):
    return _F().lp_pool2d(x, norm_type, kernel_size, stride, ceil_mode)


def lp_pool1d_samples():
    return [Sample((rand(2, 3, 7), 2.0, 3, 2), {}, "p 2, length 7, k 3, stride 2 (LpPool)"),
            Sample((positive(2, 3, 9), 3, 3, 2), {"ceil_mode": True}, "p 3, length 9, ceil_mode"),
            Sample((positive(1, 2, 9, seed=1), 1.5, 2), {}, "p 1.5, stride None, batch 1"),
            Sample((rand(4, 16, 801, seed=3), 2, 3, 2), {}, "large (several threads)")]


def lp_pool1d_torch(torch, x, norm_type, kernel_size, stride=None, ceil_mode=False):
    return _F().lp_pool1d(x, norm_type, kernel_size, stride, ceil_mode)


def lp_pool_bad_inputs(ndim):
    x = rand(*(2, 3, 7, 9, 8)[:ndim])
    k = {3: 3, 4: (3, 3), 5: (3, 3, 3)}[ndim]
    return [BadInput((rand(*x.shape[1:]), 2.0, k), {}, ValueError, "input"),
            BadInput((x, "2", k), {}, TypeError, "norm_type"),
            BadInput((x, 0.0, k), {}, ValueError, "norm_type"),
            BadInput((x, 2.0, 0), {}, ValueError, "kernel_size"),
            BadInput((x, 2.0, 11), {}, ValueError, "kernel_size"),
            BadInput((x, 2.0, k, 0), {}, ValueError, "stride")]


# ---- feature / alpha dropout ----------------------------------------------------------------------------------
def dropout_samples():
    """Eval mode and p = 0 only: a random mask cannot equal torch's (tests/test_nn_pools_torch.py checks the
    masks' statistics and that the gradient takes the forward's mask)."""
    return [Sample((rand(2, 3, 7),), {"p": 0.3, "training": False}, "eval"),
            Sample((rand(1, 3, 5, 4, seed=1),), {"p": 0.0, "training": True}, "p=0, batch 1"),
            Sample((rand(2, 4, 3, 2, 3, seed=2),), {"p": 1.0, "training": False}, "eval, p=1, 5-D")]


def dropout_torch(name):
    def ref(torch, x, p=0.5, training=True):
        return getattr(torch, name)(x, p, training)
    return ref


def dropout_bad_inputs(feature):
    bad = [BadInput((rand(2, 3, 4),), {"p": 1.5}, ValueError, "p"),
           BadInput((rand(2, 3, 4),), {"p": -0.1}, ValueError, "p"),
           BadInput((rand(2, 3, 4),), {"p": "0.5"}, TypeError, "p"),
           BadInput((rand(2, 3, 4),), {"training": "yes"}, TypeError, "training")]
    if feature:
        bad.append(BadInput((rand(7),), {"p": 0.5}, ValueError, "input"))
    return bad
