"""The conv / pooling / batch-norm ONNX emitters (forgegrad.onnx.mappings._conv_emit), checked with
test-local Functions that compute the op with torch: stride, padding (int, pair, 'same', 'valid'),
dilation, groups; max/avg pooling incl. ceil_mode and count_include_pad; adaptive average/max
pooling (global, divisible, uneven windows); batch norm in eval mode. Opsets 13 and 17, batch 1/3/64.

forgegrad's own conv ops (forgegrad.ops.conv) are registered in mappings/conv.py once they exist."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as TF

import forgegrad as fg
import forgegrad.onnx as fonnx
from forgegrad.autograd import Function
from forgegrad.onnx.mappings import _conv_emit as CE

from test_onnx_common import Lambda, export_and_check


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


class TConv(Function):
    @staticmethod
    def forward(ctx, x, w, b, stride=1, padding=0, dilation=1, groups=1):
        return TF.conv2d(_t(x), _t(w), None if b is None else _t(b), stride, padding, dilation, groups).numpy()


class TMaxPool(Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        return TF.max_pool2d(_t(x), kernel_size, stride, padding, dilation, ceil_mode).numpy()


class TAvgPool(Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
        return TF.avg_pool2d(_t(x), kernel_size, stride, padding, ceil_mode, count_include_pad,
                             divisor_override).numpy()


class TAdaptive(Function):
    @staticmethod
    def forward(ctx, x, output_size, kind="avg"):
        fn = TF.adaptive_avg_pool2d if kind == "avg" else TF.adaptive_max_pool2d
        return fn(_t(x), output_size).numpy()


class TBatchNorm(Function):
    @staticmethod
    def forward(ctx, x, mean, var, weight, bias, eps=1e-5):
        return TF.batch_norm(_t(x), _t(mean), _t(var), None if weight is None else _t(weight),
                             None if bias is None else _t(bias), False, 0.1, eps).numpy()


def _hw(op):
    return tuple(op.args["x"].shape[2:])


def _dynamic(op):
    """Per spatial axis: whether its size differed between the exporter's traces (a dynamic axis)."""
    shapes = [args["x"].shape[2:] for args in (op.args, op.args_b, op.args_c) if args.get("x") is not None]
    return tuple(len({s[i] for s in shapes}) > 1 for i in range(2))


@fonnx.register_mapping(TConv)
def _conv(ctx, op):
    w = op.args["w"]
    return [CE.conv2d(ctx, op.input("x"), op.input("w"), op.input("b"), w.shape[2:], op.attr("stride"),
                      op.attr("padding"), op.attr("dilation"), op.attr("groups"), _hw(op))]


@fonnx.register_mapping(TMaxPool)
def _maxpool(ctx, op):
    a = op.args
    return [CE.max_pool2d(ctx, op.input("x"), _hw(op), a["kernel_size"], a["stride"], a["padding"], a["dilation"],
                          a["ceil_mode"], dynamic=any(_dynamic(op)))]


@fonnx.register_mapping(TAvgPool)
def _avgpool(ctx, op):
    a = op.args
    return [CE.avg_pool2d(ctx, op.input("x"), _hw(op), a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"],
                          a["count_include_pad"], a["divisor_override"], dynamic=any(_dynamic(op)))]


@fonnx.register_mapping(TAdaptive)
def _adaptive(ctx, op):
    red = "ReduceMean" if op.attr("kind") == "avg" else "ReduceMax"
    return [CE.adaptive_pool2d(ctx, op.input("x"), _hw(op), op.attr("output_size"), red, _dynamic(op))]


@fonnx.register_mapping(TBatchNorm)
def _bn(ctx, op):
    return [CE.batch_norm(ctx, op.input("x"), op.input("mean"), op.input("var"), op.input("weight"),
                          op.input("bias"), op.attr("eps"), op.args["x"].shape[1])]


rng = np.random.default_rng(0)
W8 = fg.tensor(rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3)
WG = fg.tensor(rng.standard_normal((8, 2, 3, 2)).astype(np.float32) * 0.3)  # groups=2 of 4 channels
B8 = fg.tensor(rng.standard_normal(8).astype(np.float32))
MEAN, VAR = fg.tensor(rng.standard_normal(4).astype(np.float32)), fg.tensor(rng.random(4).astype(np.float32) + 0.5)
GAMMA, BETA = fg.tensor(rng.standard_normal(4).astype(np.float32)), fg.tensor(rng.standard_normal(4).astype(np.float32))

