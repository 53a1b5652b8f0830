"""forgegrad's own conv / pooling / batch-norm ops (forgegrad.ops.conv, nn.conv) exported: a CNN
at opsets 13 and 17 (21 smoke) and batch 1, 3, 64; 'same' padding, groups, dilation; max pooling
with ceil_mode and its indices output; BatchNorm1d; the zoo's LeNet; ceil-mode and adaptive pooling over
dynamic image sizes.

The ONNX emission itself is also tested on its own in test_onnx_conv.py."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as TF

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


AXES = {"input": {0: "batch", 2: "height", 3: "width"}}
VERIFY_SIZES = [{"batch": 1, "height": 9, "width": 13}, {"batch": 3, "height": 31, "width": 24}]


def test_dynamic_image_sizes(tmp_path):
    """Height and width as dynamic axes: convolutions (stride 2, dilation), ceil-mode max pooling, batch norm,
    adaptive pooling to 3x2 and a global pool export once and run in onnxruntime at other (odd) image sizes as
    forgegrad does."""
    fg.manual_seed(0)
    model = nn.Sequential(NC.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          NC.MaxPool2d(2, ceil_mode=True), NC.Conv2d(8, 6, 3, stride=2, dilation=2, padding=2),
                          nn.ReLU(), NC.AdaptiveAvgPool2d((3, 2)), NC.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(6, 4))
    model.eval()
    sizes = VERIFY_SIZES
    report = fonnx.export(model, fg.randn(2, 3, 16, 20), str(tmp_path / "dyn.onnx"), dynamic_axes=AXES,
                          verify_sizes=sizes)
    assert report.ok and [r.sizes for r in report.runs][1:] == sizes
    (inp,) = onnx.load(str(tmp_path / "dyn.onnx")).graph.input
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 3, "height", "width"]
    # max pooling's indices (per (H, W) plane, as torch's) at other image sizes
    indices = Lambda(lambda m, x: F.max_pool2d(x, 3, stride=2, ceil_mode=True, return_indices=True))
    assert fonnx.export(indices, fg.randn(2, 3, 16, 20), str(tmp_path / "idx.onnx"), dynamic_axes=AXES,
                        verify_sizes=sizes).ok


# (batch, height, width): odd and even, smaller and larger than the example's 16x20, H < 7 for the 7x7 pool
ODD_SIZES = [(1, 5, 7), (3, 9, 13), (2, 11, 6), (1, 17, 8), (2, 23, 31)]
DYNAMIC_POOLS = {  # name: (the forgegrad layer, the same pool in torch)
    "max_ceil_starts_in_padding": (lambda: NC.MaxPool2d(2, stride=3, ceil_mode=True),
                                   lambda t: TF.max_pool2d(t, 2, 3, ceil_mode=True)),
    "max_ceil_padding_rect": (lambda: NC.MaxPool2d((3, 2), stride=(4, 3), padding=1, ceil_mode=True),
                              lambda t: TF.max_pool2d(t, (3, 2), (4, 3), 1, ceil_mode=True)),
    "max_ceil_indices": (lambda: Lambda(lambda m, x: F.max_pool2d(x, 2, stride=3, padding=1, dilation=2,
                                                                  ceil_mode=True, return_indices=True)),
                         lambda t: TF.max_pool2d(t, 2, 3, 1, 2, ceil_mode=True, return_indices=True)),
    "avg_ceil_counted": (lambda: NC.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
                         lambda t: TF.avg_pool2d(t, 3, 2, 1, ceil_mode=True)),
    "avg_ceil_not_counted": (lambda: NC.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
                             lambda t: TF.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False)),
    "avg_ceil_starts_in_padding": (lambda: NC.AvgPool2d(2, stride=3, padding=1, ceil_mode=True),
                                   lambda t: TF.avg_pool2d(t, 2, 3, 1, ceil_mode=True)),
    "avg_ceil_no_padding": (lambda: NC.AvgPool2d(3, stride=3, ceil_mode=True),
                            lambda t: TF.avg_pool2d(t, 3, 3, ceil_mode=True)),
    "avg_ceil_divisor": (lambda: NC.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, divisor_override=5),
                         lambda t: TF.avg_pool2d(t, 3, 2, 1, ceil_mode=True, divisor_override=5)),
    "adaptive_7x7": (lambda: NC.AdaptiveAvgPool2d(7), lambda t: TF.adaptive_avg_pool2d(t, 7)),
    "adaptive_3x2": (lambda: NC.AdaptiveAvgPool2d((3, 2)), lambda t: TF.adaptive_avg_pool2d(t, (3, 2))),
    "adaptive_keep_height": (lambda: NC.AdaptiveAvgPool2d((None, 4)),
                             lambda t: TF.adaptive_avg_pool2d(t, (None, 4))),
}


@pytest.mark.parametrize("name", sorted(DYNAMIC_POOLS))
def test_pooling_over_dynamic_image_sizes(tmp_path, name):
    """Ceil-mode max pooling whose last windows can start in the padding, ceil-mode average pooling (torch's
    divisors) and adaptive pooling to more than 1x1 export once with dynamic batch, height and width; the
    exporter verifies onnxruntime at two other sizes, then onnxruntime runs at more odd sizes and matches
    forgegrad and torch (values, indices, shapes)."""
    model, torch_pool = DYNAMIC_POOLS[name][0](), DYNAMIC_POOLS[name][1]
    report = fonnx.export(model, fg.randn(2, 3, 16, 20), str(tmp_path / "p.onnx"), dynamic_axes=AXES,
                          verify_sizes=VERIFY_SIZES)
    assert report.ok
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for n, h, w in ODD_SIZES:
        x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
        got = sess.run(None, {report.input_names[0]: x})
        want = model(fg.tensor(x))
        ref = torch_pool(torch.from_numpy(x))
        want, ref = (want, ref) if isinstance(want, tuple) else ((want,), (ref,))
        assert len(got) == len(want) == len(ref)
        for g, fw, tr in zip(got, want, ref):
            fw, tr = np.asarray(fw._data), tr.numpy()
            assert g.shape == fw.shape == tr.shape, (h, w)
            np.testing.assert_allclose(g, fw, rtol=1e-5, atol=1e-6, err_msg=f"onnxruntime vs forgegrad at {x.shape}")
            np.testing.assert_allclose(g, tr, rtol=1e-5, atol=1e-6, err_msg=f"onnxruntime vs torch at {x.shape}")


@pytest.mark.parametrize("pool", [lambda: NC.MaxPool2d(2, stride=1, padding=1, ceil_mode=True),
                                  lambda: NC.AvgPool2d(3, stride=3, ceil_mode=True),
                                  lambda: NC.AvgPool2d(3, stride=3, ceil_mode=True, count_include_pad=False)],
                         ids=["max", "avg_counted", "avg_not_counted"])
def test_ceil_mode_pooling_does_not_rely_on_the_runtimes_ceil_mode(tmp_path, pool):
    """onnx's reference evaluator counts ceil-mode windows and divides partial ones differently from torch
    (more windows at stride 1 with padding; k=3, s=3 averages over the whole window): the exported graphs
    slice to torch's window count and compute the divisors themselves, so they run right there too."""
    from onnx.reference import ReferenceEvaluator
    model = pool()
    report = fonnx.export(model, fg.randn(2, 3, 16, 20), str(tmp_path / "p.onnx"), dynamic_axes=AXES)
    sess = ReferenceEvaluator(str(tmp_path / "p.onnx"))
    for n, h, w in ODD_SIZES[:3]:
        x = np.random.default_rng(h).standard_normal((n, 3, h, w)).astype(np.float32)
        (got,) = sess.run(None, {report.input_names[0]: x})
        np.testing.assert_allclose(got, np.asarray(model(fg.tensor(x))._data), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool", [lambda: NC.AdaptiveAvgPool2d(3),
                                  lambda: Lambda(lambda m, x: F.max_pool2d(x, 2, stride=1, ceil_mode=True,
                                                                           return_indices=True)),
                                  lambda: NC.AvgPool2d(2, stride=3, padding=1, ceil_mode=True)],
                         ids=["adaptive", "max_ceil_indices", "avg_ceil"])
