"""Whisper's generate (transformers' ``WhisperForConditionalGeneration.generate``, token for token): the decoder
prompt of start, language and task tokens (and <|notimestamps|> unless timestamps are predicted), the language
detected from the first window where none is given, then window after window: each window's features from frame
``seek``, its tokens decoded greedily or sampled on the KV cache under the checkpoint's suppressed tokens (always,
and at the first new place) and, with timestamps, transformers' timestamp rules (whisper_timestamps.py), again at
the next temperature where the fallback thresholds ask (whisper_fallback.py); the window cut into segments at its
timestamp pairs and ``seek`` moved past what was transcribed. Audio of one window (short-form) takes one window
unless timestamps move ``seek``; longer audio (long-form) takes as many as it needs, as transformers' sequential
long-form generate. One decoding loop (``_decode_window``) serves every window, attempt and input.

A text prompt (``prompt_ids``) goes before the decoder prompt of every window, or into the previous tokens
(``prompt_condition_type``), as transformers puts it; the prompts are built in whisper_prompt.py.

Beam search (``num_beams`` > 1) decodes a greedy window with transformers' beam search (whisper_beam.py).

A grammar (``logits_processor=GrammarLogitsProcessor(...)``, structured outputs) constrains each window's text
tokens, Whisper's special tokens outside it (whisper_grammar.py).

``return_token_timestamps=True`` adds each token's time from the cross-attention of the checkpoint's
alignment heads and dynamic time warping (whisper_alignment.py), as transformers computes them.
"""
from __future__ import annotations

import numbers
from typing import List, Optional, Sequence, Union

import numpy as np

from ...autograd import no_grad
from ...tensor import Tensor
from .generation import UNSET, _check_beams, _sampler
from .logits_processors import generation_source, resolve
from .whisper_alignment import alignment_settings, padded_times, window_times
from .whisper_beam import beam_logprobs, beam_window
from .whisper_fallback import log_softmax, verdict
from .whisper_grammar import whisper_grammar
from .whisper_prompt import LANGUAGES, conditioned_prompt, decoder_prompts, text_prompt, token_list
from .whisper_settings import read_settings, warn_unread, window_processors
from .whisper_steps import steps_of
from .whisper_timestamps import TimestampRules, joined, unpadded, window_segments, without_end

__all__ = ["generate", "LANGUAGES"]


