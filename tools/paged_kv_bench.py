"""Peak KV cache memory and throughput of the batched completions engine, contiguous (generation_batch.py: one
right-aligned cache, rebuilt when a row does not fit) against paged (paged_batch.py: one pool of 16-token blocks,
block tables), with many concurrent rows of mixed lengths.

``--requests`` requests, all submitted at once to the engine (driven directly, no HTTP), each a prompt of random
tokens of ``--prompt-min``..``--prompt-max`` tokens and max_tokens of ``--gen-min``..``--gen-max`` (the same seeded
draw for both engines), greedy, at most ``--max-batch`` rows decoding together. Each engine runs in a process of its
own, after a warm-up request; reported per engine:

* peak RSS above the process's RSS before the run (sampled every 2 ms: every array the run touched, the keys and
  values, the prefill caches, the logits) and the KV cache's own peak: the contiguous cache's largest allocation
  (batch cache plus the prefill caches waiting, as ``np.zeros`` sizes it), the pool's most blocks in use x block bytes
  (a prompt being prefilled included: the paged engine prefills straight into its blocks);
* generated tokens per second over the whole run (prefills included), and the mean batched decode step.

On the GPT-2-sized checkpoint of tools/completions_overhead.py (random weights transformers writes).

    python tools/paged_kv_bench.py [--threads 2] [--requests 32] [--max-batch 32] [--attention] [--kv-blocks N]

``--attention`` times one layer's decode attention alone instead: the contiguous step's, the paged one gathered
in numpy, and the paged C++ kernel.

``--kv-blocks N`` compares two paged engines on a pool of N blocks instead: "reserve all", each row reserving every
block it can ever take (its prompt and max_tokens) before its prefill, as the engine did before it could preempt
(a look-ahead as long as the context), against "on demand": its prompt and a one-block look-ahead, then blocks as it
grows, rows preempted (and recomputed) when the pool runs out; preemptions are reported.

``--seq2seq`` compares the encoder-decoder engines instead, at bart-base's shape (6 + 6 layers of 768, 12 heads;
random weights transformers writes): the contiguous one (seq2seq_batch.py: one right-aligned decoder cache and the
rows' encoder keys/values padded to the longest source) against the paged one (paged_seq2seq.py: the decoder's keys
and the encoder's keys/values in blocks of one pool, rows taking decoder blocks as they grow; default pool: room for
every row). The contiguous KV peak counts its decoder cache and its encoder arrays; the paged one, the pool's most
blocks in use (both kinds). With ``--kv-blocks N`` it compares "reserve all" (each row reserving its source's and
max_tokens' blocks as it joins, never preempted) against "on demand" (rows preempted, encoded and prefilled again).
``--model t5-small``: at T5-small's shape instead (6 + 6 layers of 512, 8 heads of 64, its relative-position bias
through the paged kernel's table by distance; a default pool of engine_setup.RELATIVE_ROW_TOKENS-token rows, T5 having
no position table).

Needs torch, transformers and tokenizers."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _workload(args):
    import numpy as np
    rng = np.random.default_rng(0)
    high = 32000 if getattr(args, "model", None) == "t5-small" else 50000  # inside the vocabulary
    return [([int(t) for t in rng.integers(100, high, int(rng.integers(args.prompt_min, args.prompt_max + 1)))],
             int(rng.integers(args.gen_min, args.gen_max + 1))) for _ in range(args.requests)]


def seq2seq_checkpoint(path, model: str = "bart-base"):
    """A bart-base-shaped BART or a T5-small-shaped T5 (random weights transformers writes) and a word-level
    tokenizer, written once."""
    vocab = 32128 if model == "t5-small" else 50265
    if not os.path.isfile(os.path.join(path, "config.json")):
        import torch
        import transformers
        torch.manual_seed(0)
        if model == "t5-small":
            hf = transformers.T5ForConditionalGeneration(transformers.T5Config(
                vocab_size=vocab, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
        else:
            hf = transformers.BartForConditionalGeneration(transformers.BartConfig(
                vocab_size=vocab, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
                forced_eos_token_id=None))
        hf.save_pretrained(path)
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        from tokenizers import Tokenizer, models, pre_tokenizers
        tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t3"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.save(os.path.join(path, "tokenizer.json"))
    return path


def _contiguous_kv_bytes(engine) -> int:
    """The contiguous engine's KV arrays now (its batch cache, an encoder-decoder's encoder arrays, the prefill caches
    waiting)."""
    cache = engine.cache
    batch = 0 if cache is None else sum(a.nbytes for a in cache.keys + cache.values)
    cross = getattr(engine, "cross", None)
    batch += 0 if cross is None else sum(k.nbytes + v.nbytes for k, v in cross)
    return batch + sum(sum(a.nbytes for a in p.cache.keys + p.cache.values)
                       for p in list(engine.prefills) if p.cache is not None)


def run_engine(args) -> dict:
    """One engine's run in this process: its numbers as a dict."""
    import forgegrad as fg
    from completions_overhead import checkpoint
    from forgegrad.serve.completion_request import parse
    from forgegrad.serve.completions import TextGenerator
    from forgegrad.serve.engine_setup import RELATIVE_ROW_TOKENS
    from forgegrad.serve.generation_batch import BatchEngine, Job
    from forgegrad.serve.kv_pool import KVPool
    from forgegrad.serve.paged_batch import PagedBatchEngine
    from forgegrad.serve.paged_seq2seq import PagedSeq2SeqEngine
    from forgegrad.serve.seq2seq_batch import Seq2SeqBatchEngine
    fg.set_num_threads(args.threads)
    gen = TextGenerator(seq2seq_checkpoint(args.dir, args.model) if args.seq2seq else checkpoint(args.dir))
    steps = []

    def on_step(rows, seconds):
        steps.append((rows, seconds))

    kw = dict(on_step=on_step, prefill_chunk=128)
    if args.engine != "contiguous":
        context = gen.context if gen.context < 1 << 30 else RELATIVE_ROW_TOKENS  # T5: no position table
        blocks = args.kv_blocks or args.max_batch * -(-(context + 1) // 16) * (2 if args.seq2seq else 1)
        pool = KVPool.for_model(gen.model, blocks=blocks)
        lookahead = gen.context if args.engine == "reserve-all" else None
        engine = (PagedSeq2SeqEngine if args.seq2seq else PagedBatchEngine)(gen, args.max_batch, pool,
                                                                           lookahead=lookahead, **kw)
    else:
        engine = (Seq2SeqBatchEngine if args.seq2seq else BatchEngine)(gen, args.max_batch, **kw)
    kv_peak = [0]

    def job(ids, n):
        body = {"model": "m", "prompt": ids, "max_tokens": n, "temperature": 0}
        if args.seq2seq:  # random BART weights often pick the end token first: every row decodes its max_tokens
            body["ignore_eos"] = True
        req = parse(json.dumps(body).encode(), "m")
        return Job(req, [ids], None, threading.Event())

    engine.submit(job(list(range(100, 164)), 8)).result()  # warm-up
    steps.clear()
    work = _workload(args)
    base, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            if args.engine != "contiguous":
                kv_peak[0] = pool.peak * pool.block_bytes
            else:
                try:  # the engine's thread changes these as we read them: a torn read is skipped
                    kv_peak[0] = max(kv_peak[0], _contiguous_kv_bytes(engine))
                except (AttributeError, TypeError):
                    pass
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    futures = [engine.submit(job(ids, n)) for ids, n in work]
    results = [f.result() for f in futures]
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    engine.close()
    tokens = sum(r[0].completion_tokens for r in results)
    return {"engine": args.engine, "tokens": tokens, "seconds": seconds, "rss_mb": (peak[0] - base) / 2 ** 20,
            "kv_mb": kv_peak[0] / 2 ** 20, "step_ms": 1e3 * sum(s for _, s in steps) / max(len(steps), 1),
            "rows": sum(r for r, _ in steps) / max(len(steps), 1),
            "preemptions": pool.preemptions if args.engine != "contiguous" else 0,
            "answers": [r[0].token_ids for r in results]}


def attention_only(args) -> None:
    """One layer's decode attention at GPT-2 124M's shape (12 heads of 64) for ``--requests`` rows of mixed lengths
    (the prompts plus half their max_tokens): the contiguous step's (``_attention`` over the padded batch cache), the
    gathered numpy oracle of the paged one, and the C++ paged kernel; the median of 20 calls each."""
    import numpy as np

    import forgegrad as fg
    from forgegrad.kernels.attention import paged_attention_decode
    from forgegrad.models.hf._decode import _attention, paged_attention_reference
    from forgegrad.serve.kv_pool import table_array
    fg.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    lengths = np.array([len(p) + n // 2 for p, n in _workload(args)], np.int64)
    B, H, D, bt = len(lengths), 12, 64, 16
    tables, at = [], 0
    for n in lengths:
        tables.append(list(range(at, at + -(-int(n) // bt))))
        at += len(tables[-1])
    k = rng.standard_normal((at, H, bt, D)).astype(np.float32)
    v = rng.standard_normal((at, H, bt, D)).astype(np.float32)
    q = rng.standard_normal((B, H, 1, D)).astype(np.float32)
    L = int(lengths.max())
    # the contiguous cache: right-aligned rows, padding masked (written everywhere: np.zeros' untouched pages all map
    # one zero page, which would make reading them look free)
    K = rng.standard_normal((B, H, L, D)).astype(np.float32)
    V = rng.standard_normal((B, H, L, D)).astype(np.float32)
    mask = np.full((B, L), np.finfo(np.float32).min, np.float32)
    for b, n in enumerate(lengths):
        mask[b, L - n:] = 0
    t = table_array(tables)

    def median_ms(f):
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return 1e3 * sorted(times)[len(times) // 2]

    print(f"one layer's decode attention, {B} rows of {lengths.min()}..{L} keys (mean {lengths.mean():.0f}), "
          f"12 heads of 64, {args.threads} thread(s): median ms of 20 calls")
    ways = [(f"contiguous (padded to {L})", lambda: _attention(q, K, V, L, mask, 0.125)),
            ("paged, numpy gather", lambda: paged_attention_reference(q, k, v, t, lengths, 0.125)),
            ("paged, C++ kernel", lambda: paged_attention_decode(q, k, v, t, lengths, 0.125))]
    for name, f in ways:
        print(f"  {name:<27} {median_ms(f):8.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--prompt-min", type=int, default=16)
    ap.add_argument("--prompt-max", type=int, default=512)
    ap.add_argument("--gen-min", type=int, default=8)
    ap.add_argument("--gen-max", type=int, default=128)
    ap.add_argument("--dir", default="/tmp/fg-gpt2-124m", help="where the checkpoint is written once")
    ap.add_argument("--attention", action="store_true", help="only time one layer's decode attention, three ways")
    ap.add_argument("--kv-blocks", type=int, default=None,
                    help="compare paged engines on a pool of this many 16-token blocks: rows reserving all their "
                         "blocks up front against blocks on demand with preemption")
    ap.add_argument("--seq2seq", action="store_true",
                    help="compare the encoder-decoder engines (contiguous, paged) at --model's shape")
    ap.add_argument("--model", choices=("bart-base", "t5-small"), default="bart-base",
                    help="--seq2seq: the shape compared (random weights)")
    ap.add_argument("--engine", choices=("contiguous", "paged", "reserve-all"), help=argparse.SUPPRESS)  # one run
    args = ap.parse_args()
    if args.attention:
        attention_only(args)
        return
    if args.engine:
        print(json.dumps(run_engine(args)))
        return
    from completions_overhead import checkpoint
    if args.seq2seq and args.dir == ap.get_default("dir"):
        args.dir = "/tmp/fg-" + args.model
        sys.argv += ["--dir", args.dir]
    seq2seq_checkpoint(args.dir, args.model) if args.seq2seq else checkpoint(args.dir)
    work = _workload(args)
    shape = args.model if args.seq2seq else "GPT-2 124M"
    print(f"{shape} shape, {args.threads} thread(s): {args.requests} requests at once, prompts "
          f"{min(len(p) for p, _ in work)}..{max(len(p) for p, _ in work)} tokens, max_tokens "
          f"{min(n for _, n in work)}..{max(n for _, n in work)}, up to {args.max_batch} rows together"
          + ("" if args.kv_blocks is None else f", a pool of {args.kv_blocks} blocks"))
    print(f"{'engine':>11} {'peak RSS MiB':>13} {'peak KV MiB':>12} {'tokens/s':>9} {'step ms':>8} {'rows/step':>10} "
          f"{'preempted':>10}")
    runs = {}
    engines = ("contiguous", "paged") if args.kv_blocks is None else ("reserve-all", "paged")
    for engine in engines:
        out = subprocess.run([sys.executable, __file__, "--engine", engine] + sys.argv[1:], check=True,
                             capture_output=True, text=True).stdout
        r = runs[engine] = json.loads(out.strip().splitlines()[-1])
        print(f"{engine:>11} {r['rss_mb']:13.1f} {r['kv_mb']:12.1f} {r['tokens'] / r['seconds']:9.1f} "
              f"{r['step_ms']:8.1f} {r['rows']:10.1f} {r['preemptions']:10d}")
    same = runs[engines[0]]["answers"] == runs["paged"]["answers"]
    print(f"the same tokens from both engines: {same}")


if __name__ == "__main__":
    main()
