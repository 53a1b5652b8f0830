"""PEGASUS-X's encoder (block-local attention with global tokens, staggered blocks), forgegrad vs transformers, one
thread pinned on both sides.

    PYTHONPATH=python python bench/bench_pegasus_x_encoder.py [--length 4096 --layers 2 --rounds 3] [--onnx]

A randomly initialised PEGASUS-X of pegasus-x-base's widths (d_model 768, 12 heads, ffn 3072, block_size 512, 128
global tokens, staggered blocks) with ``--layers`` encoder layers is saved by transformers and loaded by forgegrad's
from_pretrained; both encode the same batch-1 input of ``--length`` tokens in interleaved rounds; the best round of each
is reported, with the largest difference of the encoder states relative to their largest value. ``--onnx``: the
model is also exported (``export_seq2seq``, timed, verification included) and onnxruntime's encoder graph (one
intra-op thread) runs in the same rounds.
"""
from __future__ import annotations

import argparse
import os
import tempfile

from _onnx_encoder import onnx_encoder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--onnx", action="store_true", help="also export and time onnxruntime's encoder graph")
    args = p.parse_args()

    import numpy as np
    import torch
    import transformers

    import forgegrad as fg
    from forgegrad.bench._timing import best_of_interleaved, pinned_threads
    from forgegrad.bench.hf_encoders import forgegrad_copy

    ids = np.random.default_rng(0).integers(2, 1000, (1, args.length))
    mask = np.ones_like(ids)
    torch.manual_seed(0)
    cfg = transformers.PegasusXConfig(vocab_size=1000, d_model=768, encoder_attention_heads=12,
                                      decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                                      encoder_layers=args.layers, decoder_layers=1, block_size=512,
                                      num_global_tokens=128, stagger_local_blocks=True, dropout=0.0)
    hf = transformers.PegasusXForConditionalGeneration(cfg).eval()
    model = forgegrad_copy(hf)
    ti, tm = torch.tensor(ids), torch.tensor(mask)
    runs = {"transformers": lambda: hf.model.encoder(input_ids=ti, attention_mask=tm).last_hidden_state.numpy(),
            "forgegrad": lambda: model.encode(ids, mask).numpy()}
    with tempfile.TemporaryDirectory() as d:
        if args.onnx:
            encoder, seconds = onnx_encoder(model, os.path.join(d, "onnx"))
            runs["onnxruntime"] = lambda: encoder(ids, mask)
        with pinned_threads(1), torch.no_grad(), fg.no_grad():
            best, out = best_of_interleaved(runs, args.rounds, warmup=1)
    want, got = out["transformers"], out["forgegrad"]
    rel = np.abs(got - want).max() / np.abs(want).max()
    print(f"PEGASUS-X encoder (base widths, {args.layers} layers), {args.length} tokens, 1 thread, best of "
          f"{args.rounds}: transformers {best['transformers'] * 1e3:.0f} ms, forgegrad "
          f"{best['forgegrad'] * 1e3:.0f} ms ({best['transformers'] / best['forgegrad']:.2f}x); "
          f"max |diff| / max |state| {rel:.1e}")
    if args.onnx:
        rel = np.abs(encoder(ids, mask) - got).max() / np.abs(got).max()
        print(f"  ONNX: export_seq2seq {seconds:.1f} s; onnxruntime's encoder graph {best['onnxruntime'] * 1e3:.0f} ms "
              f"({best['onnxruntime'] / best['forgegrad']:.2f}x forgegrad's time); max |diff| / max |state| {rel:.1e}")


if __name__ == "__main__":
    main()
