"""Every conv / pool padding form of forgegrad's own layers through forgegrad.onnx.export.

The exporter runs the file in onnxruntime on the example and at two other batch sizes and compares
with forgegrad (the report); forgegrad's forward is checked against torch here too, so a padding that
is wrong the same way in the layer and the exported graph still fails. Regression for
Conv2D(padding="same"), whose (top, bottom, left, right) padding used to be exported as 8 pads.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as TF

import forgegrad as fg
import forgegrad.nn as nn
import forgegrad.onnx as fonnx

# torch's own note that it pads a copy for an even "same" kernel: expected here
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _keras_same(n, k, s, d):
    """TensorFlow's SAME padding along one axis (before, after), written out independently."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def _conv_ref(m, x, stride, padding, dilation, groups=1):
    w, b = _t(m.weight._data), None if m.bias is None else _t(m.bias._data)
    if isinstance(padding, tuple) and len(padding) == 4:  # (top, bottom, left, right)
        t, bo, le, r = padding
        return TF.conv2d(TF.pad(_t(x), (le, r, t, bo)), w, b, stride, 0, dilation, groups)
    return TF.conv2d(_t(x), w, b, stride, padding, dilation, groups)


# name -> (forgegrad module, torch reference of its forward on x)
def _cases():
    c = {}
    for name, kw in {
        "conv2d_int": dict(kernel_size=3, padding=1),
        "conv2d_tuple": dict(kernel_size=(3, 2), padding=(2, 0)),
        "conv2d_valid": dict(kernel_size=3, padding="valid"),
        "conv2d_same_odd_kernel": dict(kernel_size=3, padding="same"),
        "conv2d_same_even_kernel": dict(kernel_size=4, padding="same"),
        "conv2d_same_rect_dilated": dict(kernel_size=(2, 3), padding="same", dilation=(3, 2)),
        "conv2d_dilation_int_padding": dict(kernel_size=3, padding=2, dilation=2),
        "conv2d_strided_tuple": dict(kernel_size=3, stride=(2, 1), padding=(1, 2)),
        "conv2d_groups_same": dict(kernel_size=4, padding="same", groups=3),
    }.items():
        m = nn.Conv2d(3, 6, **kw)
        c[name] = (m, lambda x, m=m: _conv_ref(m, x, m.stride, m.padding, m.dilation, m.groups))
    for name, kw in {
        "keras_same_even_kernel": dict(kernel_size=4, padding="same"),
        "keras_same_stride2": dict(kernel_size=3, strides=2, padding="same"),
        "keras_same_stride2_even": dict(kernel_size=(4, 2), strides=(2, 3), padding="SAME"),
        "keras_same_dilated": dict(kernel_size=3, padding="same", dilation_rate=2),
        "keras_valid": dict(kernel_size=3, strides=2, padding="valid"),
    }.items():
        m = nn.Conv2D(5, in_channels=3, **kw)

        def ref(x, m=m):
            h, w = x.shape[2:]
            (t, b), (le, r) = (_keras_same(n, k, s, d) if m.padding == "same" else (0, 0)
                               for n, k, s, d in zip((h, w), m.kernel_size, m.strides, m.dilation_rate))
            return _conv_ref(m, x, m.strides, (t, b, le, r), m.dilation_rate)
        c[name] = (m, ref)
    pools = {
        "maxpool_padding": (nn.MaxPool2d(3, 2, padding=1), lambda x: TF.max_pool2d(_t(x), 3, 2, 1)),
        "maxpool_ceil": (nn.MaxPool2d(3, 2, ceil_mode=True), lambda x: TF.max_pool2d(_t(x), 3, 2, ceil_mode=True)),
        "maxpool_padding_ceil_dilation": (nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
                                          lambda x: TF.max_pool2d(_t(x), 3, 2, 1, 2, ceil_mode=True)),
        "maxpool_rect_pair_padding": (nn.MaxPool2d((2, 4), (1, 3), padding=(1, 2)),
                                      lambda x: TF.max_pool2d(_t(x), (2, 4), (1, 3), (1, 2))),
        "avgpool_padding_counted": (nn.AvgPool2d(3, 2, 1), lambda x: TF.avg_pool2d(_t(x), 3, 2, 1)),
        "avgpool_padding_not_counted": (nn.AvgPool2d(3, 2, 1, count_include_pad=False),
                                        lambda x: TF.avg_pool2d(_t(x), 3, 2, 1, count_include_pad=False)),
        "avgpool_ceil": (nn.AvgPool2d(2, 2, ceil_mode=True), lambda x: TF.avg_pool2d(_t(x), 2, 2, ceil_mode=True)),
        "avgpool_padding_ceil_counted": (nn.AvgPool2d(3, 2, 1, ceil_mode=True),
                                         lambda x: TF.avg_pool2d(_t(x), 3, 2, 1, ceil_mode=True)),
        "avgpool_padding_ceil_not_counted": (nn.AvgPool2d((3, 2), (2, 3), (1, 1), ceil_mode=True,
                                                          count_include_pad=False),
                                             lambda x: TF.avg_pool2d(_t(x), (3, 2), (2, 3), (1, 1), ceil_mode=True,
                                                                     count_include_pad=False)),
        "keras_maxpooling": (nn.MaxPooling2D(3, strides=2), lambda x: TF.max_pool2d(_t(x), 3, 2)),
    }
    c.update(pools)
    return c


fg.manual_seed(0)
CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_padding_form_exports_and_matches(tmp_path, name):
    model, ref = CASES[name]
    x = fg.randn(2, 3, 11, 10)
    with fg.no_grad():
        ours = model(x)._data
    np.testing.assert_allclose(ours, ref(x._data).numpy(), rtol=1e-4, atol=1e-5)

    report = fonnx.export(model, x, str(tmp_path / f"{name}.onnx"))
    assert report.verified and report.ok, str(report)
    assert len(report.runs) == 3  # the example and two other batch sizes
    for node in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node:
        for a in node.attribute:
            if a.name == "pads":  # ONNX: (begin..., end...) per spatial axis
                assert len(a.ints) == 4, (node.op_type, list(a.ints))


def test_keras_same_pads_are_asymmetric_as_tensorflow(tmp_path):
    # 11 rows, kernel 4, stride 2: 6 outputs need 3 pad rows: 1 on top, 2 at the bottom (TF puts the
    # extra at the end, as torch does for padding="same"); 10 columns, kernel 2, stride 3: 4 outputs
    # need 1 pad column, on the right.
    m = nn.Conv2D(2, (4, 2), strides=(2, 3), padding="same", in_channels=3)
    path = str(tmp_path / "k.onnx")
    assert fonnx.export(m, fg.randn(1, 3, 11, 10), path).ok
    (conv,) = [n for n in onnx.load(path).graph.node if n.op_type == "Conv"]
    pads = next(list(a.ints) for a in conv.attribute if a.name == "pads")
    assert pads == [1, 0, 2, 1]  # top, left, bottom, right
