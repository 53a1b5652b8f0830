"""Served speed with and without freezing: the servers' models frozen in place (the default) against the same
checkpoint served as loaded (``--no-freeze``), timed in turns in one process, so that load from elsewhere on the
machine slows both alike; the best of --rounds rounds is printed.

    python tools/serve_freeze_speed.py [--threads 1] [--rounds 5] [--only embeddings rerank completions]

embeddings: ``forgegrad bench embed``'s directory (all-MiniLM-L6-v2's shape) and 64 texts of 10-60 words:
``Embedder.embed`` of all of them (batches of 32, as the server's queue runs them), then the server itself (uvicorn on
a loopback port) answering each text as its own request from 8 concurrent clients. completions: ``forgegrad bench
generate``'s GPT-2 small (random weights) served: one request of a 128-token prompt and 1 new token (the prompt's
prefill), then 8 concurrent requests of 128-token prompts and 32 new tokens each (decoded together). rerank:
deberta-v3-small's shape (``forgegrad bench hf-encoders``'s, random weights, one label) served at /v1/rerank: 8
requests of one document (a query and a document of 10-60 words each) from 1 client, then 4 requests of 16 documents
from 2 clients.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import tempfile
import threading
import time
from dataclasses import replace


@contextlib.contextmanager
def _serving(app):
    import uvicorn
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def _burst(url, route, bodies, clients):
    """Seconds to answer ``bodies`` from ``clients`` concurrent clients (each its share in turn), and the answers."""
    import httpx

    async def client(c, mine, out):
        for body in mine:
            r = await c.post(url + route, json=body)
            assert r.status_code == 200, r.text
            out.append(r.json())

    async def run():
        out = []
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as c:
            t0 = time.perf_counter()
            await asyncio.gather(*(client(c, bodies[i::clients], out) for i in range(clients)))
            return time.perf_counter() - t0, out

    return asyncio.run(run())


def _rounds(rounds, cases):
    """{(case, side): (best wall seconds, best CPU seconds of this process)} of ``cases`` {case: {side: fn}} run side
    after side, ``rounds`` times. The CPU time (all of the process's threads: the server's and the client's) is what
    load from elsewhere on a shared machine changes least."""
    best = {}
    for _ in range(rounds):
        for case, sides in cases.items():
            for side, fn in sides.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                old = best.get((case, side), (1e9, 1e9))
                best[case, side] = (min(old[0], wall), min(old[1], cpu))
    return best


def _print(best, units):
    for case, (count, unit) in units.items():
        (f, fc), (n, nc) = best[case, "frozen"], best[case, "not frozen"]
        print(f"  {case:44s} frozen {f * 1e3:8.1f} ms ({count / f:7.1f} {unit}/s, CPU {fc * 1e3:8.1f} ms)   "
              f"not frozen {n * 1e3:8.1f} ms ({count / n:7.1f} {unit}/s, CPU {nc * 1e3:8.1f} ms)   "
              f"x{n / f:.2f} (CPU x{nc / fc:.2f})")


def embeddings(threads, rounds):
    from forgegrad.bench import embed as embed_bench
    from forgegrad.serve.embeddings import Embedder
    from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app
    from forgegrad.serve.openai_routes import served_model
    texts = embed_bench.texts(64)
    with tempfile.TemporaryDirectory() as tmp:
        path = embed_bench.minilm_directory(tmp)
        config = EncoderServeConfig(path, max_batch=32, threads=threads)
        workers = {"frozen": served_model(config, Embedder, (32,)),
                   "not frozen": served_model(replace(config, freeze=False), Embedder, (32,))}
        ids = [workers["frozen"].token_ids(x, i) for i, x in enumerate(texts)]
        bodies = [{"input": x} for x in texts]
        with _serving(create_encoder_app(config)) as frozen_url, \
                _serving(create_encoder_app(replace(config, freeze=False))) as loose_url:
            urls = {"frozen": frozen_url, "not frozen": loose_url}
            for url in urls.values():
                _burst(url, "/v1/embeddings", bodies[:8], 8)  # warm-up
            best = _rounds(rounds, {
                "Embedder.embed, 64 texts, batch 32": {s: (lambda w=w: w.embed(ids)) for s, w in workers.items()},
                "server, 64 requests of one text, 8 clients": {
                    s: (lambda u=u: _burst(u, "/v1/embeddings", bodies, 8)) for s, u in urls.items()}})
    print(f"embeddings (all-MiniLM-L6-v2 shape, {sum(map(len, ids))} tokens), {threads} thread(s):")
    _print(best, {"Embedder.embed, 64 texts, batch 32": (sum(map(len, ids)), "tokens"),
                  "server, 64 requests of one text, 8 clients": (64, "requests")})


def rerank(threads, rounds):
    import torch
    import transformers
    from tokenizers import BertWordPieceTokenizer

    from forgegrad.bench import embed as embed_bench
    from forgegrad.bench.hf_encoders import V3_SMALL
    from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    docs = embed_bench.texts(16)
    bodies = [{"query": q, "documents": docs} for q in embed_bench.texts(4)]
    singles = [{"query": docs[i], "documents": [docs[i + 8]]} for i in range(8)]  # pairs of 20-120 words
    with tempfile.TemporaryDirectory() as tmp:
        tok = BertWordPieceTokenizer(lowercase=True)
        tok.train_from_iterator(docs * 10, vocab_size=200)
        tok.save(f"{tmp}/tokenizer.json")
        transformers.BertTokenizerFast(tokenizer_file=f"{tmp}/tokenizer.json", model_max_length=512).save_pretrained(
            tmp)
        torch.manual_seed(0)
        transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(**V3_SMALL, num_labels=1)) \
            .save_pretrained(tmp)
        config = EncoderServeConfig(tmp, max_batch=16, threads=threads)
        with _serving(create_encoder_app(config)) as frozen_url, \
                _serving(create_encoder_app(replace(config, freeze=False))) as loose_url:
            urls = {"frozen": frozen_url, "not frozen": loose_url}
            for url in urls.values():
                _burst(url, "/v1/rerank", bodies[:1], 1)  # warm-up
            one, many = "8 requests of 1 document, 1 client", "4 requests of 16 documents, 2 clients"
            best = _rounds(rounds, {
                one: {s: (lambda u=u: _burst(u, "/v1/rerank", singles, 1)) for s, u in urls.items()},
                many: {s: (lambda u=u: _burst(u, "/v1/rerank", bodies, 2)) for s, u in urls.items()}})
    print(f"rerank (DeBERTa-v3-small shape cross-encoder, random weights), {threads} thread(s):")
    _print(best, {one: (8, "requests"), many: (4, "requests")})


def completions(threads, rounds):
    import numpy as np
    import torch
    import transformers

    from forgegrad.bench.generate import MODELS, PROMPT
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    kind, cfg = MODELS["gpt2-small"]
    rng = np.random.default_rng(0)
    prompts = [[int(t) for t in rng.integers(0, 50000, PROMPT)] for _ in range(8)]
    new = 32
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg)).save_pretrained(tmp)
        config = GenerationServeConfig(tmp, threads=threads)
        with _serving(create_completions_app(config)) as frozen_url, \
                _serving(create_completions_app(replace(config, freeze=False))) as loose_url:
            urls = {"frozen": frozen_url, "not frozen": loose_url}
            one = [{"prompt": prompts[0], "max_tokens": 1, "temperature": 0}]
            many = [{"prompt": p, "max_tokens": new, "temperature": 0} for p in prompts]
            tokens = {}
            for side, url in urls.items():  # warm-up, and the tokens the 8 requests generate (the same on both)
                tokens[side] = sum(a["usage"]["completion_tokens"] for a in _burst(url, "/v1/completions", many, 8)[1])
            assert tokens["frozen"] == tokens["not frozen"]
            best = _rounds(rounds, {
                f"1 request, {PROMPT}-token prompt, 1 token": {
                    s: (lambda u=u: _burst(u, "/v1/completions", one, 1)) for s, u in urls.items()},
                f"8 requests, {PROMPT}-token prompts, {new} tokens": {
                    s: (lambda u=u: _burst(u, "/v1/completions", many, 8)) for s, u in urls.items()}})
    print(f"completions (GPT-2 small shape, random weights), {threads} thread(s):")
    _print(best, {f"1 request, {PROMPT}-token prompt, 1 token": (1, "requests"),
                  f"8 requests, {PROMPT}-token prompts, {new} tokens": (tokens["frozen"], "tokens")})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", nargs="+", choices=("embeddings", "rerank", "completions"),
                    default=["embeddings", "rerank", "completions"])
    args = ap.parse_args(argv)
    import forgegrad as fg
    fg.set_num_threads(args.threads)
    for name in args.only:
        globals()[name](args.threads, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
