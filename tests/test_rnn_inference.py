"""The recurrent layer's no-graph path (the op's inference kernel) and the small-batch kernels'
handling of weights whose rows are not 64-byte aligned."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.kernels import rnn as K
from forgegrad.ops.rnn import RecurrentLayerFunction


def _weights(rng, G, H, I):
    k = 1 / np.sqrt(H)
    return [rng.uniform(-k, k, s).astype(np.float32) for s in ((G * H, I), (G * H, H), (G * H,), (G * H,))]


@pytest.mark.parametrize("mode,G", [("lstm", 4), ("gru", 3), ("rnn_tanh", 1), ("rnn_relu", 1)])
@pytest.mark.parametrize("with_state", [False, True])
def test_no_grad_path_equals_recorded_forward(mode, G, with_state):
    rng = np.random.default_rng(0)
    T, B, I, H = 7, 3, 5, 20
    x = fg.Tensor(rng.standard_normal((T, B, I)).astype(np.float32))
    w = [fg.Tensor(a, requires_grad=True) for a in _weights(rng, G, H, I)]
    h0 = fg.Tensor(rng.standard_normal((B, H)).astype(np.float32)) if with_state else None
    c0 = fg.Tensor(rng.standard_normal((B, H)).astype(np.float32)) if with_state and mode == "lstm" else None
    recorded = RecurrentLayerFunction.op(x, h0, c0, *w, mode=mode, reverse=True)
    assert recorded[0].requires_grad
    with fg.no_grad():
        fast = RecurrentLayerFunction.op(x, h0, c0, *w, mode=mode, reverse=True)
    assert len(fast) == len(recorded)
    for a, b in zip(fast, recorded):
        assert not a.requires_grad
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_no_grad_path_errors_match_the_checked_path():
    rng = np.random.default_rng(1)
    x = fg.Tensor(rng.standard_normal((4, 2, 3)).astype(np.float32))
    w = [fg.Tensor(a) for a in _weights(rng, 4, 8, 3)]
    bad_h0 = fg.Tensor(np.zeros((2, 7), np.float32))
    with fg.no_grad():
        with pytest.raises(ValueError, match=r"lstm_forward: h0 must have shape \(batch, hidden_size\)"):
            RecurrentLayerFunction.op(x, bad_h0, None, *w, mode="lstm")
        with pytest.raises(ValueError, match="mode must be one of"):
            RecurrentLayerFunction.op(x, None, None, *w, mode="lstmx")
        # a non-contiguous input goes through the checked path and gives the same result
        xt = fg.Tensor(np.ascontiguousarray(x.numpy().transpose(1, 0, 2))).transpose(0, 1)
        a = RecurrentLayerFunction.op(xt, None, None, *w, mode="lstm")[0].numpy()
        b = RecurrentLayerFunction.op(x, None, None, *w, mode="lstm")[0].numpy()
    np.testing.assert_array_equal(a, b)


def _at_offset(a, floats):
    """A copy of a whose data starts `floats` floats past a 64-byte boundary."""
    buf = np.empty(a.size + 32, np.float32)
    start = (-buf.ctypes.data // 4) % 16 + floats
    out = buf[start:start + a.size].reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("H", [32, 20])
@pytest.mark.parametrize("offset", [1, 4])
def test_small_batch_results_do_not_depend_on_weight_alignment(threads, simd_path, H, offset):
    rng = np.random.default_rng(2)
    T, B, I = 9, 2, 6
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    gy = rng.standard_normal((T, B, H)).astype(np.float32)
    w = _weights(rng, 4, H, I)
    w_mis = [w[0], _at_offset(w[1], offset), w[2], w[3]]
    assert w_mis[1].ctypes.data % 64 != 0
    outs = []
    for t in (1, 2):
        threads(t)
        for ws in (w, w_mis):
            y, h, c, saved = K.lstm_forward(x, None, None, *ws, training=True)
            grads = K.lstm_backward(saved, gy)
            outs.append([y, h, c] + [g for g in grads if g is not None])
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


def test_lstm_module_inference_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    m = torch.nn.LSTM(12, 16)
    fm = fg.nn.LSTM(12, 16)
    fm.load_state_dict({k: fg.Tensor(v.detach().numpy().copy()) for k, v in m.state_dict().items()})
    x = rng.standard_normal((10, 1, 12)).astype(np.float32)
    with torch.no_grad():
        ty, (th, tc) = m(torch.from_numpy(x))
    with fg.no_grad():
        fy, (fh, fc) = fm(fg.Tensor(x))
    for a, b in ((fy, ty), (fh, th), (fc, tc)):
        assert a.shape == tuple(b.shape)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_recurrent_weights_are_64_byte_aligned():
    from forgegrad._memory import empty_aligned
    for shape in ((3,), (5, 7), (1024, 256), 0):
        a = empty_aligned(shape)
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.flags.writeable and a.dtype == np.float32
    m = fg.nn.LSTM(12, 20, num_layers=2, bidirectional=True)
    state = {k: fg.Tensor(np.full(v.shape, 0.5, np.float32)) for k, v in m.state_dict().items()}
    m.load_state_dict(state)  # copies into the parameters: alignment stays
    for name in ("weight_hh_l0", "weight_hh_l1_reverse"):
        p = getattr(m, name)
        assert p._data.ctypes.data % 64 == 0
        assert np.all(p.numpy() == 0.5)
    assert fg.nn.GRUCell(4, 8).weight_hh._data.ctypes.data % 64 == 0
