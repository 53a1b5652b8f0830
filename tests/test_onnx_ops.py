"""One small model per op (and per form of an op): exported at opsets 13 and 17 (18 where the
opset changes the op's signature), checked by onnx.checker, run by onnxruntime at batch 1, 3 and
64 and compared with forgegrad at rtol 1e-5 / atol 1e-6."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import nn
from forgegrad.ops import elementwise as E

from test_onnx_common import Lambda, export_and_check

IDX = fg.tensor(np.array([[0, 2], [1, 1]]))
W = fg.randn(5, 7)


def pos(x):
    return x.abs() + 0.5


# name -> (fn(module, x), example input shape)
CASES = {
    # elementwise
    "add": (lambda m, x: x + x[:, :1], (3, 5)),
    "add_scalar": (lambda m, x: 2.5 + x + 1, (3, 5)),
    "sub": (lambda m, x: x - x.mean(0) - 1.0, (3, 5)),
    "rsub": (lambda m, x: 1.0 - x, (3, 5)),
    "mul_broadcast": (lambda m, x: x * m.v, (3, 5)),
    "div": (lambda m, x: x / pos(x[:, 2:3]), (3, 5)),
    "rdiv": (lambda m, x: 2.0 / pos(x), (3, 5)),
    "pow_int": (lambda m, x: x ** 2 + x ** 3, (3, 5)),
    "pow_float": (lambda m, x: pos(x) ** 1.7 + pos(x) ** 0.5, (3, 5)),
    "pow_tensor": (lambda m, x: pos(x) ** x, (3, 5)),
    "rpow": (lambda m, x: 2.0 ** x, (3, 5)),
    "neg_exp_log_sqrt_abs": (lambda m, x: (-x).exp() + pos(x).log() + pos(x).sqrt() + x.abs(), (3, 5)),
    "clamp_both": (lambda m, x: x.clamp(-0.5, 0.7), (3, 5)),
    "clamp_min": (lambda m, x: x.clamp(min=0.1), (3, 5)),
    "clamp_max": (lambda m, x: x.clamp(max=0.1), (3, 5)),
    "where_compare": (lambda m, x: fg.where(x > 0.2, x, x * -3.0), (3, 5)),
    "where_scalar_branch": (lambda m, x: fg.where(x <= m.v, 0.0, x), (3, 5)),
    "where_raw_condition": (lambda m, x: E.WhereFunction.apply((x > 0)._data.astype(bool), x, -x), (3, 5)),
    "compare_cast": (lambda m, x: (x >= 0).float() + (x != x[:1]).float() * 2 + (x == 0).long().float(), (3, 5)),
    # activations
    "relu": (lambda m, x: F.relu(x), (3, 5)),
    "leaky_relu": (lambda m, x: F.leaky_relu(x, 0.2), (3, 5)),
    "gelu": (lambda m, x: F.gelu(x * 3), (3, 5)),
    "gelu_tanh": (lambda m, x: F.gelu(x * 3, approximate="tanh"), (3, 5)),
    "sigmoid_tanh": (lambda m, x: F.sigmoid(x * 4) + F.tanh(x * 2), (3, 5)),
    "softmax": (lambda m, x: F.softmax(x, dim=-1) + F.softmax(x, dim=0), (3, 5)),
    "log_softmax": (lambda m, x: F.log_softmax(x.reshape(x.shape[0], 5, 1), dim=1), (3, 5)),
    "dropout_eval": (lambda m, x: F.dropout(x, 0.5, training=False) + nn.Dropout(0.2).eval()(x), (3, 5)),
    # reductions
    "sum": (lambda m, x: x.sum(dim=1) + x.sum(dim=(1, 2)).reshape(x.shape[0], 1) + x.sum(), (3, 4, 5)),
    "sum_keepdim": (lambda m, x: x.sum(dim=-1, keepdim=True) * x, (3, 4, 5)),
    "mean": (lambda m, x: x.mean(dim=(0, 2), keepdim=True) + x.mean(1, keepdim=True), (3, 4, 5)),
    "mean_all": (lambda m, x: x - x.mean(), (3, 4, 5)),
    "amax_amin": (lambda m, x: x.amax(dim=1) - x.amin(dim=(1,)) + x.max() + x.min(), (3, 4, 5)),
    "max_dim": (lambda m, x: x.max(dim=1), (3, 4, 5)),
    "min_dim_keepdim": (lambda m, x: x.min(dim=-1, keepdim=True), (3, 4, 5)),
    "argmax": (lambda m, x: (x.argmax(dim=1), x.argmin(dim=2, keepdim=True)), (3, 4, 5)),
    "var_std": (lambda m, x: x.var(dim=1) + x.std(dim=2, unbiased=False).sum(-1, keepdim=True), (3, 4, 5)),
    # shapes
    "reshape_flatten": (lambda m, x: x.reshape(-1, 20).flatten() + 0, (3, 4, 5)),
    "reshape_unflatten": (lambda m, x: x.reshape(x.shape[0] * 4, 5).reshape(x.shape[0], 2, 2, 5), (3, 4, 5)),
    "view_squeeze_unsqueeze": (lambda m, x: x.view(x.shape[0], 1, 20).squeeze(1).unsqueeze(-1).unsqueeze(0), (3, 4, 5)),
    "permute_transpose": (lambda m, x: x.permute(2, 0, 1).transpose(0, 1) * 1, (3, 4, 5)),
    "t": (lambda m, x: x.t() @ x, (3, 5)),
    "expand": (lambda m, x: x[:, :1].expand(x.shape[0], 4) + m.v.reshape(5, 1)[:1].expand(-1, 4), (3, 5)),
    "expand_new_axis": (lambda m, x: x.sum(1).expand(2, x.shape[0]), (3, 5)),
    "getitem_int_slice": (lambda m, x: x[:, 1] + x[:, -1] + x[:, 1:4].sum(-1), (3, 5)),
    "getitem_steps": (lambda m, x: x[:, ::2] + x[:, ::-2] + x[:, 4:0:-2].sum(1, keepdim=True), (3, 5)),
    "getitem_none_ellipsis": (lambda m, x: x[..., None, 1:3] + x[:, None, ...][..., 0:2], (3, 4, 5)),
    "getitem_list": (lambda m, x: x[:, [4, 0, 2, 2]] + x[:, [-1, 0, 1, 1]], (3, 5)),
    "getitem_tensor_index": (lambda m, x: x[:, IDX], (3, 5)),
    "getitem_full": (lambda m, x: x[:] + x[...], (3, 5)),
    "cat": (lambda m, x: fg.cat([x, x * 2, x[:, :2]], dim=1) + 0, (3, 5)),
    "cat_batch_axis": (lambda m, x: fg.cat([x, x], dim=0), (3, 5)),
    "stack": (lambda m, x: fg.stack([x, -x], dim=1) + fg.stack([x, x, x], dim=-1).sum(-1)[:, None, :], (3, 5)),
    "clone": (lambda m, x: x.clone() + 1, (3, 5)),
    # linear algebra
    "matmul": (lambda m, x: x @ m.w, (3, 5)),
    "matmul_batched": (lambda m, x: x @ x.transpose(1, 2), (3, 4, 5)),
    "matmul_broadcast_weight": (lambda m, x: x @ m.w, (3, 4, 5)),
    "matmul_vector": (lambda m, x: x @ m.v, (3, 4, 5)),
    "linear_2d": (lambda m, x: F.linear(x, m.w.T) + m.lin(x), (3, 5)),
    "linear_3d": (lambda m, x: m.lin(x), (3, 4, 5)),
    "linear_no_bias_3d": (lambda m, x: F.linear(x, m.w.T), (3, 4, 5)),
}


def make(name):
    fg.manual_seed(0)
    fn, shape = CASES[name]
    lin = nn.Linear(5, 7)
    model = Lambda(fn, v=fg.randn(5), w=fg.tensor(W._data), lin=lin)
    return model, fg.randn(*shape)


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name", sorted(CASES))
def test_op(tmp_path, name, opset):
    model, x = make(name)
    export_and_check(model, x, tmp_path, opset=opset)


@pytest.mark.parametrize("name", ["mean", "mean_all", "amax_amin", "max_dim", "min_dim_keepdim", "gelu", "sum"])
@pytest.mark.parametrize("opset", [18, 20, 21])
def test_op_newer_opsets(tmp_path, name, opset):
    """ReduceMean/Max/Min take axes as an input from opset 18; Gelu is an operator from 20."""
    model, x = make(name)
    export_and_check(model, x, tmp_path, opset=opset)


def test_int_inputs_and_promotion(tmp_path):
    """int64 inputs: numpy promotes int/int division and int+float to float32; ONNX must match."""
    model = Lambda(lambda m, x, i: (x * i + i / 2 + (i + 0.5) + i.sum(1, keepdim=True) / i.shape[1],
                                    i * 3 - 1, i.max(dim=1)[0], i.mean(1)))
    x = fg.randn(3, 4)
    i = fg.tensor(np.array([[1, 2, 3, 4], [5, 6, 7, 8], [0, 3, 1, 2]]))
    export_and_check(model, (x, i), tmp_path)


def test_gather_with_index_input(tmp_path):
    """An index tensor given as a graph input (not a constant) feeds Gather."""
    model = Lambda(lambda m, idx: m.w[idx])
    model.w = fg.randn(9, 4)
    export_and_check(model, fg.tensor(np.array([3, 0, 8])), tmp_path)
