"""Whisper in onnxruntime: ``export_seq2seq(model, DIR)`` writes a WhisperForConditionalGeneration's two graphs,
each verified in onnxruntime against forgegrad, and ``generate_onnx_whisper`` transcribes on them.

- ``DIR/encoder.onnx``: ``input_features`` (batch, num_mel_bins, frames) float32, the frames fixed to the
  model's window (2 * max_source_positions: ``WhisperFeatureExtractor`` pads to it; the encoder's position
  table has one row per encoder position) -> ``last_hidden_state``
  (batch, max_source_positions, d_model) and every decoder layer's cross-attention keys and values
  ``present.<i>.encoder.key`` / ``.value``;
- ``DIR/decoder.onnx``: ``input_ids``, ``decoder_attention_mask`` (batch, past + new tokens) int64, 0 at left
  padding, and the past keys and values, as BART's (onnx_seq2seq.py) but with no ``encoder_attention_mask`` ->
  ``logits`` and ``present.<i>.decoder.key`` / ``.value``; exported with ``cross_attentions=True``, also
  ``cross_attentions`` (batch, alignment heads, new tokens, encoder positions), the probabilities of
  generation_config.json's alignment heads. Its metadata (``forgegrad.whisper``) holds the checkpoint's config
  and generation settings as JSON: the start, language, task and end tokens, the suppressed tokens, the position
  limit, the alignment heads, which ``generate_onnx_whisper`` reads so that the two .onnx files are all it needs.

``generate_onnx_whisper`` runs whisper_generate's ``generate`` (the code of ``model.generate``: timestamps,
long-form windows, text prompts, the temperature fallback, beam search) with ``OnnxWhisper`` as its steps
(whisper_steps.py): the encoder graph once per window, the decoder graph once per step on the present keys and
values it returned, with the prompt's padding in ``decoder_attention_mask`` (condition_on_prev_tokens with previous
tokens of different lengths per row). Token timestamps read ``cross_attentions`` from one more decoder call
without past over the prompt and the new tokens, as the forgegrad model's alignment pass.

Graphs exported before these inputs and outputs existed still decode what they can: a decoder graph without
``decoder_attention_mask`` refuses left-padded prompts, one without ``cross_attentions`` token timestamps (each a
ValueError that says how to export again).
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np

from .onnx_export import session_of
from .whisper_steps import WhisperSteps

__all__ = ["generate_onnx_whisper"]

SETTINGS_KEY = "forgegrad.whisper"
_WHO = "generate_onnx_whisper"


def settings_metadata(model) -> dict:
    """The decoder graph's metadata: what whisper_generate's helpers read of ``model``."""
    return {SETTINGS_KEY: json.dumps({"config": model.config,
                                      "generation_config": getattr(model, "generation_config", None),
                                      "decoder_start_token_id": model.decoder_start_token_id})}


class OnnxWhisper(WhisperSteps):
    """An exported Whisper's encoder and decoder sessions as whisper_generate's model: the settings it reads
    (``config``, ``generation_config``, ``decoder_start_token_id``, ``max_positions``, ``vocab_size``,
    ``num_frames``, from the decoder graph's metadata and the encoder's input shape) and its steps. The encoded
    windows and cross keys and values are the encoder graph's outputs (``past_key_values.<i>.encoder.*`` of the
    decoder); the cache holds the decoder's present keys and values as numpy arrays. ``cross_attention``: whether
    the decoder graph outputs the alignment heads' ``cross_attentions`` (token timestamps)."""

    def __init__(self, encoder, decoder):
        enc, dec = session_of(encoder), session_of(decoder)
        enc_inputs, dec_inputs = enc.get_inputs(), dec.get_inputs()
        if [i.name for i in enc_inputs] != ["input_features"] or dec_inputs[0].name != "input_ids" or \
                any(i.name == "encoder_attention_mask" for i in dec_inputs):
            raise ValueError(f"{_WHO}: the graphs are not export_seq2seq's encoder and decoder of a Whisper model "
                             f"(inputs {[i.name for i in enc_inputs]} and {[i.name for i in dec_inputs]})")
        text = dec.get_modelmeta().custom_metadata_map.get(SETTINGS_KEY)
        if text is None:
            raise ValueError(f"{_WHO}: the decoder graph has no Whisper settings ({SETTINGS_KEY} metadata): export "
                             "a WhisperForConditionalGeneration with export_seq2seq or `forgegrad export`")
        settings = json.loads(text)
        self.config, self.generation_config = settings["config"], settings["generation_config"]
        self.decoder_start_token_id = int(settings["decoder_start_token_id"])
        self.max_positions = int(self.config["max_target_positions"])
        self.vocab_size = int(self.config["vocab_size"])
        self.num_frames = int(enc_inputs[0].shape[2])
        self._enc, self._dec = enc, dec
        # present.<i>.encoder.* of the encoder are the decoder's past_key_values.<i>.encoder.*
        self._cross_names = ["past_key_values." + o.name[len("present."):] for o in enc.get_outputs()[1:]]
        self._self = [(i.name, int(i.shape[1]), int(i.shape[3])) for i in dec_inputs[1:] if ".decoder." in i.name]
        self._masked = any(i.name == "decoder_attention_mask" for i in dec_inputs)
        outputs = {o.name: o for o in dec.get_outputs()}
        self.cross_attention = "cross_attentions" in outputs
        self._heads = int(outputs["cross_attentions"].shape[1]) if self.cross_attention else 0
        self._outputs = [name for name in outputs if name != "cross_attentions"]  # logits, present.*: the steps'

    def encode(self, window: np.ndarray) -> dict:
        outputs = self._enc.run(None, {"input_features": np.ascontiguousarray(window, np.float32)})
        return dict(zip(self._cross_names, outputs[1:]))

    def rows(self, states: dict, index: np.ndarray) -> dict:
        return {name: np.ascontiguousarray(a[index]) for name, a in states.items()}

    def cross(self, states: dict) -> dict:
        return states

    def new_cache(self, batch: int, max_length: int) -> dict:
        return {name: np.zeros((batch, heads, 0, dim), np.float32) for name, heads, dim in self._self}

    def _feed(self, ids, states: dict, past: dict, decoder_attention_mask) -> dict:
        """The decoder graph's inputs: ``decoder_attention_mask`` ones where none is given (a graph that takes
        it), or refused where it has padding and the graph takes none (an export from before it existed)."""
        ids = np.asarray(ids, np.int64)
        feed = {"input_ids": ids, **states, **past}
        if self._masked:
            length = next(iter(past.values())).shape[2] + ids.shape[1]
            feed["decoder_attention_mask"] = np.ones((len(ids), length), np.int64) \
                if decoder_attention_mask is None else np.asarray(decoder_attention_mask, np.int64)
        elif decoder_attention_mask is not None and not np.asarray(decoder_attention_mask).all():
            raise ValueError(f"{_WHO}: this decoder graph takes no decoder_attention_mask (an export from before "
                             "forgegrad added it), so it cannot decode left-padded prompts (condition_on_prev_tokens "
                             "with previous tokens of different lengths per row): export the model again with "
                             "export_seq2seq or `forgegrad export`, or decode those rows one at a time")
        return feed

    def decode(self, ids, states, cross=None, cache=None, decoder_attention_mask=None) -> np.ndarray:
        past = self.new_cache(len(ids), 0) if cache is None else cache
        logits, *present = self._dec.run(self._outputs, self._feed(ids, states, past, decoder_attention_mask))
        if cache is not None:
            cache.update(zip((name for name, _, _ in self._self), present))
        return logits

    def alignment_weights(self, ids, cross, pairs, decoder_attention_mask=None) -> np.ndarray:
        if not self.cross_attention:
            raise ValueError(f"{_WHO}: the decoder graph has no cross_attentions output (token timestamps): export "
                             "it with export_seq2seq(model, DIR, cross_attentions=True)")
        if len(pairs) != self._heads:
            raise ValueError(f"{_WHO}: the decoder graph outputs {self._heads} alignment heads' cross-attention, "
                             f"not the {len(pairs)} of its generation settings ({pairs})")
        feed = self._feed(ids, cross, self.new_cache(len(ids), 0), decoder_attention_mask)
        return self._dec.run(["cross_attentions"], feed)[0]

    def reorder(self, cache: dict, rows: np.ndarray) -> None:
        if not np.array_equal(rows, np.arange(len(rows))):
            for name in cache:
                cache[name] = cache[name][rows]


