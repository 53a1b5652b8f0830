"""The shared host/device math (cpp/include/forgegrad/hd/, docs/shared_math.md), tested on the CPU.

The CUDA kernels evaluate these functions per thread; here ``_C.hd_math`` evaluates the same
functions per element over numpy arrays and is compared with the CPU kernels (bit for bit on the
portable ``scalar`` path, which calls the shared code; within float rounding on AVX2 / AVX-512,
which compute the same formulas on vectors with fused multiply-adds) and with torch. Sizes are odd
so that vector tails and partial panels are covered.
"""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C
from forgegrad.kernels import optim as KO
from forgegrad.kernels import rnn as KR

torch = pytest.importorskip("torch")

HD = _C.hd_math
ACT = _C.activation
OPS = {"relu": ACT.RELU, "leaky_relu": ACT.LEAKY_RELU, "gelu": ACT.GELU, "gelu_tanh": ACT.GELU_TANH,
       "sigmoid": ACT.SIGMOID, "tanh": ACT.TANH, "silu": ACT.SILU}
SAVES_OUTPUT = {"relu", "sigmoid", "tanh"}


def _agree(hd, cpu, isa, rtol=2e-5, atol=2e-6):
    """Bit for bit on the scalar path; within float rounding on the vector paths."""
    hd, cpu = np.asarray(hd), np.asarray(cpu)
    assert hd.shape == cpu.shape and hd.dtype == cpu.dtype == np.float32
    if isa == "scalar":
        np.testing.assert_array_equal(hd.view(np.uint32), cpu.view(np.uint32))
    else:
        np.testing.assert_allclose(hd, cpu, rtol=rtol, atol=atol)


def _special_inputs(rng, n=1001):
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    edges = [0.0, -0.0, 0.625, -0.625, 0.9277, -0.9277, 20.0, -20.0, 88.0, -88.0, -88.37, -88.5, -87.4, 88.8,
             100.0, -100.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30]
    x[:len(edges)] = edges
    return x


def _act_cpu(name, x, g, alpha):
    """The CPU kernel (forgegrad._C.activation) forward, and backward from what it saves."""
    op = OPS[name]
    y = np.empty_like(x)
    ACT.act_forward(op, x, y, alpha)
    d = np.empty_like(x)
    ACT.act_backward(op, g, y if name in SAVES_OUTPUT else x, d, alpha)
    return y, d


@pytest.mark.parametrize("name", sorted(OPS))
def test_activation_matches_cpu_kernel(name, simd_path, rng):
    x = _special_inputs(rng)
    g = rng.standard_normal(x.size).astype(np.float32)
    alpha = 0.07
    y, d = _act_cpu(name, x, g, alpha)
    hy = HD.act_forward(OPS[name], x, alpha)
    hd_d = HD.act_backward(OPS[name], g, hy if name in SAVES_OUTPUT else x, alpha)
    _agree(hy, y, simd_path)
    _agree(hd_d, d, simd_path)


