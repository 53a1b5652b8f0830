"""Per-sample gradients (vmap(grad(loss)) with functional_call) of a 32-64-10 MLP on 64 samples: forgegrad.func
against torch.func and a plain forgegrad loop of backward calls; then per-sample Hessian-vector products
(vmap(jvp(grad(loss)))) with respect to the parameters, per-sample input Jacobians (vmap(jacrev(net))) and input
Hessians of the loss (vmap(hessian(loss))) of the same MLP: forgegrad.func batched against torch.func and
forgegrad's vmap loop (one call of the transform per sample). 1 thread each, best of 5 (3 for the slow ones).

    PYTHONPATH=python python bench/func_per_sample_grads.py

Rough figures on a shared machine.
"""
import time

import numpy as np
import torch
import torch.func as tf

import forgegrad as fg
import forgegrad.func as ff


def _best(fn, rounds: int = 5) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main() -> None:
    torch.set_num_threads(1)
    fg.set_num_threads(1)
    r = np.random.default_rng(0)
    xs, ys = r.standard_normal((64, 32)).astype(np.float32), r.integers(0, 10, 64)
    for name, m, F, make in (("torch.func", torch, tf, torch.tensor), ("forgegrad.func", fg, ff, fg.tensor)):
        net = m.nn.Sequential(m.nn.Linear(32, 64), m.nn.ReLU(), m.nn.Linear(64, 10))
        ce = m.nn.functional.cross_entropy

        def loss(p, x, y, net=net, ce=ce, F=F):
            return ce(F.functional_call(net, p, (x[None],)), y[None])

        per_sample = F.vmap(F.grad(loss), in_dims=(None, 0, 0))
        x, y = make(xs), make(ys)
        detached = {k: v.detach() for k, v in net.named_parameters()}
        live = dict(net.named_parameters())
        print(f"{name:15s} detached params {_best(lambda: per_sample(detached, x, y)):8.1f} ms   "
              f"params requiring grad {_best(lambda: per_sample(live, x, y)):8.1f} ms")
    net = fg.nn.Sequential(fg.nn.Linear(32, 64), fg.nn.ReLU(), fg.nn.Linear(64, 10))
    x, y = fg.tensor(xs), fg.tensor(ys)

    def loop():
        for i in range(64):
            net.zero_grad()
            fg.nn.functional.cross_entropy(net(x[i:i + 1]), y[i:i + 1]).backward()

    print(f"forgegrad loop of 64 backward calls {_best(loop):8.1f} ms")
    second_order(xs, ys)


def _cases(m, F, xs, ys):
    """name -> a call of a vmapped transform, for library m (torch or forgegrad) and its func module F."""
    r = np.random.default_rng(1)
    net = m.nn.Sequential(m.nn.Linear(32, 64), m.nn.Tanh(), m.nn.Linear(64, 10))
    params = {k: m.tensor((r.standard_normal(tuple(v.shape)) * 0.3).astype(np.float32))
              for k, v in net.named_parameters()}  # the same values in both libraries
    direction = {k: m.tensor(r.standard_normal(tuple(v.shape)).astype(np.float32)) for k, v in params.items()}
    ce = m.nn.functional.cross_entropy
    x, y = m.tensor(xs), m.tensor(ys)

    def loss(p, xi, yi):
        return ce(F.functional_call(net, p, (xi[None],)), yi[None])

    def hvp(xi, yi):
        return F.jvp(lambda p: F.grad(loss)(p, xi, yi), (params,), (direction,))[1]

    input_loss = lambda xi, yi: loss(params, xi, yi)  # noqa: E731
    return {"per-sample HVP (params)": lambda: F.vmap(hvp)(x, y),
            "per-sample jacrev(net) (10x32)": lambda: F.vmap(F.jacrev(lambda xi: F.functional_call(net, params,
                                                                                                   (xi,))))(x),
            "per-sample hessian(loss) (32x32)": lambda: F.vmap(F.hessian(input_loss))(x, y)}


def second_order(xs, ys) -> None:
    from forgegrad.func import _vmap
    ours, theirs = _cases(fg, ff, xs, ys), _cases(torch, tf, xs, ys)
    for name in ours:
        before = _vmap.stats["loop"]
        got, want = ours[name](), theirs[name]()
        if isinstance(got, dict):
            got, want = got["2.weight"], want["2.weight"]
        assert _vmap.stats["loop"] == before, _vmap.stats["why"]  # batched, no loop
        err = float(np.abs(got.numpy() - want.detach().numpy()).max())
        rounds = 5 if "hessian" not in name else 3
        t_fg, t_torch = _best(ours[name], rounds), _best(theirs[name], rounds)
        batched = _vmap._try_batched
        _vmap._try_batched = lambda *a, **k: _vmap._LOOP  # forgegrad's vmap loop: the transform once per sample
        try:
            t_loop = _best(ours[name], 1)
        finally:
            _vmap._try_batched = batched
        print(f"{name:34s} forgegrad.func {t_fg:8.1f} ms   torch.func {t_torch:8.1f} ms   forgegrad loop "
              f"{t_loop:8.1f} ms   (max |ours - torch| {err:.1e})")


if __name__ == "__main__":
    main()
