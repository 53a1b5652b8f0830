"""Whisper's timestamp tokens, as transformers handles them: the rules a step's scores follow when timestamps are
predicted (``WhisperTimeStampLogitsProcessor``), how a window's tokens are cut into segments with start and end
times and how far the next window starts (``_retrieve_segment``), and how each window's output is trimmed and the
windows' tokens joined (``generate_with_fallback`` and ``_pad_to_max_length``).

A timestamp token is ``timestamp_begin + k`` (``timestamp_begin`` = <|notimestamps|> + 1) for the time
``k * time_precision`` seconds (0.02) from the start of its window; a window starts at frame ``seek`` of the
features (10 ms a frame), and the encoder's two convolutions halve the frames (``input_stride`` 2), so timestamp
``k`` is frame ``seek + 2 k``.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

__all__ = ["TimestampRules", "window_segments", "unpadded", "without_end", "joined"]


class TimestampRules:
    """transformers' ``WhisperTimeStampLogitsProcessor`` on a step's scores (B, vocab), in place: <|notimestamps|>
    never; timestamps in pairs (after a lone timestamp a timestamp or the end token, after a pair text); timestamps
    never decreasing and <|0.00|> only once; the first new token a timestamp of at most ``max_initial_timestamp_index``;
    and text ruled out wherever the timestamps' summed probability beats the likeliest text token's."""

    def __init__(self, no_timestamps: int, eos: int, max_initial: Optional[int]):
        self.no_timestamps, self.begin, self.eos, self.max_initial = no_timestamps, no_timestamps + 1, eos, max_initial

    def __call__(self, scores: np.ndarray, generated: np.ndarray) -> None:
        """``generated`` (B, n): the tokens after the decoder prompt so far."""
        begin, n = self.begin, generated.shape[1]
        scores[:, self.no_timestamps] = -np.inf
        for k, seq in enumerate(generated):
            last = n >= 1 and seq[-1] >= begin
            penultimate = n < 2 or seq[-2] >= begin
            if last:
                if penultimate:
                    scores[k, begin:] = -np.inf  # a pair closed: text (or the end) next
                else:
                    scores[k, :self.eos] = -np.inf  # a lone timestamp: another, or the end
            stamps = seq[seq >= begin]
            lowest = begin
            if len(stamps):
                lowest = int(stamps[-1]) if last and not penultimate else int(stamps[-1]) + 1
            scores[k, begin:lowest] = -np.inf
        if n == 0:
            scores[:, :begin] = -np.inf
            if self.max_initial is not None:
                scores[:, begin + self.max_initial + 1:] = -np.inf
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            top = scores.max(-1, keepdims=True)
            shifted = scores - top
            logprobs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            stamp = _logsumexp(logprobs[:, begin:])
            text = logprobs[:, :begin].max(-1)
        scores[stamp > text, :begin] = -np.inf


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(-1)
    safe = np.where(np.isfinite(top), top, 0).astype(x.dtype)
    return np.log(np.exp(x - safe[:, None]).sum(-1)) + safe


def unpadded(seq: np.ndarray, pad: int, eos) -> np.ndarray:
    """A window's new tokens as transformers first trims them: when the row ends with padding, as many tokens off
    the end as the row has pad tokens (one fewer when pad is the end token, which stays)."""
    if len(seq) and seq[-1] == pad:
        count = int((seq == pad).sum()) - (1 if isinstance(eos, int) and pad == eos else 0)
        if count:
            seq = seq[:-count]
    return seq


def without_end(seq: np.ndarray, eos) -> np.ndarray:
    """The tokens without a final end token. (An end token given as a list is never taken off: transformers
    compares the token with the list.)"""
    if len(seq) and isinstance(eos, int) and seq[-1] == eos:
        seq = seq[:-1]
    return seq


def window_segments(seq: np.ndarray, begin: int, seek: int, seek_frames: int, time_precision: float,
                    stride: int) -> Tuple[List[dict], int]:
    """transformers' ``_retrieve_segment``: a window's tokens (from frame ``seek``, ``seek_frames`` frames of audio)
    cut after each pair of timestamps into segments {start, end (seconds from the audio's start), tokens}, and the
    frames the next window moves on. Ending with a lone timestamp (speech ended): the whole window. Ending with a
    pair or cut off: the unfinished text after the last pair is dropped and the next window starts at the pair's
    time. No pair at all: one segment of the whole window, ending at its last timestamp (or the window's end)."""
    is_stamp = [int(t) >= begin for t in seq]
    offset = np.float64(seek) * time_precision / stride  # transformers computes it in float64, thus
    lone_end = is_stamp[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(is_stamp) - 1) if is_stamp[i] and is_stamp[i + 1]]
    if not cuts:
        stamps = [i for i, s in enumerate(is_stamp) if s]
        # transformers' float32 arithmetic, truncated: the window's length in timestamp steps
        end = int(np.float32(seek_frames) * np.float32(0.01) / np.float32(time_precision))
        if stamps and seq[stamps[-1]] != begin:
            end = np.float64(int(seq[stamps[-1]]) - begin)
        return [{"start": float(offset), "end": float(offset + end * time_precision), "tokens": seq}], seek_frames
    if lone_end:
        cuts.append(len(seq))
    else:
        cuts[-1] += 1  # the last segment keeps both timestamps of its closing pair
    segments, last = [], 0
    for i, cut in enumerate(cuts):
        piece = seq[last:cut]
        closing = -1 if i < len(cuts) - 1 or lone_end else -2
        segments.append({"start": float(offset + np.float64(int(piece[0]) - begin) * time_precision),
                         "end": float(offset + np.float64(int(piece[closing]) - begin) * time_precision),
                         "tokens": piece})
        last = cut
    if lone_end:
        return segments, seek_frames
    return segments, (int(seq[last - 2]) - begin) * stride


def joined(segments: List[List[dict]], pad: int) -> np.ndarray:
    """Each input's segment tokens one after the other, padded on the right with ``pad`` to the longest: (B, n)."""
    rows = [np.concatenate([s["tokens"] for s in row]) if row else np.zeros(0, np.int64) for row in segments]
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), pad, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out
