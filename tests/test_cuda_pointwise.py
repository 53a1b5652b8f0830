"""The CUDA kernels built on the shared host/device math (forgegrad._C.cuda_pointwise, cuda/*.cu)
against the CPU kernels, on odd sizes: activations, LSTM/GRU/Elman gate kernels and whole layers
(forward and backward through time), multi-tensor Adam/AdamW/SGD. They need a GPU and are skipped
with the reason elsewhere; what runs everywhere is the binding's behaviour without a device, and the
shared math itself is tested on the CPU in tests/test_hd_math.py.

Tolerance: the GPU contracts a*b + c into fma and sums the SGEMMs in another order than the CPU, so
results agree to float rounding (1e-5 relative to each result's scale, per the issue), not bits.
"""
import numpy as np
import pytest

import forgegrad as fg
import forgegrad.cuda as fcuda
from forgegrad import _C
from forgegrad.kernels import optim as KO
from forgegrad.kernels import rnn as KR

P = _C.cuda_pointwise
ACT = _C.activation
needs_gpu = pytest.mark.skipif(not fcuda.is_available(),
                               reason=f"no CUDA device: {fcuda.unavailable_reason() or 'available'}")
RTOL = 1e-5


def _dev(a):
    return _C.cuda.DeviceArray.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _new(shape):
    return _dev(np.zeros(shape, np.float32))


def _close(got, want, what="", rtol=RTOL):
    got = got.numpy() if hasattr(got, "numpy") and not isinstance(got, np.ndarray) else got
    assert got.shape == want.shape, (what, got.shape, want.shape)
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=what)
    scale = float(np.max(np.abs(want[finite]))) if finite.any() else 0.0
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=rtol * scale, err_msg=what)


def test_binding_without_device_fails_clearly():
    x = np.zeros(3, np.float32)
    if not P.built:
        with pytest.raises(RuntimeError, match="built without CUDA"):
            P.act_forward(ACT.RELU, x, x)
    else:  # a CUDA build: numpy arrays are refused, naming the argument
        with pytest.raises(TypeError, match="x must be a forgegrad._C.cuda.DeviceArray"):
            P.act_forward(ACT.RELU, x, x)
    with pytest.raises(ValueError, match="op must be"):
        P.act_forward(42, x, x)
    with pytest.raises(ValueError, match="exp_avgs must have 1 entries"):
        P.adam_step([x], [x], [], [x], None, [1.0], [1.0], beta1=0.9, beta2=0.999, eps=1e-8, lr=1e-3,
                    weight_decay=0.0, decoupled=False, maximize=False)
    if not fcuda.is_available():
        from forgegrad import cuda_optim
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            cuda_optim.adam_step([x], [x], [x], [x], None, [1], lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)


SAVES_OUTPUT = {ACT.RELU, ACT.SIGMOID, ACT.TANH}


@needs_gpu
@pytest.mark.parametrize("op", ["RELU", "LEAKY_RELU", "GELU", "GELU_TANH", "SIGMOID", "TANH", "SILU"])
def test_activation_kernels_match_cpu(op):
    code = getattr(ACT, op)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(100_003) * 4).astype(np.float32)
    x[:6] = [np.nan, np.inf, -np.inf, -100.0, 100.0, 0.0]
    g = rng.standard_normal(x.size).astype(np.float32)
    y = np.empty_like(x)
    ACT.act_forward(code, x, y, 0.2)
    saved = y if code in SAVES_OUTPUT else x
    d = np.empty_like(x)
    ACT.act_backward(code, g, saved, d, 0.2)
    dy = _new(x.shape)
    P.act_forward(code, _dev(x), dy, 0.2)
    dd = _new(x.shape)
    P.act_backward(code, _dev(g), _dev(saved), dd, 0.2)
    got_y, got_d = dy.numpy(), dd.numpy()
    np.testing.assert_array_equal(np.isnan(got_y), np.isnan(y))
    _close(got_y[6:], y[6:], f"{op} forward")
    _close(got_d[6:], d[6:], f"{op} backward")


