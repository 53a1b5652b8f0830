"""Review of the comparison / logical / bitwise ops: torch 2.13's dtype promotion with Python scalars and 0-d
tensors, out-of-range shift amounts, empty and tuple dims of all/any, an ONNX export in onnxruntime, and the sum of
unsigned integers the review found crashing (a uint64 result forgegrad has no dtype for)."""
from __future__ import annotations

import operator

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import nn

_ARRAYS = {
    "uint8": np.array([0, 1, 200, 255], np.uint8),
    "int8": np.array([-128, -1, 0, 127], np.int8),
    "bool": np.array([True, False, True, False]),
    "float16": np.array([0.5, -1, np.nan, 65504], np.float16),
    "int32": np.array([-5, 2, 3, 0], np.int32),
}


def _both(fn_t, fn_f, *arrays_or_scalars):
    """(torch result, forgegrad result) as (numpy, dtype name), or the exception type."""
    out = []
    for lib, fn in (("t", fn_t), ("f", fn_f)):
        args = [(torch.from_numpy(a.copy()) if lib == "t" else fg.from_numpy(a.copy()))
                if isinstance(a, np.ndarray) else a for a in arrays_or_scalars]
        try:
            r = fn(*args)
        except (RuntimeError, TypeError, ValueError) as e:
            out.append(type(e))
            continue
        out.append((r.numpy(), str(r.dtype).split(".")[-1]))
    return out


def _assert_same(t, f):
    if isinstance(t, type) or isinstance(f, type):
        assert isinstance(t, type) and isinstance(f, type), (t, f)
        return
    assert t[1] == f[1], (t, f)
    np.testing.assert_array_equal(f[0], t[0])


@pytest.mark.parametrize("name", sorted(_ARRAYS))
@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge"])
def test_comparison_with_python_scalars_and_0d_tensors(name, op):
    a = _ARRAYS[name]
    fn = getattr(operator, op)
    for s in (-1, 2, 2.5, 256, -129, True, float("nan"), float("inf"), 2 ** 40):
        _assert_same(*_both(lambda x: fn(x, s), lambda x: fn(x, s), a))
        _assert_same(*_both(lambda x: fn(s, x), lambda x: fn(s, x), a))  # reflected
    for z in (np.array(-1), np.array(2.5), np.array(True), np.array(200, np.uint8)):
        _assert_same(*_both(getattr(torch, op), getattr(fg, op), a, z))
        _assert_same(*_both(getattr(torch, op), getattr(fg, op), z, a))


@pytest.mark.parametrize("name", ["uint8", "int8", "int32", "bool"])
@pytest.mark.parametrize("op", [operator.lshift, operator.rshift])
def test_shifts_by_negative_and_too_wide_amounts(name, op):
    a = _ARRAYS[name]
    for s in (-1, 0, 3, 8, 31, 32, 63, 64, 100):
        _assert_same(*_both(lambda x: op(x, s), lambda x: op(x, s), a))
        _assert_same(*_both(lambda x: op(s, x), lambda x: op(s, x), a))
    if name != "bool":
        for amounts in ([-1, 0, 3, 7], [8, 16, 31, 32], [63, 64, 65, -64]):
            _assert_same(*_both(op, op, a, np.array(amounts).astype(a.dtype)))  # uint8: -1 wraps to 255


@pytest.mark.parametrize("op", [operator.and_, operator.or_, operator.xor, operator.lshift, operator.rshift])
def test_bitwise_operators_on_floats_raise_as_torch(op):
    f = np.array([1.5, 2.0], np.float32)
    for t, g in (_both(op, op, f, f), _both(lambda x: op(x, 1), lambda x: op(x, 1), f),
                 _both(lambda x: op(1, x), lambda x: op(1, x), f),
                 _both(lambda x: op(x, 1.5), lambda x: op(x, 1.5), np.array([1, 2]))):
        _assert_same(t, g)
    assert isinstance(_both(operator.invert, operator.invert, f)[1], type)


@pytest.mark.parametrize("fn", ["all", "any"])
def test_all_any_empty_and_tuple_dims(fn):
    for x in (np.zeros((0, 3), np.float32), np.zeros((2, 0, 3), np.int64), np.array([[0, 1], [2, 0]], np.uint8)):
        for d in [0, -1, (0,), (), tuple(range(x.ndim)), (0, -1)]:
            for kd in (False, True):
                _assert_same(*_both(lambda t: getattr(torch, fn)(t, d, kd), lambda t: getattr(fg, fn)(t, d, kd), x))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.bool_])
def test_sum_of_small_integers_is_int64(dtype):
    a = np.array([[200, 255], [1, 3]]).astype(dtype)
    for kw in ({}, {"dim": 0}, {"dim": 1, "keepdim": True}):
        t = torch.from_numpy(a.copy()).sum(**kw)
        f = fg.from_numpy(a.copy()).sum(**kw)  # uint8 was a uint64 result: f.dtype raised KeyError
        assert str(f.dtype) == str(t.dtype).replace("torch", "forgegrad")
        np.testing.assert_array_equal(f.numpy(), t.numpy())


class _Logic(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        m = fg.logical_xor(h >= x, x != 0) | ((h > 0) & (x < 0.5))
        keep = fg.all(h > -1, dim=1, keepdim=True) & ~fg.any(h > 2, dim=1, keepdim=True)
        return fg.where(m & keep, h, x) + (fg.isin(x.argmax(1), fg.tensor([0, 2]))).float().unsqueeze(1)


def test_onnx_export_of_comparisons_and_logical_ops(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    fg.manual_seed(0)
    m = _Logic().eval()
    x = fg.randn(3, 4)
    fg.onnx.export(m, x, tmp_path / "logic.onnx")
    sess = ort.InferenceSession(str(tmp_path / "logic.onnx"))
    for xs in (x.numpy(), np.random.RandomState(0).randn(3, 4).astype(np.float32) * 2):
        got = sess.run(None, {sess.get_inputs()[0].name: xs})[0]
        np.testing.assert_allclose(got, m(fg.tensor(xs)).numpy(), atol=1e-6)
