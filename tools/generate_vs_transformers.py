"""forgegrad against transformers on one `bench generate` model, timed in interleaved rounds (min of N):
prefill of a 128-token prompt and greedy generation of 64 tokens with the KV cache, batch 1, one
thread everywhere; decode per token = (generate - prefill) / 64. For a busy machine: the four
workloads run back to back in every round, so load from elsewhere hits them alike, and the minimum
is the least disturbed round. Reports the calling thread's CPU time and wall time.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python tools/generate_vs_transformers.py gpt2-small --layers 2 --rounds 5

--layers 0 runs the full size (12 layers for gpt2-small, 8 for llama-8L-1024-gqa).
"""
import argparse
import time

import torch
from threadpoolctl import threadpool_limits

import forgegrad
from forgegrad import no_grad
from forgegrad.bench.generate import MODELS, NEW, PROMPT, paired_models
from forgegrad.models.hf import generate


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=sorted(MODELS))
    p.add_argument("--layers", type=int, default=2, help="decoder layers (0: the model's full depth)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    forgegrad.set_num_threads(1)
    torch.set_num_threads(1)
    kind, cfg = MODELS[args.model]
    cfg = dict(cfg)
    if args.layers:
        cfg["n_layer" if kind == "gpt2" else "num_hidden_layers"] = args.layers
    hf, ours, ids, t_ids = paired_models(kind, cfg)

    def fg_prefill():
        with no_grad():
            ours(ids, cache=ours.new_cache(1, PROMPT + NEW), logits_to_keep=1)

    def hf_prefill():
        with torch.no_grad():
            hf(t_ids, use_cache=True, logits_to_keep=1)

    def hf_generate():
        with torch.no_grad():
            hf.generate(t_ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)

    fns = {"fg_prefill": fg_prefill, "hf_prefill": hf_prefill,
           "fg_generate": lambda: generate(ours, ids, max_new_tokens=NEW), "hf_generate": hf_generate}
    cpu = {k: [] for k in fns}
    wall = {k: [] for k in fns}
    with threadpool_limits(1):
        for f in fns.values():  # warm-up
            f()
        for _ in range(args.rounds):
            for k, f in fns.items():
                c, t = time.thread_time(), time.perf_counter()
                f()
                wall[k].append(time.perf_counter() - t)
                cpu[k].append(time.thread_time() - c)
    depth = args.layers or "full"
    for clock, d in (("cpu", cpu), ("wall", wall)):
        m = {k: min(v) for k, v in d.items()}
        dec = {r: (m[r + "_generate"] - m[r + "_prefill"]) / NEW for r in ("fg", "hf")}
        print(f"{args.model} layers={depth} [{clock}, min of {args.rounds}] prefill {PROMPT}: forgegrad "
              f"{m['fg_prefill'] * 1e3:.1f} ms, transformers {m['hf_prefill'] * 1e3:.1f} ms "
              f"({m['hf_prefill'] / m['fg_prefill']:.2f}x); decode per token: forgegrad {dec['fg'] * 1e3:.2f} ms, "
              f"transformers {dec['hf'] * 1e3:.2f} ms ({dec['hf'] / dec['fg']:.2f}x)")


if __name__ == "__main__":
    main()
