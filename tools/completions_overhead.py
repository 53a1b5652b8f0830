"""What serving text generation over HTTP costs per token, and what continuous batching gives back.

1. Decode time per token through ``forgegrad serve``'s streaming /v1/completions (uvicorn on loopback,
   httpx reading the events) against ``generate``'s own streamer in the same process.
2. ``--clients N``: N clients asking at once, tokens per second over all of them, with completions
   decoded together (``max_batch`` N) and one request at a time (``max_batch`` 1).

On a GPT-2-sized checkpoint with random weights that transformers writes (and a word-level
tokenizer.json, so every token id decodes to text).

    python tools/completions_overhead.py [--threads 1] [--tokens 64] [--rounds 3] [--clients 4]
                                         [--dir /tmp/fg-gpt2-124m]

Needs torch, transformers, tokenizers and the serve extra."""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def checkpoint(path):
    if not os.path.isfile(os.path.join(path, "config.json")):
        import torch
        import transformers
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(path)
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        from tokenizers import Tokenizer, models, pre_tokenizers
        tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(50257)}, unk_token="t0"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.save(os.path.join(path, "tokenizer.json"))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per request (after a 64-token prompt)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/fg-gpt2-124m", help="where the checkpoint is written once")
    ap.add_argument("--clients", type=int, default=0, help="also measure N concurrent clients (0: skip)")
    args = ap.parse_args()
    import httpx

    import forgegrad as fg
    from forgegrad.models import from_pretrained, generate
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    from serve_helpers import running_app
    path = checkpoint(args.dir)
    fg.set_num_threads(args.threads)
    ids, n = list(range(100, 164)), args.tokens
    for weights in ("float32", "bfloat16"):
        model, direct, served = from_pretrained(path, dtype=weights), [], []
        for _ in range(args.rounds):
            stamps = []
            generate(model, [ids], max_new_tokens=n, streamer=lambda _t: stamps.append(time.perf_counter()))
            direct.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
        del model
        app = create_completions_app(GenerationServeConfig(path, weights=weights, threads=args.threads))
        with running_app(app) as url, httpx.Client(base_url=url, timeout=600) as c:
            for _ in range(args.rounds):
                stamps = []
                body = {"prompt": ids, "max_tokens": n, "temperature": 0, "stream": True}
                with c.stream("POST", "/v1/completions", json=body) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: {") and '"finish_reason": null' in line:
                            stamps.append(time.perf_counter())
                served.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
        ms = lambda xs: " ".join(f"{x * 1e3:.2f}" for x in xs)  # noqa: E731
        print(f"{weights:9s} decode ms/token: generate {ms(direct)} | served, streamed {ms(served)}")
        if args.clients > 1:
            for max_batch in (args.clients, 1):
                app = create_completions_app(GenerationServeConfig(path, weights=weights, threads=args.threads,
                                                                   max_batch=max_batch))
                with running_app(app) as url:
                    rates = [concurrent_rate(url, ids, n, args.clients) for _ in range(args.rounds)]
                print(f"{weights:9s} {args.clients} clients, max_batch {max_batch:2d}: "
                      + " ".join(f"{r:.1f}" for r in rates) + " tokens/s")


def concurrent_rate(url, ids, n, clients):
    """Tokens per second over ``clients`` requests sent at once (each n tokens, distinct prompts)."""
    import asyncio

    import httpx

    async def burst():
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            bodies = [{"prompt": [t + k for t in ids], "max_tokens": n, "temperature": 0} for k in range(clients)]
            t0 = time.perf_counter()
            answers = await asyncio.gather(*(c.post("/v1/completions", json=b) for b in bodies))
            seconds = time.perf_counter() - t0
        return sum(a.json()["usage"]["completion_tokens"] for a in answers) / seconds

    return asyncio.run(burst())


if __name__ == "__main__":
    main()
