"""forgegrad.func.vmap against torch.func.vmap 2.13: in_dims / out_dims variants, pytrees, nested vmap,
chunk_size, randomness, per-sample gradients of an MLP and a conv net, model ensembling, torch's errors."""
import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.func as ff
from test_func_transforms import _both, _lib, _t

RNG = np.random.default_rng(11)
X = RNG.standard_normal((4, 3, 5))
V = RNG.standard_normal((5,))


@pytest.mark.parametrize("in_dims,out_dims", [(0, 0), (1, 0), (2, 1), (-1, -1), ((0, None), 2), ((1, 0), -2)])
def test_in_out_dims(in_dims, out_dims):
    def run(lib):
        x = _t(lib, X)
        y = _t(lib, V) if isinstance(in_dims, tuple) and in_dims[1] is None else _t(lib, X.transpose(1, 0, 2))
        f = lambda a, b: a * b.sum() + a.sin()  # noqa: E731
        dims = in_dims if isinstance(in_dims, tuple) else (in_dims, in_dims)
        if not isinstance(in_dims, tuple):
            y = x
        return _lib(lib)[1].vmap(f, in_dims=dims, out_dims=out_dims)(x, y)
    _both(run)


def test_pytrees_kwargs_nested_and_chunk_size():
    def run(lib):
        F = _lib(lib)[1]
        inp = {"a": _t(lib, X), "b": [_t(lib, X[:, 0]), 2.5]}
        f = lambda d, scale=1.0: ((d["a"] @ d["b"][0]) * d["b"][1] * scale, {"s": d["a"].sum(0)})  # noqa: E731
        out1 = F.vmap(f, in_dims=({"a": 0, "b": [0, None]},), out_dims=(0, {"s": 1}), chunk_size=3)(inp, scale=2.0)
        out2 = F.vmap(F.vmap(lambda r, v: r * v, in_dims=(0, None)), in_dims=(1, None), out_dims=2)(_t(lib, X),
                                                                                               _t(lib, V))
        return out1, out2
    _both(run)


def test_unbatched_outputs_with_out_dims_none():
    y = fg.tensor(V)
    out, same = ff.vmap(lambda a: (a * 2, y), out_dims=(0, None))(fg.tensor(X))
    assert same is y and tuple(out.shape) == X.shape
    for lib in ("fg", "torch"):
        F = _lib(lib)[1]
        with pytest.raises(ValueError, match="can not return a BatchedTensor when out_dim is None"):
            F.vmap(lambda a: (a, a.sum()), out_dims=(0, None))(_t(lib, X))
        assert F.vmap(lambda a: (a, 5), out_dims=(0, None))(_t(lib, X))[1] == 5


def test_randomness():
    x = fg.tensor(X)
    for lib in ("fg", "torch"):
        m, F = _lib(lib)
        with pytest.raises(RuntimeError, match="called random operation while in randomness error mode"):
            F.vmap(lambda a: a + m.randn(5))(_t(lib, X))
        with pytest.raises(RuntimeError, match="Only allowed values for randomness"):
            F.vmap(lambda a: a, randomness="foo")
    drop = fg.nn.Dropout(0.5)
    with pytest.raises(RuntimeError, match="randomness error mode"):
        ff.vmap(drop)(x)
    same = ff.vmap(lambda a: a * 0 + fg.randn(3, 5), randomness="same")(x)
    np.testing.assert_array_equal(same[0].numpy(), same[3].numpy())
    diff = ff.vmap(lambda a: a * 0 + fg.randn(3, 5), randomness="different")(x)
    assert not np.array_equal(diff[0].numpy(), diff[1].numpy())
    fg.manual_seed(5)
    first = fg.randn(3, 5).numpy()
    fg.manual_seed(5)
    np.testing.assert_array_equal(ff.vmap(lambda a: fg.randn(3, 5), randomness="same")(x)[2].numpy(), first)
    with pytest.raises(RuntimeError, match="randomness error mode"):
        ff.jacfwd(lambda a: a * fg.rand(5))(fg.tensor(V))