@needs_gpu
@pytest.mark.parametrize("B,H", [(1, 1), (3, 17), (5, 129)])
def test_gate_kernels_match_shared_math(B, H):
    """One step of the fused gate kernels against _C.hd_math (bit-identical to the CPU scalar path)."""
    rng = np.random.default_rng(4)
    HD = _C.hd_math
    pre = (rng.standard_normal((B, 4 * H)) * 2).astype(np.float32)
    c0 = rng.standard_normal((B, H)).astype(np.float32)
    gates, c, h = HD.lstm_forward(pre, c0)
    dg, dc, dh_ = _dev(pre), _new((B, H)), _new((B, H))
    P.lstm_cell_forward(dg, _dev(c0), dc, dh_)
    _close(dg.numpy(), gates, "lstm gates")
    _close(dc.numpy(), c, "lstm c")
    _close(dh_.numpy(), h, "lstm h")
    dh = rng.standard_normal((B, H)).astype(np.float32)
    gy = rng.standard_normal((B, H)).astype(np.float32)
    dcin = rng.standard_normal((B, H)).astype(np.float32)
    dpre, dcp = HD.lstm_backward(gates, c, c0, (dh + gy).astype(np.float32), dcin)
    ddc, ddp = _dev(dcin), _new((B, 4 * H))
    P.lstm_cell_backward(_dev(gates), _dev(c), _dev(c0), _dev(dh), _dev(gy), ddc, ddp)
    _close(ddp.numpy(), dpre, "lstm d_pre")
    _close(ddc.numpy(), dcp, "lstm dc_prev")

    xg = (rng.standard_normal((B, 3 * H)) * 2).astype(np.float32)
    hp = (rng.standard_normal((B, 3 * H)) * 2).astype(np.float32)
    gates, h = HD.gru_forward(xg, hp, c0)
    dxg, dho, dhn = _dev(xg), _new((B, H)), _new((B, H))
    P.gru_cell_forward(dxg, _dev(hp), _dev(c0), dho, dhn)
    _close(dxg.numpy(), gates, "gru gates")
    _close(dho.numpy(), h, "gru h")
    np.testing.assert_array_equal(dhn.numpy(), hp[:, 2 * H:])
    hn = np.ascontiguousarray(hp[:, 2 * H:])
    dgi, dgh, dd = HD.gru_backward(gates, hn, c0, (dh + gy).astype(np.float32))
    a, b, d = _new((B, 3 * H)), _new((B, 3 * H)), _new((B, H))
    P.gru_cell_backward(_dev(gates), _dev(hn), _dev(c0), _dev(dh), _dev(gy), a, b, d)
    _close(a.numpy(), dgi, "gru d_input")
    _close(b.numpy(), dgh, "gru d_hidden")
    _close(d.numpy(), dd, "gru dh_direct")


@needs_gpu
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_forward_backward_match_cpu(mode, reverse, bias):
    rng = np.random.default_rng(5)
    T, B, I, H = 5, 3, 7, 13
    G = {"lstm": 4, "gru": 3}.get(mode, 1)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    c0 = rng.standard_normal((B, H)).astype(np.float32) if mode == "lstm" else None
    w_ih = (rng.standard_normal((G * H, I)) * 0.3).astype(np.float32)
    w_hh = (rng.standard_normal((G * H, H)) * 0.3).astype(np.float32)
    b_ih = rng.standard_normal(G * H).astype(np.float32) if bias else None
    b_hh = rng.standard_normal(G * H).astype(np.float32) if bias else None
    gy = rng.standard_normal((T, B, H)).astype(np.float32)
    ghn = rng.standard_normal((B, H)).astype(np.float32)
    gcn = rng.standard_normal((B, H)).astype(np.float32) if mode == "lstm" else None
    if mode == "lstm":
        y, h_n, c_n, saved = KR.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse=reverse, training=True)
        want = (y, h_n, c_n) + tuple(KR.lstm_backward(saved, gy, ghn, gcn))
    elif mode == "gru":
        y, h_n, saved = KR.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse=reverse, training=True)
        want = (y, h_n) + tuple(KR.gru_backward(saved, gy, ghn))
    else:
        y, h_n, saved = KR.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity=mode[4:], reverse=reverse,
                                       training=True)
        want = (y, h_n) + tuple(KR.rnn_backward(saved, gy, ghn))
    lstm, gru = mode == "lstm", mode == "gru"
    d = {k: (None if v is None else _dev(v)) for k, v in dict(x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih,
                                                                  b_hh=b_hh, gy=gy, ghn=ghn, gcn=gcn).items()}
    dy, dhn = _new((T, B, H)), _new((B, H))
    dcn = _new((B, H)) if lstm else None
    gates = _new((T, B, G * H)) if lstm or gru else None
    cells = _new((T, B, H)) if lstm else None
    hn_lin = _new((T, B, H)) if gru else None
    code = {"lstm": 0, "gru": 1, "rnn_tanh": 2, "rnn_relu": 3}[mode]
    P.rnn_forward(code, d["x"], d["h0"], d["c0"], d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"], dy, dhn, dcn, gates,
                  cells, hn_lin, reverse)
    gx, gh0, gw_ih, gw_hh = _new((T, B, I)), _new((B, H)), _new((G * H, I)), _new((G * H, H))
    gc0 = _new((B, H)) if lstm else None
    gb_ih = _new(G * H) if bias else None
    gb_hh = _new(G * H) if bias else None
    P.rnn_backward(code, d["x"], d["h0"], d["c0"], d["w_ih"], d["w_hh"], dy, gates, cells, hn_lin, d["gy"],
                   d["ghn"], d["gcn"], gx, gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh, reverse)
    got = [dy, dhn] + ([dcn] if lstm else []) + [gx, gh0] + ([gc0] if lstm else []) + [gw_ih, gw_hh, gb_ih, gb_hh]
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None
            continue
        _close(g.numpy(), w, f"{mode} output {i}")


