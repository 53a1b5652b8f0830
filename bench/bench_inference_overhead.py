"""What inference tensors cost the paths that do not use them: tiny eager ops (no_grad and recorded), a small MLP
training step (forward, cross_entropy, backward, SGD step) and an inference_mode forward, per call in thread CPU
time (best of rounds, 1 thread). Each case is measured before any inference_mode block has run and again after
one has (forgegrad then checks view ops and recorded nodes for inference tensors: forgegrad._inference_tensors).

    PYTHONPATH=python python bench/bench_inference_overhead.py
    python bench/bench_inference_overhead.py --ab OLD/python python   # two trees alternated, 3 runs each

``--ab`` runs this script under each PYTHONPATH in turn (old, new, old, new, ...) and prints the best of each; the
old tree only needs the public API. Rough figures on a shared machine.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

LOOPS = 3000


def per_call_us(fn, loops=LOOPS, rounds=5):
    for _ in range(max(loops // 10, 10)):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.thread_time()
        for _ in range(loops):
            fn()
        best = min(best, (time.thread_time() - t) / loops)
    return best * 1e6


def cases(fg):
    import forgegrad.nn as nn
    import forgegrad.nn.functional as F
    rng = np.random.default_rng(0)
    x, y = (fg.tensor(rng.standard_normal((4, 16)).astype(np.float32)) for _ in range(2))
    xr = fg.tensor(rng.standard_normal((4, 16)).astype(np.float32), requires_grad=True)
    mlp = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = fg.optim.SGD(mlp.parameters(), lr=1e-3)
    data = fg.tensor(rng.standard_normal((32, 64)).astype(np.float32))
    target = fg.tensor(rng.integers(0, 10, 32))

    def no_grad_ops():
        with fg.no_grad():
            for _ in range(20):
                (x + y).relu()[1:3].view(-1)

    def recorded_ops():
        for _ in range(20):
            (xr * y).relu()[1:3].view(-1)

    def train_step():
        opt.zero_grad()
        F.cross_entropy(mlp(data), target).backward()
        opt.step()

    def inference_forward():
        with fg.inference_mode():
            mlp(data)
    return {"20 x (add, relu, slice, view) no_grad": (no_grad_ops, LOOPS // 10),
            "20 x (mul, relu, slice, view) recorded": (recorded_ops, LOOPS // 10),
            "MLP 64-64-64-10 b32 train step": (train_step, LOOPS // 3),
            "MLP forward in inference_mode": (inference_forward, LOOPS // 3)}


def measure():
    import forgegrad as fg
    fg.set_num_threads(1)
    out = {}
    table = cases(fg)
    for name, (fn, loops) in table.items():
        if name != "MLP forward in inference_mode":
            out[name] = per_call_us(fn, loops)
    for name, (fn, loops) in table.items():  # inference_mode has run from here on
        out[name + (" (after inference_mode)" if name != "MLP forward in inference_mode" else "")] = \
            per_call_us(fn, loops)
    return out


def ab(paths, runs=3):
    best = [{} for _ in paths]
    for _ in range(runs):
        for i, path in enumerate(paths):
            env = dict(os.environ, PYTHONPATH=path)
            got = json.loads(subprocess.run([sys.executable, __file__, "--json"], env=env, check=True,
                                            capture_output=True, text=True).stdout)
            for k, v in got.items():
                best[i][k] = min(best[i].get(k, float("inf")), v)
    print(f"{'case (us per call, best of ' + str(runs) + ' runs)':58s}" + "".join(f"{p[-30:]:>32s}" for p in paths))
    for k in best[0]:
        row = "".join(f"{b[k]:32.2f}" for b in best)
        print(f"{k:58s}{row}   x{best[-1][k] / best[0][k]:.3f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--json":
        print(json.dumps(measure()))
    elif len(sys.argv) > 2 and sys.argv[1] == "--ab":
        ab(sys.argv[2:])
    else:
        for k, v in measure().items():
            print(f"{k:58s} {v:9.2f} us")
