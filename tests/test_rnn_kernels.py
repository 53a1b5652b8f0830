"""LSTM / GRU / RNN kernels (forgegrad.kernels.rnn) against torch.nn.LSTM / GRU / RNN.

Each case builds a one-layer torch module, copies its state_dict tensors into the numpy kernels and
compares outputs, final states and every gradient (input, initial states, weights, biases). The
reverse direction is checked against torch run on the time-flipped sequence.
"""
import numpy as np
import pytest
import torch

from forgegrad import _C
from forgegrad.kernels import rnn as K

MODES = ["lstm", "gru", "tanh", "relu"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # conftest.py


def _torch_layer(mode, I, H, bias):
    torch.manual_seed(7)
    if mode == "lstm":
        return torch.nn.LSTM(I, H, bias=bias)
    if mode == "gru":
        return torch.nn.GRU(I, H, bias=bias)
    return torch.nn.RNN(I, H, bias=bias, nonlinearity=mode)


def _case(mode, T, B, I, H, reverse=False, bias=True, seed=0):
    """Random inputs and upstream gradients plus torch's results for them."""
    rng = np.random.default_rng(seed)
    m = _torch_layer(mode, I, H, bias)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    c0 = rng.standard_normal((B, H)).astype(np.float32)
    gy = rng.standard_normal((T, B, H)).astype(np.float32)
    gh = rng.standard_normal((B, H)).astype(np.float32)
    gc = rng.standard_normal((B, H)).astype(np.float32)

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0[None], requires_grad=True)
    c0t = torch.tensor(c0[None], requires_grad=True)
    xin = xt.flip(0) if reverse else xt
    if mode == "lstm":
        yt, (hn, cn) = m(xin, (h0t, c0t))
    else:
        yt, hn = m(xin, h0t)
        cn = None
    if reverse:
        yt = yt.flip(0)
    loss = (yt * torch.tensor(gy)).sum() + (hn[0] * torch.tensor(gh)).sum()
    if cn is not None:
        loss = loss + (cn[0] * torch.tensor(gc)).sum()
    loss.backward()

    params = {k: v.detach().numpy().copy() for k, v in m.named_parameters()}
    ref = {
        "y": yt.detach().numpy(), "h_n": hn[0].detach().numpy(),
        "gx": xt.grad.numpy(), "gh0": h0t.grad[0].numpy(),
        "gw_ih": m.weight_ih_l0.grad.numpy(), "gw_hh": m.weight_hh_l0.grad.numpy(),
    }
    if cn is not None:
        ref["c_n"] = cn[0].detach().numpy()
        ref["gc0"] = c0t.grad[0].numpy()
    if bias:
        ref["gb_ih"] = m.bias_ih_l0.grad.numpy()
        ref["gb_hh"] = m.bias_hh_l0.grad.numpy()
    args = dict(x=x, h0=h0, c0=c0, gy=gy, gh=gh, gc=gc, w_ih=params["weight_ih_l0"],
                w_hh=params["weight_hh_l0"], b_ih=params.get("bias_ih_l0"), b_hh=params.get("bias_hh_l0"))
    return args, ref


def _run(mode, a, reverse):
    """forgegrad forward + backward on the case's arrays; a dict named like the torch reference."""
    b = (a["b_ih"], a["b_hh"])
    if mode == "lstm":
        y, h_n, c_n, s = K.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], *b, reverse=reverse)
        gx, gh0, gc0, gwi, gwh, gbi, gbh = K.lstm_backward(s, a["gy"], a["gh"], a["gc"])
        out = dict(y=y, h_n=h_n, c_n=c_n, gc0=gc0)
    elif mode == "gru":
        y, h_n, s = K.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], *b, reverse=reverse)
        gx, gh0, gwi, gwh, gbi, gbh = K.gru_backward(s, a["gy"], a["gh"])
        out = dict(y=y, h_n=h_n)
    else:
        y, h_n, s = K.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], *b, nonlinearity=mode, reverse=reverse)
        gx, gh0, gwi, gwh, gbi, gbh = K.rnn_backward(s, a["gy"], a["gh"])
        out = dict(y=y, h_n=h_n)
    out.update(gx=gx, gh0=gh0, gw_ih=gwi, gw_hh=gwh)
    if a["b_ih"] is not None:
        out.update(gb_ih=gbi, gb_hh=gbh)
    else:
        assert gbi is None and gbh is None
    return out


def _assert_matches(out, ref):
    assert set(out) == set(ref)
    for k, r in ref.items():
        # Weight and bias gradients sum T*B products of O(1) terms (and the hidden gradients
        # chain through up to 40 steps), so float32 rounding grows with the magnitude of the sums:
        # atol is 1e-6 scaled by the largest reference value.
        atol = 1e-6 * max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(out[k], r, rtol=1e-5, atol=atol, err_msg=k)


