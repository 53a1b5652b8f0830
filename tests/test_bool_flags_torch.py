"""Boolean flags accept what torch accepts. torch reads two kinds of flag: those its C++ argument parser
takes (``training``, ``ceil_mode``, ``count_include_pad``, ``align_corners``, ``keepdim``, RNNBase's ``bias`` /
``batch_first``), which refuse anything but a bool, and those Python code tests with ``if flag:``
(``inplace``, ``return_indices``, modules' ``bias`` / ``affine`` / ``track_running_stats``, ...), which take
any value by truth value (``F.relu(x, inplace=0)``). forgegrad follows torch on both, with two deliberate
differences: numpy.bool_ is a bool everywhere, and a string is refused everywhere (``affine="False"`` would
be True by truth value)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _validate as V

VALUES = {"True": True, "False": False, "np.True_": np.bool_(True), "0": 0, "1": 1, "2": 2, "-1": -1,
          "np.int64(1)": np.int64(1), "None": None, "0.0": 0.0, "1.5": 1.5, "'abc'": "abc", "''": "", "[1]": [1]}


def _x(T):
    return T.ones(2, 3, 8, 8)


# name -> (argument name, call(T, value)) run the same way on torch and forgegrad
FLAGS = {
    "F.relu inplace": ("inplace", lambda T, v: T.nn.functional.relu(_x(T), inplace=v)),
    "F.hardtanh inplace": ("inplace", lambda T, v: T.nn.functional.hardtanh(_x(T), inplace=v)),
    "F.dropout training": ("training", lambda T, v: T.nn.functional.dropout(_x(T), 0.5, training=v)),
    "F.dropout inplace": ("inplace", lambda T, v: T.nn.functional.dropout(_x(T), 0.5, inplace=v)),
    "F.dropout2d inplace": ("inplace", lambda T, v: T.nn.functional.dropout2d(_x(T), 0.5, inplace=v)),
    "F.max_pool2d ceil_mode": ("ceil_mode", lambda T, v: T.nn.functional.max_pool2d(_x(T), 2, ceil_mode=v)),
    "F.max_pool2d return_indices": ("return_indices",
                                    lambda T, v: T.nn.functional.max_pool2d(_x(T), 2, return_indices=v)),
    "F.max_pool3d return_indices": ("return_indices",
                                    lambda T, v: T.nn.functional.max_pool3d(_x(T), 2, return_indices=v)),
    "F.avg_pool2d ceil_mode": ("ceil_mode", lambda T, v: T.nn.functional.avg_pool2d(_x(T), 2, ceil_mode=v)),
    "F.avg_pool2d count_include_pad": ("count_include_pad",
                                       lambda T, v: T.nn.functional.avg_pool2d(_x(T), 2, count_include_pad=v)),
    "F.interpolate align_corners": ("align_corners", lambda T, v: T.nn.functional.interpolate(
        _x(T), scale_factor=2, mode="bilinear", align_corners=v)),
    "F.grid_sample align_corners": ("align_corners", lambda T, v: T.nn.functional.grid_sample(
        _x(T), T.zeros(2, 4, 4, 2), align_corners=v)),
    "F.batch_norm training": ("training", lambda T, v: T.nn.functional.batch_norm(
        _x(T), T.zeros(3), T.ones(3), training=v)),
    "sum keepdim": ("keepdim", lambda T, v: T.sum(_x(T), 0, keepdim=v)),
    "LSTM batch_first": ("batch_first", lambda T, v: T.nn.LSTM(4, 5, batch_first=v)),
    "LSTM bias": ("bias", lambda T, v: T.nn.LSTM(4, 5, bias=v)),
    "GRU bidirectional": ("bidirectional", lambda T, v: T.nn.GRU(4, 5, bidirectional=v)),
    "RNNCell bias": ("bias", lambda T, v: T.nn.RNNCell(4, 5, bias=v)),
    "Linear bias": ("bias", lambda T, v: T.nn.Linear(3, 4, bias=v)),
    "Conv2d bias": ("bias", lambda T, v: T.nn.Conv2d(3, 4, 3, bias=v)),
    "LayerNorm bias": ("bias", lambda T, v: T.nn.LayerNorm(3, bias=v)),
    "BatchNorm2d affine": ("affine", lambda T, v: T.nn.BatchNorm2d(3, affine=v)),
    "BatchNorm2d track_running_stats": ("track_running_stats",
                                        lambda T, v: T.nn.BatchNorm2d(3, track_running_stats=v)),
    "InstanceNorm2d affine": ("affine", lambda T, v: T.nn.InstanceNorm2d(3, affine=v)),
    "GroupNorm affine": ("affine", lambda T, v: T.nn.GroupNorm(1, 3, affine=v)),
    "ReLU inplace": ("inplace", lambda T, v: T.nn.ReLU(inplace=v)(_x(T))),
    "Dropout inplace": ("inplace", lambda T, v: T.nn.Dropout(inplace=v)(_x(T))),
    "MaxPool2d ceil_mode": ("ceil_mode", lambda T, v: T.nn.MaxPool2d(2, ceil_mode=v)(_x(T))),
    "MultiheadAttention batch_first": ("batch_first", lambda T, v: T.nn.MultiheadAttention(4, 2, batch_first=v)),
    "MultiheadAttention bias": ("bias", lambda T, v: T.nn.MultiheadAttention(4, 2, bias=v)),
    "TransformerEncoderLayer norm_first": ("norm_first", lambda T, v: T.nn.TransformerEncoderLayer(
        4, 2, 8, norm_first=v)),
}


def _accepts(call, T, value) -> bool:
    try:
        call(T, value)
    except TypeError:
        return False
    return True


@pytest.mark.filterwarnings("ignore:Default grid_sample")
@pytest.mark.parametrize("value_name", list(VALUES))
@pytest.mark.parametrize("flag", list(FLAGS))
def test_flag_accepts_what_torch_accepts(flag, value_name):
    arg, call = FLAGS[flag]
    value = VALUES[value_name]
    want = _accepts(call, torch, value)
    if isinstance(value, np.bool_):
        want = True  # forgegrad takes numpy.bool_ where torch's C++ parser refuses it
    elif isinstance(value, str):
        want = False  # forgegrad refuses strings where torch takes their truth value
    if not want:
        with pytest.raises(TypeError, match=f"{arg} must be a bool"):
            call(fg, value)
    else:
        call(fg, value)


def test_truth_valued_flags_take_effect_as_in_torch():
    for T in (torch, fg):
        x = T.tensor([-1.0, 2.0])
        assert T.nn.functional.relu(x, inplace=1) is x and x.tolist() == [0.0, 2.0]
        assert T.nn.Linear(3, 4, bias=0).bias is None and T.nn.Linear(3, 4, bias=2).bias is not None
        bn = T.nn.BatchNorm2d(3, affine=None, track_running_stats=0)
        assert bn.weight is None and bn.running_mean is None
        y, idx = T.nn.functional.max_pool2d(_x(T), 2, return_indices=1)
        assert tuple(idx.shape) == (2, 3, 4, 4)
        assert T.nn.GRU(4, 5, bidirectional=1).bidirectional


def test_check_flag():
    assert V.check_flag(1, "f") is True and V.check_flag(None, "f") is False and V.check_flag(np.int64(0), "f") is False
    with pytest.raises(TypeError, match=r"flag must be a bool, got str 'False'"):
        V.check_flag("False", "flag")
    with pytest.raises(TypeError, match="flag must be a bool, got ndarray without a truth value"):
        V.check_flag(np.array([True, False]), "flag")