@pytest.mark.parametrize("name", sorted(OPS))
def test_activation_matches_torch(name, rng):
    x = (rng.standard_normal(997) * 3).astype(np.float32)
    g = rng.standard_normal(x.size).astype(np.float32)
    alpha = 0.07
    F = torch.nn.functional
    fn = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "silu": F.silu, "gelu": F.gelu,
          "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
          "leaky_relu": lambda t: F.leaky_relu(t, alpha)}[name]
    tx = torch.tensor(x, requires_grad=True)
    ty = fn(tx)
    ty.backward(torch.tensor(g))
    hy = HD.act_forward(OPS[name], x, alpha)
    np.testing.assert_allclose(hy, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    hd_d = HD.act_backward(OPS[name], g, hy if name in SAVES_OUTPUT else x, alpha)
    # atol: where tanh saturates torch's is exactly +-1 and ours 1 ulp short (gelu_tanh's gradient ~1e-6)
    np.testing.assert_allclose(hd_d, tx.grad.numpy(), rtol=1e-5, atol=5e-6)


def test_activation_through_registry_op(rng):
    """The same values as the activation ops users call (forward and gradient through autograd)."""
    x = (rng.standard_normal((7, 13)) * 3).astype(np.float32)
    for name, fn in (("gelu", fg.nn.functional.gelu), ("silu", fg.nn.functional.silu),
                     ("sigmoid", fg.sigmoid), ("tanh", fg.tanh)):
        t = fg.tensor(x, requires_grad=True)
        y = fn(t)
        y.sum().backward()
        hy = HD.act_forward(OPS[name], x)
        np.testing.assert_allclose(y.numpy(), hy, rtol=2e-6, atol=1e-7)
        saved = hy if name in SAVES_OUTPUT else x
        np.testing.assert_allclose(t.grad.numpy(), HD.act_backward(OPS[name], np.ones_like(x), saved),
                                   rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["exp", "sigmoid", "tanh", "erf"])
def test_transcendentals_accuracy(name, rng):
    x = np.concatenate([(rng.standard_normal(2001) * 5), np.linspace(-1, 1, 999)]).astype(np.float32)
    if name == "exp":
        x = np.clip(x * 4, -87, 88).astype(np.float32)
    import math
    ref = {"exp": np.exp, "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh,
           "erf": np.vectorize(math.erf)}[name](x.astype(np.float64))
    got = getattr(HD, name)(x).astype(np.float64)
    # a few ulp (relative), absolute near 0 where the result is tiny
    np.testing.assert_allclose(got, ref, rtol=4e-7, atol=1e-37 if name == "exp" else 2e-8)


def test_exp_edges():
    x = np.array([np.nan, np.inf, -np.inf, -87.4, -1000.0, 0.0], np.float32)
    y = HD.exp(x)
    assert np.isnan(y[0]) and y[1] > 3e38 and y[2] == 0.0 and y[3] == 0.0 and y[4] == 0.0 and y[5] == 1.0


# ---- recurrent cells through the CPU RNN kernels ---------------------------------------------------
# With w_ih = identity (I = G*H), w_hh = 0 and T = 1, the gate pre-activations are exactly x: the
# kernel's cell math is then compared with the shared cell function on arbitrary pre-activations.

def _lstm_inputs(rng, B, H):
    pre = (rng.standard_normal((B, 4 * H)) * 2).astype(np.float32)
    c0 = rng.standard_normal((B, H)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    return pre, c0, h0


@pytest.mark.parametrize("B,H", [(1, 1), (3, 17), (5, 33)])
def test_lstm_cell_matches_cpu_kernel(B, H, simd_path, rng):
    pre, c0, h0 = _lstm_inputs(rng, B, H)
    w_ih = np.eye(4 * H, dtype=np.float32)
    w_hh = np.zeros((4 * H, H), np.float32)
    y, h_n, c_n, saved = KR.lstm_forward(pre[None], h0, c0, w_ih, w_hh, None, None, training=True)
    gates, c, h = HD.lstm_forward(pre, c0)
    _agree(h, y[0], simd_path)
    _agree(h, h_n, simd_path)
    _agree(c, c_n, simd_path)

    gy = rng.standard_normal((1, B, H)).astype(np.float32)
    ghn = rng.standard_normal((B, H)).astype(np.float32)
    gcn = rng.standard_normal((B, H)).astype(np.float32)
    gx, gh0, gc0, *_ = KR.lstm_backward(saved, gy, ghn, gcn)
    dpre, dc_prev = HD.lstm_backward(gates, c, c0, (ghn + gy[0]).astype(np.float32), gcn)
    _agree(dpre, gx[0], simd_path)
    _agree(dc_prev, gc0, simd_path)


def test_lstm_cell_matches_torch(rng):
    B, H = 5, 19
    pre, c0, _ = _lstm_inputs(rng, B, H)
    tp = torch.tensor(pre, requires_grad=True)
    tc0 = torch.tensor(c0, requires_grad=True)
    i, f, g, o = tp.chunk(4, 1)  # torch's gate order
    c = torch.sigmoid(f) * tc0 + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    dh = rng.standard_normal((B, H)).astype(np.float32)
    dc = rng.standard_normal((B, H)).astype(np.float32)
    (h * torch.tensor(dh)).sum().add_((c * torch.tensor(dc)).sum()).backward()
    gates, hc, hh = HD.lstm_forward(pre, c0)
    np.testing.assert_allclose(hh, h.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hc, c.detach().numpy(), rtol=1e-5, atol=1e-6)
    dpre, dc_prev = HD.lstm_backward(gates, hc, c0, dh, dc)
    np.testing.assert_allclose(dpre, tp.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dc_prev, tc0.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("B,H", [(1, 1), (3, 17), (4, 31)])
def test_gru_cell_matches_cpu_kernel(B, H, simd_path, rng):
    # w_hh = 0 and b_hh random: the recurrent terms h_r, h_z, h_n are b_hh for every row.
    xg = (rng.standard_normal((B, 3 * H)) * 2).astype(np.float32)
    b_hh = rng.standard_normal(3 * H).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    w_ih = np.eye(3 * H, dtype=np.float32)
    w_hh = np.zeros((3 * H, H), np.float32)
    y, h_n, saved = KR.gru_forward(xg[None], h0, w_ih, w_hh, None, b_hh, training=True)
    hp = np.ascontiguousarray(np.broadcast_to(b_hh, (B, 3 * H)))
    gates, h = HD.gru_forward(xg, hp, h0)
    _agree(h, y[0], simd_path)
    _agree(h, h_n, simd_path)

    gy = rng.standard_normal((1, B, H)).astype(np.float32)
    ghn = rng.standard_normal((B, H)).astype(np.float32)
    gx, gh0, _gwi, _gwh, _gbi, gbh = KR.gru_backward(saved, gy, ghn)
    hn = np.ascontiguousarray(hp[:, 2 * H:])
    dgi, dgh, dh_direct = HD.gru_backward(gates, hn, h0, (ghn + gy[0]).astype(np.float32))
    _agree(dgi, gx[0], simd_path)
    _agree(dh_direct, gh0, simd_path)
    acc = np.zeros(3 * H, np.float32)  # the kernel's bias gradient: rows summed in order
    for row in dgh:
        acc = (acc + row).astype(np.float32)
    _agree(acc, gbh, simd_path)


def test_gru_cell_matches_torch(rng):
    B, H = 3, 23
    xg = (rng.standard_normal((B, 3 * H)) * 2).astype(np.float32)
    hp = (rng.standard_normal((B, 3 * H)) * 2).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    tx, th, th0 = (torch.tensor(a, requires_grad=True) for a in (xg, hp, h0))
    xr, xz, xn = tx.chunk(3, 1)
    hr, hz, hn = th.chunk(3, 1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    h = (1 - z) * n + z * th0
    dh = rng.standard_normal((B, H)).astype(np.float32)
    (h * torch.tensor(dh)).sum().backward()
    gates, hh = HD.gru_forward(xg, hp, h0)
    np.testing.assert_allclose(hh, h.detach().numpy(), rtol=1e-5, atol=1e-6)
    dgi, dgh, dh_direct = HD.gru_backward(gates, np.ascontiguousarray(hp[:, 2 * H:]), h0, dh)
    np.testing.assert_allclose(dgi, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dgh, th.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dh_direct, th0.grad.numpy(), rtol=1e-5, atol=1e-6)  # the direct path only


@pytest.mark.parametrize("relu", [False, True])
def test_elman_cell_matches_cpu_kernel(relu, simd_path, rng):
    B, H = 3, 29
    pre = (rng.standard_normal((B, H)) * 2).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    y, h_n, saved = KR.rnn_forward(pre[None], h0, np.eye(H, dtype=np.float32), np.zeros((H, H), np.float32),
                                   None, None, nonlinearity="relu" if relu else "tanh", training=True)
    h = HD.rnn_forward(pre, relu)
    _agree(h, y[0], simd_path)
    gy = rng.standard_normal((1, B, H)).astype(np.float32)
    ghn = np.zeros((B, H), np.float32)
    gx = KR.rnn_backward(saved, gy, ghn)[0]
    _agree(HD.rnn_backward(h, (ghn + gy[0]).astype(np.float32), relu), gx[0], simd_path)


# ---- optimizers against the fused CPU kernels and torch.optim ---------------------------------------
ADAM_CASES = [dict(), dict(weight_decay=0.1), dict(weight_decay=0.1, decoupled=True), dict(amsgrad=True),
              dict(maximize=True, weight_decay=0.05)]


@pytest.mark.parametrize("case", ADAM_CASES, ids=lambda c: ",".join(c) or "plain")
def test_adam_matches_cpu_kernel_and_torch(case, simd_path, rng):
    n = 1003
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    wd, dec, ams, mx = case.get("weight_decay", 0.0), case.get("decoupled", False), case.get("amsgrad", False), \
        case.get("maximize", False)
    p0 = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    cpu = [p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)]
    hd = [p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)]
    tp = torch.nn.Parameter(torch.tensor(p0))
    cls = torch.optim.AdamW if dec else torch.optim.Adam
    opt = cls([tp], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, amsgrad=ams, maximize=mx, foreach=False)
    for step, g in enumerate(grads, 1):
        KO.adam_step([cpu[0]], [g], [cpu[1]], [cpu[2]], [cpu[3]] if ams else None, [step], lr=lr, beta1=b1,
                     beta2=b2, eps=eps, weight_decay=wd, decoupled_weight_decay=dec, maximize=mx)
        HD.adam_update(hd[0], g, hd[1], hd[2], hd[3] if ams else None, step=step, lr=lr, beta1=b1, beta2=b2,
                       eps=eps, weight_decay=wd, decoupled=dec, maximize=mx)
        tp.grad = torch.tensor(g)
        opt.step()
    for a, b in zip(hd, cpu):
        _agree(a, b, simd_path, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(hd[0], tp.detach().numpy(), rtol=1e-6, atol=1e-6)


SGD_CASES = [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=0.01),
             dict(momentum=0.8, dampening=0.3, maximize=True)]


@pytest.mark.parametrize("case", SGD_CASES, ids=lambda c: ",".join(c) or "plain")
def test_sgd_matches_cpu_kernel_and_torch(case, simd_path, rng):
    n = 517
    lr = 0.05
    p0 = rng.standard_normal(n).astype(np.float32)
    cpu_p, hd_p = p0.copy(), p0.copy()
    mom = case.get("momentum", 0.0)
    cpu_b, hd_b = np.zeros(n, np.float32), np.zeros(n, np.float32)
    tp = torch.nn.Parameter(torch.tensor(p0))
    opt = torch.optim.SGD([tp], lr=lr, foreach=False, **case)
    for step in range(3):
        g = rng.standard_normal(n).astype(np.float32)
        kw = {k: v for k, v in case.items()}
        KO.sgd_step([cpu_p], [g], [cpu_b] if mom else None, [step == 0], lr=lr, **kw)
        HD.sgd_update(hd_p, g, hd_b if mom else None, step == 0, lr=lr, **kw)
        tp.grad = torch.tensor(g)
        opt.step()
    _agree(hd_p, cpu_p, simd_path, rtol=1e-6, atol=1e-7)
    if mom:
        _agree(hd_b, cpu_b, simd_path, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(hd_p, tp.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_bad_arguments_name_the_argument():
    x = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="op must be"):
        HD.act_forward(99, x)
    with pytest.raises(ValueError, match="pre"):
        HD.lstm_forward(np.zeros((2, 7), np.float32), np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="c_prev"):
        HD.lstm_forward(x, np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="x"):
        HD.exp(np.zeros(3, np.float64))
    with pytest.raises(ValueError, match="momentum_buffer"):
        HD.sgd_update(np.zeros(3, np.float32), np.zeros(3, np.float32), None, True, lr=0.1, momentum=0.9)
