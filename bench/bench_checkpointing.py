"""Activation checkpointing on the zoo GPT: peak memory and training step time with and without.

    PYTHONPATH=python python bench/bench_checkpointing.py [--layers 4 --embd 256 --batch 16 --seq 128]

Each mode runs in a process of its own. Peak memory: the largest amount of numpy memory alive during one
training step (tracemalloc; parameters and optimizer state included), and the process's peak RSS. Step
time: the median of --steps steps (forward, backward, AdamW), measured without tracemalloc.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc


def run(args) -> dict:
    import numpy as np

    import forgegrad as fg
    from forgegrad.models.transformer import GPT
    from forgegrad.nn import functional as F
    fg.manual_seed(0)
    model = GPT(vocab_size=256, block_size=args.seq, n_layer=args.layers, n_head=4, n_embd=args.embd,
                gradient_checkpointing=args.mode == "checkpointed")
    opt = fg.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    ids = fg.tensor(rng.integers(0, 256, (args.batch, args.seq)))
    target = fg.tensor(rng.integers(0, 256, (args.batch * args.seq,)))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(ids).reshape(-1, 256), target)
        loss.backward()
        opt.step()
        return loss.item()

    step()  # warm-up: optimizer state, packed weights
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    tracemalloc.reset_peak()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"mode": args.mode, "step_ms": 1e3 * statistics.median(times), "peak_traced_mb": peak / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--mode", choices=["plain", "checkpointed"])
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run(args)))
        return
    for mode in ("plain", "checkpointed"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode] + sys.argv[1:], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{mode:13s} step {r['step_ms']:8.1f} ms   peak numpy memory {r['peak_traced_mb']:7.1f} MiB   "
              f"peak RSS {r['peak_rss_mb']:7.1f} MiB")


if __name__ == "__main__":
    main()
