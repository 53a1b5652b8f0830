"""One training step (forward, cross-entropy backward, Adam) of three zoo models in float32 and after
``double()``: what float64's numpy paths cost next to the float32 C++ kernels (docs/torch_compat.md).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 FORGEGRAD_NUM_THREADS=1 \\
        PYTHONPATH=python python tools/float64_step_times.py

Prints the best of 5 steps per model and dtype (after one warm-up step).
"""
import time

import numpy as np

import forgegrad as fg
from forgegrad.models import LeNet, MLP, SequenceClassifier

F = fg.nn.functional


def best_step_ms(model, x, y, repeats=5):
    opt = fg.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def main():
    rng = np.random.default_rng(0)
    cases = [("MLP 784-256-10, batch 64", lambda: MLP(784, (256,), 10), rng.random((64, 784))),
             ("LeNet 28x28, batch 16", lambda: LeNet(), rng.random((16, 1, 28, 28))),
             ("LSTM 32->64, T=20, batch 16", lambda: SequenceClassifier(32, 64, 10), rng.random((16, 20, 32)))]
    print("| model | float32 step | float64 step | ratio |")
    print("|---|---|---|---|")
    for name, make, x in cases:
        y = fg.tensor(rng.integers(0, 10, x.shape[0]))
        fg.manual_seed(0)
        t32 = best_step_ms(make(), fg.tensor(x.astype(np.float32)), y)
        fg.manual_seed(0)
        t64 = best_step_ms(make().double(), fg.tensor(x), y)
        print(f"| {name} | {t32:.1f} ms | {t64:.1f} ms | {t64 / t32:.1f}x |")


if __name__ == "__main__":
    main()
