"""Throughput of the completions server's continuous batching when requests keep arriving and leaving.

``--clients`` clients each send ``--requests`` completions back to back (no streaming), each with a
``--prompt``-token prompt of its own and a different number of new tokens (between ``--tokens`` / 2 and
``--tokens``), so rows join and leave the batch all the time. Reported: tokens per second over all
clients, and the decode steps the server ran (its forgegrad_batch_size metric).

On the GPT-2-sized checkpoint of tools/completions_overhead.py (random weights transformers writes).

    python tools/batch_churn.py [--threads 1] [--clients 8] [--requests 3] [--prompt 384] [--tokens 64]

Needs torch, transformers, tokenizers and the serve extra."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


async def _client(c, k, args):
    done = 0
    for r in range(args.requests):
        prompt = [100 + (k * 977 + r * 131 + i * 7) % 50000 for i in range(args.prompt)]
        n = args.tokens // 2 + (k * 37 + r * 53) % (args.tokens // 2 + 1)
        a = await c.post("/v1/completions", json={"prompt": prompt, "max_tokens": n, "temperature": 0})
        a.raise_for_status()
        done += a.json()["usage"]["completion_tokens"]
    return done


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=3, help="completions per client, back to back")
    ap.add_argument("--prompt", type=int, default=384, help="prompt tokens per completion")
    ap.add_argument("--tokens", type=int, default=64, help="most new tokens per completion")
    ap.add_argument("--dir", default="/tmp/fg-gpt2-124m", help="where the checkpoint is written once")
    args = ap.parse_args()
    import httpx

    import forgegrad as fg
    from completions_overhead import checkpoint
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    from serve_helpers import metric, running_app
    path = checkpoint(args.dir)
    fg.set_num_threads(args.threads)
    app = create_completions_app(GenerationServeConfig(path, threads=args.threads, max_batch=args.clients))

    async def run(url):
        async with httpx.AsyncClient(base_url=url, timeout=1200) as c:
            t0 = time.perf_counter()
            tokens = sum(await asyncio.gather(*(_client(c, k, args) for k in range(args.clients))))
            return tokens, time.perf_counter() - t0

    with running_app(app) as url:
        tokens, seconds = asyncio.run(run(url))
        steps = metric(httpx.get(url + "/metrics").text, "forgegrad_batch_size_count", model=os.path.basename(path))
    print(f"{args.clients} clients x {args.requests} completions, {args.prompt}-token prompts, up to {args.tokens} "
          f"new tokens: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s "
          f"({steps:.0f} decode steps)")


if __name__ == "__main__":
    main()
