"""LongT5's encoder (local and transient-global), forgegrad vs transformers, one thread pinned on both sides.

    PYTHONPATH=python python bench/bench_longt5_encoder.py [--length 4096 --layers 2 --rounds 3] [--onnx]

A randomly initialised LongT5 of long-t5-*-base's widths (d_model 768, 12 heads of 64, gated-gelu d_ff 2048,
local_radius 127, global_block_size 16) with ``--layers`` encoder layers is saved by transformers and loaded by
forgegrad's from_pretrained; both encode the same batch-1 input of ``--length`` tokens in interleaved rounds; the best
round of each is reported, with the largest difference of the encoder states relative to their largest value.
``--onnx``: the model is also exported (``export_seq2seq``, timed, verification included) and onnxruntime's encoder
graph (one intra-op thread) runs in the same rounds.
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
    ti, tm = torch.tensor(ids), torch.tensor(mask)
    for kind in ("local", "transient-global"):
        torch.manual_seed(0)
        cfg = transformers.LongT5Config(vocab_size=1000, d_model=768, d_kv=64, num_heads=12, d_ff=2048,
                                        num_layers=args.layers, feed_forward_proj="gated-gelu",
                                        encoder_attention_type=kind, dropout_rate=0.0)
        hf = transformers.LongT5ForConditionalGeneration(cfg).eval()
        model = forgegrad_copy(hf)
        runs = {"transformers": lambda: hf.encoder(input_ids=ti, attention_mask=tm).last_hidden_state.numpy(),
                "forgegrad": lambda: model.encode(ids, mask).numpy()}
        with tempfile.TemporaryDirectory() as d:
            if args.onnx:
                encoder, seconds = onnx_encoder(model, os.path.join(d, "onnx"))
                runs["onnxruntime"] = lambda: encoder(ids, mask)
            with pinned_threads(1), torch.no_grad(), fg.no_grad():
                best, out = best_of_interleaved(runs, args.rounds, warmup=1)
        want, got = out["transformers"], out["forgegrad"]
        rel = np.abs(got - want).max() / np.abs(want).max()
        print(f"LongT5 {kind} encoder (base widths, {args.layers} layers), {args.length} tokens, 1 thread, best of "
              f"{args.rounds}: transformers {best['transformers'] * 1e3:.0f} ms, forgegrad "
              f"{best['forgegrad'] * 1e3:.0f} ms ({best['transformers'] / best['forgegrad']:.2f}x); "
              f"max |diff| / max |state| {rel:.1e}")
        if args.onnx:
            rel = np.abs(encoder(ids, mask) - got).max() / np.abs(got).max()
            print(f"  ONNX: export_seq2seq {seconds:.1f} s; onnxruntime's encoder graph "
                  f"{best['onnxruntime'] * 1e3:.0f} ms ({best['onnxruntime'] / best['forgegrad']:.2f}x forgegrad's "
                  f"time); max |diff| / max |state| {rel:.1e}")


if __name__ == "__main__":
    main()
