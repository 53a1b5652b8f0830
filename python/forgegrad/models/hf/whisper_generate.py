"""Whisper's generate for audio of up to one window (transformers' short-form path): the decoder prompt of start,
language and task tokens and <|notimestamps|>, the language detected from the first step where none is given,
the checkpoint's suppressed tokens (always, and at the first new place), then greedy or sampled decoding on the
KV cache. Returns the new tokens, as transformers' Whisper generate does (no prompt).

Not yet: timestamps, long-form audio (several windows), beam search and the temperature fallback.
"""
from __future__ import annotations

import numbers
from typing import List, Optional, Sequence, Union

import numpy as np

from ...autograd import no_grad
from .generation import UNSET, _sampler
from .logits_processors import generation_source

__all__ = ["generate", "LANGUAGES"]

# Whisper's languages (code -> name), the names generate accepts besides the codes and the tokens
LANGUAGES = dict(zip(
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la mi ml "
    "cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd gu am "
    "yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue".split(),
    ["english", "chinese", "german", "spanish", "russian", "korean", "french", "japanese", "portuguese", "turkish",
     "polish", "catalan", "dutch", "arabic", "swedish", "italian", "indonesian", "hindi", "finnish", "vietnamese",
     "hebrew", "ukrainian", "greek", "malay", "czech", "romanian", "danish", "hungarian", "tamil", "norwegian", "thai",
     "urdu", "croatian", "bulgarian", "lithuanian", "latin", "maori", "malayalam", "welsh", "slovak", "telugu",
     "persian", "latvian", "bengali", "serbian", "azerbaijani", "slovenian", "kannada", "estonian", "macedonian",
     "breton", "basque", "icelandic", "armenian", "nepali", "mongolian", "bosnian", "kazakh", "albanian", "swahili",
     "galician", "marathi", "punjabi", "sinhala", "khmer", "shona", "yoruba", "somali", "afrikaans", "occitan",
     "georgian", "belarusian", "tajik", "sindhi", "gujarati", "amharic", "yiddish", "lao", "uzbek", "faroese",
     "haitian creole", "pashto", "turkmen", "nynorsk", "maltese", "sanskrit", "luxembourgish", "myanmar", "tibetan",
     "tagalog", "malagasy", "assamese", "tatar", "hawaiian", "lingala", "hausa", "bashkir", "javanese", "sundanese",
     "cantonese"]))
_CODE_BY_NAME = {**{name: code for code, name in LANGUAGES.items()},
                 "burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht", "letzeburgesch": "lb",
                 "pushto": "ps", "panjabi": "pa", "moldavian": "ro", "moldovan": "ro", "sinhalese": "si",
                 "castilian": "es", "mandarin": "zh"}
_TASKS = ("translate", "transcribe")


def _language_id(language, lang_to_id: dict) -> int:
    if not isinstance(language, str):
        raise TypeError(f"generate: language must be a string ('fr', 'french' or '<|fr|>'), got {language!r}")
    name = language.lower()
    if name in lang_to_id:
        token = name
    elif name in _CODE_BY_NAME:
        token = f"<|{_CODE_BY_NAME[name]}|>"
    elif name in LANGUAGES:
        token = f"<|{name}|>"
    else:
        raise ValueError(f"generate: unsupported language {language!r}: give a code ('fr'), a name ('french') or a "
                         "language token ('<|fr|>')")
    if token not in lang_to_id:
        raise ValueError(f"generate: language {language!r} ({token}) is not in this checkpoint's lang_to_id")
    return int(lang_to_id[token])


def _token_list(value, vocab: int, name: str) -> List[int]:
    if value is None:
        return []
    tokens = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) and 0 <= t < vocab for t in tokens):
        raise ValueError(f"generate: {name} must be token ids in [0, {vocab}), got {value!r}")
    return [int(t) for t in tokens]


