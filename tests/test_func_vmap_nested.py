"""Transforms inside forgegrad.func.vmap, batched (no per-element loop), against torch.func 2.13: jvp and
linearize (the double-vjp forward mode with batched tangents), jacfwd / jacrev / hessian on batched inputs,
vmap over a vjp_fn or jvp_fn made outside vmap (batched cotangents through a plain graph), per-sample
Hessian-vector products and Jacobians of an MLP, and jacrev's rows taken in one batched backward pass."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.func as ff
from forgegrad.func import _vmap
from test_func_transforms import _lib, _t
from test_func_vmap_batched import _check, _loop_only, _paths

R = np.random.default_rng(23)
X = R.standard_normal((5, 4))
T = R.standard_normal((5, 4))
W = R.standard_normal((3, 4))
C6, C64 = R.standard_normal((6, 3)), R.standard_normal((6, 4))


def _f(v, w):
    return (w @ v.sin()).tanh() * v.sum()


def _loss(w, v):
    return ((w @ v).tanh() ** 2).sum() + (w * w).sum() * v.mean()


def test_jvp_and_linearize_inside_vmap():
    def run(lib):
        m, F = _lib(lib)
        x, t, w = _t(lib, X), _t(lib, T), _t(lib, W)
        _, jvp_fn = F.linearize(lambda v: _f(v, w), x[0])
        return (F.vmap(lambda a, b: F.jvp(lambda v: _f(v, w), (a,), (b,)))(x, t),  # primals and tangents batched
                F.vmap(lambda b: F.jvp(lambda v: _f(v, w), (x[0],), (b,))[1])(t),  # tangents only
                F.vmap(lambda a: F.jvp(lambda v, u: (_f(v, u), u.exp()), (a, w), (a, w)))(x),  # two primals, pair out
                F.vmap(lambda a: F.jvp(lambda v: (_f(v, w), a.sum()), (w[0],), (a,), has_aux=False)[1])(x),
                F.vmap(jvp_fn)(t))  # a jvp_fn made outside vmap, batched tangents
    _check(run, batched=5)


def test_vjp_fn_made_outside_vmap():
    def run(lib):
        m, F = _lib(lib)
        x, w = _t(lib, X), _t(lib, W)
        out, vjp_fn = F.vjp(lambda v, u: (_f(v, u), (u * v).sum(0)), x[0], w)
        cts = (_t(lib, C6), _t(lib, C64))
        return F.vmap(vjp_fn)(cts), F.vmap(vjp_fn, in_dims=((0, None),))((cts[0], cts[1][0]))
    _check(run, batched=2)


def test_jacobians_and_hessians_of_batched_inputs():
    def run(lib):
        m, F = _lib(lib)
        x, w = _t(lib, X), _t(lib, W)
        return (F.vmap(F.jacfwd(_f), in_dims=(0, None))(x, w),
                F.vmap(F.jacrev(_f, argnums=(0, 1)))(x, w + x[:, :1, None]),
                F.vmap(F.hessian(_loss, argnums=(0, 1)), in_dims=(None, 0))(w, x),
                F.vmap(F.jacfwd(F.jacrev(lambda v: _f(v, w))))(x))
    before = dict(_vmap.stats)
    _check(run, batched=4)
    # inside the batched vmap each Jacobian's rows take one pass too (a level of their own over the batch)
    # (hessian of two arguments: its inner jacrev has two outputs, a pass each for the outer one)
    assert _vmap.stats["jacobian_batched"] - before["jacobian_batched"] == 1 + 1 + (1 + 2) + 2
    assert _vmap.stats["jacobian_rows"] == before["jacobian_rows"]


def _mlp(lib):
    m = fg if lib == "fg" else torch
    r = np.random.default_rng(31)
    net = m.nn.Sequential(m.nn.Linear(5, 8), m.nn.Tanh(), m.nn.Linear(8, 8), m.nn.GELU(), m.nn.Linear(8, 3))
    with (fg.no_grad() if lib == "fg" else torch.no_grad()):
        for p in net.parameters():
            p.copy_(_t(lib, (r.standard_normal(tuple(p.shape)) * 0.5).astype(np.float32)))
    return net


@pytest.mark.parametrize("live", [False, True], ids=["detached", "live"])
def test_per_sample_hvp_and_jacobians_of_an_mlp(live):
    r = np.random.default_rng(9)
    xs, vs = r.standard_normal((7, 5)).astype(np.float32), r.standard_normal((7, 5)).astype(np.float32)
    ys = r.integers(0, 3, 7)

    def run(lib):
        m, F = _lib(lib)
        net = _mlp(lib)
        params = {k: (v if live else v.detach()) for k, v in net.named_parameters()}
        ce = m.nn.functional.cross_entropy

        def loss_x(x, y):  # the loss as a function of the input: its Hessian-vector product with v
            return ce(F.functional_call(net, params, (x[None],)), y[None])

        def hvp(x, v, y):
            return F.jvp(lambda a: F.grad(loss_x)(a, y), (x,), (v,))[1]
        jac = F.vmap(F.jacrev(lambda x: F.functional_call(net, params, (x,))))
        pjac = F.vmap(F.jacrev(lambda p, x: F.functional_call(net, p, (x,))), in_dims=(None, 0))
        x, v, y = _t(lib, xs), _t(lib, vs), _t(lib, ys)
        return F.vmap(hvp)(x, v, y), jac(x), pjac(params, x)["2.weight"], F.vmap(F.hessian(loss_x))(x, y)
    before = dict(_vmap.stats)
    _check(run, tol=2e-5, batched=4)
    # every Jacobian in one batched pass per level (cross_entropy's decomposed rule and x[None]'s gradient too)
    assert _vmap.stats["jacobian_rows"] == before["jacobian_rows"], _vmap.stats["why"]


def test_batched_equals_the_loop(monkeypatch):
    x, t, w = fg.tensor(X), fg.tensor(T), fg.tensor(W)

    def calls():
        return (ff.vmap(lambda a, b: ff.jvp(lambda v: _f(v, w), (a,), (b,))[1])(x, t).numpy(),
                ff.vmap(ff.hessian(_loss), in_dims=(None, 0))(w, x).numpy(),
                ff.vmap(ff.vjp(lambda v: _f(v, w), x[0])[1])(t[:, :3])[0].numpy())
    batched, nb, nl = _paths(calls)
    assert (nb, nl) == (3, 0)
    _loop_only(monkeypatch)
    looped, nb, nl = _paths(calls)
    assert (nb, nl) == (0, 3)
    for a, b in zip(batched, looped):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_jacrev_rows_in_one_pass_and_fallback():
    """Outside vmap jacrev/jacfwd take all rows of the Jacobian in one batched backward pass (chunk_size rows at
    a time); where that pass meets an op without a batching rule, one pass per row."""
    def run(lib):
        m, F = _lib(lib)
        x, w = _t(lib, X[0]), _t(lib, W)
        return (F.jacrev(_f, argnums=(0, 1))(x, w), F.jacrev(_f, chunk_size=2)(x, w), F.jacfwd(_f)(x, w),
                F.hessian(_loss, argnums=1)(w, x), F.jacrev(lambda v: v.sort()[0] * v)(x))
    before = dict(_vmap.stats)
    _check(run, batched=0)
    assert _vmap.stats["jacobian_batched"] - before["jacobian_batched"] == 5
    assert _vmap.stats["jacobian_rows"] - before["jacobian_rows"] == 1  # sort has no batching rule


def test_batched_rows_keep_the_graph_of_live_inputs():
    """A vjp_fn of an input that requires grad, vmapped over cotangents, and nested jacrevs: the batched passes
    record their graph, so a backward through the Jacobians reaches the input (third derivatives)."""
    def run(lib):
        m, F = _lib(lib)
        x = _t(lib, X[0], requires_grad=True)
        _, vjp_fn = F.vjp(lambda v: (_t(lib, W) @ v.sin()).tanh(), x)
        jac = F.vmap(vjp_fn)(_t(lib, np.eye(3)))[0]
        h = F.jacrev(F.jacrev(lambda u: (u.sin() * u.sum()).exp().sum()))(x)
        ((jac ** 2).sum() + h.sum()).backward()
        return jac, h, x.grad
    _check(run, batched=1)