def _features(input_features) -> np.ndarray:
    """``input_features`` as a numpy array (a forgegrad Tensor's, or as given): generate checks it."""
    return np.asarray(input_features.numpy() if hasattr(input_features, "numpy") else input_features)


def generate_onnx_whisper(encoder, decoder, input_features, language=None, task: Optional[str] = None,
                          max_new_tokens: Optional[int] = None, **kwargs):
    """What ``model.generate(input_features, ...)`` returns, decoded in onnxruntime on the graphs ``export_seq2seq``
    wrote for a Whisper model (``encoder`` and ``decoder``: sessions or .onnx paths): the same code
    (whisper_generate's ``generate``) with the graphs as its steps, so every setting of ``model.generate`` means
    the same here (``language``, ``task``, ``max_new_tokens``, ``return_timestamps``, long-form features with
    ``attention_mask``, ``prompt_ids``, ``condition_on_prev_tokens``, the temperature fallback, ``num_beams``,
    ``return_segments``, ``return_token_timestamps``, ...). The settings come from the decoder graph's metadata.
    ``return_token_timestamps`` needs a decoder exported with ``cross_attentions=True``, and left-padded prompts
    (condition_on_prev_tokens with previous tokens of different lengths across the batch) a decoder with
    ``decoder_attention_mask`` (every export since it was added); else ValueError. Returns (batch, n) int64 (the
    new tokens without the prompt, each row without its end token and padded on the right to the longest) or, when
    asked, the dict of ``model.generate``."""
    from .whisper_generate import generate
    return generate(OnnxWhisper(encoder, decoder), _features(input_features), language=language, task=task,
                    max_new_tokens=max_new_tokens, **kwargs)
