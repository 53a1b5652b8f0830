"""Whisper's token-level timestamps (transformers' ``WhisperForConditionalGeneration._extract_token_timestamps``):
the cross-attention probabilities of the checkpoint's ``alignment_heads`` (generation_config.json: [layer, head]
pairs that follow the audio), for the generated tokens only, normalised over the tokens at each audio position,
smoothed along the audio by a median filter, averaged over the heads; then dynamic time warping finds the cheapest
monotonic path through the negated matrix and each token's time is the audio position where the path first
reaches it.

transformers reads the probabilities from the cross_attentions of the decoding steps (the prompt's at the first
step, one row per later step; none for the last token). The same rows come here from one decoder pass without
cache over the prompt and every new token but the last (``WhisperForConditionalGeneration.cross_attention_weights``,
only the layers named; on the ONNX graphs the decoder graph's ``cross_attentions`` output: whisper_steps.py): the
decode loop's fused attention never forms them, and a step's probabilities depend on its prefix only, which that
pass keeps (finished rows keep the pad tokens the steps fed them).

``dynamic_time_warping_reference`` is transformers' loop, kept as the oracle; ``dynamic_time_warping`` fills the
same cost table one anti-diagonal at a time (every cell depends on the two diagonals before it only), with the
same float32 rounding and tie order, so it takes the same path.
"""
from __future__ import annotations

import numbers
from typing import List, Optional, Sequence

import numpy as np


__all__ = ["median_filter", "dynamic_time_warping", "dynamic_time_warping_reference", "token_timestamps",
           "alignment_settings", "window_times", "padded_times"]


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """The median of each ``width`` window along the last axis, edges padded by reflection (transformers'
    ``_median_filter``); returned unchanged when the axis is no longer than ``width // 2``."""
    if width <= 0 or width % 2 != 1:
        raise ValueError(f"median_filter: width must be an odd positive number (median_filter_width), got {width!r}")
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.sort(windows, axis=-1)[..., pad]


def _backtrace(trace: np.ndarray):
    """The path's (token, position) indices from the last cell back to the first, in order."""
    trace = trace.copy()
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    text, time = [], []
    while i > 0 or j > 0:
        text.append(i - 1)
        time.append(j - 1)
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        elif step == 2:
            j -= 1
        else:
            raise RuntimeError(f"dynamic time warping: no step recorded at trace[{i}, {j}]")
    return np.array(text)[::-1], np.array(time)[::-1]


def dynamic_time_warping_reference(matrix: np.ndarray):
    """transformers' ``_dynamic_time_warping`` on a cost ``matrix`` (tokens, positions), cell by cell: each cell
    extends the cheapest of the diagonal (0), the cell above (1) and the cell to the left (2), ties to the later
    choice. Returns the path's token and position indices."""
    n, m = matrix.shape
    cost = np.full((n + 1, m + 1), np.inf, np.float32)
    trace = -np.ones((n + 1, m + 1), np.float32)
    cost[0, 0] = 0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = matrix[i - 1, j - 1] + c
            trace[i, j] = t
    return _backtrace(trace)


def dynamic_time_warping(matrix: np.ndarray):
    """``dynamic_time_warping_reference``'s path, the table filled one anti-diagonal (i + j = d) at a time."""
    n, m = matrix.shape
    cost = np.full((n + 1, m + 1), np.inf, np.float32)
    trace = -np.ones((n + 1, m + 1), np.float32)
    cost[0, 0] = 0
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
        t = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        c = np.where(t == 0, c0, np.where(t == 1, c1, c2))
        cost[i, j] = matrix[i - 1, j - 1] + c  # float64 sums rounded to the float32 table, as the loop stores them
        trace[i, j] = t
    return _backtrace(trace)


