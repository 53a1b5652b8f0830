"""Per-sample gradients (vmap(grad(loss)) with functional_call) of a 32-64-10 MLP on 64 samples: forgegrad.func
against torch.func and a plain forgegrad loop of backward calls, 1 thread each, best of 5.

    PYTHONPATH=python python bench/func_per_sample_grads.py

Both batch every op of this function (forgegrad.func's batching rules: one forward and one backward over the
64 samples). Rough figures on a shared machine.
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


if __name__ == "__main__":
    main()
