"""Samples, torch references and bad inputs of the volumetric ops (ops/conv3d.py, ops/pool3d.py) for the generated
checks in tests/test_op_registry.py. Shapes are small and odd (the checks run in CI for every op): strides,
paddings (int, triple, 'same' with an even dilated kernel, 'valid'), dilation, groups, output_padding above
padding, ceil_mode, count_include_pad, divisor_override, adaptive sizes that do not divide.
"""
from __future__ import annotations

import numpy as np

from ._samples import positive, rand
from .registry import BadInput, Sample

CONV_TOL = (1e-4, 1e-4)


def _F():
    import torch.nn.functional as F
    return F


def _w(a, b, *k, seed=1):
    """Scaled by 1/sqrt(fan) so that outputs are unit-sized (the ONNX check's absolute tolerance)."""
    return rand(a, b, *k, seed=seed, low=-1.0, high=1.0) / np.float32(np.sqrt(b * np.prod(k)))


# ---- conv3d -----------------------------------------------------------------------------------------------
def conv3d_samples():
    return [
        Sample((rand(2, 4, 5, 6, 7), _w(6, 2, 3, 2, 3), rand(6, seed=2)),
               {"stride": (1, 2, 1), "padding": (1, 0, 2), "dilation": (2, 1, 1), "groups": 2},
               "groups 2, stride (1, 2, 1), padding (1, 0, 2), dilation (2, 1, 1), bias"),
        Sample((rand(1, 3, 4, 5, 6), _w(2, 3, 2, 3, 2), rand(2, seed=2)), {"padding": "same", "dilation": (1, 2, 1)},
               "padding 'same' with even kernels"),
        Sample((rand(2, 3, 5, 4, 7), _w(4, 3, 3, 3, 3), None), {"stride": 2, "padding": 1}, "k 3, stride 2, no bias"),
    ]


