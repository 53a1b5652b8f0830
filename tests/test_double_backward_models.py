"""Double backward in the uses it is for, against torch: the Hessian of a small MLP, Hessian-vector products, the
WGAN-GP gradient penalty, a physics-informed net's d2u/dx2, one MAML inner step; autograd.functional's results
against torch.autograd.functional's; and the engine's rules under create_graph (.grad with a graph, retain_graph's
default, hooks, no_grad, the error for an op without a differentiable rule)."""
import numpy as np
import pytest
import torch
import torch.autograd.functional as TAF

import forgegrad as fg
import forgegrad.autograd.functional as FAF
from forgegrad import autograd, nn


def _t(lib, arr, requires_grad=False):
    arr = np.asarray(arr)
    if lib == "torch":
        return torch.tensor(arr, requires_grad=requires_grad)
    return fg.tensor(arr, dtype=fg.float64 if arr.dtype == np.float64 else fg.float32, requires_grad=requires_grad)


def _np(t):
    return t.detach().numpy(force=True) if isinstance(t, torch.Tensor) else t.detach().numpy()


def _grad(lib):
    return torch.autograd.grad if lib == "torch" else autograd.grad


def _sequential(lib, sizes, act, dtype=np.float32, seed=0):
    """Linear layers of ``sizes`` with ``act`` between them, the same weights in both libraries."""
    rng = np.random.RandomState(seed)
    mod = torch.nn if lib == "torch" else nn
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = mod.Linear(a, b)
        lin.weight.data = _t(lib, (rng.randn(b, a) / np.sqrt(a)).astype(dtype))
        lin.bias.data = _t(lib, (rng.randn(b) * 0.1).astype(dtype))
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(getattr(mod, act)())
    return mod.Sequential(*layers)


def _close(a, b, dtype=np.float32):
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(a, b, **tol)


def _mlp_params(lib, dtype, seed=0):
    rng = np.random.RandomState(seed)
    shapes = [(6, 3), (6,), (4, 6), (4,), (1, 4), (1,)]
    return [_t(lib, (rng.randn(*s) * 0.7).astype(dtype), requires_grad=True) for s in shapes]


