"""Sentence embeddings: forgegrad's /v1/embeddings path (``serve.embeddings.Embedder``: tokenize, encode, pool)
against sentence-transformers' ``encode`` on the same directory, in one process, threads pinned on both sides
(``forgegrad bench embed`` times the same at fixed sizes), and through the server (--clients).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/embeddings_speed.py [--threads 1] [--texts 64]

The model and texts are forgegrad.bench.embed's: all-MiniLM-L6-v2's shape, texts of 10-60 words.
Prints the best of --repeat runs of embedding all texts for each side, and the largest difference of the vectors.
With --clients N it also serves the directory (uvicorn on a loopback port, as ``forgegrad serve``) and sends every
text as its own request from N concurrent clients, with batching across requests (--batch) and without (1).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32, help="rows per forward on both sides")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--clients", type=int, default=0, help="also time the server with this many clients")
    args = ap.parse_args(argv)
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    import forgegrad as fg
    from forgegrad.bench import embed as embed_bench
    from forgegrad.serve.embeddings import Embedder
    torch.set_num_threads(args.threads)
    fg.set_num_threads(args.threads)
    texts = embed_bench.texts(args.texts)
    with tempfile.TemporaryDirectory() as tmp:
        out = embed_bench.minilm_directory(tmp)
        st = SentenceTransformer(out, device="cpu")
        ours = Embedder(out, max_batch=args.batch)

        def forgegrad_side():
            return ours.embed([ours.token_ids(x, i) for i, x in enumerate(texts)])

        def st_side():
            return st.encode(texts, batch_size=args.batch, convert_to_numpy=True)

        a, b = forgegrad_side(), st_side()
        served = {rows: _serve_rate(out, texts, rows, args.clients) for rows in (args.batch, 1)} if args.clients \
            else {}
        tokens = sum(len(ours.token_ids(x, i)) for i, x in enumerate(texts))
        best = {}
        for _ in range(args.repeat):  # interleaved, so that both sides see the same machine
            for name, fn in (("forgegrad", forgegrad_side), ("sentence-transformers", st_side)):
                t0 = time.perf_counter()
                fn()
                best[name] = min(best.get(name, 1e9), time.perf_counter() - t0)
    print(f"{args.texts} texts, {tokens} tokens, batch {args.batch}, {args.threads} thread(s)")
    for name, s in best.items():
        print(f"  {name:22s} {s * 1e3:8.1f} ms  {tokens / s:8.0f} tokens/s")
    print(f"  x sentence-transformers: {best['sentence-transformers'] / best['forgegrad']:.2f}; largest vector "
          f"difference {np.abs(a - b).max():.2e}")
    for rows, rate in served.items():
        print(f"  server, {args.clients} clients, one text a request, --max-batch {rows}: {rate:.0f} requests/s")
    return 0


def _serve_rate(path, texts, max_batch, clients) -> float:
    """Requests per second of POST /v1/embeddings, one text each, from ``clients`` concurrent clients."""
    import asyncio
    import socket
    import threading

    import httpx
    import uvicorn

    from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_encoder_app(EncoderServeConfig(path, max_batch=max_batch)),
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/embeddings"

    async def client(c, mine):
        for text in mine:
            r = await c.post(url, json={"input": text})
            assert r.status_code == 200, r.text

    async def run():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as c:
            await client(c, texts[:clients])  # warm-up
            t0 = time.perf_counter()
            await asyncio.gather(*(client(c, texts[i::clients]) for i in range(clients)))
            return len(texts) / (time.perf_counter() - t0)

    try:
        return asyncio.run(run())
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
