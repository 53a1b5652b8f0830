"""Autoregressive generation with a preallocated KV cache.

The prompt is run once (prefill) and fills every layer's cache; then each step feeds one token per
row. Left-padded batches work as in transformers: padding is masked out of attention and positions
count real tokens only. Sampling draws from forgegrad's generator, so ``forgegrad.manual_seed``
makes it repeatable, and the kernels give the same bits at any thread count, so the tokens are too.
"""
from __future__ import annotations

import numbers
import sys
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...autograd import no_grad
from ._decode import LeanDecoder, lean_path_applies
from ._decode_seq2seq import lean_seq2seq_step
from ._image_text import generate_image_arguments, repeat_images
from ._layers import check_device_support, host_array, ids_array, mask_array
from .generation_settings import EXTRA_SETTINGS, read_settings, warn_unread_settings
from .logits_processors import LogitsProcessors, generation_source, output_vocab_size, resolve, token_setting
from .sampling import Sampler, select_next
from .stopping import Stopping

__all__ = ["generate", "select_next"]


class _Unset:
    """``top_k`` / ``top_p`` left out: generation_config.json's, else transformers' default (50, 1.0). None
    given explicitly means no filter, as in transformers' generate (and as forgegrad's generate always took it).
    ``eos_token_id`` / ``pad_token_id`` left out: the checkpoint's (``special_tokens``); None given: no end
    token / the first end token, as transformers' generate takes a None it is given."""

    def __repr__(self):
        return "<from generation_config.json>"


UNSET = _Unset()


def _positive_int(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"generate: {name} must be a positive int, got {value!r}")
    return int(value)


def _is_token(t, vocab_size: int) -> bool:
    return isinstance(t, numbers.Integral) and not isinstance(t, bool) and 0 <= t < vocab_size


def _check_arguments(model, max_new_tokens, eos_token_id, pad_token_id, streamer) -> None:
    if not isinstance(max_new_tokens, numbers.Integral) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    V = output_vocab_size(model)
    if eos_token_id is not None and eos_token_id is not UNSET and not _is_token(eos_token_id, V) and not (
            isinstance(eos_token_id, (list, tuple, np.ndarray)) and all(_is_token(t, V) for t in eos_token_id)):
        raise ValueError(f"generate: eos_token_id must be a token id in [0, {V}) or a list of them (None or []: "
                         f"none), got {eos_token_id!r}")
    if pad_token_id is not None and pad_token_id is not UNSET and not _is_token(pad_token_id, V):
        raise ValueError(f"generate: pad_token_id must be a token id in [0, {V}), got {pad_token_id!r}")
    if streamer is not None and not callable(streamer):
        raise TypeError("generate: streamer must be callable (it receives each step's new tokens)")


def special_tokens(model, eos_token_id=UNSET, pad_token_id=UNSET) -> Tuple[List[int], Optional[int]]:
    """(end-of-sequence ids, pad id) as transformers' generate takes them. ``eos_token_id`` left out (UNSET):
    the checkpoint's (generation_config.json's, else config.json's where it has none: ``generation_source``),
    an int or a list, its ids outside the vocabulary left out (they are never generated); None or ``[]``: none.
    ``pad_token_id`` left out: the checkpoint's (same source); where that is none, or None is given, the first
    eos id."""
    from .beam_search import eos_list
    source = generation_source(model)
    V = output_vocab_size(model)
    if eos_token_id is UNSET:
        ids = source.get("eos_token_id")
        eos = [int(t) for t in (ids if isinstance(ids, list) else [ids]) if _is_token(t, V)]
    else:
        eos = eos_list(eos_token_id)
    pad = source.get("pad_token_id") if pad_token_id is UNSET else pad_token_id
    pad = int(pad) if _is_token(pad, V) else (eos[0] if eos else None)
    return eos, pad


def _decoder(model):
    """The zoo's gpt runs as the GPT2LMHeadModel it is (parameters shared)."""
    from ..transformer import GPT
    if isinstance(model, GPT):
        from .gpt2 import GPT2LMHeadModel
        return GPT2LMHeadModel.from_zoo(model)
    return model