def _tensors(rng, sizes):
    return [rng.standard_normal(n).astype(np.float32) for n in sizes]


SIZES = [1, 0, 4095, 4097, 9001, 33]  # chunk edges (4096), an empty tensor, several chunks


@needs_gpu
@pytest.mark.parametrize("kw", [dict(), dict(weight_decay=0.1), dict(weight_decay=0.1, decoupled_weight_decay=True),
                                dict(amsgrad=True, maximize=True)], ids=["adam", "l2", "adamw", "amsgrad"])
def test_multi_tensor_adam_matches_cpu(kw):
    from forgegrad import cuda_optim
    rng = np.random.default_rng(6)
    kw = dict(kw)
    ams = kw.pop("amsgrad", False)
    params = _tensors(rng, SIZES)
    cpu = [[p.copy() for p in params]] + [[np.zeros_like(p) for p in params] for _ in range(3)]
    dev = [[_dev(a) for a in group] for group in cpu]
    for step in (1, 2, 3):
        grads = _tensors(rng, SIZES)
        hyper = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, **kw)
        KO.adam_step(cpu[0], grads, cpu[1], cpu[2], cpu[3] if ams else None, [step] * len(SIZES), **hyper)
        cuda_optim.adam_step(dev[0], [_dev(g) for g in grads], dev[1], dev[2], dev[3] if ams else None,
                             [step] * len(SIZES), **hyper)
    for group_c, group_d in zip(cpu, dev):
        for a, b in zip(group_c, group_d):
            _close(b.numpy(), a, "adam")


@needs_gpu
def test_multi_tensor_adam_over_several_launches():
    """More tensors than one launch's table holds (499 Adam tensors): the tables are split, in order."""
    from forgegrad import cuda_optim
    rng = np.random.default_rng(10)
    sizes = [int(n) for n in rng.integers(0, 40, 1203)]
    params = _tensors(rng, sizes)
    cpu = [[p.copy() for p in params]] + [[np.zeros_like(p) for p in params] for _ in range(2)]
    dev = [[_dev(a) for a in group] for group in cpu]
    grads = _tensors(rng, sizes)
    hyper = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, decoupled_weight_decay=True)
    KO.adam_step(cpu[0], grads, cpu[1], cpu[2], None, [1] * len(sizes), **hyper)
    cuda_optim.adam_step(dev[0], [_dev(g) for g in grads], dev[1], dev[2], None, [1] * len(sizes), **hyper)
    for a, b in zip(cpu[0], dev[0]):
        _close(b.numpy(), a, "adam, many tensors")


@needs_gpu
@pytest.mark.parametrize("kw", [dict(), dict(momentum=0.9, nesterov=True, weight_decay=0.01),
                                dict(momentum=0.8, dampening=0.3, maximize=True)], ids=["plain", "nesterov", "damp"])
def test_multi_tensor_sgd_matches_cpu(kw):
    from forgegrad import cuda_optim
    rng = np.random.default_rng(7)
    params = _tensors(rng, SIZES)
    cp, dp = [p.copy() for p in params], [_dev(p) for p in params]
    mom = kw.get("momentum", 0.0)
    cb = [np.zeros_like(p) for p in params] if mom else None
    db = [_dev(b) for b in cb] if mom else None
    for step in range(3):
        grads = _tensors(rng, SIZES)
        KO.sgd_step(cp, grads, cb, [step == 0] * len(SIZES), lr=0.05, **kw)
        cuda_optim.sgd_step(dp, [_dev(g) for g in grads], db, [step == 0] * len(SIZES), lr=0.05, **kw)
    for a, b in zip(cp, dp):
        _close(b.numpy(), a, "sgd")


