"""MLP speed (issue 3): forgegrad vs torch (training step) and vs onnxruntime (inference), same run.

Model: 784-256-128-10 MLP with ReLU, the same initial weights on every side.
  * train step at batch 64: forward, cross_entropy, backward, Adam update (target >= 1.3x torch)
  * inference at batch 1, no grad (target >= 1.0x onnxruntime on torch's ONNX export)
Threads are pinned on every side (torch.set_num_threads, forgegrad.set_num_threads, threadpoolctl
for numpy, ORT intra_op_num_threads) for each count in FG_BENCH_THREADS (default "1,2").

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python3 -m pytest bench/bench_mlp.py --benchmark-only --benchmark-group-by=group
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python3 bench/bench_mlp.py
        # interleaved timing, prints a table of times and ratios

Until forgegrad.optim is available the Adam update is a numpy stand-in (same math as torch.optim.Adam).
"""
from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn as nn
import forgegrad.nn.functional as F
from forgegrad.bench._timing import pinned_threads

THREADS = [int(t) for t in os.environ.get("FG_BENCH_THREADS", "1,2").split(",")]
BATCH_TRAIN, BATCH_INFER = 64, 1
SIZES = (784, 256, 128, 10)

try:  # forgegrad.optim is written on another branch; use it once it is there
    from forgegrad.optim import Adam as FgAdam
except ImportError:  # pragma: no cover - depends on what has been merged
    FgAdam = None


