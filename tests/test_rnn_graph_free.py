"""Batch-1 inference paths of the recurrent layers: the modules' graph-free forward (RNNBase.forward
on arrays under no_grad) against the general op path, and the batch-1 recurrent GEMV against the
small-batch kernel of the other rows (same arithmetic per output, so the same bits)."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.kernels import rnn as K

CONFIGS = [  # (cls, kwargs)
    (nn.LSTM, {}),
    (nn.LSTM, {"num_layers": 2, "bidirectional": True}),
    (nn.LSTM, {"batch_first": True}),
    (nn.LSTM, {"num_layers": 2, "dropout": 0.5, "bias": False}),
    (nn.GRU, {"num_layers": 2}),
    (nn.GRU, {"bidirectional": True, "batch_first": True}),
    (nn.RNN, {"nonlinearity": "relu"}),
    (nn.RNN, {"num_layers": 3}),
]


def _state(cls, m, rng, batch):
    L = m.num_layers * (2 if m.bidirectional else 1)
    shape = (L, batch, m.hidden_size) if batch else (L, m.hidden_size)
    h = fg.Tensor(rng.standard_normal(shape).astype(np.float32))
    if cls is nn.LSTM:
        return (h, fg.Tensor(rng.standard_normal(shape).astype(np.float32)))
    return h


def _flat(out):
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _flat(o)]
    return [out]


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("batch", [0, 1, 3])  # 0: unbatched input
@pytest.mark.parametrize("with_state", [False, True])
def test_graph_free_module_forward_equals_the_op_path(cls, kw, batch, with_state):
    rng = np.random.default_rng(0)
    fg.manual_seed(0)
    m = cls(5, 12, **kw).eval()
    T = 6
    if batch == 0:
        shape = (T, 5)
    else:
        shape = (batch, T, 5) if kw.get("batch_first") else (T, batch, 5)
    x = fg.Tensor(rng.standard_normal(shape).astype(np.float32))
    hx = _state(cls, m, rng, batch) if with_state else None
    assert m._forward_graph_free(x, hx) is not None  # the fast path takes this call
    with fg.no_grad():
        fast = _flat(m(x, hx))
    recorded = _flat(m(x, hx))  # parameters require grad: the general path, recording a graph
    assert recorded[0].requires_grad
    assert len(fast) == len(recorded)
    for a, b in zip(fast, recorded):
        assert not a.requires_grad
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_graph_free_forward_leaves_other_calls_to_the_general_path():
    rng = np.random.default_rng(1)
    m = nn.LSTM(4, 8, num_layers=2, dropout=0.5)  # training mode: dropout between the layers
    x = fg.Tensor(rng.standard_normal((3, 2, 4)).astype(np.float32))
    assert m._forward_graph_free(x, None) is None
    assert m.eval()._forward_graph_free(x, None) is not None
    assert m._forward_graph_free(x.double(), None) is None  # float64: the float64 Functions
    assert m._forward_graph_free(fg.Tensor(np.zeros((3, 2, 5), np.float32)), None) is None
    assert m._forward_graph_free(x, (fg.zeros(4, 2, 8), fg.zeros(4, 2, 8))) is None  # wrong state shape
    assert m._forward_graph_free(x, fg.zeros(2, 2, 8)) is None  # LSTM state must be a pair
    with fg.no_grad():
        # ... and those raise the general path's messages
        with pytest.raises(ValueError, match="input.size\\(-1\\) must be equal to input_size"):
            m(fg.Tensor(np.zeros((3, 2, 5), np.float32)))
        with pytest.raises(ValueError, match="Expected hidden size"):
            m(x, (fg.zeros(4, 2, 8), fg.zeros(4, 2, 8)))
        with pytest.raises(TypeError, match="hx must be a tuple"):
            m(x, fg.zeros(2, 2, 8))
        with pytest.raises(RuntimeError, match="same dtype"):
            m(x.double())
        m.double()  # float64 weights: the float64 Functions
        assert m._forward_graph_free(x.double(), None) is None
        assert m(x.double())[0].dtype == np.float64


def _run(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, training):
    """(y, h_n[, c_n]) of one layer; the training forward too (it writes the saved gates instead of
    scratch)."""
    if mode == "lstm":
        return K.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, training=training)[:3]
    if mode == "gru":
        return K.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training=training)[:2]
    return K.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity=mode[4:], training=training)[:2]


@pytest.mark.parametrize("mode,G", [("lstm", 4), ("gru", 3), ("rnn_tanh", 1), ("rnn_relu", 1)])
@pytest.mark.parametrize("H", [256, 37, 100, 8, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_batch_1_path_gives_the_bits_of_the_batched_kernel(threads, simd_path, mode, G, H, bias):
    # At B = 1 on one thread the AVX2 build sweeps all of W_hh per step (8 rows per pass, one
    # transposed lane sum) and runs the cell once over all units; B = 2, and B = 1 at two threads,
    # run the panel tasks with the general small-batch kernel. Each output must be the same bits.
    # W_ih = 0 makes the input projection exact, so the comparison is of the recurrence alone.
    rng = np.random.default_rng(2)
    T, I = 5, 3
    k = 1 / np.sqrt(H)
    w_ih = np.zeros((G * H, I), np.float32)
    w_hh = rng.uniform(-k, k, (G * H, H)).astype(np.float32)
    b_ih, b_hh = (rng.uniform(-k, k, G * H).astype(np.float32) for _ in range(2)) if bias else (None, None)
    x = rng.standard_normal((T, 1, I)).astype(np.float32)
    h0 = rng.standard_normal((1, H)).astype(np.float32)
    c0 = rng.standard_normal((1, H)).astype(np.float32) if mode == "lstm" else None
    two = (np.concatenate([x, x], 1), np.concatenate([h0, h0]), None if c0 is None else np.concatenate([c0, c0]))
    results = []
    for t in (1, 2):
        threads(t)
        for training in (False, True):
            one = _run(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, training)
            both = _run(mode, *two, w_ih, w_hh, b_ih, b_hh, training)
            for a, b2 in zip(one, both):
                np.testing.assert_array_equal(np.concatenate([a, a], axis=-2), b2)
            results.append(one)
    for other in results[1:]:
        for a, b2 in zip(results[0], other):
            np.testing.assert_array_equal(a, b2)
