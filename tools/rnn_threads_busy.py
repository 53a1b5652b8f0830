"""Small-step RNN training at 2 threads against 1 thread, with other processes spinning on the machine.

    python tools/rnn_threads_busy.py [--spinners 1] [--rounds 25] [--steps 20]

Each round times `--steps` LSTM and GRU train steps (seq 50, batch 8, input and hidden 64: forward,
backward through time, Adam) at 1 thread and at 2 threads (which goes first alternates), in one process, while
`--spinners` processes burn a core each. Prints per model the median of the rounds' 2-thread /
1-thread time ratios (below 1: two threads are faster) and the quartiles. Issue: 2 threads must never
be slower than 1, busy machine or not (`--spinners 0` is the quiet case).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np


def _step_fn(kind: str):
    import forgegrad as fg
    from forgegrad import nn, optim
    fg.manual_seed(0)
    layer = (nn.LSTM if kind == "lstm" else nn.GRU)(64, 64)
    opt = optim.Adam(layer.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = fg.tensor(rng.standard_normal((50, 8, 64)).astype(np.float32))

    def step():
        out, _ = layer(x)
        loss = (out * out).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spinners", type=int, default=1, help="processes spinning on a core each (default 1)")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--steps", type=int, default=20, help="train steps per timing (default 20)")
    args = parser.parse_args(argv)
    import forgegrad as fg
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.spinners)]
    try:
        for kind in ("lstm", "gru"):
            step = _step_fn(kind)
            for n in (1, 2):  # warm both thread counts (pool start, scratch buffers)
                fg.set_num_threads(n)
                for _ in range(3):
                    step()
            ratios = []
            for r in range(args.rounds):
                t = {}
                for n in ((1, 2) if r % 2 == 0 else (2, 1)):  # alternate which runs first
                    fg.set_num_threads(n)
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        step()
                    t[n] = time.perf_counter() - t0
                ratios.append(t[2] / t[1])
            q1, med, q3 = np.percentile(ratios, [25, 50, 75])
            print(f"{kind}: 2 threads / 1 thread, median {med:.3f} (quartiles {q1:.3f}-{q3:.3f}) over {args.rounds} "
                  f"rounds of {args.steps} steps, {args.spinners} spinning process(es)", flush=True)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