def _prompts(model, gc: dict, batch: int, language, task, detect) -> List[List[int]]:
    """transformers' ``_retrieve_init_tokens``: each row's decoder prompt."""
    if gc.get("is_multilingual") is False and (task is not None or language is not None):
        raise ValueError("generate: language and task need a multilingual checkpoint (is_multilingual is false)")
    lang_to_id, task_to_id = gc.get("lang_to_id"), gc.get("task_to_id")
    if language is not None and not isinstance(lang_to_id, dict):
        raise ValueError("generate: language needs lang_to_id in the checkpoint's generation_config.json")
    if task is not None and not isinstance(task_to_id, dict):
        raise ValueError("generate: task needs task_to_id in the checkpoint's generation_config.json")
    if task is not None and task not in _TASKS:
        raise ValueError(f"generate: task must be 'transcribe' or 'translate', got {task!r}")
    init: List[Optional[int]] = [model.decoder_start_token_id]
    if task is None and language is None:
        forced = gc.get("forced_decoder_ids") or model.config.get("forced_decoder_ids")
        if forced and forced[0][0] == 1:
            for place, (i, token) in enumerate(forced, start=1):
                if i != place:
                    raise ValueError(f"generate: forced_decoder_ids {forced!r} do not follow Whisper's prompt "
                                     "(places 1, 2, ...)")
                init.append(token)
    lang_undefined = len(init) <= 1 or init[1] is None
    if isinstance(language, (list, tuple)):
        if len(language) != batch or any(lang is None for lang in language):
            raise ValueError(f"generate: a list of languages needs one (not None) per input ({batch}), "
                             f"got {language!r}")
        languages = list(language)
    else:
        languages = [language] * batch
    rows = [list(init) for _ in range(batch)]
    lang_ids = None
    if language is not None:
        lang_ids = [_language_id(lang, lang_to_id) for lang in languages]
    elif isinstance(lang_to_id, dict) and lang_undefined:
        lang_ids = detect(sorted(int(v) for v in lang_to_id.values()))
    no_timestamps = gc.get("no_timestamps_token_id")
    for r, row in enumerate(rows):
        if lang_ids is not None:
            if len(row) > 1:
                row[1] = lang_ids[r]
            else:
                row.append(lang_ids[r])
        if task is not None:  # (forced_decoder_ids are ignored when a task is given: no task token yet)
            row.append(int(task_to_id[task]))
        elif language is not None and isinstance(task_to_id, dict):
            if not any(t in task_to_id.values() for t in row):
                row.append(int(task_to_id["transcribe"]))
        if no_timestamps is not None and row[-1] != no_timestamps:
            row.append(int(no_timestamps))
        row[:] = [t for t in row if t is not None]
    return rows