def token_timestamps(weights: np.ndarray, prompt_length: int, median_filter_width: int,
                     num_frames: Optional[Sequence[int]] = None, time_precision: float = 0.02) -> np.ndarray:
    """Each token's time in seconds, (B, prompt_length + n + 1) float32, from the alignment heads' cross-attention
    ``weights`` (B, heads, prompt_length + n, positions): the prompt's tokens 0.0, each new token the time where
    the warping path reaches it, the last (the end token, which has no row) the time of the one before.
    ``num_frames`` (one per row, or None): each row's log-mel frames from the window's start (the attention
    mask's), whose first ``num_frames // 2`` encoder positions are aligned; None aligns all of them. A window that
    starts past an input's frames (``seek`` moved past its attention mask) has a negative count: as transformers,
    that many positions are cut from the end, twice where every row's count is the same (transformers cuts such a
    batch once for all rows and again per row; the second cut changes nothing unless negative)."""
    B, _, rows, _ = weights.shape
    out = np.zeros((B, rows + 1), np.float32)
    weights = weights[:, :, prompt_length:]
    if weights.shape[2] == 0:  # one new token: no row to align
        return out
    cuts = None if num_frames is None else [int(f) // 2 for f in num_frames]
    for b in range(B):
        matrix = weights[b] if cuts is None else weights[b, ..., :cuts[b]]
        if cuts is not None and len(set(cuts)) == 1:
            matrix = matrix[..., :cuts[b]]
        with np.errstate(invalid="ignore", divide="ignore"):  # (one token row, or no position: NaN, as transformers)
            std = matrix.std(axis=-2, keepdims=True)
            matrix = (matrix - matrix.mean(axis=-2, keepdims=True)) / std
            matrix = median_filter(matrix, median_filter_width).mean(axis=0)
        text, time = dynamic_time_warping(-matrix.astype(np.float64))
        jumps = np.concatenate([[True], np.diff(text) != 0])
        times = time[jumps] * time_precision
        out[b, prompt_length:] = np.concatenate([times, times[-1:]])
    return out


def alignment_settings(model, gc: dict):
    """The checked (layer, head) pairs of generation_config.json's alignment_heads and the median filter's width."""
    heads = gc.get("alignment_heads")
    if heads is None:
        raise ValueError("generate: return_token_timestamps needs alignment_heads ([layer, head] pairs of the "
                         "decoder's cross-attention that follow the audio) in the checkpoint's "
                         "generation_config.json: token-level timestamps are not available without them")
    layers, n_heads = int(model.config["decoder_layers"]), int(model.config["decoder_attention_heads"])
    pairs = []
    for pair in heads if isinstance(heads, (list, tuple)) else [None]:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)
                or not (-layers <= pair[0] < layers and -n_heads <= pair[1] < n_heads)):
            raise ValueError(f"generate: alignment_heads must be [layer, head] pairs within the decoder's {layers} "
                             f"layers and {n_heads} heads, got {heads!r}")
        pairs.append((int(pair[0]) % layers, int(pair[1]) % n_heads))
    if not pairs:
        raise ValueError("generate: alignment_heads is empty: token-level timestamps need at least one [layer, head]")
    width = model.config.get("median_filter_width", 7)
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width <= 0 or width % 2 != 1:
        raise ValueError(f"generate: the config's median_filter_width must be an odd positive int, got {width!r}")
    return pairs, int(width)


def padded_times(stamps: List[List[np.ndarray]], width: int) -> np.ndarray:
    """Each input's token times joined, padded on the right with its last time (0.0 when it has none): (B, width)."""
    out = np.zeros((len(stamps), width), np.float32)
    for i, parts in enumerate(stamps):
        row = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        out[i, :len(row)] = row
        if len(row):
            out[i, len(row):] = row[-1]
    return out


def window_times(run, cross, prompt: np.ndarray, padding: Optional[np.ndarray], out: np.ndarray,
                 num_frames: Optional[np.ndarray], beam=None, states=None) -> np.ndarray:
    """One attempt's token times (b, P + n) for its rows: the alignment heads' cross-attention over the prompt and
    the new tokens but the last (``out`` (b, n), finished rows padded as the steps fed them), in one pass;
    ``cross``: each layer's encoder keys and values (``cross_states``), as the decoding used them.

    ``beam`` (whisper_beam.BeamWindow, with the attempt's encoder ``states``): ``out`` are beam search's best
    hypotheses. transformers gathers each step's cross-attention from the beam that made the hypothesis' token
    (the hypothesis' own prefix, which the pass gives), and past a hypothesis' end, up to the longest one's, from
    row 0 of the beams (its beam indices there are -1, read as 0): those rows come from passes over the tokens fed
    to row 0, on the first row's audio."""
    pairs, width = run.alignment
    P = prompt.shape[1]
    ids = np.concatenate([prompt, out[:, :-1]], 1)
    if padding is not None:
        padding = np.concatenate([padding, np.ones((len(ids), ids.shape[1] - padding.shape[1]), bool)], 1)
    weights = run.steps.alignment_weights(ids, cross, pairs, padding)  # (b, heads, P + n - 1, positions)
    if beam is not None:
        _first_row_steps(run, states, prompt, padding, beam, out.shape[1], weights)
    return token_timestamps(weights, P, width, num_frames)


def _first_row_steps(run, states, prompt: np.ndarray, padding: Optional[np.ndarray], beam, n: int,
                     weights: np.ndarray) -> None:
    """Each hypothesis' rows of ``weights`` for steps t from its length to ``n`` - 1 (the query: the last token fed
    at step t) replaced by row 0's at step t, in place. Row 0's fed tokens at a step often extend its earlier
    ones: one pass over the longest serves every step whose tokens are its prefix."""
    P = prompt.shape[1]
    wanted = sorted({t for length in beam.lengths for t in range(int(length), n)})
    if not wanted:
        return
    chains: List[np.ndarray] = []  # the distinct token runs passed, longest first
    chain_of = {}
    for t in reversed(wanted):
        fed = beam.first_row[t - 1]  # (t,) tokens fed to row 0 at step t
        chain_of[t] = next((k for k, c in enumerate(chains) if np.array_equal(c[:t], fed)), len(chains))
        if chain_of[t] == len(chains):
            chains.append(fed)
    m, longest = len(chains), len(chains[0])
    ids = np.full((m, P + longest), run.pad, np.int64)  # right padding: a causal decoder's earlier rows ignore it
    ids[:, :P] = prompt[0]
    for k, c in enumerate(chains):
        ids[k, P:P + len(c)] = c
    mask = None if padding is None else np.concatenate([np.repeat(padding[:1, :P], m, 0),
                                                        np.ones((m, longest), bool)], 1)
    first = run.steps.rows(states, np.zeros(m, np.int64))
    rows = run.steps.alignment_weights(ids, run.steps.cross(first), run.alignment[0], mask)
    for b, length in enumerate(beam.lengths):
        for t in range(int(length), n):
            weights[b, :, P + t - 1] = rows[chain_of[t], :, P + t - 1]
