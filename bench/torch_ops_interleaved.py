"""This round's ops against torch in one process, 1 thread pinned on both sides, forgegrad and torch alternated
twice and the best of each taken (a busy machine slows whichever runs at the moment; alternating spreads that):
top-k / sort (C++ _C.topk), grid_sample, Conv3d, ConvTranspose3d, MaxPool3d / AvgPool3d, EmbeddingBag.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/torch_ops_interleaved.py [threads]

threads (default 1) is pinned on both sides.
"""
import sys
import time

import numpy as np
import torch

import forgegrad as fg
import forgegrad.nn.functional as F


def best_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def compare(name, ours, theirs, repeats=7):
    runs = [best_ms(f, repeats) for f in (ours, theirs, ours, theirs)]
    mine, ref = min(runs[0], runs[2]), min(runs[1], runs[3])
    print(f"{name:44s} forgegrad {mine:8.2f} ms  torch {ref:8.2f} ms  x{ref / mine:5.2f}")


def grid_sample_step(lib, functional, x, grid, mode):
    def run():
        a, b = lib.tensor(x, requires_grad=True), lib.tensor(grid, requires_grad=True)
        functional.grid_sample(a, b, mode=mode, align_corners=False).sum().backward()
    return run


def conv_step(lib, conv, v):
    def run():
        conv(lib.tensor(v, requires_grad=True)).sum().backward()
    return run


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    fg.set_num_threads(threads)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)

    logits = rng.standard_normal((64, 32000)).astype(np.float32)
    fl, tl = fg.tensor(logits), torch.tensor(logits)
    for k in (1, 50, 1000):
        compare(f"topk k={k} (64,32000)", lambda k=k: fg.topk(fl, k), lambda k=k: torch.topk(tl, k))
    rows = rng.standard_normal((256, 4096)).astype(np.float32)
    fr, tr = fg.tensor(rows), torch.tensor(rows)
    compare("sort (256,4096)", lambda: fg.sort(fr, dim=-1), lambda: torch.sort(tr, dim=-1))

    x = rng.standard_normal((8, 32, 64, 64)).astype(np.float32)
    grid = (rng.random((8, 64, 64, 2)) * 2.2 - 1.1).astype(np.float32)
    for mode in ("bilinear", "nearest"):
        compare(f"grid_sample {mode} fwd+bwd N8 C32 64x64", grid_sample_step(fg, F, x, grid, mode),
                grid_sample_step(torch, torch.nn.functional, x, grid, mode), 5)

    v = rng.standard_normal((2, 32, 16, 32, 32)).astype(np.float32)
    compare("conv3d fwd+bwd N2 32->32 16x32x32 k3", conv_step(fg, fg.nn.Conv3d(32, 32, 3, padding=1), v),
            conv_step(torch, torch.nn.Conv3d(32, 32, 3, padding=1), v), 3)
    vt = rng.standard_normal((2, 32, 8, 16, 16)).astype(np.float32)
    compare("convT3d fwd+bwd N2 32->16 8x16x16 k2 s2", conv_step(fg, fg.nn.ConvTranspose3d(32, 16, 2, stride=2), vt),
            conv_step(torch, torch.nn.ConvTranspose3d(32, 16, 2, stride=2), vt), 21)
    for name, kw in (("MaxPool3d", dict(kernel_size=2)), ("MaxPool3d", dict(kernel_size=3, stride=2, padding=1)),
                     ("AvgPool3d", dict(kernel_size=2)), ("AvgPool3d", dict(kernel_size=3, stride=2, padding=1))):
        args = f"k{kw['kernel_size']}" + (" s2 p1" if "stride" in kw else "")
        compare(f"{name} {args} fwd+bwd N2 C32 16x32x32", conv_step(fg, getattr(fg.nn, name)(**kw), v),
                conv_step(torch, getattr(torch.nn, name)(**kw), v), 5)

    idx = rng.integers(0, 10000, 20000)
    offsets = np.concatenate([[0], np.sort(rng.choice(np.arange(1, 20000), 511, replace=False))])
    weight = rng.standard_normal((10000, 64)).astype(np.float32)
    ours, theirs = fg.nn.EmbeddingBag(10000, 64, mode="sum"), torch.nn.EmbeddingBag(10000, 64, mode="sum")
    ours.weight.data, theirs.weight.data = fg.tensor(weight), torch.tensor(weight)
    fi, fo, ti, to = fg.tensor(idx), fg.tensor(offsets), torch.tensor(idx), torch.tensor(offsets)
    compare("EmbeddingBag sum fwd+bwd 10000x64 20k idx", lambda: ours(fi, fo).sum().backward(),
            lambda: theirs(ti, to).sum().backward())


if __name__ == "__main__":
    main()
