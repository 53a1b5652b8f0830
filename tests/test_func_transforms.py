"""forgegrad.func's grad, grad_and_value, vjp, jvp, linearize, jacrev, jacfwd and hessian against torch.func
2.13 on odd shapes: argnums tuples, has_aux, pytrees, nested transforms, an MLP's parameters, torch's errors."""
import numpy as np
import pytest
import torch
import torch.func as tf

import forgegrad as fg
import forgegrad.func as ff

RNG = np.random.default_rng(7)
A = RNG.standard_normal((3, 5))
B = RNG.standard_normal((5,))
C = RNG.standard_normal((2, 3, 1))


def _lib(lib):
    return (fg, ff) if lib == "fg" else (torch, tf)


def _t(lib, a, **kw):
    return fg.tensor(np.asarray(a), **kw) if lib == "fg" else torch.tensor(np.asarray(a), **kw)


def _np(x):
    if isinstance(x, (tuple, list)):
        return type(x)(_np(v) for v in x)
    if isinstance(x, dict):
        return {k: _np(v) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    if isinstance(x, fg.Tensor):
        return x.detach().numpy()
    return x


def _close(a, b, tol=1e-10):
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b), (a, b)
        for x, y in zip(a, b):
            _close(x, y, tol)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k], tol)
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape, (a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    else:
        assert a == b


def _both(run, tol=1e-10):
    """run(lib) on both libraries (float64 inputs), results compared leaf by leaf."""
    _close(_np(run("fg")), _np(run("torch")), tol)


def _f(lib, x, y):
    m, _ = _lib(lib)
    return (m.sin(x) @ y).pow(2).sum() + (x * x).mean()


@pytest.mark.parametrize("argnums", [0, 1, (0, 1), (1, 0), -1])
def test_grad_argnums(argnums):
    _both(lambda lib: _lib(lib)[1].grad(lambda x, y: _f(lib, x, y), argnums=argnums)(_t(lib, A), _t(lib, B)))


def test_grad_and_value_has_aux_and_pytrees():
    def run(lib):
        def f(d, scale):
            out = (d["w"] * d["pair"][0]).sum() * scale + d["pair"][1].tanh().sum()
            return out, {"aux": d["w"] * 2, "n": [d["w"].sum()]}
        inp = {"w": _t(lib, A), "pair": [_t(lib, A), _t(lib, C)]}
        return _lib(lib)[1].grad_and_value(f, has_aux=True)(inp, 0.5)
    _both(run)


def test_grad_unused_input_gives_zeros_and_kwargs_pass_through():
    _both(lambda lib: _lib(lib)[1].grad(lambda x, y, k=1.0: y.sum() * k, argnums=(0, 1))(_t(lib, A), _t(lib, B),
                                                                                       k=3.0))


def test_vjp_and_repeated_vjp_fn():
    def run(lib):
        out, fn, aux = _lib(lib)[1].vjp(lambda x, y: ((x.exp() * y.sum(), x @ y), x.sum()), _t(lib, A),
                                        _t(lib, B), has_aux=True)
        ct = (_t(lib, np.ones((3, 5)) * 0.5), _t(lib, np.arange(3.0)))
        return out, fn(ct), fn(ct), aux
    _both(run)


def test_jvp_linearize():
    def run(lib):
        f = lambda x, y: (x.sin() * y, (x @ y).tanh())  # noqa: E731
        prim, tang = (_t(lib, A), _t(lib, B)), (_t(lib, A[::-1].copy()), _t(lib, B * 2))
        out, jv, aux = _lib(lib)[1].jvp(lambda x, y: (f(x, y), y.sum()), prim, tang, has_aux=True)
        lout, lin = _lib(lib)[1].linearize(f, *prim)
        return out, jv, aux, lout, lin(*tang)
    _both(run)


@pytest.mark.parametrize("name", ["jacrev", "jacfwd"])
@pytest.mark.parametrize("argnums", [0, (0, 1)])
def test_jacobians(name, argnums):
    def run(lib):
        jac = getattr(_lib(lib)[1], name)
        f = lambda x, y: {"a": x.sin() * y, "b": (x @ y).sum()}  # noqa: E731
        return jac(f, argnums=argnums)(_t(lib, A), _t(lib, B))
    _both(run)


def test_jacrev_has_aux_chunk_size_and_hessian():
    def run(lib):
        m, F = _lib(lib)
        j, aux = F.jacrev(lambda x: (x.exp() * x.sum(), x.max()), has_aux=True, chunk_size=2)(_t(lib, C))
        h = F.hessian(lambda x, y: (x.pow(3) * y).sum() + (x @ y).exp().sum(), argnums=(0, 1))(_t(lib, A),
                                                                                         _t(lib, B))
        return j, aux, h
    _both(run)


def test_nested_transforms():
    def run(lib):
        F = _lib(lib)[1]
        x = _t(lib, B)
        inner = lambda v: F.grad(lambda u: (u * v).sin().sum())(v * 2)  # noqa: E731  (closes over v)
        return (F.jacrev(F.jacrev(lambda v: v.tanh() * v.sum()))(x), F.grad(lambda v: inner(v).sum())(x),
                F.jacfwd(F.grad(lambda v: v.exp().sum() * v[1]))(x), F.vmap(F.grad(lambda v: v.sin().sum()))(
                    _t(lib, A)))
    _both(run)
    g = ff.grad(ff.grad(lambda a: a ** 3))(fg.tensor(2.0, dtype=fg.float64))  # d2(a^3) = 6a
    assert float(g) == 12.0


def _mlp(lib):
    m = fg if lib == "fg" else torch
    r = np.random.default_rng(3)
    net = m.nn.Sequential(m.nn.Linear(5, 7), m.nn.Tanh(), m.nn.Linear(7, 3))
    with (fg.no_grad() if lib == "fg" else torch.no_grad()):
        for p in net.parameters():
            p.copy_(_t(lib, r.standard_normal(tuple(p.shape)).astype(np.float32)))
    return net


def test_mlp_parameter_gradients_and_jacobians():
    def run(lib):
        m, F = _lib(lib)
        net = _mlp(lib)
        params = {k: v.detach() for k, v in net.named_parameters()}
        x = _t(lib, A.astype(np.float32))
        y = _t(lib, np.array([0, 2, 1]))
        ce = (fg.nn.functional if lib == "fg" else torch.nn.functional).cross_entropy

        def loss(p, x, y):
            return ce(F.functional_call(net, p, (x,)), y)

        g = F.grad(loss)(params, x, y)
        jw = F.jacrev(lambda w: F.functional_call(net, {**params, "2.weight": w}, (x,)))(params["2.weight"])
        return g, jw
    _both(run, tol=2e-5)


def test_errors_match_torch():
    x = fg.tensor(A)
    for lib in ("fg", "torch"):
        F, xx = _lib(lib)[1], _t(lib, A)
        with pytest.raises(RuntimeError, match="Expected f\\(\\*args\\) to return a scalar Tensor, got tensor with 2"):
            F.grad(lambda a: a)(xx)
        with pytest.raises(RuntimeError, match="return a Tensor, got <class 'float'>"):
            F.grad(lambda a: 3.0)(xx)
        with pytest.raises(RuntimeError, match="should be a tuple: \\(output, aux\\)"):
            F.grad(lambda a: a.sum(), has_aux=True)(xx)
        with pytest.raises(RuntimeError, match="Expected tensors, got unsupported type <class 'int'>"):
            F.grad(lambda a: (a.sum(), 3), has_aux=True)(xx)
        with pytest.raises(RuntimeError, match="Got argnum=1, but only 1 positional inputs"):
            F.grad(lambda a: a.sum(), argnums=1)(xx)
        with pytest.raises(RuntimeError, match="unique"):
            F.grad(lambda a, b: a.sum(), argnums=(0, 0))(xx, xx)
        with pytest.raises(RuntimeError, match="non-empty"):
            F.grad(lambda a, b: a.sum(), argnums=())(xx, xx)
        with pytest.raises(RuntimeError, match="argnums must be int or Tuple"):
            F.grad(lambda a: a.sum(), argnums=0.0)(xx)
        with pytest.raises(RuntimeError, match="floating point"):
            F.grad(lambda a: a.sum())(_t(lib, np.arange(3)))
        with pytest.raises(ValueError, match="must be Tensor"):
            F.grad(lambda a: a * 3)(3.0)
        with pytest.raises(RuntimeError, match="Expected primals to be a tuple"):
            F.jvp(lambda a: a, xx, xx)
        with pytest.raises(RuntimeError, match="same python structure"):
            F.jvp(lambda a: a, (xx,), (xx, xx))
        with pytest.raises(RuntimeError, match="different size"):
            F.jvp(lambda a: a, (xx,), (_t(lib, B),))
        _, fn = F.vjp(lambda a: a * 2, xx)
        with pytest.raises(RuntimeError, match="Mismatch in shape"):
            fn(_t(lib, B))
        with pytest.raises(RuntimeError, match="pytree structure of cotangents"):
            fn((xx, xx))
        with pytest.raises(RuntimeError, match="return only tensors"):
            F.jacrev(lambda a: 3)(xx)
    assert ff.grad(lambda a: a.sum())(x).requires_grad is False  # top level: detached, as torch's


def test_results_keep_a_graph_when_inputs_require_grad():
    def run(lib):
        m, F = _lib(lib)
        w, x = _t(lib, B, requires_grad=True), _t(lib, B[::-1].copy(), requires_grad=True)
        g = F.grad(lambda w, x: (w.sin() * x).sum() * w.pow(2).sum())(w, x.detach())
        jv = F.jvp(lambda a: a.exp() * w, (x,), (_t(lib, B),))[1]
        assert g.requires_grad and jv.requires_grad
        return g, m.autograd.grad(g.sum() + jv.sum(), [w, x])
    _both(run)