@needs_gpu
def test_ops_dispatch_to_cuda_kernels():
    """The activation and recurrent ops run their cuda Functions on tensors on the GPU."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((7, 13)).astype(np.float32)
    for fn in (fg.nn.functional.gelu, fg.nn.functional.silu, fg.sigmoid, fg.tanh, fg.nn.functional.relu):
        _close(fn(fg.tensor(x).to("cuda")).cpu().numpy(), fn(fg.tensor(x)).numpy(), fn.__name__)
    lstm = fg.nn.LSTM(7, 11)
    seq = fg.tensor(rng.standard_normal((5, 3, 7)).astype(np.float32))
    want = lstm(seq)[0].numpy()
    got = lstm.to("cuda")(seq.to("cuda"))[0].cpu().numpy()
    _close(got, want, "nn.LSTM on cuda")


class _Ctx:
    needs_input_grad = (True,) * 7

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_cuda_functions_plumbing_on_a_cpu_stand_in(mode, monkeypatch):
    """The cuda Functions' host logic (allocation, argument order, saved buffers, returned gradients)
    runs everywhere: _C.cuda_pointwise has the signatures of the CPU bindings _C.rnn / _C.activation,
    so with those standing in (numpy arrays for DeviceArrays) the Functions must give the CPU op's
    results to the bit."""
    import types

    from forgegrad.ops import _cuda_pointwise as CP
    stand_in = types.SimpleNamespace(rnn_forward=_C.rnn.forward, rnn_backward=_C.rnn.backward,
                                     act_forward=ACT.act_forward, act_backward=ACT.act_backward)
    monkeypatch.setattr(CP, "_P", stand_in)
    monkeypatch.setattr(CP, "_empty", lambda shape, like: np.empty(tuple(shape), np.float32))
    monkeypatch.setattr(CP, "_zeros", lambda shape, like: np.zeros(tuple(shape), np.float32))
    rng = np.random.default_rng(9)
    T, B, I, H = 4, 3, 5, 7
    G = {"lstm": 4, "gru": 3}.get(mode, 1)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w_ih = (rng.standard_normal((G * H, I)) * 0.3).astype(np.float32)
    w_hh = (rng.standard_normal((G * H, H)) * 0.3).astype(np.float32)
    b_ih = rng.standard_normal(G * H).astype(np.float32)
    ctx = _Ctx()
    outs = CP.RecurrentLayerCudaFunction.forward(ctx, x, None, None, w_ih, w_hh, b_ih, None, mode, True)
    gy = rng.standard_normal((T, B, H)).astype(np.float32)
    ghn = rng.standard_normal((B, H)).astype(np.float32)
    grads = CP.RecurrentLayerCudaFunction.backward(ctx, gy, ghn, *((ghn,) if mode == "lstm" else ()))
    zeros = np.zeros((B, H), np.float32)
    if mode == "lstm":
        *want, saved = KR.lstm_forward(x, zeros, zeros, w_ih, w_hh, b_ih, None, reverse=True, training=True)
        gx, _, _, gwi, gwh, gbi, _ = KR.lstm_backward(saved, gy, ghn, ghn)
    elif mode == "gru":
        *want, saved = KR.gru_forward(x, zeros, w_ih, w_hh, b_ih, None, reverse=True, training=True)
        gx, _, gwi, gwh, gbi, _ = KR.gru_backward(saved, gy, ghn)
    else:
        *want, saved = KR.rnn_forward(x, zeros, w_ih, w_hh, b_ih, None, nonlinearity="tanh", reverse=True,
                                      training=True)
        gx, _, gwi, gwh, gbi, _ = KR.rnn_backward(saved, gy, ghn)
    assert len(outs) == len(want)
    for a, b in zip(outs, want):
        np.testing.assert_array_equal(a, b)
    # no h0 / c0 / b_hh given: no gradient for them; the others equal the CPU kernel's
    assert grads[1] is None and grads[2] is None and grads[6] is None
    for a, b in zip((grads[0], grads[3], grads[4], grads[5]), (gx, gwi, gwh, gbi)):
        np.testing.assert_array_equal(a, b)

    x2 = rng.standard_normal(37).astype(np.float32)
    F = fg.nn.functional
    for fn, args, op in ((CP.GeluCudaFunction, ("tanh",), lambda t: F.gelu(t, approximate="tanh")),
                         (CP.LeakyReluCudaFunction, (0.3,), lambda t: F.leaky_relu(t, 0.3)),
                         (CP.activation_function("silu", ACT.SILU, False), (), F.silu),
                         (CP.activation_function("tanh", ACT.TANH, True), (), fg.tanh)):
        c = _Ctx()
        y = fn.forward(c, x2, *args)
        t = fg.tensor(x2.copy(), requires_grad=True)
        ty = op(t)
        ty.sum().backward()
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(fn.backward(c, np.ones_like(x2)), t.grad.numpy())
