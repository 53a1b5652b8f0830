"""The `hf-encoders` suite: Hugging Face speech and encoder models, forgegrad against transformers (eager, on torch)
with the same random weights at real sizes, and against onnxruntime on forgegrad's own ONNX export.

Whisper at whisper-tiny's shape (4 + 4 layers, d_model 384, 6 heads, vocab 51865): the encoder on one 30-second
window (80 x 3000 log-mel features), and short-form generate (language given, greedy) of the encoder and NEW new
tokens; onnxruntime runs the graphs ``export_seq2seq`` writes (its encoder graph also computes the cross-attention
keys and values, which forgegrad and transformers leave to the decoder) and ``generate_onnx_whisper``. DeBERTa-v3
at deberta-v3-small's shape (6 layers, hidden 768, 12 heads, vocab 128100) and MPNet at all-mpnet-base-v2's (12
layers, hidden 768, 12 heads): the encoder's forward at batch 1 and 8 of 128 tokens, forgegrad's
``nn.utils.freeze`` copy and the plain model each in a row against the same transformers and onnxruntime samples
(onnxruntime runs the model exported with dynamic batch and length). --quick uses 2-layer, 64-wide versions and
batches of 32 tokens.

The outputs are checked before anything is timed, and what the check found is printed under the table: the same
tokens on every side for Whisper, the largest difference from transformers' last_hidden_state for the encoders. A
mismatch is reported in that note (``MISMATCH``), not raised: the row is still timed. ``tools/whisper_speed.py`` and
``tools/deberta_speed.py`` build their models here.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import suite
from ._timing import clock_name, compare_samples, optional_import, ort_session, pinned_threads, summarize

NEW = 32  # Whisper's new tokens
TOKENS, BATCHES = 128, (1, 8)  # DeBERTa's inputs
TOLERANCE = 1e-3  # largest difference from transformers' hidden states that still counts as the same output
RUNTIMES = ("forgegrad", "transformers", "onnxruntime")

# openai/whisper-tiny's config.json, the generation settings the tokens depend on (the ids of <|en|>, the tasks,
# <|notimestamps|>) written into generation_config.json as the Hub's checkpoint has them
WHISPER_TINY = dict(vocab_size=51865, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
                    encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
                    suppress_tokens=[], begin_suppress_tokens=[220, 50257])
WHISPER_QUICK = dict(WHISPER_TINY, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
# sentence-transformers/all-mpnet-base-v2's config.json
MPNET_BASE = dict(vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, hidden_act="gelu", max_position_embeddings=514, layer_norm_eps=1e-5,
                  relative_attention_num_buckets=32, pad_token_id=1, bos_token_id=0, eos_token_id=2)
MPNET_QUICK = dict(MPNET_BASE, vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128)
# microsoft/deberta-v3-small's config.json
V3_SMALL = dict(vocab_size=128100, hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072,
                hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                max_position_embeddings=512, type_vocab_size=0, initializer_range=0.02, layer_norm_eps=1e-7,
                relative_attention=True, max_relative_positions=-1, position_buckets=256, norm_rel_ebd="layer_norm",
                share_att_key=True, pos_att_type="p2c|c2p", position_biased_input=False, pad_token_id=0)
V3_QUICK = dict(V3_SMALL, vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=128, position_buckets=32)


def whisper_pair(directory: str, quick: bool = False):
    """(forgegrad's model, transformers' WhisperForConditionalGeneration) with the same random weights, both loaded
    from the checkpoint written to ``directory`` (whisper-tiny's shape; 2 layers, 64 wide with ``quick``)."""
    import torch
    import transformers

    from ..models.hf import from_pretrained
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    hf = transformers.WhisperForConditionalGeneration(
        transformers.WhisperConfig(**(WHISPER_QUICK if quick else WHISPER_TINY))).eval()
    g = hf.generation_config
    g.lang_to_id, g.task_to_id = {"<|en|>": 50259}, {"translate": 50358, "transcribe": 50359}
    g.no_timestamps_token_id, g.is_multilingual = 50363, True
    hf.save_pretrained(directory)
    file = os.path.join(directory, "generation_config.json")  # as the Hub's files: not marked as made from config
    with open(file) as f:
        settings = json.load(f)
    settings.pop("_from_model_config", None)
    with open(file, "w") as f:
        json.dump(settings, f)
    return from_pretrained(directory), transformers.WhisperForConditionalGeneration.from_pretrained(directory).eval()


def whisper_features(batch: int = 1, seconds: float = 30.0, seed: int = 0) -> np.ndarray:
    """Random log-mel features, (batch, 80, 100 frames a second)."""
    return np.random.default_rng(seed).standard_normal((batch, 80, int(seconds * 100))).astype(np.float32)


def whisper_onnx(model, directory: str) -> Optional[tuple]:
    """Paths of the encoder and decoder graphs ``export_seq2seq`` writes for ``model`` under ``directory``/onnx
    (verified against forgegrad in onnxruntime), or None without onnx/onnxruntime."""
    if optional_import("onnxruntime") is None or optional_import("onnx") is None:
        return None
    from ..models.hf import export_seq2seq
    out = os.path.join(directory, "onnx")
    export_seq2seq(model, out)
    return os.path.join(out, "encoder.onnx"), os.path.join(out, "decoder.onnx")


def _token_check(ours: np.ndarray, others: Dict[str, Optional[np.ndarray]]) -> str:
    """The note saying whether every other runtime's tokens equal forgegrad's, and where the first differs."""
    parts = []
    for name, theirs in others.items():
        if theirs is None:
            continue
        if theirs.shape == ours.shape and np.array_equal(theirs, ours):
            parts.append(f"{name} the same")
            continue
        n = min(ours.shape[1], theirs.shape[1])
        diff = np.nonzero((ours[:, :n] != theirs[:, :n]).any(axis=0))[0]
        where = f"from token {diff[0]}" if diff.size else f"{theirs.shape[1]} tokens against {ours.shape[1]}"
        parts.append(f"MISMATCH: {name} differs {where}")
    return f"{ours.shape[1]} new tokens; " + ", ".join(parts)


def whisper_rows(threads: Sequence[int], quick: bool, repeat: int = 3, tokens: int = NEW,
                 onnx: bool = True) -> List[dict]:
    """The encoder and generate (``tokens`` new tokens) rows of Whisper at each thread count, onnxruntime's too
    with ``onnx`` (none without torch and transformers)."""
    torch, ort = optional_import("torch"), optional_import("onnxruntime")
    if torch is None or optional_import("transformers") is None:
        return []
    from .. import no_grad
    from ..models.hf import generate_onnx_whisper
    label = "whisper-tiny" + (" (2 layers, 64 wide)" if quick else "")
    kw = dict(language="en", max_new_tokens=tokens)
    x = whisper_features()
    tx = torch.tensor(x)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, hf = whisper_pair(tmp, quick)
        paths = whisper_onnx(model, tmp) if onnx else None
        for n in threads:
            with pinned_threads(n):
                enc = dec = None
                if paths is not None:
                    enc, dec = (ort_session(ort, p, n) for p in paths)

                def fg_encode():
                    with no_grad():
                        return model.encode(x)

                def hf_encode():
                    with torch.no_grad():
                        return hf.model.encoder(tx)

                def hf_generate():
                    with torch.no_grad():
                        return hf.generate(tx, **kw)

                ort_generate = (lambda: generate_onnx_whisper(enc, dec, x, **kw)) if enc is not None else None
                ours = model.generate(x, **kw)  # the check's calls are the warm-up too
                note = _token_check(ours, {"transformers": hf_generate().numpy(),
                                           "onnxruntime": ort_generate() if ort_generate else None})
                encode = {"forgegrad": fg_encode, "transformers": hf_encode,
                          "onnxruntime": (lambda: enc.run(None, {"input_features": x})) if enc is not None else None}
                gen = {"forgegrad": lambda: model.generate(x, **kw), "transformers": hf_generate,
                       "onnxruntime": ort_generate}
                if not onnx:  # not asked for: no column (a runtime that is not installed shows as absent)
                    del encode["onnxruntime"], gen["onnxruntime"]
                rows.append(_row(f"{label} encoder, one 30 s window", n, encode, repeat,
                                 "onnxruntime's encoder graph (export_seq2seq) also projects the cross-attention keys "
                                 "and values" if enc is not None else None))
                rows.append(_row(f"{label} encoder + {tokens} tokens (greedy)", n, gen, repeat, note))
    return rows


@contextlib.contextmanager
def checkpoint_copy(hf):
    """(forgegrad's from_pretrained of the checkpoint transformers' ``hf.save_pretrained`` writes, its folder) while
    the temporary folder lives (to export or read more from it)."""
    import transformers

    from ..models.hf import from_pretrained
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        yield from_pretrained(tmp), tmp


def forgegrad_copy(hf):
    """forgegrad's model with the weights of transformers' ``hf``, read from the checkpoint hf writes."""
    with checkpoint_copy(hf) as (model, _):
        return model


def _encoder_pair(hf_class, config_class, config: dict):
    """(forgegrad's model, transformers' ``hf_class``) with the same random weights of ``config``."""
    import torch
    import transformers
    torch.manual_seed(0)
    hf = getattr(transformers, hf_class)(getattr(transformers, config_class)(**config)).eval()
    return forgegrad_copy(hf), hf


def deberta_pair(quick: bool = False):
    """(forgegrad's model, transformers' DebertaV2Model) with the same random weights (deberta-v3-small's shape;
    2 layers, 64 wide with ``quick``)."""
    return _encoder_pair("DebertaV2Model", "DebertaV2Config", V3_QUICK if quick else V3_SMALL)


def mpnet_pair(quick: bool = False):
    """(forgegrad's model, transformers' MPNetModel) with the same random weights (all-mpnet-base-v2's shape; 2
    layers, 64 wide with ``quick``)."""
    return _encoder_pair("MPNetModel", "MPNetConfig", MPNET_QUICK if quick else MPNET_BASE)


def deberta_onnx(model, path: str) -> Optional[str]:
    """``path``, where ``model`` is written exported with dynamic batch and length (inputs input_ids and
    attention_mask, output last_hidden_state), or None without onnx/onnxruntime."""
    if optional_import("onnxruntime") is None or optional_import("onnx") is None:
        return None
    from ..onnx import export
    ids = np.arange(1, 14, dtype=np.int64)[None]
    export(model, (ids, np.ones_like(ids)), path, input_names=["input_ids", "attention_mask"], verify=False,
           dynamic_axes={n: {0: "batch", 1: "tokens"} for n in ("input_ids", "attention_mask")})
    return path


def deberta_rows(threads: Sequence[int], quick: bool, repeat: int = 3, batches: Optional[Sequence[int]] = None,
                 tokens: Optional[int] = None, onnx: bool = True) -> List[dict]:
    """Per batch (default BATCHES; 1 and 2 with ``quick``) of ``tokens`` tokens (default TOKENS; 32) and thread
    count, two rows timed in the same rounds: forgegrad's nn.utils.freeze copy, and the plain model, each against
    transformers and, with ``onnx``, onnxruntime (none without torch and transformers)."""
    return _encoder_rows("deberta-v3-small", deberta_pair, V3_QUICK if quick else V3_SMALL, threads, quick, repeat,
                         batches, tokens, onnx)


def mpnet_rows(threads: Sequence[int], quick: bool, repeat: int = 3, batches: Optional[Sequence[int]] = None,
               tokens: Optional[int] = None, onnx: bool = True) -> List[dict]:
    """``deberta_rows`` for MPNet at all-mpnet-base-v2's shape (relative-position buckets in every layer)."""
    return _encoder_rows("all-mpnet-base-v2", mpnet_pair, MPNET_QUICK if quick else MPNET_BASE, threads, quick,
                         repeat, batches, tokens, onnx)


def _encoder_rows(label: str, pair, cfg: dict, threads: Sequence[int], quick: bool, repeat: int,
                  batches: Optional[Sequence[int]], tokens: Optional[int], onnx: bool) -> List[dict]:
    """The rows of ``deberta_rows`` for the encoder ``pair(quick)`` builds."""
    torch, ort = optional_import("torch"), optional_import("onnxruntime")
    if torch is None or optional_import("transformers") is None:
        return []
    from .. import no_grad
    from ..nn.utils import freeze
    label += " (2 layers, 64 wide)" if quick else ""
    tokens = tokens or (32 if quick else TOKENS)
    batches = batches or ((1, 2) if quick else BATCHES)
    model, hf = pair(quick)
    frozen = freeze(model)
    rng = np.random.default_rng(0)
    inputs = {b: rng.integers(1, cfg["vocab_size"], (b, tokens)) for b in batches}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = deberta_onnx(model, os.path.join(tmp, "model.onnx")) if onnx else None
        for n in threads:
            with pinned_threads(n):
                sess = ort_session(ort, path, n) if path is not None else None
                for b, ids in inputs.items():
                    tids = torch.tensor(ids)
                    feed = {"input_ids": ids.astype(np.int64), "attention_mask": np.ones(ids.shape, np.int64)}

                    def run(fn, torch_side=False):
                        def call():
                            with (torch.no_grad() if torch_side else no_grad()):
                                return fn()
                        return call

                    fns = {"forgegrad": run(lambda: frozen(ids)), "plain": run(lambda: model(ids)),
                           "transformers": run(lambda: hf(tids), torch_side=True),
                           "onnxruntime": (lambda: sess.run(None, feed)) if sess is not None else None}
                    ref = fns["transformers"]().last_hidden_state.numpy()
                    outs = {"forgegrad": fns["forgegrad"]().last_hidden_state.numpy(),
                            "plain model": fns["plain"]().last_hidden_state.numpy(),
                            "onnxruntime": fns["onnxruntime"]()[0] if sess is not None else None}
                    note = "largest difference from transformers' last_hidden_state: " + ", ".join(
                        f"{k} {np.abs(v - ref).max():.1e}" + (" MISMATCH" if np.abs(v - ref).max() > TOLERANCE else "")
                        for k, v in outs.items() if v is not None)
                    samples = compare_samples(fns, repeat=repeat, warmup=0, min_time=0.0)
                    shape = f"{label} forward {b} x {tokens}"
                    for name, subject in ((f"{shape} (nn.utils.freeze copy)", "forgegrad"),
                                          (f"{shape} (plain model)", "plain")):
                        got = {"forgegrad": samples[subject], "transformers": samples["transformers"]}
                        if onnx:
                            got["onnxruntime"] = samples["onnxruntime"]
                        rows.append({"workload": name, "threads": n, "seconds": summarize(got), "samples": got,
                                     "clock": clock_name(), **({"note": note} if subject == "forgegrad" else {})})
    return rows


def _row(workload: str, threads: int, fns: Dict[str, Optional[Callable[[], object]]], repeat: int,
         note: Optional[str]) -> dict:
    """One row: every runtime of ``fns`` timed in ``repeat`` interleaved rounds (its warm-up already run)."""
    samples = compare_samples(fns, repeat=repeat, warmup=0, min_time=0.0)
    row = {"workload": workload, "threads": threads, "seconds": summarize(samples), "samples": samples,
           "clock": clock_name()}
    if note:
        row["note"] = note
    return row


@suite("hf-encoders")
def hf_encoders_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    """Whisper's rows, then DeBERTa-v3's, then MPNet's."""
    repeat = 2 if quick else 3
    return whisper_rows(threads, quick, repeat) + deberta_rows(threads, quick, repeat) + mpnet_rows(threads, quick,
                                                                                                  repeat)
