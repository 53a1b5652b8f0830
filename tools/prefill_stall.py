"""How long a streaming completion stalls while a long prompt joins the batch, with and without
chunked prefill.

One client streams a completion through ``forgegrad serve``'s /v1/completions (uvicorn on loopback,
httpx reading the events); once it has its first tokens, a second client sends a long prompt. The
first client's largest gap between two tokens is the stall: the whole prefill of the long prompt
with ``--prefill-chunk 0``, about one chunk's prefill with chunking. Also reported: the joiner's time
to its answer (chunking spreads its prefill over the other's steps, so it finishes a little later), and
the same prompt's answer time alone, with nobody decoding (it is chunked then too: the cost of that).

On the GPT-2-sized checkpoint of tools/completions_overhead.py (random weights transformers writes).

    python tools/prefill_stall.py [--threads 1] [--prompt 960] [--chunks 0 512 128] [--rounds 2]

Needs torch, transformers, tokenizers and the serve extra."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def one_round(url, long_ids, tokens):
    import httpx
    stamps, started = [], threading.Event()
    first = {"prompt": list(range(100, 164)), "max_tokens": tokens, "temperature": 0, "stream": True}

    def stream():
        with httpx.Client(base_url=url, timeout=600) as c, c.stream("POST", "/v1/completions", json=first) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                    stamps.append(time.perf_counter())
                    if len(stamps) == 8:
                        started.set()

    t = threading.Thread(target=stream)
    t.start()
    started.wait(600)
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as c:
        r = c.post("/v1/completions", json={"prompt": long_ids, "max_tokens": 4, "temperature": 0})
        r.raise_for_status()
    joiner = time.perf_counter() - t0
    t.join(600)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return max(gaps), statistics.median(gaps), joiner


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=960, help="the joining prompt's length in tokens")
    ap.add_argument("--tokens", type=int, default=160, help="tokens the streaming client asks for")
    ap.add_argument("--chunks", type=int, nargs="+", default=[0, 512, 128], help="--prefill-chunk values")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", default="/tmp/fg-gpt2-124m", help="where the checkpoint is written once")
    args = ap.parse_args()
    import forgegrad as fg
    from completions_overhead import checkpoint
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    from serve_helpers import running_app
    path = checkpoint(args.dir)
    fg.set_num_threads(args.threads)
    long_ids = [(7 * i) % 50000 + 100 for i in range(args.prompt)]
    print(f"GPT-2 124M shape, {args.threads} thread(s): a {args.prompt}-token prompt joins a streaming completion")
    print(f"{'prefill chunk':>14} {'largest gap ms':>15} {'median gap ms':>14} {'joiner answer s':>16} "
          f"{'alone answer s':>15}")
    for chunk in args.chunks:
        # no prefix cache: a repeated prompt would skip the prefill this measures
        app = create_completions_app(GenerationServeConfig(path, prefill_chunk=chunk, threads=args.threads,
                                                           prefix_cache_mb=0))
        with running_app(app) as url:
            results = [one_round(url, long_ids, args.tokens) for _ in range(args.rounds)]
            alone = [answer_time(url, long_ids) for _ in range(args.rounds)]
        worst = max(r[0] for r in results)
        print(f"{chunk or 'off':>14} {worst * 1e3:15.0f} {statistics.median(r[1] for r in results) * 1e3:14.1f} "
              f"{statistics.median(r[2] for r in results):16.2f} {min(alone):15.2f}")


def answer_time(url, long_ids):
    """Seconds to the answer of the long prompt (4 tokens) with nobody else on the server."""
    import httpx
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as c:
        c.post("/v1/completions", json={"prompt": long_ids, "max_tokens": 4, "temperature": 0}).raise_for_status()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
