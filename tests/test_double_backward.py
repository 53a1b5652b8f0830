"""Double backward op by op, against torch: for each op with a differentiable rule, the first gradient taken with
create_graph=True and the gradient of that gradient (of a random projection of it), in float32 and float64, on
odd shapes with broadcasting. Each case is written once and run in both libraries."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import forgegrad as fg
import forgegrad.nn.functional as FF
from forgegrad import autograd


def _softplus(m, x):  # as users write it where no softplus op exists
    return (x.exp() + 1).log()


# name -> (fn(lib, F, *xs), input shapes, "pos": positive inputs)
CASES = {
    "add_broadcast": (lambda m, F, a, b: (a + b) * a, [(3, 5), (5,)], False),
    "sub_broadcast": (lambda m, F, a, b: (a - b) * (a - b), [(2, 3, 4), (3, 1)], False),
    "mul_scalar": (lambda m, F, a, b: a * b * 1.5 * a, [(4, 3), (1, 3)], False),
    "div": (lambda m, F, a, b: a / b + 2.0 / b, [(3, 4), (4,)], True),
    "neg": (lambda m, F, a: -(a * a * a), [(7,)], False),
    "pow_number": (lambda m, F, a: a ** 3 + a ** 0.5, [(3, 2)], True),
    "pow_tensor": (lambda m, F, a, b: a ** b + 2.0 ** b, [(3, 4), (4,)], True),
    "sqrt_exp_log": (lambda m, F, a: a.sqrt() * a.exp() + a.log() * a, [(5, 3)], True),
    "abs": (lambda m, F, a: a.abs() * a * a, [(3, 5)], False),
    "sin_cos": (lambda m, F, a: a.sin() * a.cos() + a.sin() ** 2, [(2, 7)], False),
    "tanh": (lambda m, F, a: a.tanh() * a, [(3, 5)], False),
    "sigmoid": (lambda m, F, a: a.sigmoid() * a, [(3, 5)], False),
    "relu": (lambda m, F, a: a.relu() * a.relu() * a, [(4, 5)], False),
    "leaky_relu": (lambda m, F, a: F.leaky_relu(a, 0.2) * a, [(4, 5)], False),
    "gelu": (lambda m, F, a: F.gelu(a) * a, [(3, 5)], False),
    "gelu_tanh": (lambda m, F, a: F.gelu(a, approximate="tanh") * a, [(3, 5)], False),
    "silu": (lambda m, F, a: F.silu(a) * a, [(3, 5)], False),
    "softplus_composed": (lambda m, F, a: _softplus(m, a) * a, [(3, 5)], False),
    "clamp": (lambda m, F, a: a.clamp(-0.5, 0.7) * a, [(4, 6)], False),
    "where": (lambda m, F, a, b: m.where(a > 0, a * a, b * a), [(3, 4), (4,)], False),
    "matmul": (lambda m, F, a, b: (a @ b).tanh(), [(3, 5), (5, 2)], False),
    "matmul_batch_broadcast": (lambda m, F, a, b: (a @ b).sin(), [(2, 3, 4), (4, 5)], False),
    "matmul_vector": (lambda m, F, a, b: (a @ b) * (a @ b), [(4,), (2, 4, 3)], False),
    "bmm": (lambda m, F, a, b: m.bmm(a, b).tanh(), [(2, 3, 4), (2, 4, 5)], False),
    "linear": (lambda m, F, x, w, b: F.linear(x, w, b).tanh(), [(2, 3, 4), (5, 4), (5,)], False),
    "sum_mean_dims": (lambda m, F, a: a.sum(1) * a.mean((0, 2), keepdim=True).sum() + a.sum() * a.mean(),
                      [(2, 3, 4)], False),
    "broadcast_reduce": (lambda m, F, a, b: ((a * b).sum(0, keepdim=True) * b).mean(), [(3, 1, 4), (5, 1)], False),
    "amax": (lambda m, F, a: a.amax(1) * a.sum(1), [(3, 5)], False),
    "max_dim": (lambda m, F, a: a.max(1)[0] * a.min(0)[0].sum(), [(3, 5)], False),
    "var_std": (lambda m, F, a: a.var(1) * a.std(0).sum(), [(4, 5)], False),
    "cumsum": (lambda m, F, a: a.cumsum(1) * a, [(3, 4)], False),
    "shapes": (lambda m, F, a: (a.reshape(4, 6).transpose(0, 1).permute(1, 0).view(2, 12).unsqueeze(0)
                                .expand(3, 2, 12) * a.reshape(1, 2, 12)).tanh(), [(2, 3, 4)], False),
    "index_slice_select": (lambda m, F, a: a[1:, ::2] * a[0][None, ::2] + a[:, 1:2].sum(), [(4, 5)], False),
    "index_advanced_repeats": (lambda m, F, a: a[[0, 2, 0]] * a[[1, 1, 3]], [(4, 3)], False),
    # cat's output (4, 3) times the stack's sum (2, 3) tiled by cat
    "cat_stack": (lambda m, F, a, b: m.cat([a, b * a], 0) * m.cat([m.stack([a, b, a], 1).sum(1)] * 2, 0),
                  [(2, 3), (2, 3)], False),
    "softmax": (lambda m, F, a: F.softmax(a, dim=1) * a, [(3, 5)], False),
    "log_softmax": (lambda m, F, a: F.log_softmax(a, dim=0) * a, [(4, 3)], False),
    "mse_loss": (lambda m, F, a, b: F.mse_loss(a.tanh(), b) + F.mse_loss(a, b, reduction="sum"), [(3, 4), (3, 4)],
                 False),
    "l1_loss": (lambda m, F, a, b: F.l1_loss(a * a, b) * a.sum(), [(3, 4), (3, 4)], False),
    "rms_norm": (lambda m, F, x, w: F.rms_norm(x, (2, 3), w, eps=1e-6) * x, [(4, 2, 3), (2, 3)], False),
    "amin_clone_cast": (lambda m, F, a: a.amin(0, keepdim=True) * a.clone().double().float() * a, [(3, 4)], False),
    "layer_norm": (lambda m, F, x, w, b: F.layer_norm(x, (5,), w, b) * x, [(3, 5), (5,), (5,)], False),
    "bce_with_logits": (lambda m, F, x, t: F.binary_cross_entropy_with_logits(x, t.sigmoid()) * x.sum(),
                        [(3, 4), (3, 4)], False),
}


def _lib(name):
    return (torch, TF) if name == "torch" else (fg, FF)


def _inputs(shapes, pos, dtype, seed):
    rng = np.random.RandomState(seed)
    out = []
    for s in shapes:
        x = rng.uniform(0.3, 1.7, s) if pos else rng.randn(*s)
        out.append(x.astype(dtype))
    return out


def _tensor(lib, arr, requires_grad=True):
    if lib == "torch":
        return torch.tensor(arr, requires_grad=requires_grad)
    return fg.tensor(arr, dtype=fg.float64 if arr.dtype == np.float64 else fg.float32, requires_grad=requires_grad)


def _np(t):
    return None if t is None else t.detach().numpy()


def second_order(lib, fn, arrays, seed=1):
    """(y, dL/dx, d(dL/dx . v)/dx) for L = sum(y * c): the gradient with create_graph, then its gradient."""
    m, F = _lib(lib)
    xs = [_tensor(lib, a) for a in arrays]
    y = fn(m, F, *xs)
    rng = np.random.RandomState(seed)
    c = _tensor(lib, np.asarray(rng.randn(*y.shape), arrays[0].dtype), requires_grad=False)
    grad = torch.autograd.grad if lib == "torch" else autograd.grad
    gs = grad((y * c).sum(), xs, create_graph=True)
    vs = [_tensor(lib, rng.randn(*a.shape).astype(a.dtype), requires_grad=False) for a in arrays]
    proj = sum((g * v).sum() for g, v in zip(gs, vs))
    gg = grad(proj, xs, allow_unused=True)
    return _np(y), [_np(g) for g in gs], [_np(g) for g in gg]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_grad_of_grad_matches_torch(name, dtype):
    fn, shapes, pos = CASES[name]
    arrays = _inputs(shapes, pos, dtype, seed=len(name))
    got, ref = second_order("fg", fn, arrays), second_order("torch", fn, arrays)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(got[0], ref[0], **tol)
    for a, b in zip(got[1], ref[1]):
        np.testing.assert_allclose(a, b, **tol)
    for a, b in zip(got[2], ref[2]):
        if b is None or a is None:  # an input whose gradient does not depend on it: torch None, ours zeros or None
            assert a is None or not np.any(a), (a, b)
            assert b is None or not np.any(b), (a, b)
            continue
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["index", "index_weight_ignore_smoothing", "probabilities", "nll_spatial"])
def test_cross_entropy_grad_of_grad(kind, dtype):
    rng = np.random.RandomState(3)
    logits = rng.randn(5, 4).astype(dtype)
    target = np.array([0, 3, 1, 3, 2])
    weight = np.array([0.5, 1.0, 2.0, 1.5], dtype)
    if kind == "index":
        def fn(m, F, x):
            return F.cross_entropy(x * x, _tensor_of(m, target))
    elif kind == "index_weight_ignore_smoothing":
        def fn(m, F, x):
            return F.cross_entropy(x.tanh() * 3, _tensor_of(m, np.array([0, 3, -100, 3, 2])),
                                   weight=_tensor_of(m, weight), ignore_index=-100, label_smoothing=0.1)
    elif kind == "probabilities":
        probs = rng.dirichlet(np.ones(4), 5).astype(dtype)

        def fn(m, F, x):
            return F.cross_entropy(x * x, _tensor_of(m, probs), reduction="sum")
    else:
        logits = rng.randn(2, 4, 3).astype(dtype)
        tgt = np.array([[0, 3, 1], [2, 2, 0]])

        def fn(m, F, x):
            return F.nll_loss(F.log_softmax(x.sin(), dim=1), _tensor_of(m, tgt), reduction="none")
    got, ref = second_order("fg", fn, [logits]), second_order("torch", fn, [logits])
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-10)
    for a, b in zip([got[0]] + got[1] + got[2], [ref[0]] + ref[1] + ref[2]):
        np.testing.assert_allclose(a, b, **tol)


def _tensor_of(m, arr):
    return torch.tensor(arr) if m is torch else fg.tensor(arr, dtype=fg.float64 if arr.dtype == np.float64 else None)


def test_third_derivative_of_tanh_and_gelu():
    for act in ("tanh", "gelu"):
        vals = []
        for lib in ("fg", "torch"):
            m, F = _lib(lib)
            x = _tensor(lib, np.linspace(-2, 2, 7))
            grad = torch.autograd.grad if lib == "torch" else autograd.grad
            y = getattr(F, act)(x).sum()
            (d1,) = grad(y, x, create_graph=True)
            (d2,) = grad(d1.sum(), x, create_graph=True)
            (d3,) = grad(d2.sum(), x)
            vals.append([_np(d1), _np(d2), _np(d3)])
        for a, b in zip(*vals):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_dropout_grad_of_grad_uses_its_mask():
    x0 = np.random.RandomState(7).randn(4, 6).astype(np.float32)
    x = fg.tensor(x0, requires_grad=True)
    y = FF.dropout(x, p=0.4)
    mask = y.detach().numpy() / x0  # the kept elements scaled by 1 / (1 - p), the dropped ones 0
    (g,) = autograd.grad((y * x).sum(), x, create_graph=True)
    (gg,) = autograd.grad((g * g).sum(), x)
    xt = torch.tensor(x0, requires_grad=True)
    (gt,) = torch.autograd.grad((xt * torch.tensor(mask) * xt).sum(), xt, create_graph=True)
    (ggt,) = torch.autograd.grad((gt * gt).sum(), xt)
    np.testing.assert_allclose(g.detach().numpy(), gt.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gg.numpy(), ggt.numpy(), rtol=1e-5, atol=1e-6)


def test_embedding_grad_of_grad():
    idx = np.array([[1, 3, 1], [0, 2, 3]])
    w0 = np.random.RandomState(8).randn(5, 4).astype(np.float32)
    got = []
    for lib in ("fg", "torch"):
        w = _tensor(lib, w0)
        if lib == "fg":
            e = fg.ops.get("embedding")(w, fg.tensor(idx), padding_idx=3)
        else:
            e = TF.embedding(torch.tensor(idx), w, padding_idx=3)
        grad = torch.autograd.grad if lib == "torch" else autograd.grad
        (g,) = grad((e.tanh() * e).sum(), w, create_graph=True)
        (gg,) = grad((g * g).sum(), w)
        got.append((_np(g), _np(gg)))
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_second_and_third_derivative_through_a_scalar_pick():
    # x[1] is 0-d: the gradient of its scatter came back 1-d and the second pass raised a shape error
    def run(lib):
        x = _tensor(lib, np.array([1.0, 2.0, 3.0]))
        grad = torch.autograd.grad if lib == "torch" else autograd.grad
        (g,) = grad(x[1] ** 3 + x[2] * x[0], [x], create_graph=True)
        (gg,) = grad((g * g).sum(), [x], create_graph=True)
        (ggg,) = grad(gg.sum(), [x])
        return [_np(t) for t in (g, gg, ggg)]

    for a, b in zip(run("fg"), run("torch")):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_dot_product_and_zero_d_power_differentiated_twice():
    # a 1-D @ 1-D product (a 0-d gradient: the float64 array rule and the differentiable one both raised) and a
    # 0-d base ** 0-d exponent (its log mask a numpy bool) raised
    def run(lib):
        a, b = _tensor(lib, np.array([0.3, -1.2, 2.0])), _tensor(lib, np.array([1.5, 0.4, -0.7]))
        s, e = _tensor(lib, np.array(0.7)), _tensor(lib, np.array(2.5))
        grad = torch.autograd.grad if lib == "torch" else autograd.grad
        gs = grad((a @ b) ** 3 + s ** e, [a, b, s, e], create_graph=True)
        ggs = grad(sum((g * g).sum() for g in gs), [a, b, s, e])
        return [_np(t) for t in gs + ggs]

    for a, b in zip(run("fg"), run("torch")):
        np.testing.assert_allclose(a, b, rtol=1e-12)
