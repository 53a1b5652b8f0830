"""forgegrad.func.vmap's batched path (batching rules, func/_batch_rules.py) against torch.func 2.13 on odd
shapes, with which path each call took: per-sample gradients of an MLP, a LayerNorm MLP and a small CNN,
elementwise broadcasting, reductions, shapes and indexing, matmul variants, losses, in_dims/out_dims,
chunk_size, nested transforms, randomness, and the cases that must fall back to the loop (results still right)."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.func as ff
from forgegrad import autograd as fg_autograd
from forgegrad.func import _vmap
from test_func_transforms import _close, _lib, _np, _t

R = np.random.default_rng(17)
X = R.standard_normal((5, 3, 4))
W = R.standard_normal((4, 6))
V = R.standard_normal((4,))
V5 = R.standard_normal((5, 4))


def _paths(run_fg):
    before = dict(_vmap.stats)
    out = run_fg()
    return out, _vmap.stats["batched"] - before["batched"], _vmap.stats["loop"] - before["loop"]


def _check(run, tol=1e-10, batched=None, loops=0):
    """run(lib) on both libraries, compared leaf by leaf; ``batched``/``loops``: how many forgegrad vmap calls
    must have taken each path (None: at least one batched, no loop)."""
    got, nb, nl = _paths(lambda: _np(run("fg")))
    _close(got, _np(run("torch")), tol)
    assert nl == loops, f"{nl} vmap calls looped (last: {_vmap.stats['why']})"
    assert nb >= 1 if batched is None else nb == batched
    assert fg_autograd._batch_hook is None


def _loop_only(monkeypatch):
    monkeypatch.setattr(_vmap, "_try_batched", lambda *a, **k: _vmap._LOOP)


# ---- per-sample gradients ---------------------------------------------------------------------------------
def _mlp(lib, norm: bool):
    m = fg if lib == "fg" else torch
    r = np.random.default_rng(3)
    layers = [m.nn.Linear(7, 13)] + ([m.nn.LayerNorm(13)] if norm else []) + [m.nn.GELU(), m.nn.Linear(13, 5)]
    net = m.nn.Sequential(*layers)
    with (fg.no_grad() if lib == "fg" else torch.no_grad()):
        for p in net.parameters():
            p.copy_(_t(lib, (r.standard_normal(tuple(p.shape)) * 0.6).astype(np.float32)))
    return net


def _cnn(lib):
    m = fg if lib == "fg" else torch
    r = np.random.default_rng(4)
    net = m.nn.Sequential(m.nn.Conv2d(2, 4, 3, padding=1), m.nn.ReLU(), m.nn.Conv2d(4, 4, 2, groups=2),
                          m.nn.Tanh(), m.nn.MaxPool2d(2), m.nn.Flatten(), m.nn.Linear(4 * 2 * 2, 3),
                          m.nn.LogSoftmax(-1))
    with (fg.no_grad() if lib == "fg" else torch.no_grad()):
        for p in net.parameters():
            p.copy_(_t(lib, (r.standard_normal(tuple(p.shape)) * 0.5).astype(np.float32)))
    return net


def _norm_cnn(lib):
    m = fg if lib == "fg" else torch
    net = m.nn.Sequential(m.nn.Conv2d(2, 4, 3, padding=1), m.nn.BatchNorm2d(4), m.nn.GroupNorm(2, 4), m.nn.ReLU(),
                          m.nn.Flatten(), m.nn.Linear(4 * 5 * 6, 3), m.nn.LogSoftmax(-1))
    with (fg.no_grad() if lib == "fg" else torch.no_grad()):
        for i, (_, t) in enumerate(sorted(net.state_dict().items())):
            if t.dtype == (fg.float32 if lib == "fg" else torch.float32):
                t.copy_(_t(lib, (np.abs(np.random.default_rng(i).standard_normal(tuple(t.shape))) * 0.3 + 0.2)
                           .astype(np.float32)))
    return net.eval()  # batch_norm with its running statistics (in training mode vmap loops, torch refuses)


@pytest.mark.parametrize("kind", ["mlp", "layernorm", "cnn", "norms"])
@pytest.mark.parametrize("live", [False, True], ids=["detached", "live"])
def test_per_sample_gradients(kind, live):
    r = np.random.default_rng(5)
    conv = kind in ("cnn", "norms")
    xs = r.standard_normal((9, 2, 5, 6) if conv else (9, 7)).astype(np.float32)
    ys = r.integers(0, 3 if conv else 5, 9)

    def run(lib):
        m, F = _lib(lib)
        net = {"cnn": _cnn, "norms": _norm_cnn}[kind](lib) if conv else _mlp(lib, kind == "layernorm")
        params = {k: (v if live else v.detach()) for k, v in net.named_parameters()}
        buffers = dict(net.named_buffers())
        lossf = m.nn.functional.nll_loss if conv else m.nn.functional.cross_entropy

        def loss(p, x, y):
            return lossf(F.functional_call(net, (p, buffers), (x[None],)), y[None])

        grads, values = F.vmap(F.grad_and_value(loss), in_dims=(None, 0, 0))(params, _t(lib, xs), _t(lib, ys))
        return grads, values
    _check(run, tol=3e-5)


def test_per_sample_gradients_equal_the_loop(monkeypatch):
    net = _mlp("fg", True)
    xs, ys = fg.tensor(X.reshape(5, 12)[:, :7].astype(np.float32)), fg.tensor(np.array([0, 4, 2, 2, 1]))
    f = ff.vmap(ff.grad(lambda p, x, y: fg.nn.functional.cross_entropy(ff.functional_call(net, p, (x,)), y)),
                in_dims=(None, 0, 0))
    params = {k: v.detach() for k, v in net.named_parameters()}
    batched, nb, _ = _paths(lambda: _np(f(params, xs, ys)))
    assert nb == 1
    _loop_only(monkeypatch)
    _close(batched, _np(f(params, xs, ys)), 1e-5)


# ---- op families --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_dims,out_dims", [((1, None, 0), 0), ((1, None, 0), 1), ((-1, None, 0), -1),
                                              ((1, 0, None), (2, 0))])
def test_elementwise_broadcasting(in_dims, out_dims):
    def run(lib):
        m, F = _lib(lib)
        x = _t(lib, X.transpose(1, 0, 2)) if in_dims[0] == 1 else _t(lib, X.transpose(1, 2, 0))
        v = _t(lib, V) if in_dims[1] is None else _t(lib, V5)
        z = _t(lib, X[:, :, 0]) if in_dims[2] == 0 else _t(lib, X[0, :, 0])

        def f(a, b, c):
            y = a * b + c.unsqueeze(-1) - 2.0
            y = m.where(y > 0, y.exp(), y ** 2) + m.maximum(a, b).clamp(-0.5, 0.7)
            return y.tanh() / (1 + y.sigmoid()), (3 - c).relu()
        return F.vmap(f, in_dims=in_dims, out_dims=out_dims)(x, v, z)
    _check(run)


def test_reductions():
    def run(lib):
        m, F = _lib(lib)

        def f(a):
            return (a.sum(), a.sum(1), a.sum((0, -1), keepdim=True), a.mean(-1), a.amax(0), a.logsumexp(1),
                    a.softmax(0), m.nn.functional.log_softmax(a, -1), a.std(1), a.var(), a.max(1)[0],
                    a.max(1)[1], a.cumsum(0), a.prod(1), a.argmax(), a.argmin(1, keepdim=True),
                    a.mean(keepdim=True, dim=None) if lib == "fg" else a.mean().reshape(1, 1), a.sum(1).sum())
        return F.vmap(f)(_t(lib, X))
    _check(run)


def test_shapes_and_indexing():
    def run(lib):
        m, F = _lib(lib)
        c = _t(lib, X[0])

        def f(a):
            return (a.reshape(-1), a.view(2, 6), a.flatten(), a.transpose(0, 1), a.permute(1, 0), a.T,
                    a.unsqueeze(1).squeeze(1), a[..., 1:3], a[None, 0], a[1, ::2], a[:, -1], a[None].expand(2, 3, 4),
                    m.stack([a, c, a], 1), m.cat([a, c], -1), a.unbind(1)[2], a.chunk(2, 1)[1], a.movedim(0, 1))
        return F.vmap(f)(_t(lib, X))
    _check(run)


def test_matmul_variants():
    def run(lib):
        m, F = _lib(lib)
        w, v, x = _t(lib, W), _t(lib, V), _t(lib, X)
        f = lambda a, b: (a @ w, v @ a.T, a @ v, a[0] @ v, a[0] @ a[1], a @ a.T @ a, w.T @ b, b @ b,  # noqa: E731
                          m.einsum("ij,jk->ik", a, w), m.bmm(a[None], a.T[None]), m.nn.functional.linear(a, w.T, b @ w),
                          m.matmul(a[None, None], w))
        return F.vmap(f)(x, _t(lib, X[:, 0]))
    _check(run)


def test_ensemble_linear_with_batched_weights():
    r = np.random.default_rng(8)
    ws, bs, x = r.standard_normal((3, 5, 4)), r.standard_normal((3, 5)), r.standard_normal((2, 7, 4))

    def run(lib):
        m, F = _lib(lib)
        lin = m.nn.functional.linear
        return (F.vmap(lin, in_dims=(None, 0, 0))(_t(lib, x), _t(lib, ws), _t(lib, bs)),
                F.vmap(lin, in_dims=(None, 0, None))(_t(lib, x[0]), _t(lib, ws), _t(lib, bs[0])),
                F.vmap(lin, in_dims=(1, None, 0))(_t(lib, x[:, :3]), _t(lib, ws[0]), _t(lib, bs)))
    _check(run)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses(reduction):
    r = np.random.default_rng(12)
    logits, logits3 = r.standard_normal((6, 4, 5)), r.standard_normal((6, 3, 5, 2))
    tgt, tgt3 = r.integers(0, 5, (6, 4)), r.integers(0, 5, (6, 3, 2))
    tgt[2, 1] = tgt[4, :2] = 3
    probs = np.abs(r.standard_normal((6, 4, 5)))
    probs /= probs.sum(-1, keepdims=True)
    a, b = r.standard_normal((6, 3, 2)), r.standard_normal((6, 3, 2))

    def run(lib):
        m, F = _lib(lib)
        nf = m.nn.functional
        kw = {"reduction": reduction}

        def f(lg, t, lg3, t3, p, x, y):
            return (nf.cross_entropy(lg, t, ignore_index=3, **kw), nf.cross_entropy(lg, t, label_smoothing=0.2, **kw),
                    nf.cross_entropy(lg3, t3, **kw), nf.cross_entropy(lg, p, **kw), nf.cross_entropy(lg[0], t[0], **kw),
                    nf.nll_loss(nf.log_softmax(lg, -1), t, ignore_index=3, **kw), nf.mse_loss(x, y, **kw),
                    nf.l1_loss(x, y, **kw), nf.smooth_l1_loss(x, y, beta=0.5, **kw),
                    nf.binary_cross_entropy_with_logits(x, y.sigmoid(), **kw), nf.kl_div(x, y.exp(), **kw),
                    nf.huber_loss(x, y, **kw))
        args = [_t(lib, v) for v in (logits, tgt, logits3, tgt3, probs, a, b)]
        return F.vmap(f)(*args)
    _check(run)


def test_plain_outputs_pytrees_and_kwargs():
    def run(lib):
        m, F = _lib(lib)
        w = _t(lib, W)

        def f(d, scale=1.0):
            return {"y": (d["x"] @ w) * scale + d["b"][0], "w": w * 2}, d["b"][1]
        inp = {"x": _t(lib, X), "b": [_t(lib, X[:, 0, :1]), 3.5]}
        return F.vmap(f, in_dims=({"x": 1, "b": [0, None]},), out_dims=({"y": -1, "w": 0}, None))(
            {"x": inp["x"].transpose(0, 1), "b": inp["b"]}, scale=0.5)
    _check(run)


def test_chunk_size():
    def run(lib):
        m, F = _lib(lib)
        return F.vmap(lambda a, b: (a.sin() @ b, a.sum(0)), in_dims=(0, None), out_dims=(1, 0), chunk_size=2)(
            _t(lib, X), _t(lib, W))
    _check(run)


# ---- nesting ------------------------------------------------------------------------------------------------
def test_nested_transforms():
    def f(lib, v):
        return (v.sin() * v.sum()).tanh()

    def run(lib):
        m, F = _lib(lib)
        x, a = _t(lib, X), _t(lib, X[:, 0])
        scalar = lambda v: (f(lib, v) ** 2).sum()  # noqa: E731
        return (F.vmap(F.jacrev(lambda v: f(lib, v)))(a), F.jacrev(F.vmap(lambda v: f(lib, v)))(a),
                F.vmap(F.hessian(scalar))(a), F.vmap(F.grad(F.grad(lambda s: s.sin() * s ** 3)))(a[:, 0]),
                F.vmap(F.vjp(lambda v: f(lib, v), a[0])[1])(a), F.grad(lambda w: F.vmap(scalar)(x * w).sum())(a[0]))
    # vmap of a vjp_fn made outside: the batched cotangents run through its plain graph's backward rules
    _check(run, batched=6)


def test_nested_vmap():
    def run(lib):
        m, F = _lib(lib)
        inner = F.vmap(lambda r, v: (r * v).sum() + r, in_dims=(0, None))
        return F.vmap(inner, in_dims=(1, None), out_dims=1)(_t(lib, X), _t(lib, V)), \
            F.vmap(F.vmap(F.grad(lambda s: (s * s).sum())))(_t(lib, X))
    # each outer vmap loops (one batched level at a time) and its inner vmaps batch, one call per outer element
    _check(run, batched=3 + 5, loops=2)


# ---- randomness and fallback ----------------------------------------------------------------------------------
def test_randomness_modes(monkeypatch):
    x = fg.tensor(X.astype(np.float32))
    f = lambda a: a * 0 + fg.randn(3, 4)  # noqa: E731
    with pytest.raises(RuntimeError, match="randomness error mode"):
        ff.vmap(f)(x)
    assert fg_autograd._batch_hook is None
    fg.manual_seed(3)
    same, nb, nl = _paths(lambda: ff.vmap(f, randomness="same", chunk_size=2)(x).numpy())
    assert (nb, nl) == (1, 0)
    fg.manual_seed(3)
    np.testing.assert_array_equal(same[4], fg.randn(3, 4).numpy())
    drop = lambda a: fg.nn.functional.dropout(a, 0.5) + fg.randn(4)  # noqa: E731
    outs = []
    for force_loop in (False, True):
        if force_loop:
            _loop_only(monkeypatch)
        fg.manual_seed(9)
        outs.append((ff.vmap(f, randomness="different")(x).numpy(), ff.vmap(drop, randomness="same")(x).numpy(),
                     fg.randn(2).numpy()))
    _close(outs[0], outs[1])  # the batched attempt rewound the generator before looping
    assert not np.array_equal(outs[0][0][0], outs[0][0][1])


def test_fallback_cases_stay_right():
    def run(lib):
        m, F = _lib(lib)
        idx = _t(lib, np.array([2, 0, 2]))
        return (F.vmap(lambda a: a.sort(-1)[0] * 2)(_t(lib, X)),
                F.vmap(lambda a: a[:, idx] + a.cummax(0)[0][0, idx])(_t(lib, X)),
                F.vmap(lambda a, i: a[i])(_t(lib, X), _t(lib, np.array([0, 2, 1, 1, 0]))))
    _check(run, batched=0, loops=3)
    # data-dependent Python control flow (.item()) cannot be batched; the loop gives each element its branch
    out, nb, nl = _paths(lambda: ff.vmap(lambda a: a * 2 if a.sum().item() > 0 else a - 1)(fg.tensor(X)))
    assert (nb, nl) == (0, 1)
    ref = np.stack([x * 2 if x.sum() > 0 else x - 1 for x in X])
    np.testing.assert_allclose(out.numpy(), ref.astype(np.float32), rtol=1e-6)


def test_errors_and_leaks(monkeypatch):
    x = fg.tensor(X)

    def bad(a):
        raise KeyError("mine")
    with pytest.raises(KeyError, match="mine"):
        ff.vmap(bad)(x)
    assert fg_autograd._batch_hook is None
    kept = []
    ff.vmap(lambda a: kept.append(a) or a * 1)(x)
    with pytest.raises(RuntimeError, match="used outside its vmap call"):
        kept[0] + 1
    assert kept[0].shape == (3, 4) and kept[0].dim() == 2
    # an op's error names the logical shapes: the batched attempt loops and the loop raises it
    errors = []
    for force_loop in (False, True):
        if force_loop:
            _loop_only(monkeypatch)
        with pytest.raises(Exception) as e:
            ff.vmap(lambda a: a @ fg.ones(5))(x.float())
        errors.append((type(e.value), str(e.value)))
    assert errors[0] == errors[1] and "5" in errors[0][1]


def test_eval_mode_conv_block():
    r = np.random.default_rng(6)
    xs = r.standard_normal((4, 2, 4, 3, 3)).astype(np.float32)

    def run(lib):
        m, F = _lib(lib)
        nf = m.nn.functional
        net = m.nn.Sequential(m.nn.Conv2d(4, 4, 3, padding=1), m.nn.BatchNorm2d(4), m.nn.Dropout(0.3),
                              m.nn.GroupNorm(2, 4), m.nn.ReLU(), m.nn.AdaptiveAvgPool2d(2))
        with (fg.no_grad() if lib == "fg" else torch.no_grad()):
            for i, (_, t) in enumerate(sorted(net.state_dict().items())):
                if t.dtype == (fg.float32 if lib == "fg" else torch.float32):
                    t.copy_(_t(lib, np.abs(np.random.default_rng(i).standard_normal(tuple(t.shape))) + 0.1))
        net.eval()

        def f(x):
            y = net(x)
            y = nf.pad(y, (1, 0, 2, 1), value=0.5)
            y = nf.interpolate(y, scale_factor=2, mode="nearest")
            return nf.pixel_shuffle(y, 2).sum((-1, -2)), nf.dropout(x, 0.5, training=False)
        return F.vmap(f)(_t(lib, xs))
    _check(run, tol=2e-5)


def test_a_swallowed_fallback_still_loops():
    def f(a):
        try:
            return a.sort(-1)[0]
        except:  # noqa: E722  (catches the batched path's signal too)
            return a * 0
    got, nb, nl = _paths(lambda: ff.vmap(f)(fg.tensor(X)).numpy())
    assert (nb, nl) == (0, 1)
    np.testing.assert_allclose(got, np.sort(X, -1).astype(np.float32), rtol=1e-6)


def test_inference_fast_paths_are_batched_too():
    """Under no_grad the layers' fused inference paths read storage directly: a batched vmap turns them off
    (graph_free() is False there), so the ops reach the rules."""
    r = np.random.default_rng(2)
    x, q = r.standard_normal((5, 2, 3)).astype(np.float32), r.standard_normal((3, 2, 5, 4)).astype(np.float32)

    def run(lib):
        m, F = _lib(lib)
        m.manual_seed(0)
        net = m.nn.Sequential(m.nn.Linear(3, 4), m.nn.ReLU(), m.nn.Linear(4, 2), m.nn.GELU(), m.nn.Linear(2, 2))
        mha = m.nn.MultiheadAttention(4, 2, batch_first=True)
        for mod in (net, mha):
            with (fg.no_grad() if lib == "fg" else torch.no_grad()):
                for i, (_, t) in enumerate(sorted(mod.state_dict().items())):
                    t.copy_(_t(lib, np.random.default_rng(i).standard_normal(tuple(t.shape)).astype(np.float32)))
        with (fg.no_grad() if lib == "fg" else torch.no_grad()):
            return F.vmap(net)(_t(lib, x)), F.vmap(lambda a: mha(a, a, a)[0])(_t(lib, q))
    _check(run, tol=2e-5, batched=2)


def test_like_factories_and_explicit_generators(monkeypatch):
    def run(lib):
        m, F = _lib(lib)
        return F.vmap(lambda a: m.zeros_like(a) + a.new_ones(4) * a + m.full_like(a[0], 2.5) - m.ones_like(a))(
            _t(lib, X.astype(np.float32)))
    _check(run)
    # a generator passed explicitly is not the global one vmap watches: the batched attempt loops, so that each
    # element draws its own numbers from it, as in the loop
    x = fg.tensor(X.astype(np.float32))
    outs = []
    for force_loop in (False, True):
        if force_loop:
            _loop_only(monkeypatch)
        g = np.random.default_rng(4)
        outs.append(ff.vmap(lambda a: a + fg.randn_like(a, generator=g), randomness="different")(x).numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0][0] - X[0], outs[0][1] - X[1])


def test_inplace_ops():
    """In-place ops on batched values run in place on the batch (a view writes through to its base); a write
    into the caller's input, or of a batched value into an unbatched tensor, loops (a batched attempt that then
    looped could not undo it)."""
    w = R.standard_normal((2, 3))

    def run(lib):
        m, F = _lib(lib)
        x0, x1 = _t(lib, X.copy()), _t(lib, X.transpose(1, 0, 2).copy())

        def f(a):
            y = a.exp()
            y += a * 2
            y[:, 1].mul_(10)
            return y.clone().relu_().add_(m.ones(4)), a.clone().sub_(y, alpha=0.5)
        outs = F.vmap(f)(x0)
        F.vmap(lambda a: a.mul_(2), in_dims=1)(x1)  # the caller's input, written element by element

        def loss(wt, x):
            h = x @ wt.T
            h.add_(x.sum())
            h[:, :1].mul_(3)
            return (h.clone().tanh_() ** 2).sum()
        g = F.vmap(F.grad(loss), in_dims=(None, 0))(_t(lib, w), _t(lib, X[:, :, :3]))
        return outs, x1, g
    _check(run, tol=1e-9, batched=2, loops=1)
    x, buf = fg.tensor(X), fg.zeros(4)
    _, nb, nl = _paths(lambda: ff.vmap(lambda a: buf.add_(a.sum(0)) * 1)(x))
    assert (nb, nl) == (0, 1)
    # written in the batched attempt, the input would be doubled twice once the sort made the call loop
    x = fg.tensor(X.copy())
    out, nb, nl = _paths(lambda: ff.vmap(lambda a: a.mul_(2).sort(-1)[0])(x))
    assert (nb, nl) == (0, 1)
    np.testing.assert_allclose(x.numpy(), (X * 2).astype(np.float32))
    np.testing.assert_allclose(out.numpy(), np.sort(X * 2, -1).astype(np.float32))
