"""forgegrad's own conv / pooling / batch-norm ops (forgegrad.ops.conv, nn.conv) exported: a CNN
at opsets 13 and 17 (21 smoke) and batch 1, 3, 64; 'same' padding, groups, dilation; max pooling
with ceil_mode and its indices output; BatchNorm1d; the zoo's LeNet.

The ONNX emission itself is also tested on its own in test_onnx_conv.py."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import forgegrad as fg
import forgegrad.onnx as fonnx
from forgegrad import nn
from forgegrad.nn import functional as F
from forgegrad.nn import conv as NC
from forgegrad.ops import normalization as ON
from forgegrad.ops import pool as OP

from test_onnx_common import Lambda, export_and_check


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = NC.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = NC.MaxPool2d(2)
        self.c2 = NC.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.avg = NC.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.gap = NC.AdaptiveAvgPool2d((3, 2))  # 3x3 -> (3, 2): uneven windows along W
        self.fc = nn.Linear(8 * 6, 5)

    def forward(self, x):
        h = self.pool(fg.nn.functional.relu(self.bn(self.c1(x))))
        h = self.gap(self.avg(self.c2(h)))
        return self.fc(h.flatten(1))


def _cnn():
    fg.manual_seed(0)
    m = CNN()
    rng = np.random.default_rng(0)  # running statistics that are not the identity
    m.bn.running_mean._data[:] = rng.standard_normal(8)
    m.bn.running_var._data[:] = 0.5 + rng.random(8)
    return m


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_cnn(tmp_path, opset):
    _, proto = export_and_check(_cnn(), fg.randn(3, 3, 12, 11), tmp_path, opset=opset)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 2 and "BatchNormalization" in ops and "MaxPool" in ops
    pool = next(n for n in proto.graph.node if n.op_type == "MaxPool")
    assert len(pool.output) == 1  # the unused indices output is not computed


@pytest.mark.parametrize("opset", [13, 17])
def test_conv_forms(tmp_path, opset):
    fg.manual_seed(1)
    convs = nn.Sequential(NC.Conv2d(4, 6, 3, padding="same", dilation=2), NC.Conv2d(6, 6, (3, 2), stride=(2, 1),
                                                                                        groups=3, bias=False),
                          NC.Conv2d(6, 4, 1, padding="valid"))
    export_and_check(convs, fg.randn(3, 4, 9, 10), tmp_path, opset=opset)


def test_max_pool_ceil_mode_and_indices(tmp_path):
    export_and_check(Lambda(lambda m, x: OP.MaxPool2dFunction.apply(x, 3, 2, 1, 1, True)), fg.randn(3, 4, 9, 10),
                     tmp_path)


def test_batch_norm_1d(tmp_path):
    fg.manual_seed(2)
    bn = nn.BatchNorm1d(4)
    bn.running_var._data[:] = 2.0
    bn.running_mean._data[:] = 0.3
    export_and_check(nn.Sequential(nn.Linear(6, 4), bn, nn.ReLU()), fg.randn(3, 6), tmp_path)


def test_zoo_lenet(tmp_path, monkeypatch):
    import forgegrad.models as zoo
    for name in ("Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm2d"):
        if not hasattr(nn, name):  # whether forgegrad.nn re-exports the conv layers is not this test's subject
            monkeypatch.setattr(nn, name, getattr(NC, name), raising=False)
    model = zoo.create("lenet8")
    report = fonnx.export(model, fg.randn(3, 1, 8, 8), str(tmp_path / "lenet.onnx"),
                          verify_sizes=[{"batch": 1}, {"batch": 64}])
    assert report.ok
    assert "Conv" in [n.op_type for n in onnx.load(str(tmp_path / "lenet.onnx")).graph.node]


def test_batch_norm_in_training_mode_is_reported(tmp_path):
    x = fg.randn(3, 4)
    fn = lambda m, x: ON.BatchNormFunction.apply(x, None, None, None, None, training=True)  # noqa: E731
    with pytest.raises(fonnx.UnsupportedOpError, match="BatchNorm"):
        fonnx.export(Lambda(fn), x, str(tmp_path / "t.onnx"))


def test_dynamic_image_sizes(tmp_path):
    """Height and width as dynamic axes: convolutions (stride 2, dilation), ceil-mode max pooling, batch norm and a
    global pool export once and run in onnxruntime at other (odd) image sizes as forgegrad does; adaptive pooling
    to more than 1x1, whose windows follow the input size, is refused with a clear error instead of a graph that
    is right at the example's size only."""
    fg.manual_seed(0)
    model = nn.Sequential(NC.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          NC.MaxPool2d(2, ceil_mode=True), NC.Conv2d(8, 6, 3, stride=2, dilation=2, padding=2),
                          nn.ReLU(), NC.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))
    model.eval()
    axes = {"input": {0: "batch", 2: "height", 3: "width"}}
    sizes = [{"batch": 1, "height": 9, "width": 13}, {"batch": 3, "height": 31, "width": 24}]
    report = fonnx.export(model, fg.randn(2, 3, 16, 20), str(tmp_path / "dyn.onnx"), dynamic_axes=axes,
                          verify_sizes=sizes)
    assert report.ok and [r.sizes for r in report.runs][1:] == sizes
    (inp,) = onnx.load(str(tmp_path / "dyn.onnx")).graph.input
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 3, "height", "width"]
    fixed = nn.Sequential(NC.Conv2d(3, 4, 3), NC.AdaptiveAvgPool2d((3, 2)))
    with pytest.raises(fonnx.UnsupportedOpError, match=r"adaptive pooling to \(3, 2\) over dynamic spatial axes"):
        fonnx.export(fixed, fg.randn(2, 3, 16, 20), str(tmp_path / "adaptive.onnx"), dynamic_axes=axes,
                     verify_sizes=sizes)
    assert fonnx.export(fixed, fg.randn(2, 3, 16, 20), str(tmp_path / "static.onnx"),
                        dynamic_axes={"input": {0: "batch"}}).ok
    # max pooling's indices (per (H, W) plane, as torch's) at other image sizes
    indices = Lambda(lambda m, x: F.max_pool2d(x, 3, stride=2, ceil_mode=True, return_indices=True))
    assert fonnx.export(indices, fg.randn(2, 3, 16, 20), str(tmp_path / "idx.onnx"), dynamic_axes=axes,
                        verify_sizes=sizes).ok
    for pool, match in ((NC.MaxPool2d(2, stride=3, ceil_mode=True), "window can start in the right padding"),
                        (NC.AvgPool2d(3, stride=2, ceil_mode=True), "avg_pool2d with ceil_mode over dynamic")):
        with pytest.raises(fonnx.UnsupportedOpError, match=match):
            fonnx.export(pool, fg.randn(2, 3, 16, 20), str(tmp_path / "pool.onnx"), dynamic_axes=axes,
                         verify_sizes=sizes)
