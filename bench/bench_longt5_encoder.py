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

from _encoder_bench import compare_encoders, parse_args


def main() -> None:
    args = parse_args(__doc__)

    import numpy as np
    import torch
    import transformers

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
        compare_encoders(f"LongT5 {kind} encoder", lambda: hf.encoder(input_ids=ti, attention_mask=tm)
                         .last_hidden_state.numpy(), forgegrad_copy(hf), ids, mask, args)


if __name__ == "__main__":
    main()
