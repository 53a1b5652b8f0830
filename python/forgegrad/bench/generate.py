"""The `generate` suite: text generation from Hugging Face checkpoints, forgegrad against transformers
on torch with the same weights (random, at real sizes), greedy, KV cache on, batch 1.

Workloads per model: prefill of a 128-token prompt (one forward filling the cache, the last
position's logits) and generation of 64 new tokens after it; the decode row is derived from the two
(generation minus prefill, per new token). The models are GPT-2 small (12 layers, 768 wide, 12 heads,
vocab 50257), a Llama-style decoder (8 layers, hidden 1024, 16 query / 4 key-value heads, SwiGLU
2816, vocab 32000), Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 query / 2 key-value heads with
biases, SwiGLU 4864, vocab 151936 tied: 494 M weights) and Gemma 3 270M's (18 layers, hidden 640, 4 query /
1 key-value heads of 256, vocab 262144 tied, windows of 512 on five layers in six); --quick uses 2-layer
versions. Decode at batch 1 streams every weight once per token, so the suite also reports the bandwidth
it reaches (weight bytes per token / time per token) against what numpy's BLAS reaches streaming a matrix
the same way (sgemv over 256 MB). The prefill, generate and decode rows also time onnxruntime on the model
exported with its KV cache (``export_with_past``, the last position's logits; greedy with ``generate_onnx``;
models under 1 GB of weights, which export as one protobuf). Two last rows per model decode with weight-only
Linear layers (``quantization.quantize_weight_only``): int8 against transformers' float32 decode (other
numerics, a quarter of the weight bytes) and onnxruntime's int8 decode of the same model exported with its
cache, and bfloat16 weights against transformers running the model in bfloat16 (half the bytes on both
sides; forgegrad's arithmetic stays float32). Last, an encoder-decoder: T5-small's
shape (6 + 6 layers, d_model 512, 8 heads, feed-forward 2048, vocab 32128) and bart-base's (6 + 6 layers,
d_model 768, 12 heads, feed-forward 3072, vocab 50265), a 128-token input encoded once and 64 tokens generated
greedily, also in onnxruntime on the model exported with its caches (``export_seq2seq``).
"""
from __future__ import annotations

import os
import tempfile
from typing import List, Sequence

import numpy as np

from . import suite
from ._timing import compare, optional_import, ort_session, pinned_threads

PROMPT, NEW = 128, 64
MODELS = {
    "gpt2-small": ("gpt2", dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)),
    "llama-8L-1024-gqa": ("llama", dict(num_hidden_layers=8, hidden_size=1024, num_attention_heads=16,
                                        num_key_value_heads=4, intermediate_size=2816, vocab_size=32000,
                                        max_position_embeddings=2048)),
    "qwen2.5-0.5b": ("qwen2", dict(num_hidden_layers=24, hidden_size=896, num_attention_heads=14,
                                   num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                                   max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1000000.0)),
    "gemma-3-270m": ("gemma3", dict(num_hidden_layers=18, hidden_size=640, num_attention_heads=4, num_key_value_heads=1,
                                    head_dim=256, intermediate_size=2048, vocab_size=262144, sliding_window=512,
                                    query_pre_attn_scalar=256, max_position_embeddings=32768)),
}
# onnxruntime's prefill needs the model exported, weights included, as one protobuf (< 2 GB): the small ones only
ONNX_MAX_WEIGHTS = 1 << 30
RUNTIMES = ("forgegrad", "transformers", "onnxruntime")


def _hf_model(transformers, kind, cfg):
    if kind == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg))
    if kind == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**cfg))
    if kind == "gemma3":
        return transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**cfg))
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))


