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

from _encoder_bench import compare_encoders, parse_args


def main() -> None:
    args = parse_args(__doc__)

    import numpy as np
    import torch
    import transformers

    from forgegrad.bench.hf_encoders import forgegrad_copy

    ids = np.random.default_rng(0).integers(2, 1000, (1, args.length))
    mask = np.ones_like(ids)
    torch.manual_seed(0)
    cfg = transformers.PegasusXConfig(vocab_size=1000, d_model=768, encoder_attention_heads=12,
                                      decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                                      encoder_layers=args.layers, decoder_layers=1, block_size=512,
                                      num_global_tokens=128, stagger_local_blocks=True, dropout=0.0)
    hf = transformers.PegasusXForConditionalGeneration(cfg).eval()
    ti, tm = torch.tensor(ids), torch.tensor(mask)
    compare_encoders("PEGASUS-X encoder", lambda: hf.model.encoder(input_ids=ti, attention_mask=tm)
                     .last_hidden_state.numpy(), forgegrad_copy(hf), ids, mask, args)


if __name__ == "__main__":
    main()
