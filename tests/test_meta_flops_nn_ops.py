"""FLOP counts and meta-device shapes of the conv / pool / batch-norm, recurrent, embedding and loss
op records, against counts done by hand (the formulas in ops/conv.py, ops/rnn.py, ops/loss.py)."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.ops.registry import count_flops


def _meta(*shape, dtype=np.float32):
    return fg.tensor(np.zeros(shape, dtype)).to("meta")


def _run(name, *args, **kwargs):
    """(outputs, FLOPs) of op `name` on meta tensors."""
    seen = []

    def counter(op, out, raw, kw):
        seen.append(op.flops(out, raw, kw))

    with count_flops(counter):
        out = fg.ops.get(name)(*args, **kwargs)
    assert len(seen) == 1
    return out, seen[0]


def test_conv2d_flops_lenet_first_layer():
    y, flops = _run("conv2d", _meta(2, 1, 28, 28), _meta(32, 1, 3, 3), _meta(32), padding=1)
    assert y.is_meta and y.shape == (2, 32, 28, 28)
    # a multiply-add per output and weight element, plus the bias add
    assert flops == 2 * (2 * 32 * 28 * 28) * (1 * 3 * 3) + 2 * 32 * 28 * 28


def test_conv2d_flops_groups_no_bias():
    y, flops = _run("conv2d", _meta(1, 6, 9, 9), _meta(4, 3, 3, 3), None, stride=2, groups=2)
    assert y.shape == (1, 4, 4, 4)
    assert flops == 2 * (4 * 4 * 4) * (3 * 3 * 3)  # C/groups = 3 inputs per output channel


def test_pool_flops_and_meta_dtypes():
    (y, idx), flops = _run("max_pool2d", _meta(2, 32, 28, 28), kernel_size=2)
    assert (y.shape, y.dtype, idx.shape, idx.dtype) == ((2, 32, 14, 14), np.float32, (2, 32, 14, 14), np.int64)
    assert flops == 2 * 32 * 14 * 14 * 4
    y, flops = _run("avg_pool2d", _meta(1, 2, 7, 9), kernel_size=(3, 2), stride=2)
    assert y.shape == (1, 2, 3, 4) and flops == 24 * 6
    # windows of 7 -> 3: [0,3) [2,5) [4,7) = 9 rows; 9 -> 4: [0,3) [2,5) [4,7) [6,9) = 12 columns
    y, flops = _run("adaptive_avg_pool2d", _meta(1, 1, 7, 9), output_size=(3, 4))
    assert y.shape == (1, 1, 3, 4) and flops == 9 * 12 + 12


@pytest.mark.parametrize("training,per_element", [(False, 4), (True, 7)])
def test_batch_norm_flops(training, per_element):
    y, flops = _run("batch_norm", _meta(4, 3, 5), _meta(3), _meta(3), _meta(3), _meta(3), training=training)
    assert y.shape == (4, 3, 5) and flops == per_element * 60


def test_recurrent_layer_flops_and_shapes():
    T, B, I, H = 5, 3, 7, 6
    outs, flops = _run("recurrent_layer", _meta(T, B, I), None, None, _meta(4 * H, I), _meta(4 * H, H),
                       _meta(4 * H), _meta(4 * H), mode="lstm")
    assert [o.shape for o in outs] == [(T, B, H), (B, H), (B, H)]
    # two projections, their sum and two bias adds per gate element, 24 for the LSTM cell per unit
    assert flops == T * B * (2 * 4 * H * (I + H) + 3 * 4 * H + 24 * H)
    outs, flops = _run("recurrent_layer", _meta(T, B, I), None, None, _meta(H, I), _meta(H, H), None, None,
                       mode="rnn_relu", reverse=True)
    assert [o.shape for o in outs] == [(T, B, H), (B, H)]
    assert flops == T * B * (2 * H * (I + H) + H + H)


def test_embedding_and_loss_meta():
    y, flops = _run("embedding", _meta(11, 5), _meta(3, 4, dtype=np.int64))
    assert y.shape == (3, 4, 5) and flops == 0
    y, flops = _run("cross_entropy", _meta(5, 7, 2), _meta(5, 2, dtype=np.int64), reduction="none")
    assert y.shape == (5, 2) and flops == 5 * 70
    y, _ = _run("nll_loss", _meta(7), _meta(dtype=np.int64), reduction="none")
    assert y.shape == ()
    y, flops = _run("mse_loss", _meta(3, 4), _meta(3, 4))
    assert y.shape == () and flops == 3 * 12


def test_meta_rules_raise_the_kernels_errors():
    with pytest.raises(ValueError, match="weight"):
        fg.ops.get("conv2d")(_meta(2, 3, 7, 9), _meta(4, 2, 3, 3))
    with pytest.raises(ValueError, match="padding"):
        fg.ops.get("max_pool2d")(_meta(2, 3, 7, 9), kernel_size=2, padding=2)
    with pytest.raises(ValueError, match="h0"):
        fg.ops.get("recurrent_layer")(_meta(5, 3, 7), _meta(2, 6), None, _meta(18, 7), _meta(18, 6), None, None,
                                      mode="gru")
    with pytest.raises(TypeError, match="indices"):
        fg.ops.get("embedding")(_meta(11, 5), _meta(3))
    with pytest.raises(ValueError, match="target"):
        fg.ops.get("cross_entropy")(_meta(5, 7), _meta(4, dtype=np.int64))
