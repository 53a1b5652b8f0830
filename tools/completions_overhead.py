"""What serving text generation over HTTP costs per token: decode time per token through
``forgegrad serve``'s streaming /v1/completions (uvicorn on loopback, httpx reading the events) against
``generate``'s own streamer in the same process, on a GPT-2-sized checkpoint with random weights that
transformers writes (and a word-level tokenizer.json, so every token id decodes to text).

    python tools/completions_overhead.py [--threads 1] [--tokens 64] [--rounds 3] [--dir /tmp/fg-gpt2-124m]

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


if __name__ == "__main__":
    main()