def generate(model, input_features, language: Union[str, Sequence[str], None] = None, task: Optional[str] = None,
             max_new_tokens: Optional[int] = None, do_sample: Optional[bool] = None,
             temperature: Optional[float] = None, top_k=UNSET, top_p=UNSET, min_p=UNSET, eos_token_id=UNSET,
             pad_token_id=UNSET, return_timestamps: Optional[bool] = None, num_beams: Optional[int] = None,
             attention_mask=None, return_segments: bool = False, return_dict_in_generate: Optional[bool] = None,
             condition_on_prev_tokens: Optional[bool] = None, time_precision: float = 0.02,
             compression_ratio_threshold=None, logprob_threshold=None, no_speech_threshold=None,
             prompt_ids=None, prompt_condition_type: Optional[str] = None, length_penalty: Optional[float] = None,
             early_stopping=None, return_token_timestamps: Optional[bool] = None,
             logits_processor=None, **settings) -> Union[np.ndarray, dict]:
    """The tokens transformers' ``WhisperForConditionalGeneration.generate`` returns for log-mel features
    (``WhisperFeatureExtractor``'s; ``input_features`` (B, num_mel_bins, frames)): (B, n), the prompt not
    included, each row without its end token and padded on the right with ``pad_token_id`` to the longest.

    Features of one window (``model.num_frames``, 3000 for the real checkpoints) or fewer are short-form; longer
    ones are long-form, decoded window after window as transformers' sequential long-form generate: each window
    starts where the last one's final timestamp pair put it (a window ending with a lone timestamp, or with no
    pair, is used whole), and the rows are every window's segment tokens joined. Long-form needs timestamps
    (``return_timestamps`` False is an error) and, for a batch, ``attention_mask`` (B, frames): each input's
    length is its number of ones (``WhisperFeatureExtractor(..., return_attention_mask=True)`` gives it).

    ``return_timestamps``: predict timestamp tokens (the prompt without <|notimestamps|>, transformers'
    timestamp rules); the rows then hold the timestamp tokens too (default generation_config.json's setting,
    else False). ``return_segments=True`` (or ``return_dict_in_generate=True`` with timestamps) returns
    ``{"sequences": rows, "segments": [[{"start": s, "end": s, "tokens": ids}, ...] for each input]}`` with times
    in seconds from the start of the audio. ``time_precision``: seconds per timestamp step (0.02).

    ``language``: a code ('fr'), a name ('french') or a token ('<|fr|>'), or one per input; None detects it
    from the first window (multilingual checkpoints: the most likely language token after the start token).
    ``task``: 'transcribe' or 'translate'. None for both: the checkpoint's forced_decoder_ids.
    ``max_new_tokens``: per window; default the config's max_length (20 without one) new tokens, within
    max_target_positions (transformers lets that limit grow by the prompt's length window after window, and
    so does this). Sampling settings as ``generate``'s.

    ``condition_on_prev_tokens`` (default generation_config.json's, else False): from the second window on,
    each window's prompt starts with <|startofprev|> and the last max_target_positions // 2 - 1 tokens of its
    segments so far (greedy or temperatures below 0.5, as transformers).

    As transformers' Whisper generate, ``temperature`` > 0 samples and None or 0 decodes greedily (``do_sample``,
    if given, must agree). The temperature fallback: ``temperature`` a sequence (e.g. (0.0, 0.2, 0.4, 0.6, 0.8,
    1.0)) decodes each window at the first and again at the next for the rows whose tokens compress better than
    ``compression_ratio_threshold`` (2.4: repetition) or whose mean log-probability is below
    ``logprob_threshold`` (-1.0); with ``no_speech_threshold`` (0.6), a window below ``logprob_threshold`` whose
    <|nocaptions|> probability is above it is skipped as silence. Thresholds default to generation_config.json's.

    ``prompt_ids`` (1-D token ids, ``WhisperTokenizer.get_prompt_ids(text)``'s: <|startofprev|> then the text's
    tokens): a text before the decoder prompt, which the tokens follow (spelling, names, style); not returned.
    ``prompt_condition_type`` (with ``prompt_ids``; transformers' settings): "first-segment" (default) counts
    the prompt's text as the audio's first segment: every window starts with ``prompt_ids`` without
    condition_on_prev_tokens, and with it the text is the oldest of the previous tokens; "all-segments" (needs
    condition_on_prev_tokens) starts every window with ``prompt_ids`` and then the previous tokens.

    ``num_beams`` > 1 (default generation_config.json's, else 1): beam search where a window is decoded greedily
    (whisper_beam.py: transformers' beam search with Whisper's processors; ``length_penalty``, ``early_stopping``
    as ``generate``'s); a sampled attempt samples with one beam, and from then on the call decodes with one beam,
    as transformers' Whisper generate does. With beams, ``logprob_threshold`` reads the best hypothesis' steps'
    log-probabilities (Whisper's processors on each step's log-softmax, normalised again, as transformers' fallback
    reads a beam's) and ``no_speech_threshold`` the prompt's <|nocaptions|> probability.

    ``return_token_timestamps=True``: also each token's time in seconds, as transformers computes it from the
    cross-attention of generation_config.json's ``alignment_heads`` ([layer, head] pairs; ValueError without
    them) smoothed by a median filter (config ``median_filter_width``) and dynamic time warping: returns
    ``{"sequences": rows, "token_timestamps": (B, n) float32}`` (with "segments" when asked, each segment then
    with its "token_timestamps" from the audio's start). As transformers', a row's times count from the start of
    the window that made each token (long-form windows are not offset there; the segments' are), the row's end
    is padded with its last time, and ``attention_mask`` (its ones: each input's frames) limits the aligned
    audio; without it the whole window is aligned. With beam search each hypothesis is aligned on its own tokens'
    cross-attention and, as transformers gathers the beams' steps, past its end (up to the window's longest
    hypothesis) on the cross-attention of the tokens fed to the window's first row.
    ``logits_processor``: a ``GrammarLogitsProcessor(tokenizer, grammar, eos_token_id, vocab_size)``
    (constrained.py; structured outputs), made with Whisper's end token and the model's vocabulary: each window's
    text tokens match the grammar, which starts over at each window and fallback attempt, Whisper's special tokens
    (prompt, timestamps) outside it and the end token allowed where it is complete (whisper_grammar.py); greedy,
    sampled and beam-searched windows alike. It runs after Whisper's processors, as transformers runs a
    ``logits_processor``, so the fallback's log-probabilities are read under it. GrammarError where a window's
    grammar cannot go on.

    ``settings``: the generation settings of transformers' generic generate that its Whisper generate applies too
    (whisper_settings.READ), as keywords (None: off), else generation_config.json's, with ``generate``'s meaning:
    ``repetition_penalty``, ``no_repeat_ngram_size``, ``min_length``, ``min_new_tokens``, ``bad_words_ids``,
    ``sequence_bias``, ``exponential_decay_length_penalty``, ``remove_invalid_values`` and ``forced_eos_token_id``
    (each window's last new token, where its limit is reached) before Whisper's processors
    (on the decoder's tokens: the window's prompt, previous tokens included, then its new tokens); ``top_h``,
    ``typical_p``, ``epsilon_cutoff`` and ``eta_cutoff`` after the temperature in sampled attempts;
    ``watermarking_config`` (watermarking.py) last, greedy, sampled and in beams, then ``renormalize_logits``
    (beam search ranks the renormalized scores). The fallback's log-probabilities
    are read under them all, as transformers reads its processed scores. ``watermarking.WatermarkDetector(model,
    watermarking_config)`` tells the marked tokens.

    generation_config.json's settings that transformers' Whisper generate applies through its generic generate and
    this one does not read (guidance_scale, stop_strings, max_time, num_beam_groups, ...:
    whisper_settings.UNREAD) are named in one warning where they are set to change something.
    """
    gc = dict(generation_source(model))
    warn_unread(gc)
    settings = read_settings(model, gc, settings)
    thresholds, condition = _options(gc, compression_ratio_threshold, logprob_threshold, no_speech_threshold,
                                     condition_on_prev_tokens)
    beams = _check_beams(resolve(model, "num_beams", num_beams, 1),
                         resolve(model, "length_penalty", length_penalty, 1.0),
                         resolve(model, "early_stopping", early_stopping, False), None)
    prompt_ids, all_segments = text_prompt(prompt_ids, prompt_condition_type, condition, model.vocab_size)
    for name, value in (("return_segments", return_segments), ("return_timestamps", return_timestamps),
                        ("return_dict_in_generate", return_dict_in_generate)):
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"generate: {name} must be a bool, got {value!r}")
    if isinstance(time_precision, bool) or not isinstance(time_precision, numbers.Real) or not time_precision > 0:
        raise ValueError(f"generate: time_precision must be a positive number of seconds, got {time_precision!r}")
    if return_token_timestamps is not None and not isinstance(return_token_timestamps, bool):
        raise TypeError(f"generate: return_token_timestamps must be a bool, got {return_token_timestamps!r}")
    steps = steps_of(model)
    if return_token_timestamps and not steps.cross_attention:
        raise ValueError("generate: return_token_timestamps needs the alignment heads' cross-attention weights, which "
                         f"this {type(steps).__name__} does not give (a decoder graph exported without them): export "
                         "it again with export_seq2seq(model, DIR, cross_attentions=True) or `forgegrad export "
                         "WHISPER_DIR --out DIR --cross-attentions`")
    alignment = alignment_settings(model, gc) if return_token_timestamps else None
    features = _feature_array(model, input_features)
    B, frames = features.shape[0], features.shape[2]
    window = model.num_frames
    stride = window // int(model.config["max_source_positions"])  # the encoder's convolutions: 2
    longform = frames > window
    if return_timestamps is None:
        return_timestamps = gc.get("return_timestamps")
    if longform and return_timestamps is False:
        raise ValueError(f"generate: features longer than one window ({frames} > {window} frames) are decoded as "
                         "long-form audio, which needs timestamps: pass return_timestamps=True, or at most "
                         f"{window} frames")
    return_timestamps = bool(return_timestamps) or longform
    no_timestamps = gc.get("no_timestamps_token_id")
    if return_timestamps and no_timestamps is None:
        raise ValueError("generate: timestamps need no_timestamps_token_id in the checkpoint's "
                         "generation_config.json (the timestamp tokens follow <|notimestamps|>)")
    if return_dict_in_generate and not return_timestamps:
        raise ValueError("generate: return_dict_in_generate=True is supported with timestamps only (it returns the "
                         "segments then); use return_segments=True")
    max_frames = _input_lengths(attention_mask, B, frames, longform)
    run = _Run(model, gc, do_sample, temperature, top_k, top_p, min_p, eos_token_id, pad_token_id, thresholds,
               no_timestamps if return_timestamps else None, settings)
    run.steps, run.beams = steps, beams
    run.grammar = whisper_grammar(logits_processor, run.eos_value, model.vocab_size)
    if return_token_timestamps:
        run.alignment = alignment
        # transformers' num_frames: the attention mask's ones when one is given, from each window's start
        # (the mask checked by _input_lengths above)
        run.num_frames = None if attention_mask is None else np.asarray(
            attention_mask.numpy() if isinstance(attention_mask, Tensor) else attention_mask).astype(np.int64).sum(-1)
    stamps: List[List[np.ndarray]] = [[] for _ in range(B)]
    # transformers cuts every window's tokens at timestamp pairs, with or without return_timestamps (pairs a model
    # emits despite <|notimestamps|> cut it too); a checkpoint without <|notimestamps|> has no timestamp tokens
    stamp_begin = model.vocab_size + 1 if no_timestamps is None else int(no_timestamps) + 1
    with no_grad():
        def detect(lang_ids: List[int]) -> List[int]:  # on the first window, as transformers
            states = steps.encode(_window(features, np.zeros(B, np.int64), np.full(B, window), window))
            start = np.full((B, 1), model.decoder_start_token_id, np.int64)
            logits = steps.decode(start, states)[:, -1]
            return [lang_ids[i] for i in logits[:, lang_ids].argmax(-1)]

        init = np.array(decoder_prompts(model, gc, B, language, task, detect, return_timestamps), np.int64)
        run.start_tokens = init.shape[1]
        limit = _WindowLimit(model, gc, max_new_tokens)
        cut_off = model.max_positions // 2 - 1  # the previous tokens kept when conditioning on them
        prev_sot = gc.get("prev_sot_token_id")
        prev_sot = (run.suppress[-2] if len(run.suppress) >= 2 else None) if prev_sot is None else prev_sot
        # "first-segment": the prompt's text (without <|startofprev|>) is each input's first segment, dropped at the end
        first = [] if prompt_ids is None or all_segments else [
            {"tokens": prompt_ids[1:] if prompt_ids[0] == gc.get("prev_sot_token_id") else prompt_ids}]
        segments: List[List[dict]] = [list(first) for _ in range(B)]
        bos = prompt_ids if all_segments else None if prev_sot is None else np.array([prev_sot], np.int64)
        seek = np.zeros(B, np.int64)
        # transformers' do_condition_on_prev_tokens: written at each row's place in the window's batch, read at the
        # input's place (they differ once an input has finished); kept so for the same tokens
        conditioned = [condition] * B
        while (seek < max_frames).any():
            rows = np.flatnonzero(seek < max_frames)  # inputs that have audio left
            seek_frames = np.minimum(max_frames[rows] - seek[rows], window)
            prompt, padding = init[rows], None
            if any(conditioned) and segments[0]:  # (transformers looks at the first input's segments)
                prompt, padding = conditioned_prompt(prompt, [segments[i] if conditioned[i] else None for i in rows],
                                                     bos, cut_off, stamp_begin, run.pad)
            elif prompt_ids is not None:
                prompt = np.concatenate([np.broadcast_to(prompt_ids, (len(rows), len(prompt_ids))), prompt], 1)
            budget = limit.next(prompt.shape[1])
            run.window_frames = None if run.num_frames is None else (run.num_frames - seek)[rows]
            tokens, skip, used, times = _window_with_fallback(run, features[rows], seek[rows], seek_frames, window,
                                                              prompt, padding, budget)
            for r, i in enumerate(rows):
                conditioned[r] = condition and (used[r] is None or used[r] < 0.5)  # low temperatures only
                if skip[r]:
                    seek[i] += seek_frames[r]
                    continue
                found, moved = window_segments(tokens[r], stamp_begin, int(seek[i]), int(seek_frames[r]),
                                               float(time_precision), stride)
                if moved <= 0:  # its last pair at <|0.00|>: transformers decodes the same window again, forever;
                    moved = int(seek_frames[r])  # here it is used whole, as a window without a pair
                segments[i] += found
                seek[i] += moved
                if times is not None:  # the window's times of its segments' tokens (a prefix of its tokens)
                    count = sum(len(s["tokens"]) for s in found)
                    row_times = times[r][prompt.shape[1]:prompt.shape[1] + count]
                    stamps[i].append(row_times)
                    offset = np.float32(np.float64(seek[i] - moved) * time_precision / stride)
                    at = 0
                    for s in found:
                        s["token_timestamps"] = row_times[at:at + len(s["tokens"])] + offset
                        at += len(s["tokens"])
    if first:
        segments = [row[1:] for row in segments]
    sequences = joined(segments, run.pad)
    out = {"sequences": sequences}
    if return_token_timestamps:
        out["token_timestamps"] = padded_times(stamps, sequences.shape[1])
    if return_segments or return_dict_in_generate:
        out["segments"] = segments
    return out if len(out) > 1 else sequences