def conv3d_torch(torch, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    # zeros padded explicitly (torch skips padded taps: 0 * NaN would differ), as conv2d's reference
    if not isinstance(padding, str):
        p = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        input, padding = _F().pad(input, (p[2], p[2], p[1], p[1], p[0], p[0])), 0
    return _F().conv3d(input, weight, bias, stride, padding, dilation, groups)


def conv3d_bad_inputs():
    x, w, b = rand(2, 4, 5, 6, 7), rand(6, 4, 3, 2, 3), rand(6)
    return [BadInput((rand(4, 5, 6, 7), w, b), {}, ValueError, "input"),
            BadInput((x, rand(6, 4, 3, 2), b), {}, ValueError, "weight"),
            BadInput((x, rand(6, 3, 3, 2, 3), b), {}, ValueError, "weight"),
            BadInput((x, w, rand(5)), {}, ValueError, "bias"),
            BadInput((x, w, b), {"stride": 0}, ValueError, "stride"),
            BadInput((x, w, b), {"dilation": (1, 2)}, TypeError, "dilation"),
            BadInput((x, w, b), {"padding": "full"}, ValueError, "padding"),
            BadInput((x, w, b), {"padding": "same", "stride": 2}, ValueError, "stride"),
            BadInput((x, w, b), {"padding": -1}, ValueError, "padding"),
            BadInput((x, rand(6, 1, 3, 2, 3), b), {"groups": 3}, ValueError, "groups"),
            BadInput((x, w, b), {"groups": 1.5}, TypeError, "groups"),
            BadInput((x, rand(6, 4, 9, 2, 3), b), {}, ValueError, "kernel"),
            BadInput((x.astype(np.int64), w, b), {}, TypeError, "input")]


# ---- conv_transpose3d -------------------------------------------------------------------------------------
def conv_transpose3d_samples():
    return [
        Sample((rand(2, 3, 3, 4, 5), _w(3, 4, 3, 2, 3), rand(4, seed=2)),
               {"stride": 2, "padding": 1, "output_padding": (1, 0, 1)}, "stride 2, padding 1, output_padding, bias"),
        Sample((rand(1, 4, 3, 4, 3), _w(4, 1, 2, 3, 2), None),
               {"stride": (3, 1, 2), "padding": (0, 1, 1), "output_padding": (2, 0, 1), "groups": 2},
               "groups 2, output_padding above padding (the last planes take no tap)"),
        Sample((rand(2, 2, 3, 4, 3), _w(2, 3, 2, 2, 3), rand(3, seed=2)), {"padding": 1, "dilation": (2, 1, 2)},
               "dilation (2, 1, 2)"),
    ]


def conv_transpose3d_torch(torch, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                           dilation=1):
    return _F().conv_transpose3d(input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose3d_bad_inputs():
    x, w, b = rand(2, 3, 3, 4, 5), rand(3, 4, 3, 2, 3), rand(4)
    return [BadInput((rand(3, 3, 4, 5), w, b), {}, ValueError, "input"),
            BadInput((x, rand(3, 4, 3, 2), b), {}, ValueError, "weight"),
            BadInput((x, rand(2, 4, 3, 2, 3), b), {}, ValueError, "weight"),
            BadInput((x, w, rand(5)), {}, ValueError, "bias"),
            BadInput((x, w, b), {"stride": 0}, ValueError, "stride"),
            BadInput((x, w, b), {"output_padding": 1}, ValueError, "output_padding"),
            BadInput((x, w, b), {"groups": 2}, ValueError, "groups"),
            BadInput((x, w, b), {"padding": "same"}, TypeError, "padding"),
            BadInput((x, w, b), {"padding": 4}, ValueError, "padding"),
            BadInput((x, w, b), {"dilation": (1, 2)}, TypeError, "dilation")]


# ---- pools ------------------------------------------------------------------------------------------------
def _pool_bad(kwargs):
    x = rand(2, 3, 4, 5, 6)
    return [BadInput((rand(3, 4, 5, 6),), dict(kwargs), ValueError, "input"),
            BadInput((rand(2, 0, 4, 5, 6),), dict(kwargs), ValueError, "input"),
            BadInput((x,), {**kwargs, "kernel_size": 0}, ValueError, "kernel_size"),
            BadInput((x,), {**kwargs, "kernel_size": (2, 2)}, TypeError, "kernel_size"),
            BadInput((x,), {**kwargs, "stride": 0}, ValueError, "stride"),
            BadInput((x,), {**kwargs, "padding": 2}, ValueError, "padding"),
            BadInput((rand(2, 3, 2, 5, 6),), {**kwargs, "kernel_size": 3}, ValueError, "kernel_size")]


def max_pool3d_samples():
    return [
        Sample((rand(2, 3, 5, 6, 7),), {"kernel_size": (3, 2, 3), "stride": 2, "padding": 1, "dilation": (1, 2, 1)},
               "k (3, 2, 3), stride 2, padding 1, dilation (1, 2, 1)"),
        Sample((rand(1, 2, 5, 7, 6),), {"kernel_size": 2, "ceil_mode": True}, "stride None (= kernel), ceil_mode"),
        Sample((rand(2, 2, 4, 6, 5),), {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True},
               "ceil_mode, a last window that would start in the padding (dropped)"),
    ]


def max_pool3d_torch(torch, x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
    return _F().max_pool3d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)


def max_pool3d_bad_inputs():
    return _pool_bad({"kernel_size": 2}) + [
        BadInput((rand(2, 3, 4, 5, 6),), {"kernel_size": 2, "dilation": 0}, ValueError, "dilation")]


def avg_pool3d_samples():
    return [
        Sample((rand(2, 3, 5, 6, 7),), {"kernel_size": (3, 2, 3), "stride": 2, "padding": 1},
               "k (3, 2, 3), stride 2, padding 1"),
        Sample((rand(1, 2, 5, 6, 7),), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                                        "count_include_pad": False}, "ceil_mode, padding not counted"),
        Sample((rand(2, 2, 4, 5, 6),), {"kernel_size": (2, 3, 2), "stride": (1, 2, 2), "divisor_override": 5},
               "divisor_override 5"),
    ]


def avg_pool3d_torch(torch, x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                     divisor_override=None):
    return _F().avg_pool3d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool3d_bad_inputs():
    return _pool_bad({"kernel_size": 2}) + [
        BadInput((rand(2, 3, 4, 5, 6),), {"kernel_size": 2, "divisor_override": 0}, ValueError, "divisor_override")]


def adaptive_pool3d_samples():
    return [
        Sample((rand(2, 3, 5, 7, 6),), {"output_size": (2, 3, 4)}, "(2, 3, 4) from 5x7x6: overlapping windows"),
        Sample((rand(2, 4, 3, 5, 4),), {"output_size": 1}, "global"),
        Sample((rand(1, 2, 4, 6, 5),), {"output_size": (2, None, 5)}, "(2, None, 5): sizes that divide, one kept"),
    ]


def adaptive_max_pool3d_samples():
    samples = adaptive_pool3d_samples()
    samples[0].onnx = False
    samples[0].name += " (not exported: ONNX has no adaptive max with indices over uneven windows)"
    return samples


def adaptive_avg_pool3d_torch(torch, x, output_size=1):
    return _F().adaptive_avg_pool3d(x, output_size)


def adaptive_max_pool3d_torch(torch, x, output_size=1):
    return _F().adaptive_max_pool3d(x, output_size, return_indices=True)


def adaptive_pool3d_bad_inputs():
    x = rand(2, 3, 4, 5, 6)
    return [BadInput((rand(3, 4, 5, 6),), {"output_size": 2}, ValueError, "input"),
            BadInput((x,), {"output_size": 0}, ValueError, "output_size"),
            BadInput((x,), {"output_size": (2, 2)}, TypeError, "output_size"),
            BadInput((x,), {"output_size": "2"}, TypeError, "output_size")]


def lp_pool3d_samples():
    return [
        Sample((positive(2, 3, 5, 6, 7), 2.0, (3, 2, 3)), {"stride": 2}, "p 2, k (3, 2, 3), stride 2"),
        Sample((positive(1, 2, 5, 5, 6), 3, 2), {"ceil_mode": True}, "p 3, ceil_mode"),
    ]


def lp_pool3d_torch(torch, x, norm_type, kernel_size, stride=None, ceil_mode=False):
    return _F().lp_pool3d(x, norm_type, kernel_size, stride, ceil_mode)


def max_unpool3d_samples():
    def s(shape, seed, k, stride=None, padding=0, name="", **kw):
        from ._window3d import max_pool, pool_geometry
        x = rand(*shape, seed=seed)
        y, idx = max_pool(x, pool_geometry(x.shape, k, stride, padding))
        return Sample((y, idx), {"kernel_size": k, "stride": stride, "padding": padding, **kw}, name, grad=(0,))
    return [s((2, 3, 4, 6, 8), 0, 2, name="k 2 (default stride), from max_pool3d"),
            s((1, 2, 6, 5, 7), 1, (3, 2, 3), (2, 2, 1), 1, output_size=(6, 5, 7),
              name="k (3, 2, 3), stride (2, 2, 1), padding 1: overlapping windows, output_size")]


def max_unpool3d_torch(torch, x, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _F().max_unpool3d(x, indices, kernel_size, stride, padding, output_size)


def max_unpool3d_bad_inputs():
    x, idx = rand(2, 3, 2, 3, 3), np.zeros((2, 3, 2, 3, 3), np.int64)
    k = {"kernel_size": 2}
    return [BadInput((rand(3, 2, 3, 3), idx[0]), k, ValueError, "input"),
            BadInput((x, idx.astype(np.float32)), k, TypeError, "indices"),
            BadInput((x, idx[:, :, :1]), k, ValueError, "indices"),
            BadInput((x, idx + 1000), k, ValueError, "indices"),
            BadInput((x, idx), {**k, "output_size": (9, 9, 9)}, ValueError, "output_size"),
            BadInput((x, idx), {"kernel_size": (2, 2)}, TypeError, "kernel_size")]
