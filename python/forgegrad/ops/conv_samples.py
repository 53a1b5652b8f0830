"""Samples, torch references and bad inputs of the conv / pool / batch-norm ops (ops/conv.py), for
the generated checks in tests/test_op_registry.py.

Shapes are odd and not square; the samples cover strides, paddings (int, pair, "same", "valid",
the 4-tuple extension), dilations, groups (depthwise too), the Winograd path (3x3, stride 1, >= 16
channels per group), ceil_mode, count_include_pad, divisor_override, adaptive sizes that do not
divide the input, batch norm in both modes with and without affine parameters and running
statistics, and for each op one sample large enough that its kernel runs on several threads.
"""
from __future__ import annotations

import numpy as np

from ._samples import positive, rand
from .registry import BadInput, Sample

# conv2d sums in another order than torch (and Winograd transforms its tiles). The weight gradient
# of the large sample sums N*OH*OW = 1600 products into values up to ~90: there torch's own float32
# result is 1e-4 off the float64 one (forgegrad's 1e-5), so cancelled entries differ by ~3e-5.
CONV_TOL = (1e-4, 1e-4)
# batch norm divides by a batch standard deviation; its backward sums over N*H*W per channel
BATCH_NORM_TOL = (1e-4, 1e-5)

def _F():
    import torch.nn.functional as F
    return F


# ---- conv2d -----------------------------------------------------------------------------------------
def _weight(oc, cg, kh, kw, seed=1):
    """Scaled by 1/sqrt(fan-in) as an initialised layer, so outputs are unit-sized (the ONNX check
    compares with an absolute tolerance of 1e-6, below the rounding of sums of large terms)."""
    return rand(oc, cg, kh, kw, seed=seed, low=-1.0, high=1.0) / np.float32(np.sqrt(cg * kh * kw))


def conv2d_samples():
    return [
        Sample((rand(2, 3, 7, 9), _weight(4, 3, 3, 2), rand(4, seed=2)),
               {"stride": 2, "padding": 1, "dilation": 2}, "k (3, 2), stride 2, padding 1, dilation 2, bias"),
        Sample((rand(2, 6, 7, 9), _weight(4, 3, 3, 3), None),
               {"stride": (1, 2), "padding": (2, 1), "groups": 2}, "groups 2, stride (1, 2), padding (2, 1)"),
        Sample((rand(2, 4, 8, 7), _weight(4, 1, 3, 4), rand(4, seed=2)),
               {"padding": "same", "dilation": (1, 2), "groups": 4},
               "depthwise, padding 'same' with an even dilated kernel width"),
        Sample((rand(3, 5, 4, 6), _weight(7, 5, 1, 1), rand(7, seed=2)), {"padding": "valid"}, "1x1, 'valid'"),
        Sample((rand(1, 2, 5, 6), _weight(3, 2, 2, 3), rand(3, seed=2)), {"padding": (1, 0, 2, 1)},
               "4-tuple padding (top, bottom, left, right)"),
        Sample((rand(2, 16, 9, 11), _weight(17, 16, 3, 3), rand(17, seed=2)), {"padding": 1},
               "Winograd 3x3 (16 channels in, 17 out)"),
        Sample((rand(4, 8, 20, 22), _weight(12, 8, 3, 3), rand(12, seed=2)), {"padding": (1, 0)},
               "large (several threads: one task per image)"),
    ]


