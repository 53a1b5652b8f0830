"""forgegrad.compile against eager, and torch.compile against torch eager: inference (eval, no_grad) of an MLP
(784-256-256-10, ReLU) and LeNet (forgegrad.models.LeNet and its torch twin, same weights) at batch 1 and 64,
1 thread pinned on both sides. Each pair is timed alternately (best of 9 rounds), forgegrad's compiled output is
checked bit-identical to eager first, torch.compile's compile time is reported apart (first calls excluded).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_compile.py [--no-torch]

torch.compile needs a C compiler (inductor's CPU code); where it fails the error is printed and torch eager alone
is timed. Figures on a shared machine are rough.
"""
import sys
import time

import numpy as np

import forgegrad as fg
from forgegrad import nn
from forgegrad.models.cnn import LeNet


def pair_us(first, second, iters, rounds=9):
    """Best time per call of each, the two alternated round by round (load on a shared machine hits both)."""
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, fn in enumerate((first, second)):
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t0) / iters)
    return best[0] * 1e6, best[1] * 1e6


def fg_models():
    fg.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    return {"mlp": (mlp, (784,)), "lenet": (LeNet(), (1, 28, 28))}


def torch_twin(name, model):
    import torch
    tnn = torch.nn
    if name == "mlp":
        t = tnn.Sequential(tnn.Linear(784, 256), tnn.ReLU(), tnn.Linear(256, 256), tnn.ReLU(), tnn.Linear(256, 10))
    else:
        t = tnn.Sequential(tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                           tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                           tnn.Flatten(), tnn.Linear(64 * 7 * 7, 128), tnn.ReLU(), tnn.Linear(128, 10))
    ours = [p.numpy() for p in model.parameters()]
    with torch.no_grad():
        for p, a in zip(t.parameters(), ours):
            p.copy_(torch.from_numpy(a.copy()))
    return t.eval()


def main(argv):
    fg.set_num_threads(1)
    use_torch = "--no-torch" not in argv
    if use_torch:
        import torch
        torch.set_num_threads(1)
    rows = []
    for name, (model, shape) in fg_models().items():
        model.eval()
        compiled = fg.compile(model)
        for batch in (1, 64):
            x = fg.randn(batch, *shape)
            with fg.no_grad():
                if not np.array_equal(model(x).numpy(), compiled(x).numpy()):
                    raise SystemExit(f"{name} batch {batch}: compiled output differs from eager")
                iters = 1000 if batch == 1 else 50
                eager_us, comp_us = pair_us(lambda: model(x), lambda: compiled(x), iters)
            rows.append((f"forgegrad {name} b{batch}", eager_us, comp_us, ""))
            if use_torch:
                rows.append(torch_row(name, model, x, batch, iters))
    print(f"{'case':28s} {'eager us':>10s} {'compiled us':>12s} {'speed-up':>9s}")
    for case, e, c, note in rows:
        ratio = f"{e / c:8.2f}x" if c else "       -"
        print(f"{case:28s} {e:10.1f} {c if c else float('nan'):12.1f} {ratio} {note}")


def torch_row(name, model, x, batch, iters):
    import torch
    t = torch_twin(name, model)
    tx = torch.from_numpy(x.numpy().copy())
    with torch.no_grad():
        try:
            tc = torch.compile(t)
            t0 = time.perf_counter()
            tc(tx)
            first_s = time.perf_counter() - t0
            eager_us, comp_us = pair_us(lambda: t(tx), lambda: tc(tx), iters)
            note = f"(torch.compile first call {first_s:.1f} s)"
        except Exception as e:  # noqa: BLE001  (reported: inductor needs a working C compiler)
            eager_us, _ = pair_us(lambda: t(tx), lambda: None, iters)
            comp_us, note = 0.0, f"torch.compile failed: {type(e).__name__}: {str(e)[:120]}"
    return (f"torch {name} b{batch}", eager_us, comp_us, note)


if __name__ == "__main__":
    main(sys.argv[1:])