class _Run:
    """One generate call's decoding settings, checked: the sampler of each temperature, the suppressed tokens, the
    end and pad tokens, the timestamp rules, the fallback thresholds."""

    def __init__(self, model, gc: dict, do_sample, temperature, top_k, top_p, min_p, eos_token_id, pad_token_id,
                 thresholds: dict, no_timestamps: Optional[int], settings: Optional[dict] = None):
        self.model, vocab = model, model.vocab_size
        self.steps = steps_of(model)  # the network's steps (whisper_steps.py)
        self.temperatures = list(temperature) if isinstance(temperature, (list, tuple)) else [temperature]
        if not self.temperatures:
            raise ValueError("generate: temperature must be a number or a non-empty sequence of numbers")
        if len(self.temperatures) > 1 and do_sample is not None:
            raise ValueError("generate: do_sample must be None with a sequence of temperatures (each samples when "
                             "above 0)")
        samples = [_samples(do_sample, t) for t in self.temperatures]
        # each with the warpers of ``settings`` (read_settings') when it samples, and their watermark
        self.settings = settings or read_settings(model, {}, {})
        self.samplers = [_sampler(model, s, t if s else None, top_k, top_p, min_p, self.settings)
                         for s, t in zip(samples, self.temperatures)]
        self.suppress = token_list(gc.get("suppress_tokens", model.config.get("suppress_tokens")), vocab,
                                    "suppress_tokens")
        self.begin = token_list(gc.get("begin_suppress_tokens", model.config.get("begin_suppress_tokens")), vocab,
                                 "begin_suppress_tokens")
        eos_value = gc.get("eos_token_id") if eos_token_id is UNSET else eos_token_id
        self.eos = token_list(eos_value, vocab, "eos_token_id")
        pad = gc.get("pad_token_id") if pad_token_id is UNSET else pad_token_id
        self.pad = (self.eos[0] if self.eos else 0) if pad is None else token_list(pad, vocab, "pad_token_id")[0]
        self.rules = None
        if no_timestamps is not None:
            if not isinstance(eos_value, numbers.Integral):
                raise ValueError(f"generate: timestamps need one end token (eos_token_id an int), got {eos_value!r}")
            first = gc.get("max_initial_timestamp_index")
            self.rules = TimestampRules(int(no_timestamps), int(eos_value), None if first is None else int(first))
        self.eos_value = int(eos_value) if isinstance(eos_value, numbers.Integral) else eos_value
        self.thresholds = thresholds
        nst = thresholds["no_speech_threshold"]
        self.no_speech_token = None if nst is None else int(gc["no_timestamps_token_id"]) - 1  # <|nocaptions|>
        self.start_tokens = 0  # the prompt's start tokens (set once built): the no-speech place is before them
        self.beams = None  # (num_beams, length_penalty, early_stopping) for beam search
        self.grammar = None  # a WhisperGrammar (whisper_grammar.py): the text's structured outputs
        self.alignment = None  # ((layer, head) pairs, median filter width) for token timestamps
        self.num_frames: Optional[np.ndarray] = None  # each input's frames, for token timestamps
        self.window_frames: Optional[np.ndarray] = None  # the frames from the window's start of its inputs

    def processors(self, prompt_length: int, padding: Optional[np.ndarray], max_new_tokens: int):
        """transformers' generic processors for a window after its prompt, before Whisper's; None: none."""
        return window_processors(self.settings, self.eos, prompt_length, padding, max_new_tokens)


