"""Whisper in onnxruntime: ``export_seq2seq(model, DIR)`` writes a WhisperForConditionalGeneration's two graphs,
each verified in onnxruntime against forgegrad, and ``generate_onnx_whisper`` transcribes on them.

- ``DIR/encoder.onnx``: ``input_features`` (batch, num_mel_bins, frames) float32, the frames fixed to the
  model's window (2 * max_source_positions: ``WhisperFeatureExtractor`` pads to it; the encoder's position
  table has one row per encoder position) -> ``last_hidden_state``
  (batch, max_source_positions, d_model) and every decoder layer's cross-attention keys and values
  ``present.<i>.encoder.key`` / ``.value``;
- ``DIR/decoder.onnx``: ``input_ids`` and the past keys and values, as BART's (onnx_seq2seq.py) but with no
  ``encoder_attention_mask`` -> ``logits`` and ``present.<i>.decoder.key`` / ``.value``. Its metadata
  (``forgegrad.whisper``) holds the checkpoint's config and generation settings as JSON: the start, language,
  task and end tokens, the suppressed tokens, the position limit, which ``generate_onnx_whisper`` reads so that
  the two .onnx files are all it needs.
"""
from __future__ import annotations

import json
import numbers
from typing import Optional, Sequence, Union

import numpy as np

from .onnx_export import session_of

__all__ = ["generate_onnx_whisper"]

SETTINGS_KEY = "forgegrad.whisper"
_WHO = "generate_onnx_whisper"


def settings_metadata(model) -> dict:
    """The decoder graph's metadata: what whisper_generate's helpers read of ``model``."""
    return {SETTINGS_KEY: json.dumps({"config": model.config,
                                      "generation_config": getattr(model, "generation_config", None),
                                      "decoder_start_token_id": model.decoder_start_token_id})}


class _Exported:
    """The settings of an exported Whisper under the names whisper_generate's helpers read on a model: ``config``,
    ``generation_config``, ``decoder_start_token_id``, ``max_positions``, ``vocab_size``."""

    def __init__(self, session):
        text = session.get_modelmeta().custom_metadata_map.get(SETTINGS_KEY)
        if text is None:
            raise ValueError(f"{_WHO}: the decoder graph has no Whisper settings ({SETTINGS_KEY} metadata): export "
                             "a WhisperForConditionalGeneration with export_seq2seq or `forgegrad export`")
        settings = json.loads(text)
        self.config, self.generation_config = settings["config"], settings["generation_config"]
        self.decoder_start_token_id = int(settings["decoder_start_token_id"])
        self.max_positions = int(self.config["max_target_positions"])
        self.vocab_size = int(self.config["vocab_size"])


def _features(input_features, shape) -> np.ndarray:
    """``input_features`` (batch, mels, frames <= window) as float32 (batch, mels, window) for the encoder graph
    of input ``shape`` (batch, mels, window): fewer frames padded with zeros, as transformers pads them."""
    x = np.asarray(input_features.numpy() if hasattr(input_features, "numpy") else input_features)
    mels, window = shape[1], shape[2]
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] != mels or not 1 <= x.shape[2] <= window or x.dtype.kind != "f":
        raise ValueError(f"{_WHO}: input_features must be float (batch, {mels}, frames) log-mel features of at most "
                         f"one window ({window} frames: long-form audio is not supported here), got {x.dtype} of "
                         f"shape {x.shape}")
    out = np.zeros((x.shape[0], mels, window), np.float32)
    out[:, :, :x.shape[2]] = x
    return out


