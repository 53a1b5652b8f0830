"""The encoder-decoders' lean decode step with bfloat16 and int8 weight-only layers against their Tensor decode:
a T5-small-shaped checkpoint (random weights, saved in bfloat16), 128 input tokens, 64 greedy tokens, 1 thread,
best of 3 generate calls each way (a forward pre-hook keeps generate on the Tensor path).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python tools/seq2seq_lean_weights.py
"""
import tempfile
import time

import numpy as np
import torch
import transformers

from forgegrad._runtime import set_num_threads
from forgegrad.models import from_pretrained, generate
from forgegrad.quantization import quantize_weight_only


def best_ms(model, ids, new_tokens=64, rounds=3) -> float:
    generate(model, ids, max_new_tokens=4, eos_token_id=None)  # warm-up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        generate(model, ids, max_new_tokens=new_tokens, eos_token_id=None)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main():
    set_num_threads(1)
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                                decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    path = tempfile.mkdtemp()
    transformers.T5ForConditionalGeneration(cfg).to(torch.bfloat16).save_pretrained(path)
    ids = np.random.RandomState(0).randint(2, 32000, (1, 128))
    for kind in ("bfloat16", "int8"):
        model = from_pretrained(path, dtype="bfloat16") if kind == "bfloat16" else quantize_weight_only(
            from_pretrained(path))
        lean = best_ms(model, ids)
        hook = model.decoder.block[0].layer[0].register_forward_pre_hook(lambda module, args: None)
        tensor = best_ms(model, ids)
        hook.remove()
        print(f"{kind}: lean step {lean:.0f} ms, Tensor decode {tensor:.0f} ms ({tensor / lean:.2f}x)")


if __name__ == "__main__":
    main()
