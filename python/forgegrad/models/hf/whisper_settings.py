"""The settings of transformers' generic generate that its Whisper generate applies too, read by forgegrad's Whisper
generate (whisper_generate.py) with the same meaning, and the ones it names as unread.

transformers' ``WhisperForConditionalGeneration.generate`` hands its generation config to the generic generate for
each window and fallback attempt, which builds its processors before Whisper's (no-speech detection, begin-suppressed
and suppressed tokens, the timestamp rules, a caller's ``logits_processor``), its warpers after them when sampling,
and the watermark last. So these apply here, as given to ``generate`` (None: off) or else from
generation_config.json, each on the decoder's tokens (the window's prompt, previous tokens included, then its new
tokens) as transformers runs them:

- processors (logits_processors.py): ``repetition_penalty`` (the prompt's left padding, previous tokens of different
  lengths, not penalized), ``no_repeat_ngram_size``, ``min_length`` (the prompt counts), ``min_new_tokens``,
  ``bad_words_ids``, ``sequence_bias``, ``exponential_decay_length_penalty`` (from the end of the window's prompt),
  ``remove_invalid_values``, ``forced_eos_token_id`` (the end token forced as the window's last new token, where
  its limit on new tokens is reached);
- warpers, sampled attempts only (sampling.py): ``top_h``, ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff``;
- ``watermarking_config`` (watermarking.py), every attempt; then ``renormalize_logits`` (the log-softmax of the
  processed scores: beam search ranks its beams on them).

transformers cannot apply ``encoder_repetition_penalty`` and ``encoder_no_repeat_ngram_size`` to Whisper (its encoder
input is log-mel features, not token ids: it warns and ignores them), so they change nothing here either. The rest
that would change transformers' tokens (``UNREAD``: stop strings, a time limit, classifier-free guidance, which
transformers' Whisper generate fails on, and what forgegrad's generate does not read: group beam search, ...) are
named in one warning.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Optional

import numpy as np

from .generation import UNSET
from .logits_processors import LogitsProcessors

__all__ = ["READ", "UNREAD", "read_settings", "window_processors", "warn_unread"]

PROCESSORS = ("repetition_penalty", "no_repeat_ngram_size", "min_length", "min_new_tokens", "bad_words_ids",
              "sequence_bias", "exponential_decay_length_penalty", "remove_invalid_values", "forced_eos_token_id")
WARPERS = ("top_h", "typical_p", "epsilon_cutoff", "eta_cutoff", "watermarking_config", "renormalize_logits")
READ = PROCESSORS + WARPERS

# generation_config.json's settings that transformers' Whisper generate applies and this one does not read, with the
# values that change nothing
UNREAD = {"guidance_scale": (1.0,), "stop_strings": (), "max_time": ()}


def read_settings(model, gc: dict, given: dict) -> dict:
    """READ's settings, each as given (None: off) else generation_config.json's ``gc``, checked as ``generate``
    checks them (generation_settings.py; the warpers with the sampler's checks); None where off. ``given``: the
    keyword arguments of Whisper's generate beyond its own (TypeError for a name not in READ)."""
    from .generation_settings import config_settings
    unknown = sorted(set(given) - set(READ))
    if unknown:
        raise TypeError(f"generate: unexpected keyword argument {', '.join(map(repr, unknown))} (Whisper's generate "
                        f"takes these generation settings as keywords too: {', '.join(READ)})")
    given = {name: value for name, value in given.items() if value is not UNSET}
    out = config_settings({name: gc.get(name) for name in READ}, given, model.vocab_size)
    for name, default in (("repetition_penalty", 1.0), ("no_repeat_ngram_size", 0), ("min_length", 0)):
        value = given[name] if name in given else gc.get(name)
        if value is None:
            out[name] = None
            continue
        if name == "repetition_penalty":
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value < float("inf"):
                raise ValueError(f"generate: repetition_penalty must be a number > 0 (1.0: none), got {value!r}")
        elif not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"generate: {name} must be an int >= 0, got {value!r}")
        out[name] = None if value == default else value
    eos = given["forced_eos_token_id"] if "forced_eos_token_id" in given else gc.get("forced_eos_token_id")
    if eos is not None and (not isinstance(eos, numbers.Integral) or isinstance(eos, bool)
                            or not 0 <= eos < model.vocab_size):
        raise ValueError(f"generate: forced_eos_token_id must be a token id in [0, {model.vocab_size}) or None, "
                         f"got {eos!r}")
    out["forced_eos_token_id"] = None if eos is None else int(eos)
    return {name: out[name] for name in READ}


def window_processors(settings: dict, eos, prompt_length: int, padding: Optional[np.ndarray], max_new_tokens: int
                      ) -> Optional[LogitsProcessors]:
    """transformers' processors of ``settings`` (read_settings') for one window's decoding of up to
    ``max_new_tokens`` after a prompt of ``prompt_length`` tokens (``padding`` (B, P): False at its left padding),
    or None where none applies."""
    if not any(settings[name] is not None for name in PROCESSORS):
        return None
    min_length = settings["min_length"] or 0
    if settings["min_new_tokens"]:  # transformers' MinNewTokensLengthLogitsProcessor: from the prompt's end
        min_length = max(min_length, settings["min_new_tokens"] + prompt_length)
    decay = settings["exponential_decay_length_penalty"]
    # transformers' repetition penalty skips the left padding of the decoder's attention mask (its first True)
    skip = None if padding is None else np.asarray(padding, bool).argmax(axis=1).astype(np.int64)
    return LogitsProcessors(
        settings["no_repeat_ngram_size"] or 0, min_length, eos, forced_eos=settings["forced_eos_token_id"],
        max_length=prompt_length + max_new_tokens,
        repetition_penalty=settings["repetition_penalty"] or 1.0, padding=skip,
        sequence_bias=settings["sequence_bias"], bad_words_ids=settings["bad_words_ids"] or (),
        remove_invalid_values=bool(settings["remove_invalid_values"]),
        exponential_decay=None if decay is None else (decay[0] + prompt_length, decay[1]))


def warn_unread(gc: dict) -> None:
    """One warning (once per set of names, as generate's warn_unread_settings) naming the settings of
    generation_config.json that would change transformers' tokens and that Whisper's generate does not read."""
    from .generation_settings import UNREAD_SETTINGS, _warned
    neutral = dict(UNREAD, **{k: tuple(v for v in values if v is not None) for k, values in UNREAD_SETTINGS.items()})
    names = tuple(sorted(n for n, values in neutral.items() if gc.get(n) is not None
                         and not any(gc[n] is v or gc[n] == v for v in values)))
    if names and ("whisper",) + names not in _warned:
        _warned.add(("whisper",) + names)
        warnings.warn(f"generate: generation_config.json sets {', '.join(names)}, which forgegrad's Whisper generate "
                      "does not read (the tokens can differ from transformers')", UserWarning, stacklevel=4)
