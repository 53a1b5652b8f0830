"""float64 training steps: forgegrad float64 vs forgegrad float32 vs torch float64 (and float32), 1 thread.

One step = forward, cross-entropy, zero_grad, backward, Adam. Models (the zoo's, as the scaling suite):
  mlp    MLP 784-256-128-10, batch 64
  lenet  LeNet 1x28x28 (conv 32, pool, conv 64, pool, 128, 10), batch 64
  lstm   LSTM (28 features, hidden 128) over T 50 -> Linear 10, batch 16
Every runtime gets the same initial weights and batch; the runtimes are interleaved round by round and
the best and median per-step times reported (thread CPU time at 1 thread, wall time above).

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_float64_step.py \
        [--models mlp,lenet,lstm] [--rounds 7] [--threads 1] [--profile MODEL]
``--profile MODEL`` prints cProfile's top functions of 20 float64 steps of MODEL instead of timing.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import forgegrad as fg
from forgegrad.bench._scaling import _fg_model, _torch_model

BATCH = {"mlp": 64, "lenet": 64, "lstm": 16}
T_LSTM = 50


def _batch(name, seed=0):
    rng = np.random.default_rng(seed)
    shape = {"mlp": (64, 784), "lenet": (64, 1, 28, 28), "lstm": (16, T_LSTM, 28)}[name]
    return rng.random(shape), rng.integers(0, 10, shape[0])


def _fg_step(name, dtype):
    fg.manual_seed(0)
    model = _fg_model(name)
    if dtype == np.float64:
        model = model.double()
    x, y = _batch(name)
    xt, yt = fg.tensor(x.astype(dtype)), fg.tensor(y)
    return _adam_step(fg, model, xt, yt), model


def _torch_step(torch, name, fg_model, dtype):
    tm = _torch_model(torch, name)
    tm.load_state_dict({k: torch.from_numpy(v.numpy().astype(np.float32)) for k, v in fg_model.state_dict().items()})
    tm = tm.to(dtype)
    x, y = _batch(name)
    tx, ty = torch.from_numpy(x).to(dtype), torch.from_numpy(y)
    return _adam_step(torch, tm, tx, ty)


def _adam_step(lib, model, x, y):
    """One cross-entropy + Adam(lr 1e-3) training step of model on (x, y), in lib (forgegrad or torch)."""
    loss_fn = lib.nn.CrossEntropyLoss()
    opt = lib.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    return step


def _time(fn, clock, min_time=0.2):
    """Seconds per call on ``clock``: the mean over enough calls to last min_time."""
    fn()
    n, t0 = 0, clock()
    while True:
        fn()
        n += 1
        dt = clock() - t0
        if dt >= min_time:
            return dt / n


def _pin_threads(threads):
    """threads for torch, forgegrad and numpy's BLAS (float64 GEMMs are numpy's dgemm); returns
    threadpoolctl's limiter, which must stay alive."""
    import threadpoolctl
    import torch
    torch.set_num_threads(threads)
    fg.set_num_threads(threads)
    return threadpoolctl.threadpool_limits(limits=threads, user_api="blas")


def bench(models, rounds, threads):
    import torch
    _limits = _pin_threads(threads)  # noqa: F841 (held for the run)
    # at 1 thread every runtime computes on this thread: its CPU time is what a step costs, whatever else the
    # shared machine runs (wall time at more threads)
    clock = time.thread_time if threads == 1 else time.perf_counter
    what = "thread CPU" if threads == 1 else "wall"
    print(f"threads {threads}, rounds {rounds}, load {os.getloadavg()[0]:.1f}; {what} ms per step (best / median)")
    for name in models:
        f64, m64 = _fg_step(name, np.float64)
        f32, _ = _fg_step(name, np.float32)
        fns = {"fg f64": f64, "fg f32": f32, "torch f64": _torch_step(torch, name, m64, torch.float64),
               "torch f32": _torch_step(torch, name, m64, torch.float32)}
        times = {k: [] for k in fns}
        for _ in range(rounds):
            for k, fn in fns.items():
                times[k].append(_time(fn, clock) * 1e3)
        best = {k: min(v) for k, v in times.items()}
        cells = "  ".join(f"{k} {min(v):.2f} / {float(np.median(v)):.2f}" for k, v in times.items())
        print(f"{name:6s} batch {BATCH[name]:3d}: {cells}")
        print(f"{'':6s} fg f64 / fg f32 {best['fg f64'] / best['fg f32']:.2f}x, "
              f"torch f64 / fg f64 {best['torch f64'] / best['fg f64']:.2f}x (best)")


def profile(name, threads):
    import cProfile
    import pstats
    _limits = _pin_threads(threads)  # noqa: F841 (held for the run)
    step, _ = _fg_step(name, np.float64)
    step()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(20):
        step()
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,lenet,lstm")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", default=None, help="cProfile 20 float64 steps of this model instead")
    a = ap.parse_args()
    if a.profile:
        profile(a.profile, a.threads)
    else:
        bench([m.strip() for m in a.models.split(",") if m.strip()], a.rounds, a.threads)


if __name__ == "__main__":
    main()