def _window_with_fallback(run: _Run, features: np.ndarray, seek: np.ndarray, frames: np.ndarray, window: int,
                          prompt: np.ndarray, padding: Optional[np.ndarray], budget: int):
    """transformers' ``generate_with_fallback`` for one window of each row: decoded at the first temperature, the
    rows that fail the thresholds again at the next, and so on. Returns each row's tokens (without end token),
    whether to skip it (as transformers indexes that list: by place among the rows decoded last), the
    temperature that made its tokens, and with token timestamps each row's times (P + n: the prompt's too), else
    None."""
    b = len(seek)
    tokens: List[Optional[np.ndarray]] = [None] * b
    skip, used = [False] * b, [None] * b
    todo = list(range(b))
    times: Optional[List[Optional[np.ndarray]]] = None if run.alignment is None else [None] * b
    no_speech = None
    th = run.thresholds
    steps = run.steps
    encoded = steps.encode(_window(features, seek, frames, window))
    for attempt, (t, sampler) in enumerate(zip(run.temperatures, run.samplers)):
        # the retried rows' encoder states (transformers encodes them again: the same states)
        states = encoded if attempt == 0 else steps.rows(encoded, np.array(todo))
        if sampler.do_sample:
            run.beams = None  # transformers sets num_beams = 1 in its generation config, for the rest of the call
        cross = None if run.alignment is None else steps.cross(states)  # (shared with the times' pass)
        out, step_logprobs, first, beam = _decode_window(
            run, states, prompt[todo], None if padding is None else padding[todo], budget, sampler, t, cross=cross,
            logprobs=th["logprob_threshold"] is not None,
            no_speech_at=None if run.no_speech_token is None else prompt.shape[1] - run.start_tokens)
        if times is not None:
            # transformers reads each row's frames by its place in the attempt's batch (not the retried input's)
            frames_left = None if run.window_frames is None else run.window_frames[:len(todo)]
            for r, row in zip(todo, window_times(run, cross, prompt[todo], None if padding is None else padding[todo],
                                                  out, frames_left, beam, states)):
                times[r] = row
        if first is not None and (no_speech is None or run.start_tokens == 1):
            # transformers reads it by place: after several start tokens it runs the model on the whole window's
            # batch (the same at each attempt), after one it reads the attempt's first scores
            no_speech = np.exp(log_softmax(first))[:, run.no_speech_token]
        again = []
        for k, r in enumerate(todo):
            seq = unpadded(out[k], run.pad, run.eos_value)
            retry, skip[k] = verdict(seq, None if step_logprobs is None else step_logprobs[k],
                                     None if no_speech is None else float(no_speech[k]), run.model.vocab_size,
                                     th["compression_ratio_threshold"], th["logprob_threshold"],
                                     th["no_speech_threshold"])
            tokens[r], used[r] = without_end(seq, run.eos_value), t
            if retry:
                again.append(r)
        if not again or attempt == len(run.temperatures) - 1:
            break
        todo = again
    return tokens, skip, used, times


