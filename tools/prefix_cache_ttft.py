"""Time to first token with a long shared system prompt, with and without the completions server's prefix cache.

Each round sends ``--system`` tokens of one system prompt followed by a short question of its own (``--question``
tokens, different every round) to ``forgegrad serve``'s streaming /v1/completions (uvicorn on loopback, httpx), and
times the first streamed token. With the prefix cache (``prefix_cache_mb`` 1024) every round after the first reuses
the system prompt's keys and values and prefills only the rest; without it (0) every round prefills it all. The
first round of each server (cold: nothing cached yet) is reported apart. One request at a time, so the time is the
prefill's and the first step's, not a queue's.

On the GPT-2-sized checkpoint of tools/completions_overhead.py (random weights transformers writes).

    python tools/prefix_cache_ttft.py [--threads 1] [--system 1000] [--question 12] [--rounds 5]

Needs torch, transformers, tokenizers and the serve extra."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def first_token_seconds(client, ids) -> tuple:
    """(seconds to the first streamed token, the usage's cached_tokens) of one streamed completion of ``ids``."""
    body = {"prompt": ids, "max_tokens": 2, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0, first, cached = time.perf_counter(), None, None
    with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"]:
                first = time.perf_counter() - t0
            if chunk.get("usage"):
                cached = chunk["usage"]["prompt_tokens_details"]["cached_tokens"]
    return first, cached


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--system", type=int, default=1000, help="the shared system prompt's length in tokens")
    ap.add_argument("--question", type=int, default=12, help="each round's own question, in tokens")
    ap.add_argument("--rounds", type=int, default=5, help="rounds after the first, per server")
    ap.add_argument("--dir", default="/tmp/fg-gpt2-124m", help="where the checkpoint is written once")
    args = ap.parse_args()
    import httpx

    import forgegrad as fg
    from completions_overhead import checkpoint
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    from serve_helpers import running_app
    path = checkpoint(args.dir)
    fg.set_num_threads(args.threads)
    system = [(7 * i) % 50000 + 100 for i in range(args.system)]
    questions = [[(13 * i + 101 * r) % 50000 + 100 for i in range(args.question)] for r in range(args.rounds + 2)]
    print(f"GPT-2 124M shape, {args.threads} thread(s): a {args.system}-token system prompt + a {args.question}-token "
          "question, one request at a time")
    print(f"{'prefix cache':>13} {'first request s':>16} {'later requests s (median)':>26} {'cached tokens':>14}")
    for mb in (0, 1024):
        app = create_completions_app(GenerationServeConfig(path, threads=args.threads, prefix_cache_mb=mb))
        with running_app(app) as url, httpx.Client(base_url=url, timeout=600) as c:
            first_token_seconds(c, questions[-1] * 4)  # warm-up: shares nothing with the system prompt
            cold, _ = first_token_seconds(c, system + questions[0])
            later = [first_token_seconds(c, system + q) for q in questions[1:args.rounds + 1]]
        print(f"{'on' if mb else 'off':>13} {cold:16.3f} {statistics.median(t for t, _ in later):26.3f} "
              f"{later[0][1]:>14}")


if __name__ == "__main__":
    main()