def generate(model, input_features, language: Union[str, Sequence[str], None] = None, task: Optional[str] = None,
             max_new_tokens: Optional[int] = None, do_sample: Optional[bool] = None,
             temperature: Optional[float] = None, top_k=UNSET, top_p=UNSET, min_p=UNSET, eos_token_id=UNSET,
             pad_token_id=UNSET, return_timestamps: bool = False, num_beams: Optional[int] = None) -> np.ndarray:
    """The tokens transformers' ``WhisperForConditionalGeneration.generate`` returns for features of one window
    (``WhisperFeatureExtractor``'s; ``input_features`` (B, num_mel_bins, frames)): (B, n), the prompt not
    included, each row without its end token and padded on the right with ``pad_token_id`` to the longest.

    ``language``: a code ('fr'), a name ('french') or a token ('<|fr|>'), or one per input; None detects it
    (multilingual checkpoints: the most likely language token after the start token). ``task``: 'transcribe'
    or 'translate'. None for both: the checkpoint's forced_decoder_ids. ``max_new_tokens``: default the
    config's max_length (20 without one), within max_target_positions. Sampling settings as ``generate``'s.
    """
    if return_timestamps:
        raise ValueError("generate: return_timestamps is not supported yet for Whisper (text tokens only)")
    if num_beams not in (None, 1):
        raise ValueError("generate: Whisper decodes with num_beams=1 (greedy or sampling); beam search is not "
                         "supported yet")
    features = model._features(input_features)
    gc = dict(generation_source(model))
    B = int(features.shape[0])
    vocab = model.vocab_size
    sampler = _sampler(model, do_sample, temperature, top_k, top_p, min_p)
    with no_grad():
        states = model.encode(features)
        cross = model.cross_kv(states)

        def detect(lang_ids: List[int]) -> List[int]:
            start = np.full((B, 1), model.decoder_start_token_id, np.int64)
            logits = model.decode(start, states, cross=cross).numpy()[:, -1]
            return [lang_ids[i] for i in logits[:, lang_ids].argmax(-1)]

        prompt = np.array(_prompts(model, gc, B, language, task, detect), np.int64)  # rows of one length
        P = prompt.shape[1]
        max_new_tokens = _max_new_tokens(model, gc, max_new_tokens, P)
        suppress = _token_list(gc.get("suppress_tokens", model.config.get("suppress_tokens")), vocab,
                               "suppress_tokens")
        begin = _token_list(gc.get("begin_suppress_tokens", model.config.get("begin_suppress_tokens")), vocab,
                            "begin_suppress_tokens")
        eos = _token_list(gc.get("eos_token_id") if eos_token_id is UNSET else eos_token_id, vocab, "eos_token_id")
        pad = gc.get("pad_token_id") if pad_token_id is UNSET else pad_token_id
        pad = (eos[0] if eos else 0) if pad is None else _token_list(pad, vocab, "pad_token_id")[0]
        out = np.full((B, max_new_tokens), pad, np.int64)
        finished = np.zeros(B, bool)
        cache = model.new_cache(B, P + max_new_tokens)
        logits = model.decode(prompt, states, cross=cross, cache=cache).numpy()[:, -1]
        n = 0
        while n < max_new_tokens:
            scores = np.array(logits, np.float32)
            if suppress:
                scores[:, suppress] = -np.inf
            if n == 0 and begin:
                scores[:, begin] = -np.inf
            nxt = sampler(scores)
            if eos:
                nxt = np.where(finished, pad, nxt)
                finished |= np.isin(nxt, eos)
            out[:, n] = nxt
            n += 1
            if finished.all() or n == max_new_tokens:
                break
            logits = model.decode(nxt[:, None], states, cross=cross, cache=cache).numpy()[:, -1]
    return _trimmed(out[:, :n], eos, pad)


def _trimmed(out: np.ndarray, eos: List[int], pad: int) -> np.ndarray:
    """transformers' Whisper rows: each without its trailing padding and end token, padded on the right to the
    longest with ``pad``."""
    rows = []
    for row in out.tolist():
        end = len(row)
        while end and row[end - 1] == pad:
            end -= 1
        if pad in eos and end < len(row):
            end += 1  # the end token, when it is the pad token, is the last padding kept
        if end and row[end - 1] in eos:
            end -= 1
        rows.append(row[:end])
    width = max((len(r) for r in rows), default=0)
    return np.array([r + [pad] * (width - len(r)) for r in rows], np.int64).reshape(len(rows), width)


def _max_new_tokens(model, gc: dict, given, prompt: int) -> int:
    """transformers' Whisper limits: max_new_tokens as given or in the config (prompt + it within
    max_target_positions, else an error), else the config's max_length (20 without one) new tokens, the whole
    within max_target_positions."""
    limit = model.max_positions
    given = gc.get("max_new_tokens") if given is None else given
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, numbers.Integral) or given < 1:
            raise ValueError(f"generate: max_new_tokens must be a positive int, got {given!r}")
        if prompt + given > limit:
            raise ValueError(f"generate: the decoder prompt ({prompt} tokens) + max_new_tokens ({given}) exceed "
                             f"max_target_positions {limit}")
        return int(given)
    max_length = gc.get("max_length") if isinstance(gc.get("max_length"), int) else 20
    total = min(max_length + min(limit // 2 - 1, prompt), limit)
    return max(total - prompt, 1)