CASES = {
    "conv": lambda m, x: TConv.apply(x, W8, B8),
    "conv_stride_pad": lambda m, x: TConv.apply(x, W8, B8, 2, 1),
    "conv_pair_args_no_bias": lambda m, x: TConv.apply(x, W8, None, (2, 1), (0, 2), (2, 1)),
    "conv_same": lambda m, x: TConv.apply(x, W8, B8, 1, "same", 2),
    "conv_valid": lambda m, x: TConv.apply(x, W8, B8, 1, "valid"),
    "conv_groups": lambda m, x: TConv.apply(x, WG, B8, 1, 1, 1, 2),
    "conv_depthwise": lambda m, x: TConv.apply(x, fg.tensor(W8._data[:4, :1]), None, 1, 1, 1, 4),
    "maxpool": lambda m, x: TMaxPool.apply(x, 2),
    "maxpool_stride_pad_dil": lambda m, x: TMaxPool.apply(x, 3, 2, 1, 2),
    "maxpool_ceil": lambda m, x: TMaxPool.apply(x, 3, 2, 1, 1, True),
    "maxpool_ceil_rect": lambda m, x: TMaxPool.apply(x, (2, 3), (2, 2), 0, 1, True),
    "avgpool": lambda m, x: TAvgPool.apply(x, 2),
    "avgpool_pad_counted": lambda m, x: TAvgPool.apply(x, 3, 2, 1),
    "avgpool_pad_not_counted": lambda m, x: TAvgPool.apply(x, 3, 2, 1, False, False),
    "avgpool_ceil_counted": lambda m, x: TAvgPool.apply(x, 3, 2, 1, True, True),
    "avgpool_ceil_not_counted": lambda m, x: TAvgPool.apply(x, 3, 2, 1, True, False),
    "avgpool_divisor": lambda m, x: TAvgPool.apply(x, 2, 2, 0, False, True, 3),
    "adaptive_global": lambda m, x: TAdaptive.apply(x, 1),
    "adaptive_divisible": lambda m, x: TAdaptive.apply(x, (3, 5)),
    "adaptive_uneven": lambda m, x: TAdaptive.apply(x, (4, 3)),
    "adaptive_max_uneven": lambda m, x: TAdaptive.apply(x, (4, 3), kind="max"),
    "batchnorm": lambda m, x: TBatchNorm.apply(x, MEAN, VAR, GAMMA, BETA),
    "batchnorm_no_affine": lambda m, x: TBatchNorm.apply(x, MEAN, VAR, None, None, 1e-3),
}


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_emitters(tmp_path, name, opset):
    fg.manual_seed(0)
    x = fg.randn(3, 4, 9, 10)
    export_and_check(Lambda(CASES[name]), x, tmp_path, opset=opset)


def test_small_cnn(tmp_path):
    """conv -> bn -> relu -> maxpool -> conv -> adaptive avg -> flatten -> linear, batch dynamic."""
    fg.manual_seed(1)
    lin = fg.nn.Linear(8, 3)
    W2 = fg.tensor(rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.2)

    def fn(m, x):
        h = TConv.apply(x, fg.tensor(W8._data[:4]), fg.tensor(B8._data[:4]), 1, 1)
        h = fg.nn.functional.relu(TBatchNorm.apply(h, MEAN, VAR, GAMMA, BETA))
        h = TMaxPool.apply(h, 2)
        h = TAdaptive.apply(TConv.apply(h, W2, B8, 1, 1), 1)
        return m.lin(h.flatten(1))

    export_and_check(Lambda(fn, lin=lin), fg.randn(3, 4, 9, 10), tmp_path)


@pytest.mark.parametrize("args", [(3, 2, 0, True, True, 2), (3, 2, 1, True, False, 5), (2, 3, 1, False, False, 3),
                                  (2, 3, 1, True, True, 7)])
def test_divisor_override_with_ceil_or_uncounted_padding(tmp_path, args):
    """divisor_override where some windows are not whole (ceil mode, padding not counted): the windows' sums
    over explicit zero padding, divided by the override."""
    export_and_check(Lambda(lambda m, x: TAvgPool.apply(x, *args)), fg.randn(3, 4, 9, 10), tmp_path)