def _mlp(lib, x, w1, b1, w2, b2, w3, b3):
    F = torch.nn.functional if lib == "torch" else fg.nn.functional
    h = F.gelu(F.linear(x, w1, b1))
    h = F.silu(F.linear(h, w2, b2))
    return F.linear(h.tanh(), w3, b3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_hessian_of_a_small_mlp_loss_in_its_weights(dtype):
    x0 = np.random.RandomState(1).randn(5, 3).astype(dtype)
    y0 = np.random.RandomState(2).randn(5, 1).astype(dtype)
    out = {}
    for lib, F in (("torch", TAF), ("fg", FAF)):
        x, y = _t(lib, x0), _t(lib, y0)
        w1, b1, w2, b2, w3, b3 = (p.detach() for p in _mlp_params(lib, dtype))

        def loss(w2, b2, lib=lib, x=x, y=y, w1=w1, b1=b1, w3=w3, b3=b3):
            return ((_mlp(lib, x, w1, b1, w2, b2, w3, b3) - y) ** 2).mean()

        out[lib] = F.hessian(loss, (w2, b2))  # the middle layer's block: (w2, b2) x (w2, b2)
    for row_a, row_b in zip(out["fg"], out["torch"]):
        for a, b in zip(row_a, row_b):
            assert a.shape == tuple(b.shape)
            _close(_np(a), _np(b), dtype)


def test_hvp_by_double_backward_and_functional():
    x0 = np.random.RandomState(1).randn(7, 3).astype(np.float32)
    res = {}
    for lib in ("torch", "fg"):
        params = _mlp_params(lib, np.float32)
        loss = _mlp(lib, _t(lib, x0), *params).pow(2).mean()
        grads = _grad(lib)(loss, params, create_graph=True)
        vs = [_t(lib, np.random.RandomState(i).randn(*p.shape).astype(np.float32)) for i, p in enumerate(params)]
        hv = _grad(lib)(sum((g * v).sum() for g, v in zip(grads, vs)), params)
        F = TAF if lib == "torch" else FAF

        def f(*ps, lib=lib):
            return _mlp(lib, _t(lib, x0), *ps).pow(2).mean()

        _, hv2 = F.hvp(f, tuple(p.detach() for p in params), tuple(vs))
        _, vh = F.vhp(f, tuple(p.detach() for p in params), tuple(vs))
        res[lib] = [_np(t) for t in hv] + [_np(t) for t in hv2] + [_np(t) for t in vh]
    for a, b in zip(res["fg"], res["torch"]):
        _close(a, b)


@pytest.mark.parametrize("act", ["LeakyReLU", "Tanh"])
def test_wgan_gp_gradient_penalty(act):
    """WGAN-GP: the critic's gradient at interpolates, its norm's distance from 1 squared, differentiated into the
    critic's weights."""
    rng = np.random.RandomState(0)
    real, fake, eps = rng.randn(6, 5).astype(np.float32), rng.randn(6, 5).astype(np.float32), rng.rand(6, 1)
    grads = {}
    for lib in ("torch", "fg"):
        critic = _sequential(lib, [5, 16, 16, 1], act)
        e = _t(lib, eps.astype(np.float32))
        x = (e * _t(lib, real) + (1 - e) * _t(lib, fake)).detach().requires_grad_(True)
        (g,) = _grad(lib)(critic(x).sum(), x, create_graph=True)
        norm = ((g * g).sum(1) + 1e-12).sqrt()  # g.norm(2, dim=1)
        penalty = ((norm - 1) ** 2).mean() * 10
        loss = critic(_t(lib, fake)).mean() - critic(_t(lib, real)).mean() + penalty
        loss.backward()
        grads[lib] = [_np(penalty)] + [_np(p.grad) for p in critic.parameters()]
    for a, b in zip(grads["fg"], grads["torch"]):
        _close(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_pinn_second_derivative_residual(dtype):
    """u(x, t) a tanh MLP; the residual u_t - 0.1 u_xx needs d2u/dx2 by double backward, then its mean square is
    trained (a third order through tanh)."""
    pts = np.random.RandomState(3).rand(9, 2).astype(dtype)
    out = {}
    for lib in ("torch", "fg"):
        u_net = _sequential(lib, [2, 12, 12, 1], "Tanh", dtype)
        xt = _t(lib, pts, requires_grad=True)
        u = u_net(xt)
        (du,) = _grad(lib)(u.sum(), xt, create_graph=True)
        u_x, u_t = du[:, 0], du[:, 1]
        (d2,) = _grad(lib)(u_x.sum(), xt, create_graph=True)
        u_xx = d2[:, 0]
        loss = ((u_t - 0.1 * u_xx) ** 2).mean()
        loss.backward()
        # (the last bias does not reach u's derivatives: no gradient, in torch too)
        out[lib] = [_np(u_xx), _np(loss)] + [None if p.grad is None else _np(p.grad) for p in u_net.parameters()]
    for a, b in zip(out["fg"], out["torch"]):
        assert (a is None) == (b is None)
        if a is not None:
            _close(a, b, dtype)


def test_maml_one_inner_step():
    """MAML: adapted weights w' = w - a dL_support/dw (with its graph), the query loss at w' differentiated back to
    w through the inner gradient."""
    rng = np.random.RandomState(4)
    xs, ys, xq, yq = (rng.randn(8, 3).astype(np.float32), rng.randn(8, 1).astype(np.float32),
                      rng.randn(5, 3).astype(np.float32), rng.randn(5, 1).astype(np.float32))
    out = {}
    for lib in ("torch", "fg"):
        params = _mlp_params(lib, np.float32, seed=5)
        support = ((_mlp(lib, _t(lib, xs), *params) - _t(lib, ys)) ** 2).mean()
        grads = _grad(lib)(support, params, create_graph=True)
        fast = [p - 0.1 * g for p, g in zip(params, grads)]
        query = ((_mlp(lib, _t(lib, xq), *fast) - _t(lib, yq)) ** 2).mean()
        query.backward()
        out[lib] = [_np(query)] + [_np(p.grad) for p in params]
    for a, b in zip(out["fg"], out["torch"]):
        _close(a, b)


def test_functional_results_and_structure_match_torch():
    rng = np.random.RandomState(6)
    a0, b0 = rng.randn(3).astype(np.float64), rng.randn(3, 2).astype(np.float64)
    va, vb, vo = rng.randn(3), rng.randn(3, 2), rng.randn(2)
    res = {}
    for lib, F in (("torch", TAF), ("fg", FAF)):
        a, b = _t(lib, a0), _t(lib, b0)

        def vec(x, w):
            return (x @ w).tanh() * x.sum()

        def two(x, w):
            return (x @ w).sin(), x * x

        def scalar(x, w):
            return ((x @ w).tanh() ** 2).sum() + (x * x).sum().sqrt()

        r = [F.jacobian(vec, (a, b)), F.jacobian(two, (a, b)), F.jacobian(lambda x: x.exp() * x.sum(), a),
             F.hessian(scalar, (a, b)), F.hessian(lambda x: (x ** 3).sum() * x.sum(), a),
             F.vjp(vec, (a, b), _t(lib, vo)), F.jvp(vec, (a, b), (_t(lib, va), _t(lib, vb))),
             F.hvp(scalar, (a, b), (_t(lib, va), _t(lib, vb))), F.vhp(scalar, (a, b), (_t(lib, va), _t(lib, vb))),
             F.vjp(lambda x: (x * x).sum(), a), F.jacobian(lambda x, w: x.sum() * 2, (a, b))]
        res[lib] = r

    def walk(x, y):
        if isinstance(y, torch.Tensor):
            assert isinstance(x, fg.Tensor) and x.shape == tuple(y.shape)
            np.testing.assert_allclose(_np(x), _np(y), rtol=1e-10, atol=1e-12)
        else:
            assert isinstance(x, tuple) and len(x) == len(y), (x, y)
            for p, q in zip(x, y):
                walk(p, q)

    for x, y in zip(res["fg"], res["torch"]):
        walk(x, y)


def test_functional_create_graph_and_strict():
    x = fg.tensor([0.5, -1.0, 2.0], dtype=fg.float64, requires_grad=True)
    h = FAF.hessian(lambda t: (t ** 3).sum(), x, create_graph=True)
    assert h.grad_fn is not None  # the Hessian (diag 6x) itself differentiable: d(sum H)/dx = 6
    (d,) = autograd.grad(h.sum(), x)
    np.testing.assert_allclose(d.numpy(), [6.0, 6.0, 6.0])
    with pytest.raises(RuntimeError, match="independent of input 1"):
        FAF.jacobian(lambda p, q: p * 2, (x.detach(), x.detach()), strict=True)
    # vectorize=True: the same Jacobian (torch's vmapped one equals its loop); with strict, torch's refusal
    np.testing.assert_allclose(FAF.jacobian(lambda p: p.sin(), x, vectorize=True).numpy(),
                               FAF.jacobian(lambda p: p.sin(), x).numpy())
    with pytest.raises(RuntimeError, match="vectorized=True"):
        FAF.jacobian(lambda p: p, x, vectorize=True, strict=True)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")  # torch's reference-cycle note
def test_backward_create_graph_leaves_grad_with_a_graph_and_accumulates():
    for lib in ("torch", "fg"):
        w = _t(lib, np.array([0.3, -0.8, 1.2], np.float32), requires_grad=True)
        (w.sin() * w).sum().backward(create_graph=True)
        assert w.grad.grad_fn is not None and w.grad.requires_grad
        first = _np(w.grad).copy()
        (w * w).sum().backward(create_graph=True)  # accumulated out of place: the sum keeps both graphs
        (dd,) = _grad(lib)(w.grad.sum(), w)
        if lib == "torch":
            ref = (first, _np(w.grad), _np(dd))
        else:
            got = (first, _np(w.grad), _np(dd))
        w.grad = None
    for a, b in zip(got, ref):
        _close(a, b)


def test_retain_graph_defaults_to_create_graph():
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    autograd.grad(y, x, create_graph=True)
    autograd.grad(y, x)  # retained by create_graph: a second pass works (and frees it)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        autograd.grad(y, x)
    y = (x.exp() * x).sum()
    autograd.grad(y, x, create_graph=True, retain_graph=False)
    with pytest.raises(RuntimeError, match="second time"):
        autograd.grad(y, x)


@pytest.mark.parametrize("act", ["sin", "tanh"])  # a rule that reads the op's input, one that reads its output
def test_hooks_and_no_grad_under_create_graph(act):
    seen = {}
    for lib in ("torch", "fg"):
        x = _t(lib, np.array([0.5, 1.5, -2.0], np.float32), requires_grad=True)
        h = getattr(x, act)()
        # a non-leaf's hook scales the gradient flowing on, in the second pass too (tanh's rule reads h itself)
        h.register_hook(lambda g: g * 2)
        x.register_hook(lambda g: g + 1)  # a leaf's hook sees the summed gradient
        ctx = torch.no_grad() if lib == "torch" else fg.no_grad()
        y = (h * x).sum()
        with ctx:  # the backward graph is recorded under create_graph even inside no_grad, as torch's
            (g,) = _grad(lib)(y, x, create_graph=True)
        assert g.requires_grad
        (gg,) = _grad(lib)(g.sum(), x)
        seen[lib] = (_np(g), _np(gg))
    for a, b in zip(seen["fg"], seen["torch"]):
        _close(a, b)


def test_op_without_a_differentiable_rule_is_named():
    class Cube(autograd.Function):  # a user Function: its backward works on arrays only
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a ** 3

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            return 3 * a * a * g

    x = fg.tensor(np.random.RandomState(0).randn(2, 3, 4).astype(np.float32), requires_grad=True)
    y = Cube.apply(x.tanh()).sum()
    with pytest.raises(NotImplementedError, match="Function .*Cube has no differentiable backward rule"):
        autograd.grad(y, x, create_graph=True)
    # without create_graph the same graph backpropagates as always
    (g,) = autograd.grad(y, x)
    assert g.shape == x.shape and g.grad_fn is None


@pytest.mark.parametrize("p", [2, "fro", 1, 3, float("inf")])
def test_tensor_norm_and_its_second_derivative(p):
    x0 = np.random.RandomState(9).randn(4, 5).astype(np.float64)
    x0[2] = 0  # a zero row: the 2-norm's gradient there is 0 (torch's), not nan
    out = {}
    for lib in ("torch", "fg"):
        x = _t(lib, x0, requires_grad=True)
        n = x.norm(p, dim=1) if p != "fro" else x.norm()
        (g,) = _grad(lib)((n * n.detach() + n).sum(), x, create_graph=True)
        (gg,) = _grad(lib)((g * g).sum(), x)
        out[lib] = (_np(n), _np(g), _np(gg))
    for a, b in zip(out["fg"], out["torch"]):
        assert not np.isnan(a).any()
        rows = [0, 1, 3]  # at the zero row torch's second derivative of a root is nan, ours 0
        _close(a[rows] if a.ndim == 2 else a, b[rows] if b.ndim == 2 else b, np.float64)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")
def test_backward_inputs_and_retain_grad_under_create_graph():
    got = {}
    for lib in ("torch", "fg"):
        x = _t(lib, np.array([[0.5, -1.0], [2.0, 0.3]], np.float32), requires_grad=True)
        w = _t(lib, np.array([1.5, -0.5], np.float32), requires_grad=True)
        h = (x * w).sin()
        h.retain_grad()
        loss = (h * h).sum()
        backward = torch.autograd.backward if lib == "torch" else autograd.backward
        backward([loss], inputs=[w, h], create_graph=True)
        assert x.grad is None and w.grad.grad_fn is not None
        (dw,) = _grad(lib)(w.grad.sum() + h.grad.sum(), w)
        got[lib] = (_np(w.grad), _np(h.grad), _np(dw))
    for a, b in zip(got["fg"], got["torch"]):
        _close(a, b)


def test_indexed_assignment_under_create_graph():
    got = {}
    for lib in ("torch", "fg"):
        x = _t(lib, np.array([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]], np.float32), requires_grad=True)
        v = _t(lib, np.array([0.2, -0.4], np.float32), requires_grad=True)
        h = x.tanh() * 1
        h[:, 1] = v.sin() * x[:, 0]
        (gx, gv) = _grad(lib)((h * h).sum(), [x, v], create_graph=True)
        (ddx, ddv) = _grad(lib)((gx * gx).sum() + gv.sum(), [x, v])
        got[lib] = [_np(t) for t in (gx, gv, ddx, ddv)]
    for a, b in zip(got["fg"], got["torch"]):
        _close(a, b)


def test_wgan_gp_on_a_convolutional_critic():
    """DCGAN-style critic (strided conv, average pool, LeakyReLU): the gradient penalty through conv2d twice, and a
    third derivative of conv2d, against torch."""
    rng = np.random.RandomState(10)
    x0 = rng.randn(3, 2, 9, 9)
    w1, b1, w2 = rng.randn(4, 2, 3, 3) * 0.4, rng.randn(4) * 0.1, rng.randn(6, 2, 3, 3) * 0.4
    out = {}
    for lib in ("torch", "fg"):
        F = torch.nn.functional if lib == "torch" else fg.nn.functional
        x = _t(lib, x0, requires_grad=True)
        p1, q1, p2 = (_t(lib, a, requires_grad=True) for a in (w1, b1, w2))

        def critic(t, F=F, p1=p1, q1=q1, p2=p2):
            h = F.leaky_relu(F.conv2d(t, p1, q1, stride=1, padding=1), 0.2)
            h = F.max_pool2d(h, 3, stride=2, padding=1)  # overlapping windows: an input may win twice
            h = F.conv2d(h, p2, None, padding=1, dilation=2, groups=2)
            return F.avg_pool2d(h.tanh(), 2).sum((1, 2, 3)) + F.adaptive_avg_pool2d(h, 1).sum((1, 2, 3))

        (g,) = _grad(lib)(critic(x).sum(), x, create_graph=True)
        penalty = ((g.norm(2, dim=(1, 2, 3)) - 1) ** 2).mean()
        gs = _grad(lib)(penalty, [p1, q1, p2, x], create_graph=True)
        third = _grad(lib)(sum((t * t).sum() for t in gs), [p1, p2, x])
        out[lib] = [_np(penalty)] + [_np(t) for t in gs] + [_np(t) for t in third]
    for a, b in zip(out["fg"], out["torch"]):
        _close(a, b, np.float64)


def test_user_function_with_a_differentiable_backward():
    class Cube(autograd.Function):
        handles_float64 = True  # (its numpy code computes in its input's dtype)

        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a ** 3

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            return 3 * a * a * g

        @staticmethod
        def differentiable_backward(ctx, args, kwargs, g):  # the same with Tensor ops, for create_graph
            return 3 * args[0] * args[0] * g

    x = fg.tensor([0.5, -1.5, 2.0], dtype=fg.float64, requires_grad=True)
    (g,) = autograd.grad(Cube.apply(x.sin()).sum(), x, create_graph=True)
    (gg,) = autograd.grad(g.sum(), x)
    xt = torch.tensor([0.5, -1.5, 2.0], dtype=torch.float64, requires_grad=True)
    (gt,) = torch.autograd.grad((xt.sin() ** 3).sum(), xt, create_graph=True)
    (ggt,) = torch.autograd.grad(gt.sum(), xt)
    _close(_np(g), _np(gt), np.float64)
    _close(_np(gg), _np(ggt), np.float64)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_recurrent_module_gradient_penalty(kind):
    """A two-layer bidirectional recurrent net: the input gradient with create_graph, its square differentiated
    into the weights, against torch."""
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(3, 4, num_layers=2, bidirectional=True).double()
    net = getattr(nn, kind)(3, 4, num_layers=2, bidirectional=True)
    for name, p in ref.named_parameters():
        getattr(net, name).data = fg.tensor(p.detach().numpy().copy(), dtype=fg.float64)
    x0 = np.random.RandomState(11).randn(5, 2, 3)
    out = {}
    for lib, m in (("torch", ref), ("fg", net)):
        x = _t(lib, x0, requires_grad=True)
        y = m(x)[0]
        (g,) = _grad(lib)((y * y).sum(), x, create_graph=True)
        (g * g).sum().backward()
        names = [n for n, _ in ref.named_parameters()]
        params = dict(m.named_parameters())
        out[lib] = [_np(g)] + [_np(params[n].grad) for n in names]
    for a, b in zip(out["fg"], out["torch"]):
        _close(a, b, np.float64)


def _gpt_penalty(dtype):
    """The zoo GPT's loss, its gradient in the attention projection (create_graph) and the gradient of that
    gradient's squared norm: float32 runs the fused packed attention, float64 the composed ops."""
    from forgegrad.models.transformer import GPT
    fg.manual_seed(0)
    model = GPT(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=16)
    if dtype == np.float64:
        model = model.double()
    ids = fg.tensor(np.array([[1, 5, 7, 2, 9], [3, 3, 0, 8, 4]]))
    loss = nn.functional.cross_entropy(model(ids).reshape(-1, 40), fg.tensor(np.arange(10) % 40))
    w = model.transformer.h[0].attn.c_attn.weight
    (g,) = autograd.grad(loss, [w], create_graph=True)
    (gg,) = autograd.grad((g * g).sum(), [w])
    return _np(g).astype(np.float64), _np(gg).astype(np.float64)


def test_gpt_fused_attention_has_a_second_derivative():
    # (the packed causal attention kernel had no differentiable rule: create_graph through the zoo GPT raised)
    for a, b in zip(_gpt_penalty(np.float32), _gpt_penalty(np.float64)):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5 * np.abs(b).max())
