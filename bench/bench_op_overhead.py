"""Per-call cost of small ops against torch: the Python path from a Tensor method or nn.functional call to the
kernel, on tiny float32 tensors where the kernel itself takes well under a microsecond. 1 thread pinned on both
sides; forgegrad and torch alternated (ours, torch, ours, torch) and the best round of each taken, each round the
mean over a loop of calls (a shared machine slows whichever runs at the moment; alternating spreads that). Rounds
are timed in the calling thread's CPU time (time.thread_time; both sides compute on that thread at 1 thread), so
that time the process spends preempted on a busy machine stays out; FG_BENCH_WALL=1 times wall-clock instead.

    PYTHONPATH=python python bench/bench_op_overhead.py [substring ...]

Arguments keep only the cases whose name contains one of them. Modes: "ng" under no_grad, "rg" with an input that
requires grad (forward only: the graph is recorded), "fb" forward + backward (``.sum().backward()`` included on
both sides). Figures are rough on a shared machine.
"""
import os
import sys
import time

import numpy as np
import torch

import forgegrad as fg
import forgegrad.nn as fnn
import forgegrad.nn.functional as F
import torch.nn.functional as TF


CLOCK = time.perf_counter if os.environ.get("FG_BENCH_WALL") == "1" else time.thread_time


def per_call_us(fn, loops, rounds=5):
    for _ in range(max(loops // 10, 10)):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t = CLOCK()
        for _ in range(loops):
            fn()
        best = min(best, (CLOCK() - t) / loops)
    return best * 1e6


def compare(name, ours, theirs, loops=2000):
    runs = [per_call_us(f, loops) for f in (ours, theirs, ours, theirs)]
    mine, ref = min(runs[0], runs[2]), min(runs[1], runs[3])
    print(f"{name:40s} forgegrad {mine:7.2f} us  torch {ref:7.2f} us  torch/fg x{ref / mine:5.2f}", flush=True)
    return name, mine, ref


def cases():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 16)).astype(np.float32)
    b = rng.standard_normal((4, 16)).astype(np.float32)
    w = rng.standard_normal((16, 16)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    img = rng.standard_normal((128, 3, 17, 17)).astype(np.float32)

    fx, fy, fw, fb, fimg = (fg.tensor(v) for v in (a, b, w, bias, img))
    tx, ty, tw, tb, timg = (torch.tensor(v) for v in (a, b, w, bias, img))
    flin = fnn.Linear(16, 16)
    tlin = torch.nn.Linear(16, 16)
    # an eager MLP (Linear / ReLU): under no_grad its layers run as one native plan (nn.Sequential)
    fmlp = fnn.Sequential(fnn.Linear(16, 16), fnn.ReLU(), fnn.Linear(16, 16), fnn.ReLU(), fnn.Linear(16, 4)).eval()
    tmlp = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 4)).eval()

    table = [
        ("x + y", lambda x, y, lib, fn: x + y),
        ("x * 2.0", lambda x, y, lib, fn: x * 2.0),
        ("x.relu()", lambda x, y, lib, fn: x.relu()),
        ("F.relu", lambda x, y, lib, fn: fn.relu(x)),
        ("sigmoid", lambda x, y, lib, fn: lib.sigmoid(x)),
        ("tanh", lambda x, y, lib, fn: lib.tanh(x)),
        ("exp", lambda x, y, lib, fn: lib.exp(x)),
        ("x.sum()", lambda x, y, lib, fn: x.sum()),
        ("x.sum(-1)", lambda x, y, lib, fn: x.sum(-1)),
        ("x.mean()", lambda x, y, lib, fn: x.mean()),
        ("softmax(-1)", lambda x, y, lib, fn: x.softmax(-1)),
        ("F.softmax(x, -1)", lambda x, y, lib, fn: fn.softmax(x, -1)),
        ("x.view(16, 4)", lambda x, y, lib, fn: x.view(16, 4)),
        ("x.reshape(-1)", lambda x, y, lib, fn: x.reshape(-1)),
        ("x.transpose(0, 1)", lambda x, y, lib, fn: x.transpose(0, 1)),
        ("x[1:3]", lambda x, y, lib, fn: x[1:3]),
        ("x[:, 0]", lambda x, y, lib, fn: x[:, 0]),
        ("cat([x, y])", lambda x, y, lib, fn: lib.cat([x, y])),
        ("matmul 4x16 @ 16x4", lambda x, y, lib, fn: lib.matmul(x, y.t())),
    ]
    out = []
    for name, body in table:
        out.append((name, body, (fx, fy, fg, F), (tx, ty, torch, TF)))
    extra = [
        ("F.linear 16->16", lambda x, y, lib, fn, w, b: fn.linear(x, w, b), (fw, fb), (tw, tb)),
        ("nn.Linear(16, 16)", lambda x, y, lib, fn, m: m(x), (flin,), (tlin,)),
        ("nn.Sequential MLP 16-16-16-4", lambda x, y, lib, fn, m: m(x), (fmlp,), (tmlp,)),
    ]
    for name, body, fe, te in extra:
        out.append((name, (lambda body: lambda x, y, lib, fn, *e: body(x, y, lib, fn, *e))(body),
                    (fx, fy, fg, F, *fe), (tx, ty, torch, TF, *te)))
    out.append(("adaptive_avg_pool2d 128x3x17x17", lambda x, y, lib, fn: fn.adaptive_avg_pool2d(x, 1),
                (fimg, fy, fg, F), (timg, ty, torch, TF)))
    return out


FB = {"x + y", "x * 2.0", "x.relu()", "sigmoid", "tanh", "x.sum(-1)", "softmax(-1)", "F.linear 16->16",
      "nn.Linear(16, 16)", "nn.Sequential MLP 16-16-16-4", "x.transpose(0, 1)", "x[1:3]", "cat([x, y])",
      "matmul 4x16 @ 16x4", "adaptive_avg_pool2d 128x3x17x17"}


def main():
    fg.set_num_threads(1)
    torch.set_num_threads(1)
    keep = sys.argv[1:]
    results = []
    for name, body, fargs, targs in cases():
        if keep and not any(k in name for k in keep):
            continue

        with fg.no_grad(), torch.no_grad():  # entered once: the op's cost, not the context manager's
            results.append(compare(f"ng {name}", lambda: body(*fargs), lambda: body(*targs)))

        def rg(args, lib):
            x = lib.tensor(args[0].detach().numpy() if lib is torch else args[0].numpy(), requires_grad=True)
            y = lib.tensor(args[1].detach().numpy() if lib is torch else args[1].numpy(), requires_grad=True)
            rest = args[2:]
            return (lambda: body(x, y, *rest)), (lambda: body(x, y, *rest).sum().backward())
        frg, ffb = rg(fargs, fg)
        trg, tfb = rg(targs, torch)
        results.append(compare(f"rg {name}", frg, trg))
        if name in FB:
            results.append(compare(f"fb {name}", ffb, tfb, loops=1000))
    return results


if __name__ == "__main__":
    main()