DYNAMIC = {"input": {0: "batch", 2: "height", 3: "width"}}
ODD_SIZES = [(1, 5, 7), (3, 9, 13), (2, 11, 6), (1, 17, 8), (2, 12, 31)]  # (batch, height, width)
DYNAMIC_CASES = {
    "maxpool_ceil_starts_in_padding": lambda m, x: TMaxPool.apply(x, 2, 3, 1, 1, True),
    "maxpool_ceil_dilated_rect": lambda m, x: TMaxPool.apply(x, (3, 2), (2, 4), (1, 0), (1, 2), True),
    "avgpool_ceil_counted": lambda m, x: TAvgPool.apply(x, 3, 2, 1, True, True),
    "avgpool_ceil_not_counted_starts_in_padding": lambda m, x: TAvgPool.apply(x, 2, 3, 1, True, False),
    "avgpool_ceil_divisor": lambda m, x: TAvgPool.apply(x, (3, 2), (2, 3), (1, 1), True, True, 4),
    "adaptive_7x7": lambda m, x: TAdaptive.apply(x, 7),
    "adaptive_max_uneven": lambda m, x: TAdaptive.apply(x, (4, 3), kind="max"),
    "adaptive_keep_height": lambda m, x: TAdaptive.apply(x, (None, 5)),
    "adaptive_max_row": lambda m, x: TAdaptive.apply(x, (1, 6), kind="max"),
}


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name", sorted(DYNAMIC_CASES))
def test_pool_emitters_dynamic_image_sizes(tmp_path, name, opset):
    """Ceil-mode pooling (windows that start in the padding included) and adaptive pooling to more than 1x1,
    exported once with dynamic batch, height and width and run in onnxruntime at other, odd sizes (smaller and
    larger than the example's), against torch (which these test ops run)."""
    fg.manual_seed(0)
    model = Lambda(DYNAMIC_CASES[name])
    report = fonnx.export(model, fg.randn(2, 4, 10, 12), str(tmp_path / "m.onnx"), opset=opset, dynamic_axes=DYNAMIC,
                          verify_sizes=[{"batch": 1, "height": 9, "width": 13}])
    assert report.ok
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for n, h, w in ODD_SIZES:
        x = rng.standard_normal((n, 4, h, w)).astype(np.float32)
        want = np.asarray(model(fg.tensor(x))._data)
        (got,) = sess.run(None, {report.input_names[0]: x})
        assert got.shape == want.shape, (h, w)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"input {(n, 4, h, w)}")


# ---- the argument-name adapters used for forgegrad.ops.conv (mappings/_conv_adapters.py) -----------
from forgegrad.onnx.mappings import _conv_adapters as CA  # noqa: E402


class Conv2dLike(Function):
    @staticmethod
    def forward(ctx, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        return TConv.forward(ctx, input, weight, bias, stride, padding, dilation, groups)


class MaxPoolWithIndices(Function):
    non_differentiable_outputs = (1,)

    @staticmethod
    def forward(ctx, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        v, i = TF.max_pool2d(_t(x), kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
        return v.numpy(), i.numpy()


class AvgPoolLike(Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
        return TAvgPool.forward(ctx, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


class AdaptiveLike(Function):
    @staticmethod
    def forward(ctx, x, output_size):
        return TF.adaptive_avg_pool2d(_t(x), output_size).numpy()


class BatchNormLike(Function):
    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
        return TBatchNorm.forward(ctx, x, running_mean, running_var, weight, bias, eps)


fonnx.register_mapping(Conv2dLike)(CA.map_conv)
fonnx.register_mapping(MaxPoolWithIndices)(CA.map_max_pool)
fonnx.register_mapping(AvgPoolLike)(CA.map_avg_pool)
fonnx.register_mapping(AdaptiveLike)(CA._adaptive("ReduceMean"))
fonnx.register_mapping(BatchNormLike)(CA.map_batch_norm)


@pytest.mark.parametrize("opset", [13, 17])
def test_adapters_with_torch_argument_names(tmp_path, opset):
    def fn(m, x):
        h = Conv2dLike.apply(x, fg.tensor(W8._data[:4]), fg.tensor(B8._data[:4]), 1, "same", 1, 1)
        h = BatchNormLike.apply(h, MEAN, VAR, GAMMA, BETA, False, 0.1, 1e-3)
        v, idx = MaxPoolWithIndices.apply(h, 3, 2, 1, 1, True)
        a = AvgPoolLike.apply(h, 2, padding=1, count_include_pad=False)
        return AdaptiveLike.apply(v, (2, 3)), idx, a

    export_and_check(Lambda(fn), fg.randn(3, 4, 9, 10), tmp_path, opset=opset)


def test_adapter_refuses_training_batch_norm(tmp_path):
    fn = lambda m, x: BatchNormLike.apply(x, MEAN, VAR, None, None, True)  # noqa: E731
    with pytest.raises(fonnx.UnsupportedOpError, match="training mode"):
        fonnx.export(Lambda(fn), fg.randn(3, 4, 5, 5), str(tmp_path / "b.onnx"))