def conv2d_torch(torch, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    F = _F()
    # Zeros padded explicitly: torch's conv skips the padded taps, so a NaN / inf weight meeting only
    # padding would give a finite value, where IEEE arithmetic (0 * NaN) and forgegrad give NaN.
    if isinstance(padding, int):
        padding = (padding, padding)
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        padding = (padding[0], padding[0], padding[1], padding[1])
    if isinstance(padding, (tuple, list)) and len(padding) == 4:  # forgegrad's (top, bottom, left, right)
        top, bottom, left, right = padding
        x, padding = F.pad(x, (left, right, top, bottom)), 0
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def conv2d_bad_inputs():
    x, w, b = rand(2, 3, 7, 9), rand(4, 3, 3, 2), rand(4)
    return [BadInput((rand(3, 7, 9), w, b), {}, ValueError, "input"),
            BadInput((x, rand(4, 3, 3), b), {}, ValueError, "weight"),
            BadInput((x, rand(4, 2, 3, 2), b), {}, ValueError, "weight"),
            BadInput((x, w, rand(5)), {}, ValueError, "bias"),
            BadInput((x, w, b), {"stride": 0}, ValueError, "stride"),
            BadInput((x, w, b), {"dilation": (1, 2, 3)}, TypeError, "dilation"),
            BadInput((x, w, b), {"padding": "full"}, ValueError, "padding"),
            BadInput((x, w, b), {"padding": "same", "stride": 2}, ValueError, "stride"),
            BadInput((x, w, b), {"padding": -1}, ValueError, "padding"),
            BadInput((x, rand(4, 1, 3, 2), b), {"groups": 2}, ValueError, "groups"),
            BadInput((x, w, b), {"groups": 1.5}, TypeError, "groups")]


# ---- conv1d -----------------------------------------------------------------------------------------
def conv1d_samples():
    def w(oc, cg, k, seed=1):
        return _weight(oc, cg, 1, k, seed)[:, :, 0, :].copy()
    return [
        Sample((rand(2, 3, 11), w(4, 3, 3), rand(4, seed=2)), {"stride": 2, "padding": 1, "dilation": 2},
               "k 3, stride 2, padding 1, dilation 2, bias"),
        Sample((rand(2, 6, 9), w(4, 3, 2), None), {"stride": (3,), "padding": (2,), "groups": 2},
               "groups 2, 1-tuples, even kernel"),
        Sample((rand(3, 4, 10), w(4, 1, 4), rand(4, seed=2)), {"padding": "same", "groups": 4},
               "depthwise, padding 'same' with an even kernel"),
        Sample((rand(2, 5, 7), w(3, 5, 1), rand(3, seed=2)), {"padding": "valid"}, "k 1, 'valid'"),
        Sample((rand(2, 16, 30), w(17, 16, 3), rand(17, seed=2)), {"padding": 1, "stride": 2},
               "Whisper's second conv (k 3, stride 2, padding 1)"),
        Sample((rand(4, 8, 200), w(12, 8, 5), rand(12, seed=2)), {"padding": 2}, "large (several threads)"),
    ]


def conv1d_torch(torch, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    # zeros padded explicitly, as conv2d_torch does (torch skips padded taps: 0 * NaN)
    if not isinstance(padding, str):
        p = padding[0] if isinstance(padding, (tuple, list)) else padding
        x, padding = _F().pad(x, (p, p)), 0
    return _F().conv1d(x, weight, bias, stride, padding, dilation, groups)


def conv1d_bad_inputs():
    x, w, b = rand(2, 3, 9), rand(4, 3, 3), rand(4)
    return [BadInput((rand(3, 9), w, b), {}, ValueError, "input"),
            BadInput((x, rand(4, 3, 3, 1), b), {}, ValueError, "weight"),
            BadInput((x, rand(4, 2, 3), b), {}, ValueError, "weight"),
            BadInput((x, w, rand(5)), {}, ValueError, "bias"),
            BadInput((x, w, b), {"stride": 0}, ValueError, "stride"),
            BadInput((x, w, b), {"stride": (1, 2)}, TypeError, "stride"),
            BadInput((x, w, b), {"padding": "full"}, ValueError, "padding"),
            BadInput((x, w, b), {"padding": "same", "stride": 2}, ValueError, "stride"),
            BadInput((x, w, b), {"padding": -1}, ValueError, "padding"),
            BadInput((x, rand(4, 3, 12), b), {}, ValueError, "kernel"),
            BadInput((x, w, b), {"groups": 1.5}, TypeError, "groups")]


# ---- max_pool2d ---------------------------------------------------------------------------------------
def _pool_input_bad(op_kwargs):
    return [BadInput((rand(3, 7, 9),), dict(op_kwargs), ValueError, "input"),
            BadInput((rand(2, 0, 7, 9),), dict(op_kwargs), ValueError, "input"),
            BadInput((rand(2, 3, 7, 9),), {**op_kwargs, "kernel_size": 0}, ValueError, "kernel_size"),
            BadInput((rand(2, 3, 7, 9),), {**op_kwargs, "kernel_size": (2, 2, 2)}, TypeError, "kernel_size"),
            BadInput((rand(2, 3, 7, 9),), {**op_kwargs, "stride": 0}, ValueError, "stride"),
            BadInput((rand(2, 3, 7, 9),), {**op_kwargs, "padding": 2}, ValueError, "padding"),
            BadInput((rand(2, 3, 2, 9),), {**op_kwargs, "kernel_size": 3}, ValueError, "kernel_size")]


def max_pool2d_samples():
    return [
        Sample((rand(2, 3, 7, 9),), {"kernel_size": (3, 2), "stride": 2, "padding": 1, "dilation": 2},
               "k (3, 2), stride 2, padding 1, dilation 2"),
        Sample((rand(2, 3, 7, 9),), {"kernel_size": 2, "ceil_mode": True}, "stride None (= kernel), ceil_mode"),
        Sample((rand(1, 4, 6, 5),), {"kernel_size": 3, "stride": (2, 1), "padding": (1, 0)}, "stride (2, 1)"),
        Sample((rand(3, 2, 8, 11),), {"kernel_size": (2, 3), "stride": 3, "padding": 1, "ceil_mode": True},
               "ceil_mode with padding"),
        Sample((rand(2, 3, 8, 10),), {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True},
               "ceil_mode, a last window that would start in the padding (dropped)"),
        Sample((rand(4, 16, 33, 35),), {"kernel_size": 3, "stride": 2}, "large (several threads)"),
    ]


def max_pool2d_torch(torch, x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
    return _F().max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)


def max_pool2d_bad_inputs():
    return _pool_input_bad({"kernel_size": 2}) + [
        BadInput((rand(2, 3, 7, 9),), {"kernel_size": 2, "dilation": 0}, ValueError, "dilation")]


# ---- avg_pool2d ---------------------------------------------------------------------------------------
def avg_pool2d_samples():
    return [
        Sample((rand(2, 3, 7, 9),), {"kernel_size": (3, 2), "stride": 2, "padding": 1},
               "k (3, 2), stride 2, padding 1"),
        Sample((rand(2, 3, 7, 9),), {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False,
                                     "ceil_mode": True}, "count_include_pad False, ceil_mode"),
        Sample((rand(2, 3, 8, 9),), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
               "ceil_mode, padding counted"),
        Sample((rand(1, 4, 6, 7),), {"kernel_size": (2, 3), "stride": (1, 2), "divisor_override": 5},
               "divisor_override 5"),
        Sample((rand(2, 3, 8, 10),), {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True},
               "ceil_mode, a last window that would start in the padding (dropped)"),
        Sample((rand(2, 3, 7, 9),), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                                     "count_include_pad": False, "divisor_override": 4},
               "divisor_override with ceil_mode, padding not counted"),
        Sample((rand(2, 2, 5, 7),), {"kernel_size": 2}, "stride None (= kernel)"),
        Sample((rand(4, 16, 33, 35),), {"kernel_size": 3, "stride": 2, "padding": 1}, "large (several threads)"),
    ]


def avg_pool2d_torch(torch, x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                     divisor_override=None):
    return _F().avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool2d_bad_inputs():
    return _pool_input_bad({"kernel_size": 2}) + [
        BadInput((rand(2, 3, 7, 9),), {"kernel_size": 2, "divisor_override": 0}, ValueError, "divisor_override")]


# ---- adaptive_avg_pool2d ------------------------------------------------------------------------------
def adaptive_avg_pool2d_samples():
    return [
        Sample((rand(2, 3, 7, 9),), {"output_size": (3, 4)}, "(3, 4) from 7x9: overlapping windows"),
        Sample((rand(2, 5, 7, 9),), {"output_size": 1}, "global"),
        Sample((rand(1, 3, 6, 9),), {"output_size": (None, 2)}, "(None, 2)"),
        Sample((rand(1, 2, 6, 9),), {"output_size": (2, 3)}, "sizes that divide"),
        Sample((rand(1, 2, 5, 4),), {"output_size": (7, 6)}, "larger than the input"),
        Sample((rand(4, 16, 33, 35),), {"output_size": (5, 7)}, "large (several threads)"),
        Sample((rand(2, 3, 17, 17),), {"output_size": 3}, "3 from 17"),
        Sample((rand(2, 2, 14, 14),), {"output_size": (1, 5)}, "(1, 5) from 14x14"),
    ]


def adaptive_avg_pool2d_torch(torch, x, output_size=1):
    return _F().adaptive_avg_pool2d(x, output_size)


def adaptive_avg_pool2d_bad_inputs():
    x = rand(2, 3, 7, 9)
    return [BadInput((rand(3, 7, 9),), {"output_size": 2}, ValueError, "input"),
            BadInput((x,), {"output_size": (0, 2)}, ValueError, "output_size"),
            BadInput((x,), {"output_size": (1, 2, 3)}, TypeError, "output_size"),
            BadInput((x,), {"output_size": "2"}, TypeError, "output_size")]


# ---- batch_norm -------------------------------------------------------------------------------------
def _bn_args(*shape, seed=0, stats=True, affine=True):
    c = shape[1]
    return (rand(*shape, seed=seed),
            rand(c, seed=seed + 1, low=-0.5, high=0.5) if stats else None,
            positive(c, seed=seed + 2) if stats else None,
            positive(c, seed=seed + 3) if affine else None,
            rand(c, seed=seed + 4) if affine else None)


def batch_norm_samples():
    return [
        Sample(_bn_args(2, 3, 5, 7), {"training": False}, "eval, (N, C, H, W)", grad=(0, 3, 4)),
        Sample(_bn_args(4, 5, seed=1, affine=False), {"training": False, "eps": 1e-3}, "eval (N, C), no affine",
               grad=(0,)),
        Sample(_bn_args(3, 4, 6, seed=2), {"training": True}, "training (N, C, L); not exported (eval mode only)",
               grad=(0, 3, 4), onnx=False),
        Sample(_bn_args(2, 3, 4, 5, seed=3, stats=False), {"training": True, "momentum": 0.3},
               "training without running statistics; not exported (eval mode only)", grad=(0, 3, 4), onnx=False),
        Sample(_bn_args(4, 32, 15, 17, seed=4), {"training": True, "momentum": 0.2, "eps": 1e-4},
               "large training (several threads); not exported (eval mode only)", grad=(0, 3, 4), onnx=False),
        Sample(_bn_args(4, 32, 15, 17, seed=5), {"training": False}, "large eval (several threads)", grad=(0, 3, 4)),
        Sample(_bn_args(2, 3, 3, 4, 5, seed=6), {"training": False}, "eval (N, C, D, H, W): BatchNorm3d",
               grad=(0, 3, 4)),
        Sample(_bn_args(2, 3, 3, 4, 5, seed=7), {"training": True, "momentum": 0.3},
               "training (N, C, D, H, W); not exported (eval mode only)", grad=(0, 3, 4), onnx=False),
    ]


def batch_norm_torch(torch, x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                     momentum=0.1, eps=1e-5):
    # training updates the running statistics in place: work on copies, as forgegrad's side gets its own
    rm = None if running_mean is None else running_mean.detach().clone()
    rv = None if running_var is None else running_var.detach().clone()
    return _F().batch_norm(x, rm, rv, weight, bias, training, momentum, eps)


def batch_norm_bad_inputs():
    x, rm, rv, w, b = _bn_args(2, 3, 5, 7)
    return [BadInput((rand(6), rm, rv, w, b), {}, ValueError, "input"),
            BadInput((x, rand(4), rv, w, b), {}, ValueError, "running_mean"),
            BadInput((x, rm, positive(2), w, b), {}, ValueError, "running_var"),
            BadInput((x, rm, rv, positive(3, 1), b), {}, ValueError, "weight"),
            BadInput((x, rm, rv, w, rand(5)), {}, ValueError, "bias"),
            BadInput((x, None, None, w, b), {"training": False}, ValueError, "running_mean"),
            BadInput((rand(1, 3), None, None, w, b), {"training": True}, ValueError, "per channel")]
