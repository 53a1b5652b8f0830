"""bfloat16 conv2d at one thread: forgegrad's im2col + vdpbf16ps GEMM path (ops/_bf16_conv.py, where
_C.bf16.gemm_path() is "avx512_bf16") vs the path before it (the float32 conv of the widened operands, rounded back:
_C.bf16.set_gemm_native(False) in the same process), forgegrad float32, and torch bfloat16 / float32. "new" runs the
im2col path on every case (ops/_bf16_conv.ALL_GEOMETRIES), also the geometries dispatch keeps on the float32 path
because it loses there (all but 1x1 kernels).

Cases: one conv layer forward + backward (input, weight and bias gradients) as a bfloat16 model and under autocast,
and a LeNet-like training step (two convs, pools, two Linears, cross-entropy) as a bfloat16 model.
Modes alternate within each round; the thread CPU time of each is the median of the rounds (the kernels run on the
calling thread; fg.set_num_threads(1), torch.set_num_threads(1)).

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_bf16_conv.py [--rounds 7]
"""
import argparse
import contextlib
import statistics
import time

import numpy as np
import torch

import forgegrad as fg
from forgegrad import _C
from forgegrad.ops import _bf16_conv

# (name, N, C, H, W, OC, k, stride, padding)
CONVS = [("conv3x3 32x64x32x32->64", 32, 64, 32, 32, 64, 3, 1, 1),
         ("conv3x3 16x128x16x16->128", 16, 128, 16, 16, 128, 3, 1, 1),
         ("conv3x3 s2 16x64x32x32->128", 16, 64, 32, 32, 128, 3, 2, 1),
         ("conv1x1 32x64x32x32->128", 32, 64, 32, 32, 128, 1, 1, 0),
         ("conv1x1 16x256x14x14->256", 16, 256, 14, 14, 256, 1, 1, 0),
         ("conv1x1 s2 32x64x32x32->128", 32, 64, 32, 32, 128, 1, 2, 0),
         ("LeNet conv2 64x6x14x14->16 5x5", 64, 6, 14, 14, 16, 5, 1, 0)]


def _conv_step(lib, case, dtype, autocast):
    _, n, c, h, w, oc, k, s, p = case
    rng = np.random.default_rng(0)
    x = lib.tensor(rng.standard_normal((n, c, h, w)).astype(np.float32))
    wt = lib.tensor((rng.standard_normal((oc, c, k, k)) * 0.1).astype(np.float32))
    b = lib.tensor(rng.standard_normal(oc).astype(np.float32))
    if dtype != "float32":
        x, wt, b = (t.to(getattr(lib, dtype)) for t in (x, wt, b))
    x.requires_grad_(), wt.requires_grad_(), b.requires_grad_()

    def step():
        x.grad = wt.grad = b.grad = None
        with lib.autocast("cpu", dtype=lib.bfloat16) if autocast else contextlib.nullcontext():
            y = lib.nn.functional.conv2d(x, wt, b, s, p)
        y.float().square().mean().backward()
    return step


def _lenet_step(lib, dtype):
    nn = lib.nn
    lib.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 10))
    dt = getattr(lib, dtype)
    model = model.to(dt)
    rng = np.random.default_rng(0)
    x = lib.tensor(rng.standard_normal((64, 1, 28, 28)).astype(np.float32)).to(dt)
    y = lib.tensor(rng.integers(0, 10, 64))

    def step():
        model.zero_grad()
        lib.nn.functional.cross_entropy(model(x).float(), y).backward()
    return step


def _time_ms(fn, store):
    fn()
    t0 = time.thread_time()
    fn()
    store.append((time.thread_time() - t0) * 1e3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    rounds = ap.parse_args().rounds
    fg.set_num_threads(1)
    torch.set_num_threads(1)
    _bf16_conv.ALL_GEOMETRIES = True  # "new": the im2col path on every case, also where dispatch leaves it
    print(f"gemm_path: {_C.bf16.gemm_path()}")
    rows = []
    for case in CONVS:
        rows.append((case[0], {
            "fg bf16 new": (True, _conv_step(fg, case, "bfloat16", False)),
            "fg bf16 old": (False, _conv_step(fg, case, "bfloat16", False)),
            "fg autocast new": (True, _conv_step(fg, case, "float32", True)),
            "fg autocast old": (False, _conv_step(fg, case, "float32", True)),
            "fg f32": (True, _conv_step(fg, case, "float32", False)),
            "torch bf16": (None, _conv_step(torch, case, "bfloat16", False)),
            "torch f32": (None, _conv_step(torch, case, "float32", False))}))
    rows.append(("LeNet train step b64 (bf16 model)", {
        "fg bf16 new": (True, _lenet_step(fg, "bfloat16")), "fg bf16 old": (False, _lenet_step(fg, "bfloat16")),
        "fg f32": (True, _lenet_step(fg, "float32")), "torch bf16": (None, _lenet_step(torch, "bfloat16")),
        "torch f32": (None, _lenet_step(torch, "float32"))}))
    for name, modes in rows:
        times = {m: [] for m in modes}
        for _ in range(rounds):
            for m, (native, fn) in modes.items():
                if native is not None:
                    _C.bf16.set_gemm_native(native)
                _time_ms(fn, times[m])
        _C.bf16.set_gemm_native(True)
        med = {m: statistics.median(t) for m, t in times.items()}
        print(f"\n{name} (fwd+bwd, median of {rounds}, ms)")
        for m, t in med.items():
            print(f"  {m:16s} {t:8.2f}   x torch bf16 {med['torch bf16'] / t:5.2f}")


if __name__ == "__main__":
    main()