# (T, B, I, H, reverse, bias): lengths 1-40, batch 1-17, hidden sizes not multiples of 16 (and
# crossing the 64-unit panel of the AVX-512 path), odd input sizes.
SHAPES = [
    (1, 1, 3, 5, False, True),
    (7, 17, 13, 19, True, True),
    (40, 3, 5, 33, False, False),
    (12, 4, 1, 70, True, True),
    (3, 13, 29, 131, False, True),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}{}{}".format(
    s[0], s[1], s[2], s[3], "rev" if s[4] else "", "" if s[5] else "nobias"))
def test_matches_torch(mode, shape):
    T, B, I, H, reverse, bias = shape
    a, ref = _case(mode, T, B, I, H, reverse, bias)
    _assert_matches(_run(mode, a, reverse), ref)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
# 1: batch-1 kernels (AVX-512: W_hh packed in 16-row blocks; AVX2: one sweep), 2: small-batch kernels
# (unpacked W_hh), 7: packed panels
@pytest.mark.parametrize("batch", [1, 2, 7])
def test_every_simd_path(simd_path, mode, reverse, batch):
    a, ref = _case(mode, 17 if batch == 1 else 9, batch, 11, 37, reverse, True, seed=3)  # batch 1 packs from T16
    _assert_matches(_run(mode, a, reverse), ref)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch, hidden", [(1, 150), (3, 150), (9, 150), (13, 20)])
def test_bit_identical_across_threads(threads, mode, batch, hidden):
    # H = 150 gives 3 panels on AVX-512 (64, 64, 22) and more on AVX2; B = 9 has a partial row
    # block, B = 3 takes the small-batch kernels; H = 20 is one panel, so 2-3 threads split rows.
    a, _ = _case(mode, 17 if batch == 1 else 6, batch, 10, hidden, False, True, seed=5)
    results = []
    for n in (1, 2, 3):
        threads(n)
        results.append(_run(mode, a, reverse=(mode == "gru")))
    for other in results[1:]:
        for k in results[0]:
            assert np.array_equal(results[0][k], other[k]), k


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hidden", [37, 150])
def test_batch1_sequence_equals_step_by_step(simd_path, threads, mode, hidden):
    # A batch-1 call of 17 steps packs W_hh (AVX-512), one-step calls read it as stored: the recurrent
    # products must come out the same bits either way. W_ih = 0 makes every step's input projection
    # exactly its bias whatever the GEMM's blocking (which depends on the rows per call), so only
    # the recurrence (from random h0, c0) is compared. H = 37 / 150: partial 16-row blocks and
    # 64-unit panels, K not a multiple of 16; 2 threads split each step's panels.
    a, _ = _case(mode, 17, 1, 10, hidden, False, True, seed=11)
    a["w_ih"] = np.zeros_like(a["w_ih"])
    b = (a["b_ih"], a["b_hh"])
    for n in (1, 2):
        threads(n)
        if mode == "lstm":
            y, h, c, _ = K.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], *b, training=False)
        elif mode == "gru":
            y, h, _ = K.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], *b, training=False)
        else:
            y, h, _ = K.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], *b, nonlinearity=mode, training=False)
        hs, cs, ys = a["h0"], a["c0"], []
        for t in range(17):
            if mode == "lstm":
                yt, hs, cs, _ = K.lstm_forward(a["x"][t:t + 1], hs, cs, a["w_ih"], a["w_hh"], *b, training=False)
            elif mode == "gru":
                yt, hs, _ = K.gru_forward(a["x"][t:t + 1], hs, a["w_ih"], a["w_hh"], *b, training=False)
            else:
                yt, hs, _ = K.rnn_forward(a["x"][t:t + 1], hs, a["w_ih"], a["w_hh"], *b, nonlinearity=mode,
                                          training=False)
            ys.append(yt)
        assert np.array_equal(y, np.concatenate(ys)) and np.array_equal(h, hs)
        if mode == "lstm":
            assert np.array_equal(c, cs)


@pytest.mark.parametrize("mode", MODES)
def test_inference_matches_training_and_saves_nothing(mode):
    a, _ = _case(mode, 5, 4, 6, 21, False, True, seed=9)
    b = (a["b_ih"], a["b_hh"])
    if mode == "lstm":
        tr = K.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], *b)
        inf = K.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], *b, training=False)
        assert np.array_equal(tr[2], inf[2])
    elif mode == "gru":
        tr = K.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], *b)
        inf = K.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], *b, training=False)
    else:
        tr = K.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], *b, nonlinearity=mode)
        inf = K.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], *b, nonlinearity=mode, training=False)
    assert np.array_equal(tr[0], inf[0]) and np.array_equal(tr[1], inf[1])
    assert inf[-1] is None and isinstance(tr[-1], K.RnnSaved)


