"""C++ activation / softmax / cross-entropy kernels (forgegrad.kernels.*) against torch (CPU):
odd sizes, every SIMD path, extreme inputs, NaN, bit-identity across thread counts, error paths."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import _C
from forgegrad.kernels import activation as KA
from forgegrad.kernels import loss as KL
from forgegrad.kernels import softmax as KS
from helpers import assert_same_bits_across_threads

SIZES = [1, 15, 17, 1000, 1000003]

# name -> (our forward, our backward(grad, x, y), torch forward, atol of the forward)
# gelu: torch's vectorised erf is up to ~1.1e-6 away from the float64 value (ours ~4.5e-7, see
# test_gelu_close_to_float64), so the two float32 results may differ by ~1.2e-6: atol 2e-6.
ACTS = {
    "relu": (KA.relu, lambda g, x, y: KA.relu_backward(g, y), torch.relu, 1e-6),
    "leaky_relu": (lambda x: KA.leaky_relu(x, 0.2), lambda g, x, y: KA.leaky_relu_backward(g, x, 0.2),
                   lambda t: TF.leaky_relu(t, 0.2), 1e-6),
    "gelu": (KA.gelu, lambda g, x, y: KA.gelu_backward(g, x), TF.gelu, 2e-6),
    "gelu_tanh": (lambda x: KA.gelu(x, "tanh"), lambda g, x, y: KA.gelu_backward(g, x, "tanh"),
                  lambda t: TF.gelu(t, approximate="tanh"), 1e-6),
    "sigmoid": (KA.sigmoid, lambda g, x, y: KA.sigmoid_backward(g, y), torch.sigmoid, 1e-6),
    "tanh": (KA.tanh, lambda g, x, y: KA.tanh_backward(g, y), torch.tanh, 1e-6),
}


def inputs(rng, n, scale=4.0):
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    special = np.array([100, -100, 0.0, -0.0, 1e-8, -1e-8, 0.9277, -0.9277, 0.625, -0.625, 30, -30], np.float32)
    k = min(n, special.size)
    x[:k] = special[:k]
    return x


def torch_grad(tf, x, g):
    t = torch.tensor(x, requires_grad=True)
    y = tf(t)
    y.backward(torch.tensor(g))
    return y.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("name", list(ACTS))
@pytest.mark.parametrize("n", SIZES)
def test_activation_vs_torch(name, n, simd_path, rng):
    fwd, bwd, tf, atol = ACTS[name]
    x = inputs(rng, n)
    g = rng.standard_normal(n).astype(np.float32)
    y = fwd(x)
    y_ref, dx_ref = torch_grad(tf, x, g)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=atol)
    # Backward reads our own saved output. atol: gelu's derivative sums terms of size ~|x| whose float32
    # roundings differ from torch's by a few ulp (2e-6). gelu_tanh's uses 1 - tanh(u)^2, which float32
    # resolves only to ~1.2e-7 near |tanh| = 1: around x = -5 torch's tanh rounds to -1 and gives 0
    # where the exact value is ~-1.6e-6 and ours is within 3e-6 of it, hence 5e-6.
    np.testing.assert_allclose(bwd(g, x, y), dx_ref, rtol=1e-5, atol=5e-6 if name == "gelu_tanh" else 2e-6)


def test_gelu_close_to_float64(simd_path):
    x = np.linspace(-8, 8, 40001, dtype=np.float32)
    ref = TF.gelu(torch.tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(KA.gelu(x), ref, rtol=2e-7, atol=5e-7)
    ref_t = TF.gelu(torch.tensor(x, dtype=torch.float64), approximate="tanh").numpy()
    np.testing.assert_allclose(KA.gelu(x, "tanh"), ref_t, rtol=1e-6, atol=5e-7)


def test_sigmoid_tanh_close_to_float64(simd_path):
    x = np.linspace(-20, 20, 40001, dtype=np.float32)
    xd = torch.tensor(x, dtype=torch.float64)
    np.testing.assert_allclose(KA.sigmoid(x), torch.sigmoid(xd).numpy(), rtol=4e-7, atol=1e-30)
    np.testing.assert_allclose(KA.tanh(x), torch.tanh(xd).numpy(), rtol=4e-7, atol=1e-30)


def test_exp_near_the_top_of_the_float_range(simd_path):
    # exp(88.38..88.72) is finite: AVX2's 2^n scaling overflowed to inf there (n = 128), so sigmoid(-x) was
    # exactly 0 on that path only (the results here are subnormal: atol of a few subnormal steps)
    x = -np.linspace(88.0, 88.72, 4001, dtype=np.float32)
    y = KA.sigmoid(x)
    assert (y > 0).all()
    np.testing.assert_allclose(y, torch.sigmoid(torch.tensor(x, dtype=torch.float64)).numpy(), rtol=4e-7, atol=1e-44)


@pytest.mark.parametrize("name", list(ACTS))
def test_activation_nan_and_inf(name, simd_path):
    fwd, bwd, tf, _ = ACTS[name]
    x = np.array([np.nan, np.inf, -np.inf, 1.0] * 5, np.float32)  # 20: full vectors and a tail
    g = np.ones_like(x)
    ref = tf(torch.tensor(x)).numpy()
    if name == "gelu":
        ref[x == np.inf] = np.inf  # torch's vectorised erf gives NaN at +inf; the limit (ours) is +inf
    np.testing.assert_array_equal(fwd(x), ref)  # NaN where torch has NaN, the same limits at +-inf
    t = torch.tensor(x, requires_grad=True)
    tf(t).backward(torch.tensor(g))
    ours = bwd(g, x, fwd(x))
    # gelu at +-inf: torch's formula gives 0 * inf = NaN in places; compare where torch is finite or NaN-free
    fin = np.isfinite(x)
    np.testing.assert_allclose(ours[fin], t.grad.numpy()[fin], rtol=1e-6)
    assert np.isnan(ours[0]) == np.isnan(t.grad.numpy()[0])


def test_in_place_and_noncontiguous(rng):
    x = rng.standard_normal((9, 34)).astype(np.float32)
    ref = torch.tanh(torch.tensor(x)).numpy()
    v = x[:, ::2]  # non-contiguous: copied once
    np.testing.assert_allclose(KA.tanh(v), ref[:, ::2], rtol=1e-6, atol=1e-7)
    out = np.empty((34, 9), np.float32).T  # non-contiguous out
    KA.tanh(x, out=out)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)
    KA.tanh(x, out=x)  # in place
    np.testing.assert_allclose(x, ref, rtol=1e-6, atol=1e-7)


def test_column_sums(simd_path, rng):
    for shape in [(1, 1), (7, 15), (64, 17), (33, 130), (5, 0), (0, 9)]:
        x = rng.standard_normal(shape).astype(np.float32)
        ref = x.astype(np.float64).sum(0)
        np.testing.assert_allclose(KA.column_sums(x), ref, rtol=1e-5, atol=1e-5)


# ---- softmax ------------------------------------------------------------------------------
SM_SHAPES = [(1, 1), (3, 1), (5, 15), (7, 17), (2, 1000), (2, 100003), (2, 3, 33)]


@pytest.mark.parametrize("shape", SM_SHAPES)
@pytest.mark.parametrize("log", [False, True])
def test_softmax_vs_torch(shape, log, simd_path, rng):
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    x.reshape(-1)[:2] = [100, -100][: x.size]
    g = rng.standard_normal(shape).astype(np.float32)
    tf = TF.log_softmax if log else TF.softmax
    y_ref, dx_ref = torch_grad(lambda t: tf(t, -1), x, g)
    y = KS.log_softmax(x) if log else KS.softmax(x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    dx = KS.log_softmax_backward(g, y) if log else KS.softmax_backward(g, y)
    # log_softmax backward: g - exp(y) * sum(g); sum(g) over 100003 elements differs from torch's
    # summation order by ~1e-5 absolute, hence atol 2e-5 there.
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=2e-5 if x.shape[-1] > 10000 else 1e-6)


def test_softmax_extremes_and_nan(simd_path):
    x = np.array([[100, -100, 0, 50] + [0] * 13,      # 17 columns: a full vector and a tail
                  [-100] * 17,
                  [1e4] * 16 + [-1e4],
                  [np.nan] + [0] * 16,
                  [0] * 16 + [np.nan]], np.float32)
    for log, tf in [(False, TF.softmax), (True, TF.log_softmax)]:
        ours = KS.log_softmax(x) if log else KS.softmax(x)
        ref = tf(torch.tensor(x), -1).numpy()
        np.testing.assert_allclose(ours[:3], ref[:3], rtol=1e-5, atol=1e-6)
        assert np.isnan(ours[3:]).all() and np.isnan(ref[3:]).all()


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_op_any_dim(dim, rng):
    x = (rng.standard_normal((4, 5, 6)) * 3).astype(np.float32)
    g = rng.standard_normal((4, 5, 6)).astype(np.float32)
    for f, tf in [(F.softmax, TF.softmax), (F.log_softmax, TF.log_softmax)]:
        a = fg.tensor(x, requires_grad=True)
        y = f(a, dim)
        y.backward(g)
        y_ref, dx_ref = torch_grad(lambda t: tf(t, dim), x, g)
        np.testing.assert_allclose(y._data, y_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.grad._data, dx_ref, rtol=1e-5, atol=1e-6)


# ---- cross-entropy ------------------------------------------------------------------------
CE_SHAPES = [(1, 1), (5, 3), (17, 15), (64, 10), (33, 1000)]


@pytest.mark.parametrize("n,c", CE_SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_kernel_vs_torch(n, c, weighted, smoothing, simd_path, rng):
    z = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    z.reshape(-1)[:2] = [100, -100][: z.size]
    y = rng.integers(0, c, n)
    ii = 7 if c > 7 else -100  # 7: a valid class index used as the ignored one
    if n > 2:
        y[1] = ii
    w = rng.uniform(0.5, 2, c).astype(np.float32) if weighted else None
    loss, prob, loss_sum, wsum = KL.cross_entropy_forward(z, y, w, ignore_index=ii, label_smoothing=smoothing)
    zt = torch.tensor(z, requires_grad=True)
    ref = TF.cross_entropy(zt, torch.tensor(y), None if w is None else torch.tensor(w), ignore_index=ii,
                           reduction="none", label_smoothing=smoothing)
    np.testing.assert_allclose(loss, ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prob, TF.softmax(torch.tensor(z), 1).numpy(), rtol=1e-5, atol=1e-6)
    valid = (y != ii) & (y >= 0)
    np.testing.assert_allclose(loss_sum, loss.astype(np.float64).sum(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(wsum, (w[y[valid]] if weighted else np.ones(valid.sum())).sum(), rtol=1e-6)
    g = rng.standard_normal(n).astype(np.float32)
    ref.backward(torch.tensor(g))
    d = KL.cross_entropy_backward(prob, y, w, ii, smoothing, grad_loss=g, grad_scale=1.0)
    np.testing.assert_allclose(d, zt.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert not d[~valid].any()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_op_reductions(reduction, rng):
    z = (rng.standard_normal((19, 13)) * 2).astype(np.float32)
    y = rng.integers(0, 13, 19)
    y[4] = -100
    a = fg.tensor(z, requires_grad=True)
    out = F.cross_entropy(a, fg.tensor(y), reduction=reduction, label_smoothing=0.05)
    zt = torch.tensor(z, requires_grad=True)
    ref = TF.cross_entropy(zt, torch.tensor(y), reduction=reduction, label_smoothing=0.05)
    np.testing.assert_allclose(out._data, ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(out.shape).astype(np.float32) if out.ndim else None
    out.backward(g)
    ref.backward(None if g is None else torch.tensor(g))
    np.testing.assert_allclose(a.grad._data, zt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_cross_entropy_all_ignored_is_nan():
    z = np.zeros((3, 4), np.float32)
    y = np.full(3, -100)
    out = F.cross_entropy(fg.tensor(z), fg.tensor(y))
    assert np.isnan(out.item()) and np.isnan(TF.cross_entropy(torch.tensor(z), torch.tensor(y)).item())


def test_cross_entropy_nan_logits(simd_path):
    z = np.zeros((2, 17), np.float32)
    z[0, 16] = np.nan
    loss, prob, _, _ = KL.cross_entropy_forward(z, np.array([0, 1]))
    assert np.isnan(loss[0]) and np.isnan(prob[0]).all() and np.isfinite(loss[1])


# ---- bit-identity for any thread count ----------------------------------------------------
def test_bit_identical_across_threads(threads, simd_path, rng):
    x = inputs(rng, 300007)
    g = rng.standard_normal(x.size).astype(np.float32)
    z = (rng.standard_normal((1500, 37)) * 3).astype(np.float32)
    gz = rng.standard_normal(z.shape).astype(np.float32)
    y = rng.integers(0, 37, 1500)
    y[::7] = -100
    w = rng.uniform(0.5, 2, 37).astype(np.float32)
    m = rng.standard_normal((700, 300)).astype(np.float32)

    def run():
        outs = []
        for fwd, bwd, _, _ in ACTS.values():
            yv = fwd(x)
            outs += [yv, bwd(g, x, yv)]
        for log in (False, True):
            s = KS.log_softmax(z) if log else KS.softmax(z)
            outs += [s, KS.log_softmax_backward(gz, s) if log else KS.softmax_backward(gz, s)]
        loss, prob, ls, ws = KL.cross_entropy_forward(z, y, w, label_smoothing=0.1)
        outs += [loss, prob, np.array([ls, ws]), KL.cross_entropy_backward(prob, y, w, -100, 0.1, loss, 0.5)]
        outs.append(KA.column_sums(m))
        return outs

    assert_same_bits_across_threads(run, threads)


# ---- errors -------------------------------------------------------------------------------
def test_errors():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="x must"):
        KA.relu(x.astype(np.float64))
    with pytest.raises(TypeError, match="x must"):
        KA.relu([1.0, 2.0])
    with pytest.raises(ValueError, match="y must have the shape"):
        KA.relu_backward(x, np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        KA.sigmoid(x, out=np.empty(12, np.float32))
    with pytest.raises(ValueError, match="approximate"):
        KA.gelu(x, "fast")
    with pytest.raises(TypeError, match="negative_slope"):
        KA.leaky_relu(x, "0.1")
    with pytest.raises(ValueError, match="x must be 2-D"):
        KA.column_sums(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="grad must"):
        KS.softmax_backward(x.astype(np.float16), x)
    with pytest.raises(ValueError, match="y must have the shape"):
        KS.log_softmax_backward(x, x[:2])
    # the bindings check on their own (no crash when the wrappers are bypassed)
    with pytest.raises(ValueError, match="op must be"):
        _C.activation.act_forward(99, x, np.empty_like(x))
    with pytest.raises(ValueError, match="out must have shape"):
        _C.activation.act_forward(0, x, np.empty((2, 2), np.float32))
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        _C.softmax.softmax_forward(x.T, np.empty((4, 3), np.float32))
    with pytest.raises(ValueError, match="out must be writeable"):
        ro = np.empty_like(x)
        ro.flags.writeable = False
        _C.activation.act_forward(0, x, ro)


def test_cross_entropy_errors():
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(IndexError, match="target 4 is out of bounds for 4 classes"):
        KL.cross_entropy_forward(z, np.array([0, 4, 1]))
    with pytest.raises(IndexError, match="target -1 is out of bounds"):
        KL.cross_entropy_forward(z, np.array([0, -1, 1]))
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(fg.tensor(z), fg.tensor(np.array([0, 9, 1])))
    with pytest.raises(TypeError, match="target must hold integer"):
        KL.cross_entropy_forward(z, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"target must have shape \(3,\)"):
        KL.cross_entropy_forward(z, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        KL.cross_entropy_forward(z, np.zeros(3, np.int64), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="label_smoothing"):
        KL.cross_entropy_forward(z, np.zeros(3, np.int64), label_smoothing=1.5)
    with pytest.raises(ValueError, match="logits must be 2-D"):
        KL.cross_entropy_forward(np.zeros(4, np.float32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match=r"grad_loss must have shape \(3,\)"):
        KL.cross_entropy_backward(z, np.zeros(3, np.int64), grad_loss=np.ones(2, np.float32))
    with pytest.raises(IndexError, match="out of bounds"):
        _C.loss.cross_entropy_backward(z, np.array([0, 5, 0]), None, -100, 0.0, None, 1.0, np.empty_like(z))
    with pytest.raises(TypeError, match="target must be a int64"):
        _C.loss.cross_entropy_forward(z, np.zeros(3, np.int32), None, -100, 0.0, np.empty_like(z),
                                      np.empty(3, np.float32))