def generate(model, input_ids, max_new_tokens: Optional[int] = None, attention_mask=None,
             do_sample: Optional[bool] = None, temperature: Optional[float] = None, top_k=UNSET, top_p=UNSET,
             min_p=UNSET,
             eos_token_id: Union[int, Sequence[int], None] = UNSET, pad_token_id: Optional[int] = UNSET,
             streamer: Optional[Callable[[np.ndarray], None]] = None, num_beams: Optional[int] = None,
             length_penalty: Optional[float] = None, early_stopping=None, no_repeat_ngram_size: Optional[int] = None,
             min_length: Optional[int] = None, repetition_penalty: Optional[float] = None,
             logits_processor=None, num_return_sequences: Optional[int] = None,
             on_logits: Optional[Callable[[np.ndarray], None]] = None, forced_bos_token_id=UNSET,
             forced_eos_token_id=UNSET, *, suppress_tokens=UNSET, begin_suppress_tokens=UNSET, bad_words_ids=UNSET,
             sequence_bias=UNSET, typical_p=UNSET, epsilon_cutoff=UNSET, eta_cutoff=UNSET, renormalize_logits=UNSET,
             exponential_decay_length_penalty=UNSET, encoder_repetition_penalty=UNSET,
             encoder_no_repeat_ngram_size=UNSET, min_new_tokens=UNSET, remove_invalid_values=UNSET,
             stop_strings=UNSET, max_time=UNSET, top_h=UNSET, watermarking_config=UNSET, guidance_scale=UNSET,
             negative_prompt_ids=None, negative_prompt_attention_mask=None, tokenizer=None,
             prefix_cache=None, pixel_values=None, token_type_ids=None, image_grid_thw=None,
             image_sizes=None, pixel_values_videos=None, video_grid_thw=None, second_per_grid_ts=None) -> np.ndarray:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    The settings left at None (``max_new_tokens``, ``do_sample``, ``temperature``, ``num_beams``,
    ``num_return_sequences``, ``length_penalty``, ``early_stopping``, ``no_repeat_ngram_size``, ``min_length``,
    ``repetition_penalty``) or left out (``top_k``, ``top_p``, ``min_p``) come from the checkpoint's
    generation_config.json when it sets them (``max_length`` there bounds the whole sequence), as transformers'
    generate takes them (a checkpoint without that file: config.json's legacy settings, as transformers builds its
    generation config from them: generation_settings.from_model_config), else transformers' defaults: 20 new
    tokens, greedy, 1.0, 1 beam, 1 sequence, 1.0, False, 0, 0, 1.0, top_k 50, top_p 1.0. An argument given always
    wins (``do_sample=False`` decodes greedily whatever the config says).

    Args:
        model: a decoder from ``from_pretrained`` (GPT-2, GPT-NeoX, Llama-style, OLMo 2 and 3, an
            encoder-decoder), or the zoo's ``gpt``.
        input_ids: (B, T) or (T,) int token ids; pad shorter prompts on the left.
        attention_mask: (B, T) with 0 for left padding (default: all tokens real).
        do_sample: False for greedy decoding; True to sample (``temperature``, ``top_k``, ``top_p``). The
            sampling settings of generation_config.json apply only when sampling.
        top_k, top_p, min_p: as in transformers, ``top_k`` left out is 50 when sampling unless the config sets it;
            ``top_k`` 0 or None, ``top_p`` None or 1.0 and ``min_p`` None or 0 filter nothing. ``min_p`` drops the
            tokens less likely than min_p times the most likely one (after the temperature).
        eos_token_id: an id or a list of them (any one ends a row). A row that produced one is finished: it
            gets ``pad_token_id`` from then on, and generation stops when every row is finished. Left out: the
            checkpoint's, as transformers' generate takes it: generation_config.json's, else (no such file, or a
            model built from a config) config.json's. None or ``[]``: no end token (transformers' generate takes
            a None it is given so too): all max_new_tokens.
        pad_token_id: left out: the checkpoint's (same source), else the first eos id; None: the first eos id.
        streamer: called after every step with the new tokens (B * R,) as an int64 array.
        num_beams: more than 1 for beam search (transformers' algorithm: ``length_penalty`` divides a
            finished hypothesis' log-probability by its length to that power; ``early_stopping`` False,
            True or "never"); not with a streamer. Returns each prompt's best hypothesis. With ``do_sample``:
            beam sampling, as transformers' (the warpers on each beam's log-probabilities, keeping 1 + #eos
            tokens, and the continuations drawn without replacement from the accumulated scores).
        no_repeat_ngram_size, min_length, repetition_penalty: transformers' processors (logits_processors.py),
            as are the config's forced first / last tokens. ``repetition_penalty`` > 1 discourages the tokens
            already in the sequence (prompt included, left padding not), < 1 favours them.
        logits_processor: a callable ``f(sequences, scores) -> scores`` (or a list of them) run after those,
            as transformers' ``logits_processor``: ``sequences`` (rows, L) the tokens so far, ``scores``
            (rows, V) float32 for the next one (log-probabilities in beam search). Structured outputs (a JSON
            schema, a regex, a Lark grammar): ``constrained.GrammarLogitsProcessor`` (llguidance; beam search too).
        num_return_sequences: R sequences per prompt, as transformers returns them: with beam search the R
            best hypotheses (R <= ``num_beams``), best first; when sampling, R draws; greedy takes only 1.
        on_logits: called at every step with the model's logits (rows, V) for the next token, before any
            processor (the completions server's streamed log-probabilities); not with beam search.
        forced_bos_token_id, forced_eos_token_id: the token forced as the first new one (mBART-50's and NLLB's
            target language) and at the last place (transformers' processors). Left out: the checkpoint's
            (generation_config.json's, else config.json's); None: none.
        suppress_tokens, begin_suppress_tokens, bad_words_ids, sequence_bias, encoder_repetition_penalty,
        encoder_no_repeat_ngram_size, min_new_tokens, exponential_decay_length_penalty, remove_invalid_values:
            transformers' processors, in its order (logits_processors.py): token ids never generated / not as the
            first new token; token sequences never completed ([[ids], ...]); a bias added where a sequence would be
            completed ([[[ids], bias], ...] or {(ids): bias}); the prompt's (an encoder-decoder's encoder input's)
            tokens favoured (> 1) or not (< 1), its n-grams never repeated; no end token before that many new
            tokens; (start, factor): the end tokens' scores growing after ``start`` new tokens; NaN and inf scores
            made finite.
        typical_p, epsilon_cutoff, eta_cutoff: transformers' sampling warpers after ``min_p`` (only when sampling):
            the tokens whose surprise is closest to the entropy up to that mass (1: none); the tokens less likely
            than epsilon dropped; than min(eta, sqrt(eta) exp(-entropy)) (0: none). ``renormalize_logits``: the
            scores' log-softmax after every processor and warper (beam search then ranks renormalized scores).
        stop_strings, max_time: a row ends when one of the strings ends inside its newest token (needs
            ``tokenizer``: load_tokenizer's or a transformers tokenizer); every row ends after that many seconds.
            Each of these settings left out: generation_config.json's, else none; None given: none. Settings of
            transformers' GenerationConfig that change the tokens and are not read here (num_beam_groups,
            penalty_alpha, constraints, ...) are named in a warning when generation_config.json sets them.
        top_h: transformers' top-h warper (only when sampling, after the temperature): of the 100 most likely
            tokens, the most likely ones while their running entropy stays within top_h (in (0, 1]) times the
            entropy of the 100.
        watermarking_config: transformers' watermark (watermarking.py), greedy, sampling or beams: a dict of
            greenlist_ratio, bias, hashing_key, seeding_scheme ("lefthash" or "selfhash") and context_width (the
            keys left out: transformers' defaults) adding ``bias`` to a green list of the vocabulary seeded by the
            tokens before, after every other processor and warper; the same lists as transformers', so the same
            tokens. ``watermarking.WatermarkDetector`` tells the texts it marked.
        guidance_scale, negative_prompt_ids, negative_prompt_attention_mask: classifier-free guidance (guidance.py;
            decoders only): the model also runs on ``negative_prompt_ids`` (one row per decoded row), else on each
            prompt's last token, and the scores become scale * (conditional - unconditional) + unconditional
            log-probabilities, as transformers' UnbatchedClassifierFreeGuidanceLogitsProcessor (1: none).
        prefix_cache: a ``forgegrad.serve.prefix_cache.PrefixCache`` (one prompt, one sequence, ``num_beams`` 1, a
            decoder it applies to: ``prefix_cache_applies``): the prompt's prefill starts after its longest cached
            block prefix (the keys and values an earlier call left there, read instead of computed, as one more
            chunk of a chunked prefill: the same logits to float32 rounding), and the keys and values of the prompt
            and of the tokens generated and fed are kept there at the end, even when the streamer ends the call
            (the completions server's one-at-a-time path; its ``hit_tokens`` grow by the tokens read).
        pixel_values, token_type_ids: an image-text model's images and token kinds (Gemma3ForConditionalGeneration:
            1 on image tokens), given to the prompt's prefill only, as transformers' generate does; with beams or
            several sequences per prompt each prompt's images go with each of its rows (images in prompt order,
            filling the image tokens; the vision tower runs once per row, as transformers'); no prefix_cache.
        image_grid_thw: Qwen2-VL's / Qwen2.5-VL's (num_images, 3) patch grids, with their pixel_values.
        image_sizes: LLaVA-NeXT's (num_images, 2) original (height, width) of each image, with its pixel_values.
        pixel_values_videos, video_grid_thw, second_per_grid_ts: Qwen2-VL's / Qwen2.5-VL's videos (the video
            processor's patches, (num_videos, 3) grids, Qwen2.5-VL's seconds per frame group), as images.

    Returns:
        (B * R, T + n) int64 array, R = ``num_return_sequences`` rows per prompt (prompt-major): the prompts
        followed by the n <= max_new_tokens generated tokens. For an encoder-decoder (T5), ``input_ids`` is the
        encoder's input (padding on the right, marked by ``attention_mask``) and the result is the decoder's
        tokens as transformers returns them: (B * R, 1 + n), decoder_start_token_id first.
    """
    model = _decoder(model)
    if not getattr(model, "is_encoder_decoder", False) and not hasattr(model, "new_cache"):
        from . import decoder_architectures
        raise TypeError(f"generate: {type(model).__name__} is not a decoder (expected one of "
                        f"{decoder_architectures(encoder_decoders=True)})")
    warn_unread_settings(model)
    given = {name: value for name, value in zip(EXTRA_SETTINGS, (
        suppress_tokens, begin_suppress_tokens, bad_words_ids, sequence_bias, typical_p, epsilon_cutoff, eta_cutoff,
        renormalize_logits, exponential_decay_length_penalty, encoder_repetition_penalty,
        encoder_no_repeat_ngram_size, min_new_tokens, remove_invalid_values, stop_strings, max_time, top_h,
        watermarking_config, guidance_scale))
        if value is not UNSET}
    extra = read_settings(model, given, output_vocab_size(model))
    stopping = Stopping(extra["max_time"], extra["stop_strings"], tokenizer)
    sampler = _sampler(model, do_sample, temperature, top_k, top_p, min_p, extra)
    do_sample = sampler.do_sample
    num_beams = resolve(model, "num_beams", num_beams, 1)
    beams = _check_beams(num_beams, resolve(model, "length_penalty", length_penalty, 1.0),
                         resolve(model, "early_stopping", early_stopping, False), streamer)
    if on_logits is not None and (beams is not None or not callable(on_logits)):
        raise ValueError("generate: on_logits must be callable, and needs num_beams=1")
    returns = _num_return_sequences(resolve(model, "num_return_sequences", num_return_sequences, 1), num_beams,
                                    do_sample)
    settings = processor_settings(model, no_repeat_ngram_size, min_length, repetition_penalty, logits_processor,
                                  forced_bos_token_id, forced_eos_token_id)
    if prefix_cache is not None:
        _check_prefix_cache(model, prefix_cache, input_ids, attention_mask, beams, returns)
    on_host = _check_device(model, beams, prefix_cache, extra) in ("cpu", "meta")
    if getattr(model, "is_encoder_decoder", False):
        return _generate_seq2seq(model, input_ids, max_new_tokens, attention_mask, sampler, eos_token_id,
                                 pad_token_id, streamer, beams, settings, returns, on_logits, extra, stopping)
    images = generate_image_arguments(model, dict(
        pixel_values=pixel_values, token_type_ids=token_type_ids, image_grid_thw=image_grid_thw,
        image_sizes=image_sizes, pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
        second_per_grid_ts=second_per_grid_ts), prefix_cache)
    ids = ids_array(input_ids, "generate", model.vocab_size)
    B, T = ids.shape
    max_new_tokens = _max_new_tokens(model, max_new_tokens, T)
    _check_arguments(model, max_new_tokens, eos_token_id, pad_token_id, streamer)
    eos, pad = special_tokens(model, eos_token_id, pad_token_id)
    mask = mask_array(attention_mask, "generate", (B, T))
    mask = np.ones((B, T), bool) if mask is None else mask
    if not mask.any(axis=1).all():
        raise ValueError("generate: every prompt needs at least one real token (attention_mask row of zeros)")
    prompts = ids
    if returns > 1 and beams is None:  # sampling: each prompt R times (beam search expands its own rows)
        images = repeat_images(model, ids, images, returns)
        ids, mask = np.repeat(ids, returns, axis=0), np.repeat(mask, returns, axis=0)
        B = B * returns
    from .guidance import guidance
    cfg = guidance(model, extra["guidance_scale"], max_new_tokens, negative_prompt_ids, negative_prompt_attention_mask,
                   B * (beams[0] if beams is not None else 1))
    process = _processors(model, settings, eos, T + max_new_tokens, padding=mask.argmax(axis=1), extra=extra,
                          prompt_length=T, encoder_ids=prompts, guidance=cfg)
    # transformers' positions for left padding: real tokens count from 0, padding gets position 1
    positions = np.where(mask, np.cumsum(mask, axis=1) - 1, 1)
    last = positions[:, -1].copy()
    if last.max() + max_new_tokens >= model.max_positions + 1:
        raise ValueError(f"generate: prompt ({last.max() + 1} tokens) + max_new_tokens ({max_new_tokens}) exceed the "
                         f"model's {model.max_positions} positions")
    if beams is not None:
        if max_new_tokens == 0:
            return np.repeat(ids, returns, axis=0)
        from .beam_search import beam_decoder
        K, penalty, early = beams
        return beam_decoder(model, ids, mask, K, max_new_tokens, eos, pad, penalty, early, process, returns,
                            sampler, stopping, repeat_images(model, ids, images, K))
    out = np.empty((B, T + max_new_tokens), np.int64)
    out[:, :T] = ids
    if max_new_tokens == 0:
        return out
    finished = np.zeros(B, bool)
    cache = model.new_cache(B, T + max_new_tokens)
    # the per-token steps as direct kernel calls where they compute what forward does (not in training
    # mode, which has dropout, nor with hooks or replaced layers: see lean_path_applies)
    lean = LeanDecoder(model) if on_host and lean_path_applies(model) else None
    n = done = 0
    try:
        with no_grad():
            if prefix_cache is not None:  # the cached block prefix read, the rest prefilled after it
                done = prefix_cache.load(ids[0].tolist(), cache)
            logits = last_logits(model(ids[:, done:], mask, positions[:, done:], cache=cache, logits_to_keep=1,
                                       **images))
            while True:
                if on_logits is not None:
                    on_logits(logits)
                if process.active:
                    logits = process(out[:, :T + n], logits)
                nxt = sampler(logits, out[:, :T + n])
                if eos:
                    nxt = np.where(finished, pad, nxt)
                    finished |= np.isin(nxt, eos)
                out[:, T + n] = nxt
                n += 1
                if stopping.active:  # as transformers: a row stopped so gets the pad token only where there are eos ids
                    finished |= stopping(out[:, :T + n])
                if streamer is not None:
                    streamer(nxt.copy())
                if n == max_new_tokens or finished.all():
                    break
                mask = np.concatenate([mask, np.ones((B, 1), bool)], axis=1)
                last += 1
                switch = getattr(model, "recompute_cache_at", None)
                if switch is not None and T + n > switch >= cache.length:
                    # Phi-3 (transformers does the same): the sequence now reaches past the original context, where
                    # longrope changes its frequencies, so every position is recomputed with the new ones
                    cache = model.new_cache(B, T + max_new_tokens)
                    full = np.where(mask, np.cumsum(mask, axis=1) - 1, 1)
                    logits = last_logits(model(out[:, :T + n], mask, full, cache=cache, logits_to_keep=1))
                    continue
                if lean is not None:
                    logits = lean.step(nxt, last, mask, cache)
                else:
                    logits = last_logits(model(nxt[:, None], mask, last[:, None], cache=cache))
    finally:
        if prefix_cache is not None:  # the prompt's and the fed answer's blocks, for later prompts (a chat's next turn)
            prefix_cache.store(out[0, :cache.length].tolist(), cache)
    return out[:, :T + n]


def last_logits(logits) -> np.ndarray:
    """The last position's logits (B, V) of a forward's (B, T, V), as a host array: from a model on a device only
    that row is copied back (the processors and the sampler run on the host, as transformers' users expect)."""
    if isinstance(logits._data, np.ndarray):
        return logits.numpy()[:, -1]
    return host_array(logits[:, -1])


def _check_device(model, beams, prefix_cache, extra) -> str:
    """The model's device; NotImplementedError naming what generate does not do yet on a device (anything but the
    CPU): an encoder-decoder, beam search, a prefix cache, classifier-free guidance, or a layer that computes on the
    host only (check_device_support)."""
    device = check_device_support(model, "generate")
    if device in ("cpu", "meta"):
        return device
    why = ("an encoder-decoder model" if getattr(model, "is_encoder_decoder", False) else
           "beam search (num_beams > 1)" if beams is not None else
           "a prefix_cache" if prefix_cache is not None else
           "classifier-free guidance (guidance_scale)" if extra.get("guidance_scale") is not None else None)
    if why is not None:
        raise NotImplementedError(f"generate: {why} runs on CPU models only, and the model is on {device!r}; "
                                  "move it with model.to(\"cpu\") for this")
    return device


def _check_prefix_cache(model, prefix_cache, input_ids, attention_mask, beams, returns) -> None:
    """ValueError where ``prefix_cache`` cannot serve this call: one unpadded prompt, one sequence, no beams, and a
    model whose cached keys are what its prefill computes (serve/prefix_cache.py's ``prefix_cache_applies``)."""
    from ...serve.prefix_cache import PrefixCache, why_no_prefix_cache
    if not isinstance(prefix_cache, PrefixCache):
        raise TypeError(f"generate: prefix_cache must be a PrefixCache, got {type(prefix_cache).__name__}")
    why = why_no_prefix_cache(model)
    if why is not None:
        raise ValueError(f"generate: prefix_cache does not apply to this model: {why}")
    if getattr(model, "recompute_cache_at", None) is not None:
        raise ValueError("generate: prefix_cache does not apply to a model that recomputes its cache (longrope)")
    rows = ids_array(input_ids, "generate", model.vocab_size).shape[0]  # generate's errors for a bad prompt
    if rows != 1 or returns != 1 or beams is not None:
        raise ValueError(f"generate: prefix_cache needs one prompt, one sequence and num_beams=1, got {rows} prompts, "
                         f"num_return_sequences={returns}, num_beams={1 if beams is None else beams[0]}")
    if attention_mask is not None and not np.asarray(attention_mask).all():
        raise ValueError("generate: prefix_cache needs a prompt without padding (attention_mask all ones)")


def _check_beams(num_beams, length_penalty, early_stopping, streamer):
    """(num_beams, length_penalty, early_stopping) for beam search, or None for num_beams == 1."""
    _positive_int(num_beams, "num_beams")
    if num_beams == 1:
        return None
    if streamer is not None:
        raise ValueError("generate: a streamer needs num_beams=1 (beam search decides the text at the end)")
    if (not isinstance(length_penalty, numbers.Real) or isinstance(length_penalty, bool)
            or not np.isfinite(length_penalty)):
        raise ValueError(f"generate: length_penalty must be a number, got {length_penalty!r}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"generate: early_stopping must be True, False or \"never\", got {early_stopping!r}")
    return int(num_beams), float(length_penalty), early_stopping


def _sampler(model, do_sample, temperature, top_k, top_p, min_p, extra=None) -> Sampler:
    """The Sampler of (do_sample, temperature, top_k, top_p, min_p) as given, else generation_config.json's, else
    transformers' defaults (False, 1.0, 50, 1.0, none); the config's sampling settings only when sampling. top_k 0
    is None (none). ``extra`` (read_settings'): typical_p, epsilon_cutoff, eta_cutoff when sampling, and
    renormalize_logits."""
    extra = extra or {}
    do_sample = resolve(model, "do_sample", do_sample, False)
    if not isinstance(do_sample, bool):
        raise TypeError(f"generate: do_sample must be a bool, got {type(do_sample).__name__}")
    if do_sample:
        temperature = resolve(model, "temperature", temperature, 1.0)
        config = getattr(model, "generation_config", None) or {}
        if top_k is UNSET:
            top_k = 50 if config.get("top_k") is None else config["top_k"]
        if top_p is UNSET:
            top_p = config.get("top_p")
        if min_p is UNSET:
            min_p = config.get("min_p")
    else:  # greedy: the config's sampling settings do not apply (transformers only warns about them)
        temperature = 1.0 if temperature is None else temperature
        top_k = None if top_k is UNSET else top_k
        top_p = None if top_p is UNSET else top_p
        min_p = None if min_p is UNSET else min_p
    return settings_sampler(do_sample, temperature, top_k, top_p, min_p, extra, _config_vocab(model))


def _config_vocab(model) -> Optional[int]:
    """config.json's vocab_size (its text model's), which transformers draws the watermark's green lists from; else
    the model's vocabulary; None where unknown (an exported graph whose logits leave it open)."""
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        size = config.get("vocab_size", (config.get("text_config") or {}).get("vocab_size"))
        if isinstance(size, int) and not isinstance(size, bool):
            return size
    size = getattr(model, "vocab_size", None)
    return size if isinstance(size, int) and size < sys.maxsize else None


def settings_sampler(do_sample, temperature, top_k, top_p, min_p, extra: dict, vocab: Optional[int] = None) -> Sampler:
    """The Sampler of resolved sampling settings and ``extra`` (read_settings'): its typical_p, epsilon_cutoff,
    eta_cutoff and top_h only when sampling, its watermarking_config (green lists drawn from ``vocab`` tokens; None:
    the scores' width) and renormalize_logits always (generate's and the ONNX paths')."""
    from .watermarking import Watermark
    warpers = {name: extra.get(name) if do_sample else None
               for name in ("typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")}
    mark = extra.get("watermarking_config")
    return Sampler(do_sample, temperature, top_k, top_p, min_p, **warpers,
                   renormalize=bool(extra.get("renormalize_logits")),
                   watermark=None if mark is None else Watermark(mark, vocab))


def _num_return_sequences(value, num_beams: int, do_sample: bool) -> int:
    """transformers' checks: an int >= 1, at most num_beams in beam search, 1 for greedy decoding."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"generate: num_return_sequences must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"generate: num_return_sequences must be an int >= 1, got {value!r}")
    if value > 1 and num_beams == 1 and not do_sample:
        raise ValueError(f"generate: greedy decoding gives one sequence per prompt: num_return_sequences={value} "
                         "needs do_sample=True or num_beams >= num_return_sequences")
    if value > num_beams > 1:
        raise ValueError(f"generate: num_return_sequences ({value}) must be <= num_beams ({num_beams})")
    return int(value)


def _max_new_tokens(model, given, prompt_length: int) -> int:
    """max_new_tokens as given, else the generation config's max_new_tokens, or its max_length less the prompt (a
    decoder's prompt, an encoder-decoder's start token), else 20, as transformers' generate: the sequence then ends
    by config.json's ``max_position_embeddings`` (``n_positions``) where it sets one."""
    if given is not None:
        return given
    config = getattr(model, "generation_config", None) or {}
    if isinstance(config.get("max_new_tokens"), int):
        return config["max_new_tokens"]
    if isinstance(config.get("max_length"), int):
        return max(config["max_length"] - prompt_length, 0)
    hf = getattr(model, "config", None)
    hf = hf if isinstance(hf, dict) else {}
    positions = hf.get("max_position_embeddings", hf.get("n_positions"))
    if isinstance(positions, int) and not isinstance(positions, bool) and positions > 0:
        return max(min(20, positions - prompt_length), 0)
    return 20


def _repetition_penalty(value) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise ValueError(f"generate: repetition_penalty must be a number > 0 (1.0: none), got {value!r}")
    return float(value)


def processor_settings(model, no_repeat_ngram_size, min_length, repetition_penalty, logits_processor,
                       forced_bos_token_id, forced_eos_token_id) -> tuple:
    """The settings of ``_processors`` (generate's and the ONNX paths'): each as given, else generation_config.json's
    (the forced tokens: else config.json's), else none; checked."""
    settings = (resolve(model, "no_repeat_ngram_size", no_repeat_ngram_size, 0),
                resolve(model, "min_length", min_length, 0))
    for name, value in zip(("no_repeat_ngram_size", "min_length"), settings):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"generate: {name} must be an int >= 0, got {value!r}")
    return settings + (_repetition_penalty(resolve(model, "repetition_penalty", repetition_penalty, 1.0)),
                       _extra_processors(logits_processor), _forced(model, "forced_bos_token_id", forced_bos_token_id),
                       _forced(model, "forced_eos_token_id", forced_eos_token_id))


def _extra_processors(value) -> list:
    fns = [] if value is None else [value] if callable(value) else value
    if not isinstance(fns, (list, tuple)) or not all(callable(f) for f in fns):
        raise TypeError("generate: logits_processor must be a callable f(sequences, scores) -> scores "
                        "or a list of them")
    return list(fns)


def _processors(model, settings, eos: List[int], max_length: int, padding=None, extra=None, prompt_length: int = 1,
                encoder_ids=None, guidance=None) -> LogitsProcessors:
    """The LogitsProcessors of ``settings`` and ``extra`` (read_settings') for sequences that start with
    ``prompt_length`` tokens (a decoder's prompt, an encoder-decoder's start token); ``encoder_ids``: the prompts
    (an encoder-decoder's encoder input) before any repeat, as transformers' encoder processors take them;
    ``guidance``: guidance.guidance's processor (classifier-free guidance), first."""
    ngram, min_len, repetition, fns, forced_bos, forced_eos = settings
    extra = extra or {}
    if extra.get("min_new_tokens"):  # transformers: min_length becomes the prompt + min_new_tokens
        min_len = extra["min_new_tokens"] + prompt_length
    decay = extra.get("exponential_decay_length_penalty")
    # transformers' begin index: after the forced first token where the sequence starts with one token
    begin = prompt_length if prompt_length > 1 or forced_bos is None else prompt_length + 1
    return LogitsProcessors(
        ngram, min_len, eos, forced_bos, forced_eos, max_length, repetition, padding, fns,
        sequence_bias=extra.get("sequence_bias"), bad_words_ids=extra.get("bad_words_ids") or (),
        encoder_ids=encoder_ids, encoder_repetition_penalty=extra.get("encoder_repetition_penalty") or 1.0,
        encoder_no_repeat_ngram_size=extra.get("encoder_no_repeat_ngram_size") or 0,
        remove_invalid_values=bool(extra.get("remove_invalid_values")),
        exponential_decay=None if decay is None else (decay[0] + prompt_length, decay[1]),
        suppress_tokens=extra.get("suppress_tokens") or (),
        begin_suppress_tokens=extra.get("begin_suppress_tokens") or (), begin_index=begin, guidance=guidance)


def _forced(model, name: str, value) -> Optional[int]:
    """A forced token argument: left out, the checkpoint's; None, none; else a token id of the vocabulary."""
    if value is UNSET:
        return token_setting(model, name)
    if value is not None and not _is_token(value, output_vocab_size(model)):
        raise ValueError(f"generate: {name} must be a token id in [0, {output_vocab_size(model)}) or None, "
                         f"got {value!r}")
    return None if value is None else int(value)


def _generate_seq2seq(model, input_ids, max_new_tokens, attention_mask, sampler: Sampler, eos_token_id, pad_token_id,
                      streamer, beams, settings, returns: int = 1, on_logits=None, extra=None,
                      stopping: Optional[Stopping] = None) -> np.ndarray:
    """The encoder once, then the decoder token by token on a KV cache (the cross-attention keys and
    values computed once)."""
    ids = ids_array(input_ids, "generate", model.vocab_size)
    B, S = ids.shape
    max_new_tokens = _max_new_tokens(model, max_new_tokens, 1)
    _check_arguments(model, max_new_tokens, eos_token_id, pad_token_id, streamer)
    eos, pad = special_tokens(model, eos_token_id, pad_token_id)  # finished rows get T5's pad 0, as transformers'
    mask = mask_array(attention_mask, "generate", (B, S))
    sources = ids
    if returns > 1 and beams is None:  # sampling: each prompt R times (beam search expands its own rows)
        ids = np.repeat(ids, returns, axis=0)
        mask = None if mask is None else np.repeat(mask, returns, axis=0)
        B = B * returns
    if max_new_tokens > model.max_positions:  # (the last new token is never the decoder's input: no position)
        raise ValueError(f"generate: the decoder start token + max_new_tokens ({max_new_tokens}) exceed the "
                         f"model's {model.max_positions} positions by more than the last token")
    out = np.full((B, 1 + max_new_tokens), model.decoder_start_token_id, np.int64)
    if extra and extra.get("guidance_scale") is not None:
        from .guidance import guidance
        guidance(model, extra["guidance_scale"], max_new_tokens)  # refused: decoders only
    process = _processors(model, settings, eos, 1 + max_new_tokens, extra=extra, encoder_ids=sources)
    stopping = Stopping() if stopping is None else stopping
    if beams is not None:
        if max_new_tokens == 0:
            return np.repeat(out, returns, axis=0)
        from .beam_search import beam_seq2seq
        K, penalty, early = beams
        return beam_seq2seq(model, ids, mask, K, max_new_tokens, eos, pad, penalty, early, process, returns,
                            sampler, stopping)
    finished = np.zeros(B, bool)
    n = 0
    with no_grad():
        states = model.encode(ids, mask)
        cross = model.cross_kv(states)
        cache = model.new_cache(B, 1 + max_new_tokens)
        lean = lean_seq2seq_step(model, cross, mask, cache)  # direct kernel calls where they apply
        while n < max_new_tokens:
            if lean is not None:
                logits = lean(out[:, n])
            else:
                logits = model.decode(out[:, n:n + 1], states, mask, cross=cross, cache=cache).numpy()[:, -1]
            if on_logits is not None:
                on_logits(logits)
            if process.active:  # e.g. BART's forced end of sequence at the last place
                logits = process(out[:, :1 + n], logits)
            nxt = sampler(logits, out[:, :1 + n])
            if eos:
                nxt = np.where(finished, pad, nxt)
                finished |= np.isin(nxt, eos)
            out[:, 1 + n] = nxt
            n += 1
            if stopping.active:
                finished |= stopping(out[:, :1 + n])
            if streamer is not None:
                streamer(nxt.copy())
            if finished.all():
                break
    return out[:, :1 + n]