def _decode_window(run: _Run, states, prompt: np.ndarray, padding: Optional[np.ndarray], max_new_tokens: int,
                   sampler, temperature, logprobs: bool = False, no_speech_at: Optional[int] = None, cross=None):
    """One window's new tokens (B, n), greedy or sampled on the KV cache after ``prompt`` (B, P), finished rows
    padded: transformers' processors in its order (begin-suppressed tokens at the first new place, suppressed
    tokens, the timestamp rules), then the sampler's warpers. ``padding`` (B, P): False where the prompt is left
    padding (previous tokens of different lengths). Also, when asked: each step's log-probability of its token
    (B, n) as transformers' fallback reads it (the processed scores, the temperature undone), and the prompt's
    logits at place ``no_speech_at``. ``cross``: the states' encoder keys and values when already made. The last
    of the four returned: beam search's BeamWindow (whisper_beam.py) with ``num_beams`` > 1, else None."""
    steps = run.steps
    mark = sampler.watermark  # seeded by each row's tokens: the prompt, then the new ones
    if run.beams is not None:  # (a sampled attempt has one beam)
        beam = beam_window(run, states, prompt, padding, max_new_tokens, run.beams, trace=run.alignment is not None,
                           no_speech_at=no_speech_at,
                           sampler=sampler if mark is not None or sampler.renormalize else None)
        chosen = beam_logprobs(run, states, prompt, padding, beam.tokens, max_new_tokens, mark) if logprobs else None
        return beam.tokens, chosen, beam.no_speech, beam
    B, P = prompt.shape
    cross = steps.cross(states) if cross is None else cross
    out = np.full((B, max_new_tokens), run.pad, np.int64)
    chosen = np.zeros((B, max_new_tokens), np.float32) if logprobs else None
    finished = np.zeros(B, bool)
    cache = steps.new_cache(B, P + max_new_tokens)
    logits = steps.decode(prompt, states, cross=cross, cache=cache, decoder_attention_mask=padding)
    first = None if no_speech_at is None else np.array(logits[:, no_speech_at], np.float32)
    logits = logits[:, -1]
    eos = run.eos
    grammar = None if run.grammar is None else run.grammar.window()
    processors = run.processors(P, padding, max_new_tokens)
    if processors is not None and first is not None and run.start_tokens == 1:
        first = processors(prompt, first)  # transformers reads the first step's scores, its processors applied
    n = 0
    while n < max_new_tokens:
        scores = np.array(logits, np.float32)
        if processors is not None:  # transformers' generic processors come before Whisper's
            scores = processors(np.concatenate([prompt, out[:, :n]], 1), scores)
        if n == 0 and run.begin:
            scores[:, run.begin] = -np.inf
        if run.suppress:
            scores[:, run.suppress] = -np.inf
        if run.rules is not None:
            run.rules(scores, out[:, :n])
        if grammar is not None:
            grammar(out[:, :n], scores)
        # transformers' warpers (sampling), then its watermark: the scores the token is chosen from and that the
        # fallback reads (the temperature undone)
        sequences = None if mark is None else np.concatenate([prompt, out[:, :n]], 1)
        if sampler.do_sample:
            final = sampler.finish(sampler.warp(scores), sequences)
            nxt = sampler.draw(final)
            final = (final * temperature).astype(np.float32)
        else:
            final = sampler.finish(scores, sequences)
            nxt = final.argmax(-1).astype(np.int64)
        if chosen is not None:
            chosen[:, n] = np.take_along_axis(log_softmax(final), nxt[:, None], -1)[:, 0]
        if eos:
            nxt = np.where(finished, run.pad, nxt)
            finished |= np.isin(nxt, eos)
        out[:, n] = nxt
        n += 1
        if finished.all() or n == max_new_tokens:
            break
        if padding is not None:
            padding = np.concatenate([padding, np.ones((B, 1), bool)], 1)
        logits = steps.decode(nxt[:, None], states, cross=cross, cache=cache, decoder_attention_mask=padding)[:, -1]
    return out[:, :n], None if chosen is None else chosen[:, :n], first, None