def read_bandwidth(nbytes: int = 256 << 20) -> float:
    """Bytes/s that numpy's BLAS (OpenBLAS sgemv) streams a float32 matrix of ``nbytes`` at the pinned thread
    count: the same access pattern as a decode step's GEMVs, by the reference library. (A single-stream
    read such as ``a.sum()`` reaches much less: it is latency-bound, one stream of prefetches.)"""
    import time
    cols = 4096
    a = np.ones((nbytes // 4 // cols, cols), np.float32)
    x = np.ones(cols, np.float32)
    best = float("inf")
    for _ in range(4):
        t = time.perf_counter()
        a @ x
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best


def _bytes_per_token(model) -> int:
    """Weight bytes a decode step streams: every parameter but the embedding tables (one row each is
    read), plus the tied LM head, which reads the whole token embedding."""
    from .. import nn
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    total = sum(p.numpy().nbytes for p in model.parameters() if id(p) not in tables)
    if model.tied:
        embed = model.transformer.wte if hasattr(model, "transformer") else model.model.embed_tokens
        total += embed.weight.numpy().nbytes
    return total


def paired_models(kind, cfg):
    """(transformers model with random weights, forgegrad's from_pretrained of its checkpoint, prompt ids,
    the same as a torch tensor), after checking that both give the same 8 greedy tokens (what makes
    their timings comparable)."""
    import torch
    import transformers

    from ..models.hf import from_pretrained, generate
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf = _hf_model(transformers, kind, cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = from_pretrained(tmp)
    ids = np.random.default_rng(0).integers(0, cfg["vocab_size"], (1, PROMPT))
    t_ids = torch.tensor(ids)
    with torch.no_grad():
        ref = hf.generate(t_ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0).numpy()
    # eos_token_id=None: every row runs all its tokens, as min_new_tokens makes transformers run them
    assert np.array_equal(generate(ours, ids, max_new_tokens=8, eos_token_id=None), ref), \
        "forgegrad and transformers disagree"
    return hf, ours, ids, t_ids


def _onnxruntime_runs(model, ids, threads):
    """onnxruntime on the model exported with its KV cache (``export_with_past``, the last position's logits):
    (prefill: the prompt with no past, generate: NEW greedy tokens with ``generate_onnx``), or None without
    onnx/onnxruntime. Its first 8 tokens are checked against forgegrad's."""
    ort, onnx = optional_import("onnxruntime"), optional_import("onnx")
    if ort is None or onnx is None:
        return None
    from ..models.hf import export_with_past, generate, generate_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "decoder.onnx")
        export_with_past(model, path, logits_to_keep=1, verify=False)  # tests/test_hf_onnx_past.py verifies
        sess = ort_session(ort, path, threads)
    same = generate_onnx(sess, ids, max_new_tokens=8), generate(model, ids, max_new_tokens=8, eos_token_id=None)
    assert np.array_equal(*same), "forgegrad and onnxruntime disagree"
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for i in sess.get_inputs()[2:]:
        feed[i.name] = np.zeros((ids.shape[0], i.shape[1], 0, i.shape[3]), np.float32)
    return (lambda: sess.run(None, feed)), (lambda: generate_onnx(sess, ids, max_new_tokens=NEW))


def _rows_for(name, threads, quick):
    torch, transformers = optional_import("torch"), optional_import("transformers")
    from ..models.hf import generate
    from .. import no_grad
    kind, cfg = MODELS[name]
    cfg = dict(cfg)
    if quick:
        cfg["n_layer" if kind == "gpt2" else "num_hidden_layers"] = 2
    label = name if not quick else name + " (2 layers)"
    if torch is None or transformers is None:
        return []
    hf, ours, ids, t_ids = paired_models(kind, cfg)
    weight_bytes = _bytes_per_token(ours)
    stored = sum(p.numpy().nbytes for p in ours.parameters())
    ort_runs = _onnxruntime_runs(ours, ids, threads) if stored <= ONNX_MAX_WEIGHTS else None
    ort_prefill, ort_generate = ort_runs or (None, None)

    from ..nn.utils import freeze
    ours = freeze(ours, inplace=True)  # weights packed once for the prompt's GEMMs (same tokens, bit for bit; no copy)

    def fg_prefill():
        with no_grad():
            return ours(ids, cache=ours.new_cache(1, PROMPT + NEW), logits_to_keep=1)

    def hf_prefill():
        with torch.no_grad():
            return hf(t_ids, use_cache=True, logits_to_keep=1)

    def hf_generate():
        with torch.no_grad():
            return hf.generate(t_ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)

    rows = []
    with pinned_threads(threads):
        repeat = 3
        pre = compare({"forgegrad": fg_prefill, "transformers": hf_prefill, "onnxruntime": ort_prefill},
                      repeat=repeat, min_time=0.0, warmup=1)
        gen = compare({"forgegrad": lambda: generate(ours, ids, max_new_tokens=NEW, eos_token_id=None),
                       "transformers": hf_generate, "onnxruntime": ort_generate}, repeat=repeat, min_time=0.0, warmup=1)
    note = {"note": "onnxruntime runs the model exported with its KV cache (export_with_past)"} if ort_runs else {}
    rows.append({"workload": f"{label} prefill {PROMPT} tokens", "threads": threads, "seconds": pre, **note})
    rows.append({"workload": f"{label} generate {NEW} tokens (greedy)", "threads": threads, "seconds": gen})
    decode = {k: (gen[k] - pre[k]) / NEW if gen.get(k) and pre.get(k) else None for k in RUNTIMES}
    row = {"workload": f"{label} decode per token", "threads": threads, "seconds": decode}
    if decode["forgegrad"]:
        row["note"] = (f"{weight_bytes / 1e6:.0f} MB of weights per token: forgegrad "
                       f"{weight_bytes / decode['forgegrad'] / 1e9:.1f} GB/s")
    rows.append(row)
    # the same model with int8 weight-only Linear layers (quantization.quantize_weight_only; a tied head gets
    # an int8 copy): a quarter of the bytes per weight, against transformers' float32 decode
    from ..quantization import quantize_weight_only
    quantized = quantize_weight_only(ours)
    q_decode = _decode_per_token(quantized, ids, threads, repeat)
    # onnxruntime on the same int8 model exported with its cache (its MatMulNBits int8 kernels)
    q_ort = _onnxruntime_runs(quantized, ids, threads) if stored <= ONNX_MAX_WEIGHTS else None
    q_ort_decode = None
    if q_ort is not None:
        with pinned_threads(threads):
            t = compare({"prefill": q_ort[0], "generate": q_ort[1]}, repeat=repeat, min_time=0.0, warmup=1)
        q_ort_decode = (t["generate"] - t["prefill"]) / NEW
    rows.append({"workload": f"{label} decode per token, int8 weight-only (transformers: float32)",
                 "threads": threads, "seconds": {"forgegrad": q_decode, "transformers": decode["transformers"],
                                                 "onnxruntime": q_ort_decode},
                 **({"note": "onnxruntime runs the same int8 model exported with its cache: MatMulNBits with 8 "
                             "bits, which onnxruntime's CPU kernels run far slower than its float32 MatMul (its fast "
                             "path quantizes the activations, other numerics): the speed of the exported file, not "
                             "onnxruntime's best int8"} if q_ort_decode else {})})
    # bfloat16 weights on both sides: forgegrad widens them in its kernels (float32 arithmetic); transformers
    # runs the model in bfloat16 (activations too). Half the bytes per weight either way.
    import copy
    hf_bf16 = copy.deepcopy(hf).to(torch.bfloat16)

    def hf_bf16_run(new):
        with torch.no_grad():
            if new == 0:
                return hf_bf16(t_ids, use_cache=True, logits_to_keep=1)
            return hf_bf16.generate(t_ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)

    with pinned_threads(threads):
        times = compare({"prefill": lambda: hf_bf16_run(0), "generate": lambda: hf_bf16_run(NEW)}, repeat=repeat,
                        min_time=0.0, warmup=1)
    rows.append({"workload": f"{label} decode per token, bfloat16 weights", "threads": threads,
                 "seconds": {"forgegrad": _decode_per_token(quantize_weight_only(ours, dtype="bfloat16"), ids, threads,
                                                            repeat),
                             "transformers": (times["generate"] - times["prefill"]) / NEW},
                 "note": "transformers runs in bfloat16; forgegrad widens the weights to float32 in its kernels"})
    return rows


def _decode_per_token(model, ids, threads, repeat) -> float:
    """Seconds per new token of ``model`` (generation of NEW tokens minus the prefill, over NEW; the prefill
    without a graph, as generate runs it)."""
    from .. import no_grad
    from ..models.hf import generate

    def prefill():
        with no_grad():
            return model(ids, cache=model.new_cache(1, PROMPT + NEW), logits_to_keep=1)

    with pinned_threads(threads):
        t = compare({"prefill": prefill,
                     "generate": lambda: generate(model, ids, max_new_tokens=NEW, eos_token_id=None)},
                    repeat=repeat, min_time=0.0, warmup=1)
    return (t["generate"] - t["prefill"]) / NEW


T5_SMALL = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
# bart-base's shape; its end token moved to the last id, which random weights do not pick (transformers'
# min_new_tokens bans the end token, forgegrad's eos_token_id=None does not: the tokens must still agree)
BART_BASE = dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
                 eos_token_id=50264, forced_eos_token_id=None)
SEQ2SEQ = {"t5-small": ("t5", T5_SMALL), "bart-base": ("bart", BART_BASE)}


def _t5_rows(threads, quick) -> List[dict]:
    """The encoder-decoders' rows (T5-small's and bart-base's shapes)."""
    return [row for name in SEQ2SEQ for row in _seq2seq_rows(name, threads, quick)]


def _seq2seq_rows(name, threads, quick) -> List[dict]:
    """Encode PROMPT tokens and generate NEW, forgegrad against transformers and onnxruntime (same tokens)."""
    torch, transformers = optional_import("torch"), optional_import("transformers")
    if torch is None or transformers is None:
        return []
    from ..models.hf import from_pretrained, generate
    transformers.logging.set_verbosity_error()
    kind, cfg = SEQ2SEQ[name]
    if quick:
        cfg = dict(cfg, num_layers=2) if kind == "t5" else dict(cfg, encoder_layers=2, decoder_layers=2)
    torch.manual_seed(0)
    if kind == "t5":
        hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg)).eval()
    else:
        hf = transformers.BartForConditionalGeneration(transformers.BartConfig(**cfg)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = from_pretrained(tmp)
    ids = np.random.default_rng(0).integers(2, cfg["vocab_size"] - 1, (1, PROMPT))
    t_ids = torch.tensor(ids)

    def hf_generate(n):
        with torch.no_grad():
            return hf.generate(t_ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1)

    # the same tokens on both sides (transformers' min_new_tokens keeps it from stopping at </s>)
    ref = hf_generate(8).numpy()
    assert np.array_equal(generate(ours, ids, max_new_tokens=8, eos_token_id=None, num_beams=1), ref), \
        f"forgegrad and transformers disagree on {name}"
    ort_generate = _onnxruntime_seq2seq(ours, ids, threads)
    with pinned_threads(threads):
        t = compare({"forgegrad": lambda: generate(ours, ids, max_new_tokens=NEW, eos_token_id=None, num_beams=1),
                     "transformers": lambda: hf_generate(NEW), "onnxruntime": ort_generate}, repeat=3, min_time=0.0,
                    warmup=1)
    label = name + (" (2 layers)" if quick else "")
    return [{"workload": f"{label} encode {PROMPT} tokens + generate {NEW} (greedy)", "threads": threads,
             "seconds": t, **({"note": "onnxruntime runs the model exported with its caches (export_seq2seq: "
                                       "encoder.onnx, decoder.onnx)"} if ort_generate else {})}]


def _onnxruntime_seq2seq(model, ids, threads):
    """onnxruntime generating NEW tokens greedily on the encoder-decoder exported with its caches
    (``export_seq2seq``, the last position's logits; ``generate_onnx_seq2seq``), or None without
    onnx/onnxruntime. Its first 8 tokens are checked against forgegrad's."""
    ort, onnx = optional_import("onnxruntime"), optional_import("onnx")
    if ort is None or onnx is None:
        return None
    from ..models.hf import export_seq2seq, generate, generate_onnx_seq2seq

    with tempfile.TemporaryDirectory() as tmp:
        export_seq2seq(model, tmp, logits_to_keep=1, verify=False)  # tests/test_hf_onnx_seq2seq.py verifies
        enc, dec = (ort_session(ort, os.path.join(tmp, f), threads) for f in ("encoder.onnx", "decoder.onnx"))

    def run(n):
        return generate_onnx_seq2seq(enc, dec, ids, decoder_start_token_id=model.decoder_start_token_id,
                                     max_new_tokens=n)

    assert np.array_equal(run(8), generate(model, ids, max_new_tokens=8, eos_token_id=None, num_beams=1)), \
        "forgegrad and onnxruntime disagree on an encoder-decoder"
    return lambda: run(NEW)


@suite("generate")
def generate_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    rows = []
    for name in MODELS:
        for n in threads:
            rows.extend(_rows_for(name, n, quick))
    for n in threads:
        rows.extend(_t5_rows(n, quick))
    for n in threads if rows else ():
        with pinned_threads(n):
            bw = read_bandwidth()
        for row in rows:
            if "GB/s" in row.get("note", "") and row["threads"] == n:  # the decode rows
                row["note"] += f" (numpy/OpenBLAS sgemv streams {bw / 1e9:.1f} GB/s at {n} threads here)"
    return rows


def _demo():  # pragma: no cover - python -m forgegrad.bench.generate
    from . import format_table
    print(format_table(generate_suite([1], quick=bool(os.environ.get("QUICK")))))


if __name__ == "__main__":  # pragma: no cover
    _demo()
