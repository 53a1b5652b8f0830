"""BatchNorm training kernels (cpp/kernels/per_isa/batchnorm.cpp): forward (batch statistics) and backward (all
three gradients), thread CPU time per call at 1 thread, on LeNet-with-BatchNorm's and a ResNet stage's shapes
and an (N, C) BatchNorm1d input. Prints one line per case: best and median of the rounds, in microseconds.

For an A/B of two builds (the machine is shared: alternate them, several rounds, compare the best):
    for i in 1 2 3; do for d in OLD_PYTHON_DIR python; do
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=$d python bench/bench_batchnorm.py --tag $d; done; done
"""
import argparse
import time

import numpy as np

import forgegrad as fg
from forgegrad.kernels import norm as KN

SHAPES = [(64, 6, 28, 28), (64, 16, 10, 10), (32, 64, 56, 56), (256, 512)]  # LeNet-BN conv1/conv2, ResNet, 1-d


def _thread_us(fn, reps):
    fn()  # warm
    t0 = time.thread_time()
    for _ in range(reps):
        fn()
    return (time.thread_time() - t0) / reps * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", default="")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    fg.set_num_threads(1)
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        c = shape[1]
        w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
        y, mean, invstd = KN.batch_norm_forward(x, w, b, training=True)
        reps = max(3, int(2e7 // x.size))
        fwd = lambda: KN.batch_norm_forward(x, w, b, training=True)  # noqa: E731
        bwd = lambda: KN.batch_norm_backward(g, x, w, mean, invstd, training=True)  # noqa: E731
        for name, fn in (("fwd", fwd), ("bwd", bwd)):
            times = sorted(_thread_us(fn, reps) for _ in range(args.rounds))
            print(f"{args.tag} batch_norm {name} {'x'.join(map(str, shape))}: best {times[0]:.1f} us, "
                  f"median {times[len(times) // 2]:.1f} us")


if __name__ == "__main__":
    main()
