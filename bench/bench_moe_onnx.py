"""A mixture-of-experts decoder's ONNX export in onnxruntime: the routed graph (a Loop over the experts in use,
each on its routed rows) against the dense one (``export_dense``: every expert on every token, weighted), one
intra-op thread.

    PYTHONPATH=python python bench/bench_moe_onnx.py [--experts 32 --top-k 4 --prompt 128 --rounds 5]

A randomly initialised Qwen3-MoE (2 layers, hidden 512, 8 heads of 64 on 2 key/value heads, experts of 512) is
saved by transformers, loaded by forgegrad, and exported twice with its KV cache (``export_with_past``,
verified in onnxruntime). Timed: the prefill of a ``--prompt``-token prompt, and one decode step after it on the
graph's own cache; best of ``--rounds``, the two graphs interleaved. The logits of both graphs are compared with
transformers'.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experts", type=int, default=32)
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch
    import transformers

    from forgegrad.models import from_pretrained
    from forgegrad.models.hf import export_with_past
    from forgegrad.models.hf.moe import SparseMoeBlock

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = transformers.Qwen3MoeConfig(num_hidden_layers=2, hidden_size=512, num_attention_heads=8,
                                      num_key_value_heads=2, head_dim=64, intermediate_size=1024,
                                      moe_intermediate_size=512, num_experts=args.experts,
                                      num_experts_per_tok=args.top_k, vocab_size=1000, norm_topk_prob=True)
    hf = transformers.Qwen3MoeForCausalLM(cfg).eval()
    ids = np.random.default_rng(0).integers(0, 1000, (1, args.prompt + 1))
    with torch.no_grad():
        want = hf(torch.tensor(ids)).logits.numpy()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sessions = {}
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(os.path.join(d, "ckpt"))
        for kind in ("routed", "dense"):
            model = from_pretrained(os.path.join(d, "ckpt"))
            for block in model.modules():
                if isinstance(block, SparseMoeBlock):
                    block.export_dense = kind == "dense"
            path = os.path.join(d, f"{kind}.onnx")
            export_with_past(model, path)
            sessions[kind] = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def run(sess):
        kv = sess.get_inputs()[2:]
        past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in kv}
        prompt, mask = ids[:, :-1], np.ones((1, args.prompt), np.int64)
        start = time.perf_counter()
        logits, *present = sess.run(None, {"input_ids": prompt, "attention_mask": mask, **past})
        prefill = time.perf_counter() - start
        feed = {"input_ids": ids[:, -1:], "attention_mask": np.ones((1, args.prompt + 1), np.int64),
                **dict(zip([i.name for i in kv], present))}
        start = time.perf_counter()
        step_logits = sess.run(None, feed)[0]
        step = time.perf_counter() - start
        return prefill, step, np.concatenate([logits, step_logits], 1)

    best, diff = {k: [float("inf")] * 2 for k in sessions}, {}
    for _ in range(args.rounds + 1):  # the first round warms up
        for kind, sess in sessions.items():
            prefill, step, logits = run(sess)
            best[kind] = [min(best[kind][0], prefill), min(best[kind][1], step)]
            diff[kind] = float(np.abs(logits - want).max())
    print(f"Qwen3-MoE, 2 layers, hidden 512, {args.experts} experts of 512, top-{args.top_k}; onnxruntime "
          f"{ort.__version__}, 1 thread, best of {args.rounds}")
    for kind in sessions:
        print(f"  {kind:6s} graph: prefill of {args.prompt} tokens {best[kind][0] * 1e3:7.2f} ms, decode step "
              f"{best[kind][1] * 1e3:6.2f} ms; logits within {diff[kind]:.1e} of transformers'")
    print(f"  routed / dense: prefill {best['dense'][0] / best['routed'][0]:.2f}x faster, decode step "
          f"{best['dense'][1] / best['routed'][1]:.2f}x faster")


if __name__ == "__main__":
    main()
