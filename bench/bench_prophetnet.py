"""ProphetNet, forgegrad vs transformers, one thread pinned on both sides: the training forward (every predicting
stream's logits) and greedy generate.

    PYTHONPATH=python python bench/bench_prophetnet.py [--layers 3 --source 128 --target 64 --new 32 --rounds 3]

A randomly initialised ProphetNet of prophetnet-large's shape but narrower (hidden_size 512, 8 heads, ffn 2048, ngram 2,
32 buckets, relative_max_distance 128, vocab 8000) with ``--layers`` encoder and decoder layers is saved by
transformers and loaded by forgegrad's from_pretrained. Both run the same batch of 2 sources of ``--source`` tokens in
interleaved rounds: the forward over ``--target`` decoder places (transformers' logits and logits_ngram, ours
ngram_logits), and greedy generate of ``--new`` tokens (min_length forcing every step; transformers with its cache); the
best round of each is reported, with whether the tokens agree.
"""
from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--source", type=int, default=128)
    p.add_argument("--target", type=int, default=64)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    import numpy as np
    import torch
    import transformers

    import forgegrad as fg
    from forgegrad.bench._timing import best_of_interleaved, pinned_threads
    from forgegrad.bench.hf_encoders import forgegrad_copy
    from forgegrad.models.hf.generation import generate

    cfg = transformers.ProphetNetConfig(
        vocab_size=8000, hidden_size=512, encoder_ffn_dim=2048, decoder_ffn_dim=2048, num_encoder_layers=args.layers,
        num_decoder_layers=args.layers, num_encoder_attention_heads=8, num_decoder_attention_heads=8,
        max_position_embeddings=512, ngram=2, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    hf = transformers.ProphetNetForConditionalGeneration(cfg).eval()
    model = forgegrad_copy(hf)
    rng = np.random.RandomState(0)
    ids = rng.randint(3, 8000, (2, args.source))
    mask = np.ones_like(ids)
    dec = rng.randint(3, 8000, (2, args.target))
    dec[:, 0] = 0
    ti, tm = torch.tensor(ids), torch.tensor(mask)
    kw = dict(max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False, num_beams=1)
    with pinned_threads(1), torch.no_grad(), fg.no_grad():
        best, out = best_of_interleaved({
            "fg forward": lambda: model.ngram_logits(ids, mask, dec).numpy(),
            "hf forward": lambda: hf(input_ids=ti, attention_mask=tm, decoder_input_ids=torch.tensor(dec)).logits,
            "fg generate": lambda: generate(model, ids, attention_mask=mask, **kw),
            "hf generate": lambda: hf.generate(input_ids=ti, attention_mask=tm, **kw).numpy()}, args.rounds)
    ours, ref = out["fg forward"], out["hf forward"].numpy()
    got, want = out["fg generate"], out["hf generate"]
    print(f"layers {args.layers}, batch 2, source {args.source}, target {args.target}, {args.new} new tokens, 1 thread")
    for k, v in best.items():
        print(f"{k:12s} {v:.3f} s")
    print(f"stream-0 logits max diff / max {np.abs(ours[:, 0] - ref).max() / np.abs(ref).max():.1e}; "
          f"generate tokens equal: {got.shape == want.shape and bool((got == want).all())}")


if __name__ == "__main__":
    main()
