"""Samples, torch references and bad inputs of conv_transpose2d / conv_transpose1d (ops/conv_transpose.py), for the
generated checks in tests/test_op_registry.py.

Shapes are odd and kernels not square; the samples cover strides 2 and 3, output_padding below padding, equal to it
and above it (the last rows then take no tap: bias only), output_padding >= stride where dilation allows it, groups
2 and depthwise, dilation 2, batch 1, the Winograd path of the kernel (3x3, stride 1, >= 16 channels per group), an
output that no tap reaches, and one sample large enough for several threads.
"""
from __future__ import annotations

import numpy as np

from ._samples import rand
from .conv_samples import CONV_TOL
from .registry import BadInput, Sample

__all__ = ["CONV_TOL"]


def _F():
    import torch.nn.functional as F
    return F


def _weight(cin, cog, *k, seed=1):
    """(C_in, C_out / groups, *k), scaled by 1/sqrt(C_in * kernel) so that outputs are unit-sized."""
    return rand(cin, cog, *k, seed=seed, low=-1.0, high=1.0) / np.float32(np.sqrt(cin * np.prod(k)))


def conv_transpose2d_samples():
    return [
        Sample((rand(2, 3, 5, 7), _weight(3, 4, 3, 2), rand(4, seed=2)), {"stride": 2, "padding": 1,
                                                                          "output_padding": 1},
               "k (3, 2), stride 2, padding 1, output_padding 1, bias"),
        Sample((rand(1, 4, 4, 5), _weight(4, 3, 2, 3), None),
               {"stride": (3, 2), "padding": (0, 1), "output_padding": (2, 1), "groups": 2},
               "batch 1, groups 2, stride (3, 2), output_padding above padding (last rows bias only)"),
        Sample((rand(2, 3, 6, 5), _weight(3, 2, 3, 3), rand(2, seed=2)),
               {"padding": 1, "output_padding": 1, "dilation": 2},
               "dilation 2, stride 1, output_padding 1 (>= stride, < dilation)"),
        Sample((rand(1, 3, 4, 5), _weight(3, 2, 2, 3), rand(2, seed=2)),
               {"padding": (0, 1), "output_padding": (2, 1), "dilation": 3},
               "dilation 3, stride 1, output_padding (2, 1) above padding (0, 1)"),
        Sample((rand(2, 2, 4, 3), _weight(2, 3, 2, 3), rand(3, seed=2)),
               {"stride": (2, 3), "padding": (2, 0), "output_padding": (1, 2), "dilation": (2, 1)},
               "stride (2, 3), padding (2, 0), output_padding (1, 2), dilation (2, 1)"),
        Sample((rand(2, 4, 5, 6), _weight(4, 1, 3, 3), rand(4, seed=2)), {"stride": 2, "groups": 4},
               "depthwise (groups 4), stride 2"),
        Sample((rand(2, 16, 7, 9), _weight(16, 17, 3, 3), rand(17, seed=2)), {"padding": 1},
               "Winograd 3x3 (16 channels in, 17 out)"),
        Sample((rand(1, 2, 1, 1), _weight(2, 3, 1, 1), rand(3, seed=2)),
               {"stride": 3, "padding": 1, "output_padding": 2}, "1x1 output that no tap reaches (bias only)"),
        Sample((rand(4, 32, 10, 12), _weight(32, 16, 4, 4), rand(16, seed=2)), {"stride": 2, "padding": 1},
               "DCGAN-like k 4, stride 2, padding 1, large (several threads)"),
    ]


def conv_transpose2d_torch(torch, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                           dilation=1):
    return _F().conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d_bad_inputs():
    x, w, b = rand(2, 3, 5, 7), rand(3, 4, 3, 2), rand(4)
    return [BadInput((rand(3, 5, 7), w, b), {}, ValueError, "input"),
            BadInput((x, rand(3, 4, 3), b), {}, ValueError, "weight"),
            BadInput((x, rand(2, 4, 3, 2), b), {}, ValueError, "weight"),
            BadInput((x, w, rand(5)), {}, ValueError, "bias"),
            BadInput((x, w, b), {"stride": 0}, ValueError, "stride"),
            BadInput((x, w, b), {"stride": 2, "output_padding": 2}, ValueError, "output_padding"),
            BadInput((x, w, b), {"output_padding": 1}, ValueError, "output_padding"),
            BadInput((x, w, b), {"output_padding": -1}, ValueError, "output_padding"),
            BadInput((x, w, b), {"groups": 2}, ValueError, "groups"),
            BadInput((x, w, b), {"groups": 1.5}, TypeError, "groups"),
            BadInput((x, w, b), {"padding": "same"}, TypeError, "padding"),
            BadInput((x, w, b), {"padding": 4}, ValueError, "padding"),
            BadInput((x, w, b), {"dilation": (1, 2, 3)}, TypeError, "dilation"),
            BadInput((x.astype(np.int64), w, b), {}, TypeError, "input")]


def conv_transpose1d_samples():
    return [
        Sample((rand(2, 3, 7), _weight(3, 4, 3), rand(4, seed=2)), {"stride": 2, "padding": 1, "output_padding": 1},
               "k 3, stride 2, padding 1, output_padding 1, bias"),
        Sample((rand(1, 4, 6), _weight(4, 3, 2), None),
               {"stride": (3,), "output_padding": (2,), "groups": 2}, "batch 1, groups 2, 1-tuples, output_padding 2"),
        Sample((rand(2, 3, 8), _weight(3, 2, 3), rand(2, seed=2)), {"padding": 2, "output_padding": 1, "dilation": 2},
               "dilation 2, output_padding 1 at stride 1"),
        Sample((rand(4, 16, 100), _weight(16, 8, 5), rand(8, seed=2)),
               {"stride": 2, "padding": 2, "output_padding": 1}, "large (several threads)"),
    ]


def conv_transpose1d_torch(torch, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                           dilation=1):
    return _F().conv_transpose1d(input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose1d_bad_inputs():
    x, w, b = rand(2, 3, 9), rand(3, 4, 3), rand(4)
    return [BadInput((rand(3, 9), w, b), {}, ValueError, "input"),
            BadInput((x, rand(3, 4, 3, 1), b), {}, ValueError, "weight"),
            BadInput((x, rand(2, 4, 3), b), {}, ValueError, "weight"),
            BadInput((x, w, rand(5)), {}, ValueError, "bias"),
            BadInput((x, w, b), {"stride": (1, 2)}, TypeError, "stride"),
            BadInput((x, w, b), {"stride": 3, "output_padding": 3}, ValueError, "output_padding"),
            BadInput((x, w, b), {"groups": 2}, ValueError, "groups"),
            BadInput((x, w, b), {"padding": 6}, ValueError, "padding"),
            BadInput((x, w, b), {"dilation": 0}, ValueError, "dilation")]
