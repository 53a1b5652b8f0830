"""Shared by the tests of the conv2d forward paths called directly (tests/test_conv_implicit_kernels.py,
tests/test_conv_direct_ocv.py): a path run on any geometry into a NaN-filled output, the float64 torch reference
with asymmetric padding, random data."""
import numpy as np
import torch
import torch.nn.functional as F

from forgegrad import _C


def pads(p):
    return (p, p, p, p) if isinstance(p, int) else p


def run_direct(name, x, w, b, stride, padding, dilation, groups, act=-1, alpha=0.0):
    """``_C.conv.<name>`` (conv2d_forward_implicit / conv2d_forward_ocv) into a fresh output of NaNs."""
    top, bottom, left, right = pads(padding)
    oh = (x.shape[2] + top + bottom - dilation[0] * (w.shape[2] - 1) - 1) // stride[0] + 1
    ow = (x.shape[3] + left + right - dilation[1] * (w.shape[3] - 1) - 1) // stride[1] + 1
    y = np.full((x.shape[0], w.shape[0], oh, ow), np.nan, np.float32)
    getattr(_C.conv, name)(x, w, b, y, stride, (top, bottom, left, right), dilation, groups, act, alpha)
    return y


def reference(x, w, b, stride, padding, dilation, groups):
    top, bottom, left, right = pads(padding)
    tx = F.pad(torch.tensor(x, dtype=torch.float64), (left, right, top, bottom))
    tb = None if b is None else torch.tensor(b, dtype=torch.float64)
    return F.conv2d(tx, torch.tensor(w, dtype=torch.float64), tb, stride=stride, dilation=dilation,
                    groups=groups).numpy()


def data(rng, xshape, wshape, bias=True):
    x = rng.standard_normal(xshape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    b = rng.standard_normal(wshape[0]).astype(np.float32) if bias else None
    return x, w, b