class NumpyAdam:
    """Stand-in for forgegrad.optim.Adam (torch.optim.Adam's update, no weight decay), in place."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self.t = 0

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        step = np.float32(self.lr / c1)
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad.data
            m *= np.float32(self.b1)
            m += np.float32(1 - self.b1) * g
            v *= np.float32(self.b2)
            v += np.float32(1 - self.b2) * (g * g)
            den = np.sqrt(v)
            den *= np.float32(1 / np.sqrt(c2))
            den += np.float32(self.eps)
            p.data -= step * (m / den)


def make_models(seed=0):
    torch.manual_seed(seed)
    layers = []
    for i in range(len(SIZES) - 1):
        layers.append(torch.nn.Linear(SIZES[i], SIZES[i + 1]))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    tmodel = torch.nn.Sequential(*layers)
    fmods = []
    for layer in layers:
        if isinstance(layer, torch.nn.Linear):
            lin = nn.Linear(layer.in_features, layer.out_features)
            lin.weight.data[...] = layer.weight.detach().numpy()
            lin.bias.data[...] = layer.bias.detach().numpy()
            fmods.append(lin)
        else:
            fmods.append(nn.ReLU())
    return tmodel, nn.Sequential(*fmods)


def data(batch, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, SIZES[0])).astype(np.float32), rng.integers(0, SIZES[-1], batch)


# ---- step functions ---------------------------------------------------------------------------
def fg_train_step_fn(model):
    x, y = data(BATCH_TRAIN)
    xt, yt = fg.tensor(x), fg.tensor(y)
    opt = FgAdam(model.parameters(), lr=1e-3) if FgAdam is not None else NumpyAdam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
        return loss

    return step


def torch_train_step_fn(model):
    x, y = data(BATCH_TRAIN)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
        return loss

    return step


def fg_infer_fn(model):
    x = fg.tensor(data(BATCH_INFER)[0])
    model.eval()

    def infer():
        with fg.no_grad():
            return model(x)

    return infer


def ort_infer_fn(tmodel, threads):
    import onnxruntime as ort

    buf = io.BytesIO()
    x = data(BATCH_INFER)[0]
    # dynamo=False: the TorchScript exporter, which needs no extra packages
    torch.onnx.export(tmodel.eval(), (torch.from_numpy(x),), buf, input_names=["x"], output_names=["y"],
                      dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    feed = {"x": x}

    def infer():
        return sess.run(None, feed)

    return infer


# ---- pytest-benchmark -------------------------------------------------------------------------
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("side", ["forgegrad", "torch"])
def test_mlp_train_step(benchmark, side, threads):
    benchmark.group = f"mlp train step batch {BATCH_TRAIN}, {threads} thread(s)"
    tmodel, fmodel = make_models()
    with pinned_threads(threads):
        step = fg_train_step_fn(fmodel) if side == "forgegrad" else torch_train_step_fn(tmodel)
        for _ in range(20):
            step()
        benchmark.pedantic(step, rounds=200, iterations=1, warmup_rounds=10)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("side", ["forgegrad", "torch", "onnxruntime"])
def test_mlp_inference(benchmark, side, threads):
    benchmark.group = f"mlp inference batch {BATCH_INFER}, {threads} thread(s)"
    tmodel, fmodel = make_models()
    with pinned_threads(threads):
        if side == "forgegrad":
            fn = fg_infer_fn(fmodel)
        elif side == "torch":
            tmodel.eval()
            x = torch.from_numpy(data(BATCH_INFER)[0])

            def fn():
                with torch.no_grad():
                    return tmodel(x)
        else:
            fn = ort_infer_fn(tmodel, threads)
        for _ in range(50):
            fn()
        benchmark.pedantic(fn, rounds=2000, iterations=1, warmup_rounds=50)


def test_models_agree():
    """The benchmarked computations are the same: forward, loss and first updates match torch."""
    tmodel, fmodel = make_models()
    x, _ = data(BATCH_INFER)
    with fg.no_grad():
        np.testing.assert_allclose(fmodel(fg.tensor(x)).data, tmodel(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-4, atol=1e-5)
    fstep, tstep = fg_train_step_fn(fmodel), torch_train_step_fn(tmodel)
    for _ in range(3):
        np.testing.assert_allclose(fstep().item(), tstep().item(), rtol=1e-4)


# ---- interleaved summary: python bench/bench_mlp.py -------------------------------------------
def _median_ms(fns, rounds, reps, interleave=True):
    """Per-call median of each candidate over `rounds` samples of `reps` calls.

    interleave: candidates take turns round by round, so that a burst of load from elsewhere hits
    all alike (used at 1 thread). With 2+ threads each candidate is timed in one block instead:
    forgegrad's, torch's and onnxruntime's thread pools each spin for a while after their last
    parallel region, and on a 2-core machine taking turns would time one side's kernels against
    the other side's spinning workers."""
    times = {k: [] for k in fns}
    if interleave:
        for _ in range(rounds):
            for k, f in fns.items():
                t0 = time.perf_counter()
                for _ in range(reps):
                    f()
                times[k].append((time.perf_counter() - t0) / reps)
    else:
        for k, f in fns.items():
            for _ in range(reps):  # warm up; let the previous candidate's pool go to sleep
                f()
            for _ in range(rounds):
                t0 = time.perf_counter()
                for _ in range(reps):
                    f()
                times[k].append((time.perf_counter() - t0) / reps)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def main():
    rows = []
    for threads in THREADS:
        tmodel, fmodel = make_models()
        with pinned_threads(threads):
            train = {"forgegrad": fg_train_step_fn(fmodel), "torch": torch_train_step_fn(tmodel)}
            t = _median_ms(train, rounds=15, reps=20, interleave=threads == 1)
            tmodel, fmodel = make_models()

            def torch_infer(m=tmodel.eval(), x=torch.from_numpy(data(BATCH_INFER)[0])):
                with torch.no_grad():
                    return m(x)

            infer = {"forgegrad": fg_infer_fn(fmodel), "onnxruntime": ort_infer_fn(tmodel, threads),
                     "torch": torch_infer}
            i = _median_ms(infer, rounds=15, reps=200, interleave=threads == 1)
        rows.append((threads, t, i))
    opt = "forgegrad.optim.Adam" if FgAdam is not None else "numpy Adam stand-in"
    print(f"MLP 784-256-128-10, train batch {BATCH_TRAIN} ({opt}), inference batch {BATCH_INFER}; median ms")
    print("threads | fg train | torch train | torch/fg | fg infer | ORT infer | ORT/fg | torch infer")
    for threads, t, i in rows:
        print(f"{threads:7d} | {t['forgegrad']:8.3f} | {t['torch']:11.3f} | {t['torch'] / t['forgegrad']:7.2f}x "
              f"| {i['forgegrad']:8.4f} | {i['onnxruntime']:9.4f} | {i['onnxruntime'] / i['forgegrad']:5.2f}x "
              f"| {i['torch']:.4f}")


if __name__ == "__main__":
    main()