def _options(gc: dict, compression_ratio_threshold, logprob_threshold, no_speech_threshold,
             condition_on_prev_tokens):
    """The fallback thresholds (as given, else generation_config.json's) and condition_on_prev_tokens, checked."""
    thresholds = {}
    for name, given in (("compression_ratio_threshold", compression_ratio_threshold),
                        ("logprob_threshold", logprob_threshold), ("no_speech_threshold", no_speech_threshold)):
        value = gc.get(name) if given is None else given
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise TypeError(f"generate: {name} must be a number or None, got {value!r}")
        thresholds[name] = value
    if thresholds["no_speech_threshold"] is not None:
        if thresholds["logprob_threshold"] is None:
            raise ValueError("generate: no_speech_threshold needs logprob_threshold (a window is skipped as silence "
                             "when both say so)")
        if gc.get("no_timestamps_token_id") is None:
            raise ValueError("generate: no_speech_threshold needs no_timestamps_token_id in generation_config.json "
                             "(<|nocaptions|> is the token before it)")
    condition = gc.get("condition_on_prev_tokens") if condition_on_prev_tokens is None else condition_on_prev_tokens
    if condition is not None and not isinstance(condition, bool):
        raise TypeError(f"generate: condition_on_prev_tokens must be a bool, got {condition!r}")
    return thresholds, bool(condition)


