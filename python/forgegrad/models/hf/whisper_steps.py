"""What Whisper's generate (whisper_generate.py, whisper_beam.py) asks of the network: encode a window, take rows of
the encoded windows, each decoder layer's cross-attention keys and values, a KV cache, a decoder step on token ids
returning logits, the cache reordered for beams, and the alignment heads' cross-attention probabilities (token
timestamps). Two implementations run the same decoding code:
``ModelSteps`` (a forgegrad Whisper model: its own encoder, decoder and KVCache) and onnx_whisper's ``OnnxWhisper``
(the exported encoder.onnx and decoder.onnx in onnxruntime, the cache the decoder's present keys and values).

``generate(model, ...)`` reads the settings (``config``, ``generation_config``, ``decoder_start_token_id``,
``vocab_size``, ``max_positions``, ``num_frames``) from ``model`` and decodes on ``steps_of(model)``: the model itself
when it is a ``WhisperSteps`` (the ONNX pair carries both), else ``ModelSteps(model)``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...tensor import Tensor
from .beam_search import reorder

__all__ = ["WhisperSteps", "ModelSteps", "steps_of"]


class WhisperSteps:
    """The network under Whisper's generate. ``states``, ``cross`` and ``cache`` are whatever the implementation
    keeps; ids are int64 arrays (B, T); logits come back as float arrays (B, T, vocab)."""

    #: whether ``alignment_weights`` (token timestamps' alignment) is available
    cross_attention = False

    def encode(self, window: np.ndarray):
        """The encoder on log-mel windows (B, num_mel_bins, num_frames) float32."""
        raise NotImplementedError

    def rows(self, states, index: np.ndarray):
        """The encoded windows of rows ``index`` (a retried subset, or each row repeated for its beams)."""
        raise NotImplementedError

    def cross(self, states):
        """Each decoder layer's cross-attention keys and values of ``states``, made once per window."""
        raise NotImplementedError

    def new_cache(self, batch: int, max_length: int):
        """An empty self-attention KV cache for ``batch`` rows of up to ``max_length`` tokens."""
        raise NotImplementedError

    def decode(self, ids: np.ndarray, states, cross=None, cache=None,
               decoder_attention_mask: Optional[np.ndarray] = None) -> np.ndarray:
        """Logits (B, T, vocab) of ``ids`` after ``cache`` (which grows by them; None: no past, nothing kept).
        ``decoder_attention_mask`` (B, past + T): False at left padding."""
        raise NotImplementedError

    def reorder(self, cache, rows: np.ndarray) -> None:
        """Row r of ``cache`` becomes its row ``rows[r]`` (each beam follows its source)."""
        raise NotImplementedError

    def alignment_weights(self, ids: np.ndarray, cross, pairs, decoder_attention_mask: Optional[np.ndarray] = None
                          ) -> np.ndarray:
        """The cross-attention probabilities (B, len(pairs), T, encoder positions) of the (layer, head) ``pairs``
        for the decoder's tokens ``ids`` (B, T) in one pass without cache, ``cross`` made by ``cross``."""
        raise NotImplementedError


class ModelSteps(WhisperSteps):
    """A forgegrad Whisper model's steps: today's tensors and KVCache, no copies added."""

    cross_attention = True

    def __init__(self, model):
        self.model = model

    def encode(self, window: np.ndarray) -> Tensor:
        return self.model.encode(Tensor._wrap(window))

    def rows(self, states: Tensor, index: np.ndarray) -> Tensor:
        return Tensor._wrap(np.ascontiguousarray(states.numpy()[index]))

    def cross(self, states: Tensor) -> list:
        from .whisper_beam import cross_states
        return cross_states(self.model, states)

    def new_cache(self, batch: int, max_length: int):
        return self.model.new_cache(batch, max_length)

    def decode(self, ids, states, cross=None, cache=None, decoder_attention_mask=None) -> np.ndarray:
        return self.model.decode(ids, states, cross=cross, cache=cache,
                                 decoder_attention_mask=decoder_attention_mask).numpy()

    def reorder(self, cache, rows: np.ndarray) -> None:
        reorder(cache, rows)

    def alignment_weights(self, ids, cross, pairs, decoder_attention_mask=None) -> np.ndarray:
        probs = self.model.cross_attention_weights(ids, cross, [layer for layer, _ in pairs],
                                                   decoder_attention_mask=decoder_attention_mask)
        return np.stack([probs[layer][:, head] for layer, head in pairs], 1)


def steps_of(model) -> WhisperSteps:
    return model if isinstance(model, WhisperSteps) else ModelSteps(model)
