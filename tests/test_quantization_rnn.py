"""Dynamic-quantized LSTM / GRU: against a float64 numpy model of the same quantization (tight),
against torch's float LSTM / GRU (the quantization error), errors and checkpoints."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.quantization import (DynamicQuantizedGRU, DynamicQuantizedLSTM, choose_qparams, dequantize,
                                    quantize_dynamic, quantize_per_tensor)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _fake_linear(lin, x):
    """float64 model of DynamicQuantizedLinear: x quantized as the kernel does, dequantized weights."""
    s, z = choose_qparams(x, reduce_range=lin.reduce_range)
    q = quantize_per_tensor(x, s, z)
    if lin.reduce_range:
        q = np.minimum(q, 127)
    xd = (q.astype(np.float64) - z) * np.float64(np.float32(s))
    y = xd @ lin.dequantized_weight().astype(np.float64).T
    return y + (0 if lin.bias is None else lin.bias._data)


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _reference(q, x, lstm):
    """(T, B, I) input, zero initial state, the same quantization steps in float64."""
    D = 2 if q.bidirectional else 1
    H = q.hidden_size
    for layer in range(q.num_layers):
        outs = []
        for d, sfx in enumerate(("", "_reverse")[:D]):
            ih, hh = getattr(q, f"ih_l{layer}{sfx}"), getattr(q, f"hh_l{layer}{sfx}")
            T, B, _ = x.shape
            gi = _fake_linear(ih, x.reshape(T * B, -1).astype(np.float32)).reshape(T, B, -1)
            h, c = np.zeros((B, H), np.float32), np.zeros((B, H))
            y = np.zeros((T, B, H))
            for t in (range(T - 1, -1, -1) if d else range(T)):
                gh = _fake_linear(hh, h)
                if lstm:
                    g = gi[t] + gh
                    c = _sig(g[:, H:2 * H]) * c + _sig(g[:, :H]) * np.tanh(g[:, 2 * H:3 * H])
                    hf = _sig(g[:, 3 * H:]) * np.tanh(c)
                else:
                    r, zg = _sig(gi[t][:, :H] + gh[:, :H]), _sig(gi[t][:, H:2 * H] + gh[:, H:2 * H])
                    n = np.tanh(gi[t][:, 2 * H:] + r * gh[:, 2 * H:])
                    hf = (1 - zg) * n + zg * h
                h = hf.astype(np.float32)  # the next step quantizes the float32 state, as the module does
                y[t] = hf
            outs.append(y)
        x = np.concatenate(outs, axis=2).astype(np.float32)
    return x


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional,layers", [(False, 1), (True, 2)])
def test_quantized_rnn_matches_reference_and_torch(rng, kind, bidirectional, layers):
    torch = pytest.importorskip("torch")
    tm = getattr(torch.nn, kind)(12, 16, num_layers=layers, bidirectional=bidirectional)
    fm = getattr(nn, kind)(12, 16, num_layers=layers, bidirectional=bidirectional)
    fm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    q = quantize_dynamic(fm, {getattr(nn, kind)})
    assert isinstance(q, DynamicQuantizedLSTM if kind == "LSTM" else DynamicQuantizedGRU)
    x = rng.standard_normal((6, 3, 12)).astype(np.float32)
    out, state = q(fg.tensor(x))
    np.testing.assert_allclose(out._data, _reference(q, x, kind == "LSTM"), atol=2e-5)
    with torch.no_grad():
        tout, tstate = tm(torch.from_numpy(x))
    assert np.abs(out._data - tout.numpy()).max() < 0.03  # int8 weights and activations vs float32
    th = tstate[0] if kind == "LSTM" else tstate
    h = state[0] if kind == "LSTM" else state
    assert h.shape == tuple(th.shape) and np.abs(h._data - th.numpy()).max() < 0.03


def test_batch_first_unbatched_hx_and_model_swap(rng):
    model = nn.Sequential(nn.LSTM(5, 8, batch_first=True))
    q = quantize_dynamic(model, {nn.LSTM, nn.Linear})
    lstm = q[0]
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)
    h0 = rng.standard_normal((1, 2, 8)).astype(np.float32) * 0.5
    c0 = rng.standard_normal((1, 2, 8)).astype(np.float32) * 0.5
    out, (h, c) = lstm(fg.tensor(x), (fg.tensor(h0), fg.tensor(c0)))
    assert out.shape == (2, 4, 8) and h.shape == (1, 2, 8) and c.shape == (1, 2, 8)
    with fg.no_grad():
        ref, _ = model[0](fg.tensor(x), (fg.tensor(h0), fg.tensor(c0)))
    assert np.abs(out._data - ref._data).max() < 0.03
    one, (h1, _) = lstm(fg.tensor(x[0]))  # unbatched (T, I)
    assert one.shape == (4, 8) and h1.shape == (1, 8)
    np.testing.assert_allclose(one._data, lstm(fg.tensor(x[:1]))[0].data[0], atol=1e-6)


def test_rnn_checkpoint_and_errors(tmp_path, rng):
    q = quantize_dynamic(nn.GRU(6, 10, num_layers=2), {nn.GRU})
    fg.save(q.state_dict(), tmp_path / "gru.safetensors")
    other = quantize_dynamic(nn.GRU(6, 10, num_layers=2), {nn.GRU})
    other.load_state_dict(fg.load(tmp_path / "gru.safetensors"))
    x = fg.tensor(rng.standard_normal((3, 2, 6)).astype(np.float32))
    np.testing.assert_array_equal(other(x)[0].data, q(x)[0].data)
    assert q.state_dict()["ih_l1.weight"].dtype == np.int8
    np.testing.assert_array_equal(dequantize(q.ih_l0.weight._data, q.ih_l0.weight_scale._data) != 0,
                                  q.ih_l0.weight._data != 0)
    with pytest.raises(ValueError, match="input_size"):
        q(fg.tensor(np.ones((3, 2, 5), np.float32)))
    with pytest.raises(ValueError, match="h_0 must have shape"):
        q(fg.tensor(np.ones((3, 2, 6), np.float32)), fg.tensor(np.zeros((1, 2, 10), np.float32)))
    with pytest.raises(TypeError, match="float32"):
        q(np.ones((3, 2, 6), np.float32))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("hidden", [16, 48, 20])
def test_batch_one_fused_step_keeps_the_bits_of_every_path(rng, use_int8_path, kind, hidden):
    """Batch 1 with hidden % 16 == 0 runs the recurrent product and the gates as one fused step on the
    VNNI kernels (the other paths, and hidden = 20, run the product and the gates apart): the same bits
    on every int8 path, and the float64 reference's values."""
    from forgegrad.quantization import int8_paths
    fm = getattr(nn, kind)(7, hidden, num_layers=2, bidirectional=True)
    q = quantize_dynamic(fm, {getattr(nn, kind)})
    x = rng.standard_normal((9, 1, 7)).astype(np.float32)
    outs = {}
    for path in int8_paths():
        use_int8_path(path)
        out, state = q(fg.tensor(x))
        outs[path] = (out._data, *(s._data for s in (state if kind == "LSTM" else (state,))))
    use_int8_path(None)
    first = next(iter(outs.values()))
    for path, arrays in outs.items():
        for got, want in zip(arrays, first):
            np.testing.assert_array_equal(got, want, err_msg=f"int8 path {path}")
    np.testing.assert_allclose(first[0], _reference(q, x, kind == "LSTM"), atol=2e-5)