def test_pooling_after_a_size_that_looks_static(tmp_path, pool):
    """A stride-4 conv maps the traced heights (16 and the two just above) to one size, 4: the pool after it still
    reads its input's size at run time (adaptive windows, ceil-mode window counts, the indices' H*W)."""
    fg.manual_seed(0)
    model = nn.Sequential(NC.Conv2d(3, 4, 4, stride=4), pool())
    model.eval()
    report = fonnx.export(model, fg.randn(2, 3, 16, 20), str(tmp_path / "p.onnx"), dynamic_axes=AXES,
                          verify_sizes=VERIFY_SIZES)
    assert report.ok
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    for n, h, w in [(1, 9, 13), (2, 11, 17), (3, 23, 31), (1, 33, 12)]:  # the conv's output: 2x3 ... 8x3
        x = np.random.default_rng(h).standard_normal((n, 3, h, w)).astype(np.float32)
        want = model(fg.tensor(x))
        want = want if isinstance(want, tuple) else (want,)
        for g, fw in zip(sess.run(None, {report.input_names[0]: x}), want):
            np.testing.assert_allclose(g, np.asarray(fw._data), rtol=1e-5, atol=1e-6, err_msg=f"at {x.shape}")


class _ImageAndTokens(nn.Module):
    """An image of a static size and a (batch, 1, 1, tokens) mask whose last axis is dynamic."""

    def __init__(self):
        super().__init__()
        self.conv = NC.Conv2d(3, 4, 3)
        self.avg = NC.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.max = NC.MaxPool2d(2, stride=3, ceil_mode=True)
        self.adaptive = NC.AdaptiveAvgPool2d((3, 2))

    def forward(self, image, mask):
        y = self.adaptive(self.max(self.avg(self.conv(image))))
        return y.flatten(1) * mask.sum(-1).flatten(1)