def _samples(do_sample, temperature) -> bool:
    """transformers' Whisper generate samples exactly when ``temperature`` > 0 (it sets do_sample from it); a
    ``do_sample`` that disagrees is an error here rather than ignored."""
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)):
        raise TypeError(f"generate: temperature must be a number, got {temperature!r}")
    sample = temperature is not None and temperature > 0
    if do_sample is not None and do_sample is not sample:
        raise ValueError(f"generate: Whisper samples exactly when temperature > 0 (as transformers' Whisper generate, "
                         f"which sets do_sample from it): do_sample={do_sample!r} with temperature={temperature!r}")
    return sample


def _feature_array(model, input_features) -> np.ndarray:
    """The log-mel features (B, num_mel_bins, frames) as float32: any number of frames (fewer than a window are
    padded with zeros, as transformers pads them; more are long-form audio)."""
    x = input_features.numpy() if isinstance(input_features, Tensor) else np.asarray(input_features)
    mels = model.config["num_mel_bins"]
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] != mels or x.shape[2] < 1 or x.dtype.kind != "f":
        raise ValueError(f"generate: input_features must be float (batch, {mels}, frames) log-mel features "
                         f"(WhisperFeatureExtractor's), got {x.dtype} of shape {tuple(x.shape)}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _input_lengths(attention_mask, batch: int, frames: int, longform: bool) -> np.ndarray:
    """Each input's number of frames: the ones of ``attention_mask`` for a long-form batch (required there, as
    transformers requires it), else all ``frames``."""
    if attention_mask is not None:
        mask = attention_mask.numpy() if isinstance(attention_mask, Tensor) else np.asarray(attention_mask)
        if mask.shape != (batch, frames) or not np.isin(mask, (0, 1)).all():
            raise ValueError(f"generate: attention_mask must be ones and zeros of shape (batch, frames) "
                             f"{(batch, frames)}, got shape {mask.shape}")
    if batch > 1 and longform:
        if attention_mask is None:
            raise ValueError("generate: a batch of long-form audio needs attention_mask (batch, frames): each input's "
                             "length; WhisperFeatureExtractor(..., return_attention_mask=True) gives it")
        return mask.astype(np.int64).sum(-1)
    return np.full(batch, frames, np.int64)


def _window(features: np.ndarray, seek: np.ndarray, frames: np.ndarray, window: int) -> np.ndarray:
    """Each row's ``frames[r]`` frames from ``seek[r]``, padded with zeros to a window: (b, mels, window)."""
    out = np.zeros(features.shape[:2] + (window,), np.float32)
    for r in range(features.shape[0]):
        part = features[r, :, seek[r]:seek[r] + frames[r]]
        out[r, :, :part.shape[1]] = part
    return out


class _WindowLimit:
    """transformers' Whisper limits on each window's new tokens: max_new_tokens as given or in the config (prompt
    + it within max_target_positions, else an error), else the config's max_length (20 without one) new tokens,
    the whole within max_target_positions. transformers stores the grown max_length back in its generation
    config, so that it grows by the prompt's length again at every window; this does the same."""

    def __init__(self, model, gc: dict, given):
        self.limit = model.max_positions
        self.given = gc.get("max_new_tokens") if given is None else given
        if self.given is not None and (isinstance(self.given, bool) or not isinstance(self.given, numbers.Integral)
                                       or self.given < 1):
            raise ValueError(f"generate: max_new_tokens must be a positive int, got {self.given!r}")
        self.max_length = gc.get("max_length") if isinstance(gc.get("max_length"), int) else 20

    def next(self, prompt: int) -> int:
        if self.given is not None:
            if prompt + self.given > self.limit:
                raise ValueError(f"generate: the decoder prompt ({prompt} tokens) + max_new_tokens ({self.given}) "
                                 f"exceed max_target_positions {self.limit}")
            return int(self.given)
        self.max_length = min(self.max_length + min(self.limit // 2 - 1, prompt), self.limit)
        return max(self.max_length - prompt, 1)
