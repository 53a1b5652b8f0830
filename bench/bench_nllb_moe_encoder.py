"""NLLB-MoE's encoder, forgegrad vs transformers (its expert dispatch restored to the routed experts, as the tests
compare), one thread pinned on both sides.

    PYTHONPATH=python python bench/bench_nllb_moe_encoder.py [--tokens 256 --experts 16 --rounds 3] [--onnx]
        [--capacity K]

A randomly initialised NLLB-MoE of reduced widths (d_model 512, 8 heads, ffn 2048, 4 encoder layers, every other one
sparse with ``--experts`` experts; transformers' default routing: eval capacity the whole batch; ``--capacity K``:
a fixed capacity of K tokens per expert in eval too, moe_eval_capacity_token_fraction -1) is saved by
transformers and loaded by forgegrad's from_pretrained; both encode the same (4, tokens / 4) input in interleaved
rounds; the best round of each is reported, with the largest difference of the encoder states relative to their
largest value. transformers 5.24's own dispatch runs only expert_0 and expert_1 (on the wrong tokens): it is replaced
by the per-expert loop of transformers 4 (each expert on the tokens routed to it), the work forgegrad does.
``--onnx`` also times export_seq2seq's encoder graph in onnxruntime (1 thread), whose routing runs each expert in use
on its routed rows (a Loop), with ``--dense`` every expert on every token (experts / 2 times the expert work), or
with ``--capacity`` every expert on min(K, tokens) slots.
"""
from __future__ import annotations

import argparse


def _per_expert_dispatch(self, hidden_states, router_mask, router_probs):
    import torch
    out = torch.zeros_like(hidden_states)
    for e in range(self.num_experts):
        tokens = router_probs[:, e] != 0
        if tokens.any():
            y = self[f"expert_{e}"](hidden_states[tokens]) * (1 - self.moe_token_dropout)
            out[tokens] += router_probs[tokens, e, None] * y
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--onnx", action="store_true", help="also time the exported encoder graph in onnxruntime")
    p.add_argument("--capacity", type=int, default=None, help="a fixed expert capacity (default: every token)")
    p.add_argument("--dense", action="store_true", help="with --onnx: export the every-expert graph (export_dense)")
    args = p.parse_args()

    import numpy as np
    import torch
    import transformers
    from transformers.models.nllb_moe import modeling_nllb_moe

    import forgegrad as fg
    from forgegrad.bench._timing import best_of_interleaved, pinned_threads
    from forgegrad.bench.hf_encoders import checkpoint_copy

    modeling_nllb_moe.NllbMoeExperts.forward = _per_expert_dispatch
    ids = np.random.default_rng(0).integers(3, 1000, (4, args.tokens // 4))
    mask = np.ones_like(ids)
    torch.manual_seed(0)
    cfg = transformers.NllbMoeConfig(vocab_size=1000, d_model=512, encoder_attention_heads=8, decoder_attention_heads=8,
                                     encoder_ffn_dim=2048, decoder_ffn_dim=2048, encoder_layers=4, decoder_layers=1,
                                     num_experts=args.experts, encoder_sparse_step=2, dropout=0.0,
                                     **({} if args.capacity is None else
                                        dict(expert_capacity=args.capacity, moe_eval_capacity_token_fraction=-1.0)))
    hf = transformers.NllbMoeForConditionalGeneration(cfg).eval()
    with checkpoint_copy(hf) as (model, d):
        for m in model.modules():
            if hasattr(m, "export_dense"):
                m.export_dense = args.dense
        session = _onnx_encoder(model, d) if args.onnx else None
    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)
    runs = {"forgegrad": lambda: model.encode(ids, mask).numpy(),
            "transformers": lambda: hf.model.encoder(input_ids=t_ids, attention_mask=t_mask).last_hidden_state.numpy()}
    if session is not None:
        runs["onnxruntime"] = lambda: session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with pinned_threads(1), torch.no_grad(), fg.no_grad():
        best, out = best_of_interleaved(runs, args.rounds)
    ours, theirs, graph = out["forgegrad"], out["transformers"], out.get("onnxruntime")
    diff = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    capacity = "every token" if args.capacity is None else args.capacity
    print(f"NLLB-MoE encoder, {ids.size} tokens, {args.experts} experts (capacity {capacity}), 1 thread: forgegrad "
          f"{best['forgegrad'] * 1e3:.1f} ms, transformers {best['transformers'] * 1e3:.1f} ms; "
          f"states within {diff:.1e} of the largest")
    if session is not None:
        print(f"onnxruntime (export_seq2seq's encoder): "
              f"{best['onnxruntime'] * 1e3:.1f} ms; "
              f"states within {float(np.abs(graph - theirs).max() / np.abs(theirs).max()):.1e} of the largest")


def _onnx_encoder(model, directory):
    """export_seq2seq's encoder graph of ``model`` in a 1-thread onnxruntime session."""
    import os

    import onnxruntime as ort

    from forgegrad.models.hf import export_seq2seq
    export_seq2seq(model, os.path.join(directory, "onnx"), atol=1e-3)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(os.path.join(directory, "onnx", "encoder.onnx"), options,
                                providers=["CPUExecutionProvider"])


if __name__ == "__main__":
    main()