def test_pools_over_a_static_image_stay_single_nodes_beside_a_dynamic_input(tmp_path):
    """Only the mask's token axis (past the second) and the batch are dynamic: the pools over the static image keep
    their static nodes (no Shape of the image, no explicit padding and divisor mask), and the graph runs at other
    batches and token counts as forgegrad does."""
    fg.manual_seed(0)
    model = _ImageAndTokens()
    model.eval()
    axes = {"image": {0: "batch"}, "mask": {0: "batch", 3: "tokens"}}
    report = fonnx.export(model, (fg.randn(2, 3, 16, 20), fg.randn(2, 1, 1, 7)), str(tmp_path / "m.onnx"),
                          input_names=["image", "mask"], dynamic_axes=axes)
    assert report.ok
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert "Shape" not in ops and "ConstantOfShape" not in ops and "Div" not in ops, ops
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for n, t in [(1, 1), (3, 12)]:
        rng = np.random.default_rng(t)
        x, m = rng.standard_normal((n, 3, 16, 20)).astype(np.float32), rng.standard_normal((n, 1, 1, t))
        (got,) = sess.run(None, {"image": x, "mask": m.astype(np.float32)})
        want = model(fg.tensor(x), fg.tensor(m.astype(np.float32)))
        np.testing.assert_allclose(got, np.asarray(want._data), rtol=1e-5, atol=1e-5)


class _TwoImages(nn.Module):
    """Two images sharing the dynamic height and width; only the second is pooled, after a stride-4 conv that maps
    the traced sizes to one."""

    def __init__(self):
        super().__init__()
        self.conv = NC.Conv2d(3, 4, 4, stride=4)
        self.pool = NC.AdaptiveAvgPool2d(3)

    def forward(self, first, second):
        return self.pool(self.conv(second)).flatten(1) + first.mean()


def test_a_pool_over_the_second_input_sharing_the_image_axes_reads_its_size(tmp_path):
    """"height" and "width" name axes of both inputs: the pool that reads only the second still follows its size."""
    fg.manual_seed(0)
    model = _TwoImages()
    model.eval()
    axes = {"first": {2: "height", 3: "width"}, "second": {2: "height", 3: "width"}}
    report = fonnx.export(model, (fg.randn(2, 3, 16, 20), fg.randn(2, 3, 16, 20)), str(tmp_path / "m.onnx"),
                          input_names=["first", "second"], dynamic_axes=axes, verify_sizes=[{"height": 9, "width": 13}])
    assert report.ok
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for h, w in [(9, 13), (33, 12)]:
        rng = np.random.default_rng(h)
        a, b = (rng.standard_normal((2, 3, h, w)).astype(np.float32) for _ in range(2))
        (got,) = sess.run(None, {"first": a, "second": b})
        np.testing.assert_allclose(got, np.asarray(model(fg.tensor(a), fg.tensor(b))._data), rtol=1e-5, atol=1e-5)