def test_default_states_and_missing_gradients():
    a, _ = _case("lstm", 4, 3, 5, 9, False, True, seed=11)
    zeros = np.zeros((3, 9), np.float32)
    y0, h0, c0, s0 = K.lstm_forward(a["x"], zeros, zeros, a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    y1, h1, c1, s1 = K.lstm_forward(a["x"], None, None, a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    assert np.array_equal(y0, y1) and np.array_equal(h0, h1) and np.array_equal(c0, c1)
    g_none = K.lstm_backward(s1, a["gy"])  # grad_hT, grad_cT None: zero
    g_zero = K.lstm_backward(s0, a["gy"], zeros, zeros)
    for u, v in zip(g_none, g_zero):
        assert np.array_equal(u, v)
    g = K.gru_backward(K.gru_forward(a["x"], None, np.zeros((27, 5), np.float32),
                                     np.zeros((27, 9), np.float32))[2], None, None)
    assert all(np.all(v == 0) for v in g if v is not None)


def test_noncontiguous_inputs_are_accepted():
    a, ref = _case("gru", 5, 4, 6, 10, False, True, seed=2)
    x_f = np.asfortranarray(a["x"])
    w_t = np.ascontiguousarray(a["w_ih"].T).T  # a transposed view
    y, h_n, _ = K.gru_forward(x_f, a["h0"], w_t, a["w_hh"], a["b_ih"], a["b_hh"])
    np.testing.assert_allclose(y, ref["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind, fn", [("sigmoid", lambda x: 1 / (1 + np.exp(-x))), ("tanh", np.tanh),
                                      ("exp", np.exp)])
def test_activation_accuracy(simd_path, kind, fn):
    x = np.concatenate([np.linspace(-20, 20, 40001), np.linspace(-1e-3, 1e-3, 2001),
                        [-100.0, -88.0, -30.0, 30.0, 80.0, 100.0]]).astype(np.float32)
    if kind == "exp":
        x = x[np.abs(x) <= 80]
    got = _C.rnn.activation(kind, x).astype(np.float64)
    want = fn(x.astype(np.float64))
    rel = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float32).tiny)
    # float32 eps is 1.19e-7: within a few ulp everywhere; sigmoid's tiny results (x < -17) are
    # judged by absolute error since 1 + exp(-x) rounds before the division.
    if kind == "sigmoid":
        assert np.all((rel < 4e-7) | (np.abs(got - want) < 1e-12))
    else:
        assert rel.max() < 4e-7


def test_nan_propagates(simd_path):
    x = np.array([np.nan, 1.0, -np.inf, np.inf] * 5, np.float32)
    for kind in ("sigmoid", "tanh", "exp"):
        assert np.isnan(_C.rnn.activation(kind, x)[::4]).all(), kind
    a, _ = _case("relu", 3, 2, 4, 6, seed=1)
    a["x"][1, 0, 2] = np.nan
    y, h_n, _ = K.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], nonlinearity="relu")
    assert np.isnan(y[1:, 0]).all() and not np.isnan(y[:, 1]).any()
    y, h_n, c_n, _ = K.lstm_forward(a["x"], a["h0"], a["c0"], np.ones((24, 4), np.float32),
                                    np.zeros((24, 6), np.float32))
    assert np.isnan(y[1:, 0]).all() and np.isnan(c_n[0]).all() and not np.isnan(y[:, 1]).any()


# ---- error paths ---------------------------------------------------------------------------

def _lstm_args(T=3, B=2, I=4, H=5):
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return dict(x=f(T, B, I), h0=f(B, H), c0=f(B, H), w_ih=f(4 * H, I), w_hh=f(4 * H, H), b_ih=f(4 * H),
                b_hh=f(4 * H))


def _lstm(**kw):
    a = _lstm_args()
    a.update(kw)
    return K.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])


