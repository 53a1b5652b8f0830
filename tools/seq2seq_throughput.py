"""What continuous batching gives an encoder-decoder behind ``forgegrad serve``: N clients asking at once (sources
of different lengths), tokens per second over all of them, decoded together (``max_batch`` N) and one request at a
time (``max_batch`` 1).

On a t5-small-, bart-base- or pegasus-x-base-shaped checkpoint with random weights that transformers writes (and a
word-level tokenizer.json, so every token id decodes to text; the end token set to the vocabulary's last id, which
random weights hardly ever pick, so every request generates its max_tokens).

    python tools/seq2seq_throughput.py [--model t5-small|bart-base|pegasus-x-base] [--threads 1] [--tokens 64]
                                       [--rounds 3] [--clients 4] [--dir /tmp/fg-t5-small]

Needs torch, transformers, tokenizers and the serve extra."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def checkpoint(model: str, path: str) -> str:
    if not os.path.isfile(os.path.join(path, "config.json")):
        import torch
        import transformers
        torch.manual_seed(0)
        if model == "t5-small":  # T5Config's defaults are t5-small's shape
            V = 32128
            hf = transformers.T5ForConditionalGeneration(transformers.T5Config(eos_token_id=V - 1))
        elif model == "pegasus-x-base":  # google/pegasus-x-base's config
            V = 96103
            hf = transformers.PegasusXForConditionalGeneration(transformers.PegasusXConfig(
                vocab_size=V, d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=16384,
                block_size=512, num_global_tokens=128, stagger_local_blocks=True, pad_token_id=0,
                decoder_start_token_id=0, eos_token_id=V - 1, forced_eos_token_id=None))
        else:
            V = 50265
            hf = transformers.BartForConditionalGeneration(transformers.BartConfig(
                vocab_size=V, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
                eos_token_id=V - 1, forced_eos_token_id=None))
        hf.save_pretrained(path)
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        import json

        from tokenizers import Tokenizer, models, pre_tokenizers
        with open(os.path.join(path, "config.json")) as f:
            V = json.load(f)["vocab_size"]
        tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(V)}, unk_token="t2"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.save(os.path.join(path, "tokenizer.json"))
    return path


def rate(url: str, n: int, clients: int) -> float:
    """Tokens per second over ``clients`` requests sent at once (n tokens each; sources of 64, 96, 128, ... tokens)."""
    import httpx

    async def burst():
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            bodies = [{"prompt": [100 + k + 3 * i for i in range(64 + 32 * k)], "max_tokens": n, "temperature": 0}
                      for k in range(clients)]
            t0 = time.perf_counter()
            answers = await asyncio.gather(*(c.post("/v1/completions", json=b) for b in bodies))
            seconds = time.perf_counter() - t0
        return sum(a.json()["usage"]["completion_tokens"] for a in answers) / seconds

    return asyncio.run(burst())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("t5-small", "bart-base", "pegasus-x-base"), default="t5-small")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per request")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--dir", default=None, help="where the checkpoint is written once (default /tmp/fg-MODEL)")
    args = ap.parse_args()
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    from serve_helpers import running_app
    path = checkpoint(args.model, args.dir or f"/tmp/fg-{args.model}")
    for max_batch in (max(args.clients, 4), 1):  # one client: the batched engine alone against generate
        app = create_completions_app(GenerationServeConfig(path, threads=args.threads, max_batch=max_batch))
        with running_app(app) as url:
            rate(url, 4, args.clients)  # warm-up
            rates = [rate(url, args.tokens, args.clients) for _ in range(args.rounds)]
        print(f"{args.model} {args.clients} clients, max_batch {max_batch:2d}: "
              + " ".join(f"{r:.1f}" for r in rates) + " tokens/s", flush=True)


if __name__ == "__main__":
    main()