def test_errors_match_torch():
    for lib in ("fg", "torch"):
        F, x, y = _lib(lib)[1], _t(lib, X), _t(lib, X[:2])
        with pytest.raises(ValueError, match="in_dims is not compatible with the structure of `inputs`"):
            F.vmap(lambda a, b: a + b, in_dims=(0, 0, 0))(x, x)
        with pytest.raises(ValueError, match="same size in the mapped dimension, got sizes \\[4, 2\\]"):
            F.vmap(lambda a, b: a * b.sum())(x, y)
        with pytest.raises(ValueError, match="Got in_dim=3 for some input, but that input is a Tensor of "
                                             "dimensionality 3 so expected in_dim to satisfy -3 <= in_dim < 3"):
            F.vmap(lambda a: a, in_dims=3)(x)
        with pytest.raises(ValueError, match="We cannot vmap over non-Tensor arguments"):
            F.vmap(lambda a, b: a, in_dims=(0, 0))(x, 3)
        with pytest.raises(ValueError, match="expected `in_dims` to be int or a \\(potentially nested\\) tuple"):
            F.vmap(lambda a: a, in_dims=None)(x)
        with pytest.raises(ValueError, match="expected `in_dims` to be int"):
            F.vmap(lambda a, b: a, in_dims=[0, 0])(x, x)
        with pytest.raises(IndexError, match="Dimension out of range \\(expected to be in range of \\[-3, 2\\], "
                                             "but got 4\\)"):
            F.vmap(lambda a: a, out_dims=4)(x)
        with pytest.raises(ValueError, match="out_dims is not compatible with the structure of `outputs`"):
            F.vmap(lambda a: (a, a), out_dims=(0, 0, 0))(x)
        with pytest.raises(ValueError, match="must only return Tensors, got type <class 'int'>"):
            F.vmap(lambda a: 3)(x)
        with pytest.raises(ValueError, match="chunk_size should be None or greater than 0"):
            F.vmap(lambda a: a, chunk_size=0)
        with pytest.raises(ValueError, match="got no inputs"):
            F.vmap(lambda: 1)()
        with pytest.raises(ValueError, match="dimensionality 0"):
            F.vmap(lambda a: a)(_t(lib, 1.0))


def _nets(lib, conv: bool):
    m = fg if lib == "fg" else torch
    r = np.random.default_rng(21)
    if conv:
        net = m.nn.Sequential(m.nn.Conv2d(2, 3, 3, padding=1), m.nn.ReLU(), m.nn.MaxPool2d(2), m.nn.Flatten(),
                              m.nn.Linear(3 * 3 * 2, 4))
    else:
        net = m.nn.Sequential(m.nn.Linear(6, 9), m.nn.Tanh(), m.nn.Linear(9, 4))
    with (fg.no_grad() if lib == "fg" else torch.no_grad()):
        for p in net.parameters():
            p.copy_(_t(lib, (r.standard_normal(tuple(p.shape)) * 0.5).astype(np.float32)))
    return net


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_per_sample_gradients(conv):
    r = np.random.default_rng(5)
    xs = r.standard_normal((7, 2, 6, 5) if conv else (7, 6)).astype(np.float32)
    ys = r.integers(0, 4, 7)

    def run(lib):
        F = _lib(lib)[1]
        net = _nets(lib, conv)
        ce = (fg.nn.functional if lib == "fg" else torch.nn.functional).cross_entropy
        params = {k: v.detach() for k, v in net.named_parameters()}

        def loss(p, x, y):
            return ce(F.functional_call(net, p, (x[None],)), y[None])

        return F.vmap(F.grad(loss), in_dims=(None, 0, 0))(params, _t(lib, xs), _t(lib, ys))
    _both(run, tol=2e-5)
    # the loop equals one backward per sample
    net = _nets("fg", conv)
    ce = fg.nn.functional.cross_entropy
    per = ff.vmap(ff.grad(lambda p, x, y: ce(ff.functional_call(net, p, (x[None],)), y[None])),
                  in_dims=(None, 0, 0))(dict(net.named_parameters()), fg.tensor(xs), fg.tensor(ys))
    net.zero_grad()
    ce(net(fg.tensor(xs[3:4])), fg.tensor(ys[3:4])).backward()
    for k, p in net.named_parameters():
        np.testing.assert_allclose(per[k][3].detach().numpy(), p.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_model_ensembling():
    r = np.random.default_rng(9)
    x = r.standard_normal((5, 6)).astype(np.float32)
    xs = r.standard_normal((3, 5, 6)).astype(np.float32)

    def run(lib):
        F = _lib(lib)[1]
        models = [_nets(lib, False) for _ in range(3)]
        with (fg.no_grad() if lib == "fg" else torch.no_grad()):
            for i, mdl in enumerate(models):
                for p in mdl.parameters():
                    p.mul_(1.0 + i)
        params, buffers = F.stack_module_state(models)
        base = _nets(lib, False)
        call = lambda p, b, inp: F.functional_call(base, (p, b), (inp,))  # noqa: E731
        same = F.vmap(call, in_dims=(0, 0, None))(params, buffers, _t(lib, x))
        each = F.vmap(call)(params, buffers, _t(lib, xs))
        return same, each, {k: (tuple(v.shape), v.requires_grad) for k, v in params.items()}
    _both(run, tol=2e-5)


def test_vmap_inside_grad_and_jacobian_of_vmap():
    def run(lib):
        F = _lib(lib)[1]
        w = _t(lib, V)
        g = F.grad(lambda w, x: F.vmap(lambda r: (r @ w).sin().sum())(x).sum())(w, _t(lib, X))
        j = F.jacrev(F.vmap(lambda r: r.exp() * r.sum()))(_t(lib, X[:, 0, :3]))
        return g, j
    _both(run)