def test_errors_name_the_argument():
    a = _lstm_args()
    with pytest.raises(ValueError, match="input size mismatch.*input_size 3"):
        _lstm(x=np.zeros((3, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"h0 must have shape \(batch, hidden_size\) = \(2, 5\)"):
        _lstm(h0=np.zeros((1, 2, 5), np.float32))
    with pytest.raises(ValueError, match="c0 must have shape"):
        _lstm(c0=np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match="x must be 3-D"):
        _lstm(x=np.zeros((6, 4), np.float32))
    with pytest.raises(ValueError, match="at least one time step"):
        _lstm(x=np.zeros((0, 2, 4), np.float32))
    with pytest.raises(TypeError, match="x must have dtype float32, got float64"):
        _lstm(x=a["x"].astype(np.float64))
    with pytest.raises(TypeError, match="w_hh must be a numpy.ndarray"):
        _lstm(w_hh=[[1.0]])
    with pytest.raises(ValueError, match=r"w_hh must have shape \(4 \* hidden_size, hidden_size\)"):
        _lstm(w_hh=np.zeros((15, 5), np.float32))
    with pytest.raises(ValueError, match=r"w_ih must have shape \(20, input_size\)"):
        _lstm(w_ih=np.zeros((16, 4), np.float32))
    with pytest.raises(ValueError, match=r"b_hh must have shape \(20,\)"):
        _lstm(b_hh=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        K.rnn_forward(a["x"], None, a["w_ih"][:5], a["w_hh"][:5], nonlinearity="sigmoid")
    _, _, _, s = _lstm()
    with pytest.raises(ValueError, match=r"grad_y must have shape \(3, 2, 5\)"):
        K.lstm_backward(s, np.zeros((3, 2, 4), np.float32))
    with pytest.raises(ValueError, match="saved comes from a lstm forward"):
        K.gru_backward(s, None)
    with pytest.raises(TypeError, match="saved must be the RnnSaved"):
        K.lstm_backward((1, 2), None)


def test_binding_rejects_bad_arrays_without_crashing():
    a = _lstm_args()
    T, B, H = 3, 2, 5
    y, hn, cn = (np.empty((T, B, H), np.float32), np.empty((B, H), np.float32), np.empty((B, H), np.float32))
    base = [a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], y, hn, cn, None, None, None,
            False]
    _C.rnn.forward(0, *base)  # inference call is fine
    bad = list(base)
    bad[2] = None
    with pytest.raises(ValueError, match="c0 is required"):
        _C.rnn.forward(0, *bad)
    bad = list(base)
    bad[10] = np.empty((T, B, 4 * H), np.float32)
    with pytest.raises(ValueError, match="gates and cells must both be given"):
        _C.rnn.forward(0, *bad)
    bad = list(base)
    bad[7] = np.empty((T, B, H), np.float32)[::-1]
    with pytest.raises(ValueError, match="y must be C-contiguous"):
        _C.rnn.forward(0, *bad)
    bad = list(base)
    bad[8] = np.empty((B, H + 1), np.float32)
    with pytest.raises(ValueError, match=r"h_n must have shape \(2, 5\)"):
        _C.rnn.forward(0, *bad)
    with pytest.raises(ValueError, match="mode must be"):
        _C.rnn.forward(7, *base)
    with pytest.raises(ValueError, match="gates is required"):
        _C.rnn.backward(0, a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], y, None, None, None, None, None, None,
                        np.empty((T, B, 4), np.float32), hn, cn, np.empty((4 * H, 4), np.float32),
                        np.empty((4 * H, H), np.float32), None, None, False)


def test_bench_suite_is_registered():
    from forgegrad.bench import suites
    assert "rnn" in suites()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_bench_suite_onnxruntime_reference(kind):
    # The rnn suite's inference rows time onnxruntime on torch's export of the same layer: the
    # session it builds must compute that layer (checked on a tiny one).
    ort = pytest.importorskip("onnxruntime")
    from forgegrad.bench import rnn as bench_rnn
    torch.manual_seed(0)
    m = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(3, 5)
    x = torch.randn(4, 1, 3)
    sess = bench_rnn._ort_session(ort, torch, m, x, kind, 1)
    with torch.no_grad():
        want = m(x)[0].numpy()
    np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0].reshape(want.shape), want, rtol=1e-5, atol=1e-6)


def test_bench_table_marks_runtimes_a_row_does_not_time():
    # Training rows have no onnxruntime timing ("-"); a runtime that is not installed is "absent".
    from forgegrad.bench import format_table
    rows = [{"workload": "lstm fwd+bwd", "threads": 1, "flop": 1e6, "seconds": {"forgegrad": 1e-3, "torch": 2e-3}},
            {"workload": "lstm inference", "threads": 1, "flop": 1e6,
             "seconds": {"forgegrad": 1e-3, "torch": None, "onnxruntime": 3e-3}}]
    lines = format_table(rows).splitlines()
    assert "x onnxruntime" in lines[0]
    train, infer = lines[2].split(), lines[3].split()
    assert train[-1] == "-" and train[-3] == "-" and train[-2] == "2.00"  # onnxruntime speed, x torch, x onnxruntime
    assert "absent" in infer and infer[-1] == "3.00"