def generate_onnx_whisper(encoder, decoder, input_features, language: Union[str, Sequence[str], None] = None,
                          task: Optional[str] = None, max_new_tokens: Optional[int] = None) -> np.ndarray:
    """The tokens ``model.generate(input_features, language=, task=, max_new_tokens=)`` returns (short form,
    greedy), decoded in onnxruntime on the graphs ``export_seq2seq`` wrote for a Whisper model (``encoder`` and
    ``decoder``: sessions or .onnx paths): the encoder once, the language detected from the decoder's first step
    where none is given, then the prompt (start, language, task, no-timestamps tokens) and one decoder call per new
    token on the cache it returned, with the checkpoint's suppressed and begin-suppressed tokens. ``language``,
    ``task`` and ``max_new_tokens`` as whisper_generate's ``generate``; the settings come from the decoder graph's
    metadata (greedy whatever generation_config.json says of sampling). Returns (batch, n) int64: the new tokens
    without the prompt, each row without its end token and padded on the right to the longest."""
    from .logits_processors import generation_source
    from .sampling import Sampler
    from .whisper_generate import _prompts, _token_list, _WindowLimit
    from .whisper_timestamps import joined, trim_window

    enc, dec = session_of(encoder), session_of(decoder)
    enc_inputs, dec_inputs = enc.get_inputs(), dec.get_inputs()
    if [i.name for i in enc_inputs] != ["input_features"] or dec_inputs[0].name != "input_ids" or \
            any(i.name == "encoder_attention_mask" for i in dec_inputs):
        raise ValueError(f"{_WHO}: the graphs are not export_seq2seq's encoder and decoder of a Whisper model (inputs "
                         f"{[i.name for i in enc_inputs]} and {[i.name for i in dec_inputs]})")
    model = _Exported(dec)
    features = _features(input_features, enc_inputs[0].shape)
    gc = dict(generation_source(model))
    B, vocab = features.shape[0], model.vocab_size
    # present.<i>.encoder.* of the encoder are the decoder's past_key_values.<i>.encoder.*
    outputs = enc.run(None, {"input_features": features})
    cross = {"past_key_values." + o.name[len("present."):]: a for o, a in zip(enc.get_outputs()[1:], outputs[1:])}
    self_names = [i.name for i in dec_inputs[1:] if ".decoder." in i.name]
    empty = {i.name: np.zeros((B, i.shape[1], 0, i.shape[3]), np.float32) for i in dec_inputs if i.name in self_names}

    def step(ids: np.ndarray, past: dict):
        logits, *present = dec.run(None, {"input_ids": ids, **cross, **past})
        return logits[:, -1], dict(zip(self_names, present))

    def detect(lang_ids):
        logits, _ = step(np.full((B, 1), model.decoder_start_token_id, np.int64), empty)
        return [lang_ids[i] for i in logits[:, lang_ids].argmax(-1)]

    prompt = np.array(_prompts(model, gc, B, language, task, detect, False), np.int64)  # no timestamps
    max_new_tokens = _WindowLimit(model, gc, max_new_tokens).next(prompt.shape[1])
    suppress = _token_list(gc.get("suppress_tokens", model.config.get("suppress_tokens")), vocab, "suppress_tokens")
    begin = _token_list(gc.get("begin_suppress_tokens", model.config.get("begin_suppress_tokens")), vocab,
                        "begin_suppress_tokens")
    eos_value = gc.get("eos_token_id")
    eos = _token_list(eos_value, vocab, "eos_token_id")
    pad = gc.get("pad_token_id")
    pad = (eos[0] if eos else 0) if pad is None else _token_list(pad, vocab, "pad_token_id")[0]
    greedy = Sampler(False)
    out = np.full((B, max_new_tokens), pad, np.int64)
    finished = np.zeros(B, bool)
    logits, past = step(prompt, empty)
    n = 0
    while n < max_new_tokens:
        scores = np.array(logits, np.float32)
        if suppress:
            scores[:, suppress] = -np.inf
        if n == 0 and begin:
            scores[:, begin] = -np.inf
        nxt = greedy(scores)
        if eos:
            nxt = np.where(finished, pad, nxt)
            finished |= np.isin(nxt, eos)
        out[:, n] = nxt
        n += 1
        if finished.all() or n == max_new_tokens:
            break
        logits, past = step(nxt[:, None].astype(np.int64), past)
    eos_value = int(eos_value) if isinstance(eos_value, numbers.Integral) else eos_value
    return joined([[{"tokens": trim_window(row, pad, eos_value)}] for row in out[:, :n]], pad)
